//! `GET /metrics`: Prometheus text that parses, counters that move, labels that never carry
//! a raw path or a vendor.

use std::time::Duration;

use prometheus_parse::{Scrape, Value as Sample};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{app_with, dead_letter};
use crate::{
    helpers::{TestApp, spawn_app},
    mock_agent::{MockAgent, Reply},
    orders::{eventually, insert_order},
};

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of the sample `metric` whose labels include `labels` (0 when absent).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Sample::Summary(_) => 0.0,
        })
        .sum()
}

#[sqlx::test]
async fn counters_move_after_an_ingest_and_an_order(db: PgPool) {
    let app = app_with(
        db.clone(),
        &[
            ("ORDER_SYNC_ENABLED", "true"),
            ("ORDER_SYNC_SWEEP_INTERVAL_MS", "200"),
            ("AGENT_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    let agent = MockAgent::start(Reply::Done("ERP-1".into())).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at("v1", &token, &agent.url).await;
    app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": "v1"}))
        .send()
        .await
        .unwrap();
    let seed = json!({"vendorId": "v1", "mappings": [
        {"mappingType": "unit", "erpCode": "PCE", "restoCode": "piece", "restoLabel": "Pièce"},
        {"mappingType": "vat", "erpCode": "T1", "restoCode": "vat_20", "restoLabel": "TVA 20 %"}
    ]});
    let seeded = app
        .admin_post("/api/admin/mappings/seed", &seed)
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), StatusCode::OK);
    let before = scrape(&app).await;

    let item = |sku: &str, unit: &str| {
        json!({"sku": sku, "name": sku, "unitCode": unit, "vatCode": "T1", "price": 1.5,
               "contentHash": format!("h-{sku}"), "lastModifiedAt": "2026-01-01T00:00:00Z"})
    };
    let pushed = app
        .agent_post(
            "/api/sync/items",
            &token,
            &json!({"vendorId": "v1", "items": [item("A", "PCE"), item("B", "PCE"), item("C", "BOX")]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::OK);
    let order_id = insert_order(&db, "v1").await;
    eventually(Duration::from_secs(10), "the order synced", || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT erp_reference FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_one(&db)
            .await
            .unwrap()
            .is_some()
    })
    .await;

    let after = scrape(&app).await;
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    let items = |status| [("kind", "items"), ("status", status)];
    assert_eq!(
        moved("erp_sync_ingest_records_total", &items("processed")),
        2.0
    );
    assert_eq!(
        moved("erp_sync_ingest_records_total", &items("failed")),
        1.0
    );
    assert_eq!(
        moved("erp_sync_ingest_records_total", &items("skipped")),
        0.0
    );
    assert_eq!(
        moved("erp_sync_jobs_total", &[("outcome", "completed")]),
        1.0
    );
    let push = [("method", "POST"), ("route", "/api/sync/items")];
    assert_eq!(
        moved(
            "http_requests_total",
            &[push[0], push[1], ("status", "200")]
        ),
        1.0
    );
    assert_eq!(moved("http_request_duration_seconds", &push), 1.0);
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "http_request_duration_seconds"
                && matches!(&s.value, Sample::Histogram(b) if b.len() > 5)),
        "a histogram with buckets"
    );
}

#[sqlx::test]
async fn route_labels_are_templates_and_never_raw_paths(db: PgPool) {
    let app = spawn_app(db).await;
    app.admin_get("/api/agents/secret-vendor-123")
        .send()
        .await
        .unwrap();
    app.client
        .get(app.url("/nope/raw-path-456"))
        .send()
        .await
        .unwrap();
    let purge = reqwest::Method::from_bytes(b"PURGE").unwrap();
    let odd = app
        .client
        .request(purge, app.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), StatusCode::METHOD_NOT_ALLOWED);

    let scrape = scrape(&app).await;
    assert_eq!(
        value(
            &scrape,
            "http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/agents/:vendorId"),
                ("status", "404")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "http_requests_total",
            &[("method", "other"), ("route", "/health"), ("status", "405")]
        ),
        1.0,
        "an unknown method is not a label value"
    );
    for sample in &scrape.samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains("secret-vendor") && !value.contains("raw-path") && value != "PURGE",
                "{} carries {value:?}",
                sample.metric
            );
        }
    }
}

#[sqlx::test]
async fn sql_gauges_are_read_on_a_timer(db: PgPool) {
    for _ in 0..3 {
        insert_order(&db, "v1").await;
    }
    for vendor in ["v1", "v2"] {
        dead_letter(&db, vendor).await;
    }
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
         VALUES ('v1', 'http://a', 'ebp', 'x', 'online', now()), ('v2', 'http://b', 'ebp', 'x', 'offline', NULL)",
    )
    .execute(&db)
    .await
    .unwrap();
    // The first reading is taken as the service starts.
    let app = spawn_app(db).await;
    eventually(Duration::from_secs(10), "gauges read", || async {
        let scrape = scrape(&app).await;
        [
            value(&scrape, "erp_sync_queue_waiting", &[]),
            value(&scrape, "erp_sync_dlq_unresolved", &[]),
            value(&scrape, "erp_sync_agents", &[("status", "online")]),
            value(&scrape, "erp_sync_agents", &[("status", "degraded")]),
            value(&scrape, "erp_sync_agents", &[("status", "offline")]),
            value(&scrape, "erp_sync_breakers_open", &[]),
        ] == [3.0, 2.0, 1.0, 0.0, 1.0, 0.0]
    })
    .await;
}

#[sqlx::test]
async fn metrics_can_be_switched_off(db: PgPool) {
    let app = app_with(db, &[("METRICS_ENABLED", "false")]).await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
