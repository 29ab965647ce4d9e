//! Set-based ingest SQL, per chunk of up to 500 records: one light query reads the stored
//! versions of its keys (only keys are sent), one bulk upsert writes what is new or changed
//! (a single statement: its own transaction). An unchanged chunk costs only the light query.
//! Items also have the reverse order (see `service.rs`): the upsert first, guarded against
//! unchanged and older data, then the light read of only the keys it did not write.
//!
//! Keys are joined from `UNNEST($keys)` rather than matched with `= ANY($keys)`: under a cached
//! generic plan `= ANY` degrades to comparing every row of the vendor with every key.
//! Every upsert refuses older data itself (`WHERE stored.erp_updated_at <=
//! excluded.erp_updated_at`), so concurrent requests cannot overwrite a newer version.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;
use uuid::Uuid;

/// What is stored for a key: enough to skip unchanged records and refuse stale ones.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredVersion {
    pub key: String,
    pub content_hash: String,
    pub erp_updated_at: DateTime<Utc>,
}

/// The stored versions of a chunk's items: only keys go to Postgres, so an unchanged chunk
/// costs one light query.
pub async fn item_versions(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    skus: &[&str],
) -> sqlx::Result<Vec<StoredVersion>> {
    sqlx::query_as(
        "SELECT i.sku AS key, i.content_hash, i.erp_updated_at
         FROM UNNEST($2::text[]) AS k(sku) JOIN items i ON i.vendor_id = $1 AND i.sku = k.sku",
    )
    .bind(vendor_id)
    .bind(skus)
    .fetch_all(db)
    .await
}

/// Column arrays of the items to write, all of the same length.
#[derive(Default)]
pub struct ItemRows<'a> {
    pub sku: Vec<&'a str>,
    pub name: Vec<&'a str>,
    pub description: Vec<Option<&'a str>>,
    pub erp_unit_code: Vec<&'a str>,
    pub erp_vat_code: Vec<&'a str>,
    pub erp_family_code: Vec<Option<&'a str>>,
    pub erp_subfamily_code: Vec<Option<&'a str>>,
    pub unit_code: Vec<&'a str>,
    pub vat_code: Vec<&'a str>,
    pub family_code: Vec<Option<&'a str>>,
    pub subfamily_code: Vec<Option<&'a str>>,
    pub price: Vec<Decimal>,
    pub is_active: Vec<bool>,
    pub content_hash: Vec<&'a str>,
    pub erp_updated_at: Vec<DateTime<Utc>>,
}

/// The bulk upsert of items, with `$guard` as the `ON CONFLICT … DO UPDATE WHERE` condition.
macro_rules! upsert_items_sql {
    ($guard:literal) => {
        concat!(
            "INSERT INTO items (vendor_id, sku, name, description, erp_unit_code, erp_vat_code, erp_family_code,
                                erp_subfamily_code, unit_code, vat_code, family_code, subfamily_code, price,
                                is_active, content_hash, erp_updated_at, last_synced_at)
             SELECT $1, t.*, now()
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[], $11::text[], $12::text[], $13::numeric[], $14::bool[],
                         $15::text[], $16::timestamptz[]) AS t
             ON CONFLICT (vendor_id, sku) DO UPDATE SET
                 name = excluded.name, description = excluded.description,
                 erp_unit_code = excluded.erp_unit_code, erp_vat_code = excluded.erp_vat_code,
                 erp_family_code = excluded.erp_family_code, erp_subfamily_code = excluded.erp_subfamily_code,
                 unit_code = excluded.unit_code, vat_code = excluded.vat_code,
                 family_code = excluded.family_code, subfamily_code = excluded.subfamily_code,
                 price = excluded.price, is_active = excluded.is_active,
                 content_hash = excluded.content_hash, erp_updated_at = excluded.erp_updated_at,
                 last_synced_at = excluded.last_synced_at, updated_at = now()
             WHERE ",
            $guard,
            " RETURNING sku"
        )
    };
}

/// One bulk upsert of records already judged new or changed against a read of the stored
/// versions; returns the SKUs written. The `WHERE` guard refuses a version older than the
/// stored one, so of two racing requests the newer version always stays.
pub async fn upsert_items(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    rows: &ItemRows<'_>,
) -> sqlx::Result<Vec<String>> {
    let sql = upsert_items_sql!("items.erp_updated_at <= excluded.erp_updated_at");
    upsert_items_with(db, sql, vendor_id, rows).await
}

/// One bulk upsert of records not compared with what is stored (written first, judged
/// after): the guard also refuses the stored content hash, so an unchanged record is never
/// rewritten. Returns the SKUs written; the others are unchanged, older than stored, or lost
/// a race, which a read of their stored versions tells apart.
pub async fn upsert_changed_items(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    rows: &ItemRows<'_>,
) -> sqlx::Result<Vec<String>> {
    let sql = upsert_items_sql!(
        "items.erp_updated_at <= excluded.erp_updated_at
           AND items.content_hash <> excluded.content_hash"
    );
    upsert_items_with(db, sql, vendor_id, rows).await
}

