//! Request extractors that turn every client mistake into an `AppError` (never axum's
//! plain-text rejections): validated JSON bodies, query strings, path ids.

use axum::{
    body::Bytes,
    extract::{
        FromRequest, FromRequestParts, RawPathParams, Request,
        path::ErrorKind,
        rejection::{BytesRejection, PathRejection},
    },
    http::{header, request::Parts},
};
use heck::ToLowerCamelCase;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::error::AppError;

pub use crate::pagination::{Page, Pagination};

/// Reads the body bytes, refusing a wrong content type, a compressed body or an oversized body.
pub async fn read_json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AppError> {
    require_json(req.headers())?;
    Bytes::from_request(req, state)
        .await
        .map_err(bytes_rejection)
}

/// 415 unless the request says its body is JSON.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), AppError> {
    // A gzip body would otherwise be read as (malformed) JSON: say what is wrong instead.
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(AppError::UnsupportedMediaType(
            "Content-Encoding is not supported: send the JSON body uncompressed".into(),
        ));
    }
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

/// Parses JSON (possibly borrowing from `bytes`), reporting where the document is wrong:
/// a syntax error is a 400; a well-formed document of the wrong shape is a 422 whose
/// `details` name the offending field by its JSON path (`mappings.3.erpCode`).
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|error| {
        let message = bounded(&without_position(&error));
        if error.classify() != serde_json::error::Category::Data {
            return AppError::MalformedJson(format!("malformed JSON: {message}"));
        }
        // Only a failing document is parsed again, tracking the path, to name the field.
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let path = match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
            Err(e) => e.path().to_string(),
            Ok(_) => String::new(),
        };
        let field = match path.as_str() {
            "" | "." => missing_field(&message).unwrap_or("body").to_owned(),
            _ => path,
        };
        AppError::validation(
            format!("invalid request body: {field}: {message}"),
            json!({ field: [message] }),
        )
    })
}

/// The field serde names in "missing field `vendorId`" (one of ours, never the input's).
pub fn missing_field(message: &str) -> Option<&str> {
    ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next())
}

/// serde_json's message without its " at line 1 column 42" suffix.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) if error.line() > 0 => text[..at].to_owned(),
        _ => text,
    }
}

/// Messages built by parsers may quote the input: keep them short.
fn bounded(message: &str) -> String {
    const MAX: usize = 200;
    match message.char_indices().nth(MAX) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}…", &message[..cut]),
    }
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

/// `{"field": ["message", …], "nested.0.field": […]}`, keyed by the JSON (camelCase) names.
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
        // Struct-level rules report under `__all__`; they name their field in their code.
        let name = if *field == "__all__" {
            None
        } else {
            Some(field.to_lower_camel_case())
        };
        let path = match (prefix.is_empty(), name) {
            (true, Some(name)) => name,
            (false, Some(name)) => format!("{prefix}.{name}"),
            (true, None) => String::new(),
            (false, None) => prefix.clone(),
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let key = if path.is_empty() {
                        error.code.to_string()
                    } else {
                        path.clone()
                    };
                    let message = error
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| describe(error));
                    if let Value::Array(messages) =
                        out.entry(key).or_insert_with(|| Value::Array(Vec::new()))
                    {
                        messages.push(Value::String(message));
                    }
                }
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

/// A message for validator's built-in rules, which carry none (the value is never quoted).
fn describe(error: &validator::ValidationError) -> String {
    let param = |name: &str| error.params.get(name).map(|v| v.to_string());
    match error.code.as_ref() {
        "length" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be {min}-{max} characters long"),
            (None, Some(max)) => format!("must be at most {max} characters long"),
            (Some(min), None) => format!("must be at least {min} characters long"),
            _ => "has the wrong length".to_owned(),
        },
        "range" => "is out of range".to_owned(),
        code => format!("is invalid ({code})"),
    }
}

/// Query-string extractor with the standard error shape: a 422 whose `details` name the
/// parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = bounded(&e.into_inner().to_string());
                let parameter = if path.is_empty() || path == "." {
                    "query".to_owned()
                } else {
                    path
                };
                AppError::validation(
                    format!("invalid query parameter {parameter}: {message}"),
                    json!({ parameter: [message] }),
                )
            })
    }
}

/// Path extractor with the standard error shape: a 400 whose `details` name the parameter.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(path) => Ok(Self(path.0)),
            Err(rejection) => {
                // The parameters' names, to name the bad one when axum's error does not.
                let names: Vec<String> = RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|raw| raw.iter().map(|(name, _)| name.to_owned()).collect())
                    .unwrap_or_default();
                Err(path_rejection(rejection, &names))
            }
        }
    }
}

fn path_rejection(rejection: PathRejection, names: &[String]) -> AppError {
    let PathRejection::FailedToDeserializePathParams(error) = rejection else {
        return AppError::Internal(anyhow::anyhow!(
            "path extraction: {}",
            rejection.body_text()
        ));
    };
    let (key, message) = match error.kind() {
        ErrorKind::ParseErrorAtKey {
            key, expected_type, ..
        } => (Some(key.as_str()), format!("expected {expected_type}")),
        ErrorKind::DeserializeError { key, message, .. } => (Some(key.as_str()), bounded(message)),
        ErrorKind::InvalidUtf8InPathParam { key } => (Some(key.as_str()), "invalid UTF-8".into()),
        ErrorKind::ParseErrorAtIndex {
            index,
            expected_type,
            ..
        } => (
            names.get(*index).map(String::as_str),
            format!("expected {expected_type}"),
        ),
        ErrorKind::ParseError { expected_type, .. } => {
            (only(names), format!("expected {expected_type}"))
        }
        ErrorKind::Message(message) => (only(names), bounded(message)),
        // Extractor and route disagree: a programming error, not the client's.
        _ => return AppError::Internal(anyhow::anyhow!("path extraction: {}", error.body_text())),
    };
    match key {
        Some(key) => AppError::InvalidParameter {
            message: format!("invalid path parameter {key}: {message}"),
            details: json!({ key: [message] }),
        },
        None => AppError::BadRequest(format!("invalid path parameter: {message}")),
    }
}

/// The name of the route's single path parameter.
fn only(names: &[String]) -> Option<&str> {
    match names {
        [name] => Some(name),
        _ => None,
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
