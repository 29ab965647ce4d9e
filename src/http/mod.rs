//! The HTTP layer: router assembly, middleware, extractors, auth, OpenAPI.

pub mod auth;
pub mod client_ip;
pub mod correlation;
pub mod extract;
pub mod openapi;
pub mod rate_limit;
pub mod responses;
pub mod server;
pub mod vendor_probe;

use std::time::Duration;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use tower_http::{
    catch_panic::CatchPanicLayer, cors::CorsLayer, set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{error::AppError, state::AppState};

/// Every route's body limit unless the route sets its own (the `/batch` ingest routes do).
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Header limits answered with the JSON 431. They sit below hyper's own (100 headers, ~400 KiB
/// of buffered head), which answers 431 with an empty body and closes: a server builder that
/// changes hyper's limits must keep them above these.
pub const MAX_HEADER_COUNT: usize = 64;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// All routes with their OpenAPI description.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(crate::ops::health::router())
        .merge(crate::agents::routes::router())
        .merge(crate::mappings::routes::router())
        .merge(crate::ingest::routes::router())
        .merge(crate::orders::routes::router())
        .merge(crate::orders::operator_routes::router())
        .merge(crate::orders::agent_routes::router())
        .merge(crate::ops::metrics::routes::router())
        .merge(crate::ops::scheduler::routes::router())
        .merge(crate::reconciliation::routes::router())
}

/// The OpenAPI document of every route that exists.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    split_api().1
}

fn split_api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = api().split_for_parts();
    openapi::add_common_responses(&mut document);
    (router, document)
}

pub fn router(state: AppState) -> Router {
    let (mut router, document) = split_api();
    if state.settings.swagger_enabled {
        router = router.merge(SwaggerUi::new("/api/docs").url("/api/docs/openapi.json", document));
    }
    let cors = CorsLayer::new()
        .allow_origin(state.settings.cors_origins.clone())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(auth::API_KEY_HEADER),
            correlation::CORRELATION_HEADER.clone(),
        ])
        .expose_headers([correlation::CORRELATION_HEADER.clone()])
        .max_age(Duration::from_secs(600));

    let router = router
        .fallback(|| async { AppError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            AppError::MethodNotAllowed("method not allowed on this route".into())
        })
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(middleware::from_fn(json_errors_for_bare_responses))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors)
        .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(security_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(security_header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ))
        .layer(security_header(header::CACHE_CONTROL, "no-store"))
        .layer(middleware::from_fn(limit_headers))
        .layer(middleware::from_fn(correlation::correlation_middleware));
    // Outermost, so it sees every response as the client does; `Router::layer` wraps each
    // route, so the matched route template is known.
    let router = if state.settings.metrics_enabled {
        router.layer(middleware::from_fn_with_state(
            state.prometheus.clone(),
            crate::ops::metrics::track_http,
        ))
    } else {
        router
    };
    router.with_state(state)
}

fn security_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Some responses are made below the handlers (a request timeout): give them the standard
/// error body too, so clients only ever parse one shape.
async fn json_errors_for_bare_responses(request: Request, next: middleware::Next) -> Response {
    let response = next.run(request).await;
    let is_bare_error = (response.status().is_client_error()
        || response.status().is_server_error())
        && !response.headers().contains_key(header::CONTENT_TYPE);
    if !is_bare_error {
        return response;
    }
    match response.status() {
        StatusCode::REQUEST_TIMEOUT => {
            AppError::Unavailable("the request took too long".into()).into_response()
        }
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge.into_response(),
        status => {
            let message = status.canonical_reason().unwrap_or("error").to_owned();
            let mut response = AppError::BadRequest(message).into_response();
            *response.status_mut() = status;
            response
        }
    }
}

/// Refuses oversized header sets with the standard error body (see [`MAX_HEADER_COUNT`]).
async fn limit_headers(request: Request, next: middleware::Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_COUNT || bytes > MAX_HEADER_BYTES {
        return AppError::HeaderFieldsTooLarge.into_response();
    }
    next.run(request).await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}
