//! Order sync over HTTP: the agents' callback and the admin views of jobs, the dead-letter
//! queue and the circuit breakers.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::Validate;

use super::{
    breaker::BreakerSnapshot, dlq_queries::DlqEntry, job_queries::SyncJob, service::CallbackStatus,
};
use crate::{
    domain::validate_vendor_id,
    error::{AppError, ErrorBody},
    http::{
        auth::{AdminAuth, AgentJson},
        correlation::CorrelationId,
        extract::{Page, Pagination, Path, Query, ValidJson},
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(callback))
        .routes(routes!(list_jobs))
        .routes(routes!(job_status))
        .routes(routes!(sync_order))
        .routes(routes!(list_dead_letters))
        .routes(routes!(dead_letter))
        .routes(routes!(retry_dead_letter))
        .routes(routes!(resolve_dead_letter))
        .routes(routes!(circuit_breakers))
        .routes(routes!(reset_circuit_breaker))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CallbackOutcome {
    Completed,
    Failed,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    #[validate(custom(function = "validate_vendor_id"))]
    pub vendor_id: String,
    pub job_id: Uuid,
    pub status: CallbackOutcome,
    #[validate(length(min = 1, max = 100), custom(function = "printable_text"))]
    pub erp_reference: Option<String>,
    #[validate(length(max = 2000))]
    pub error: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// What an order's `erp_reference` (and a log line) can hold: no control characters.
fn printable_text(value: &str) -> Result<(), validator::ValidationError> {
    if value.chars().any(char::is_control) {
        let mut error = validator::ValidationError::new("printable");
        error.message = Some("must not contain control characters".into());
        return Err(error);
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackAnswer {
    pub job_id: Uuid,
    /// The job's status after the callback.
    pub status: String,
    pub erp_reference: Option<String>,
}

/// An agent reports the outcome of an order it accepted with 202. Idempotent: a repeated
/// callback changes nothing. A late `completed` (the job failed, was dead-lettered or
/// superseded meanwhile) still records the ERP reference and resolves the order's
/// dead-letter entries; a late `failed` never undoes a completion.
#[utoipa::path(
    post, path = "/api/agents/callback", tag = "orders",
    request_body = Callback,
    responses(
        (status = 200, description = "The job after the callback", body = CallbackAnswer),
        (status = 401, description = "Missing or invalid agent token", body = ErrorBody),
        (status = 403, description = "The job belongs to another vendor", body = ErrorBody),
        (status = 404, description = "Unknown vendor or job", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    ),
    security(("agent_token" = []))
)]
async fn callback(
    State(state): State<AppState>,
    request: AgentJson<Callback>,
) -> Result<Json<CallbackAnswer>, AppError> {
    let body = request.body;
    let status = match body.status {
        CallbackOutcome::Completed => CallbackStatus::Completed,
        CallbackOutcome::Failed => CallbackStatus::Failed,
    };
    let job = state
        .orders
        .callback(
            &request.agent.vendor_id,
            body.job_id,
            status,
            body.erp_reference.as_deref(),
            body.error.as_deref(),
        )
        .await?;
    Ok(Json(CallbackAnswer {
        job_id: job.id,
        status: job.status,
        erp_reference: job.erp_reference,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    pub vendor_id: Option<String>,
    /// pending, processing, completed, failed or cancelled.
    pub status: Option<String>,
    pub order_id: Option<Uuid>,
}

/// Sync jobs, newest first, filtered and paginated.
#[utoipa::path(
    get, path = "/api/admin/sync-jobs", tag = "orders",
    params(JobFilter, Pagination),
    responses(
        (status = 200, description = "A page of jobs", body = Page<SyncJob>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn list_jobs(
    _: AdminAuth,
    State(state): State<AppState>,
    Query(filter): Query<JobFilter>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<Page<SyncJob>>, AppError> {
    let page = state
        .orders
        .jobs(
            filter.vendor_id.as_deref(),
            filter.status.as_deref(),
            filter.order_id,
            pagination.check()?,
        )
        .await?;
    Ok(Json(page))
}

/// One job.
#[utoipa::path(
    get, path = "/api/admin/sync-status/{jobId}", tag = "orders",
    params(("jobId" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = SyncJob),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn job_status(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(job_id): Path<Uuid>,
) -> Result<Json<SyncJob>, AppError> {
    Ok(Json(state.orders.job(job_id).await?))
}

/// Sync an order again, by hand: a new job, queued at once, delivered under the order's
/// idempotency key. 409 while the order has a live job or is already in the ERP.
#[utoipa::path(
    post, path = "/api/admin/orders/{orderId}/sync", tag = "orders",
    params(("orderId" = Uuid, Path, description = "Order id")),
    responses(
        (status = 202, description = "Job created and queued", body = SyncJob),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order has a live job, or already has its ERP reference", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn sync_order(
    _: AdminAuth,
    State(state): State<AppState>,
    correlation: CorrelationId,
    Path(order_id): Path<Uuid>,
) -> Result<(StatusCode, Json<SyncJob>), AppError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(
            state
                .orders
                .sync_order(order_id, correlation.as_str())
                .await?,
        ),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DlqFilter {
    pub vendor_id: Option<String>,
}

/// Unresolved dead-letter entries, newest first.
#[utoipa::path(
    get, path = "/api/admin/dlq", tag = "orders",
    params(DlqFilter, Pagination),
    responses(
        (status = 200, description = "A page of entries", body = Page<DlqEntry>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn list_dead_letters(
    _: AdminAuth,
    State(state): State<AppState>,
    Query(filter): Query<DlqFilter>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<Page<DlqEntry>>, AppError> {
    Ok(Json(
        state
            .orders
            .dead_letters(filter.vendor_id.as_deref(), pagination.check()?)
            .await?,
    ))
}

/// One dead-letter entry, with its payload.
#[utoipa::path(
    get, path = "/api/admin/dlq/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "Entry id")),
    responses(
        (status = 200, description = "The entry", body = DlqEntry),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn dead_letter(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<DlqEntry>, AppError> {
    Ok(Json(state.orders.dead_letter_entry(id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryAnswer {
    pub entry: DlqEntry,
    pub job: SyncJob,
}

/// Retry a dead-letter entry as a new job, queued at once; the entry records the new job.
#[utoipa::path(
    post, path = "/api/admin/dlq/{id}/retry", tag = "orders",
    params(("id" = Uuid, Path, description = "Entry id")),
    responses(
        (status = 201, description = "New job created", body = RetryAnswer),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody),
        (status = 409, description = "Already resolved, or the order has a live job or its ERP reference", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn retry_dead_letter(
    _: AdminAuth,
    State(state): State<AppState>,
    correlation: CorrelationId,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<RetryAnswer>), AppError> {
    let (entry, job) = state
        .orders
        .retry_dead_letter(id, correlation.as_str())
        .await?;
    Ok((StatusCode::CREATED, Json(RetryAnswer { entry, job })))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resolve {
    /// Who resolved it (an operator's name or id).
    #[validate(length(min = 1, max = 100))]
    pub resolved_by: String,
}

/// Mark a dead-letter entry resolved (handled outside erp-sync).
#[utoipa::path(
    post, path = "/api/admin/dlq/{id}/resolve", tag = "orders",
    params(("id" = Uuid, Path, description = "Entry id")),
    request_body = Resolve,
    responses(
        (status = 200, description = "Resolved", body = DlqEntry),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn resolve_dead_letter(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<Resolve>,
) -> Result<Json<DlqEntry>, AppError> {
    Ok(Json(
        state
            .orders
            .resolve_dead_letter(id, &body.resolved_by)
            .await?,
    ))
}

/// Circuit breakers of this process, per vendor and API.
#[utoipa::path(
    get, path = "/api/admin/circuit-breakers", tag = "orders",
    responses(
        (status = 200, description = "Every breaker with its state and counts", body = Vec<BreakerSnapshot>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn circuit_breakers(
    _: AdminAuth,
    State(state): State<AppState>,
) -> Json<Vec<BreakerSnapshot>> {
    Json(state.orders.breakers().snapshot().await)
}

/// Close a circuit breaker and clear its counts.
#[utoipa::path(
    post, path = "/api/admin/circuit-breakers/{vendorId}/{apiType}/reset", tag = "orders",
    params(("vendorId" = String, Path, description = "Vendor id"), ("apiType" = String, Path, description = "API, e.g. orders")),
    responses(
        (status = 200, description = "Reset"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such breaker", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn reset_circuit_breaker(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((vendor_id, api_type)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    if state.orders.breakers().reset(&vendor_id, &api_type).await {
        Ok(Json(
            serde_json::json!({"vendorId": vendor_id, "apiType": api_type, "state": "CLOSED"}),
        ))
    } else {
        Err(AppError::not_found(format!(
            "no circuit breaker for {vendor_id}:{api_type}"
        )))
    }
}
