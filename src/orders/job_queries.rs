//! `sync_jobs` repository. Postgres is the source of truth for every job;
//! Redis only dispatches.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct SyncJob {
    pub id: Uuid,
    pub postgres_order_id: Option<Uuid>,
    pub vendor_id: String,
    pub operation: String,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    /// The order as it stood when the job was created.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The create-order body the last attempt sent (built at delivery from the order as it
    /// stood then); null until an attempt called the agent.
    #[schema(value_type = Option<Object>)]
    pub sent_payload: Option<Value>,
    /// Attempts made: agent calls spent on this job (0 before the first call, 1 after a
    /// first-try success, `maxRetries` when it failed after its last attempt).
    pub retry_count: i32,
    pub max_retries: i32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    #[serde(skip)]
    pub error_stack: Option<String>,
    pub erp_reference: Option<String>,
    /// The last error an agent call produced (the dead-letter reason); `errorMessage` may
    /// instead say why the job waits without a call.
    pub last_agent_error: Option<String>,
    /// The attempt holding the job while it is processing (internal: fences outcome writes).
    #[serde(skip)]
    pub lease_token: Option<Uuid>,
    /// Set while the agent accepted the order (202) and erp-sync waits for its callback: the
    /// deadline, after which the order is sent again. The job's status stays `processing`.
    pub awaiting_callback_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str = "id, postgres_order_id, vendor_id, operation, status, payload, sent_payload, retry_count, max_retries, \
     next_retry_at, error_message, error_stack, erp_reference, last_agent_error, lease_token, \
     CASE WHEN status = 'processing' AND lease_token IS NULL THEN next_retry_at END AS awaiting_callback_until, \
     created_at, started_at, completed_at, expires_at";

pub struct NewJob<'a> {
    pub order_id: Option<Uuid>,
    pub vendor_id: &'a str,
    pub operation: &'a str,
    pub payload: &'a Value,
    pub max_retries: i32,
    /// How long the finished job is kept before `delete_expired` removes it.
    pub retention: chrono::Duration,
}

pub async fn create(db: impl PgExecutor<'_>, job: &NewJob<'_>) -> sqlx::Result<SyncJob> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_jobs (postgres_order_id, vendor_id, operation, payload, max_retries, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + $6) RETURNING {COLUMNS}"
    )))
    .bind(job.order_id)
    .bind(job.vendor_id)
    .bind(job.operation)
    .bind(job.payload)
    .bind(job.max_retries)
    .bind(job.retention)
    .fetch_one(db)
    .await
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<SyncJob>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Every job of an order, newest first.
pub async fn find_by_order_id(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
) -> sqlx::Result<Vec<SyncJob>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE postgres_order_id = $1 ORDER BY created_at DESC"
    )))
    .bind(order_id)
    .fetch_all(db)
    .await
}

/// Deletes up to `limit` finished jobs past their retention (live jobs are never deleted);
/// the clean-up job repeats it until less than `limit` go, so no statement holds locks long.
pub async fn delete_expired(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM sync_jobs WHERE id IN (
             SELECT id FROM sync_jobs
             WHERE expires_at < now() AND status IN ('completed', 'failed', 'cancelled')
             LIMIT $1)",
    )
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Jobs due and waiting for a worker (pending, due now), counted up to `cap`: the queue depth
/// `/health` and the metrics report.
pub async fn count_waiting(db: impl PgExecutor<'_>, cap: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT 1 FROM sync_jobs
             WHERE status = 'pending' AND COALESCE(next_retry_at, created_at) <= now()
             LIMIT $1) due",
    )
    .bind(cap)
    .fetch_one(db)
    .await
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct JobMetrics {
    pub total: i64,
    pub pending: i64,
    pub processing: i64,
    pub completed: i64,
    pub failed: i64,
    /// Completed / total, in percent.
    pub success_rate: f64,
    /// Mean and 95th percentile of creation → completion in ms (0.1 ms), completed jobs only;
    /// null when none completed.
    pub avg_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    /// Jobs that needed more than one attempt, in percent.
    pub retry_rate: f64,
}

