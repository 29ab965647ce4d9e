//! `reconciliation_events` repository: the audit trail of drift checks.

use std::collections::BTreeMap;

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
    pub const ALL: [Self; 4] = [
        Self::IncrementalSync,
        Self::FullChecksum,
        Self::DriftDetected,
        Self::DriftResolved,
    ];

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

/// Deletes up to `limit` events older than `days` (one chunk of the clean-up job).
pub async fn delete_older_than(
    db: impl PgExecutor<'_>,
    days: i32,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        r#"DELETE FROM reconciliation_events WHERE id IN (
               SELECT id FROM reconciliation_events
               WHERE "timestamp" < now() - make_interval(days => $1)
               LIMIT $2)"#,
    )
    .bind(days)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A vendor's reconciliation figures. A run ends as `full_checksum` (no drift) or as
/// `drift_detected` (then `drift_resolved`), so the drift rate is drifts over runs.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationMetrics {
    pub vendor_id: String,
    /// Every event type, with its count (0 when none).
    pub events_by_type: BTreeMap<String, i64>,
    /// The latest event's time.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Runs that found drift, in percent of runs (0.1 %).
    pub drift_rate: f64,
}

pub async fn get_metrics(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
) -> sqlx::Result<ReconciliationMetrics> {
    let rows: Vec<(String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        r#"SELECT event_type, count(*), max("timestamp")
           FROM reconciliation_events WHERE vendor_id = $1 GROUP BY event_type"#,
    )
    .bind(vendor_id)
    .fetch_all(db)
    .await?;
    let mut events_by_type: BTreeMap<String, i64> = EventType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), 0))
        .collect();
    let mut last_run_at = None;
    for (event_type, count, last) in rows {
        events_by_type.insert(event_type, count);
        last_run_at = last_run_at.max(last);
    }
    let count = |t: EventType| events_by_type.get(t.as_str()).copied().unwrap_or(0);
    let drifts = count(EventType::DriftDetected);
    let runs = drifts + count(EventType::FullChecksum);
    let drift_rate = if runs == 0 {
        0.0
    } else {
        (1000.0 * drifts as f64 / runs as f64).round() / 10.0
    };
    Ok(ReconciliationMetrics {
        vendor_id: vendor_id.to_owned(),
        events_by_type,
        last_run_at,
        drift_rate,
    })
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
