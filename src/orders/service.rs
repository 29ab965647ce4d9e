//! Order sync: the service a route, the worker, the scheduler and a test all call. This file
//! holds its state, the agents' callbacks and the admin operations; the worker's body is in
//! `attempt.rs`, the dispatcher in `dispatch.rs`, the supervision in `supervisor.rs`.

use std::{
    sync::{Arc, Mutex, atomic::AtomicU8},
    time::Duration,
};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    agent_client::AgentClient,
    breaker::BreakerRegistry,
    delivery_queries as delivery,
    dlq_queries::{self as dlq, DlqEntry},
    fairness::Fairness,
    job_queries::{self as jobs, SyncJob},
    operator_queries::{self, NewAttempt},
    queue::Dispatcher,
    response::printable,
    supervisor::WorkerStatus,
};
use crate::{
    agents::AgentService,
    config::Settings,
    db,
    error::{AppError, ResultExt},
    ops::{
        alerts::AlertService,
        metrics::{JobOutcome, Prometheus},
    },
    pagination::{Page, Pagination},
};

pub const API_ORDERS: &str = "orders";

#[derive(Clone)]
pub struct OrderSync {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub db: PgPool,
    pub agents: AgentService,
    pub client: Option<AgentClient>,
    pub breakers: BreakerRegistry,
    pub dispatcher: Dispatcher,
    pub fairness: Arc<Fairness>,
    pub concurrency: usize,
    pub vendor_share: f64,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub callback_timeout: Duration,
    pub agent_timeout: Duration,
    pub lease: Duration,
    /// A dispatched task not claimed within this is presumed lost and queued again.
    pub redispatch_grace: Duration,
    pub sweep_interval: Duration,
    pub wake: Notify,
    /// The earliest time something comes due that the dispatcher knows of.
    pub timer: Mutex<Option<DateTime<Utc>>>,
    pub worker_status: AtomicU8,
    /// Counts job outcomes for `/metrics`.
    pub prometheus: Prometheus,
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
        // An attempt holds its job for the agent call, plus the wait for a pool connection to
        // record its outcome, plus a margin: a live attempt never sees its lease run out.
        let lease = settings.agent_timeout + db::POOL_ACQUIRE_TIMEOUT + Duration::from_secs(2);
        let client_set = client.is_some();
        Self {
            inner: Arc::new(Inner {
                db,
                agents,
                client,
                breakers: BreakerRegistry::new(settings, alerts),
                dispatcher,
                fairness: Arc::new(Fairness::new(
                    settings.worker_concurrency,
                    settings.order_sync_vendor_share,
                )),
                concurrency: settings.worker_concurrency,
                vendor_share: settings.order_sync_vendor_share,
                max_attempts: settings.order_sync_max_attempts,
                backoff: settings.order_sync_backoff,
                callback_timeout: settings.order_sync_callback_timeout,
                agent_timeout: settings.agent_timeout,
                lease,
                redispatch_grace: settings.order_sync_sweep_interval.max(lease * 2),
                sweep_interval: settings.order_sync_sweep_interval,
                wake: Notify::new(),
                timer: Mutex::new(None),
                // Down until the supervisor starts it, unless this process never runs one.
                worker_status: AtomicU8::new(if settings.order_sync_enabled && client_set {
                    WorkerStatus::Down as u8
                } else {
                    WorkerStatus::Disabled as u8
                }),
                prometheus,
            }),
        }
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

