//! Two requests writing the same keys in opposite orders must not deadlock: every upsert
//! takes its row locks in key order.

use chrono::{Duration, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::spawn_app_with;

#[sqlx::test]
async fn batches_with_the_same_keys_in_opposite_orders_both_succeed(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("INGEST_BATCH_RATE_LIMIT_PER_MIN".into(), "1000".into()));
    })
    .await;
    let token = app.register_agent("v1").await;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for round in 0..4 {
        let batch = |tag: &str, reversed: bool| -> Value {
            let mut warehouses: Vec<Value> = (0..2000)
                .map(|i| {
                    json!({
                        "erpWarehouseId": format!("W{i:05}"),
                        "name": format!("Depot {tag}"),
                        "contentHash": format!("{tag}-{round}-{i}"),
                        "lastModifiedAt": base + Duration::seconds(round),
                    })
                })
                .collect();
            if reversed {
                warehouses.reverse();
            }
            json!({"vendorId": "v1", "warehouses": warehouses})
        };
        let (forward, backward) = (batch("a", false), batch("b", true));
        let (a, b) = tokio::join!(
            app.agent_post("/api/sync/warehouses/batch", &token, &forward)
                .send(),
            app.agent_post("/api/sync/warehouses/batch", &token, &backward)
                .send(),
        );
        for response in [a.unwrap(), b.unwrap()] {
            assert_eq!(response.status(), StatusCode::OK, "round {round}");
            let report: Value = response.json().await.unwrap();
            assert_eq!(report["failed"], 0, "round {round}: {report}");
            assert_eq!(
                report["results"].as_array().unwrap().len(),
                2000,
                "every record answered, in request order"
            );
        }
    }
}
