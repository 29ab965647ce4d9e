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
