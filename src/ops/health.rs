//! `GET /health`: database, Redis, the order-sync queue and worker, and the agents, checked
//! concurrently, each under its own deadline, so the answer comes within ~1.5 s (well under
//! the 3 s a load balancer allows) whatever hangs. 503 when the database, Redis or the worker
//! is down; 200 otherwise, `degraded` when the queue is deep or a figure could not be read.
//!
//! The endpoint needs no credentials, so its cost is bounded: the dependency checks are shared
//! by every request of the same second (one set of queries however many callers), and only
//! the worker's state, which is in memory, is read per request.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, extract::State, http::StatusCode};
use moka::future::Cache;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    agents::queries::HealthCounts, ops::metrics::WAITING_COUNT_CAP, orders::job_queries,
    state::AppState,
};

const CHECK_DEADLINE: Duration = Duration::from_millis(1500);
/// How long one round of dependency checks answers every caller.
const SHARED_FOR: Duration = Duration::from_secs(1);
/// More jobs than this due and waiting: the workers are not keeping up.
pub const QUEUE_DEGRADED_ABOVE: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `up`, `degraded` (answers, but look) or `down` (503).
    pub status: &'static str,
    pub version: &'static str,
    pub checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub database: Probe,
    pub redis: Probe,
    pub queue: QueueCheck,
    pub worker: WorkerCheck,
    pub agents: AgentsCheck,
}

/// A dependency pinged: `up` or `down`, with the time it took.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub status: &'static str,
    pub latency_ms: f64,
    /// The kind of failure, without addresses or credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Order-sync jobs due and waiting for a worker: `up`, `degraded` above 100, `unknown` when
/// they could not be counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueCheck {
    pub status: &'static str,
    /// Counted up to 100 000.
    pub waiting: Option<i64>,
}

/// This process's order-sync worker: `up`, `starting` (started, not yet registered in Redis:
/// degraded), `down` (dead, stalled or cut off from Redis, being restarted: 503), or `disabled`
/// (ORDER_SYNC_ENABLED=false or no AGENT_SECRET: another process runs it).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerCheck {
    pub status: &'static str,
}

/// Registered agents, and those online (heartbeat within AGENT_DEGRADED_AFTER_SECS).
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentsCheck {
    /// `up`, or `unknown` when they could not be counted.
    pub status: &'static str,
    pub online: Option<i64>,
    pub total: Option<i64>,
}

/// Health
///
/// Readiness: 200 `up` or `degraded`, 503 `down` (database, Redis or the worker down), with
/// each check's status; answers within 3 s whatever hangs.
#[utoipa::path(
    get, path = "/health", tag = "ops",
    responses(
        (status = 200, description = "Up, or degraded", body = HealthReport),
        (status = 503, description = "The database, Redis or the worker is down", body = HealthReport),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let report = check(&state).await;
    let status = if report.status == "down" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(report))
}

/// What the dependencies answered, shared by the requests of one second.
#[derive(Debug)]
struct Dependencies {
    database: Probe,
    redis: Probe,
    waiting: Option<i64>,
    agents: Option<HealthCounts>,
}

/// Runs the dependency checks at most once per second, whoever asks.
#[derive(Clone)]
pub struct HealthChecks {
    latest: Cache<(), Arc<Dependencies>>,
}

impl Default for HealthChecks {
    fn default() -> Self {
        Self {
            latest: Cache::builder()
                .max_capacity(1)
                .time_to_live(SHARED_FOR)
                .build(),
        }
    }
}

impl HealthChecks {
    async fn dependencies(&self, state: &AppState) -> Arc<Dependencies> {
        self.latest
            .get_with((), async { Arc::new(check_dependencies(state).await) })
            .await
    }
}

async fn check_dependencies(state: &AppState) -> Dependencies {
    let database = probe(async {
        sqlx::query("SELECT 1")
            .execute(&state.db)
            .await
            .map(drop)
            .map_err(|e| brief(&e))
    });
    let redis = probe(async {
        let mut conn = state.redis.connection().await.map_err(|e| brief(&e))?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| brief(&e))
    });
    let waiting = within_deadline(async {
        job_queries::count_waiting(&state.db, WAITING_COUNT_CAP)
            .await
            .ok()
    });
    let agents = within_deadline(async { state.agents.count_by_health().await.ok() });
    let (database, redis, waiting, agents) = tokio::join!(database, redis, waiting, agents);
    Dependencies {
        database,
        redis,
        waiting,
        agents,
    }
}

pub async fn check(state: &AppState) -> HealthReport {
    let dependencies = state.health.dependencies(state).await;
    let Dependencies {
        database,
        redis,
        waiting,
        agents,
    } = dependencies.as_ref();
    let (database, redis, waiting) = (database.clone(), redis.clone(), *waiting);
    let queue = QueueCheck {
        status: match waiting {
            None => "unknown",
            Some(n) if n > QUEUE_DEGRADED_ABOVE => "degraded",
            Some(_) => "up",
        },
        waiting,
    };
    let worker = WorkerCheck {
        status: state.orders.worker_status().as_str(),
    };
    let agents = match agents {
        Some(counts) => AgentsCheck {
            status: "up",
            online: Some(counts.online),
            total: Some(counts.online + counts.degraded + counts.offline),
        },
        None => AgentsCheck {
            status: "unknown",
            online: None,
            total: None,
        },
    };
    let status = if database.status == "down" || redis.status == "down" || worker.status == "down" {
        "down"
    } else if queue.status != "up" || agents.status != "up" || worker.status == "starting" {
        "degraded"
    } else {
        "up"
    };
    HealthReport {
        status,
        version: env!("CARGO_PKG_VERSION"),
        checks: Checks {
            database,
            redis,
            queue,
            worker,
            agents,
        },
    }
}

async fn within_deadline<T>(check: impl Future<Output = Option<T>>) -> Option<T> {
    tokio::time::timeout(CHECK_DEADLINE, check)
        .await
        .ok()
        .flatten()
}

async fn probe(check: impl Future<Output = Result<(), String>>) -> Probe {
    let started = Instant::now();
    let result = tokio::time::timeout(CHECK_DEADLINE, check).await;
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!(
            "no answer within {} ms",
            CHECK_DEADLINE.as_millis()
        )),
    };
    Probe {
        status: if error.is_none() { "up" } else { "down" },
        latency_ms,
        error,
    }
}

/// The kind of failure, without addresses or credentials.
fn brief(error: &dyn std::error::Error) -> String {
    let text = error.to_string();
    let lower = text.to_ascii_lowercase();
    let kind = if lower.contains("refused") {
        "connection refused"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "timed out"
    } else if lower.contains("pool") {
        "connection pool exhausted or closed"
    } else {
        "error"
    };
    kind.to_owned()
}
