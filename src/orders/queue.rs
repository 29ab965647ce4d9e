//! Redis dispatch (apalis + apalis-redis). Redis only carries "look at job X now", and only
//! for jobs that are due: retries wait in Postgres until they are due, so what Redis holds is
//! bounded by the dispatcher and one vendor's backoff never fills it. A lost or duplicated
//! task is harmless: the dispatcher re-queues what Postgres says is due, and a worker only
//! runs a job it can claim.
//!
//! apalis-redis keeps every task's data, a `{queue}:meta:<id>` hash and a `{queue}:done` entry
//! after the task is done, and leaves a dead worker's metadata behind: [`Dispatcher::vacuum`]
//! and [`Dispatcher::reap_dead_workers`] keep Redis flat.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use apalis::prelude::{
    BackendExt, BoxDynError, Data, Strategy, TaskSink, WorkerBuilder, WorkerBuilderExt, WorkerError,
};
use apalis_redis::{Config, RedisStorage};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::service::OrderSync;
use crate::db::Redis;

/// What travels through Redis: the job id (the job itself is in Postgres) and its vendor, so
/// a worker can apply the vendor's share before touching the database. Kept backward
/// compatible: a task Redis cannot decode would stop the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderTask {
    pub job_id: Uuid,
    #[serde(default)]
    pub vendor_id: Option<String>,
}

/// apalis' global sorted set of every queue it has seen (member: the queue's workers set).
pub const APALIS_QUEUES_LIST: &str = "core:apalis:queues:list";

/// The Redis keys of the order-sync queue of one prefix: the only place outside apalis that
/// knows its layout (tests and benches inspect and clean up through it).
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// Every key of the queue starts with this (`{prefix}:order-sync`).
    pub queue: String,
    /// Tasks ready to be fetched (a list).
    pub active: String,
    /// Tasks due later (a sorted set by due time).
    pub scheduled: String,
    /// Registered workers with their last heartbeat (a sorted set); also this queue's member
    /// of [`APALIS_QUEUES_LIST`].
    pub workers: String,
    /// Every worker this queue started, with its start time (ours, for reaping the dead).
    pub known_workers: String,
}

impl QueueKeys {
    pub fn new(prefix: &str) -> Self {
        let config = queue_config(prefix);
        let workers = config.workers_set();
        Self {
            queue: format!("{prefix}:order-sync"),
            active: config.active_jobs_list(),
            scheduled: config.scheduled_jobs_set(),
            known_workers: format!("{workers}:known-workers"),
            workers,
        }
    }

    /// The metadata hash apalis keeps for one worker.
    pub fn worker_metadata(&self, worker: &str) -> String {
        format!("{}:metadata:{worker}", self.workers)
    }
}

/// The queue `{prefix}:order-sync` and how workers use it.
pub fn queue_config(prefix: &str) -> Config {
    Config::default()
        .queue(format!("{prefix}:order-sync"))
        // One task per fetch: with more, heartbeats stall while fetched tasks wait for a slot
        // and other workers may take this one's tasks as orphans.
        .batch_size(1)
        .heartbeat_interval(HEARTBEAT)
        .missed_heartbeats(6)
        .emit_events(false)
}

pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Finished tasks removed per vacuum call (each is three small deletions).
const VACUUM_BATCH: usize = 2_000;

/// Removes finished tasks: pops ids from the done and dead sets, deletes their data, result
/// and meta hash. O(removed), unlike apalis' own vacuum, which reads the whole data hash and
/// leaves the done set to grow.
const VACUUM: &str = r"
local removed = 0
for s = 1, 2 do
  local ids = redis.call('SPOP', KEYS[s], ARGV[1])
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4] .. ':result', id)
    redis.call('DEL', KEYS[4] .. ':' .. id)
    removed = removed + 1
  end
end
return removed
";

