//! The bodies of the scheduled jobs: plain async functions the scheduler, the "run now" route
//! and the tests call. Each returns a small JSON summary, recorded with the run.

use std::{future::Future, sync::Arc};

use chrono::Utc;
use futures::{StreamExt, future::BoxFuture, stream};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::JobName;
use crate::{
    agents::{AgentService, model::AgentHealth},
    error::AppError,
    ops::{
        alerts::{Alert, AlertKind, AlertService},
        metrics::queries as metrics_queries,
        scheduler::queries as runs,
    },
    orders::{dlq_queries as dlq, job_queries as sync_jobs},
    reconciliation::queries as events,
};

/// Rows deleted per statement by the clean-up jobs: each statement holds its locks briefly.
const CLEANUP_CHUNK: i64 = 5_000;
/// What the clean-up jobs keep (reconciliation events, resolved DLQ entries, run history).
const RETENTION_DAYS: i32 = 30;
/// Reconciliations run at once by `detect-drift` (each calls an agent and reads Postgres).
const DRIFT_CONCURRENCY: usize = 4;
/// Vendor ids listed in a run's summary; the counts are always complete.
const LISTED_VENDORS: usize = 50;

/// What `detect-drift` needs of reconciliation: one run for one vendor.
pub trait Reconciler: Send + Sync {
    fn detect_drift<'a>(
        &'a self,
        vendor_id: &'a str,
    ) -> BoxFuture<'a, Result<DriftReport, AppError>>;
}

/// The outcome of one vendor's reconciliation run.
#[derive(Debug, Clone)]
pub struct DriftReport {
    /// Items found different (repaired, deactivated or left unresolved); 0: no drift.
    pub drifted: u64,
    /// The run's own summary, kept in the job's result.
    pub summary: Value,
}

#[derive(Clone)]
pub struct Jobs {
    db: PgPool,
    agents: AgentService,
    alerts: AlertService,
    reconciler: Arc<dyn Reconciler>,
}

impl Jobs {
    /// The job bodies over these services; `detect-drift` runs through `reconciler` (the
    /// reconciliation service in the application, a scripted one in tests).
    pub fn new(
        db: PgPool,
        agents: AgentService,
        alerts: AlertService,
        reconciler: Arc<dyn Reconciler>,
    ) -> Self {
        Self {
            db,
            agents,
            alerts,
            reconciler,
        }
    }

    pub async fn run(&self, job: JobName) -> Result<Value, AppError> {
        match job {
            JobName::DetectDrift => self.detect_drift().await,
            JobName::CheckAgentHealth => self.check_agent_health().await,
            JobName::CheckDlq => self.check_dlq().await,
            JobName::CleanupExpiredJobs => self.cleanup_expired_jobs().await,
            JobName::ArchiveReconciliationEvents => self.archive_reconciliation_events().await,
            JobName::CleanupResolvedDlq => self.cleanup_resolved_dlq().await,
        }
    }

