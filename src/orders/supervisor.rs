//! Keeps the order-sync worker and the dispatcher running: a worker that ends on an error,
//! panics, or stalls (its heartbeat in Redis goes stale) is restarted, with a backoff that
//! resets after a good run. Its state is what `/health` reports.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::service::OrderSync;

const RESTART_MIN: Duration = Duration::from_millis(200);
const RESTART_MAX: Duration = Duration::from_secs(2);
const WATCHDOG_TICK: Duration = Duration::from_millis(500);
/// Until the worker is first seen up, it is looked at more often (startup is quick).
const STARTUP_TICK: Duration = Duration::from_millis(50);

/// The order-sync worker of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerStatus {
    /// Not run by this process (`ORDER_SYNC_ENABLED=false`, or no `AGENT_SECRET`).
    Disabled = 0,
    /// Started, not yet registered in Redis.
    Starting = 1,
    /// Registered, heartbeat fresh.
    Up = 2,
    /// Dead, stalled or cut off from Redis; being restarted.
    Down = 3,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Starting => "starting",
            Self::Up => "up",
            Self::Down => "down",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Starting,
            2 => Self::Up,
            3 => Self::Down,
            _ => Self::Disabled,
        }
    }
}

impl OrderSync {
    pub fn worker_status(&self) -> WorkerStatus {
        WorkerStatus::from_u8(self.inner.worker_status.load(Ordering::Relaxed))
    }

    fn set_worker_status(&self, status: WorkerStatus) {
        self.inner
            .worker_status
            .store(status as u8, Ordering::Relaxed);
    }

    /// Starts the supervised worker (`concurrency` jobs at a time) and the dispatcher on
    /// `tasks`; both stop with `shutdown`, the worker letting its jobs in hand finish.
    pub fn start(&self, tasks: &TaskTracker, concurrency: usize, shutdown: CancellationToken) {
        self.set_worker_status(WorkerStatus::Starting);
        tasks.spawn(self.clone().supervise_worker(concurrency, shutdown.clone()));
        tasks.spawn(self.clone().supervise_dispatcher(shutdown));
    }

    async fn supervise_dispatcher(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let this = self.clone();
            let stop = shutdown.clone();
            match tokio::spawn(async move { this.run_dispatcher(stop).await }).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, "order dispatcher died; restarting");
                    if sleep_or_cancel(&shutdown, RESTART_MAX).await {
                        break;
                    }
                }
            }
        }
    }

    async fn supervise_worker(self, concurrency: usize, shutdown: CancellationToken) {
        let dispatcher = self.inner.dispatcher.clone();
        let stall_after = dispatcher.stall_after();
        let mut backoff = RESTART_MIN;
        while !shutdown.is_cancelled() {
            // A unique name per run: apalis refuses a name whose last heartbeat is recent.
            let name = format!(
                "order-sync-{}-{}",
                std::process::id(),
                Uuid::new_v4().simple()
            );
            let stop = shutdown.child_token();
            let mut run = tokio::spawn({
                let (dispatcher, sync, name, stop) =
                    (dispatcher.clone(), self.clone(), name.clone(), stop.clone());
                async move { dispatcher.run_worker(sync, concurrency, name, stop).await }
            });
            let started = Instant::now();
            let mut was_up = false;
            let ended = loop {
                let tick = if was_up { WATCHDOG_TICK } else { STARTUP_TICK };
                tokio::select! {
                    ended = &mut run => break ended.map_err(Some),
                    _ = tokio::time::sleep(tick) => {}
                }
                if stop.is_cancelled() {
                    continue; // shutting down: the run ends by itself
                }
                match dispatcher.heartbeat_age(&name).await {
                    Ok(Some(age)) if age <= stall_after => {
                        was_up = true;
                        self.set_worker_status(WorkerStatus::Up);
                    }
                    Err(error) => {
                        // Cut off from Redis: the worker fails by itself and is restarted.
                        tracing::debug!(%error, "cannot read the worker's heartbeat");
                        self.set_worker_status(WorkerStatus::Down);
                    }
                    Ok(_) if was_up || started.elapsed() > stall_after => {
                        tracing::error!(worker = %name, "order-sync worker stalled (no heartbeat); restarting it");
                        self.set_worker_status(WorkerStatus::Down);
                        stop.cancel();
                        run.abort();
                        break Err(None);
                    }
                    Ok(_) => {} // still registering
                }
            };
            match ended {
                Ok(Ok(())) if shutdown.is_cancelled() => break,
                Ok(Ok(())) => {
                    tracing::warn!(worker = %name, "order-sync worker stopped; restarting")
                }
                Ok(Err(error)) => {
                    tracing::warn!(worker = %name, %error, "order-sync worker failed; restarting")
                }
                Err(Some(error)) if error.is_panic() => {
                    tracing::error!(worker = %name, "order-sync worker panicked; restarting")
                }
                Err(_) => {}
            }
            self.set_worker_status(WorkerStatus::Down);
            if was_up {
                backoff = RESTART_MIN; // a good run: the next outage starts from the bottom
            }
            if sleep_or_cancel(&shutdown, backoff).await {
                break;
            }
            // Stays down until the next run is seen up.
            backoff = (backoff * 2).min(RESTART_MAX);
        }
        // Stopped with the process: `/health` must not report a worker that no longer runs.
        self.set_worker_status(WorkerStatus::Down);
    }
}

/// `true` when cancelled first.
async fn sleep_or_cancel(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}
