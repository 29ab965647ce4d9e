//! `reconciliation_events` repository (plan Task 3): the audit trail of drift checks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    IncrementalSync,
    FullChecksum,
    DriftDetected,
    DriftResolved,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IncrementalSync => "incremental_sync",
            Self::FullChecksum => "full_checksum",
            Self::DriftDetected => "drift_detected",
            Self::DriftResolved => "drift_resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationEvent {
    pub id: Uuid,
    pub vendor_id: String,
    pub event_type: String,
    #[schema(value_type = Object)]
    pub summary: Value,
    pub details: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub duration_ms: i32,
}

const COLUMNS: &str = r#"id, vendor_id, event_type, summary, details, "timestamp", duration_ms"#;

pub struct NewEvent<'a> {
    pub vendor_id: &'a str,
    pub event_type: EventType,
    pub summary: &'a Value,
    pub details: Option<&'a str>,
    pub duration_ms: i32,
}

pub async fn create(
    db: impl PgExecutor<'_>,
    event: &NewEvent<'_>,
) -> sqlx::Result<ReconciliationEvent> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reconciliation_events (vendor_id, event_type, summary, details, duration_ms)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(event.vendor_id)
    .bind(event.event_type.as_str())
    .bind(event.summary)
    .bind(event.details)
    .bind(event.duration_ms)
    .fetch_one(db)
    .await
}

/// A vendor's events (or everyone's), newest first, with the total.
pub async fn find_by_vendor(
    db: &PgPool,
    vendor_id: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<ReconciliationEvent>, i64)> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM reconciliation_events WHERE ($1::text IS NULL OR vendor_id = $1)
           ORDER BY "timestamp" DESC, id LIMIT $2 OFFSET $3"#
    )))
    .bind(vendor_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM reconciliation_events WHERE ($1::text IS NULL OR vendor_id = $1)",
    )
    .bind(vendor_id)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

pub async fn find_recent(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<ReconciliationEvent>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM reconciliation_events WHERE vendor_id = $1 ORDER BY "timestamp" DESC, id LIMIT $2"#
    )))
    .bind(vendor_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn delete_older_than(db: impl PgExecutor<'_>, days: i32) -> sqlx::Result<u64> {
    let done = sqlx::query(r#"DELETE FROM reconciliation_events WHERE "timestamp" < now() - make_interval(days => $1)"#)
        .bind(days)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationMetrics {
    pub total: i64,
    pub incremental_syncs: i64,
    pub full_checksums: i64,
    pub drifts_detected: i64,
    pub drifts_resolved: i64,
    pub last_run_at: Option<DateTime<Utc>>,
    /// Drifts detected per checksum run, in percent.
    pub drift_frequency: f64,
}

pub async fn get_metrics(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
) -> sqlx::Result<ReconciliationMetrics> {
    sqlx::query_as(
        r#"SELECT count(*) AS total,
                  count(*) FILTER (WHERE event_type = 'incremental_sync') AS incremental_syncs,
                  count(*) FILTER (WHERE event_type = 'full_checksum') AS full_checksums,
                  count(*) FILTER (WHERE event_type = 'drift_detected') AS drifts_detected,
                  count(*) FILTER (WHERE event_type = 'drift_resolved') AS drifts_resolved,
                  max("timestamp") AS last_run_at,
                  COALESCE(round(100.0 * count(*) FILTER (WHERE event_type = 'drift_detected')
                      / NULLIF(count(*) FILTER (WHERE event_type = 'full_checksum'), 0), 1), 0)::float8
                      AS drift_frequency
           FROM reconciliation_events WHERE vendor_id = $1"#,
    )
    .bind(vendor_id)
    .fetch_one(db)
    .await
}

/// A vendor's events (or everyone's) of one type (or all), newest first, with the total.
pub async fn find_filtered(
    db: &PgPool,
    vendor_id: Option<&str>,
    event_type: Option<EventType>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<ReconciliationEvent>, i64)> {
    const FILTER: &str =
        "($1::text IS NULL OR vendor_id = $1) AND ($2::text IS NULL OR event_type = $2)";
    let event_type = event_type.map(EventType::as_str);
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM reconciliation_events WHERE {FILTER}
           ORDER BY "timestamp" DESC, id LIMIT $3 OFFSET $4"#
    )))
    .bind(vendor_id)
    .bind(event_type)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM reconciliation_events WHERE {FILTER}"
    )))
    .bind(vendor_id)
    .bind(event_type)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// Starts a run for a vendor unless one is running: first gives up runs whose lease has
/// expired (their process died), then inserts; the partial unique index makes the insert a
/// no-op while another run holds the vendor. `false` when one does.
pub async fn start_run(
    db: &PgPool,
    run_id: Uuid,
    vendor_id: &str,
    lease: std::time::Duration,
) -> sqlx::Result<bool> {
    let lease_ms = lease.as_millis() as i64;
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE reconciliation_runs SET status = 'abandoned', finished_at = now()
         WHERE vendor_id = $1 AND status = 'running' AND lease_until < now()",
    )
    .bind(vendor_id)
    .execute(&mut *tx)
    .await?;
    let started = sqlx::query(
        "INSERT INTO reconciliation_runs (id, vendor_id, lease_until)
         VALUES ($1, $2, now() + make_interval(secs => $3::float8 / 1000))
         ON CONFLICT (vendor_id) WHERE status = 'running' DO NOTHING",
    )
    .bind(run_id)
    .bind(vendor_id)
    .bind(lease_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(started)
}

/// The vendor's running run, if any: its id and start.
pub async fn running_run(
    db: &PgPool,
    vendor_id: &str,
) -> sqlx::Result<Option<(Uuid, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT id, started_at FROM reconciliation_runs WHERE vendor_id = $1 AND status = 'running'",
    )
    .bind(vendor_id)
    .fetch_optional(db)
    .await
}

/// Extends a running run's lease; `false` when the run is no longer running (another process
/// gave it up after its lease expired).
pub async fn renew_lease(
    db: &PgPool,
    run_id: Uuid,
    lease: std::time::Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE reconciliation_runs SET lease_until = now() + make_interval(secs => $2::float8 / 1000)
         WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(lease.as_millis() as i64)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn finish_run(
    db: &PgPool,
    run_id: Uuid,
    status: &str,
    summary: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE reconciliation_runs SET status = $2, summary = $3, finished_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(status)
    .bind(summary)
    .execute(db)
    .await?;
    Ok(())
}
