//! SSRF: erp-sync calls only the addresses a deployment allows, at registration and at every
//! connection; an agent token cannot move its agent; what an agent answers is stored short.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use erp_sync::{
    agents::client::{AgentHttp, AgentTarget, StoredSigning, TransportError},
    config::Settings,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::{TestApp, eventually, spawn_app, spawn_app_with, test_vars},
    mock_agent::{MockAgent, Reply},
};

fn registration(vendor: &str, agent_url: &str) -> Value {
    json!({"vendorId": vendor, "agentUrl": agent_url, "erpType": "odoo", "authToken": "some-token-0123456789"})
}

async fn register_status(app: &TestApp, vendor: &str, agent_url: &str) -> (StatusCode, Value) {
    let response = app
        .admin_post("/api/agents/register", &registration(vendor, agent_url))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn agent_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM agent_registry")
        .fetch_one(db)
        .await
        .unwrap()
}

/// A TCP listener that only counts the connections made to it.
async fn connection_counter() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

#[sqlx::test]
async fn metadata_link_local_and_urls_with_a_query_are_refused_everywhere(db: PgPool) {
    // Development: loopback and private ranges are allowed, these never are.
    let app = spawn_app_with(db, |vars| {
        vars.push(("REGISTER_RATE_LIMIT_PER_MIN".into(), "100".into()));
    })
    .await;
    for url in [
        "http://169.254.169.254/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]:8080/",
        "http://0.0.0.0:8080/",
        "http://[fd00:ec2::254]/",
        "https://agent.example.com/erp?x=",
        "http://10.0.0.5:8080/admin/reset?x=",
        "https://agent.example.com/erp#fragment",
    ] {
        let (status, body) = register_status(&app, "v1", url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        // (Field rules name the field `agent_url` today, the address policy `agentUrl`.)
        let details = &body["error"]["details"];
        assert!(
            details["agentUrl"].is_array() || details["agent_url"].is_array(),
            "{url}: {body}"
        );
    }
    assert_eq!(agent_count(&app.db).await, 0, "nothing written");
    let (status, _) = register_status(&app, "v1", "http://127.0.0.1:9/agent").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "loopback is fine in development"
    );
}

