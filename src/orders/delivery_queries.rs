//! The delivery protocol around `sync_jobs`: what the dispatcher hands to Redis, the claim
//! that gives one attempt a fenced lease, and every outcome write of that attempt.
//!
//! A job is *due* at `COALESCE(next_retry_at, created_at)`: a new job at once, a retry at its
//! backoff, a processing job when its lease (or callback deadline) runs out. A processing job
//! holding a `lease_token` is in flight; every outcome write of an attempt names its token, so
//! a worker whose lease ran out (and whose job another worker took) changes nothing.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{
    dlq_queries::DlqEntry,
    job_queries::{COLUMNS, SyncJob},
};
use crate::agents::client::StoredSigning;

/// "Dispatched and not yet claimed": queued in Redis, unless the dispatch is older than the
/// stale limit (`$stale`), when the task is presumed lost and the job is due again.
const QUEUED: &str = "dispatched_at IS NOT NULL AND dispatched_at >= COALESCE(next_retry_at, created_at) \
                      AND dispatched_at >= now() - $1::interval";

/// A claimed job with what the worker needs of its vendor's agent and of its order.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    #[sqlx(flatten)]
    pub job: SyncJob,
    pub agent_url: Option<String>,
    pub agent_last_heartbeat: Option<DateTime<Utc>>,
    pub agent_deregistered_at: Option<DateTime<Utc>>,
    /// Set when the order already has its ERP reference (completed by another path).
    pub order_erp_reference: Option<String>,
    /// The order and its lines as they stand now (the `order` of the create-order body); null
    /// when the order row is gone.
    pub current_order: Option<serde_json::Value>,
    /// The agent's sealed signing secrets, for [`crate::agents::client`].
    #[sqlx(flatten)]
    pub agent_signing: StoredSigning,
}

/// Takes a job for one attempt under `token`: pending and due, or processing with its lease
/// (or callback deadline) run out. `None` when another worker holds it or it is finished: a
/// duplicate delivery, to be dropped. A processing job whose previous attempt still held a
/// lease lost that attempt's outcome (its worker died mid-call): that attempt is counted now,
/// so a job that kills its worker cannot be redelivered forever.
pub async fn claim(
    db: impl PgExecutor<'_>,
    id: Uuid,
    token: Uuid,
    lease: chrono::Duration,
    max_attempts: i32,
) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH claimed AS (
             UPDATE sync_jobs SET status = 'processing', started_at = now(), max_retries = $4,
                    retry_count = retry_count + CASE WHEN status = 'processing' AND lease_token IS NOT NULL THEN 1 ELSE 0 END,
                    next_retry_at = now() + $3, lease_token = $2
             WHERE id = $1
               AND ((status = 'pending' AND COALESCE(next_retry_at, created_at) <= now())
                    OR (status = 'processing' AND next_retry_at < now()))
             RETURNING {COLUMNS}
         )
         SELECT c.*, a.agent_url, a.last_heartbeat AS agent_last_heartbeat,
                a.deregistered_at AS agent_deregistered_at, o.erp_reference AS order_erp_reference,
                erp_sync_order_payload(c.postgres_order_id) -> 'order' AS current_order,
                a.signing_secret_sealed, a.previous_signing_secret_sealed,
                a.previous_signing_secret_expires_at
         FROM claimed c
         LEFT JOIN agent_registry a ON a.vendor_id = c.vendor_id
         LEFT JOIN orders o ON o.id = c.postgres_order_id"
    )))
    .bind(id)
    .bind(token)
    .bind(lease)
    .bind(max_attempts)
    .fetch_optional(db)
    .await
}

/// How an attempt that did not finish the job gives it back.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// When the job is due again.
    pub due_at: DateTime<Utc>,
    /// Why, shown as the job's `errorMessage`.
    pub reason: &'a str,
    /// Whether the agent was (or may have been) called: only then is an attempt spent.
    pub spent_attempt: bool,
    /// The agent's error, kept as `last_agent_error` (the dead-letter reason).
    pub agent_error: Option<&'a str>,
    /// The create-order body the attempt sent (kept as `sent_payload`), when it called.
    pub sent: Option<&'a serde_json::Value>,
}

/// Puts the attempt's job back to pending, due at `due_at`. `false` when the attempt no longer
/// holds the job (its lease ran out and another took it, or an answer finished it).
pub async fn release(
    db: impl PgExecutor<'_>,
    id: Uuid,
    token: Uuid,
    release: &Release<'_>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET status = 'pending', next_retry_at = $3, error_message = $4,
                retry_count = retry_count + CASE WHEN $5 THEN 1 ELSE 0 END,
                last_agent_error = COALESCE($6, last_agent_error),
                sent_payload = COALESCE($7, sent_payload),
                lease_token = NULL, dispatched_at = NULL
         WHERE id = $1 AND status = 'processing' AND lease_token = $2",
    )
    .bind(id)
    .bind(token)
    .bind(release.due_at)
    .bind(release.reason)
    .bind(release.spent_attempt)
    .bind(release.agent_error)
    .bind(release.sent)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// After a 202: the attempt is spent; the job stays processing, without a lease, until the
