//! `GET /metrics` (Prometheus, no auth) and the admin metrics routes.

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    prometheus::CONTENT_TYPE,
    service::{AgentUptime, SyncMetrics},
};
use crate::{
    domain::VendorId,
    error::{AppError, ErrorBody},
    http::{
        auth::AdminAuth,
        extract::{Page, Pagination, Path, Query},
        responses::{AdminErrors, PathErrors, QueryErrors},
    },
    reconciliation::queries::ReconciliationMetrics,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(prometheus))
        .routes(routes!(agent_metrics))
        .routes(routes!(reconciliation_metrics))
        .routes(routes!(sync_metrics))
}

/// Prometheus metrics
///
/// Prometheus text exposition. Unauthenticated, like `/health`: it carries no vendor ids,
/// only counts by route template, status, kind and outcome. 404 when `METRICS_ENABLED=false`.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 404, description = "Metrics are disabled", body = ErrorBody),
    )
)]
async fn prometheus(State(state): State<AppState>) -> Result<Response, AppError> {
    if !state.settings.metrics_enabled {
        return Err(AppError::not_found(
            "metrics are disabled (METRICS_ENABLED=false)",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.prometheus.encode(),
    )
        .into_response())
}

/// Order-sync metrics of a vendor
///
/// A vendor's order sync: jobs by status, success and retry rates (%), mean and p95 latency
/// from creation to completion (ms).
#[utoipa::path(
    get, path = "/api/admin/metrics/{vendorId}", tag = "ops",
    params(("vendorId" = inline(VendorId), Path, description = "Vendor id")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "The vendor's figures (zeros when it has no jobs)", body = SyncMetrics),
    ),
    security(("api_key" = []))
)]
async fn sync_metrics(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(vendor_id): Path<VendorId>,
) -> Result<Json<SyncMetrics>, AppError> {
    Ok(Json(state.metrics.sync(&vendor_id).await?))
}

/// Reconciliation metrics of a vendor
///
/// A vendor's reconciliation: events by type, the latest event, and the share of runs that
/// found drift (%).
#[utoipa::path(
    get, path = "/api/admin/metrics/reconciliation/{vendorId}", tag = "ops",
    params(("vendorId" = inline(VendorId), Path, description = "Vendor id")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "The vendor's figures", body = ReconciliationMetrics),
    ),
    security(("api_key" = []))
)]
async fn reconciliation_metrics(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(vendor_id): Path<VendorId>,
) -> Result<Json<ReconciliationMetrics>, AppError> {
    Ok(Json(state.metrics.reconciliation(&vendor_id).await?))
}

/// Agent uptime
///
/// Agents with their health and their uptime over the last 24 hours, by vendor id.
#[utoipa::path(
    get, path = "/api/admin/metrics/agents", tag = "ops",
    params(Pagination),
    responses(
        AdminErrors, QueryErrors,
        (status = 200, description = "A page of agents", body = Page<AgentUptime>),
    ),
    security(("api_key" = []))
)]
async fn agent_metrics(
    _: AdminAuth,
    State(state): State<AppState>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<Page<AgentUptime>>, AppError> {
    Ok(Json(state.metrics.agents(pagination.check()?).await?))
}