#[sqlx::test]
async fn production_refuses_loopback_private_and_plain_http(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("APP_ENV".into(), "production".into()));
        vars.push(("REGISTER_RATE_LIMIT_PER_MIN".into(), "100".into()));
    })
    .await;
    for url in [
        "https://127.0.0.1/",
        "https://127.0.0.1:8443/agent",
        "https://10.0.0.5:8080/admin/reset",
        "https://192.168.1.20/",
        "https://100.64.0.1/",
        "https://[::1]/",
        "https://[fd12::1]/",
        "https://localhost:8443/",
        "http://agent.example.com/erp",
        "https://169.254.169.254/",
    ] {
        let (status, body) = register_status(&app, "v1", url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
    }
    assert_eq!(agent_count(&app.db).await, 0, "nothing written");
    // A public name that does not resolve here is left to the connect-time check.
    let (status, body) = register_status(&app, "v1", "https://agent.example.com/erp").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn settings(allow_private: bool) -> Settings {
    let mut vars = test_vars("unused");
    vars.push(("AGENT_URL_ALLOW_PRIVATE".into(), allow_private.to_string()));
    vars.push(("AGENT_TIMEOUT_MS".into(), "2000".into()));
    Settings::from_vars(vars).unwrap()
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_never_connected_to() {
    let (port, connections) = connection_counter().await;
    let http = AgentHttp::new(&settings(false)).unwrap().unwrap();
    let signing = StoredSigning::default();
    for url in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://127.1:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
    ] {
        let target = AgentTarget {
            vendor_id: "v1",
            agent_url: &url,
            signing: &signing,
        };
        let outcome = match http.request(&target, Method::POST, &["sync", "create-order"]) {
            Ok(request) => request.send(1024).await.map(|r| r.status),
            Err(refused) => Err(refused),
        };
        assert!(
            matches!(&outcome, Err(TransportError::Refused(reason)) if reason.contains("127.0.0.1") || reason.contains("::1")),
            "{url}: {outcome:?}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no connection was ever opened"
    );

    // The same client with private addresses allowed does reach the agent (the refusal above
    // is the policy, not a broken client).
    let agent = MockAgent::start(Reply::Done("ERP-1".into())).await;
    let url = agent.url.replace("127.0.0.1", "localhost");
    let http = AgentHttp::new(&settings(true)).unwrap().unwrap();
    let target = AgentTarget {
        vendor_id: "v1",
        agent_url: &url,
        signing: &signing,
    };
    let response = http
        .request(&target, Method::POST, &["sync", "create-order"])
        .unwrap()
        .json(&json!({}))
        .unwrap()
        .send(1024)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(agent.calls().len(), 1);
}

#[sqlx::test]
async fn the_worker_never_calls_an_agent_whose_name_now_resolves_inside(db: PgPool) {
    // DNS rebinding: the name was registered while it resolved elsewhere, and now resolves to
    // 127.0.0.1. Written straight into the registry, as registration would now refuse it.
    let app = spawn_app_with(db.clone(), |vars| {
        vars.push(("AGENT_URL_ALLOW_PRIVATE".into(), "false".into()));
        vars.push(("ORDER_SYNC_ENABLED".into(), "true".into()));
        vars.push(("ORDER_SYNC_BACKOFF_MS".into(), "50".into()));
        vars.push(("ORDER_SYNC_SWEEP_INTERVAL_MS".into(), "200".into()));
        vars.push(("ORDER_SYNC_MAX_ATTEMPTS".into(), "2".into()));
    })
    .await;
    let (port, connections) = connection_counter().await;
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
         VALUES ('v1', $1, 'ebp', 'unused', 'online', now())",
    )
    .bind(format!("http://localhost:{port}/erp"))
    .execute(&db)
    .await
    .unwrap();
    let order_id = Uuid::new_v4();
    sqlx::query("INSERT INTO orders (id, vendor_id, total_amount) VALUES ($1, 'v1', 10)")
        .bind(order_id)
        .execute(&db)
        .await
        .unwrap();
    // The agent is never called, so no attempt is spent (DESIGN "Orders"): the job waits,
    // saying why, until an operator fixes the agent's address.
    let job_row = || async {
        sqlx::query_as::<_, (String, i32, Option<String>)>(
            "SELECT status, retry_count, error_message FROM sync_jobs WHERE postgres_order_id = $1",
        )
        .bind(order_id)
        .fetch_one(&db)
        .await
        .unwrap()
    };
    eventually(
        Duration::from_secs(15),
        "the refusal is recorded",
        || async {
            job_row()
                .await
                .2
                .is_some_and(|e| e.contains("agent not called: localhost: "))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // several more rounds of 50 ms
    // The job is claimed and put back each round, so it may be read in either state; what
    // matters is that no attempt was spent and it was never given up on.
    let (status, attempts, _) = job_row().await;
    assert!(
        matches!(status.as_str(), "pending" | "processing") && attempts == 0,
        "no attempt spent, not dead-lettered: {status}, {attempts} attempts"
    );
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letter_queue")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(dead_letters, 0, "nothing dead-lettered");
    assert_eq!(connections.load(Ordering::SeqCst), 0, "never connected");
    drop(app);
}

#[sqlx::test]
async fn a_stolen_token_cannot_move_the_agent(db: PgPool) {
    let app = spawn_app(db).await;
    let token = app.register_agent("v1").await; // at http://127.0.0.1:9/agent
    let before: (String, String, Vec<u8>) = sqlx::query_as(
        "SELECT agent_url, auth_token_hash, signing_secret_sealed FROM agent_registry WHERE vendor_id = 'v1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();

    let mut redirect = registration("v1", "https://attacker.example.net/collect");
    redirect["authToken"] = json!("attacker-token-0123456789");
    let response = app
        .agent_post("/api/agents/register", &token, &redirect)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body.get("signingSecret").is_none());

    let after: (String, String, Vec<u8>) = sqlx::query_as(
        "SELECT agent_url, auth_token_hash, signing_secret_sealed FROM agent_registry WHERE vendor_id = 'v1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(before, after, "nothing changed");
    let beat = |token: &str| {
        app.agent_post("/api/agents/heartbeat", token, &json!({"vendorId": "v1"}))
            .send()
    };
    assert_eq!(beat(&token).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        beat("attacker-token-0123456789").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // The same URL, spelled differently, is not a move; the admin may move it.
    let mut same = registration("v1", "HTTP://127.0.0.1:9/agent");
    same["authToken"] = json!("rotated-token-0123456789");
    let response = app
        .agent_post("/api/agents/register", &token, &same)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = register_status(&app, "v1", "https://agent.example.com/moved").await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test]
async fn what_an_agent_answers_is_stored_short_and_without_control_characters(db: PgPool) {
    let app = spawn_app_with(db.clone(), |vars| {
        vars.push(("ORDER_SYNC_ENABLED".into(), "true".into()));
        vars.push(("ORDER_SYNC_SWEEP_INTERVAL_MS".into(), "200".into()));
    })
    .await;
    // A permanent refusal whose body is long, multi-line, and hides something far down.
    let body = format!("refused\r\n\u{1b}[31m{}INTERNAL-DETAIL", "x".repeat(5000));
    let agent = MockAgent::start(Reply::Body(400, body)).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at("v1", &token, &agent.url).await;
    app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": "v1"}))
        .send()
        .await
        .unwrap();
    let order_id = Uuid::new_v4();
    sqlx::query("INSERT INTO orders (id, vendor_id, total_amount) VALUES ($1, 'v1', 10)")
        .bind(order_id)
        .execute(&db)
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "the job failed", || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM sync_jobs WHERE postgres_order_id = $1")
                .bind(order_id)
                .fetch_optional(&db)
                .await
                .unwrap();
        status.as_deref() == Some("failed")
    })
    .await;
    let (error, reason): (String, String) = sqlx::query_as(
        "SELECT j.error_message, d.failure_reason FROM sync_jobs j
         JOIN dead_letter_queue d ON d.original_job_id = j.id WHERE j.postgres_order_id = $1",
    )
    .bind(order_id)
    .fetch_one(&db)
    .await
    .unwrap();
    for stored in [&error, &reason] {
        assert!(stored.contains("HTTP 400: refused"), "{stored}");
        assert!(
            stored.chars().count() < 300,
            "{} chars",
            stored.chars().count()
        );
        assert!(!stored.chars().any(char::is_control), "{stored:?}");
        assert!(!stored.contains("INTERNAL-DETAIL"));
    }
}
