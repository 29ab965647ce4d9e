//! `/api/agents/*`: registration, heartbeat, admin views, deregistration.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    model::{AgentHealth, AgentView, Heartbeat, RegisterAgent, RegisteredAgent},
    service::RegistrationCaller,
    tokens::client_key,
};
use crate::{
    domain::VendorId,
    error::{AppError, ErrorBody},
    http::{
        auth::{API_KEY_HEADER, AdminAuth, AgentJson, bearer_token, check_admin_key},
        client_ip::ClientIp,
        extract::{Path, Query, ValidJson},
        responses::{
            AdminErrors, AgentErrors, JsonBodyErrors, PathErrors, QueryErrors, RateLimited,
        },
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, deregister))
}

/// Register an agent, or rotate its token and signing secret.
///
/// Needs the admin API key (any vendor), or the vendor's current agent token (that vendor
/// only: rotation, with the same `agentUrl`; changing it needs the admin key). 201 when the
/// agent is new, 200 when it was rotated; both carry the new `signingSecret`, shown only
/// here. Per client address: 10 registrations a minute with the admin key, and 10 attempts a
/// minute without a valid admin key (wrong or missing credentials, token rotations); the admin
/// never meets the second limit.
#[utoipa::path(
    post, path = "/api/agents/register", tag = "agents",
    request_body = RegisterAgent,
    responses(
        JsonBodyErrors, RateLimited,
        (status = 201, description = "Agent registered", body = RegisteredAgent),
        (status = 200, description = "Token and signing secret rotated", body = RegisteredAgent),
        (status = 401, description = "Neither the admin key nor the vendor's current token", body = ErrorBody),
        (status = 403, description = "An agent token tried to change agentUrl", body = ErrorBody),
        (status = 422, description = "Invalid body, or an agentUrl this deployment may not call", body = ErrorBody),
        (status = 503, description = "AGENT_SECRET not configured, or too many authentications in progress", body = ErrorBody),
    ),
    security(("api_key" = []), ("agent_token" = []))
)]
async fn register(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ValidJson(request): ValidJson<RegisterAgent>,
) -> Result<(StatusCode, Json<RegisteredAgent>), AppError> {
    let limits = &state.rate_limits;
    // A presented API key is judged on its own: a wrong key is never "rescued" by a token.
    // Only a valid admin key skips the budget of unverified attempts, so others' failures from
    // the same address never lock the admin out (see docs/auth.md).
    let caller = if headers.contains_key(API_KEY_HEADER) {
        if let Err(unauthorized) = check_admin_key(&headers, &state) {
            limits
                .register_unverified
                .check(&client_key(client).to_string())
                .await?;
            return Err(unauthorized);
        }
        limits
            .register
            .check(&client_key(client).to_string())
            .await?;
        RegistrationCaller::Admin
    } else {
        limits
            .register_unverified
            .check(&client_key(client).to_string())
            .await?;
        match bearer_token(&headers)? {
            Some(token) => RegistrationCaller::Agent { token, client },
            None => {
                return Err(AppError::Unauthorized(
                    "registering needs the admin API key, or the vendor's current agent token to rotate it",
                ));
            }
        }
    };
    let (agent, created) = state.agents.register(&request, caller).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(agent)))
}

/// Agent heartbeat
///
/// Record a heartbeat: the agent is online.
#[utoipa::path(
    post, path = "/api/agents/heartbeat", tag = "agents",
    request_body = Heartbeat,
    responses(
        AgentErrors, JsonBodyErrors,
        (status = 200, description = "Heartbeat recorded", body = AgentView),
    ),
    security(("agent_token" = []))
)]
async fn heartbeat(
    State(state): State<AppState>,
    request: AgentJson<Heartbeat>,
) -> Result<Json<AgentView>, AppError> {
    let agent = state
        .agents
        .heartbeat(&request.agent.vendor_id, request.body.version.as_deref())
        .await?;
    Ok(Json(agent))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentFilter {
    /// Only agents with this computed health (`online`, `degraded` or `offline`).
    #[param(inline)]
    pub status: Option<AgentHealth>,
}

/// List agents
///
/// List every agent with its computed health, optionally only those in one health state.
#[utoipa::path(
    get, path = "/api/agents", tag = "agents",
    params(AgentFilter),
    responses(
        AdminErrors, QueryErrors,
        (status = 200, description = "All agents", body = Vec<AgentView>),
    ),
    security(("api_key" = []))
)]
async fn list_agents(
    _: AdminAuth,
    State(state): State<AppState>,
    Query(filter): Query<AgentFilter>,
) -> Result<Json<Vec<AgentView>>, AppError> {
    let mut agents = state.agents.list().await?;
    if let Some(status) = filter.status {
        agents.retain(|agent| agent.status == status);
    }
    Ok(Json(agents))
}

/// Get one agent
///
/// One vendor's agent, with its health computed from its last heartbeat (degraded after 60 s,
/// offline after 300 s); never its token hash or signing secret.
#[utoipa::path(
    get, path = "/api/agents/{vendorId}", tag = "agents",
    params(("vendorId" = inline(VendorId), Path, description = "Vendor id")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "The agent", body = AgentView),
        (status = 404, description = "No agent for this vendor", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn get_agent(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(vendor_id): Path<VendorId>,
) -> Result<Json<AgentView>, AppError> {
    Ok(Json(state.agents.get(&vendor_id).await?))
}

/// Deregister an agent
///
/// Deregister an agent: offline, and its token is refused from now on.
#[utoipa::path(
    delete, path = "/api/agents/{vendorId}", tag = "agents",
    params(("vendorId" = inline(VendorId), Path, description = "Vendor id")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "Deregistered", body = AgentView),
        (status = 404, description = "No agent for this vendor", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn deregister(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(vendor_id): Path<VendorId>,
) -> Result<Json<AgentView>, AppError> {
    Ok(Json(state.agents.deregister(&vendor_id).await?))
}
