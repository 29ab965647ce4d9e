//! `/api/admin/scheduler`: the jobs with their last and next runs; run one now.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{JobName, JobOverview, JobRun};
use crate::{
    error::{AppError, ErrorBody},
    http::{
        auth::AdminAuth,
        extract::Path,
        responses::{AdminErrors, PathErrors},
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_scheduled_jobs))
        .routes(routes!(run_scheduled_job))
}

/// List scheduled jobs
///
/// Every scheduled job: its schedule, its last run (any replica) and its next run.
#[utoipa::path(
    get, path = "/api/admin/scheduler", tag = "ops",
    responses(
        AdminErrors,
        (status = 200, description = "The six jobs", body = Vec<JobOverview>),
    ),
    security(("api_key" = []))
)]
async fn list_scheduled_jobs(
    _: AdminAuth,
    State(state): State<AppState>,
) -> Result<Json<Vec<JobOverview>>, AppError> {
    Ok(Json(state.scheduler.overview().await?))
}

/// Run a scheduled job now
///
/// Run a job now and answer with its run (also when the job itself failed: see `status`).
/// A run that outlasts the request goes on and is recorded.
#[utoipa::path(
    post, path = "/api/admin/scheduler/{name}/run", tag = "ops",
    params(("name" = inline(JobName), Path, description = "Job name, e.g. check-dlq")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "The finished run", body = JobRun),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is running (on this or another replica)", body = ErrorBody),
        (status = 503, description = "The service is shutting down", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn run_scheduled_job(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<JobRun>, AppError> {
    let job = JobName::parse(&name).ok_or_else(|| {
        AppError::not_found(format!(
            "no such scheduled job; the jobs are {}",
            JobName::ALL.map(JobName::as_str).join(", ")
        ))
    })?;
    Ok(Json(state.scheduler.run_now(job).await?))
}
