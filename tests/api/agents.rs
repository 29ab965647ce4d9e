//! Agent registry: registration and rotation, heartbeats, health, deregistration.

use base64::Engine;
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

fn registration(vendor: &str, token: &str) -> Value {
    json!({"vendorId": vendor, "agentUrl": "https://agent.example.com/erp", "erpType": "sage", "authToken": token, "version": "2.0.1"})
}

async fn heartbeat(app: &TestApp, vendor: &str, token: &str) -> StatusCode {
    app.agent_post("/api/agents/heartbeat", token, &json!({"vendorId": vendor}))
        .send()
        .await
        .unwrap()
        .status()
}

#[sqlx::test]
async fn admin_registers_and_the_response_holds_no_secret(db: PgPool) {
    let app = spawn_app(db).await;
    let token = "first-token-0123456789";
    let response = app
        .admin_post("/api/agents/register", &registration("v1", token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(token) && !text.contains("$2"),
        "no token or hash: {text}"
    );
    let agent: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(agent["vendorId"], "v1");
    assert_eq!(agent["erpType"], "sage");
    assert_eq!(agent["status"], "offline", "no heartbeat yet");

    let hash: String =
        sqlx::query_scalar("SELECT auth_token_hash FROM agent_registry WHERE vendor_id = 'v1'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    // bcrypt of base64(SHA-256(token)), marked so verification knows (bcrypt alone would
    // ignore every byte past the 72nd).
    let bcrypt_hash = hash
        .strip_prefix("bcrypt-sha256:")
        .expect("new tokens are pre-hashed");
    let prehashed = base64::engine::general_purpose::STANDARD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    assert!(
        bcrypt_hash.starts_with("$2") && bcrypt::verify(&prehashed, bcrypt_hash).unwrap(),
        "stored as bcrypt"
    );
}

#[sqlx::test]
async fn nobody_can_take_over_a_vendor_by_registering(db: PgPool) {
    let app = spawn_app(db).await;
    let token_a = app.register_agent("vendor-a").await;
    let token_b = app.register_agent("vendor-b").await;
    let takeover = registration("vendor-a", "attacker-token-0123456789");

    let anonymous = app
        .client
        .post(app.url("/api/agents/register"))
        .json(&takeover)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong_key = app
        .client
        .post(app.url("/api/agents/register"))
        .header("x-api-key", "wrong-key-wrong-key-wrong-key-wrong")
        .bearer_auth(&token_a) // a valid token never rescues a wrong key
        .json(&takeover)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
    let other_vendor = app
        .agent_post("/api/agents/register", &token_b, &takeover)
        .send()
        .await
        .unwrap();
    assert_eq!(other_vendor.status(), StatusCode::UNAUTHORIZED);
    let new_vendor = app
        .agent_post(
            "/api/agents/register",
            &token_a,
            &registration("vendor-new", "x".repeat(20).as_str()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        new_vendor.status(),
        StatusCode::UNAUTHORIZED,
        "an agent token cannot create vendors"
    );

    assert_eq!(
        heartbeat(&app, "vendor-a", &token_a).await,
        StatusCode::OK,
        "vendor-a untouched"
    );
    assert_eq!(
        heartbeat(&app, "vendor-a", "attacker-token-0123456789").await,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test]
async fn an_agent_rotates_its_own_token_and_the_old_one_stops_at_once(db: PgPool) {
    let app = spawn_app(db).await;
    let old = app.register_agent("v1").await;
    assert_eq!(heartbeat(&app, "v1", &old).await, StatusCode::OK); // now cached as verified
    let new = "rotated-token-0123456789";
    // The same agentUrl: a token may rotate itself, not move the agent (that needs the admin).
    let mut rotation = registration("v1", new);
    rotation["agentUrl"] = json!("http://127.0.0.1:9/agent");
    let rotated = app
        .agent_post("/api/agents/register", &old, &rotation)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK, "rotation is 200, not 201");
    assert_eq!(
        heartbeat(&app, "v1", &old).await,
        StatusCode::UNAUTHORIZED,
        "old token refused despite the cache"
    );
    assert_eq!(heartbeat(&app, "v1", new).await, StatusCode::OK);
}

#[sqlx::test]
async fn deregistered_agents_are_refused(db: PgPool) {
    let app = spawn_app(db).await;
    let token = app.register_agent("v1").await;
    assert_eq!(heartbeat(&app, "v1", &token).await, StatusCode::OK);
    let response = app.admin_delete("/api/agents/v1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let agent: Value = response.json().await.unwrap();
    assert_eq!(agent["status"], "offline");
    assert!(agent["deregisteredAt"].is_string());
    assert_eq!(
        heartbeat(&app, "v1", &token).await,
        StatusCode::UNAUTHORIZED
    );
    let rotate = app
        .agent_post(
            "/api/agents/register",
            &token,
            &registration("v1", "another-token-0123456"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        rotate.status(),
        StatusCode::UNAUTHORIZED,
        "a deregistered token cannot re-register"
    );
    // The admin may bring it back.
    let back = app
        .admin_post(
            "/api/agents/register",
            &registration("v1", "fresh-token-0123456789"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(
        heartbeat(&app, "v1", "fresh-token-0123456789").await,
        StatusCode::OK
    );

    assert_eq!(
        app.admin_delete("/api/agents/nobody")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test]
async fn registration_validates_its_body(db: PgPool) {
    let app = spawn_app(db).await;
    for (field, value) in [
        ("agentUrl", json!("ftp://agent.example.com")),
        ("agentUrl", json!("/relative")),
        ("agentUrl", json!("https://user:pw@agent.example.com")),
        ("erpType", json!("sap")),
        ("authToken", json!("short")),
        ("vendorId", json!("")),
        ("vendorId", json!("has space")),
    ] {
        let mut body = registration("v1", "valid-token-0123456789");
        body[field] = value.clone();
        let response = app
            .admin_post("/api/agents/register", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}"
        );
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("valid-token-0123456789"),
            "the token is never echoed: {text}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_registry")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing written");
}

#[sqlx::test]
async fn heartbeat_sets_online_and_version(db: PgPool) {
    let app = spawn_app(db).await;
    let token = app.register_agent("v1").await;
    let response = app
        .agent_post(
            "/api/agents/heartbeat",
            &token,
            &json!({"vendorId": "v1", "version": "3.1.4"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let agent: Value = app
        .admin_get("/api/agents/v1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent["status"], "online");
    assert_eq!(agent["version"], "3.1.4");
    assert!(agent["lastHeartbeat"].is_string());
    let all: Vec<Value> = app
        .admin_get("/api/agents")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert!(all.iter().all(|a| a.get("authTokenHash").is_none()));
    assert_eq!(
        app.admin_get("/api/agents/nobody")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test]
async fn check_health_demotes_stale_agents_once(db: PgPool) {
    let app = spawn_app(db).await;
    let token = app.register_agent("v1").await;
    app.register_agent("v2").await; // never beats: already offline, never reported as a change
    assert_eq!(heartbeat(&app, "v1", &token).await, StatusCode::OK);
    let agents = &app.state.agents;
    let now = Utc::now();

    assert!(agents.check_health_at(now).await.unwrap().is_empty());
    let changes = agents
        .check_health_at(now + Duration::seconds(61))
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            changes[0].vendor_id.as_str(),
            changes[0].previous_status.as_str(),
            changes[0].status.as_str()
        ),
        ("v1", "online", "degraded")
    );
    assert!(
        agents
            .check_health_at(now + Duration::seconds(62))
            .await
            .unwrap()
            .is_empty(),
        "reported once"
    );
    let changes = agents
        .check_health_at(now + Duration::seconds(301))
        .await
        .unwrap();
    assert_eq!(
        (
            changes[0].previous_status.as_str(),
            changes[0].status.as_str()
        ),
        ("degraded", "offline")
    );

    assert_eq!(heartbeat(&app, "v1", &token).await, StatusCode::OK);
    let agent: Value = app
        .admin_get("/api/agents/v1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent["status"], "online", "a heartbeat brings it back");
}

#[sqlx::test]
async fn health_thresholds_come_from_config(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("AGENT_DEGRADED_AFTER_SECS".into(), "5".into()));
        vars.push(("AGENT_OFFLINE_AFTER_SECS".into(), "10".into()));
    })
    .await;
    let token = app.register_agent("v1").await;
    heartbeat(&app, "v1", &token).await;
    let changes = app
        .state
        .agents
        .check_health_at(Utc::now() + Duration::seconds(11))
        .await
        .unwrap();
    assert_eq!(changes[0].status, "offline");
}

#[sqlx::test]
async fn registration_is_rate_limited_per_client(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("REGISTER_RATE_LIMIT_PER_MIN".into(), "10".into()))
    })
    .await;
    for i in 0..10 {
        let response = app
            .admin_post(
                "/api/agents/register",
                &registration(&format!("v{i}"), "some-token-0123456789"),
            )
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "request {i}: {}",
            response.status()
        );
    }
    let limited = app
        .admin_post(
            "/api/agents/register",
            &registration("v10", "some-token-0123456789"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[sqlx::test]
async fn no_token_hash_or_api_key_reaches_the_logs(db: PgPool) {
    let app = spawn_app(db).await;
    let token = format!("log-probe-token-{}", uuid::Uuid::new_v4().simple());
    app.admin_post("/api/agents/register", &registration("v-logs", &token))
        .send()
        .await
        .unwrap();
    heartbeat(&app, "v-logs", &token).await;
    heartbeat(&app, "v-logs", "wrong-token-for-logs-0123").await;
    app.agent_post(
        "/api/agents/register",
        &token,
        &registration("v-logs", "rotated-log-probe-0123456"),
    )
    .send()
    .await
    .unwrap();
    app.admin_post(
        "/api/agents/register",
        &json!({"vendorId": "v-logs", "authToken": token}),
    )
    .send()
    .await
    .unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT auth_token_hash FROM agent_registry WHERE vendor_id = 'v-logs'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let logs = crate::helpers::captured_logs();
    assert!(logs.contains("v-logs"), "the probe's requests were logged");
    for secret in [
        token.as_str(),
        "rotated-log-probe-0123456",
        "wrong-token-for-logs-0123",
        hash.as_str(),
        crate::helpers::API_KEY,
    ] {
        assert!(!logs.contains(secret), "{secret} reached the logs");
    }
}
