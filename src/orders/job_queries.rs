//! `sync_jobs` repository (plan Task 3). Postgres is the source of truth for every job;
//! Redis only dispatches.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::agents::client::StoredSigning;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct SyncJob {
    pub id: Uuid,
    pub postgres_order_id: Option<Uuid>,
    pub vendor_id: String,
    pub operation: String,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub retry_count: i32,
    pub max_retries: i32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    #[serde(skip)]
    pub error_stack: Option<String>,
    pub erp_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str = "id, postgres_order_id, vendor_id, operation, status, payload, retry_count, max_retries, \
     next_retry_at, error_message, error_stack, erp_reference, created_at, started_at, completed_at, expires_at";

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
    let filter = "($1::text IS NULL OR vendor_id = $1) AND ($2::text IS NULL OR status = $2) \
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

// --- Order sync: the outbox protocol -------------------------------------------------------

pub const CREATE_ORDER: &str = "create_order";
/// The unique index that forbids two live jobs for one order.
pub const ONE_LIVE_JOB_PER_ORDER: &str = "sync_jobs_one_live_job_per_order";

/// A claimed job with what the worker needs of its vendor's agent.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    #[sqlx(flatten)]
    pub job: SyncJob,
    pub agent_url: Option<String>,
    pub agent_last_heartbeat: Option<DateTime<Utc>>,
    pub agent_registered: bool,
    pub agent_deregistered_at: Option<DateTime<Utc>>,
    /// The agent's sealed signing secrets, for [`crate::agents::client`].
    #[sqlx(flatten)]
    pub agent_signing: StoredSigning,
}

/// Takes a job for one attempt: pending and due, or processing with its lease run out (the
/// worker holding it died, or the agent never called back). Returns `None` when another
/// worker has it or it is finished: a duplicate delivery, to be acknowledged and dropped.
/// The vendor's agent comes in the same round trip.
pub async fn claim(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease: chrono::Duration,
    max_attempts: i32,
) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH claimed AS (
             UPDATE sync_jobs SET status = 'processing', started_at = now(), retry_count = retry_count + 1,
                                  max_retries = $3, next_retry_at = now() + $2
             WHERE id = $1
               AND ((status = 'pending' AND COALESCE(next_retry_at, created_at) <= now())
                    OR (status = 'processing' AND next_retry_at < now()))
             RETURNING {COLUMNS}
         )
         SELECT c.*, a.agent_url, a.last_heartbeat AS agent_last_heartbeat, (a.id IS NOT NULL) AS agent_registered,
                a.deregistered_at AS agent_deregistered_at, a.signing_secret_sealed,
                a.previous_signing_secret_sealed, a.previous_signing_secret_expires_at
         FROM claimed c LEFT JOIN agent_registry a ON a.vendor_id = c.vendor_id"
    )))
    .bind(id)
    .bind(lease)
    .bind(max_attempts)
    .fetch_optional(db)
    .await
}

/// After a 202: the job stays processing until the callback, or until `deadline` passes and
/// the recovery sweep hands it out again.
pub async fn await_callback(
    db: impl PgExecutor<'_>,
    id: Uuid,
    deadline: chrono::Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET next_retry_at = now() + $2 WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .bind(deadline)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Completes a live job and copies the ERP reference onto its order, in one statement.
/// `None` when the job was already finished (a repeated or late answer): nothing changes.
pub async fn complete(
    db: impl PgExecutor<'_>,
    id: Uuid,
    erp_reference: &str,
) -> sqlx::Result<Option<SyncJob>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH job AS (
             UPDATE sync_jobs SET status = 'completed', completed_at = now(), erp_reference = $2,
                                  next_retry_at = NULL, error_message = NULL
             WHERE id = $1 AND status IN ('pending', 'processing')
             RETURNING {COLUMNS}
         ), orders_updated AS (
             UPDATE orders SET erp_reference = $2, updated_at = now()
             FROM job WHERE orders.id = job.postgres_order_id
         )
         SELECT * FROM job"
    )))
    .bind(id)
    .bind(erp_reference)
    .fetch_optional(db)
    .await
}

/// Puts a processing job back to pending, due at `due_at`. `dispatched_at` is set to the due
/// time when a delayed task was queued for it, so the recovery sweep leaves it alone unless
/// that task is lost.
pub async fn reschedule(
    db: impl PgExecutor<'_>,
    id: Uuid,
    due_at: DateTime<Utc>,
    error: &str,
    dispatched: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET status = 'pending', next_retry_at = $2, error_message = $3,
                              dispatched_at = CASE WHEN $4 THEN $2 ELSE dispatched_at END
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .bind(due_at)
    .bind(error)
    .bind(dispatched)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fails a live job for good; `None` when it was already finished.
pub async fn fail(db: impl PgExecutor<'_>, id: Uuid, error: &str) -> sqlx::Result<Option<SyncJob>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_jobs SET status = 'failed', completed_at = now(), error_message = $2, next_retry_at = NULL
         WHERE id = $1 AND status IN ('pending', 'processing')
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(error)
    .fetch_optional(db)
    .await
}

/// Marks up to `limit` jobs that are due and not held by anyone as dispatched and returns
/// them: new jobs, retries whose queued task was lost, jobs whose lease ran out. `SKIP LOCKED`
/// keeps two replicas from taking the same rows.
pub async fn take_due(
    db: impl PgExecutor<'_>,
    grace: chrono::Duration,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE sync_jobs SET dispatched_at = now()
         WHERE id IN (
             SELECT id FROM sync_jobs
             WHERE status IN ('pending', 'processing') AND operation = 'create_order'
               AND COALESCE(next_retry_at, created_at) <= now()
               AND (dispatched_at IS NULL
                    OR dispatched_at < COALESCE(next_retry_at, created_at)
                    OR dispatched_at < now() - $1)
             ORDER BY COALESCE(next_retry_at, created_at)
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(grace)
    .bind(limit)
    .fetch_all(db)
    .await
}

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
/// [`ONE_LIVE_JOB_PER_ORDER`] while the order has a live job; `None` when there is no order.
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
         FROM orders o WHERE o.id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(order_id)
    .bind(correlation_id)
    .bind(max_attempts)
    .fetch_optional(db)
    .await
}
