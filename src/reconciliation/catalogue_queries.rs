//! The Postgres side of a reconciliation: checksums, medians and repairs over a vendor's items
//! in a sku range, each one set-based statement. Ranges compare skus with `COLLATE "C"`
//! (bytewise, as agents do), served by `idx_items_vendor_sku_c`.
//!
//! Items reconciliation found absent from the ERP (`erp_absent_since` set) are left out of
//! checksums and counts: the ERP no longer lists them.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, postgres::PgArguments, query::QueryAs};

use super::range::SkuRange;

/// Postgres' view of a range, and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RangeDigest {
    pub count: i64,
    /// Lowercase hex SHA-256 of `sku:contentHash\n` lines in bytewise sku order.
    pub checksum: String,
    /// Postgres' clock at the read: a row written later is newer than anything the ERP was
    /// asked about afterwards.
    pub observed_at: DateTime<Utc>,
}

pub async fn digest(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    range: &SkuRange,
) -> sqlx::Result<RangeDigest> {
    let (condition, binds) = range.sql_condition("sku", 2);
    let sql = format!(
        r#"SELECT count(*) AS count,
                  encode(sha256(COALESCE(
                      string_agg(convert_to(sku || ':' || content_hash || E'\n', 'UTF8'), ''::bytea
                                 ORDER BY sku COLLATE "C"),
                      ''::bytea)), 'hex') AS checksum,
                  now() AS observed_at
           FROM items WHERE vendor_id = $1 AND erp_absent_since IS NULL{condition}"#
    );
    bind_all(
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(vendor_id),
        &binds,
    )
    .fetch_one(db)
    .await
}

/// The median sku of a range of `count` items (the left half gets the extra one).
pub async fn median(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    range: &SkuRange,
    count: i64,
) -> sqlx::Result<Option<String>> {
    let (condition, binds) = range.sql_condition("sku", 3);
    let sql = format!(
        r#"SELECT sku FROM items WHERE vendor_id = $1 AND erp_absent_since IS NULL{condition}
           ORDER BY sku COLLATE "C" OFFSET $2 LIMIT 1"#
    );
    let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(vendor_id)
        .bind((count - 1).max(0) / 2);
    binds
        .iter()
        .fold(query, |q, b| q.bind(*b))
        .fetch_optional(db)
        .await
}

/// What Postgres holds for some of the skus an ERP listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredItem {
    pub sku: String,
    pub content_hash: String,
    /// Tombstoned: reconciliation found it absent from the ERP earlier.
    pub absent: bool,
}

pub async fn stored_items(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    skus: &[&str],
) -> sqlx::Result<Vec<StoredItem>> {
    sqlx::query_as(
        "SELECT i.sku, i.content_hash, i.erp_absent_since IS NOT NULL AS absent
         FROM UNNEST($2::text[]) AS k(sku) JOIN items i ON i.vendor_id = $1 AND i.sku = k.sku",
    )
    .bind(vendor_id)
    .bind(skus)
    .fetch_all(db)
    .await
}

/// Deactivates and tombstones the range's items that the ERP's complete listing of the range
/// (`listed`) does not have; returns their skus. Rows written since `observed_at` are spared:
/// they may be items the ERP created after it was asked.
pub async fn deactivate_absent(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    range: &SkuRange,
    listed: &[&str],
    observed_at: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    let (condition, binds) = range.sql_condition("i.sku", 4);
    let sql = format!(
        "UPDATE items i SET is_active = false, erp_absent_since = now(), updated_at = now()
         WHERE i.vendor_id = $1 AND i.erp_absent_since IS NULL AND i.updated_at <= $3{condition}
           AND NOT EXISTS (SELECT 1 FROM UNNEST($2::text[]) AS l(sku) WHERE l.sku = i.sku)
         RETURNING i.sku"
    );
    let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(vendor_id)
        .bind(listed)
        .bind(observed_at);
    binds
        .iter()
        .fold(query, |q, b| q.bind(*b))
        .fetch_all(db)
        .await
}

/// The range's live skus not written since `observed_at` (candidates for deactivation).
pub async fn range_skus(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    range: &SkuRange,
    observed_at: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    let (condition, binds) = range.sql_condition("sku", 3);
    let sql = format!(
        "SELECT sku FROM items
         WHERE vendor_id = $1 AND erp_absent_since IS NULL AND updated_at <= $2{condition}"
    );
    let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(vendor_id)
        .bind(observed_at);
    binds
        .iter()
        .fold(query, |q, b| q.bind(*b))
        .fetch_all(db)
        .await
}

/// Deactivates and tombstones these skus, with the same guard as [`deactivate_absent`].
pub async fn deactivate_skus(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    skus: &[&str],
    observed_at: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE items i SET is_active = false, erp_absent_since = now(), updated_at = now()
         FROM UNNEST($2::text[]) AS a(sku)
         WHERE i.vendor_id = $1 AND i.sku = a.sku AND i.erp_absent_since IS NULL
           AND i.updated_at <= $3
         RETURNING i.sku",
    )
    .bind(vendor_id)
    .bind(skus)
    .bind(observed_at)
    .fetch_all(db)
    .await
}

/// Tombstoned items the ERP lists again unchanged (same content hash): back to what the ERP
/// says. Returns the skus restored.
pub async fn restore_listed(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    skus: &[&str],
    content_hashes: &[&str],
    is_active: &[bool],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "UPDATE items i SET erp_absent_since = NULL, is_active = t.is_active, updated_at = now()
         FROM UNNEST($2::text[], $3::text[], $4::bool[]) AS t(sku, content_hash, is_active)
         WHERE i.vendor_id = $1 AND i.sku = t.sku AND i.content_hash = t.content_hash
           AND i.erp_absent_since IS NOT NULL
         RETURNING i.sku",
    )
    .bind(vendor_id)
    .bind(skus)
    .bind(content_hashes)
    .bind(is_active)
    .fetch_all(db)
    .await
}

fn bind_all<'q, O>(
    query: QueryAs<'q, sqlx::Postgres, O, PgArguments>,
    binds: &[&'q str],
) -> QueryAs<'q, sqlx::Postgres, O, PgArguments> {
    binds.iter().fold(query, |q, b| q.bind(*b))
}
