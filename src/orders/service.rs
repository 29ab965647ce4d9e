//! Order sync: the outbox protocol around `sync_jobs`, the worker's body, callbacks, the
//! dead-letter queue. Every method is a plain async function a route, the scheduler or a test
//! can call.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    agent_client::{AgentClient, CreateOrderOutcome},
    breaker::{BreakerError, BreakerRegistry, CreateOrderCall},
    dlq_queries::{self as dlq, DlqEntry, NewDlqEntry},
    job_queries::{self as jobs, Claimed, SyncJob},
    queue::Dispatcher,
};
use crate::{
    agents::{AgentService, model::AgentHealth},
    config::Settings,
    error::{AppError, ResultExt},
    http::extract::{Page, Pagination},
    ops::{
        alerts::AlertService,
        metrics::{JobOutcome, Prometheus},
    },
};

pub const API_ORDERS: &str = "orders";
/// Orders older than this without a job are history, not work: never synced by the sweep.
const LOOKBACK: chrono::Duration = chrono::Duration::days(7);
const DISPATCH_BATCH: i64 = 500;
/// Most tasks kept waiting in Redis; beyond it, due jobs wait in Postgres (see
/// [`Dispatcher::backlog`]).
const MAX_REDIS_BACKLOG: u64 = 2_000;

#[derive(Clone)]
pub struct OrderSync {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    agents: AgentService,
    client: Option<AgentClient>,
    breakers: BreakerRegistry,
    dispatcher: Dispatcher,
    max_attempts: u32,
    backoff: Duration,
    callback_timeout: Duration,
    lease: Duration,
    redispatch_grace: Duration,
    wake: Notify,
    prometheus: Prometheus,
    /// Should this process run the worker (ORDER_SYNC_ENABLED and AGENT_SECRET set)?
    worker_enabled: bool,
    worker_running: AtomicBool,
}

/// This process's order-sync worker, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    Up,
    /// Should run, but is not running (not started yet, stopped, or restarting after an error).
    Down,
    /// Not run by this process (ORDER_SYNC_ENABLED=false, or no AGENT_SECRET).
    Disabled,
}

/// What a callback says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackStatus {
    Completed,
    Failed,
}

impl OrderSync {
    pub fn new(
        db: PgPool,
        agents: AgentService,
        client: Option<AgentClient>,
        dispatcher: Dispatcher,
        settings: &Settings,
        alerts: AlertService,
        prometheus: Prometheus,
    ) -> Self {
        let worker_enabled = settings.order_sync_enabled && client.is_some();
        Self {
            inner: Arc::new(Inner {
                db,
                agents,
                client,
                breakers: BreakerRegistry::new(settings, alerts),
                dispatcher,
                max_attempts: settings.order_sync_max_attempts,
                backoff: settings.order_sync_backoff,
                callback_timeout: settings.order_sync_callback_timeout,
                // Long enough for the agent call to time out and its outcome to be written.
                lease: settings.agent_timeout + Duration::from_secs(1),
                redispatch_grace: settings
                    .order_sync_sweep_interval
                    .max(Duration::from_secs(2)),
                wake: Notify::new(),
                prometheus,
                worker_enabled,
                worker_running: AtomicBool::new(false),
            }),
        }
    }

    pub fn worker_status(&self) -> WorkerStatus {
        if !self.inner.worker_enabled {
            WorkerStatus::Disabled
        } else if self.inner.worker_running.load(Ordering::Acquire) {
            WorkerStatus::Up
        } else {
            WorkerStatus::Down
        }
    }

    /// Called by the worker loop as the worker starts and stops.
    pub(crate) fn set_worker_running(&self, running: bool) {
        self.inner.worker_running.store(running, Ordering::Release);
    }

