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
