//! Set-based ingest SQL: per chunk, one read of the stored versions and one bulk upsert.
//! Every upsert refuses older data itself (`WHERE stored.erp_updated_at <=
//! excluded.erp_updated_at`), so concurrent requests cannot overwrite a newer version.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// What is stored for a key: enough to skip unchanged records and refuse stale ones.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredVersion {
    pub key: String,
    pub content_hash: String,
    pub erp_updated_at: DateTime<Utc>,
}

pub async fn item_versions(
    db: &mut PgConnection,
    vendor_id: &str,
    skus: &[&str],
) -> sqlx::Result<Vec<StoredVersion>> {
    sqlx::query_as(
        "SELECT sku AS key, content_hash, erp_updated_at FROM items WHERE vendor_id = $1 AND sku = ANY($2)",
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
    pub unit_code: Vec<String>,
    pub vat_code: Vec<String>,
    pub family_code: Vec<Option<String>>,
    pub subfamily_code: Vec<Option<String>>,
    pub price: Vec<Decimal>,
    pub is_active: Vec<bool>,
    pub content_hash: Vec<&'a str>,
    pub erp_updated_at: Vec<DateTime<Utc>>,
}

/// Writes the items; returns the SKUs actually written (the others were refused as older
/// than what another request stored meanwhile).
pub async fn upsert_items(
    db: &mut PgConnection,
    vendor_id: &str,
    rows: &ItemRows<'_>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "INSERT INTO items (vendor_id, sku, name, description, erp_unit_code, erp_vat_code, erp_family_code,
                            erp_subfamily_code, unit_code, vat_code, family_code, subfamily_code, price,
                            is_active, content_hash, erp_updated_at, last_synced_at)
         SELECT $1, t.sku, t.name, t.description, t.erp_unit_code, t.erp_vat_code, t.erp_family_code,
                t.erp_subfamily_code, t.unit_code, t.vat_code, t.family_code, t.subfamily_code, t.price,
                t.is_active, t.content_hash, t.erp_updated_at, now()
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::text[], $10::text[], $11::text[], $12::text[], $13::numeric[], $14::bool[],
                     $15::text[], $16::timestamptz[])
              AS t(sku, name, description, erp_unit_code, erp_vat_code, erp_family_code, erp_subfamily_code,
                   unit_code, vat_code, family_code, subfamily_code, price, is_active, content_hash, erp_updated_at)
         ON CONFLICT (vendor_id, sku) DO UPDATE SET
             name = excluded.name, description = excluded.description,
             erp_unit_code = excluded.erp_unit_code, erp_vat_code = excluded.erp_vat_code,
             erp_family_code = excluded.erp_family_code, erp_subfamily_code = excluded.erp_subfamily_code,
             unit_code = excluded.unit_code, vat_code = excluded.vat_code,
             family_code = excluded.family_code, subfamily_code = excluded.subfamily_code,
             price = excluded.price, is_active = excluded.is_active,
             content_hash = excluded.content_hash, erp_updated_at = excluded.erp_updated_at,
             last_synced_at = excluded.last_synced_at, updated_at = now()
         WHERE items.erp_updated_at <= excluded.erp_updated_at
         RETURNING sku",
    )
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
    db: &mut PgConnection,
    vendor_id: &str,
    ids: &[&str],
) -> sqlx::Result<Vec<StoredVersion>> {
    sqlx::query_as(
        "SELECT erp_warehouse_id AS key, content_hash, erp_updated_at FROM warehouses
         WHERE vendor_id = $1 AND erp_warehouse_id = ANY($2)",
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
    db: &mut PgConnection,
    vendor_id: &str,
    rows: &WarehouseRows<'_>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "INSERT INTO warehouses (vendor_id, erp_warehouse_id, name, address, is_active, content_hash,
                                 erp_updated_at, last_synced_at)
         SELECT $1, t.erp_warehouse_id, t.name, t.address, t.is_active, t.content_hash, t.erp_updated_at, now()
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::timestamptz[])
              AS t(erp_warehouse_id, name, address, is_active, content_hash, erp_updated_at)
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
    db: &mut PgConnection,
    vendor_id: &str,
    warehouse_id: Uuid,
    skus: &[&str],
) -> sqlx::Result<Vec<StockTarget>> {
    sqlx::query_as(
        "SELECT i.sku, i.id AS item_id, s.content_hash, s.erp_updated_at
         FROM items i
         LEFT JOIN stock s ON s.vendor_id = i.vendor_id AND s.warehouse_id = $2 AND s.item_id = i.id
         WHERE i.vendor_id = $1 AND i.sku = ANY($3)",
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

/// Writes stock rows; returns the item ids actually written.
pub async fn upsert_stock(
    db: &mut PgConnection,
    vendor_id: &str,
    warehouse_id: Uuid,
    rows: &StockRows<'_>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO stock (vendor_id, warehouse_id, item_id, quantity, reserved_quantity, content_hash,
                            erp_updated_at, last_synced_at)
         SELECT $1, $2, t.item_id, t.quantity, t.reserved_quantity, t.content_hash, t.erp_updated_at, now()
         FROM UNNEST($3::uuid[], $4::numeric[], $5::numeric[], $6::text[], $7::timestamptz[])
              AS t(item_id, quantity, reserved_quantity, content_hash, erp_updated_at)
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