/// Forgets workers of this queue that died without deregistering (kill -9, lost host): a
/// worker started before ARGV[1] whose last heartbeat is older than ARGV[1] (or gone). What
/// it held goes back to the active list, as apalis' own orphan sweep does; its registration,
/// metadata and in-flight set are removed.
const REAP: &str = r"
local known = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local reaped = 0
for _, name in ipairs(known) do
  local seen = redis.call('ZSCORE', KEYS[2], name)
  if (not seen) or tonumber(seen) <= tonumber(ARGV[1]) then
    local inflight = KEYS[4] .. ':' .. name
    local held = redis.call('SMEMBERS', inflight)
    if #held > 0 then
      redis.call('RPUSH', KEYS[3], unpack(held))
    end
    redis.call('DEL', inflight, KEYS[2] .. ':metadata:' .. name)
    redis.call('ZREM', KEYS[2], name)
    redis.call('ZREM', KEYS[1], name)
    reaped = reaped + 1
  end
end
return reaped
";

/// What Redis holds for the dispatcher's decisions.
#[derive(Debug, Clone, Copy)]
pub struct QueueState {
    /// Tasks a worker may fetch now.
    pub due: u64,
    /// Workers with a recent heartbeat (processes serving this queue).
    pub live_workers: u64,
}

#[derive(Clone)]
pub struct Dispatcher {
    redis: Redis,
    config: Config,
    /// Bumped on every push: this process' idle workers fetch at once instead of at their
    /// next poll (workers of other processes still find the tasks by polling).
    pushed: Arc<watch::Sender<()>>,
}

/// An idle worker looks for tasks this often, and at once when this process pushes some.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

impl Dispatcher {
    pub fn new(redis: Redis) -> Self {
        let config = queue_config(redis.prefix());
        Self {
            redis,
            config,
            pushed: Arc::new(watch::Sender::new(())),
        }
    }

    async fn storage(&self) -> redis::RedisResult<RedisStorage<OrderTask>> {
        Ok(RedisStorage::new(self.redis.connection().await?).with_config(self.config.clone()))
    }

    /// The set of every worker this queue has started, with its start time (ours, for
    /// [`reap_dead_workers`](Self::reap_dead_workers)).
    fn known_workers_set(&self) -> String {
        QueueKeys::new(self.redis.prefix()).known_workers
    }

    pub async fn state(&self) -> redis::RedisResult<QueueState> {
        let mut conn = self.redis.connection().await?;
        let now = unix_now();
        let alive_since = now.saturating_sub(self.config.orphaned_duration().as_secs());
        let (active, scheduled, live_workers): (u64, u64, u64) = redis::pipe()
            .llen(self.config.active_jobs_list())
            .zcount(self.config.scheduled_jobs_set(), 0, now)
            .zcount(self.config.workers_set(), alive_since, "+inf")
            .query_async(&mut conn)
            .await?;
        Ok(QueueState {
            due: active + scheduled,
            live_workers,
        })
    }

