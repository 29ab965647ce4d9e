//! One error type for every HTTP failure, rendered as `{"error":{"code","message","details"?}}`.
//! Client mistakes keep their message; internal failures are logged with their source chain
//! and answered with a generic message, so nothing internal (SQL, hosts, secrets) leaks.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Validation { message: String, details: Value },
    #[error("{0}")]
    BadRequest(String),
    /// A malformed path parameter: 400, with `details` naming it.
    #[error("{message}")]
    InvalidParameter { message: String, details: Value },
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than this route allows")]
    PayloadTooLarge,
    #[error("request headers are too many or too large")]
    HeaderFieldsTooLarge,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("rate limit exceeded; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    Unavailable(String),
    /// Too busy to take this request now (a bounded queue is full): 503 with `Retry-After`.
    #[error("{message}; retry in {} s", retry_after.as_secs().max(1))]
    Overloaded {
        message: &'static str,
        retry_after: Duration,
    },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn validation(message: impl Into<String>, details: Value) -> Self {
        Self::Validation {
            message: message.into(),
            details,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) | Self::InvalidParameter { .. } | Self::MalformedJson(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeaderFieldsTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Redis(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Stable, machine-readable code; clients switch on this, never on the message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation_failed",
            Self::BadRequest(_) | Self::InvalidParameter { .. } => "bad_request",
            Self::MalformedJson(_) => "malformed_json",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::HeaderFieldsTooLarge => "request_header_fields_too_large",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) | Self::Overloaded { .. } => "service_unavailable",
            Self::Database(_) | Self::Redis(_) | Self::Internal(_) => "internal_error",
        }
    }
}

/// The error envelope every failing response carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`, `unauthorized`.
    pub code: String,
    pub message: String,
    /// Field-level problems, for `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error()
            && !matches!(self, Self::Unavailable(_) | Self::Overloaded { .. })
        {
            // `{:#}`-style chain: the variant's own message says nothing, its source does.
            let source = std::error::Error::source(&self).map(|s| s.to_string());
            tracing::error!(error.code = self.code(), error.source = ?source, error.debug = ?self, "request failed");
        }
        let message = self.to_string();
        let details = match &self {
            Self::Validation { details, .. } | Self::InvalidParameter { details, .. } => {
                Some(details.clone())
            }
            _ => None,
        };
        let retry_after = match &self {
            Self::RateLimited { retry_after } | Self::Overloaded { retry_after, .. } => {
                Some(retry_after.as_secs().max(1))
            }
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
                details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Maps a named constraint violation to a client error, leaving every other error as is.
pub trait ResultExt<T> {
    fn on_constraint(self, name: &str, f: impl FnOnce() -> AppError) -> Result<T, AppError>;
}

impl<T, E: Into<AppError>> ResultExt<T> for Result<T, E> {
    fn on_constraint(self, name: &str, f: impl FnOnce() -> AppError) -> Result<T, AppError> {
        self.map_err(|e| match e.into() {
            AppError::Database(sqlx::Error::Database(db)) if db.constraint() == Some(name) => f(),
            other => other,
        })
    }
}

pub type AppResult<T> = Result<T, AppError>;
