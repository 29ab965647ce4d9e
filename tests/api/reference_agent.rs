//! The reference agent (examples/agent/) against the real service: it heartbeats, pushes its
//! catalogue through the batch routes, completes orders answering 200 or 202 + callback, and
//! passes every create-order check of `agent-check --orders`.

#[path = "../../examples/agent/agent.rs"]
mod agent;

use std::time::Duration;

use erp_sync::reconciliation::agent_check::{AgentCheckArgs, run};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    ingest::{seed_mappings, ts},
    mock_erp::erp_item,
    orders::{eventually, insert_order, job_of, order_app, status_is},
};

fn catalogue() -> Value {
    let stock = |sku: &str| json!({"sku": sku, "quantity": 12.5, "reservedQuantity": 1, "contentHash": format!("s-{sku}"), "lastModifiedAt": ts(0)});
    json!({
        "warehouses": [{"erpWarehouseId": "W1", "name": "Rungis", "contentHash": "w1", "lastModifiedAt": ts(0)}],
        "items": [erp_item("SKU-1", 1), erp_item("SKU-2", 1), erp_item("SKU-3", 1)],
        "stock": {"W1": [stock("SKU-1"), stock("SKU-2")]},
    })
}

async fn count(db: &PgPool, table: &str, vendor: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE vendor_id = $1"
    )))
    .bind(vendor)
    .fetch_one(db)
    .await
    .unwrap()
}