    /// Queues the jobs for a worker now, in the order given.
    pub async fn push(&self, jobs: Vec<OrderTask>) -> anyhow::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut storage = self.storage().await?;
        storage.push_bulk(jobs).await?;
        self.pushed.send_replace(());
        Ok(())
    }

    /// Removes the data of finished tasks; returns how many.
    pub async fn vacuum(&self) -> redis::RedisResult<u64> {
        let mut conn = self.redis.connection().await?;
        redis::Script::new(VACUUM)
            .key(self.config.done_jobs_set())
            .key(self.config.dead_jobs_set())
            .key(self.config.job_data_hash())
            .key(self.config.job_meta_hash())
            .arg(VACUUM_BATCH)
            .invoke_async(&mut conn)
            .await
    }

    /// Forgets workers dead for twice the orphan window; returns how many.
    pub async fn reap_dead_workers(&self) -> redis::RedisResult<u64> {
        let mut conn = self.redis.connection().await?;
        let dead_before = unix_now().saturating_sub(2 * self.config.orphaned_duration().as_secs());
        redis::Script::new(REAP)
            .key(self.known_workers_set())
            .key(self.config.workers_set())
            .key(self.config.active_jobs_list())
            .key(self.config.inflight_jobs_set())
            .arg(dead_before)
            .invoke_async(&mut conn)
            .await
    }

    /// Seconds since the worker's last heartbeat in Redis; `None` when it is not registered.
    pub async fn heartbeat_age(&self, name: &str) -> redis::RedisResult<Option<Duration>> {
        let mut conn = self.redis.connection().await?;
        let seen: Option<u64> = redis::cmd("ZSCORE")
            .arg(self.config.workers_set())
            .arg(name)
            .query_async(&mut conn)
            .await?;
        Ok(seen.map(|at| Duration::from_secs(unix_now().saturating_sub(at))))
    }

    /// A heartbeat older than this means the worker stalled.
    pub fn stall_after(&self) -> Duration {
        self.config.heartbeat_interval * 3
    }

    /// Runs one worker named `name` until `stop` (then lets the tasks in hand finish) or until
    /// Redis errors end it.
    pub async fn run_worker(
        &self,
        sync: OrderSync,
        concurrency: usize,
        name: String,
        stop: CancellationToken,
    ) -> Result<(), WorkerError> {
        let storage = self
            .storage()
            .await
            .map_err(|e| WorkerError::BackendError(Box::new(e)))?
            .poll_with_strategy(self.poll_strategy());
        let known: redis::RedisResult<()> = async {
            let mut conn = self.redis.connection().await?;
            redis::cmd("ZADD")
                .arg(self.known_workers_set())
                .arg(unix_now())
                .arg(&name)
                .query_async(&mut conn)
                .await
        }
        .await;
        if let Err(error) = known {
            return Err(WorkerError::BackendError(Box::new(error)));
        }
        let worker = WorkerBuilder::new(name.clone())
            .backend(storage)
            .data(sync)
            .concurrency(concurrency)
            .build(handle_task);
        let result = worker
            .run_until(async move {
                stop.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await;
        if result.is_ok() {
            // Stopped gracefully, nothing in hand. (A worker that died stays registered so
            // its tasks are re-queued; Postgres would redo them anyway.)
            self.deregister(&name).await;
        }
        result
    }

    /// When an idle worker fetches again: on this process' next push, else every
    /// [`POLL_INTERVAL`].
    fn poll_strategy(&self) -> Strategy {
        let pushes = futures::stream::unfold(self.pushed.subscribe(), |mut pushed| async move {
            if pushed.changed().await.is_err() {
                // The dispatcher is gone: polling alone from now on.
                std::future::pending::<()>().await;
            }
            Some(((), pushed))
        });
        Strategy::new()
            .stream(Box::pin(pushes))
            .interval(POLL_INTERVAL)
    }

    /// apalis leaves a stopped worker registered (its name in `{queue}:workers`, its metadata
    /// hash) until another worker's heartbeat reaps it; names are unique per run, so without
    /// this every restart would leave a little behind.
    async fn deregister(&self, name: &str) {
        let Ok(mut conn) = self.redis.connection().await else {
            return;
        };
        let result: redis::RedisResult<()> = redis::pipe()
            .zrem(self.config.workers_set(), name)
            .zrem(self.known_workers_set(), name)
            .del(QueueKeys::new(self.redis.prefix()).worker_metadata(name))
            .query_async(&mut conn)
            .await;
        if let Err(error) = result {
            tracing::debug!(%error, worker = name, "could not deregister the worker");
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Always acknowledges: the outcome is recorded in Postgres, and anything left undone there
/// is found again by the dispatcher. apalis' own retries (which ignore the attempt limit)
/// are never used. The attempt runs on a task of its own, so a worker that dies (Redis cut
/// off) or is restarted by the watchdog does not cancel calls in flight: they finish and
/// record their outcome.
async fn handle_task(task: OrderTask, sync: Data<OrderSync>) -> Result<(), BoxDynError> {
    let sync = (*sync).clone();
    let job_id = task.job_id;
    if let Err(error) = tokio::spawn(async move { sync.process_task(task).await }).await {
        tracing::error!(%job_id, %error, "order sync attempt aborted");
    }
    Ok(())
}
