//! Error responses shared by many routes, for `#[utoipa::path(responses(...))]`. A route lists
//! the sets that match its extractors, then its own statuses (listed last, so their
//! descriptions win):
//!
//! | the handler takes | add |
//! |---|---|
//! | `AdminAuth` | [`AdminErrors`] |
//! | `AgentJson<T>` / `AgentRequest` | [`AgentErrors`] (401, 404, the failed-auth 429), [`JsonBodyErrors`] |
//! | `ValidJson<T>` | [`JsonBodyErrors`] |
//! | `Path<T>` | [`PathErrors`] |
//! | `Query<T>` (filters, `Pagination`) | [`QueryErrors`] |
//! | a rate limit | [`RateLimited`] |
//!
//! 431, 500 and 503 can come from any route; [`super::openapi`] adds them to every operation.
//! `tests/api/contract.rs` checks every operation of the document against this table.

use utoipa::IntoResponses;

use crate::error::ErrorBody;

/// Routes behind the admin key.
#[derive(IntoResponses)]
pub enum AdminErrors {
    /// Missing or invalid `X-API-Key` (or no `API_SECRET` configured).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
}

/// Routes behind an agent token, checked against the vendor the body names in `vendorId`.
#[derive(IntoResponses)]
pub enum AgentErrors {
    /// Missing or invalid agent token for the body's `vendorId`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No agent is registered for the body's `vendorId`.
    #[response(status = 404)]
    UnknownVendor(ErrorBody),
    /// Too many failed authentications from this client address or for this vendor, refused
    /// before any bcrypt (`rate_limited`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until an attempt is allowed again"))
    )]
    TooManyFailures(ErrorBody),
}

/// Routes that read a JSON body. Nothing is written when one of these is returned.
#[derive(IntoResponses)]
pub enum JsonBodyErrors {
    /// The body is not well-formed JSON (`malformed_json`).
    #[response(status = 400)]
    MalformedJson(ErrorBody),
    /// The body is larger than the route accepts (`payload_too_large`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `Content-Type` is not `application/json`, or the body is compressed
    /// (`Content-Encoding`); `unsupported_media_type`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Well-formed JSON that breaks the body's rules (`validation_failed`); `details` name the
    /// fields by their JSON path.
    #[response(status = 422)]
    Invalid(ErrorBody),
}

/// Routes with path parameters.
#[derive(IntoResponses)]
pub enum PathErrors {
    /// A path parameter is malformed (not a UUID, not a valid vendor id, …); `details` name it.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// Nothing exists at this path.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// Routes with query parameters (filters, `?page=&limit=`).
#[derive(IntoResponses)]
pub enum QueryErrors {
    /// A query parameter is malformed or out of range; `details` name it.
    #[response(status = 422)]
    Invalid(ErrorBody),
}

/// Routes with a request budget.
#[derive(IntoResponses)]
#[response(
    status = 429,
    headers(("Retry-After" = u64, description = "Seconds until the budget allows a request"))
)]
/// Over the budget (`rate_limited`).
pub struct RateLimited(pub ErrorBody);

/// What any route may answer, whatever it does: added to every operation of the document.
#[derive(IntoResponses)]
pub enum CommonErrors {
    /// Too many or too large request headers (`request_header_fields_too_large`).
    #[response(status = 431)]
    HeadersTooLarge(ErrorBody),
    /// An internal failure (`internal_error`); nothing about it is in the answer.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// A dependency is unavailable or the request took too long (`service_unavailable`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}