#[sqlx::test]
async fn the_reference_agent_syncs_completes_orders_and_passes_agent_check(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    let dir = std::env::temp_dir().join(format!("reference-agent-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let catalogue_path = dir.join("catalogue.json");
    std::fs::write(&catalogue_path, catalogue().to_string()).unwrap();

    for (mode, vendor) in [
        (agent::Mode::Sync, "ref-agent-sync"),
        (agent::Mode::Async, "ref-agent-async"),
    ] {
        seed_mappings(&app, vendor).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_url = format!("http://{}", listener.local_addr().unwrap());
        let token = format!("fake-token-{}", uuid::Uuid::new_v4().simple());
        let secret = app
            .register_agent_with_secret(vendor, &token, &agent_url)
            .await;
        let store_path = dir.join(format!("{vendor}-store.json"));
        let agent = agent::Agent::new(agent::Config {
            erp_sync_url: app.url(""),
            vendor_id: vendor.into(),
            token,
            signing_secret: secret.clone(),
            catalogue: agent::Catalogue::load(&catalogue_path).unwrap(),
            store_path: store_path.clone(),
            mode,
            test_mode: true,
            heartbeat: Duration::from_millis(200),
        })
        .unwrap();
        let server =
            tokio::spawn(axum::serve(listener, agent::router(agent.clone())).into_future());
        let heartbeat = tokio::spawn(agent::heartbeat_loop(agent.clone()));

        // Heartbeat, then the catalogue.
        eventually(Duration::from_secs(10), "agent online", || async {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM agent_registry WHERE vendor_id = $1")
                    .bind(vendor)
                    .fetch_optional(&db)
                    .await
                    .unwrap();
            status.as_deref() == Some("online")
        })
        .await;
        agent::push_catalogue(&agent).await.unwrap();
        assert_eq!(count(&db, "warehouses", vendor).await, 1, "{mode:?}");
        assert_eq!(count(&db, "items", vendor).await, 3, "{mode:?}");
        assert_eq!(count(&db, "stock", vendor).await, 2, "{mode:?}");

        // An order, delivered by the service, completed with the agent's reference.
        let order_id = insert_order(&db, vendor).await;
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
        assert_eq!(reference.as_deref(), Some("ERP-1"), "{mode:?}");
        assert_eq!(job_of(&db, order_id).await["erpReference"], "ERP-1");
        let erp_orders = agent.erp_orders();
        assert_eq!(erp_orders.len(), 1, "{mode:?}");
        assert_eq!(erp_orders[0]["orderId"], order_id.to_string());
        let stored: Value = serde_json::from_slice(&std::fs::read(&store_path).unwrap()).unwrap();
        assert_eq!(
            stored[order_id.to_string()],
            "ERP-1",
            "the key is persisted"
        );

        // The conformance kit's create-order checks: all pass, and no test order reaches the ERP.
        let args = AgentCheckArgs {
            url: agent_url.clone(),
            vendor: vendor.into(),
            signing_secret: Some(secret),
            page_size: 100,
            timeout_ms: 5_000,
            orders: false,
            orders_only: true,
            callback_listen: "127.0.0.1:0".parse().unwrap(),
            callback_timeout_ms: 10_000,
        };
        let results = run(&args, |_| {}).await.unwrap();
        let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
        assert!(failed.is_empty(), "{mode:?}: {results:#?}");
        assert_eq!(results.len(), 7);
        if mode == agent::Mode::Async {
            assert!(results[1].detail.contains("completed with erpReference"));
        }
        assert_eq!(
            agent.erp_orders().len(),
            1,
            "test orders never reach the ERP"
        );

        heartbeat.abort();
        server.abort();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

const SECRET: &str = "whsec_dGVzdC1hZ2VudC1jaGVjay1zaWduaW5nLXNlY3JldCE=";

/// An agent on 127.0.0.1:0 with this store; erp-sync is not needed by these checks.
async fn start(
    test_mode: bool,
    store_path: &std::path::Path,
) -> (std::sync::Arc<agent::Agent>, String) {
    let agent = agent::Agent::new(agent::Config {
        erp_sync_url: "http://127.0.0.1:9".into(),
        vendor_id: "ref-agent-alone".into(),
        token: "fake-token-ref-agent-alone".into(),
        signing_secret: SECRET.into(),
        catalogue: agent::Catalogue::default(),
        store_path: store_path.to_owned(),
        mode: agent::Mode::Sync,
        test_mode,
        heartbeat: Duration::from_secs(30),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, agent::router(agent.clone())).into_future());
    (agent, url)
}

fn kit(url: &str) -> AgentCheckArgs {
    AgentCheckArgs {
        url: url.to_owned(),
        vendor: "ref-agent-alone".into(),
        signing_secret: Some(SECRET.into()),
        page_size: 100,
        timeout_ms: 5_000,
        orders: false,
        orders_only: true,
        callback_listen: "127.0.0.1:0".parse().unwrap(),
        callback_timeout_ms: 5_000,
    }
}

#[tokio::test]
async fn outside_test_mode_check_orders_are_refused_and_keys_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("reference-agent-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store_path = dir.join("store.json");

    // Not in test mode: the kit's orders are refused with 422 and nothing is created.
    let (production, url) = start(false, &store_path).await;
    let results = run(&kit(&url), |_| {}).await.unwrap();
    assert!(!results[0].passed, "{results:#?}");
    assert!(results[0].detail.contains("422") && results[0].detail.contains("test mode"));
    assert!(production.erp_orders().is_empty());
    assert!(!store_path.exists(), "no key stored for a refused order");

    // In test mode every check passes, and the keys are on disk.
    let (_, url) = start(true, &store_path).await;
    let results = run(&kit(&url), |_| {}).await.unwrap();
    assert!(results.iter().all(|r| r.passed), "{results:#?}");
    let stored: std::collections::HashMap<String, String> =
        serde_json::from_slice(&std::fs::read(&store_path).unwrap()).unwrap();
    assert_eq!(
        stored.len(),
        2,
        "the first key and the concurrent key: {stored:?}"
    );

    // A new process on the same store answers a repeat with the stored reference.
    let (restarted, url) = start(true, &store_path).await;
    let (key, reference) = stored.iter().next().unwrap();
    let body = json!({"jobId": uuid::Uuid::new_v4(), "vendorId": "ref-agent-alone", "orderId": key, "order": {}});
    let body = serde_json::to_vec(&body).unwrap();
    let timestamp = chrono::Utc::now().timestamp();
    let signing_key = erp_sync::reconciliation::agent_check_orders::decode_secret(SECRET).unwrap();
    let signature = erp_sync::agents::signing::sign(&signing_key, key, timestamp, &body);
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/sync/create-order"))
        .header("content-type", "application/json")
        .header("idempotency-key", key.as_str())
        .header("webhook-id", key.as_str())
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["erpReference"], reference.as_str());
    assert!(restarted.erp_orders().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_catalogue_push_waits_out_a_429_and_sends_the_same_batch_again() {
    use std::sync::{Arc, Mutex};
    // A stand-in for erp-sync's batch routes: the first items batch is over the budget.
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = calls.clone();
    let erp_sync = axum::Router::new().route(
        "/api/sync/{kind}/batch",
        axum::routing::post(
            move |axum::extract::Path(kind): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    let first_items = kind == "items" && !seen.iter().any(|(k, _)| k == "items");
                    seen.push((kind, body));
                    if first_items {
                        (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "1")],
                            axum::Json(
                                json!({"error": {"code": "rate_limited", "message": "slow down"}}),
                            ),
                        )
                    } else {
                        (
                            axum::http::StatusCode::OK,
                            [("retry-after", "0")],
                            axum::Json(
                                json!({"processed": 1, "skipped": 0, "failed": 0, "results": []}),
                            ),
                        )
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, erp_sync).into_future());
    let catalogue: agent::Catalogue = serde_json::from_value(catalogue()).unwrap();
    let agent = agent::Agent::new(agent::Config {
        erp_sync_url: base,
        vendor_id: "ref-agent-429".into(),
        token: "fake-token-ref-agent-429".into(),
        signing_secret: SECRET.into(),
        catalogue,
        store_path: std::env::temp_dir().join(format!("unused-{}.json", uuid::Uuid::new_v4())),
        mode: agent::Mode::Sync,
        test_mode: false,
        heartbeat: Duration::from_secs(30),
    })
    .unwrap();
    agent::push_catalogue(&agent).await.unwrap();
    let calls = calls.lock().unwrap();
    let kinds: Vec<&str> = calls.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["warehouses", "items", "items", "stock"]);
    assert_eq!(calls[1].1, calls[2].1, "the same batch, sent again");
    assert_eq!(calls[3].1["warehouseId"], "W1");
    assert_eq!(calls[1].1["items"].as_array().unwrap().len(), 3);
}
