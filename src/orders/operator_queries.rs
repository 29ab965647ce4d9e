//! What operators read and record: one `sync_attempts` row per attempt (and per callback),
//! `operator_actions` for every action by hand, and the dead-letter selections of the bulk
//! actions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::dlq_queries::{self, DlqEntry};

/// One attempt at a job (`kind = call`) or one callback of its agent (`kind = callback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct SyncAttempt {
    pub id: Uuid,
    pub job_id: Uuid,
    pub order_id: Option<Uuid>,
    pub vendor_id: String,
    /// `call` (erp-sync called the agent) or `callback` (the agent reported back).
    pub kind: String,
    /// The job's attempt number (1 for its first call).
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// A call: `completed` (200), `accepted` (202, a callback follows), `failed` (retried or
    /// dead-lettered), `rejected` (a permanent 4xx) or `refused` (never sent). A callback:
    /// `completed` or `failed`.
    pub outcome: String,
    /// The agent's HTTP status, when it answered.
    pub http_status: Option<i32>,
    /// The error, when there was one (the agent's answer excerpt, or why it was unreachable).
    pub error: Option<String>,
    pub correlation_id: Option<String>,
}

pub struct NewAttempt<'a> {
    pub job_id: Uuid,
    pub order_id: Option<Uuid>,
    pub vendor_id: &'a str,
    pub kind: &'a str,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub outcome: &'a str,
    pub http_status: Option<i32>,
    pub error: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
}

pub async fn record_attempt(db: impl PgExecutor<'_>, a: &NewAttempt<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sync_attempts (job_id, order_id, vendor_id, kind, attempt, started_at, duration_ms,
                                    outcome, http_status, error, correlation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(a.job_id)
    .bind(a.order_id)
    .bind(a.vendor_id)
    .bind(a.kind)
    .bind(a.attempt)
    .bind(a.started_at)
    .bind(a.duration_ms)
    .bind(a.outcome)
    .bind(a.http_status)
    .bind(a.error)
    .bind(a.correlation_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Every attempt and callback of an order's jobs, oldest first.
pub async fn attempts_of_order(db: &PgPool, order_id: Uuid) -> sqlx::Result<Vec<SyncAttempt>> {
    sqlx::query_as(
        "SELECT a.id, a.job_id, a.order_id, a.vendor_id, a.kind, a.attempt, a.started_at, a.duration_ms,
                a.outcome, a.http_status, a.error, a.correlation_id
         FROM sync_attempts a
         WHERE a.order_id = $1 OR a.job_id IN (SELECT id FROM sync_jobs WHERE postgres_order_id = $1)
         ORDER BY a.started_at, a.id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await
}

/// One action an operator took by hand.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct OperatorAction {
    pub id: Uuid,
    /// `dlq_retry`, `dlq_resolve`, `resync` or `breaker_reset`.
    pub action: String,
    /// Who: the body's `actor`, else the `X-Operator` header, else `api-key`.
    pub actor: String,
    pub note: Option<String>,
    pub vendor_id: Option<String>,
    pub order_id: Option<Uuid>,
    pub dlq_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    /// What else the action carried (a bulk run's filter, an ERP reference).
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct NewAction<'a> {
    pub action: &'a str,
    pub actor: &'a str,
    pub note: Option<&'a str>,
    pub vendor_id: Option<&'a str>,
    pub order_id: Option<Uuid>,
    pub dlq_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub details: Option<Value>,
}

pub async fn record_action(db: impl PgExecutor<'_>, a: &NewAction<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO operator_actions (action, actor, note, vendor_id, order_id, dlq_id, job_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.action)
    .bind(a.actor)
    .bind(a.note)
    .bind(a.vendor_id)
    .bind(a.order_id)
    .bind(a.dlq_id)
    .bind(a.job_id)
    .bind(&a.details)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn actions_of_order(db: &PgPool, order_id: Uuid) -> sqlx::Result<Vec<OperatorAction>> {
    sqlx::query_as(
        "SELECT id, action, actor, note, vendor_id, order_id, dlq_id, job_id, details, created_at
         FROM operator_actions WHERE order_id = $1 ORDER BY created_at, id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await
}

pub async fn dead_letters_of_order(db: &PgPool, order_id: Uuid) -> sqlx::Result<Vec<DlqEntry>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM dead_letter_queue WHERE order_id = $1 ORDER BY created_at, id",
        dlq_queries::COLUMNS
    )))
    .bind(order_id)
    .fetch_all(db)
    .await
}

