//! Operators' routes: an order's timeline and the bulk dead-letter actions. Every action
//! names its actor: the body's `actor`, else the `X-Operator` header, else `api-key`.

use axum::{Json, extract::State, http::request::Parts};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::Validate;

use super::{
    operations::{Actor, BulkResult, OrderTimeline},
    operator_queries::DlqSelection,
};
use crate::{
    domain::{VendorId, is_line, schema, validate_line, validate_text},
    error::{AppError, ErrorBody},
    http::{
        auth::AdminAuth,
        correlation::CorrelationId,
        extract::{Path, ValidJson},
        responses::{AdminErrors, JsonBodyErrors, PathErrors},
    },
    state::AppState,
};

pub const OPERATOR_HEADER: &str = "x-operator";
const DEFAULT_ACTOR: &str = "api-key";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(order_timeline))
        .routes(routes!(bulk_retry))
        .routes(routes!(bulk_resolve))
}

/// The operator named by the `X-Operator` header (one line, 1–100 characters), if any.
pub struct OperatorHeader(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OperatorHeader {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(OPERATOR_HEADER) else {
            return Ok(Self(None));
        };
        let name = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.chars().count() <= 100 && is_line(v))
            .ok_or_else(|| {
                AppError::validation(
                    "X-Operator must be one line of 1 to 100 visible characters",
                    json!({"X-Operator": ["invalid"]}),
                )
            })?;
        Ok(Self(Some(name.to_owned())))
    }
}

impl OperatorHeader {
    /// The actor of an action: `body_actor`, else this header, else `api-key`.
    pub fn actor(self, body_actor: Option<String>, note: Option<String>) -> Actor {
        Actor {
            name: body_actor
                .or(self.0)
                .unwrap_or_else(|| DEFAULT_ACTOR.to_owned()),
            note,
        }
    }
}

/// What happened to an order
///
/// Everything that happened to one order: its jobs, every attempt (time, duration, the
/// agent's status or error, correlation id), its agent's callbacks, its dead-letter entries
/// and what operators did, as lists and as one time-sorted `events` story.
#[utoipa::path(
    get, path = "/api/admin/orders/{orderId}", tag = "operators",
    operation_id = "order_timeline",
    params(("orderId" = Uuid, Path, description = "The marketplace order's id")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "The order's timeline", body = OrderTimeline),
        (status = 404, description = "No such order", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn order_timeline(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> Result<Json<OrderTimeline>, AppError> {
    Ok(Json(state.orders.order_timeline(order_id).await?))
}

/// Which unresolved dead-letter entries a bulk action covers, and who asks.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "vendorId": "vendor-bad", "reason": "HTTP 500", "since": "2026-11-27T00:00:00Z",
    "dryRun": true, "actor": "alice", "note": "agent fixed after ERP upgrade"
}))]
pub struct BulkAction {
    /// Only this vendor's entries.
    #[schema(inline)]
    pub vendor_id: Option<VendorId>,
    /// Only entries whose failure reason contains this text (case-insensitive substring,
    /// not a pattern).
    #[validate(length(min = 1, max = 200), custom(function = "validate_line"))]
    #[schema(schema_with = schema::optional_line::<1, 200>)]
    pub reason: Option<String>,
    /// Only entries created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only entries created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// `true`: change nothing, list exactly the entries a real run would change.
    #[serde(default)]
    pub dry_run: bool,
    /// Retry only: send even while the vendor's breaker is open or its agent offline.
    #[serde(default)]
    pub force: bool,
    /// Who acts (recorded with every change); else the `X-Operator` header, else `api-key`.
    #[validate(length(min = 1, max = 100), custom(function = "validate_line"))]
    #[schema(schema_with = schema::optional_line::<1, 100>)]
    pub actor: Option<String>,
    /// Why (recorded with every change).
    #[validate(length(max = 2000), custom(function = "validate_text"))]
    #[schema(schema_with = schema::optional_text::<2000>)]
    pub note: Option<String>,
}

