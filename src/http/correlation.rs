//! Correlation ids: taken from `X-Correlation-ID` when it is safe to echo, made otherwise;
//! set on the response and on the span every log line of the request is written in.

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

pub static CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");
const MAX_LEN: usize = 128;

/// The request's correlation id, in the request extensions for handlers that pass it on
/// (agent calls, job payloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

impl CorrelationId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// Accepts 1–128 characters of `[A-Za-z0-9._:-]`, so an id can never inject into logs
    /// or headers downstream.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_default())
    }
}

/// A successful request on this route is logged at debug.
const QUIET_ROUTE: &str = "/api/agents/heartbeat";
/// Longest query string kept in a log line.
const MAX_LOGGED_QUERY: usize = 500;

/// The query string as logged: the value of any parameter whose name suggests a secret is
/// replaced, control characters are dropped, and it is cut at [`MAX_LOGGED_QUERY`] bytes.
pub fn redacted_query(query: &str) -> String {
    const SECRET_NAMES: [&str; 7] = [
        "password",
        "token",
        "secret",
        "key",
        "auth",
        "signature",
        "credential",
    ];
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let lower = name.to_ascii_lowercase();
        if SECRET_NAMES.iter().any(|s| lower.contains(s)) {
            out.append_pair(&name, "[redacted]");
        } else {
            out.append_pair(&name, &value);
        }
    }
    crate::orders::response::printable(&out.finish(), MAX_LOGGED_QUERY)
}

/// Outermost middleware: picks the id, opens the request span, logs the outcome.
pub async fn correlation_middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(CorrelationId::parse)
        .unwrap_or_default();
    request.extensions_mut().insert(id.clone());

    // The matched template (`/api/admin/orders/{orderId}`), so lines group by route; unset
    // for a request no route matched.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let query = request
        .uri()
        .query()
        .map(redacted_query)
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        correlation_id = %id.0,
        method = %request.method(),
        path = %request.uri().path(),
        route = %route,
        query = %query,
    );
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::error!(status, latency_ms, "request finished");
        } else if route == QUIET_ROUTE && status < 400 {
            // Every agent sends one a minute: at info they would drown every other line.
            tracing::debug!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response
            .headers_mut()
            .insert(CORRELATION_HEADER.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::redacted_query;

    #[test]
    fn secrets_in_a_query_string_are_redacted() {
        assert_eq!(
            redacted_query("vendorId=v1&password=hunter2&api_key=abc&status=failed"),
            "vendorId=v1&password=%5Bredacted%5D&api_key=%5Bredacted%5D&status=failed"
        );
        assert_eq!(redacted_query("reason=HTTP%20500"), "reason=HTTP+500");
    }
}
