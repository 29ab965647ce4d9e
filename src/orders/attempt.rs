//! The worker's body: one attempt at one job. Claim it under a fresh lease token, decide
//! whether the agent can be called at all (an attempt is spent only on a call), call it
//! through the vendor's breaker, record the outcome with the token. Nothing the agent sends
//! and no bug in here can take the worker down: a panic is caught per job.

use std::{panic::AssertUnwindSafe, time::Duration};

use chrono::Utc;
use futures::FutureExt;
use rand::Rng;
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::{
    agent_client::{AgentCallError, CreateOrderOutcome},
    breaker::{BreakerError, CreateOrderCall, Gate},
    delivery_queries::{self as delivery, Claimed, Release},
    job_queries::{self as jobs, SyncJob},
    operator_queries::{self, NewAttempt},
    queue::OrderTask,
    service::{API_ORDERS, OrderSync, backoff_delay, due_after, log_completion},
};
use crate::{agents::model::AgentHealth, error::AppError, ops::metrics::JobOutcome};

/// Why a job waits for its vendor's breaker (a reset makes such jobs due at once).
pub(super) const BREAKER_WAIT: &str = "circuit breaker open: agent not called";

impl OrderSync {
    /// Handles one task from the queue. Never fails and never panics: every outcome is
    /// recorded in Postgres, and anything left half-way is found again by the dispatcher.
    pub async fn process_task(&self, task: OrderTask) {
        // The vendor's share is checked before the database is touched: a vendor over its
        // share while others wait gets its task handed back, and this slot serves the next.
        let slot = match &task.vendor_id {
            Some(vendor) => match self.inner.fairness.try_start(vendor) {
                Some(slot) => Some(slot),
                None => {
                    if let Err(error) = delivery::defer(&self.inner.db, task.job_id).await {
                        tracing::warn!(job_id = %task.job_id, %error, "could not hand a task back; it comes back when its dispatch goes stale");
                    }
                    return;
                }
            },
            None => None,
        };
        let token = Uuid::new_v4();
        self.guarded(task.job_id, token, self.try_process_job(task.job_id, token))
            .await;
        drop(slot);
        self.wake(); // a slot is free: the dispatcher may queue more
    }

