//! `/api/admin/reconciliation/*` (admin key).

use axum::{Json, extract::State, http::StatusCode};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    model::{EventFilter, RunStarted, TriggerReconciliation},
    queries::ReconciliationEvent,
};
use crate::{
    error::{AppError, ErrorBody},
    http::{
        auth::AdminAuth,
        extract::{Page, Pagination, Query, ValidJson, validate},
        responses::{AdminErrors, JsonBodyErrors, QueryErrors},
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(trigger))
        .routes(routes!(list_events))
}

/// Trigger a reconciliation
///
/// Start a reconciliation of a vendor's items against its ERP. It runs in the background;
/// its events (`GET /api/admin/reconciliation/events?vendorId=`) carry `summary.runId`.
#[utoipa::path(
    post, path = "/api/admin/reconciliation/trigger", tag = "reconciliation",
    request_body = TriggerReconciliation,
    responses(
        AdminErrors, JsonBodyErrors,
        (status = 202, description = "Run started", body = RunStarted),
        (status = 404, description = "No agent registered for this vendor", body = ErrorBody),
        (status = 409, description = "A run for this vendor is in progress, or its agent is offline or deregistered", body = ErrorBody),
        (status = 503, description = "AGENT_SECRET is not set, or the service is shutting down", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn trigger(
    _: AdminAuth,
    State(state): State<AppState>,
    ValidJson(request): ValidJson<TriggerReconciliation>,
) -> Result<(StatusCode, Json<RunStarted>), AppError> {
    let run_id = state.reconciliation.trigger(&request.vendor_id).await?;
    Ok((StatusCode::ACCEPTED, Json(RunStarted { run_id })))
}

/// List reconciliation events
///
/// Reconciliation events (`full_checksum`, `drift_detected`, `drift_resolved`), newest first,
/// filtered by vendor and type, paginated; each `summary` carries its run id and counts.
#[utoipa::path(
    get, path = "/api/admin/reconciliation/events", tag = "reconciliation",
    params(EventFilter, Pagination),
    responses(
        AdminErrors, QueryErrors,
        (status = 200, description = "A page of events", body = Page<ReconciliationEvent>),
    ),
    security(("api_key" = []))
)]
async fn list_events(
    _: AdminAuth,
    State(state): State<AppState>,
    Query(filter): Query<EventFilter>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<Page<ReconciliationEvent>>, AppError> {
    validate(&filter)?;
    Ok(Json(
        state
            .reconciliation
            .events(&filter, pagination.check()?)
            .await?,
    ))
}