    pub fn breakers(&self) -> &BreakerRegistry {
        &self.inner.breakers
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    /// Can this process call agents at all (is `AGENT_SECRET` set)?
    pub fn can_call_agents(&self) -> bool {
        self.inner.client.is_some()
    }

    /// Asks the dispatch loop to look for due jobs now (new orders, manual re-syncs).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// Creates the jobs of recent orders that have none, then queues every due job.
    pub async fn sweep(&self) -> Result<usize, AppError> {
        let created = jobs::create_missing(&self.inner.db, LOOKBACK, 1_000).await?;
        if !created.is_empty() {
            tracing::info!(
                count = created.len(),
                "created jobs for orders that had none"
            );
        }
        self.dispatch_due().await
    }

    /// Queues the jobs Postgres says are due and nobody holds, as far as the Redis backlog
    /// allows; returns how many.
    pub async fn dispatch_due(&self) -> Result<usize, AppError> {
        let grace = chrono::Duration::from_std(self.inner.redispatch_grace).unwrap_or_default();
        let mut total = 0;
        loop {
            let backlog = self.inner.dispatcher.backlog().await?;
            let room = MAX_REDIS_BACKLOG
                .saturating_sub(backlog)
                .min(DISPATCH_BATCH as u64) as i64;
            if room == 0 {
                return Ok(total);
            }
            let due = jobs::take_due(&self.inner.db, grace, room).await?;
            if !due.is_empty() {
                // If this push fails the rows stay due: the next sweep, after the grace, retries.
                self.inner
                    .dispatcher
                    .push(&due, Duration::ZERO)
                    .await
                    .map_err(AppError::Internal)?;
            }
            total += due.len();
            if (due.len() as i64) < room {
                return Ok(total);
            }
        }
    }

    /// One attempt at one job: the worker's whole body. Never fails: every outcome is recorded
    /// in Postgres, and an error half-way leaves the job to the recovery sweep.
    pub fn process_job(&self, job_id: Uuid) -> futures::future::BoxFuture<'static, ()> {
        // Boxed here, where every lifetime is concrete, so the worker can prove it `Send`.
        let this = self.clone();
        Box::pin(async move {
            if let Err(error) = this.try_process_job(job_id).await {
                tracing::error!(%job_id, error = %error, "order sync attempt failed internally; the recovery sweep will redo it");
            }
        })
    }

