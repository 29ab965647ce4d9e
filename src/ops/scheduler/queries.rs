//! `scheduler_runs`: one row per run of a scheduled job, and the advisory lock of a job.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    /// The cron occurrence of a scheduled run; null for a manual one.
    pub tick: Option<DateTime<Utc>>,
    /// schedule or manual.
    pub trigger: String,
    /// The replica that ran it.
    pub instance: String,
    /// running, succeeded, failed, skipped, cancelled or abandoned.
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

const COLUMNS: &str =
    "id, job, tick, trigger, instance, status, result, started_at, finished_at, duration_ms";

/// Claims a scheduled occurrence; `None` when another replica already has.
pub async fn claim_tick(
    db: impl PgExecutor<'_>,
    job: &str,
    tick: DateTime<Utc>,
    instance: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO scheduler_runs (job, tick, trigger, instance) VALUES ($1, $2, 'schedule', $3)
         ON CONFLICT ON CONSTRAINT scheduler_runs_one_per_tick DO NOTHING
         RETURNING id",
    )
    .bind(job)
    .bind(tick)
    .bind(instance)
    .fetch_optional(db)
    .await
}

pub async fn start_manual(db: impl PgExecutor<'_>, job: &str, instance: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO scheduler_runs (job, trigger, instance) VALUES ($1, 'manual', $2) RETURNING id",
    )
    .bind(job)
    .bind(instance)
    .fetch_one(db)
    .await
}

/// Takes the job's session-level advisory lock on `conn` without waiting; `false` when
/// another session holds it.
pub async fn try_lock(conn: &mut PgConnection, job: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtextextended('erp_sync.scheduler:' || $1, 0))",
    )
    .bind(job)
    .fetch_one(conn)
    .await
}

/// Releases the lock at once (closing the connection releases it too, but only once the
/// server has noticed).
pub async fn unlock(conn: &mut PgConnection, job: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT pg_advisory_unlock(hashtextextended('erp_sync.scheduler:' || $1, 0))",
    )
    .bind(job)
    .fetch_one(conn)
    .await
}

/// Marks the job's other unfinished runs abandoned (their replica died mid-run). Only called
/// while holding the job's lock.
pub async fn abandon_unfinished(
    db: impl PgExecutor<'_>,
    job: &str,
    except: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE scheduler_runs SET status = 'abandoned', finished_at = now()
         WHERE job = $1 AND status = 'running' AND id <> $2",
    )
    .bind(job)
    .bind(except)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

pub async fn finish(
    db: impl PgExecutor<'_>,
    id: i64,
    status: &str,
    result: &Value,
    duration_ms: i64,
) -> sqlx::Result<JobRun> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE scheduler_runs SET status = $2, result = $3, duration_ms = $4, finished_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(status)
    .bind(result)
    .bind(duration_ms)
    .fetch_one(db)
    .await
}

/// The latest run of each job (skipped ticks are not runs).
pub async fn latest_per_job(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<JobRun>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (job) {COLUMNS} FROM scheduler_runs
         WHERE status <> 'skipped'
         ORDER BY job, started_at DESC, id DESC"
    )))
    .fetch_all(db)
    .await
}

/// Deletes up to `limit` runs older than `days` (one chunk of the clean-up job).
pub async fn delete_older_than(
    db: impl PgExecutor<'_>,
    days: i32,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM scheduler_runs WHERE id IN (
             SELECT id FROM scheduler_runs
             WHERE started_at < now() - make_interval(days => $1) AND status <> 'running'
             LIMIT $2)",
    )
    .bind(days)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