/// callback or until `deadline` passes and the dispatcher hands it out again.
pub async fn await_callback(
    db: impl PgExecutor<'_>,
    id: Uuid,
    token: Uuid,
    deadline: chrono::Duration,
    sent: &serde_json::Value,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET next_retry_at = now() + $3, retry_count = retry_count + 1, sent_payload = $4,
                lease_token = NULL, dispatched_at = NULL, error_message = NULL
         WHERE id = $1 AND status = 'processing' AND lease_token = $2",
    )
    .bind(id)
    .bind(token)
    .bind(deadline)
    .bind(sent)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, sqlx::FromRow)]
pub struct Completed {
    #[sqlx(flatten)]
    pub job: SyncJob,
    /// Whether the order took this reference (`false`: it already had one).
    pub order_updated: bool,
    /// Other live jobs of the order, cancelled.
    pub superseded: i64,
    /// Unresolved dead-letter entries of the order, resolved by `agent`.
    pub healed: i64,
}

/// Records that the ERP has the job's order, in one statement: the job completes (from any
/// state but completed: a late success heals a failed or dead-lettered job), the order takes
/// the reference if it has none, the order's other live jobs are cancelled and its open
/// dead-letter entries resolved (`resolved_by = 'agent'`).
///
/// Unlike the other outcome writes this one is not fenced by the lease: the agent's success is
/// a fact about the ERP, whichever attempt heard it. `token` only decides whether it counts as
/// this attempt's call. A cancelled job completes only while its order has no reference.
/// `None` when the job is already completed (or is unknown).
pub async fn complete(
    db: impl PgExecutor<'_>,
    id: Uuid,
    erp_reference: &str,
    token: Option<Uuid>,
    sent: Option<&serde_json::Value>,
) -> sqlx::Result<Option<Completed>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH job AS (
             UPDATE sync_jobs SET status = 'completed', completed_at = now(), erp_reference = $2,
                    retry_count = retry_count + CASE WHEN lease_token = $3 THEN 1 ELSE 0 END,
                    sent_payload = COALESCE($4, sent_payload),
                    next_retry_at = NULL, error_message = NULL, lease_token = NULL
             WHERE id = $1
               AND (status IN ('pending', 'processing', 'failed')
                    OR (status = 'cancelled' AND NOT EXISTS (
                        SELECT 1 FROM orders o WHERE o.id = sync_jobs.postgres_order_id AND o.erp_reference IS NOT NULL)))
             RETURNING {COLUMNS}
         ), order_updated AS (
             UPDATE orders SET erp_reference = $2, updated_at = now()
             FROM job WHERE orders.id = job.postgres_order_id AND orders.erp_reference IS NULL
             RETURNING orders.id
         ), superseded AS (
             UPDATE sync_jobs s SET status = 'cancelled', completed_at = now(), next_retry_at = NULL,
                    lease_token = NULL, error_message = 'superseded: job ' || job.id || ' completed the order'
             FROM job
             WHERE s.postgres_order_id = job.postgres_order_id AND s.id <> job.id
               AND s.status IN ('pending', 'processing')
             RETURNING s.id
         ), healed AS (
             UPDATE dead_letter_queue d SET resolved = true, resolved_at = now(), resolved_by = 'agent'
             FROM job WHERE d.order_id = job.postgres_order_id AND NOT d.resolved
             RETURNING d.id
         )
         SELECT job.*, EXISTS (SELECT 1 FROM order_updated) AS order_updated,
                (SELECT count(*) FROM superseded) AS superseded, (SELECT count(*) FROM healed) AS healed
         FROM job"
    )))
    .bind(id)
    .bind(erp_reference)
    .bind(token)
    .bind(sent)
    .fetch_optional(db)
    .await
}

/// Fails a live job for good and parks it in the dead-letter queue, in one statement.
/// With `token`, only while that attempt holds the job (and `spent_attempt` counts its call);
/// without, whatever holds it (an agent's `failed` callback). `None` when nothing changed.
pub async fn dead_letter(
    db: impl PgExecutor<'_>,
    id: Uuid,
    token: Option<Uuid>,
    reason: &str,
    spent_attempt: bool,
    sent: Option<&serde_json::Value>,
) -> sqlx::Result<Option<DlqEntry>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH failed AS (
             UPDATE sync_jobs SET status = 'failed', completed_at = now(), error_message = $3,
                    retry_count = retry_count + CASE WHEN $4 THEN 1 ELSE 0 END,
                    sent_payload = COALESCE($5, sent_payload),
                    next_retry_at = NULL, lease_token = NULL
             WHERE id = $1 AND status IN ('pending', 'processing')
               AND ($2::uuid IS NULL OR (status = 'processing' AND lease_token = $2))
             RETURNING id, postgres_order_id, vendor_id, operation, payload, sent_payload, retry_count
         )
         INSERT INTO dead_letter_queue
             (original_job_id, order_id, vendor_id, operation, payload, sent_payload, failure_reason, attempt_count)
         SELECT id, postgres_order_id, vendor_id, operation, payload, sent_payload, $3, retry_count FROM failed
         RETURNING {}",
        super::dlq_queries::COLUMNS
    )))
    .bind(id)
    .bind(token)
    .bind(reason)
    .bind(spent_attempt)
    .bind(sent)
    .fetch_optional(db)
    .await
}

