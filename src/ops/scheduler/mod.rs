//! The scheduler: six housekeeping jobs on cron schedules (tokio-cron-scheduler; 6 fields,
//! seconds first, UTC), each run once across replicas and recorded in `scheduler_runs`.
//!
//! Once across replicas, twice over: a scheduled run first claims its cron occurrence (a row
//! keyed `(job, tick)`, inserted ON CONFLICT DO NOTHING, so of N replicas firing for the same
//! tick one proceeds), then takes a Postgres advisory lock for the job on a connection of its
//! own, so a run never overlaps another run of the same job (a slow previous tick, or an
//! operator's manual run) on any replica. The lock lives exactly as long as that connection:
//! a replica that dies mid-run releases it.

mod jobs;
mod queries;
pub mod routes;
mod schedule;

use std::{sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::ToSchema;

pub use jobs::{DriftReport, Jobs, Reconciler};
pub use queries::JobRun;
pub use schedule::{JobName, JobSchedule, Schedule};

use crate::{error::AppError, ops::metrics::Prometheus};

/// One line of `GET /api/admin/scheduler`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOverview {
    pub name: &'static str,
    /// The cron expression, or `off`.
    pub schedule: String,
    pub last_run_at: Option<DateTime<Utc>>,
    /// running, succeeded, failed, cancelled or abandoned.
    pub last_status: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub last_result: Option<Value>,
    pub last_duration_ms: Option<i64>,
    pub next_run_at: Option<DateTime<Utc>>,
}

/// What became of an attempt to run a job.
#[derive(Debug)]
pub enum RunOutcome {
    Ran(JobRun),
    /// Another replica took this scheduled tick.
    TickTaken,
    /// A run of the job is in progress (on any replica).
    Busy,
}

#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    jobs: Jobs,
    schedules: Vec<JobSchedule>,
    /// Recorded with each run: which replica ran it.
    instance: String,
    prometheus: Prometheus,
    runs: TaskTracker,
    stop: CancellationToken,
}