    /// Runs `attempt` (the attempt `token` at job `job_id`), catching a panic: it is logged
    /// and the job, if that attempt still holds it, is retried later (or dead-lettered after
    /// its last attempt) rather than left to its lease.
    pub async fn guarded<F>(&self, job_id: Uuid, token: Uuid, attempt: F)
    where
        F: Future<Output = Result<(), AppError>>,
    {
        match AssertUnwindSafe(attempt).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%job_id, error = %error, "order sync attempt failed internally; the job is due again when its lease runs out");
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                tracing::error!(%job_id, panic = %message, "order sync attempt panicked; the job will be retried");
                if let Err(error) = self.after_panic(job_id, token, &message).await {
                    tracing::error!(%job_id, error = %error, "could not reschedule the job after a panic; it is due again when its lease runs out");
                }
            }
        }
    }

    async fn after_panic(&self, job_id: Uuid, token: Uuid, message: &str) -> Result<(), AppError> {
        let Some(job) = jobs::find_by_id(&self.inner.db, job_id).await? else {
            return Ok(());
        };
        if job.status != "processing" || job.lease_token != Some(token) {
            return Ok(()); // not claimed by this attempt, or already finished
        }
        // The agent may have been called before the panic: the attempt counts.
        let reason = format!("internal error while processing (panic): {message}");
        self.failed_call(&job, token, &reason, None, false, None)
            .await
    }

    async fn try_process_job(&self, job_id: Uuid, token: Uuid) -> Result<(), AppError> {
        let inner = &self.inner;
        let lease = chrono::Duration::from_std(inner.lease).unwrap_or_default();
        let Some(claimed) =
            delivery::claim(&inner.db, job_id, token, lease, inner.max_attempts as i32).await?
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
        let order_id = job
            .postgres_order_id
            .map(|id| id.to_string())
            .unwrap_or_default();
        let span = tracing::info_span!("order_sync", order_id = %order_id, %job_id, vendor_id = %job.vendor_id, attempt = job.retry_count + 1, correlation_id = %correlation_id);
        self.attempt(claimed, token, correlation_id)
            .instrument(span)
            .await
    }

    async fn attempt(
        &self,
        claimed: Claimed,
        token: Uuid,
        correlation_id: String,
    ) -> Result<(), AppError> {
        let inner = &self.inner;
        let job = &claimed.job;
        if let Some(reference) = &claimed.order_erp_reference {
            // Completed by another path (a late callback, the marketplace): never sent again.
            if delivery::complete(&inner.db, job.id, reference, None, None)
                .await?
                .is_some()
            {
                tracing::info!(erp_reference = %reference, "the order is already in the ERP; job completed without a call");
            }
            return Ok(());
        }
        if job.retry_count >= inner.max_attempts as i32 {
            let reason = format!(
                "attempts exhausted: the last attempt never reported back (last agent error: {})",
                job.last_agent_error.as_deref().unwrap_or("none")
            );
            return self.dead_letter(job, token, &reason, false, None).await;
        }
        let Some(client) = inner.client.clone() else {
            let reason = "AGENT_SECRET is not configured: agents cannot be called";
            return self.wait(job, token, reason, inner.backoff).await;
        };
        let agent_url = claimed.agent_url.clone().filter(|_| {
            let health = inner.agents.health_at(
                claimed.agent_last_heartbeat,
                claimed.agent_deregistered_at.is_some(),
                Utc::now(),
            );
            health != AgentHealth::Offline
        });
        let Some(agent_url) = agent_url else {
            // The dispatcher holds an offline vendor's jobs back and looks again every sweep.
            let reason = "agent offline or not registered: not called";
            return self.wait(job, token, reason, inner.sweep_interval).await;
        };
        if let Gate::Open { remaining } = inner.breakers.gate(&job.vendor_id, API_ORDERS).await {
            return self.wait(job, token, BREAKER_WAIT, remaining).await;
        }
        // The order as it stands now, not as it was at insert: a marketplace may add the lines
        // in a later transaction. Only a deleted order falls back to the job's copy.
        let order = claimed
            .current_order
            .clone()
            .filter(|order| !order.is_null())
            .or_else(|| job.payload.get("order").cloned())
            .unwrap_or(Value::Null);
        let body = json!({
            "jobId": job.id,
            "vendorId": job.vendor_id,
            "orderId": job.postgres_order_id,
            "order": order,
        });
        let call = CreateOrderCall {
            client,
            vendor_id: job.vendor_id.clone(),
            agent_url,
            signing: claimed.agent_signing.clone(),
            idempotency_key: idempotency_key(job),
            correlation_id: correlation_id.clone(),
            body: body.clone(),
        };
        let started_at = Utc::now();
        let started = std::time::Instant::now();
        // The client's own timeout bounds the call; this bounds anything around it too.
        let limit = inner.agent_timeout + Duration::from_secs(1);
        let outcome = tokio::time::timeout(
            limit,
            inner
                .breakers
                .create_order(&job.vendor_id, API_ORDERS, call),
        )
        .await
        .unwrap_or_else(|_| {
            Err(BreakerError::Call(AgentCallError::Transport(
                "timed out".into(),
            )))
        });
        if let Some((outcome, http_status, error)) = attempt_record(&outcome) {
            let attempt = NewAttempt {
                job_id: job.id,
                order_id: job.postgres_order_id,
                vendor_id: &job.vendor_id,
                kind: "call",
                attempt: job.retry_count.saturating_add(1),
                started_at,
                duration_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
                outcome,
                http_status,
                error: error.as_deref(),
                correlation_id: Some(&correlation_id),
            };
            // The history is for operators: losing one row must not fail the delivery.
            if let Err(error) = operator_queries::record_attempt(&inner.db, &attempt).await {
                tracing::warn!(%error, "could not record the attempt in sync_attempts");
            }
        }
        match outcome {
            Ok(CreateOrderOutcome::Done { erp_reference }) => {
                match delivery::complete(
                    &inner.db,
                    job.id,
                    &erp_reference,
                    Some(token),
                    Some(&body),
                )
                .await?
                {
                    Some(done) => {
                        inner.prometheus.count_job(JobOutcome::Completed);
                        tracing::info!(erp_reference = %erp_reference, "order synced");
                        log_completion("processing", &done);
                    }
                    None => tracing::info!("order synced by another attempt meanwhile"),
                }
                Ok(())
            }
            Ok(CreateOrderOutcome::Accepted) => {
                let deadline =
                    chrono::Duration::from_std(inner.callback_timeout).unwrap_or_default();
                if delivery::await_callback(&inner.db, job.id, token, deadline, &body).await? {
                    inner.prometheus.count_job(JobOutcome::Accepted);
                    tracing::info!("agent accepted the order; waiting for its callback");
                    self.wake_at(due_after(inner.callback_timeout));
                }
                Ok(())
            }
            Err(BreakerError::Open) => {
                // Half-open with its one probe out: look again once the probe has had time.
                let wait = (inner.agent_timeout / 4)
                    .clamp(Duration::from_millis(100), Duration::from_secs(30));
                self.wait(
                    job,
                    token,
                    "circuit breaker probing: agent not called",
                    wait,
                )
                .await
            }
            Err(BreakerError::Call(error)) if !error.agent_was_called() => {
                // The address or the signing secret was refused before any call (an agentUrl
                // that now resolves inside, say): an operator must act; the job waits.
                tracing::warn!(%error, "agent not called: its address or signing secret is refused");
                self.wait(job, token, &error.to_string(), inner.backoff)
                    .await
            }
            Err(BreakerError::Call(error)) if error.is_retryable() => {
                if error.is_signature_refusal() {
                    tracing::warn!(%error, "the agent refused erp-sync's signature (401): check the agent's clock and signing secret; retried like a temporary failure");
                }
                self.failed_call(
                    job,
                    token,
                    &error.to_string(),
                    error.retry_after(),
                    true,
                    Some(&body),
                )
                .await
            }
            Err(BreakerError::Call(error)) => {
                self.dead_letter(
                    job,
                    token,
                    &format!("permanent: {error}"),
                    true,
                    Some(&body),
                )
                .await
            }
        }
    }

    /// A call that failed in a way worth retrying: later, with exponential backoff and jitter
    /// (at least what the agent's capped `Retry-After` asked), or to the DLQ when it was the
    /// last attempt. `agent_error`: the error is the agent's (kept as the DLQ reason).
    async fn failed_call(
        &self,
        job: &SyncJob,
        token: Uuid,
        error: &str,
        retry_after: Option<Duration>,
        agent_error: bool,
        sent: Option<&Value>,
    ) -> Result<(), AppError> {
        let inner = &self.inner;
        let attempts = job.retry_count.saturating_add(1);
        if attempts >= inner.max_attempts as i32 {
            return self
                .dead_letter(
                    job,
                    token,
                    &format!("{error} (after {attempts} attempts)"),
                    true,
                    sent,
                )
                .await;
        }
        let delay =
            backoff_delay(inner.backoff, attempts as u32).max(retry_after.unwrap_or_default());
        let due_at = due_after(delay);
        let release = Release {
            due_at,
            reason: error,
            spent_attempt: true,
            agent_error: agent_error.then_some(error),
            sent,
        };
        if delivery::release(&inner.db, job.id, token, &release).await? {
            inner.prometheus.count_job(JobOutcome::Retried);
            tracing::warn!(
                reason = error,
                retry_in_ms = delay.as_millis() as u64,
                "order sync attempt failed; retrying later"
            );
            self.wake_at(due_at);
        } else {
            tracing::info!("the attempt lost its lease meanwhile; its failure changes nothing");
        }
        Ok(())
    }

    /// The agent was not called: the job waits `delay` (with a little jitter, so a vendor's
    /// jobs do not all return at once) without spending an attempt.
    async fn wait(
        &self,
        job: &SyncJob,
        token: Uuid,
        reason: &str,
        delay: Duration,
    ) -> Result<(), AppError> {
        let delay = delay.mul_f64(rand::rng().random_range(1.0..1.1));
        let due_at = due_after(delay);
        let release = Release {
            due_at,
            reason,
            spent_attempt: false,
            agent_error: None,
            sent: None,
        };
        if delivery::release(&self.inner.db, job.id, token, &release).await? {
            self.inner.prometheus.count_job(JobOutcome::Deferred);
            tracing::info!(
                reason,
                wait_ms = delay.as_millis() as u64,
                "order waits; no attempt spent"
            );
            self.wake_at(due_at);
        }
        Ok(())
    }

    /// Fails the job for good and parks it in the dead-letter queue, if this attempt still
    /// holds it.
    async fn dead_letter(
        &self,
        job: &SyncJob,
        token: Uuid,
        reason: &str,
        spent_attempt: bool,
        sent: Option<&Value>,
    ) -> Result<(), AppError> {
        if delivery::dead_letter(
            &self.inner.db,
            job.id,
            Some(token),
            reason,
            spent_attempt,
            sent,
        )
        .await?
        .is_some()
        {
            self.inner.prometheus.count_job(JobOutcome::DeadLettered);
            tracing::error!(job_id = %job.id, vendor_id = %job.vendor_id, reason, "order sync failed for good; moved to the dead-letter queue");
        }
        Ok(())
    }
}

