//! Order sync over HTTP: the agents' callback and the admin views of jobs, the dead-letter
//! queue and the circuit breakers.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::Validate;

use super::{
    breaker::BreakerSnapshot,
    dlq_queries::DlqEntry,
    job_queries::SyncJob,
    operations::Actor,
    operator_queries::{DlqSelection, NewAction},
    operator_routes::{OperatorHeader, check_range},
    service::CallbackStatus,
};
use crate::{
    domain::{VendorId, is_line, quote, schema, validate_line, validate_text},
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

/// Order callback
///
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
    /// Only this vendor's jobs.
    #[param(inline)]
    pub vendor_id: Option<VendorId>,
    /// Only jobs in this status (`awaiting_callback`: processing jobs the agent accepted
    /// with 202, waiting for its callback).
    #[param(inline)]
    pub status: Option<JobStatus>,
    /// Only this order's jobs.
    pub order_id: Option<Uuid>,
}

/// A sync job's status, as a filter (`awaiting_callback` is a processing job waiting for
/// its agent's callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    #[serde(rename = "awaiting_callback")]
    AwaitingCallback,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::AwaitingCallback => "awaiting_callback",
        }
    }
}

/// List sync jobs
///
/// Sync jobs, newest first, filtered by vendor, status and order, paginated.
/// `status=awaiting_callback` lists the processing jobs the agent accepted with 202 (each shows
/// `awaitingCallbackUntil`).
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

/// Get one sync job
///
/// One sync job: status, attempts spent, next retry, last agent error, and
/// `awaitingCallbackUntil` while its agent's callback is awaited. `GET
/// /api/admin/orders/{orderId}` has its attempts.
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

/// Re-sync an order
///
/// Sync an order again, by hand: a new job, queued at once, delivered under the order's
/// idempotency key. 409 while the order has a live job or is already in the ERP.
#[utoipa::path(
    post, path = "/api/admin/orders/{orderId}/sync", tag = "orders",
    params(
        ("orderId" = Uuid, Path, description = "Order id"),
        ("X-Operator" = Option<String>, Header, max_length = 100, description = "Who acts (recorded); default api-key"),
    ),
    responses(
        AdminErrors, PathErrors,
        (status = 422, description = "Invalid X-Operator header", body = ErrorBody),
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
    operator: OperatorHeader,
    Path(order_id): Path<Uuid>,
) -> Result<(StatusCode, Json<SyncJob>), AppError> {
    let job = state
        .orders
        .sync_order(order_id, correlation.as_str())
        .await?;
    let actor = operator.actor(None, None);
    state
        .orders
        .record(&NewAction {
            action: "resync",
            actor: &actor.name,
            vendor_id: Some(&job.vendor_id),
            order_id: Some(order_id),
            job_id: Some(job.id),
            ..NewAction::default()
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DlqFilter {
    /// Only this vendor's entries.
    #[param(inline)]
    pub vendor_id: Option<VendorId>,
    /// `false` (default): open entries; `true`: resolved ones.
    pub resolved: Option<bool>,
    /// Only entries created at or after this time (RFC 3339, e.g. 2026-11-28T06:00:00Z).
    pub since: Option<DateTime<Utc>>,
    /// Only entries created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only entries whose failure reason contains this text (case-insensitive substring,
    /// not a pattern), 1 to 200 characters.
    #[param(min_length = 1, max_length = 200)]
    pub reason: Option<String>,
}

/// List dead-letter entries
///
/// Dead-letter entries, newest first: open ones unless `resolved=true`, filtered by vendor,
/// creation time and failure reason.
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
    check_range(filter.since, filter.until)?;
    if let Some(reason) = &filter.reason
        && (reason.is_empty() || reason.chars().count() > 200 || !is_line(reason))
    {
        return Err(AppError::validation(
            "reason must be one line of 1 to 200 characters",
            json!({"reason": ["1 to 200 characters, one line"]}),
        ));
    }
    let selection = DlqSelection {
        vendor_id: filter.vendor_id.as_deref(),
        reason: filter.reason.as_deref(),
        since: filter.since,
        until: filter.until,
        resolved: filter.resolved.unwrap_or(false),
    };
    Ok(Json(
        state
            .orders
            .dead_letters_matching(&selection, pagination.check()?)
            .await?,
    ))
}

/// Get one dead-letter entry
///
/// One dead-letter entry, with its payload, failure reason, and how and by whom it was resolved
/// (note and ERP reference included).
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RetryOptions {
    /// Retry even while the vendor's circuit breaker is open or its agent offline.
    pub force: Option<bool>,
    /// Why (recorded with the action), at most 500 characters.
    #[param(max_length = 500)]
    pub note: Option<String>,
}

/// Retry one dead-letter entry
///
/// Retry a dead-letter entry as a new job, queued at once; the entry records the new job.
/// Refused (409, saying why) while the vendor's breaker is open or its agent offline, unless
/// `force=true`. Recorded with its actor (`X-Operator`, else `api-key`) and `note`.
#[utoipa::path(
    post, path = "/api/admin/dlq/{id}/retry", tag = "orders",
    params(
        ("id" = Uuid, Path, description = "Entry id"),
        RetryOptions,
        ("X-Operator" = Option<String>, Header, max_length = 100, description = "Who acts (recorded); default api-key"),
    ),
    responses(
        AdminErrors, PathErrors, QueryErrors,
        (status = 201, description = "New job created", body = RetryAnswer),
        (status = 404, description = "No such entry", body = ErrorBody),
        (status = 409, description = "Already resolved, the order has a live job or its ERP reference, or the vendor's breaker is open or agent offline (send force=true)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn retry_dead_letter(
    _: AdminAuth,
    State(state): State<AppState>,
    correlation: CorrelationId,
    operator: OperatorHeader,
    Path(id): Path<Uuid>,
    Query(options): Query<RetryOptions>,
) -> Result<(StatusCode, Json<RetryAnswer>), AppError> {
    if let Some(note) = &options.note
        && (note.chars().count() > 500 || !is_line(note))
    {
        return Err(AppError::validation(
            "note must be one line of at most 500 characters",
            json!({"note": ["at most 500 characters, one line"]}),
        ));
    }
    let actor = operator.actor(None, options.note);
    let (entry, job) = state
        .orders
        .retry_dead_letter_by(
            id,
            correlation.as_str(),
            options.force.unwrap_or(false),
            &actor,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(RetryAnswer { entry, job })))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"resolvedBy": "alice", "note": "entered by hand in the ERP", "erpReference": "ERP-2026-0042"}))]