    /// How long a claim holds a job.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Asks the dispatch loop to look for due jobs now (new orders, manual re-syncs, a
    /// worker slot freed).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// An agent reports the outcome of a 202. The job must be the agent's vendor's.
    /// Repeating a callback changes nothing. A late `completed` (after the job failed, was
    /// dead-lettered or superseded) still records the reference: the ERP has the order, so
    /// must we; a late `failed` never undoes a completion.
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
        self.record_callback(&job, status, error).await;
        match status {
            CallbackStatus::Completed => {
                let reference = erp_reference.ok_or_else(|| {
                    AppError::validation(
                        "erpReference is required when status is completed",
                        json!({"erpReference": ["required"]}),
                    )
                })?;
                match delivery::complete(&self.inner.db, job_id, reference, None, None).await? {
                    Some(done) => {
                        self.inner.prometheus.count_job(JobOutcome::Completed);
                        log_completion(&job.status, &done);
                    }
                    None if job.erp_reference.as_deref() != Some(reference) => {
                        tracing::warn!(%job_id, status = %job.status, "completion callback contradicts the job's outcome; ignored");
                    }
                    None => {}
                }
            }
            CallbackStatus::Failed => {
                let reason = format!(
                    "agent reported failure: {}",
                    printable(error.unwrap_or("no reason given"), 2_000)
                );
                if delivery::dead_letter(&self.inner.db, job_id, None, &reason, false, None)
                    .await?
                    .is_some()
                {
                    self.inner.prometheus.count_job(JobOutcome::DeadLettered);
                    tracing::error!(%job_id, vendor_id, "the agent reported the order failed; moved to the dead-letter queue");
                } else {
                    tracing::warn!(%job_id, status = %job.status, "failure callback for a finished job ignored");
                }
            }
        }
        self.job(job_id).await
    }

    /// Keeps the callback in the order's history; losing the row never fails the callback.
    async fn record_callback(&self, job: &SyncJob, status: CallbackStatus, error: Option<&str>) {
        let error = error.map(|e| printable(e, 2_000));
        let callback = NewAttempt {
            job_id: job.id,
            order_id: job.postgres_order_id,
            vendor_id: &job.vendor_id,
            kind: "callback",
            attempt: job.retry_count,
            started_at: Utc::now(),
            duration_ms: 0,
            outcome: match status {
                CallbackStatus::Completed => "completed",
                CallbackStatus::Failed => "failed",
            },
            http_status: None,
            error: error.as_deref(),
            correlation_id: job.payload.get("correlationId").and_then(Value::as_str),
        };
        if let Err(error) = operator_queries::record_attempt(&self.inner.db, &callback).await {
            tracing::warn!(job_id = %job.id, %error, "could not record the callback in sync_attempts");
        }
    }

    /// Admin re-sync of an order: a new job, unless the order has a live job or already has
    /// its ERP reference (409 both).
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
        .on_constraint(jobs::ONE_LIVE_JOB_PER_ORDER, || live_job_conflict(order_id))?;
        let Some(job) = job else {
            return Err(self.why_not_syncable(order_id).await?);
        };
        self.wake();
        Ok(job)
    }

    /// Why [`jobs::create_for_order`] made no job.
    async fn why_not_syncable(&self, order_id: Uuid) -> Result<AppError, AppError> {
        Ok(
            match jobs::order_reference(&self.inner.db, order_id).await? {
                None => AppError::not_found(format!("no order {order_id}")),
                Some(Some(reference)) => AppError::Conflict(format!(
                    "order {order_id} is already in the ERP (reference {reference})"
                )),
                Some(None) => {
                    AppError::Conflict(format!("order {order_id} changed meanwhile; try again"))
                }
            },
        )
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

    pub async fn dead_letter_entry(&self, id: Uuid) -> Result<DlqEntry, AppError> {
        dlq::find_by_id(&self.inner.db, id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no dead-letter entry {id}")))
    }

    /// Retries a dead-letter entry as a new job (queued at once); the entry records it and
    /// counts as resolved. The new job carries the same idempotency key (the order id).
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
            .order_id
            .or_else(|| {
                entry
                    .payload
                    .get("orderId")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<Uuid>().ok())
            })
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
        .on_constraint(jobs::ONE_LIVE_JOB_PER_ORDER, || live_job_conflict(order_id))?;
        let Some(job) = job else {
            drop(tx);
            return Err(self.why_not_syncable(order_id).await?);
        };
        let entry = dlq::mark_retried(&mut *tx, id, job.id)
            .await?
            .ok_or_else(|| AppError::Conflict("this entry is already resolved".into()))?;
        tx.commit().await?;
        tracing::info!(dlq_id = %id, job_id = %job.id, "dead-letter entry retried");
        self.wake();
        Ok((entry, job))
    }

    /// Unresolved entries, for the metrics.
    pub async fn dead_letter_count(&self) -> Result<i64, AppError> {
        Ok(dlq::count_unresolved(&self.inner.db, None).await?)
    }
}

pub(super) fn log_completion(previous_status: &str, done: &delivery::Completed) {
    let job = &done.job;
    if matches!(previous_status, "failed" | "cancelled") || done.healed > 0 || done.superseded > 0 {
        tracing::info!(job_id = %job.id, previous_status, healed_dead_letters = done.healed,
            cancelled_jobs = done.superseded, "late completion: the order is recorded as in the ERP");
    }
    if !done.order_updated && job.postgres_order_id.is_some() {
        tracing::warn!(job_id = %job.id, "the order already had an ERP reference; kept the first one");
    }
}

/// `base × 2^(attempt-1)`, ±20 % jitter so retries of many jobs do not arrive together.
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let jitter = rand::rng().random_range(0.8..1.2);
    exponential
        .min(Duration::from_secs(24 * 3600))
        .mul_f64(jitter)
}

/// `now + delay`, never panicking: a delay too large for a date saturates at a week.
pub fn due_after(delay: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    let week = chrono::Duration::days(7);
    let delay = chrono::Duration::from_std(delay).unwrap_or(week).min(week);
    now.checked_add_signed(delay).unwrap_or(now)
}

fn live_job_conflict(order_id: Uuid) -> AppError {
    AppError::Conflict(format!("order {order_id} already has a live sync job"))
}
