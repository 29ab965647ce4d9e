//! The HTTP skeleton: health, correlation ids, error shapes, auth, headers, OpenAPI.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{API_KEY, spawn_app, spawn_app_with};

#[sqlx::test]
async fn health_is_up_when_postgres_and_redis_answer(db: PgPool) {
    let app = spawn_app(db).await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "up");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert!(body["checks"]["database"]["latencyMs"].is_number());
    assert_eq!(body["checks"]["redis"]["status"], "up");
    assert!(body["checks"]["redis"]["latencyMs"].is_number());
    assert_eq!(
        body["checks"]["queue"],
        json!({"status": "up", "waiting": 0})
    );
    assert_eq!(
        body["checks"]["worker"]["status"], "disabled",
        "the tests' default: ORDER_SYNC_ENABLED=false"
    );
    assert_eq!(
        body["checks"]["agents"],
        json!({"status": "up", "online": 0, "total": 0})
    );
}

#[sqlx::test]
async fn health_is_503_quickly_when_redis_refuses(db: PgPool) {
    // Nothing listens on port 1.
    let app = spawn_app_with(db, |vars| {
        vars.push(("REDIS_URL".into(), "redis://127.0.0.1:1".into()))
    })
    .await;
    let started = Instant::now();
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "down");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no addresses in the report: {body}"
    );
}

#[sqlx::test]
async fn health_is_503_within_deadline_when_redis_hangs(db: PgPool) {
    // A listener that accepts and never answers: the worst case for a health check.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    let app = spawn_app_with(db, |vars| {
        vars.push(("REDIS_URL".into(), format!("redis://127.0.0.1:{port}")))
    })
    .await;
    let started = Instant::now();
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(blackhole);
}

#[sqlx::test]
async fn correlation_id_is_echoed_when_safe_and_generated_otherwise(db: PgPool) {
    let app = spawn_app(db).await;
    let echoed = app
        .client
        .get(app.url("/health"))
        .header("x-correlation-id", "order-42.retry:1")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-correlation-id"], "order-42.retry:1");

    let generated = app.client.get(app.url("/health")).send().await.unwrap();
    let id = generated.headers()["x-correlation-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "generated id is a UUID: {id}"
    );

    for unsafe_id in ["a b", "x".repeat(129).as_str(), "<script>"] {
        let response = app
            .client
            .get(app.url("/health"))
            .header("x-correlation-id", unsafe_id)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-correlation-id"].to_str().unwrap();
        assert_ne!(id, unsafe_id);
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }

    // Error responses carry it too.
    let missing = app
        .client
        .get(app.url("/nope"))
        .header("x-correlation-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.headers()["x-correlation-id"], "abc-123");
}

#[sqlx::test]
async fn correlation_id_is_on_the_request_log_lines(db: PgPool) {
    let app = spawn_app(db).await;
    let id = format!("corr-{}", uuid::Uuid::new_v4().simple());
    app.client
        .get(app.url("/api/agents"))
        .header("x-correlation-id", &id)
        .send()
        .await
        .unwrap();
    let logs = crate::helpers::captured_logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&id))
        .expect("a log line carries the correlation id");
    assert!(line.contains("request finished"), "{line}");
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert!(body["error"]["code"].is_string(), "error shape: {body}");
    assert!(body["error"]["message"].is_string(), "error shape: {body}");
    (status, body)
}