    async fn try_process_job(&self, job_id: Uuid) -> Result<(), AppError> {
        let inner = &self.inner;
        let lease = chrono::Duration::from_std(inner.lease).unwrap_or_default();
        let Some(claimed) =
            jobs::claim(&inner.db, job_id, lease, inner.max_attempts as i32).await?
        else {
            tracing::debug!(%job_id, "job not claimable (finished, held or not due): delivery dropped");
            return Ok(());
        };
        let job = &claimed.job;
        let correlation_id = job
            .payload
            .get("correlationId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let span = tracing::info_span!("order_sync", %job_id, vendor_id = %job.vendor_id, attempt = job.retry_count, correlation_id = %correlation_id);
        self.attempt(claimed, correlation_id).instrument(span).await
    }

    async fn attempt(&self, claimed: Claimed, correlation_id: String) -> Result<(), AppError> {
        let inner = &self.inner;
        let job = claimed.job;
        if job.retry_count > inner.max_attempts as i32 {
            return self
                .dead_letter(
                    &job,
                    "attempts exhausted (the last attempt never reported back)",
                )
                .await;
        }
        let Some(client) = inner.client.clone() else {
            return self
                .retry_later(
                    &job,
                    "AGENT_SECRET is not configured: agents cannot be called",
                    None,
                )
                .await;
        };
        let Some(agent_url) = claimed.agent_url else {
            return self
                .retry_later(&job, "no agent registered for this vendor", None)
                .await;
        };
        let health = inner.agents.health_at(
            claimed.agent_last_heartbeat,
            claimed.agent_deregistered_at.is_some(),
            Utc::now(),
        );
        if health == AgentHealth::Offline {
            return self
                .retry_later(&job, "agent offline: not called", None)
                .await;
        }
        let body = json!({
            "jobId": job.id,
            "vendorId": job.vendor_id,
            "orderId": job.postgres_order_id,
            "order": job.payload.get("order").cloned().unwrap_or(Value::Null),
        });
        let call = CreateOrderCall {
            client,
            vendor_id: job.vendor_id.clone(),
            agent_url,
            signing: claimed.agent_signing,
            job_id: job.id.to_string(),
            correlation_id: correlation_id.clone(),
            body,
        };
        let outcome = inner
            .breakers
            .create_order(&job.vendor_id, API_ORDERS, call)
            .await;
        match outcome {
            Ok(CreateOrderOutcome::Done { erp_reference }) => {
                if jobs::complete(&inner.db, job.id, &erp_reference)
                    .await?
                    .is_some()
                {
                    inner.prometheus.count_job(JobOutcome::Completed);
                    tracing::info!(erp_reference = %erp_reference, "order synced");
                }
                Ok(())
            }
            Ok(CreateOrderOutcome::Accepted) => {
                let deadline =
                    chrono::Duration::from_std(inner.callback_timeout).unwrap_or_default();
                jobs::await_callback(&inner.db, job.id, deadline).await?;
                inner.prometheus.count_job(JobOutcome::Accepted);
                tracing::info!("agent accepted the order; waiting for its callback");
                Ok(())
            }
            Err(BreakerError::Open) => {
                self.retry_later(&job, "circuit breaker open: agent not called", None)
                    .await
            }
            Err(BreakerError::Call(error)) if error.is_retryable() => {
                self.retry_later(&job, &error.to_string(), error.retry_after())
                    .await
            }
            Err(BreakerError::Call(error)) => {
                self.dead_letter(&job, &format!("permanent: {error}")).await
            }
        }
    }

    /// A failed attempt worth retrying: later, with exponential backoff and jitter (at least
    /// what the agent's `Retry-After` asked), or to the DLQ when it was the last attempt.
    async fn retry_later(
        &self,
        job: &SyncJob,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), AppError> {
        let inner = &self.inner;
        if job.retry_count >= inner.max_attempts as i32 {
            return self
                .dead_letter(
                    job,
                    &format!("{reason} (after {} attempts)", job.retry_count),
                )
                .await;
        }
        let delay = backoff_delay(inner.backoff, job.retry_count as u32)
            .max(retry_after.unwrap_or_default());
        let due_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        if !jobs::reschedule(&inner.db, job.id, due_at, reason, true).await? {
            return Ok(()); // finished meanwhile (a callback won the race)
        }
        inner.prometheus.count_job(JobOutcome::Retried);
        tracing::warn!(
            reason,
            retry_in_ms = delay.as_millis() as u64,
            "order sync attempt failed; retrying later"
        );
        // Redis schedules in whole seconds: one more keeps the task from arriving before the
        // job is due (it would be dropped, and only the sweep would bring it back).
        if let Err(error) = inner
            .dispatcher
            .push(&[job.id], delay + Duration::from_secs(1))
            .await
        {
            tracing::warn!(%error, "could not queue the retry; the recovery sweep will");
        }
        Ok(())
    }

    /// Fails the job for good and parks its payload in the dead-letter queue, atomically.
    async fn dead_letter(&self, job: &SyncJob, reason: &str) -> Result<(), AppError> {
        let mut tx = self.inner.db.begin().await?;
        if let Some(failed) = jobs::fail(&mut *tx, job.id, reason).await? {
            dlq::create(
                &mut *tx,
                &NewDlqEntry {
                    original_job_id: Some(failed.id),
                    vendor_id: &failed.vendor_id,
                    operation: &failed.operation,
                    payload: &failed.payload,
                    failure_reason: reason,
                    failure_stack: None,
                    attempt_count: failed.retry_count,
                },
            )
            .await?;
            self.inner.prometheus.count_job(JobOutcome::DeadLettered);
            tracing::error!(job_id = %failed.id, vendor_id = %failed.vendor_id, reason, "order sync failed for good; moved to the dead-letter queue");
        }
        tx.commit().await?;
        Ok(())
    }

    /// An agent reports the outcome of a 202. The job must be the agent's vendor's. Repeating
    /// a callback, or answering a job already finished, changes nothing.
    pub async fn callback(
        &self,
        vendor_id: &str,
        job_id: Uuid,
        status: CallbackStatus,
        erp_reference: Option<&str>,
        error: Option<&str>,
    ) -> Result<SyncJob, AppError> {
        let job = self.job(job_id).await?;
        if job.vendor_id != vendor_id {
            return Err(AppError::Forbidden("this job belongs to another vendor"));
        }
        match status {
            CallbackStatus::Completed => {
                let reference = erp_reference.ok_or_else(|| {
                    AppError::validation(
                        "erpReference is required when status is completed",
                        json!({"erpReference": ["required"]}),
                    )
                })?;
                let completed = jobs::complete(&self.inner.db, job_id, reference).await?;
                if completed.is_some() {
                    self.inner.prometheus.count_job(JobOutcome::Completed);
                }
                if completed.is_none() && job.erp_reference.as_deref() != Some(reference) {
                    tracing::warn!(%job_id, status = %job.status, "callback for a finished job ignored");
                }
            }
            CallbackStatus::Failed => {
                if matches!(job.status.as_str(), "pending" | "processing") {
                    self.dead_letter(
                        &job,
                        &format!(
                            "agent reported failure: {}",
                            error.unwrap_or("no reason given")
                        ),
                    )
                    .await?;
                } else {
                    tracing::warn!(%job_id, status = %job.status, "failure callback for a finished job ignored");
                }
            }
        }
        self.job(job_id).await
    }

    /// Admin re-sync of an order: a new job, unless one is live (409).
    pub async fn sync_order(
        &self,
        order_id: Uuid,
        correlation_id: &str,
    ) -> Result<SyncJob, AppError> {
        let job = jobs::create_for_order(
            &self.inner.db,
            order_id,
            correlation_id,
            self.inner.max_attempts as i32,
        )
        .await
        .on_constraint(jobs::ONE_LIVE_JOB_PER_ORDER, || live_job_conflict(order_id))?
        .ok_or_else(|| AppError::not_found(format!("no order {order_id}")))?;
        self.wake();
        Ok(job)
    }

    pub async fn job(&self, job_id: Uuid) -> Result<SyncJob, AppError> {
        jobs::find_by_id(&self.inner.db, job_id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no job {job_id}")))
    }

    pub async fn jobs(
        &self,
        vendor_id: Option<&str>,
        status: Option<&str>,
        order_id: Option<Uuid>,
        pagination: Pagination,
    ) -> Result<Page<SyncJob>, AppError> {
        let (rows, total) = jobs::list(
            &self.inner.db,
            vendor_id,
            status,
            order_id,
            i64::from(pagination.limit()),
            pagination.offset(),
        )
        .await?;
        Ok(Page::new(rows, pagination, total))
    }

    pub async fn dead_letters(
        &self,
        vendor_id: Option<&str>,
        pagination: Pagination,
    ) -> Result<Page<DlqEntry>, AppError> {
        let (rows, total) = dlq::find_unresolved(
            &self.inner.db,
            vendor_id,
            i64::from(pagination.limit()),
            pagination.offset(),
        )
        .await?;
        Ok(Page::new(rows, pagination, total))
    }

    pub async fn dead_letter_entry(&self, id: Uuid) -> Result<DlqEntry, AppError> {
        dlq::find_by_id(&self.inner.db, id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no dead-letter entry {id}")))
    }

    /// Retries a dead-letter entry as a new job (queued at once); the entry records it and
    /// counts as resolved.
    pub async fn retry_dead_letter(
        &self,
        id: Uuid,
        correlation_id: &str,
    ) -> Result<(DlqEntry, SyncJob), AppError> {
        let mut tx = self.inner.db.begin().await?;
        let entry = dlq::find_by_id(&mut *tx, id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no dead-letter entry {id}")))?;
        if entry.resolved {
            return Err(AppError::Conflict("this entry is already resolved".into()));
        }
        let order_id = entry
            .payload
            .get("orderId")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Uuid>().ok())
            .ok_or_else(|| {
                AppError::Conflict("the entry's payload names no order to retry".into())
            })?;
        let job = jobs::create_for_order(
            &mut *tx,
            order_id,
            correlation_id,
            self.inner.max_attempts as i32,
        )
        .await
        .on_constraint(jobs::ONE_LIVE_JOB_PER_ORDER, || live_job_conflict(order_id))?
        .ok_or_else(|| AppError::Conflict(format!("order {order_id} no longer exists")))?;
        let entry = dlq::mark_retried(&mut *tx, id, job.id)
            .await?
            .ok_or_else(|| AppError::Conflict("this entry is already resolved".into()))?;
        tx.commit().await?;
        tracing::info!(dlq_id = %id, job_id = %job.id, "dead-letter entry retried");
        self.wake();
        Ok((entry, job))
    }

    pub async fn resolve_dead_letter(
        &self,
        id: Uuid,
        resolved_by: &str,
    ) -> Result<DlqEntry, AppError> {
        let entry = dlq::mark_resolved(&self.inner.db, id, resolved_by)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no dead-letter entry {id}")))?;
        tracing::info!(dlq_id = %id, resolved_by, "dead-letter entry resolved");
        Ok(entry)
    }

    /// Unresolved entries, for the metrics.
    pub async fn dead_letter_count(&self) -> Result<i64, AppError> {
        Ok(dlq::count_unresolved(&self.inner.db, None).await?)
    }
}

/// `base × 2^(attempt-1)`, ±20 % jitter so retries of many jobs do not arrive together.
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let jitter = rand::rng().random_range(0.8..1.2);
    exponential
        .mul_f64(jitter)
        .min(Duration::from_secs(24 * 3600))
}

fn live_job_conflict(order_id: Uuid) -> AppError {
    AppError::Conflict(format!("order {order_id} already has a live sync job"))
}
