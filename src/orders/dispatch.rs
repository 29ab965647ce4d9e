//! The dispatcher: decides which due jobs go into Redis, and when. It runs on new orders
//! (NOTIFY), on freed worker slots, when the next job comes due, and every sweep interval.
//! Only due work enters Redis; each vendor gets its fair part (see `fairness.rs`); vendors
//! whose agent cannot be called now get none, so their jobs wait in Postgres at no cost.

use std::{collections::HashMap, panic::AssertUnwindSafe, time::Duration};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::{
    breaker::Gate,
    delivery_queries as delivery,
    fairness::{self, Admit, Demand},
    job_queries as jobs,
    queue::OrderTask,
    service::{API_ORDERS, OrderSync},
};
use crate::{agents::model::AgentHealth, error::AppError};

/// Orders older than this without a job are history, not work: never synced by the sweep.
const LOOKBACK: chrono::Duration = chrono::Duration::days(7);
/// Most due tasks kept in Redis, whatever the vendors.
const MAX_REDIS_DUE: u64 = 2_000;
/// A vendor alone may have this many tasks per worker queued and in flight: enough that the
/// workers never wait for the next dispatch round. (A vendor that has filled the queue when
/// another's orders arrive is held to its share by the workers, see `fairness.rs`.)
const DEPTH_PER_WORKER: i64 = 50;
const MIN_DEPTH: i64 = 500;
/// Rounds triggered by events are at least this far apart: a burst of wakes (new orders, a
/// worker finishing each job) is one round.
const MIN_ROUND_GAP: Duration = Duration::from_millis(50);
/// With nothing due in Redis, a dispatched task not claimed within this was lost.
const LOST_WHEN_IDLE: Duration = Duration::from_secs(2);

impl OrderSync {
    /// Creates the jobs of recent orders that have none, forgets dead workers, then queues
    /// due jobs.
    pub async fn sweep(&self) -> Result<usize, AppError> {
        let created = jobs::create_missing(&self.inner.db, LOOKBACK, 1_000).await?;
        if !created.is_empty() {
            tracing::info!(
                count = created.len(),
                "created jobs for orders that had none"
            );
        }
        match self.inner.dispatcher.reap_dead_workers().await {
            Ok(0) => {}
            Ok(reaped) => tracing::info!(reaped, "forgot order-sync workers that died"),
            Err(error) => tracing::debug!(%error, "could not reap dead workers"),
        }
        self.dispatch_due().await
    }

