//! `/api/agents/*`: registration, heartbeat, admin views, deregistration.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    model::{AgentView, Heartbeat, RegisterAgent, RegisteredAgent},
    service::RegistrationCaller,
};
use crate::{
    error::{AppError, ErrorBody},
    http::{
        auth::{API_KEY_HEADER, AdminAuth, AgentJson, bearer_token, check_admin_key},
        extract::{Path, ValidJson},
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
/// here. Limited to 10 requests a minute per client address.
#[utoipa::path(
    post, path = "/api/agents/register", tag = "agents",
    request_body = RegisterAgent,
    responses(
        (status = 201, description = "Agent registered", body = RegisteredAgent),
        (status = 200, description = "Token and signing secret rotated", body = RegisteredAgent),
        (status = 401, description = "Neither the admin key nor the vendor's current token", body = ErrorBody),
        (status = 403, description = "An agent token tried to change agentUrl", body = ErrorBody),
        (status = 422, description = "Invalid body, or an agentUrl this deployment may not call", body = ErrorBody),
        (status = 429, description = "Too many registrations or failed authentications from this client", body = ErrorBody),
        (status = 503, description = "AGENT_SECRET not configured, or too many authentications in progress", body = ErrorBody),
    ),
    security(("api_key" = []), ("agent_token" = []))
)]
async fn register(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ValidJson(request): ValidJson<RegisterAgent>,
) -> Result<(StatusCode, Json<RegisteredAgent>), AppError> {
    state.rate_limits.register.check(&client.ip())?;
    // A presented API key is judged on its own: a wrong key is never "rescued" by a token.
    let caller = if headers.contains_key(API_KEY_HEADER) {
        check_admin_key(&headers, &state)?;
        RegistrationCaller::Admin
    } else {
        match bearer_token(&headers)? {
            Some(token) => RegistrationCaller::Agent {
                token,
                client: client.ip(),
            },
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

/// Record a heartbeat: the agent is online.
#[utoipa::path(
    post, path = "/api/agents/heartbeat", tag = "agents",
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Heartbeat recorded", body = AgentView),
        (status = 401, description = "Missing or invalid agent token", body = ErrorBody),
        (status = 404, description = "Unknown vendor", body = ErrorBody),
        (status = 422, description = "Invalid body or vendorId", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this client or for this vendor", body = ErrorBody),
        (status = 503, description = "Too many authentications in progress", body = ErrorBody),
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

/// List every agent with its computed health.
#[utoipa::path(
    get, path = "/api/agents", tag = "agents",
    responses(
        (status = 200, description = "All agents", body = Vec<AgentView>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn list_agents(
    _: AdminAuth,
    State(state): State<AppState>,
) -> Result<Json<Vec<AgentView>>, AppError> {
    Ok(Json(state.agents.list().await?))
}

/// One vendor's agent.
#[utoipa::path(
    get, path = "/api/agents/{vendorId}", tag = "agents",
    params(("vendorId" = String, Path, description = "Vendor id")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No agent for this vendor", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn get_agent(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(vendor_id): Path<String>,
) -> Result<Json<AgentView>, AppError> {
    Ok(Json(state.agents.get(&vendor_id).await?))
}

/// Deregister an agent: offline, and its token is refused from now on.
#[utoipa::path(
    delete, path = "/api/agents/{vendorId}", tag = "agents",
    params(("vendorId" = String, Path, description = "Vendor id")),
    responses(
        (status = 200, description = "Deregistered", body = AgentView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No agent for this vendor", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn deregister(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(vendor_id): Path<String>,
) -> Result<Json<AgentView>, AppError> {
    Ok(Json(state.agents.deregister(&vendor_id).await?))
}
