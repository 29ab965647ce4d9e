//! Redis dispatch (apalis + apalis-redis). Redis only carries "look at job X now / at T";
//! Postgres decides. A lost or duplicated task is harmless: the recovery sweep re-dispatches
//! what Postgres says is due, and a worker only runs a job it can claim.

use std::time::Duration;

use apalis::prelude::{
    BackendExt, BoxDynError, Data, TaskBuilder, TaskSink, WorkerBuilder, WorkerBuilderExt,
};
use apalis_redis::{Config, RedisStorage};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::service::OrderSync;
use crate::db::Redis;

/// What travels through Redis: only the job id (the job itself is in Postgres). Kept
/// backward compatible: a task Redis cannot decode would stop the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderTask {
    pub job_id: Uuid,
}

/// The queue `{prefix}:order-sync` and how workers use it.
pub fn queue_config(prefix: &str) -> Config {
    Config::default()
        .queue(format!("{prefix}:order-sync"))
        // One task per fetch: with more, heartbeats stall while fetched tasks wait for a slot
        // and other workers may take this one's tasks as orphans.
        .batch_size(1)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(6)
        .emit_events(false)
}

#[derive(Clone)]
pub struct Dispatcher {
    redis: Redis,
    config: Config,
}

impl Dispatcher {
    pub fn new(redis: Redis) -> Self {
        let config = queue_config(redis.prefix());
        Self { redis, config }
    }

    async fn storage(&self) -> redis::RedisResult<RedisStorage<OrderTask>> {
        Ok(RedisStorage::new(self.redis.connection().await?).with_config(self.config.clone()))
    }

    /// Tasks waiting in Redis (due or scheduled). apalis' fetch script promotes every due task
    /// in one Lua `unpack`, which fails beyond ~8 000 and stops the worker: the dispatcher
    /// keeps this bounded and leaves the rest due in Postgres.
    pub async fn backlog(&self) -> redis::RedisResult<u64> {
        let mut conn = self.redis.connection().await?;
        let (scheduled, active): (u64, u64) = redis::pipe()
            .zcard(self.config.scheduled_jobs_set())
            .llen(self.config.active_jobs_list())
            .query_async(&mut conn)
            .await?;
        Ok(scheduled + active)
    }

    /// Queues the jobs for a worker, `after` from now (Redis resolution: whole seconds).
    pub async fn push(&self, job_ids: &[Uuid], after: Duration) -> anyhow::Result<()> {
        let mut storage = self.storage().await?;
        for job_id in job_ids {
            let task = TaskBuilder::new(OrderTask { job_id: *job_id })
                .run_after(after)
                .build();
            storage.push_task(task).await?;
        }
        Ok(())
    }

    /// Runs the worker until `shutdown`, restarting it with backoff if Redis errors kill it.
    /// A graceful stop lets the tasks in hand finish; one that does not finish in time is
    /// dropped and comes back through the recovery sweep (Postgres still has it as due).
    pub async fn run_worker(
        self,
        sync: OrderSync,
        concurrency: usize,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let storage = tokio::select! {
                _ = shutdown.cancelled() => break,
                storage = self.storage() => storage,
            };
            let storage = match storage {
                Ok(storage) => storage.poll_with_interval(Duration::from_millis(100)),
                Err(error) => {
                    tracing::warn!(%error, "order-sync worker cannot reach Redis; retrying");
                    if sleep_or_cancel(&shutdown, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            // A unique name per run: apalis refuses a name whose last heartbeat is recent.
            let name = format!(
                "order-sync-{}-{}",
                std::process::id(),
                Uuid::new_v4().simple()
            );
            let worker = WorkerBuilder::new(name.clone())
                .backend(storage)
                .data(sync.clone())
                .concurrency(concurrency)
                .build(handle_task);
            let stop = shutdown.clone();
            let run = worker.run_until(async move {
                stop.cancelled().await;
                Ok::<(), std::io::Error>(())
            });
            sync.set_worker_running(true);
            let outcome = run.await;
            sync.set_worker_running(false);
            match outcome {
                Ok(()) => {
                    // Stopped gracefully, nothing in hand. (A worker that died stays registered
                    // so apalis re-queues what it held; Postgres would redo it anyway.)
                    self.deregister(&name).await;
                    break;
                }
                Err(error) => {
                    tracing::error!(worker = %name, %error, "order-sync worker stopped; restarting");
                    if sleep_or_cancel(&shutdown, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

impl Dispatcher {
    /// apalis leaves a stopped worker registered (its name in `{queue}:workers`, its metadata
    /// hash) until another worker's heartbeat reaps it; names are unique per run, so without
    /// this every restart would leave a little behind.
    async fn deregister(&self, name: &str) {
        let Ok(mut conn) = self.redis.connection().await else {
            return;
        };
        let result: redis::RedisResult<()> = redis::pipe()
            .zrem(self.config.workers_set(), name)
            .del(format!("{}:metadata:{name}", self.config.workers_set()))
            .query_async(&mut conn)
            .await;
        if let Err(error) = result {
            tracing::debug!(%error, worker = name, "could not deregister the worker");
        }
    }
}

/// `true` when cancelled first.
async fn sleep_or_cancel(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

/// Always acknowledges: the outcome is recorded in Postgres, and anything left undone there
/// is found again by the recovery sweep. apalis' own retries (which ignore the attempt limit)
/// are never used.
async fn handle_task(task: OrderTask, sync: Data<OrderSync>) -> Result<(), BoxDynError> {
    sync.process_job(task.job_id).await;
    Ok(())
}
