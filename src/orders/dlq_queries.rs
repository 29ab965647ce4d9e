//! `dead_letter_queue` repository: jobs that will not succeed by retrying.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct DlqEntry {
    pub id: Uuid,
    pub original_job_id: Option<Uuid>,
    pub vendor_id: String,
    pub operation: String,
    /// The job's payload: the order as it stood when the job was created.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The create-order body the job's last attempt sent; null when no attempt called the agent.
    #[schema(value_type = Option<Object>)]
    pub sent_payload: Option<Value>,
    pub failure_reason: String,
    #[serde(skip)]
    pub failure_stack: Option<String>,
    pub attempt_count: i32,
    pub last_attempt_at: DateTime<Utc>,
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The job a retry of this entry created.
    pub retried_job_id: Option<Uuid>,
    /// The order whose job failed; completing the order by any path resolves the entry.
    pub order_id: Option<Uuid>,
    /// What the operator who resolved it by hand said.
    pub resolution_note: Option<String>,
    /// The ERP reference the operator gave when resolving it (the order was entered by hand).
    pub resolution_erp_reference: Option<String>,
}

pub const COLUMNS: &str = "id, original_job_id, vendor_id, operation, payload, sent_payload, failure_reason, failure_stack, \
                       attempt_count, last_attempt_at, resolved, resolved_at, resolved_by, created_at, retried_job_id, order_id, \
                       resolution_note, resolution_erp_reference";

pub struct NewDlqEntry<'a> {
    pub original_job_id: Option<Uuid>,
    pub vendor_id: &'a str,
    pub operation: &'a str,
    pub payload: &'a Value,
    pub failure_reason: &'a str,
    pub failure_stack: Option<&'a str>,
    pub attempt_count: i32,
}

pub async fn create(db: impl PgExecutor<'_>, entry: &NewDlqEntry<'_>) -> sqlx::Result<DlqEntry> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO dead_letter_queue
             (original_job_id, vendor_id, operation, payload, failure_reason, failure_stack, attempt_count, order_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT postgres_order_id FROM sync_jobs WHERE id = $1))
         RETURNING {COLUMNS}"
    )))
    .bind(entry.original_job_id)
    .bind(entry.vendor_id)
    .bind(entry.operation)
    .bind(entry.payload)
    .bind(entry.failure_reason)
    .bind(entry.failure_stack)
    .bind(entry.attempt_count)
    .fetch_one(db)
    .await
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<DlqEntry>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letter_queue WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Marks an entry resolved; `None` when there is no such entry. Resolving twice keeps the
/// first resolution.
pub async fn mark_resolved(
    db: impl PgExecutor<'_>,
    id: Uuid,
    resolved_by: &str,
    note: Option<&str>,
    erp_reference: Option<&str>,
) -> sqlx::Result<Option<DlqEntry>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE dead_letter_queue SET
             resolved = true,
             resolved_at = COALESCE(resolved_at, now()),
             resolved_by = COALESCE(resolved_by, $2),
             resolution_note = CASE WHEN resolved THEN resolution_note ELSE $3 END,
             resolution_erp_reference = CASE WHEN resolved THEN resolution_erp_reference ELSE $4 END
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(resolved_by)
    .bind(note)
    .bind(erp_reference)
    .fetch_optional(db)
    .await
}

/// Deletes up to `limit` entries resolved more than `older_than_days` ago (one chunk of the
/// clean-up job).
pub async fn delete_old_resolved(
    db: impl PgExecutor<'_>,
    older_than_days: i32,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM dead_letter_queue WHERE id IN (
             SELECT id FROM dead_letter_queue
             WHERE resolved AND resolved_at < now() - make_interval(days => $1)
             LIMIT $2)",
    )
    .bind(older_than_days)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Unresolved entries per vendor (vendors with none are absent), for the DLQ alert.
pub async fn count_unresolved_by_vendor(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT vendor_id, count(*) FROM dead_letter_queue WHERE NOT resolved
         GROUP BY vendor_id ORDER BY vendor_id",
    )
    .fetch_all(db)
    .await
}

pub async fn count_unresolved(
    db: impl PgExecutor<'_>,
    vendor_id: Option<&str>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM dead_letter_queue WHERE NOT resolved AND ($1::text IS NULL OR vendor_id = $1)")
        .bind(vendor_id)
        .fetch_one(db)
        .await
}

/// Records that the entry was retried as `job_id`: resolved by the retry.
pub async fn mark_retried(
    db: impl PgExecutor<'_>,
    id: Uuid,
    job_id: Uuid,
) -> sqlx::Result<Option<DlqEntry>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE dead_letter_queue SET retried_job_id = $2, resolved = true,
             resolved_at = now(), resolved_by = 'retry'
         WHERE id = $1 AND NOT resolved RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(job_id)
    .fetch_optional(db)
    .await
}
