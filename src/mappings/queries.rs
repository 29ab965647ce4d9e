//! `erp_code_mappings` repository.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::model::{Mapping, MappingType, SeedEntry, SeedOutcome};

const COLUMNS: &str = "id, vendor_id, mapping_type, erp_code, resto_code, resto_label, is_active, created_at, updated_at";

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Mapping>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erp_code_mappings WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The active mapping of one code.
pub async fn find_by_vendor_type_code(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    mapping_type: MappingType,
    erp_code: &str,
) -> sqlx::Result<Option<Mapping>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erp_code_mappings
         WHERE vendor_id = $1 AND mapping_type = $2 AND erp_code = $3 AND is_active"
    )))
    .bind(vendor_id)
    .bind(mapping_type.as_str())
    .bind(erp_code)
    .fetch_optional(db)
    .await
}

/// The active mappings among many codes of one type, in one query.
pub async fn find_by_codes(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    mapping_type: MappingType,
    erp_codes: &[String],
) -> sqlx::Result<Vec<Mapping>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erp_code_mappings
         WHERE vendor_id = $1 AND mapping_type = $2 AND erp_code = ANY($3) AND is_active"
    )))
    .bind(vendor_id)
    .bind(mapping_type.as_str())
    .bind(erp_codes)
    .fetch_all(db)
    .await
}

pub async fn find_by_vendor_and_type(
    db: &PgPool,
    vendor_id: &str,
    mapping_type: MappingType,
) -> sqlx::Result<Vec<Mapping>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erp_code_mappings
         WHERE vendor_id = $1 AND mapping_type = $2 AND is_active ORDER BY erp_code"
    )))
    .bind(vendor_id)
    .bind(mapping_type.as_str())
    .fetch_all(db)
    .await
}

pub struct NewMapping<'a> {
    pub vendor_id: &'a str,
    pub mapping_type: MappingType,
    pub erp_code: &'a str,
    pub resto_code: &'a str,
    pub resto_label: &'a str,
    pub is_active: bool,
}

/// Plain insert; a duplicate (vendor, type, code) violates `erp_code_mappings_vendor_type_code_key`.
pub async fn insert(db: impl PgExecutor<'_>, m: &NewMapping<'_>) -> sqlx::Result<Mapping> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO erp_code_mappings (vendor_id, mapping_type, erp_code, resto_code, resto_label, is_active)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )))
    .bind(m.vendor_id)
    .bind(m.mapping_type.as_str())
    .bind(m.erp_code)
    .bind(m.resto_code)
    .bind(m.resto_label)
    .bind(m.is_active)
    .fetch_one(db)
    .await
}

/// Insert or overwrite by (vendor, type, code), reactivating it.
pub async fn upsert(db: impl PgExecutor<'_>, m: &NewMapping<'_>) -> sqlx::Result<Mapping> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO erp_code_mappings (vendor_id, mapping_type, erp_code, resto_code, resto_label, is_active)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (vendor_id, mapping_type, erp_code) DO UPDATE SET
             resto_code = excluded.resto_code, resto_label = excluded.resto_label,
             is_active = excluded.is_active, updated_at = now()
         RETURNING {COLUMNS}"
    )))
    .bind(m.vendor_id)
    .bind(m.mapping_type.as_str())
    .bind(m.erp_code)
    .bind(m.resto_code)
    .bind(m.resto_label)
    .bind(m.is_active)
    .fetch_one(db)
    .await
}

pub struct MappingChanges<'a> {
    pub erp_code: Option<&'a str>,
    pub resto_code: Option<&'a str>,
    pub resto_label: Option<&'a str>,
    pub is_active: Option<bool>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    c: &MappingChanges<'_>,
) -> sqlx::Result<Option<Mapping>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE erp_code_mappings SET
             erp_code = COALESCE($2, erp_code), resto_code = COALESCE($3, resto_code),
             resto_label = COALESCE($4, resto_label), is_active = COALESCE($5, is_active),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(c.erp_code)
    .bind(c.resto_code)
    .bind(c.resto_label)
    .bind(c.is_active)
    .fetch_optional(db)
    .await
}

/// Soft delete.
pub async fn deactivate(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Mapping>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE erp_code_mappings SET is_active = false, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Applies a vendor's whole mapping set in one statement. Rows already equal are left
/// untouched (no `updated_at` churn), so seeding the same file twice changes nothing.
pub async fn bulk_upsert(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    entries: &[SeedEntry],
) -> sqlx::Result<SeedOutcome> {
    let types: Vec<&str> = entries.iter().map(|e| e.mapping_type.as_str()).collect();
    let codes: Vec<&str> = entries.iter().map(|e| e.erp_code.as_str()).collect();
    let resto_codes: Vec<&str> = entries.iter().map(|e| e.resto_code.as_str()).collect();
    let labels: Vec<&str> = entries.iter().map(|e| e.resto_label.as_str()).collect();
    let (inserted, updated): (i64, i64) = sqlx::query_as(
        "WITH input AS (
             SELECT DISTINCT ON (mapping_type, erp_code) *
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[])
                  WITH ORDINALITY AS t(mapping_type, erp_code, resto_code, resto_label, n)
             ORDER BY mapping_type, erp_code, n DESC
         ), written AS (
             INSERT INTO erp_code_mappings (vendor_id, mapping_type, erp_code, resto_code, resto_label, is_active)
             SELECT $1, mapping_type, erp_code, resto_code, resto_label, true FROM input
             ON CONFLICT (vendor_id, mapping_type, erp_code) DO UPDATE SET
                 resto_code = excluded.resto_code, resto_label = excluded.resto_label,
                 is_active = true, updated_at = now()
             WHERE (erp_code_mappings.resto_code, erp_code_mappings.resto_label, erp_code_mappings.is_active)
                   IS DISTINCT FROM (excluded.resto_code, excluded.resto_label, true)
             RETURNING (xmax = 0) AS inserted
         )
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written",
    )
    .bind(vendor_id)
    .bind(&types)
    .bind(&codes)
    .bind(&resto_codes)
    .bind(&labels)
    .fetch_one(db)
    .await?;
    let distinct = distinct_keys(entries) as u64;
    let (inserted, updated) = (inserted as u64, updated as u64);
    Ok(SeedOutcome {
        inserted,
        updated,
        unchanged: distinct.saturating_sub(inserted + updated),
    })
}

fn distinct_keys(entries: &[SeedEntry]) -> usize {
    entries
        .iter()
        .map(|e| (e.mapping_type, e.erp_code.as_str()))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Paginated listing with optional filters; returns the page and the total.
pub async fn find_all(
    db: &PgPool,
    vendor_id: Option<&str>,
    mapping_type: Option<MappingType>,
    include_inactive: bool,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<Mapping>, i64)> {
    let filter = "($1::text IS NULL OR vendor_id = $1) AND ($2::text IS NULL OR mapping_type = $2) AND ($3 OR is_active)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erp_code_mappings WHERE {filter}
         ORDER BY vendor_id, mapping_type, erp_code LIMIT $4 OFFSET $5"
    )))
    .bind(vendor_id)
    .bind(mapping_type.map(MappingType::as_str))
    .bind(include_inactive)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM erp_code_mappings WHERE {filter}"
    )))
    .bind(vendor_id)
    .bind(mapping_type.map(MappingType::as_str))
    .bind(include_inactive)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// Active mappings of a vendor.
pub async fn count_by_vendor(db: &PgPool, vendor_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM erp_code_mappings WHERE vendor_id = $1 AND is_active")
        .bind(vendor_id)
        .fetch_one(db)
        .await
}
