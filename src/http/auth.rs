//! Authentication as extractors: a handler that takes `AdminAuth` or `AgentJson<T>` cannot
//! forget the check.
//!
//! * Admin: `X-API-Key` compared in constant time with `API_SECRET`. No secret configured →
//!   every admin route answers 401: never open.
//! * Agent: `Authorization: Bearer <token>` verified with bcrypt against the stored hash of the
//!   vendor named by the body's `vendorId`. Unknown vendor → 404; token that does not match
//!   that vendor (or a deregistered agent) → 401. An authenticated agent touching another
//!   vendor's resource (e.g. a callback for another vendor's job) → 403 in the handler.

use axum::{
    RequestExt,
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use http_body_util::BodyExt;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use validator::Validate;

use crate::{
    agents::AuthenticatedAgent,
    domain::{VendorId, validate_vendor_id},
    error::AppError,
    http::{
        client_ip::client_ip_of,
        extract::{Path, parse_json, require_json, validate},
        vendor_probe::{self, ProbeError},
    },
    state::AppState,
};

pub const API_KEY_HEADER: &str = "x-api-key";

/// Proof that the request carried the admin API key.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_admin_key(&parts.headers, state)
    }
}

/// Admin check usable outside the extractor (e.g. registration accepts admin *or* agent).
pub fn check_admin_key(headers: &HeaderMap, state: &AppState) -> Result<AdminAuth, AppError> {
    let Some(secret) = state.settings.api_secret.as_ref() else {
        return Err(AppError::Unauthorized(
            "admin API is disabled: API_SECRET is not configured",
        ));
    };
    let presented = headers
        .get(API_KEY_HEADER)
        .ok_or(AppError::Unauthorized("missing X-API-Key header"))?;
    // Hashing both sides first makes the comparison constant-time in the length too.
    let expected = Sha256::digest(secret.expose_secret().as_bytes());
    let given = Sha256::digest(presented.as_bytes());
    if bool::from(expected.ct_eq(&given)) {
        Ok(AdminAuth)
    } else {
        Err(AppError::Unauthorized("invalid API key"))
    }
}

/// Read access to one vendor's own sync records (`/api/agents/{vendorId}/…`): the admin key
/// (`X-API-Key`, when the header is present), or that vendor's current agent token. A token is
/// checked against the path's vendor only, so another vendor's token is a 401 and never reads
/// this vendor's rows.
#[derive(Debug, Clone)]
pub struct VendorReader {
    pub vendor_id: VendorId,
}

impl FromRequestParts<AppState> for VendorReader {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(vendor_id) = Path::<VendorId>::from_request_parts(parts, state).await?;
        if parts.headers.contains_key(API_KEY_HEADER) {
            check_admin_key(&parts.headers, state)?;
            return Ok(Self { vendor_id });
        }
        let token = bearer_token(&parts.headers)?.ok_or(AppError::Unauthorized(
            "missing Authorization: Bearer <agent token> (or X-API-Key)",
        ))?;
        let client = client_ip_of(
            &parts.extensions,
            &parts.headers,
            &state.settings.trusted_proxies,
        );
        state.agents.authenticate(&vendor_id, token, client).await?;
        Ok(Self { vendor_id })
    }
}

/// The bearer token of the request, if any. A present but malformed header is a 401.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AppError::Unauthorized("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(AppError::Unauthorized(
            "Authorization must be 'Bearer <agent token>'",
        )),
    }
}

/// An agent's request body, authenticated but not yet parsed beyond `vendorId`: for handlers
/// that parse the rest themselves (ingest parses record by record).
///
/// What an unauthenticated caller can make erp-sync do is bounded:
/// * the token must be present (401) and the body JSON (415) before a byte is read, and what
///   is read before the token is verified must arrive within `HTTP_HEADER_READ_TIMEOUT_MS`
///   (400 otherwise);
/// * only `AGENT_PREAUTH_MAX_BYTES` of the body are read, `vendorId` is found in them without
///   building a tree (a borrowed string; every other value skipped with `IgnoredAny`) and
///   checked against the vendor-id rule before any database query (422);
/// * a body whose `vendorId` lies beyond that window (a JSON encoder that sorts keys puts it
///   after `items`) is read on only within a process-wide budget of unauthenticated bytes
///   (`AGENT_PREAUTH_BUDGET_BYTES`, 503 when spent), and not for a client over its
///   failed-authentication budget (429);
/// * the token is verified (see [`crate::agents::tokens`]); only then is the rest of the
///   body read, up to the route's limit (413).
pub struct AgentRequest {
    pub agent: AuthenticatedAgent,
    pub body: Bytes,
}