async fn upsert_items_with(
    db: impl PgExecutor<'_>,
    sql: &'static str,
    vendor_id: &str,
    rows: &ItemRows<'_>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(sql)
        .bind(vendor_id)
        .bind(&rows.sku)
        .bind(&rows.name)
        .bind(&rows.description)
        .bind(&rows.erp_unit_code)
        .bind(&rows.erp_vat_code)
        .bind(&rows.erp_family_code)
        .bind(&rows.erp_subfamily_code)
        .bind(&rows.unit_code)
        .bind(&rows.vat_code)
        .bind(&rows.family_code)
        .bind(&rows.subfamily_code)
        .bind(&rows.price)
        .bind(&rows.is_active)
        .bind(&rows.content_hash)
        .bind(&rows.erp_updated_at)
        .fetch_all(db)
        .await
}

pub async fn warehouse_versions(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    ids: &[&str],
) -> sqlx::Result<Vec<StoredVersion>> {
    sqlx::query_as(
        "SELECT w.erp_warehouse_id AS key, w.content_hash, w.erp_updated_at
         FROM UNNEST($2::text[]) AS k(id) JOIN warehouses w ON w.vendor_id = $1 AND w.erp_warehouse_id = k.id",
    )
    .bind(vendor_id)
    .bind(ids)
    .fetch_all(db)
    .await
}

#[derive(Default)]
pub struct WarehouseRows<'a> {
    pub erp_warehouse_id: Vec<&'a str>,
    pub name: Vec<&'a str>,
    pub address: Vec<Option<&'a str>>,
    pub is_active: Vec<bool>,
    pub content_hash: Vec<&'a str>,
    pub erp_updated_at: Vec<DateTime<Utc>>,
}

pub async fn upsert_warehouses(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    rows: &WarehouseRows<'_>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "INSERT INTO warehouses (vendor_id, erp_warehouse_id, name, address, is_active, content_hash,
                                 erp_updated_at, last_synced_at)
         SELECT $1, t.*, now()
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::timestamptz[]) AS t
         ON CONFLICT (vendor_id, erp_warehouse_id) DO UPDATE SET
             name = excluded.name, address = excluded.address, is_active = excluded.is_active,
             content_hash = excluded.content_hash, erp_updated_at = excluded.erp_updated_at,
             last_synced_at = excluded.last_synced_at, updated_at = now()
         WHERE warehouses.erp_updated_at <= excluded.erp_updated_at
         RETURNING erp_warehouse_id",
    )
    .bind(vendor_id)
    .bind(&rows.erp_warehouse_id)
    .bind(&rows.name)
    .bind(&rows.address)
    .bind(&rows.is_active)
    .bind(&rows.content_hash)
    .bind(&rows.erp_updated_at)
    .fetch_all(db)
    .await
}

/// The warehouse's row id from the ERP's warehouse id.
pub async fn warehouse_id(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    erp_warehouse_id: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT id FROM warehouses WHERE vendor_id = $1 AND erp_warehouse_id = $2")
        .bind(vendor_id)
        .bind(erp_warehouse_id)
        .fetch_optional(db)
        .await
}

/// For each SKU the vendor has: its item id and, if stocked in the warehouse, the stored version.
#[derive(Debug, sqlx::FromRow)]
pub struct StockTarget {
    pub sku: String,
    pub item_id: Uuid,
    pub content_hash: Option<String>,
    pub erp_updated_at: Option<DateTime<Utc>>,
}

pub async fn stock_targets(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    warehouse_id: Uuid,
    skus: &[&str],
) -> sqlx::Result<Vec<StockTarget>> {
    sqlx::query_as(
        "SELECT i.sku, i.id AS item_id, s.content_hash, s.erp_updated_at
         FROM UNNEST($3::text[]) AS k(sku)
         JOIN items i ON i.vendor_id = $1 AND i.sku = k.sku
         LEFT JOIN stock s ON s.vendor_id = i.vendor_id AND s.warehouse_id = $2 AND s.item_id = i.id",
    )
    .bind(vendor_id)
    .bind(warehouse_id)
    .bind(skus)
    .fetch_all(db)
    .await
}

#[derive(Default)]
pub struct StockRows<'a> {
    pub item_id: Vec<Uuid>,
    pub quantity: Vec<Decimal>,
    pub reserved_quantity: Vec<Decimal>,
    pub content_hash: Vec<&'a str>,
    pub erp_updated_at: Vec<DateTime<Utc>>,
}

/// Writes stock rows; returns the item ids written.
pub async fn upsert_stock(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    warehouse_id: Uuid,
    rows: &StockRows<'_>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO stock (vendor_id, warehouse_id, item_id, quantity, reserved_quantity, content_hash,
                            erp_updated_at, last_synced_at)
         SELECT $1, $2, t.*, now()
         FROM UNNEST($3::uuid[], $4::numeric[], $5::numeric[], $6::text[], $7::timestamptz[]) AS t
         ON CONFLICT (vendor_id, warehouse_id, item_id) DO UPDATE SET
             quantity = excluded.quantity, reserved_quantity = excluded.reserved_quantity,
             content_hash = excluded.content_hash, erp_updated_at = excluded.erp_updated_at,
             last_synced_at = excluded.last_synced_at, updated_at = now()
         WHERE stock.erp_updated_at <= excluded.erp_updated_at
         RETURNING item_id",
    )
    .bind(vendor_id)
    .bind(warehouse_id)
    .bind(&rows.item_id)
    .bind(&rows.quantity)
    .bind(&rows.reserved_quantity)
    .bind(&rows.content_hash)
    .bind(&rows.erp_updated_at)
    .fetch_all(db)
    .await
}