#[sqlx::test]
async fn every_failure_has_the_error_shape(db: PgPool) {
    let app = spawn_app(db).await;

    let (status, body) = error_of(
        app.client
            .get(app.url("/no/such/route"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let (status, body) =
        error_of(app.client.delete(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    let malformed = app
        .client
        .post(app.url("/api/admin/mappings"))
        .header("x-api-key", API_KEY)
        .header("content-type", "application/json")
        .body("{\"vendorId\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(malformed).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );

    let wrong_type = app
        .client
        .post(app.url("/api/admin/mappings"))
        .header("x-api-key", API_KEY)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(wrong_type).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );

    let invalid = app
        .admin_post("/api/admin/mappings", &json!({"vendorId": "v1"}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(invalid).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    assert!(body["error"]["details"].is_object());

    let too_large = app
        .client
        .post(app.url("/api/admin/mappings"))
        .header("x-api-key", API_KEY)
        .header("content-type", "application/json")
        .body(vec![b' '; erp_sync::http::DEFAULT_BODY_LIMIT + 1])
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(too_large).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );

    let bad_uuid = app
        .admin_delete("/api/admin/mappings/not-a-uuid")
        .send()
        .await
        .unwrap();
    let (status, _) = error_of(bad_uuid).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[sqlx::test]
async fn security_headers_are_on_every_response(db: PgPool) {
    let app = spawn_app(db).await;
    for path in ["/health", "/nope"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(
            headers["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );
    }
}

#[sqlx::test]
async fn cors_allows_only_configured_origins(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("CORS_ORIGINS".into(), "https://ops.example.com".into()))
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/agents"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://ops.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[sqlx::test]
async fn admin_routes_need_the_right_api_key(db: PgPool) {
    let app = spawn_app(db).await;
    let missing = app.client.get(app.url("/api/agents")).send().await.unwrap();
    assert_eq!(error_of(missing).await.0, StatusCode::UNAUTHORIZED);
    let wrong = app
        .client
        .get(app.url("/api/agents"))
        .header("x-api-key", "x".repeat(40))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(wrong).await.0, StatusCode::UNAUTHORIZED);
    let prefix = app
        .client
        .get(app.url("/api/agents"))
        .header("x-api-key", &API_KEY[..20])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(prefix).await.0, StatusCode::UNAUTHORIZED);
    let right = app.admin_get("/api/agents").send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
}

#[sqlx::test]
async fn admin_routes_are_closed_when_no_api_secret_is_configured(db: PgPool) {
    let app = spawn_app_with(db, |vars| vars.retain(|(k, _)| k != "API_SECRET")).await;
    for key in [None, Some(""), Some(API_KEY)] {
        let mut request = app.client.get(app.url("/api/agents"));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[sqlx::test]
async fn agent_routes_check_the_bearer_token_of_the_named_vendor(db: PgPool) {
    let app = spawn_app(db).await;
    let token_a = app.register_agent("vendor-a").await;
    let token_b = app.register_agent("vendor-b").await;
    let heartbeat = |vendor: &str| json!({"vendorId": vendor, "version": "1.2.3"});

    let right = app
        .agent_post("/api/agents/heartbeat", &token_a, &heartbeat("vendor-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);

    let wrong = app
        .agent_post(
            "/api/agents/heartbeat",
            "not-the-token-at-all",
            &heartbeat("vendor-a"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(wrong).await.0, StatusCode::UNAUTHORIZED);

    let missing = app
        .client
        .post(app.url("/api/agents/heartbeat"))
        .json(&heartbeat("vendor-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(missing).await.0, StatusCode::UNAUTHORIZED);

    let basic = app
        .client
        .post(app.url("/api/agents/heartbeat"))
        .header("authorization", format!("Basic {token_a}"))
        .json(&heartbeat("vendor-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(basic).await.0, StatusCode::UNAUTHORIZED);

    // Vendor B's valid token does not authenticate vendor A.
    let other = app
        .agent_post("/api/agents/heartbeat", &token_b, &heartbeat("vendor-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(other).await.0, StatusCode::UNAUTHORIZED);

    let unknown = app
        .agent_post("/api/agents/heartbeat", &token_a, &heartbeat("vendor-zzz"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(unknown).await.0, StatusCode::NOT_FOUND);

    let no_vendor = app
        .agent_post("/api/agents/heartbeat", &token_a, &json!({"version": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(no_vendor).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[sqlx::test]
async fn openapi_lists_every_route_and_both_security_schemes(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("SWAGGER_ENABLED".into(), "true".into()))
    })
    .await;
    let document: Value = app
        .client
        .get(app.url("/api/docs/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/health",
        "/api/agents/register",
        "/api/agents/heartbeat",
        "/api/agents",
        "/api/agents/{vendorId}",
        "/api/admin/mappings",
        "/api/admin/mappings/{id}",
        "/api/admin/mappings/seed",
        "/api/sync/items",
        "/api/sync/items/batch",
        "/api/sync/stock",
        "/api/sync/stock/batch",
        "/api/sync/warehouses",
        "/api/sync/warehouses/batch",
        "/api/agents/callback",
        "/api/admin/sync-jobs",
        "/api/admin/sync-status/{jobId}",
        "/api/admin/orders/{orderId}/sync",
        "/api/admin/dlq",
        "/api/admin/dlq/{id}",
        "/api/admin/dlq/{id}/retry",
        "/api/admin/dlq/{id}/resolve",
        "/api/admin/circuit-breakers",
        "/api/admin/circuit-breakers/{vendorId}/{apiType}/reset",
        "/metrics",
        "/api/admin/metrics/{vendorId}",
        "/api/admin/metrics/reconciliation/{vendorId}",
        "/api/admin/metrics/agents",
        "/api/admin/scheduler",
        "/api/admin/scheduler/{name}/run",
    ] {
        assert!(paths.contains_key(path), "OpenAPI lacks {path}");
    }
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["agent_token"]["scheme"], "bearer");

    let page = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text().await.unwrap().contains("swagger"),
        "Swagger UI page is served"
    );
}

#[sqlx::test]
async fn docs_are_not_served_unless_enabled(db: PgPool) {
    let app = spawn_app(db).await;
    let response = app
        .client
        .get(app.url("/api/docs/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn graceful_shutdown_lets_in_flight_requests_finish(db: PgPool) {
    use erp_sync::{config::Settings, startup::Application};
    // A Redis that never answers makes /health take ~1.5 s: long enough to be in flight.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let prefix = crate::helpers::RedisPrefix::new();
    let mut vars = crate::helpers::test_vars(&prefix.0);
    vars.push((
        "REDIS_URL".into(),
        format!(
            "redis://127.0.0.1:{}",
            blackhole.local_addr().unwrap().port()
        ),
    ));
    let app = Application::build_with_pool(Settings::from_vars(vars).unwrap(), db)
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}/health", app.port());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let client = reqwest::Client::new();

    let in_flight = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request gets its answer");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(
        client.get(&url).send().await.is_err(),
        "no longer accepting connections"
    );
}