    /// One dispatch round: queues what is due, fairly and as far as Redis' bound allows;
    /// returns how many jobs it queued.
    pub async fn dispatch_due(&self) -> Result<usize, AppError> {
        let inner = &self.inner;
        if let Err(error) = inner.dispatcher.vacuum().await {
            tracing::debug!(%error, "could not vacuum finished tasks");
        }
        let queue = inner.dispatcher.state().await?;
        let stale = if queue.due == 0 {
            LOST_WHEN_IDLE
        } else {
            inner.redispatch_grace
        };
        let stale = chrono::Duration::from_std(stale).unwrap_or_default();
        let work = delivery::vendor_work(&inner.db, stale).await?;
        let now = Utc::now();
        let mut reopens: Option<Duration> = None;
        let mut demands = Vec::with_capacity(work.len());
        for w in work {
            let health = inner.agents.health_at(
                w.agent_last_heartbeat,
                w.agent_deregistered_at.is_some(),
                now,
            );
            let admit = if !w.agent_registered || health == AgentHealth::Offline {
                Admit::None
            } else {
                match inner.breakers.gate(&w.vendor_id, API_ORDERS).await {
                    Gate::Closed => Admit::All,
                    Gate::Probing => Admit::One,
                    Gate::Open { remaining } => {
                        reopens = Some(reopens.map_or(remaining, |r| r.min(remaining)));
                        Admit::None
                    }
                }
            };
            demands.push(Demand {
                vendor_id: w.vendor_id,
                ready: w.ready,
                queued: w.queued,
                in_flight: w.in_flight,
                admit,
            });
        }
        let workers = (inner.concurrency as u64 * queue.live_workers.max(1)) as usize;
        let share = fairness::share_of(workers, inner.vendor_share) as i64;
        let depth = (workers as i64 * DEPTH_PER_WORKER).max(MIN_DEPTH);
        let room = MAX_REDIS_DUE.saturating_sub(queue.due) as i64;
        let plan = fairness::plan(&demands, room, share, depth);
        inner.fairness.set_waiting(plan.waiting);

        let taken = if plan.quotas.is_empty() {
            Vec::new()
        } else {
            delivery::take_ready(&inner.db, &plan.quotas, stale).await?
        };
        let count = taken.len();
        // If this push fails the rows stay due: a round after the stale limit queues them.
        inner
            .dispatcher
            .push(interleave(taken))
            .await
            .map_err(AppError::Internal)?;

        let next = delivery::next_due(&inner.db).await?;
        let reopen = reopens.map(super::service::due_after);
        *inner.timer.lock().unwrap_or_else(|e| e.into_inner()) = match (next, reopen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(count)
    }

    /// Something (a retry, a callback deadline) comes due at `at`: the dispatcher must look
    /// then.
    pub(super) fn wake_at(&self, at: DateTime<Utc>) {
        {
            let mut timer = self.inner.timer.lock().unwrap_or_else(|e| e.into_inner());
            *timer = Some(timer.map_or(at, |t| t.min(at)));
        }
        self.wake();
    }

    fn next_timer(&self) -> Duration {
        let timer = *self.inner.timer.lock().unwrap_or_else(|e| e.into_inner());
        match timer {
            // A time already past (a due job raced the round) gives one immediate round.
            Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            None => self.inner.sweep_interval,
        }
        .min(self.inner.sweep_interval)
    }

    /// The dispatch loop, until `shutdown`. A failing or panicking round is logged and the
    /// next one tries again.
    pub(super) async fn run_dispatcher(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_round = tokio::time::Instant::now();
        loop {
            let timer = tokio::time::sleep(self.next_timer());
            let sweep = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => true,
                _ = self.woken() => false,
                _ = timer => false,
            };
            if !sweep {
                let gap = MIN_ROUND_GAP.saturating_sub(last_round.elapsed());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(gap) => {}
                }
            }
            last_round = tokio::time::Instant::now();
            // Cancellable: an unreachable Redis or Postgres must not hold up shutdown.
            let round = AssertUnwindSafe(async {
                if sweep {
                    self.sweep().await
                } else {
                    self.dispatch_due().await
                }
            })
            .catch_unwind();
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                result = round => result,
            };
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "order dispatch failed; the next round retries")
                }
                Err(_) => tracing::error!("order dispatch round panicked; the next round retries"),
            }
        }
    }
}

/// One job of each vendor in turn (oldest due first within a vendor), so that a worker
/// fetching from the head of the queue meets the vendors alternately.
fn interleave(mut taken: Vec<(uuid::Uuid, String, DateTime<Utc>)>) -> Vec<OrderTask> {
    taken.sort_by_key(|(_, _, due)| *due);
    let mut order: Vec<String> = Vec::new();
    let mut by_vendor: HashMap<String, std::collections::VecDeque<uuid::Uuid>> = HashMap::new();
    for (job_id, vendor, _) in taken {
        let lane = by_vendor.entry(vendor.clone()).or_insert_with(|| {
            order.push(vendor);
            Default::default()
        });
        lane.push_back(job_id);
    }
    let mut out = Vec::new();
    loop {
        let mut any = false;
        for vendor in &order {
            if let Some(job_id) = by_vendor.get_mut(vendor).and_then(|lane| lane.pop_front()) {
                out.push(OrderTask {
                    job_id,
                    vendor_id: Some(vendor.clone()),
                });
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}
