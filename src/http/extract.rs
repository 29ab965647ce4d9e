//! Request extractors that turn every client mistake into an `AppError` (never axum's
//! plain-text rejections): validated JSON bodies, pagination, path ids.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{header, request::Parts},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::error::AppError;

/// Reads the body bytes, refusing a wrong content type or an oversized body.
pub async fn read_json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AppError> {
    require_json(req.headers())?;
    Bytes::from_request(req, state)
        .await
        .map_err(bytes_rejection)
}

/// 415 unless the request says its body is JSON.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), AppError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    if is_json {
        Ok(())
    } else {
        Err(AppError::UnsupportedMediaType(
            "expected a request with Content-Type: application/json".into(),
        ))
    }
}

fn bytes_rejection(rejection: BytesRejection) -> AppError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadRequest(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// Parses JSON (possibly borrowing from `bytes`), reporting where the document is wrong.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => AppError::validation(
            format!("invalid request body: {e}"),
            json!({ "body": [e.to_string()] }),
        ),
        _ => AppError::MalformedJson(format!("malformed JSON: {e}")),
    })
}

/// A JSON body, parsed and validated (`validator`) before the handler sees it.
pub struct ValidJson<T>(pub T);

impl<T, S> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_bytes(req, state).await?;
        let value: T = parse_json(&bytes)?;
        validate(&value)?;
        Ok(Self(value))
    }
}

pub fn validate<T: Validate>(value: &T) -> Result<(), AppError> {
    value.validate().map_err(|errors| {
        AppError::validation(
            "request body failed validation",
            validation_details(&errors),
        )
    })
}

/// `{"field": ["message", …], "nested.0.field": […]}`.
pub fn validation_details(errors: &ValidationErrors) -> Value {
    let mut out = serde_json::Map::new();
    flatten_errors(errors, String::new(), &mut out);
    Value::Object(out)
}

fn flatten_errors(
    errors: &ValidationErrors,
    prefix: String,
    out: &mut serde_json::Map<String, Value>,
) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                let messages = list
                    .iter()
                    .map(|e| {
                        Value::String(
                            e.message
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_else(|| e.code.to_string()),
                        )
                    })
                    .collect();
                out.insert(path, Value::Array(messages));
            }
            ValidationErrorsKind::Struct(inner) => flatten_errors(inner, path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten_errors(inner, format!("{path}.{index}"), out);
                }
            }
        }
    }
}

/// `?page=&limit=`: page from 1, limit 1–100 (default 20).
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page number, from 1.
    pub page: Option<u32>,
    /// Rows per page, 1–100.
    pub limit: Option<u32>,
}

impl Pagination {
    pub const MAX_LIMIT: u32 = 100;

    pub fn page(&self) -> u32 {
        self.page.unwrap_or(1)
    }
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(20)
    }
    pub fn offset(&self) -> i64 {
        i64::from(self.page() - 1) * i64::from(self.limit())
    }

    pub fn check(self) -> Result<Self, AppError> {
        if self.page == Some(0) {
            return Err(AppError::validation(
                "page must be at least 1",
                json!({"page": ["must be >= 1"]}),
            ));
        }
        if !(1..=Self::MAX_LIMIT).contains(&self.limit()) {
            return Err(AppError::validation(
                "limit must be between 1 and 100",
                json!({"limit": ["must be between 1 and 100"]}),
            ));
        }
        Ok(self)
    }
}

/// A page of results: `{data, page, limit, total}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub page: u32,
    pub limit: u32,
    pub total: i64,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, pagination: Pagination, total: i64) -> Self {
        Self {
            data,
            page: pagination.page(),
            limit: pagination.limit(),
            total,
        }
    }
}

/// Query-string extractor with the standard error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| {
                AppError::validation("invalid query string", json!({ "query": [e.body_text()] }))
            })
    }
}

/// Path extractor with the standard error shape (e.g. a malformed UUID is a 400, not plain text).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| AppError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// `application/json` or `application/*+json`, with any parameters (`; charset=utf-8`).
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
