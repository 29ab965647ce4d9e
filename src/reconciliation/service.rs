//! Reconciliation runs: who may start one, the run itself (checksums, then the search when
//! they differ), its events and its lease. `detect_drift` is what the scheduler awaits; the
//! trigger route starts the same run in the background.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::{
    catalogue_queries as catalogue,
    erp::ErpCatalogue,
    model::{EventFilter, RunOutcome, RunSummary},
    queries::{self as events, EventType, NewEvent, ReconciliationEvent},
    range::SkuRange,
    search::{FailureKind, Search, Tally, in_step},
};
use crate::{
    agents::{
        self, AgentService,
        client::{AgentTarget, StoredSigning},
        model::AgentHealth,
    },
    config::Settings,
    error::AppError,
    ingest::IngestService,
    ops::{
        alerts::{Alert, AlertKind, AlertService},
        scheduler::{DriftReport, Reconciler},
    },
    orders::{agent_client::AgentClient, breaker::BreakerRegistry},
    pagination::{Page, Pagination},
};

/// A run holds its vendor for this long past its last renewal; a run whose process died stops
/// blocking the vendor when it runs out.
const LEASE: Duration = Duration::from_secs(60);
const LEASE_RENEWAL: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct ReconciliationService {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    agents: AgentService,
    ingest: IngestService,
    client: Option<AgentClient>,
    breakers: BreakerRegistry,
    alerts: AlertService,
    concurrency: usize,
    page_size: usize,
    run_timeout: Duration,
    /// Background runs started by the trigger route, and their stop signal.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// A vendor held for one run.
struct Claim {
    run_id: Uuid,
    vendor_id: String,
    agent_url: String,
    signing: StoredSigning,
    client: AgentClient,
}

impl ReconciliationService {
    pub fn new(
        db: PgPool,
        agents: AgentService,
        ingest: IngestService,
        client: Option<AgentClient>,
        breakers: BreakerRegistry,
        alerts: AlertService,
        settings: &Settings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                agents,
                ingest,
                client,
                breakers,
                alerts,
                concurrency: settings.reconciliation_concurrency,
                page_size: settings.reconciliation_page_size,
                run_timeout: settings.reconciliation_run_timeout,
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Starts a run in the background and returns its id at once. 404 without an agent, 409
    /// while the agent is offline or another run (on any replica) holds the vendor.
    pub async fn trigger(&self, vendor_id: &str) -> Result<Uuid, AppError> {
        let claim = self.claim(vendor_id).await?;
        let run_id = claim.run_id;
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            this.execute(claim).await;
        });
        Ok(run_id)
    }

    /// One whole run for a vendor: compares checksums, searches and repairs any drift,
    /// records the events, and returns the summary. Fails only when the run cannot start
    /// (as [`trigger`](Self::trigger)); whatever happens during the run is in the summary.
    pub async fn detect_drift(&self, vendor_id: &str) -> Result<RunSummary, AppError> {
        let claim = self.claim(vendor_id).await?;
        Ok(self.execute(claim).await)
    }

    pub async fn events(
        &self,
        filter: &EventFilter,
        pagination: Pagination,
    ) -> Result<Page<ReconciliationEvent>, AppError> {
        let (rows, total) = events::find_filtered(
            &self.inner.db,
            filter.vendor_id.as_deref(),
            filter.event_type,
            i64::from(pagination.limit()),
            pagination.offset(),
        )
        .await?;
        Ok(Page::new(rows, pagination, total))
    }

    /// Stops the runs in progress (each records what it did, and that it was stopped) and
    /// waits for them; no run starts afterwards.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    async fn claim(&self, vendor_id: &str) -> Result<Claim, AppError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(AppError::Unavailable("erp-sync is shutting down".into()));
        }
        let Some(client) = inner.client.clone() else {
            return Err(AppError::Unavailable(
                "AGENT_SECRET is not set: erp-sync calls no agent, so it cannot reconcile".into(),
            ));
        };
        let agent = agents::queries::find_by_vendor_id(&inner.db, vendor_id)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!("no agent registered for vendor {vendor_id}"))
            })?;
        if agent.deregistered_at.is_some() {
            return Err(AppError::Conflict(format!(
                "the agent of vendor {vendor_id} is deregistered: register it again to reconcile"
            )));
        }
        if inner.agents.health_of(&agent, Utc::now()) == AgentHealth::Offline {
            let last = agent
                .last_heartbeat
                .map_or("never".to_owned(), |at| at.to_rfc3339());
            return Err(AppError::Conflict(format!(
                "the agent of vendor {vendor_id} is offline (last heartbeat: {last}): \
                 reconciliation needs it online"
            )));
        }
        let run_id = Uuid::new_v4();
        if !events::start_run(&inner.db, run_id, vendor_id, LEASE).await? {
            let running = events::running_run(&inner.db, vendor_id).await?;
            let which = running.map_or(String::new(), |(id, at)| {
                format!(" (run {id}, started {})", at.to_rfc3339())
            });
            return Err(AppError::Conflict(format!(
                "a reconciliation of vendor {vendor_id} is already running{which}"
            )));
        }
        Ok(Claim {
            run_id,
            vendor_id: vendor_id.to_owned(),
            agent_url: agent.agent_url,
            signing: agent.signing,
            client,
        })
    }

    /// Runs a claimed vendor to the end: the run itself, watched by its lease renewals, its
    /// deadline and the shutdown signal (each stops the search cleanly, never mid-write).
    async fn execute(&self, claim: Claim) -> RunSummary {
        let inner = &self.inner;
        let started = Instant::now();
        tracing::info!(vendor_id = %claim.vendor_id, run_id = %claim.run_id, "reconciliation started");
        let erp = ErpCatalogue::registered(
            claim.client.http().clone(),
            &AgentTarget {
                vendor_id: &claim.vendor_id,
                agent_url: &claim.agent_url,
                signing: &claim.signing,
            },
            &format!("reconciliation-{}", claim.run_id),
        )
        .through_breaker(inner.breakers.clone(), &claim.vendor_id);
        let search = Search {
            vendor_id: &claim.vendor_id,
            db: &inner.db,
            ingest: &inner.ingest,
            erp: &erp,
            page_size: inner.page_size,
            concurrency: inner.concurrency,
            stop: CancellationToken::new(),
            tally: Mutex::new(Tally::default()),
        };
        let body = self.reconcile(&claim, &search, &erp, started);
        tokio::pin!(body);
        let deadline = tokio::time::sleep(inner.run_timeout);
        tokio::pin!(deadline);
        let mut renewal =
            tokio::time::interval_at(tokio::time::Instant::now() + LEASE_RENEWAL, LEASE_RENEWAL);
        let summary = loop {
            tokio::select! {
                summary = &mut body => break summary,
                _ = &mut deadline, if !search.stop.is_cancelled() => {
                    search.stop(format!("run timed out after {} ms", inner.run_timeout.as_millis()));
                }
                _ = inner.shutdown.cancelled(), if !search.stop.is_cancelled() => {
                    search.stop("erp-sync is shutting down");
                }
                _ = renewal.tick() => match events::renew_lease(&inner.db, claim.run_id, LEASE).await {
                    Ok(true) => {}
                    Ok(false) => search.stop("lease lost: the run was given up as dead"),
                    Err(error) => tracing::warn!(%error, run_id = %claim.run_id, "could not renew the run's lease"),
                },
            }
        };
        let summary_json = serde_json::to_value(&summary).unwrap_or(Value::Null);
        if let Err(error) = events::finish_run(
            &inner.db,
            claim.run_id,
            summary.outcome.as_str(),
            &summary_json,
        )
        .await
        {
            tracing::error!(%error, run_id = %claim.run_id, "could not record the end of the run; its lease will expire");
        }
        if matches!(
            summary.outcome,
            RunOutcome::Repaired | RunOutcome::Unresolved
        ) {
            // Raised here, where the drift is found, whoever started the run.
            inner.alerts.raise(Alert::new(
                AlertKind::ReconciliationDrift,
                &claim.vendor_id,
                format!(
                    "the ERP and Postgres differed: {} repaired, {} deactivated, {} unresolved (run {})",
                    summary.repaired, summary.deactivated, summary.unresolved, summary.run_id
                ),
            ));
        }
        if summary.unresolved > 0 {
            tracing::warn!(vendor_id = %claim.vendor_id, run_id = %claim.run_id, summary = %summary_json, "reconciliation ended with unresolved drift");
        } else {
            tracing::info!(vendor_id = %claim.vendor_id, run_id = %claim.run_id, summary = %summary_json, "reconciliation finished");
        }
        summary
    }

    /// The run: whole-catalogue checksums; if they differ, `drift_detected`, the search, and
    /// `drift_resolved`; otherwise `full_checksum`.
    async fn reconcile(
        &self,
        claim: &Claim,
        search: &Search<'_>,
        erp: &ErpCatalogue,
        started: Instant,
    ) -> RunSummary {
        let all = SkuRange::all();
        let mut summary = RunSummary {
            run_id: claim.run_id,
            vendor_id: claim.vendor_id.clone(),
            outcome: RunOutcome::Failed,
            erp_count: None,
            pg_count: 0,
            agent_calls: 0,
            items_fetched: 0,
            repaired: 0,
            deactivated: 0,
            unresolved: 0,
            duration_ms: 0,
        };
        let (pg, erp_checksum) = tokio::join!(
            catalogue::digest(&self.inner.db, &claim.vendor_id, &all),
            search.agent(erp.checksum(&all)),
        );
        let pg = match pg {
            Ok(pg) => pg,
            Err(error) => {
                tracing::error!(%error, vendor_id = %claim.vendor_id, "reconciliation: Postgres checksum failed");
                summary.unresolved = 1;
                return self
                    .record(
                        EventType::FullChecksum,
                        summary,
                        started,
                        Some("database error".into()),
                        erp,
                    )
                    .await;
            }
        };
        summary.pg_count = pg.count;
        let erp_checksum = match erp_checksum {
            Ok(checksum) => checksum,
            Err(failure) => {
                let details = match failure {
                    FailureKind::Agent(error) => format!("agent failed: {error}"),
                    FailureKind::Stopped => search.tally().stop_reason.clone().unwrap_or_default(),
                };
                tracing::warn!(vendor_id = %claim.vendor_id, details, "reconciliation: no checksum from the agent");
                summary.unresolved = 1;
                return self
                    .record(
                        EventType::FullChecksum,
                        summary,
                        started,
                        Some(details),
                        erp,
                    )
                    .await;
            }
        };
        summary.erp_count = Some(erp_checksum.count);
        if in_step(&pg, &erp_checksum) {
            summary.outcome = RunOutcome::InSync;
            return self
                .record(EventType::FullChecksum, summary, started, None, erp)
                .await;
        }
        let detected = format!(
            "checksums differ: ERP {} items, Postgres {}",
            erp_checksum.count, pg.count
        );
        summary.outcome = RunOutcome::Unresolved;
        self.record(
            EventType::DriftDetected,
            summary.clone(),
            started,
            Some(detected),
            erp,
        )
        .await;

        search.run(all, pg, erp_checksum).await;

        let details = {
            let tally = search.tally();
            summary.items_fetched = tally.items_fetched;
            summary.repaired = tally.repaired;
            summary.deactivated = tally.deactivated;
            summary.unresolved = tally.unresolved;
            summary.outcome = if tally.unresolved == 0 {
                RunOutcome::Repaired
            } else {
                RunOutcome::Unresolved
            };
            (!tally.notes.is_empty()).then(|| format!("unresolved: {}", tally.notes.join("; ")))
        };
        self.record(EventType::DriftResolved, summary, started, details, erp)
            .await
    }

    /// Records an event with the summary as of now; a failure to record is logged, never
    /// raised (the run's work is done either way).
    async fn record(
        &self,
        event_type: EventType,
        mut summary: RunSummary,
        started: Instant,
        details: Option<String>,
        erp: &ErpCatalogue,
    ) -> RunSummary {
        summary.agent_calls = erp.calls();
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let json = serde_json::to_value(&summary).unwrap_or(Value::Null);
        let event = NewEvent {
            vendor_id: &summary.vendor_id,
            event_type,
            summary: &json,
            details: details.as_deref(),
            duration_ms: i32::try_from(summary.duration_ms).unwrap_or(i32::MAX),
        };
        if let Err(error) = events::create(&self.inner.db, &event).await {
            tracing::error!(%error, run_id = %summary.run_id, event_type = event_type.as_str(), "could not record a reconciliation event");
        }
        summary
    }
}

/// The scheduler's `detect-drift` job runs whole reconciliations through this.
impl Reconciler for ReconciliationService {
    fn detect_drift<'a>(
        &'a self,
        vendor_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<DriftReport, AppError>> {
        Box::pin(async move {
            let summary = ReconciliationService::detect_drift(self, vendor_id).await?;
            Ok(DriftReport {
                drifted: summary.repaired + summary.deactivated + summary.unresolved,
                summary: serde_json::to_value(&summary).unwrap_or(Value::Null),
            })
        })
    }
}
