//! Outbound order sync end to end: real Postgres, real Redis (a prefix per test), a real mock
//! agent on 127.0.0.1:0, the real worker.

use std::time::{Duration, Instant};

use base64::Engine;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::{AGENT_SECRET, TestApp, spawn_app_with},
    mock_agent::{MockAgent, Reply},
};

pub(crate) const VENDOR: &str = "vendor-a";

pub(crate) async fn order_app(db: PgPool, extra: &[(&str, &str)]) -> TestApp {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spawn_app_with(db, move |vars| {
        vars.push(("ORDER_SYNC_ENABLED".into(), "true".into()));
        vars.push(("ORDER_SYNC_BACKOFF_MS".into(), "50".into()));
        vars.push(("ORDER_SYNC_SWEEP_INTERVAL_MS".into(), "200".into()));
        vars.push(("AGENT_TIMEOUT_MS".into(), "1000".into()));
        vars.push(("ORDER_SYNC_MAX_ATTEMPTS".into(), "3".into()));
        vars.extend(extra);
    })
    .await
}

pub(crate) async fn insert_order(db: &PgPool, vendor: &str) -> Uuid {
    let id = Uuid::new_v4();
    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, vendor_id, total_amount) VALUES ($1, $2, 42.50)")
        .bind(id)
        .bind(vendor)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO order_lines (order_id, sku, quantity, unit_price) VALUES ($1, 'SKU-1', 2, 21.25)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

pub(crate) async fn job_of(db: &PgPool, order_id: Uuid) -> Value {
    let row: (Uuid, String, i32, Option<String>) = sqlx::query_as(
        "SELECT id, status, retry_count, erp_reference FROM sync_jobs WHERE postgres_order_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(order_id)
    .fetch_one(db)
    .await
    .unwrap();
    json!({"id": row.0, "status": row.1, "attempts": row.2, "erpReference": row.3})
}

/// An agent that is online, written straight into the registry (for tests where the service
/// must not run before the agent exists).
pub(crate) async fn register_online(db: &PgPool, agent_url: &str) {
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
         VALUES ($1, $2, 'ebp', $3, 'online', now())",
    )
    .bind(VENDOR)
    .bind(agent_url)
    .bind(bcrypt::hash("unused-token-0123456789", 4).unwrap())
    .execute(db)
    .await
    .unwrap();
}

/// Polls until `check` holds (the worker is asynchronous), failing after `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub(crate) async fn status_is(db: &PgPool, order_id: Uuid, status: &str) -> bool {
    job_of(db, order_id).await["status"] == status
}