impl BulkAction {
    fn selection(&self) -> Result<DlqSelection<'_>, AppError> {
        if self.vendor_id.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
        {
            return Err(AppError::validation(
                "name at least one of vendorId, reason, since, until: a bulk action never covers every entry by default",
                json!({"vendorId": ["at least one filter is required"]}),
            ));
        }
        check_range(self.since, self.until)?;
        Ok(DlqSelection {
            vendor_id: self.vendor_id.as_deref(),
            reason: self.reason.as_deref(),
            since: self.since,
            until: self.until,
            resolved: false,
        })
    }
}

/// `since` must come before `until`, and both within what Postgres stores.
pub fn check_range(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<(), AppError> {
    let earliest = crate::ingest::rules::earliest_timestamp();
    for (name, at) in [("since", since), ("until", until)] {
        if at.is_some_and(|at| at < earliest) {
            return Err(AppError::validation(
                format!("{name} is before 4714 BC"),
                json!({ name: ["must be after 4714-11-24T00:00:00Z BC"] }),
            ));
        }
    }
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(AppError::validation(
            "since must be before until",
            json!({"since": ["must be before until"]}),
        ));
    }
    Ok(())
}

/// Retry dead-letter entries in bulk
///
/// Retry, as new jobs, every unresolved dead-letter entry matching the filter whose order can
/// take one (it exists, is not in the ERP, has no live job): oldest first, at most 1 000 per
/// call (`more` says when to call again). `dryRun` lists exactly what a real run would then
/// change. Refused with 409 while a concerned vendor's circuit breaker is open or its agent
/// offline (a retry would only fail again), unless `force`.
#[utoipa::path(
    post, path = "/api/admin/dlq/retry", tag = "operators",
    operation_id = "bulk_retry_dead_letters",
    request_body = BulkAction,
    params(("X-Operator" = Option<String>, Header, max_length = 100, description = "Who acts, when the body has no actor")),
    responses(
        AdminErrors, JsonBodyErrors,
        (status = 200, description = "What was retried (or would be, in a dry run)", body = BulkResult),
        (status = 409, description = "A concerned vendor's breaker is open or its agent offline (send force), or an entry changed meanwhile", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn bulk_retry(
    _: AdminAuth,
    State(state): State<AppState>,
    correlation: CorrelationId,
    operator: OperatorHeader,
    ValidJson(body): ValidJson<BulkAction>,
) -> Result<Json<BulkResult>, AppError> {
    let selection = body.selection()?;
    let actor = operator.actor(body.actor.clone(), body.note.clone());
    Ok(Json(
        state
            .orders
            .bulk_retry(
                &selection,
                body.dry_run,
                body.force,
                &actor,
                correlation.as_str(),
            )
            .await?,
    ))
}

/// Resolve dead-letter entries in bulk
///
/// Resolve (handled outside erp-sync) every unresolved dead-letter entry matching the
/// filter: oldest first, at most 1 000 per call. `dryRun` lists exactly what a real run
/// would then change. `force` is ignored here.
#[utoipa::path(
    post, path = "/api/admin/dlq/resolve", tag = "operators",
    operation_id = "bulk_resolve_dead_letters",
    request_body = BulkAction,
    params(("X-Operator" = Option<String>, Header, max_length = 100, description = "Who acts, when the body has no actor")),
    responses(
        AdminErrors, JsonBodyErrors,
        (status = 200, description = "What was resolved (or would be, in a dry run)", body = BulkResult),
    ),
    security(("api_key" = []))
)]
async fn bulk_resolve(
    _: AdminAuth,
    State(state): State<AppState>,
    operator: OperatorHeader,
    ValidJson(body): ValidJson<BulkAction>,
) -> Result<Json<BulkResult>, AppError> {
    let selection = body.selection()?;
    let actor = operator.actor(body.actor.clone(), body.note.clone());
    Ok(Json(
        state
            .orders
            .bulk_resolve(&selection, body.dry_run, &actor)
            .await?,
    ))
}