    /// Reconciles every online agent's vendor, a few at a time; alerts on drift. One vendor's
    /// failure is counted and logged, and the others go on.
    pub async fn detect_drift(&self) -> Result<Value, AppError> {
        let reconciler = self.reconciler.clone();
        let now = Utc::now();
        let vendors: Vec<String> = self
            .agents
            .active()
            .await?
            .into_iter()
            .filter(|agent| self.agents.health_of(agent, now) == AgentHealth::Online)
            .map(|agent| agent.vendor_id)
            .collect();
        let reports: Vec<(String, Result<DriftReport, AppError>)> = stream::iter(vendors)
            .map(|vendor_id| {
                let reconciler = reconciler.clone();
                async move {
                    let report = reconciler.detect_drift(&vendor_id).await;
                    (vendor_id, report)
                }
            })
            .buffer_unordered(DRIFT_CONCURRENCY)
            .collect()
            .await;
        // The reconciliation service raises `reconciliation_drift` itself, where the drift is
        // found (a run an operator triggers alerts too); here the runs are only counted.
        let (mut drifted, mut skipped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for (vendor_id, report) in &reports {
            match report {
                Ok(report) if report.drifted > 0 => drifted.push(vendor_id.as_str()),
                Ok(_) => {}
                // A run already going for the vendor, or its agent went offline meanwhile.
                Err(AppError::Conflict(reason)) => {
                    tracing::info!(vendor_id, reason, "reconciliation skipped");
                    skipped.push(vendor_id.as_str());
                }
                Err(error) => {
                    tracing::warn!(vendor_id, error = ?error, "reconciliation failed");
                    failed.push(vendor_id.as_str());
                }
            }
        }
        Ok(json!({
            "vendors": reports.len(),
            "drifted": drifted.len(),
            "skipped": skipped.len(),
            "failed": failed.len(),
            "driftedVendors": listed(&drifted),
            "skippedVendors": listed(&skipped),
            "failedVendors": listed(&failed),
        }))
    }

    /// The health sweep: demotes agents whose heartbeats stopped; an agent gone offline is
    /// an `agent_offline` alert.
    pub async fn check_agent_health(&self) -> Result<Value, AppError> {
        let changes = self.agents.check_health().await?;
        let (mut offline, mut degraded) = (Vec::new(), Vec::new());
        for change in &changes {
            if change.status == "offline" {
                self.alerts.raise(Alert::new(
                    AlertKind::AgentOffline,
                    &change.vendor_id,
                    format!(
                        "agent went offline (was {}): no heartbeat for too long, orders wait",
                        change.previous_status
                    ),
                ));
                offline.push(change.vendor_id.as_str());
            } else {
                degraded.push(change.vendor_id.as_str());
            }
        }
        Ok(json!({
            "changed": changes.len(),
            "offline": listed(&offline),
            "degraded": listed(&degraded),
        }))
    }

    /// A `dlq_entries_found` alert for every vendor with unresolved dead-letter entries.
    pub async fn check_dlq(&self) -> Result<Value, AppError> {
        let counts = dlq::count_unresolved_by_vendor(&self.db).await?;
        for (vendor_id, count) in &counts {
            self.alerts.raise(Alert::new(
                AlertKind::DlqEntriesFound,
                vendor_id,
                format!(
                    "{count} unresolved dead-letter entries: orders that did not reach the ERP"
                ),
            ));
        }
        Ok(json!({
            "unresolved": counts.iter().map(|(_, n)| n).sum::<i64>(),
            "vendors": counts.len(),
        }))
    }

    /// Deletes finished sync jobs past their `expires_at`, and the service's own history past
    /// retention (scheduler runs; agent status changes, keeping each agent's latest).
    pub async fn cleanup_expired_jobs(&self) -> Result<Value, AppError> {
        let db = &self.db;
        let jobs = in_chunks(|limit| sync_jobs::delete_expired(db, limit)).await?;
        let runs = in_chunks(|limit| runs::delete_older_than(db, RETENTION_DAYS, limit)).await?;
        let changes = in_chunks(|limit| {
            metrics_queries::delete_old_status_changes(db, RETENTION_DAYS, limit)
        })
        .await?;
        // Their attempts go with the jobs (ON DELETE CASCADE); operator actions age out alike.
        let actions = in_chunks(|limit| {
            crate::orders::operator_queries::delete_old_actions(db, RETENTION_DAYS, limit)
        })
        .await?;
        Ok(json!({
            "syncJobs": jobs, "schedulerRuns": runs, "agentStatusChanges": changes,
            "operatorActions": actions
        }))
    }

    /// Deletes reconciliation events older than 30 days.
    pub async fn archive_reconciliation_events(&self) -> Result<Value, AppError> {
        let db = &self.db;
        let deleted =
            in_chunks(|limit| events::delete_older_than(db, RETENTION_DAYS, limit)).await?;
        Ok(json!({"deleted": deleted}))
    }

    /// Deletes dead-letter entries resolved more than 30 days ago.
    pub async fn cleanup_resolved_dlq(&self) -> Result<Value, AppError> {
        let db = &self.db;
        let deleted =
            in_chunks(|limit| dlq::delete_old_resolved(db, RETENTION_DAYS, limit)).await?;
        Ok(json!({"deleted": deleted}))
    }
}

/// Repeats a bounded delete until a chunk comes back short; returns the total.
async fn in_chunks<F, Fut>(mut delete_chunk: F) -> Result<u64, AppError>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = sqlx::Result<u64>>,
{
    let mut total = 0;
    loop {
        let deleted = delete_chunk(CLEANUP_CHUNK).await?;
        total += deleted;
        if deleted < CLEANUP_CHUNK as u64 {
            return Ok(total);
        }
    }
}

fn listed(vendors: &[&str]) -> Vec<String> {
    vendors
        .iter()
        .take(LISTED_VENDORS)
        .map(|v| (*v).to_owned())
        .collect()
}