impl FromRequest<AppState> for AgentRequest {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(req.headers())?
            .ok_or(AppError::Unauthorized(
                "missing Authorization: Bearer <agent token>",
            ))?
            .to_owned();
        require_json(req.headers())?;
        let client = client_ip_of(
            req.extensions(),
            req.headers(),
            &state.settings.trusted_proxies,
        );
        let declared_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let window = state.settings.agent_preauth_max_bytes;
        // Unauthenticated bytes must arrive as promptly as a request head: a body trickled
        // byte by byte must not hold a connection for the whole request timeout.
        let deadline = Instant::now() + state.settings.http_header_read_timeout;
        let mut body = req.into_limited_body();
        let mut buffer = Vec::new();
        let mut complete = before(deadline, read_until(&mut body, &mut buffer, window)).await?;
        let mut _unauthenticated_bytes = None;
        let vendor_id = match vendor_id_in(&buffer, complete)? {
            Some(vendor_id) => vendor_id,
            None => {
                state.agents.check_client(client).await?;
                _unauthenticated_bytes = before(
                    deadline,
                    read_rest_within_budget(&mut body, &mut buffer, state),
                )
                .await?;
                complete = true;
                vendor_id_in(&buffer, complete)?.ok_or_else(vendor_id_required)?
            }
        };
        let agent = state
            .agents
            .authenticate(&vendor_id, &token, client)
            .await?;
        if !complete {
            // Authenticated now: room for the declared length at once (bounded: the body's
            // limit still decides), rather than doubling the buffer as it grows.
            if let Some(declared) = declared_length {
                buffer.reserve(declared.saturating_sub(buffer.len()).min(MAX_RESERVE));
            }
            read_until(&mut body, &mut buffer, usize::MAX).await?;
        }
        Ok(Self {
            agent,
            body: Bytes::from(buffer),
        })
    }
}

async fn before<T>(
    deadline: Instant,
    read: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    tokio::time::timeout_at(deadline, read)
        .await
        .unwrap_or_else(|_| {
            Err(AppError::BadRequest(
                "the request body arrived too slowly".into(),
            ))
        })
}

/// The largest body limit of any agent route (the `/batch` ingest routes).
const MAX_RESERVE: usize = 32 * 1024 * 1024;

/// The body's `vendorId`, valid by the vendor-id rule. `Ok(None)`: not in `window` (which is
/// not the whole body).
fn vendor_id_in(window: &[u8], complete: bool) -> Result<Option<String>, AppError> {
    match vendor_probe::find_vendor_id(window) {
        Ok(Some(vendor_id)) => {
            validate_vendor_id(&vendor_id).map_err(|_| {
                AppError::validation(
                    "vendorId is not a valid vendor id",
                    json!({ "vendorId": ["must be 1-100 characters of letters, digits, '-', '_', '.' or ':'"] }),
                )
            })?;
            Ok(Some(vendor_id.into_owned()))
        }
        Ok(None) => Err(vendor_id_required()),
        Err(ProbeError::Truncated) if !complete => Ok(None),
        Err(probe) => Err(probe.into_error()),
    }
}

fn vendor_id_required() -> AppError {
    AppError::validation(
        "vendorId is required",
        json!({ "vendorId": ["is required and must be a non-empty string"] }),
    )
}

/// Appends the body's frames to `buffer` until it holds at least `max` bytes (`false`: more
/// may follow) or the body ends (`true`). The body's own limit (the route's) answers 413.
async fn read_until(body: &mut Body, buffer: &mut Vec<u8>, max: usize) -> Result<bool, AppError> {
    while buffer.len() < max {
        match body.frame().await {
            None => return Ok(true),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => return Err(body_error(&error)),
        }
    }
    Ok(false)
}

/// Reads the rest of a body whose agent is not authenticated yet, taking each chunk's size
/// from the process-wide budget first (503 when it is spent); the permit is held until the
/// caller drops it.
async fn read_rest_within_budget(
    body: &mut Body,
    buffer: &mut Vec<u8>,
    state: &AppState,
) -> Result<Option<OwnedSemaphorePermit>, AppError> {
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e))?;
        if let Ok(data) = frame.into_data() {
            let permit = state.agents.hold_unauthenticated(data.len())?;
            match &mut held {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(held)
}

fn body_error(error: &axum::Error) -> AppError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return AppError::PayloadTooLarge;
        }
        source = cause.source();
    }
    AppError::BadRequest("could not read the request body".into())
}

/// A JSON body from an agent, parsed, validated and authenticated: the bearer token is the
/// current token of the vendor the body names in `vendorId`.
pub struct AgentJson<T> {
    pub agent: AuthenticatedAgent,
    pub body: T,
}

impl<T> FromRequest<AppState> for AgentJson<T>
where
    T: DeserializeOwned + Validate,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let AgentRequest { agent, body } = AgentRequest::from_request(req, state).await?;
        let body: T = parse_json(&body)?;
        validate(&body)?;
        Ok(Self { agent, body })
    }
}