pub struct Resolve {
    /// Who resolved it (an operator's name or id), one line.
    #[validate(length(min = 1, max = 100), custom(function = "validate_line"))]
    #[schema(schema_with = schema::line::<1, 100>)]
    pub resolved_by: String,
    /// Why, or what was done (kept on the entry and in the action record).
    #[validate(length(max = 2000), custom(function = "validate_text"))]
    #[schema(schema_with = schema::optional_text::<2000>)]
    pub note: Option<String>,
    /// The order's reference in the ERP, when it was entered there by hand (kept on the entry).
    #[validate(length(min = 1, max = 100), custom(function = "validate_line"))]
    #[schema(schema_with = schema::optional_line::<1, 100>)]
    pub erp_reference: Option<String>,
}

/// Resolve one dead-letter entry
///
/// Mark a dead-letter entry resolved (handled outside erp-sync); `note` and `erpReference`
/// are kept on the entry, and the action is recorded with `resolvedBy` as its actor.
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
    let actor = Actor {
        name: body.resolved_by,
        note: body.note,
    };
    Ok(Json(
        state
            .orders
            .resolve_dead_letter_by(id, &actor, body.erp_reference.as_deref())
            .await?,
    ))
}

/// List circuit breakers
///
/// Circuit breakers per vendor and API, as every live replica sees them: state (what a call
/// would meet now), counts over the window and, while OPEN, `nextProbeAt`. Each replica keeps
/// its own breakers; `replicas` lists each live replica's view (others' as they published it at
/// most 2 s ago), and the fields around it merge them: the worst state, the counts summed. With
/// Redis unreachable, only the answering replica's view.
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

/// Reset a circuit breaker
///
/// Close a circuit breaker and clear its counts, on every replica: applied by the answering
/// replica at once and announced to the others (Postgres NOTIFY), which reset theirs as soon as
/// they hear it. Resetting an `orders` breaker makes the vendor's orders that waited for it due
/// at once. Recorded with its actor (`X-Operator`, else `api-key`). 404 when no live replica
/// has this breaker.
#[utoipa::path(
    post, path = "/api/admin/circuit-breakers/{vendorId}/{apiType}/reset", tag = "orders",
    params(
        ("vendorId" = inline(VendorId), Path, description = "Vendor id"),
        ("apiType" = String, Path, max_length = 50, description = "API, e.g. orders"),
        ("X-Operator" = Option<String>, Header, max_length = 100, description = "Who acts (recorded); default api-key"),
    ),
    responses(
        AdminErrors, PathErrors,
        (status = 422, description = "Invalid X-Operator header", body = ErrorBody),
        (status = 200, description = "Reset", body = BreakerReset),
        (status = 404, description = "No such breaker", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn reset_circuit_breaker(
    _: AdminAuth,
    State(state): State<AppState>,
    operator: OperatorHeader,
    Path((vendor_id, api_type)): Path<(VendorId, String)>,
) -> Result<Json<BreakerReset>, AppError> {
    let views = &state.breaker_views;
    if views.known(&vendor_id, &api_type).await {
        let live_replicas = views.live_replicas().await;
        let broadcast = views.broadcast_reset(&vendor_id, &api_type).await;
        let actor = operator.actor(None, None);
        state
            .orders
            .record(&NewAction {
                action: "breaker_reset",
                actor: &actor.name,
                vendor_id: Some(&vendor_id),
                details: Some(json!({"apiType": api_type})),
                ..NewAction::default()
            })
            .await?;
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
