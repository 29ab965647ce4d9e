//! `GET /health`: Postgres and Redis, each with its status and latency, checked concurrently
//! under a deadline so the endpoint answers in ~2 s even when one of them hangs.

use std::time::{Duration, Instant};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{orders::WorkerStatus, state::AppState};

const CHECK_DEADLINE: Duration = Duration::from_millis(1500);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok` when every required subsystem answers, `unavailable` otherwise.
    pub status: &'static str,
    pub version: &'static str,
    pub checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub postgres: Check,
    pub redis: Check,
    pub worker: WorkerCheck,
}

/// This process's order-sync worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerCheck {
    /// `up`, `starting`, `down` (dead, stalled or cut off from Redis: being restarted) or
    /// `disabled` (not run by this process).
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// `up` or `down`.
    pub status: &'static str,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn from_result(
        started: Instant,
        result: Result<Result<(), String>, tokio::time::error::Elapsed>,
    ) -> Self {
        let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!(
                "no answer within {} ms",
                CHECK_DEADLINE.as_millis()
            )),
        };
        Self {
            status: if error.is_none() { "up" } else { "down" },
            latency_ms,
            error,
        }
    }

    pub fn is_up(&self) -> bool {
        self.status == "up"
    }
}

/// Liveness and readiness: 200 when Postgres and Redis answer and the order-sync worker is
/// not down, 503 otherwise.
#[utoipa::path(
    get, path = "/health", tag = "ops",
    responses(
        (status = 200, description = "Every subsystem answers", body = HealthReport),
        (status = 503, description = "A subsystem is down", body = HealthReport),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let report = check(&state).await;
    let status = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

pub async fn check(state: &AppState) -> HealthReport {
    let postgres = async {
        let started = Instant::now();
        let result = tokio::time::timeout(CHECK_DEADLINE, async {
            sqlx::query("SELECT 1")
                .execute(&state.db)
                .await
                .map(drop)
                .map_err(|e| brief(&e))
        })
        .await;
        Check::from_result(started, result)
    };
    let redis = async {
        let started = Instant::now();
        let result = tokio::time::timeout(CHECK_DEADLINE, async {
            let mut conn = state.redis.connection().await.map_err(|e| brief(&e))?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| brief(&e))
        })
        .await;
        Check::from_result(started, result)
    };
    let (postgres, redis) = tokio::join!(postgres, redis);
    let worker = state.orders.worker_status();
    let status = if postgres.is_up() && redis.is_up() && worker != WorkerStatus::Down {
        "ok"
    } else {
        "unavailable"
    };
    HealthReport {
        status,
        version: env!("CARGO_PKG_VERSION"),
        checks: Checks {
            postgres,
            redis,
            worker: WorkerCheck {
                status: worker.as_str(),
            },
        },
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
