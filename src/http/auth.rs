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
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use validator::Validate;

use crate::{
    agents::AuthenticatedAgent,
    error::AppError,
    http::extract::{parse_json, read_json_bytes, validate},
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
pub struct AgentRequest {
    pub agent: AuthenticatedAgent,
    pub body: Bytes,
}

#[derive(Deserialize)]
struct VendorProbe {
    #[serde(rename = "vendorId")]
    vendor_id: Option<serde_json::Value>,
}

impl FromRequest<AppState> for AgentRequest {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(req.headers())?
            .ok_or(AppError::Unauthorized(
                "missing Authorization: Bearer <agent token>",
            ))?
            .to_owned();
        let body = read_json_bytes(req, state).await?;
        // Authenticate on `vendorId` alone before looking at the rest of the body, so an
        // unauthenticated caller learns nothing about what a valid body looks like.
        let probe: VendorProbe = parse_json(&body)?;
        let vendor_id = match probe.vendor_id {
            Some(serde_json::Value::String(v)) if !v.trim().is_empty() => v,
            _ => {
                return Err(AppError::validation(
                    "vendorId is required",
                    json!({ "vendorId": ["is required and must be a non-empty string"] }),
                ));
            }
        };
        let agent = state.agents.authenticate(&vendor_id, &token).await?;
        Ok(Self { agent, body })
    }
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