impl Scheduler {
    pub fn new(
        db: PgPool,
        jobs: Jobs,
        schedules: Vec<JobSchedule>,
        prometheus: Prometheus,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "erp-sync".into());
        let instance = format!(
            "{host}-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            inner: Arc::new(Inner {
                db,
                jobs,
                schedules,
                instance,
                prometheus,
                runs: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    fn schedule_of(&self, job: JobName) -> Option<&Schedule> {
        self.inner
            .schedules
            .iter()
            .find(|s| s.job == job)
            .and_then(|s| s.cron.as_ref())
    }

    /// Every job with its schedule, last run and next run.
    pub async fn overview(&self) -> Result<Vec<JobOverview>, AppError> {
        let latest = queries::latest_per_job(&self.inner.db).await?;
        let now = Utc::now();
        Ok(JobName::ALL
            .into_iter()
            .map(|job| {
                let schedule = self.schedule_of(job);
                let last = latest.iter().find(|run| run.job == job.as_str());
                JobOverview {
                    name: job.as_str(),
                    schedule: schedule.map_or("off".into(), |s| s.as_str().to_owned()),
                    last_run_at: last.map(|run| run.started_at),
                    last_status: last.map(|run| run.status.clone()),
                    last_result: last.and_then(|run| run.result.clone()),
                    last_duration_ms: last.and_then(|run| run.duration_ms),
                    next_run_at: schedule.and_then(|s| s.next_after(now)),
                }
            })
            .collect())
    }

    /// Runs a job now, whatever its schedule, and waits for its result. 409 while a run of it
    /// is in progress anywhere. The run goes on (and is recorded) if the caller goes away.
    pub async fn run_now(&self, job: JobName) -> Result<JobRun, AppError> {
        let this = self.clone();
        let run = self
            .inner
            .runs
            .spawn(async move { this.execute(job, None).await });
        match run.await.map_err(|e| AppError::Internal(e.into()))?? {
            RunOutcome::Ran(run) => Ok(run),
            RunOutcome::Busy | RunOutcome::TickTaken => Err(AppError::Conflict(format!(
                "{} is running; try again when it has finished",
                job.as_str()
            ))),
        }
    }

    /// Runs the job for its scheduled occurrence `tick`, unless another replica took it.
    pub async fn run_scheduled(
        &self,
        job: JobName,
        tick: DateTime<Utc>,
    ) -> Result<RunOutcome, AppError> {
        self.execute(job, Some(tick)).await
    }

    async fn execute(
        &self,
        job: JobName,
        tick: Option<DateTime<Utc>>,
    ) -> Result<RunOutcome, AppError> {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return Err(AppError::Unavailable("shutting down".into()));
        }
        let name = job.as_str();
        let claimed = match tick {
            Some(tick) => {
                match queries::claim_tick(&inner.db, name, tick, &inner.instance).await? {
                    Some(id) => Some(id),
                    None => return Ok(RunOutcome::TickTaken),
                }
            }
            None => None,
        };
        // Its own connection, closed (never returned to the pool) when the run ends: the lock
        // cannot outlive the run, even if this task is dropped half-way.
        let mut lock = inner.db.acquire().await?.detach();
        if !queries::try_lock(&mut lock, name).await? {
            if let Some(id) = claimed {
                let reason = json!({"reason": "the previous run was still in progress"});
                queries::finish(&inner.db, id, "skipped", &reason, 0).await?;
                inner.prometheus.count_scheduler_run(name, "skipped");
            }
            return Ok(RunOutcome::Busy);
        }
        let run_id = match claimed {
            Some(id) => id,
            None => queries::start_manual(&inner.db, name, &inner.instance).await?,
        };
        // Holding the lock, nothing else runs this job: an unfinished row is a dead replica's.
        queries::abandon_unfinished(&inner.db, name, run_id).await?;

        let started = Instant::now();
        let outcome = tokio::select! {
            _ = inner.stop.cancelled() => Err(None),
            result = inner.jobs.run(job) => result.map_err(Some),
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let (status, result) = match outcome {
            Ok(result) => ("succeeded", result),
            Err(None) => (
                "cancelled",
                json!({"reason": "the service shut down during the run"}),
            ),
            Err(Some(error)) => {
                tracing::error!(job = name, error = ?error, "scheduled job failed");
                ("failed", json!({"error": error.to_string()}))
            }
        };
        let run = queries::finish(&inner.db, run_id, status, &result, duration_ms).await?;
        if let Err(error) = queries::unlock(&mut lock, name).await {
            tracing::debug!(%error, "unlocking the job (closing its connection frees it)");
        }
        if let Err(error) = sqlx::Connection::close(lock).await {
            tracing::debug!(%error, "closing the scheduler lock connection");
        }
        inner.prometheus.count_scheduler_run(name, status);
        tracing::info!(job = name, status, duration_ms, result = %result, "scheduled job run");
        Ok(RunOutcome::Ran(run))
    }

    /// Starts firing the jobs on their schedules; [`run_until`](Self::run_until) stops it.
    pub async fn start(&self) -> anyhow::Result<tokio_cron_scheduler::JobScheduler> {
        let cron = tokio_cron_scheduler::JobScheduler::new().await?;
        for entry in &self.inner.schedules {
            let Some(schedule) = entry.cron.clone() else {
                continue;
            };
            let pattern = schedule.as_str().to_owned();
            let (this, job) = (self.clone(), entry.job);
            let fire = move |_, _| {
                let (this, schedule) = (this.clone(), schedule.clone());
                Box::pin(async move { this.on_tick(job, &schedule) })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            };
            cron.add(tokio_cron_scheduler::Job::new_async(pattern, fire)?)
                .await?;
        }
        cron.start().await?;
        Ok(cron)
    }

    /// Keeps `cron` firing until `shutdown`, then stops it and the runs in progress.
    pub async fn run_until(
        &self,
        mut cron: tokio_cron_scheduler::JobScheduler,
        shutdown: CancellationToken,
    ) {
        shutdown.cancelled().await;
        if let Err(error) = cron.shutdown().await {
            tracing::warn!(%error, "stopping the cron scheduler");
        }
        self.stop().await;
    }

    /// Starts the run of one tick in a tracked task (the cron scheduler does not wait for it).
    fn on_tick(&self, job: JobName, schedule: &Schedule) {
        let tick = schedule.tick_at(Utc::now());
        let this = self.clone();
        self.inner.runs.spawn(async move {
            match this.run_scheduled(job, tick).await {
                Ok(RunOutcome::Ran(_)) => {}
                Ok(RunOutcome::TickTaken) => {
                    tracing::debug!(job = job.as_str(), %tick, "another replica runs this tick")
                }
                Ok(RunOutcome::Busy) => {
                    tracing::info!(job = job.as_str(), %tick, "skipped: the previous run is still in progress")
                }
                Err(error) => {
                    tracing::error!(job = job.as_str(), %tick, error = ?error, "could not run the scheduled job")
                }
            }
        });
    }

    /// Cancels runs in progress (each records `cancelled`) and waits for them.
    pub async fn stop(&self) {
        self.inner.stop.cancel();
        self.inner.runs.close();
        self.inner.runs.wait().await;
    }
}