pub async fn get_metrics(db: impl PgExecutor<'_>, vendor_id: &str) -> sqlx::Result<JobMetrics> {
    sqlx::query_as(
        "SELECT count(*) AS total,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                count(*) FILTER (WHERE status = 'processing') AS processing,
                count(*) FILTER (WHERE status = 'completed') AS completed,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                COALESCE(round(100.0 * count(*) FILTER (WHERE status = 'completed') / NULLIF(count(*), 0), 1), 0)::float8
                    AS success_rate,
                round(avg(EXTRACT(EPOCH FROM completed_at - created_at) * 1000) FILTER (WHERE status = 'completed'), 1)::float8
                    AS avg_latency_ms,
                round((percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM completed_at - created_at) * 1000)
                    FILTER (WHERE status = 'completed'))::numeric, 1)::float8 AS p95_latency_ms,
                COALESCE(round(100.0 * count(*) FILTER (WHERE retry_count > 1) / NULLIF(count(*), 0), 1), 0)::float8
                    AS retry_rate
         FROM sync_jobs WHERE vendor_id = $1",
    )
    .bind(vendor_id)
    .fetch_one(db)
    .await
}

/// Paginated listing for the admin API, newest first.
pub async fn list(
    db: &PgPool,
    vendor_id: Option<&str>,
    status: Option<&str>,
    order_id: Option<Uuid>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<SyncJob>, i64)> {
    // `awaiting_callback`: processing without a lease (the agent answered 202).
    let filter = "($1::text IS NULL OR vendor_id = $1) \
                  AND ($2::text IS NULL OR status = $2 \
                       OR ($2 = 'awaiting_callback' AND status = 'processing' AND lease_token IS NULL)) \
                  AND ($3::uuid IS NULL OR postgres_order_id = $3)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE {filter} ORDER BY created_at DESC, id LIMIT $4 OFFSET $5"
    )))
    .bind(vendor_id)
    .bind(status)
    .bind(order_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM sync_jobs WHERE {filter}"
    )))
    .bind(vendor_id)
    .bind(status)
    .bind(order_id)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

// --- Order sync: creating jobs (the delivery protocol is in `delivery_queries`) -------------

pub const CREATE_ORDER: &str = "create_order";
/// The unique index that forbids two live jobs for one order.
pub const ONE_LIVE_JOB_PER_ORDER: &str = "sync_jobs_one_live_job_per_order";

/// Creates the job of every recent order that has none (inserted before the trigger existed,
/// or with the trigger disabled). Only orders without an ERP reference, created within
/// `lookback`: a first install never replays the marketplace's history.
pub async fn create_missing(
    db: impl PgExecutor<'_>,
    lookback: chrono::Duration,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO sync_jobs (postgres_order_id, vendor_id, operation, payload, expires_at)
         SELECT o.id, o.vendor_id, 'create_order',
                erp_sync_order_payload(o.id) || jsonb_build_object('correlationId', gen_random_uuid()),
                now() + interval '30 days'
         FROM orders o
         WHERE o.created_at > now() - $1 AND o.erp_reference IS NULL
           AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.postgres_order_id = o.id AND j.operation = 'create_order')
         ORDER BY o.created_at
         LIMIT $2
         ON CONFLICT (postgres_order_id) WHERE operation = 'create_order' AND status IN ('pending', 'processing')
         DO NOTHING
         RETURNING id",
    )
    .bind(lookback)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A new job for an order, by hand (admin re-sync, DLQ retry). Violates
/// [`ONE_LIVE_JOB_PER_ORDER`] while the order has a live job; `None` when there is no such
/// order or it already has its ERP reference (see [`order_reference`]).
pub async fn create_for_order(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    correlation_id: &str,
    max_attempts: i32,
) -> sqlx::Result<Option<SyncJob>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_jobs (postgres_order_id, vendor_id, operation, payload, max_retries, expires_at)
         SELECT o.id, o.vendor_id, 'create_order',
                erp_sync_order_payload(o.id) || jsonb_build_object('correlationId', $2::text),
                $3, now() + interval '30 days'
         FROM orders o WHERE o.id = $1 AND o.erp_reference IS NULL
         RETURNING {COLUMNS}"
    )))
    .bind(order_id)
    .bind(correlation_id)
    .bind(max_attempts)
    .fetch_optional(db)
    .await
}

/// `None` when there is no such order, else its ERP reference (if it has one).
pub async fn order_reference(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
) -> sqlx::Result<Option<Option<String>>> {
    sqlx::query_scalar("SELECT erp_reference FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(db)
        .await
}
