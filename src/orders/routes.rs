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
    domain::{VendorId, quote, schema, validate_line, validate_text},
    error::{AppError, ErrorBody},
    http::{
        auth::{AdminAuth, AgentJson},
        correlation::CorrelationId,
        extract::{Page, Pagination, Path, Query, ValidJson},
        responses::{AdminErrors, AgentErrors, JsonBodyErrors, PathErrors, QueryErrors},
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
    pub vendor_id: VendorId,
    pub job_id: Uuid,
    pub status: CallbackOutcome,
    /// The order's reference in the ERP (required when `completed`), one line.
    #[validate(length(min = 1, max = 100), custom(function = "validate_line"))]
    #[schema(schema_with = schema::optional_line::<1, 100>)]
    pub erp_reference: Option<String>,
    /// Why the ERP refused the order (`failed`); tabs and line breaks allowed.
    #[validate(length(max = 2000), custom(function = "validate_text"))]
    #[schema(schema_with = schema::optional_text::<2000>)]
    pub error: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
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
        AgentErrors, JsonBodyErrors,
        (status = 200, description = "The job after the callback", body = CallbackAnswer),
        (status = 403, description = "The job belongs to another vendor", body = ErrorBody),
        (status = 404, description = "Unknown vendor or job", body = ErrorBody),
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
    #[param(inline)]
    pub vendor_id: Option<VendorId>,
    #[param(inline)]
    pub status: Option<JobStatus>,
    pub order_id: Option<Uuid>,
}

/// A sync job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Sync jobs, newest first, filtered and paginated.
#[utoipa::path(
    get, path = "/api/admin/sync-jobs", tag = "orders",
    params(JobFilter, Pagination),
    responses(
        AdminErrors, QueryErrors,
        (status = 200, description = "A page of jobs", body = Page<SyncJob>),
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
            filter.status.map(JobStatus::as_str),
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
        AdminErrors, PathErrors,
        (status = 200, description = "The job", body = SyncJob),
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
        AdminErrors, PathErrors,
        (status = 202, description = "Job created and queued", body = SyncJob),
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
    #[param(inline)]
    pub vendor_id: Option<VendorId>,
}

/// Unresolved dead-letter entries, newest first.
#[utoipa::path(
    get, path = "/api/admin/dlq", tag = "orders",
    params(DlqFilter, Pagination),
    responses(
        AdminErrors, QueryErrors,
        (status = 200, description = "A page of entries", body = Page<DlqEntry>),
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
        AdminErrors, PathErrors,
        (status = 200, description = "The entry", body = DlqEntry),
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
        AdminErrors, PathErrors,
        (status = 201, description = "New job created", body = RetryAnswer),
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
    /// Who resolved it (an operator's name or id), one line.
    #[validate(length(min = 1, max = 100), custom(function = "validate_line"))]
    #[schema(schema_with = schema::line::<1, 100>)]
    pub resolved_by: String,
}

/// Mark a dead-letter entry resolved (handled outside erp-sync).
#[utoipa::path(
    post, path = "/api/admin/dlq/{id}/resolve", tag = "orders",
    params(("id" = Uuid, Path, description = "Entry id")),
    request_body = Resolve,
    responses(
        AdminErrors, PathErrors, JsonBodyErrors,
        (status = 200, description = "Resolved", body = DlqEntry),
        (status = 404, description = "No such entry", body = ErrorBody),
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

/// Circuit breakers per vendor and API, as every live replica sees them.
///
/// Each replica keeps its own breakers; `replicas` lists each live replica's view (others' as
/// they published it at most 2 s ago), and the fields around it merge them: the worst state,
/// the counts summed. With Redis unreachable, only the answering replica's view.
#[utoipa::path(
    get, path = "/api/admin/circuit-breakers", tag = "orders",
    responses(
        AdminErrors,
        (status = 200, description = "Every breaker with its state and counts", body = Vec<BreakerSnapshot>),
    ),
    security(("api_key" = []))
)]
async fn circuit_breakers(
    _: AdminAuth,
    State(state): State<AppState>,
) -> Json<Vec<BreakerSnapshot>> {
    Json(state.breaker_views.merged().await)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerReset {
    pub vendor_id: VendorId,
    pub api_type: String,
    /// Always `CLOSED`.
    pub state: &'static str,
    /// Whether the reset was announced to the other replicas (each resets its own breaker
    /// when it hears it); `false`: only the answering replica was reset.
    pub broadcast: bool,
    /// Replicas publishing their breakers when the reset was made, the answering one
    /// included: those the announcement reaches.
    pub live_replicas: usize,
}

/// Close a circuit breaker and clear its counts, on every replica.
///
/// Applied by the answering replica at once and announced to the others (Postgres NOTIFY),
/// which reset theirs as soon as they hear it. Resetting an `orders` breaker makes the vendor's
/// orders that waited for it due at once. 404 when no live replica has this breaker.
#[utoipa::path(
    post, path = "/api/admin/circuit-breakers/{vendorId}/{apiType}/reset", tag = "orders",
    params(("vendorId" = inline(VendorId), Path, description = "Vendor id"), ("apiType" = String, Path, max_length = 50, description = "API, e.g. orders")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "Reset", body = BreakerReset),
        (status = 404, description = "No such breaker", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn reset_circuit_breaker(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((vendor_id, api_type)): Path<(VendorId, String)>,
) -> Result<Json<BreakerReset>, AppError> {
    let views = &state.breaker_views;
    if views.known(&vendor_id, &api_type).await {
        let live_replicas = views.live_replicas().await;
        let broadcast = views.broadcast_reset(&vendor_id, &api_type).await;
        Ok(Json(BreakerReset {
            vendor_id,
            api_type,
            state: "CLOSED",
            broadcast,
            live_replicas,
        }))
    } else {
        Err(AppError::not_found(format!(
            "no circuit breaker for {vendor_id}:{}",
            quote(&api_type)
        )))
    }
}