#[sqlx::test]
async fn an_order_reaches_the_agent_and_its_erp_reference_comes_back(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    let agent = MockAgent::start(Reply::Done("ERP-777".into())).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    let signing_secret = app
        .register_agent_with_secret(VENDOR, &token, &agent.url)
        .await;
    app.agent_post(
        "/api/agents/heartbeat",
        &token,
        &json!({"vendorId": VENDOR}),
    )
    .send()
    .await
    .unwrap();

    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(10), "job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    let reference: Option<String> =
        sqlx::query_scalar("SELECT erp_reference FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(reference.as_deref(), Some("ERP-777"));

    let calls = agent.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    let job_id = job_of(&db, order_id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(call.body["jobId"], job_id.as_str());
    assert_eq!(call.body["orderId"], order_id.to_string());
    assert_eq!(
        call.body["order"]["lines"][0]["sku"], "SKU-1",
        "the payload carries the lines"
    );
    assert!(
        call.headers.get("authorization").is_none(),
        "no shared secret travels to an agent that has its own"
    );
    // One idempotency key per order, whatever job carries it: the order id.
    let order_key = order_id.to_string();
    assert_eq!(call.headers["idempotency-key"], order_key.as_str());
    assert!(!call.headers["x-correlation-id"].is_empty());
    // The Standard Webhooks signature verifies with the agent's own secret.
    let timestamp: i64 = call.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(signing_secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let expected = erp_sync::agents::signing::sign(&key, &order_key, timestamp, &call.raw);
    assert_eq!(call.headers["webhook-signature"], expected.as_str());
    assert_ne!(
        expected,
        erp_sync::agents::signing::sign(AGENT_SECRET.as_bytes(), &order_key, timestamp, &call.raw),
        "not signed with the shared secret"
    );
    assert_eq!(call.headers["webhook-id"], order_key.as_str());
}

#[sqlx::test]
async fn accepted_orders_complete_on_callback_once(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    let agent = MockAgent::start(Reply::Accepted).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(VENDOR, &token, &agent.url).await;
    app.agent_post(
        "/api/agents/heartbeat",
        &token,
        &json!({"vendorId": VENDOR}),
    )
    .send()
    .await
    .unwrap();
    let other_token = app.register_agent("vendor-b").await;

    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(10), "agent called", || async {
        !agent.calls().is_empty()
    })
    .await;
    eventually(Duration::from_secs(5), "job awaits callback", || {
        status_is(&db, order_id, "processing")
    })
    .await;
    let job_id = job_of(&db, order_id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let callback = |vendor: &str, reference: &str| json!({"vendorId": vendor, "jobId": job_id, "status": "completed", "erpReference": reference});
    let refused = app
        .agent_post(
            "/api/agents/callback",
            &other_token,
            &callback("vendor-b", "ERP-EVIL"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "another vendor's agent cannot complete this job"
    );
    let unknown = app
        .agent_post("/api/agents/callback", &token, &json!({"vendorId": VENDOR, "jobId": Uuid::new_v4(), "status": "completed", "erpReference": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let done = app
        .agent_post("/api/agents/callback", &token, &callback(VENDOR, "ERP-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.json::<Value>().await.unwrap()["status"], "completed");
    let again = app
        .agent_post("/api/agents/callback", &token, &callback(VENDOR, "ERP-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "a repeated callback is a no-op"
    );
    let late = app
        .agent_post("/api/agents/callback", &token, &callback(VENDOR, "ERP-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        late.json::<Value>().await.unwrap()["erpReference"],
        "ERP-1",
        "a contradicting late callback changes nothing"
    );
    let failed = app
        .agent_post(
            "/api/agents/callback",
            &token,
            &json!({"vendorId": VENDOR, "jobId": job_id, "status": "failed", "error": "late"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(failed.json::<Value>().await.unwrap()["status"], "completed");
    let reference: Option<String> =
        sqlx::query_scalar("SELECT erp_reference FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(reference.as_deref(), Some("ERP-1"));
    assert_eq!(agent.calls().len(), 1);
}

#[sqlx::test]
async fn server_errors_are_retried_max_attempts_times_then_dead_lettered(db: PgPool) {
    let app = order_app(db.clone(), &[("BREAKER_MIN_CALLS", "100")]).await;
    let agent = MockAgent::start(Reply::Status(503)).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(VENDOR, &token, &agent.url).await;
    app.agent_post(
        "/api/agents/heartbeat",
        &token,
        &json!({"vendorId": VENDOR}),
    )
    .send()
    .await
    .unwrap();

    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(20), "job failed", || {
        status_is(&db, order_id, "failed")
    })
    .await;
    assert_eq!(
        agent.calls().len(),
        3,
        "exactly ORDER_SYNC_MAX_ATTEMPTS calls"
    );
    let job_ids: Vec<String> = agent
        .calls()
        .iter()
        .map(|c| c.body["jobId"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        job_ids.windows(2).all(|w| w[0] == w[1]),
        "every retry carries the same jobId"
    );

    let page: Value = app
        .admin_get(&format!("/api/admin/dlq?vendorId={VENDOR}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
    let entry = &page["data"][0];
    assert_eq!(entry["attemptCount"], 3);
    assert!(entry["failureReason"].as_str().unwrap().contains("503"));
    assert_eq!(entry["payload"]["orderId"], order_id.to_string());

    // Retry from the DLQ: a new job, which now succeeds.
    agent.set_fallback(Reply::Done("ERP-RETRIED".into()));
    let id = entry["id"].as_str().unwrap();
    let retried = app
        .admin_post(&format!("/api/admin/dlq/{id}/retry"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["entry"]["retriedJobId"], retried["job"]["id"]);
    eventually(Duration::from_secs(10), "retried job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    let again = app
        .admin_post(&format!("/api/admin/dlq/{id}/retry"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "a retried entry is resolved"
    );
    let page: Value = app
        .admin_get("/api/admin/dlq")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 0);
}

#[sqlx::test]
async fn permanent_client_errors_are_not_retried(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    let agent = MockAgent::start(Reply::Status(422)).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(VENDOR, &token, &agent.url).await;
    app.agent_post(
        "/api/agents/heartbeat",
        &token,
        &json!({"vendorId": VENDOR}),
    )
    .send()
    .await
    .unwrap();

    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(10), "job failed", || {
        status_is(&db, order_id, "failed")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(agent.calls().len(), 1, "a permanent 4xx is tried once");
    let page: Value = app
        .admin_get("/api/admin/dlq")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = page["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        page["data"][0]["failureReason"]
            .as_str()
            .unwrap()
            .starts_with("permanent")
    );

    let resolved = app
        .admin_post(
            &format!("/api/admin/dlq/{id}/resolve"),
            &json!({"resolvedBy": "alice"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), StatusCode::OK);
    assert_eq!(
        resolved.json::<Value>().await.unwrap()["resolvedBy"],
        "alice"
    );
    let detail: Value = app
        .admin_get(&format!("/api/admin/dlq/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["resolved"], true);
}

#[sqlx::test]
async fn orders_inserted_while_the_service_is_down_are_synced_at_start(db: PgPool) {
    // No service yet: the trigger still records one job per order.
    let orders: Vec<Uuid> =
        futures::future::join_all((0..5).map(|_| insert_order(&db, VENDOR))).await;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_jobs WHERE status = 'pending'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(pending, 5);

    let agent = MockAgent::start(Reply::Done("ERP-LATE".into())).await;
    register_online(&db, &agent.url).await;
    let _app = order_app(db.clone(), &[]).await;
    for order_id in orders {
        eventually(Duration::from_secs(15), "late order synced", || {
            status_is(&db, order_id, "completed")
        })
        .await;
    }
    assert_eq!(agent.calls().len(), 5);
}

#[sqlx::test]
async fn never_two_live_jobs_for_one_order(db: PgPool) {
    let app = order_app(db.clone(), &[("ORDER_SYNC_ENABLED", "false")]).await;
    let order_id = insert_order(&db, VENDOR).await;
    let manual = app
        .admin_post(&format!("/api/admin/orders/{order_id}/sync"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        manual.status(),
        StatusCode::CONFLICT,
        "the trigger's job is live"
    );
    let direct = sqlx::query("INSERT INTO sync_jobs (postgres_order_id, vendor_id, operation, payload) VALUES ($1, $2, 'create_order', '{}')")
        .bind(order_id)
        .bind(VENDOR)
        .execute(&db)
        .await;
    assert!(
        direct.is_err(),
        "the database itself refuses a second live job"
    );
    let swept = erp_sync::orders::job_queries::create_missing(&db, chrono::Duration::days(1), 100)
        .await
        .unwrap();
    assert!(swept.is_empty(), "the sweep does not add one either");
    let missing = app
        .admin_post(
            &format!("/api/admin/orders/{}/sync", Uuid::new_v4()),
            &json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Once the live job is finished, a manual re-sync is allowed.
    sqlx::query("UPDATE sync_jobs SET status = 'failed'")
        .execute(&db)
        .await
        .unwrap();
    let manual = app
        .admin_post(&format!("/api/admin/orders/{order_id}/sync"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(manual.status(), StatusCode::ACCEPTED);
    let job: Value = manual.json().await.unwrap();
    let status: Value = app
        .admin_get(&format!(
            "/api/admin/sync-status/{}",
            job["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "pending");
    let page: Value = app
        .admin_get(&format!("/api/admin/sync-jobs?orderId={order_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 2);
}

#[sqlx::test]
async fn the_breaker_opens_stops_calls_and_lets_one_probe_through(db: PgPool) {
    let app = order_app(
        db.clone(),
        &[
            ("ORDER_SYNC_MAX_ATTEMPTS", "20"),
            ("BREAKER_OPEN_MS", "3000"),
            ("ORDER_SYNC_BACKOFF_MS", "20"),
        ],
    )
    .await;
    let agent = MockAgent::start(Reply::Status(500)).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(VENDOR, &token, &agent.url).await;
    app.agent_post(
        "/api/agents/heartbeat",
        &token,
        &json!({"vendorId": VENDOR}),
    )
    .send()
    .await
    .unwrap();

    for _ in 0..6 {
        insert_order(&db, VENDOR).await;
    }
    eventually(Duration::from_secs(10), "breaker open", || async {
        let breakers: Value = app
            .admin_get("/api/admin/circuit-breakers")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        breakers
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["state"] == "OPEN"))
    })
    .await;
    let calls_when_open = agent.calls().len();
    assert!(
        calls_when_open >= 5,
        "opened after at least BREAKER_MIN_CALLS calls"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(agent.calls().len(), calls_when_open, "no call while open");

    // Half-open after BREAKER_OPEN_MS: one probe, which fails, so it opens again (for another
    // 3 s: the check below is well inside that window).
    eventually(Duration::from_secs(5), "a probe", || async {
        agent.calls().len() > calls_when_open
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent.calls().len(),
        calls_when_open + 1,
        "exactly one probe while half-open"
    );

    let reset = app
        .admin_post(
            &format!("/api/admin/circuit-breakers/{VENDOR}/orders/reset"),
            &json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::OK);
    let breakers: Value = app
        .admin_get("/api/admin/circuit-breakers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(breakers[0]["state"], "CLOSED");
    let unknown = app
        .admin_post(
            "/api/admin/circuit-breakers/nobody/orders/reset",
            &json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn a_worker_killed_mid_job_does_not_lose_it(db: PgPool) {
    // The first call hangs past the agent timeout; the service is killed while it waits.
    let agent = MockAgent::start(Reply::Done("ERP-AFTER-CRASH".into())).await;
    agent.then(Reply::Hang(Duration::from_secs(5)));
    let redis_prefix = crate::helpers::RedisPrefix::new();
    let prefix = redis_prefix.0.clone();
    let vars = |prefix: &str| {
        let mut vars = crate::helpers::test_vars(prefix);
        vars.extend([
            ("ORDER_SYNC_ENABLED".to_string(), "true".to_string()),
            ("ORDER_SYNC_BACKOFF_MS".to_string(), "50".to_string()),
            ("ORDER_SYNC_SWEEP_INTERVAL_MS".into(), "200".into()),
            ("AGENT_TIMEOUT_MS".into(), "800".into()),
        ]);
        erp_sync::config::Settings::from_vars(vars).unwrap()
    };
    let first = erp_sync::startup::Application::build_with_pool(vars(&prefix), db.clone())
        .await
        .unwrap();
    let running = tokio::spawn(first.run(tokio_util::sync::CancellationToken::new()));
    register_online(&db, &agent.url).await;
    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(10), "agent called", || async {
        !agent.calls().is_empty()
    })
    .await;
    running.abort(); // a crash: no graceful anything
    let _ = running.await;
    assert!(
        status_is(&db, order_id, "processing").await,
        "the job was in flight"
    );

    let second = order_app(db.clone(), &[("AGENT_TIMEOUT_MS", "800")]).await;
    eventually(
        Duration::from_secs(15),
        "job completed after the crash",
        || status_is(&db, order_id, "completed"),
    )
    .await;
    let calls = agent.calls();
    assert!(calls.len() >= 2);
    assert!(
        calls
            .iter()
            .all(|c| c.body["jobId"] == calls[0].body["jobId"]),
        "redone with the same idempotency key"
    );
    let reference: Option<String> =
        sqlx::query_scalar("SELECT erp_reference FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(reference.as_deref(), Some("ERP-AFTER-CRASH"));
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_jobs WHERE postgres_order_id = $1")
            .bind(order_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(jobs, 1, "still one job");
    drop(second);
}

#[sqlx::test]
async fn retry_after_is_honoured(db: PgPool) {
    let agent = MockAgent::start(Reply::Done("ERP-2".into())).await;
    agent.then(Reply::RetryAfter(429, 2));
    register_online(&db, &agent.url).await;
    let _app = order_app(db.clone(), &[]).await;
    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(15), "job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    let calls = agent.calls();
    assert_eq!(calls.len(), 2);
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, Retry-After said 2 s (backoff alone is 50 ms)"
    );
}

#[sqlx::test]
async fn a_missing_callback_makes_the_job_retry_after_the_deadline(db: PgPool) {
    let agent = MockAgent::start(Reply::Done("ERP-SECOND".into())).await;
    agent.then(Reply::Accepted);
    register_online(&db, &agent.url).await;
    let _app = order_app(db.clone(), &[("ORDER_SYNC_CALLBACK_TIMEOUT_MS", "500")]).await;
    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(15), "job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    let calls = agent.calls();
    assert_eq!(
        calls.len(),
        2,
        "no callback within the deadline: delivered again"
    );
    assert_eq!(calls[0].body["jobId"], calls[1].body["jobId"]);
    assert_eq!(job_of(&db, order_id).await["attempts"], 2);
}

#[sqlx::test]
async fn offline_agents_are_not_called(db: PgPool) {
    let agent = MockAgent::start(Reply::Done("ERP-BACK".into())).await;
    register_online(&db, &agent.url).await;
    sqlx::query("UPDATE agent_registry SET last_heartbeat = now() - interval '10 minutes'")
        .execute(&db)
        .await
        .unwrap();
    let app = order_app(db.clone(), &[]).await;
    let order_id = insert_order(&db, VENDOR).await;
    // Several sweeps (200 ms) and backoffs (50 ms) pass: the job waits, spending nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(agent.calls().is_empty(), "an offline agent is never called");
    let job = job_of(&db, order_id).await;
    assert_eq!(job["status"], "pending", "waiting, not failed: {job}");
    assert_eq!(job["attempts"], 0, "no attempt spent without a call");
    let page: Value = app
        .admin_get("/api/admin/dlq")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 0, "nothing dead-lettered");

    // The agent comes back: the order goes through, on its first attempt.
    sqlx::query("UPDATE agent_registry SET last_heartbeat = now()")
        .execute(&db)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    assert_eq!(agent.calls().len(), 1);
    assert_eq!(job_of(&db, order_id).await["attempts"], 1);
}

#[sqlx::test]
async fn graceful_shutdown_finishes_the_job_in_hand(db: PgPool) {
    let agent = MockAgent::start(Reply::SlowDone(
        "ERP-SLOW".into(),
        Duration::from_millis(700),
    ))
    .await;
    register_online(&db, &agent.url).await;
    let prefix = crate::helpers::RedisPrefix::new();
    let mut vars = crate::helpers::test_vars(&prefix.0);
    vars.push(("ORDER_SYNC_SWEEP_INTERVAL_MS".into(), "200".into()));
    vars.push(("ORDER_SYNC_ENABLED".into(), "true".into()));
    let app = erp_sync::startup::Application::build_with_pool(
        erp_sync::config::Settings::from_vars(vars).unwrap(),
        db.clone(),
    )
    .await
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(10), "agent called", || async {
        !agent.calls().is_empty()
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    assert!(
        status_is(&db, order_id, "completed").await,
        "the job in hand was finished before stopping"
    );
}