/// How a call's result is kept in `sync_attempts`: outcome, the agent's status, the error.
/// `None` when the breaker refused the call (no attempt).
fn attempt_record(
    result: &Result<CreateOrderOutcome, BreakerError>,
) -> Option<(&'static str, Option<i32>, Option<String>)> {
    Some(match result {
        Ok(CreateOrderOutcome::Done { .. }) => ("completed", Some(200), None),
        Ok(CreateOrderOutcome::Accepted) => ("accepted", Some(202), None),
        Err(BreakerError::Open) => return None,
        Err(BreakerError::Call(error)) => {
            let status = match error {
                AgentCallError::Status { status, .. } => Some(i32::from(*status)),
                _ => None,
            };
            let outcome = if !error.agent_was_called() {
                "refused"
            } else if error.is_retryable() {
                "failed"
            } else {
                "rejected"
            };
            (outcome, status, Some(error.to_string()))
        }
    })
}

/// The order id: what every delivery of the order carries as `Idempotency-Key` and
/// `webhook-id`, whichever job (retry, DLQ retry, re-sync) carries it.
fn idempotency_key(job: &SyncJob) -> String {
    job.postgres_order_id
        .map(|id| id.to_string())
        .or_else(|| {
            job.payload
                .get("orderId")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| job.id.to_string())
}