/// The marketplace's side of an order.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct OrderSummary {
    pub id: Uuid,
    pub vendor_id: String,
    /// The marketplace's status of the order.
    pub status: String,
    pub erp_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn order_summary(db: &PgPool, order_id: Uuid) -> sqlx::Result<Option<OrderSummary>> {
    sqlx::query_as(
        "SELECT id, vendor_id, status, erp_reference, created_at, updated_at FROM orders WHERE id = $1",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await
}

/// Which dead-letter entries a listing or a bulk action covers. `reason` is a substring of
/// the failure reason, compared without case (not a pattern: `%` and `_` are plain).
#[derive(Debug, Clone, Default)]
pub struct DlqSelection<'a> {
    pub vendor_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub resolved: bool,
}

const SELECTION: &str = "resolved = $1 AND ($2::text IS NULL OR vendor_id = $2)
     AND ($3::text IS NULL OR strpos(lower(failure_reason), lower($3)) > 0)
     AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5)";

/// A page of entries, newest first, and the total.
pub async fn list_dead_letters(
    db: &PgPool,
    s: &DlqSelection<'_>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<DlqEntry>, i64)> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM dead_letter_queue WHERE {SELECTION}
         ORDER BY created_at DESC, id LIMIT $6 OFFSET $7",
        dlq_queries::COLUMNS
    )))
    .bind(s.resolved)
    .bind(s.vendor_id)
    .bind(s.reason)
    .bind(s.since)
    .bind(s.until)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM dead_letter_queue WHERE {SELECTION}"
    )))
    .bind(s.resolved)
    .bind(s.vendor_id)
    .bind(s.reason)
    .bind(s.since)
    .bind(s.until)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// Unresolved entries a bulk action would change, oldest first, at most `limit`. For a
/// retry (`retryable`), only entries whose order exists, is not in the ERP and has no live
/// job: exactly those a retry can turn into a new job. `lock` takes them FOR UPDATE.
pub async fn select_for_bulk(
    db: impl PgExecutor<'_>,
    s: &DlqSelection<'_>,
    retryable: bool,
    limit: i64,
    lock: bool,
) -> sqlx::Result<Vec<DlqEntry>> {
    let retryable_only = if retryable {
        "AND EXISTS (SELECT 1 FROM orders o WHERE o.id = dead_letter_queue.order_id AND o.erp_reference IS NULL)
         AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.postgres_order_id = dead_letter_queue.order_id
                         AND j.operation = 'create_order' AND j.status IN ('pending', 'processing'))"
    } else {
        ""
    };
    let lock = if lock { "FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM dead_letter_queue WHERE {SELECTION} {retryable_only}
         ORDER BY created_at, id LIMIT $6 {lock}",
        dlq_queries::COLUMNS
    )))
    .bind(false)
    .bind(s.vendor_id)
    .bind(s.reason)
    .bind(s.since)
    .bind(s.until)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes up to `limit` operator actions older than `older_than_days` (one chunk of the
/// clean-up job).
pub async fn delete_old_actions(
    db: impl PgExecutor<'_>,
    older_than_days: i32,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM operator_actions WHERE id IN (
             SELECT id FROM operator_actions
             WHERE created_at < now() - make_interval(days => $1)
             LIMIT $2)",
    )
    .bind(older_than_days)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