/// Hands a delivered but not claimed job back to the dispatcher (its vendor is over its share
/// of the workers): the dispatcher queues it again when the vendor has room.
pub async fn defer(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET dispatched_at = NULL WHERE id = $1 AND status IN ('pending', 'processing')",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What one vendor has in the pipeline, with its agent (for the dispatcher's gates).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VendorWork {
    pub vendor_id: String,
    /// Due and not queued: what could be dispatched now.
    pub ready: i64,
    /// Due and queued in Redis, not yet claimed.
    pub queued: i64,
    /// Held by a worker (a live lease).
    pub in_flight: i64,
    pub agent_registered: bool,
    pub agent_last_heartbeat: Option<DateTime<Utc>>,
    pub agent_deregistered_at: Option<DateTime<Utc>>,
}

/// Every vendor with due or in-flight work. A dispatch older than `stale` counts as lost.
pub async fn vendor_work(
    db: impl PgExecutor<'_>,
    stale: chrono::Duration,
) -> sqlx::Result<Vec<VendorWork>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH due AS (
             SELECT vendor_id, count(*) FILTER (WHERE NOT COALESCE({QUEUED}, false)) AS ready,
                    count(*) FILTER (WHERE {QUEUED}) AS queued
             FROM sync_jobs
             WHERE status IN ('pending', 'processing') AND COALESCE(next_retry_at, created_at) <= now()
               AND operation = 'create_order'
             GROUP BY vendor_id
         ), leased AS (
             SELECT vendor_id, count(*) AS in_flight FROM sync_jobs
             WHERE lease_token IS NOT NULL AND status = 'processing' AND next_retry_at > now()
             GROUP BY vendor_id
         ), vendors AS (SELECT vendor_id FROM due UNION SELECT vendor_id FROM leased)
         SELECT v.vendor_id, COALESCE(d.ready, 0) AS ready, COALESCE(d.queued, 0) AS queued,
                COALESCE(l.in_flight, 0) AS in_flight, (a.id IS NOT NULL) AS agent_registered,
                a.last_heartbeat AS agent_last_heartbeat, a.deregistered_at AS agent_deregistered_at
         FROM vendors v
         LEFT JOIN due d ON d.vendor_id = v.vendor_id
         LEFT JOIN leased l ON l.vendor_id = v.vendor_id
         LEFT JOIN agent_registry a ON a.vendor_id = v.vendor_id"
    )))
    .bind(stale)
    .fetch_all(db)
    .await
}

/// Marks up to `quota` ready jobs of each vendor as dispatched, oldest due first, and returns
/// them with their vendor and due time. `SKIP LOCKED` keeps two replicas from taking the same rows.
/// (Unqualified columns in the lateral subquery are the job's: `q` has only vendor_id, n.)
pub async fn take_ready(
    db: impl PgExecutor<'_>,
    quotas: &[(String, i64)],
    stale: chrono::Duration,
) -> sqlx::Result<Vec<(Uuid, String, DateTime<Utc>)>> {
    let (vendors, counts): (Vec<&str>, Vec<i64>) =
        quotas.iter().map(|(v, n)| (v.as_str(), *n)).unzip();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_jobs SET dispatched_at = now()
         WHERE id IN (
             SELECT j.id FROM unnest($2::text[], $3::int8[]) AS q(vendor_id, n)
             CROSS JOIN LATERAL (
                 SELECT id FROM sync_jobs s
                 WHERE s.vendor_id = q.vendor_id AND s.status IN ('pending', 'processing')
                   AND s.operation = 'create_order' AND COALESCE(s.next_retry_at, s.created_at) <= now()
                   AND NOT COALESCE({QUEUED}, false)
                 ORDER BY COALESCE(s.next_retry_at, s.created_at)
                 LIMIT q.n
                 FOR UPDATE SKIP LOCKED) j)
         RETURNING id, vendor_id, COALESCE(next_retry_at, created_at)"
    )))
    .bind(stale)
    .bind(vendors)
    .bind(counts)
    .fetch_all(db)
    .await
}

/// When the next live job comes due (a retry, a lease or callback deadline running out).
pub async fn next_due(db: impl PgExecutor<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(COALESCE(next_retry_at, created_at)) FROM sync_jobs
         WHERE status IN ('pending', 'processing') AND COALESCE(next_retry_at, created_at) > now()",
    )
    .fetch_one(db)
    .await
}

/// Makes a vendor's jobs that wait for its breaker (`reason`) due now; how many.
pub async fn resume_waiting(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    reason: &str,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET next_retry_at = now()
         WHERE vendor_id = $1 AND status = 'pending' AND error_message = $2 AND next_retry_at > now()",
    )
    .bind(vendor_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
