//! The admin metrics routes, checked against figures computed by hand.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, spawn_app};

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app.admin_get(path).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[sqlx::test]
async fn sync_metrics_match_hand_computed_figures(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    // (vendor, status, attempts, ms from creation to completion)
    sqlx::query(
        "INSERT INTO sync_jobs (vendor_id, operation, status, payload, retry_count, created_at, completed_at)
         SELECT v, 'create_order', s, '{}', r, t, t + make_interval(secs => ms / 1000.0)
         FROM (VALUES ('v1', 'completed', 1, 100), ('v1', 'completed', 2, 200),
                      ('v1', 'completed', 1, 300), ('v1', 'completed', 1, 400),
                      ('v1', 'completed', 3, 1000), ('v1', 'failed', 5, 5000),
                      ('v1', 'pending', 0, NULL), ('v1', 'processing', 1, NULL),
                      ('v2', 'completed', 1, 9999)) AS j(v, s, r, ms),
              (SELECT timestamptz '2026-01-01 00:00:00Z' AS t) base",
    )
    .execute(&db)
    .await
    .unwrap();
    let (status, body) = get(&app, "/api/admin/metrics/v1").await;
    assert_eq!(status, StatusCode::OK);
    // 5 of 8 completed; latencies of the completed: 100, 200, 300, 400, 1000 ms: mean 400;
    // p95 (continuous) at rank 0.95 × 4 = 3.8: 400 + 0.8 × (1000 − 400) = 880; 3 of 8 jobs
    // took more than one attempt.
    assert_eq!(
        body,
        json!({"vendorId": "v1", "total": 8, "pending": 1, "processing": 1, "completed": 5,
               "failed": 1, "successRate": 62.5, "avgLatencyMs": 400.0, "p95LatencyMs": 880.0,
               "retryRate": 37.5})
    );

    let (status, body) = get(&app, "/api/admin/metrics/nobody").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"vendorId": "nobody", "total": 0, "pending": 0, "processing": 0, "completed": 0,
               "failed": 0, "successRate": 0.0, "avgLatencyMs": null, "p95LatencyMs": null,
               "retryRate": 0.0})
    );

    let too_long = format!("/api/admin/metrics/{}", "v".repeat(101));
    for path in [
        "/api/admin/metrics/bad%20vendor",
        too_long.as_str(),
        "/api/admin/metrics/%00",
    ] {
        // A malformed path parameter is a 400 naming it (docs: field rules).
        let (status, body) = get(&app, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(body["error"]["details"]["vendorId"].is_array(), "{body}");
    }
    let anonymous = app
        .client
        .get(app.url("/api/admin/metrics/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn reconciliation_metrics_count_events_and_runs_with_drift(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    sqlx::query(
        r#"INSERT INTO reconciliation_events (vendor_id, event_type, summary, "timestamp") VALUES
               ('v1', 'full_checksum', '{}', '2026-01-01 01:00:00Z'),
               ('v1', 'full_checksum', '{}', '2026-01-01 02:00:00Z'),
               ('v1', 'drift_detected', '{}', '2026-01-01 03:00:00Z'),
               ('v1', 'drift_resolved', '{}', '2026-01-01 03:00:05Z'),
               ('v1', 'full_checksum', '{}', '2026-01-01 04:00:00Z'),
               ('v2', 'drift_detected', '{}', '2026-01-02 00:00:00Z')"#,
    )
    .execute(&db)
    .await
    .unwrap();
    let (status, body) = get(&app, "/api/admin/metrics/reconciliation/v1").await;
    assert_eq!(status, StatusCode::OK);
    // 4 runs (3 matched, 1 found drift): 25 %.
    assert_eq!(
        body,
        json!({"vendorId": "v1",
               "eventsByType": {"drift_detected": 1, "drift_resolved": 1, "full_checksum": 3,
                                "incremental_sync": 0},
               "lastRunAt": "2026-01-01T04:00:00Z", "driftRate": 25.0})
    );
    let (_, body) = get(&app, "/api/admin/metrics/reconciliation/nobody").await;
    assert_eq!(body["lastRunAt"], Value::Null);
    assert_eq!(body["driftRate"], 0.0);
    let (status, _) = get(&app, "/api/admin/metrics/reconciliation/bad%20id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[sqlx::test]
async fn agent_uptime_over_24_hours_comes_from_recorded_status_changes(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
         VALUES ('va', 'http://a', 'ebp', 'x', 'online', now()),
                ('vb', 'http://b', 'ebp', 'x', 'online', now() - interval '2 minutes'),
                ('vc', 'http://c', 'ebp', 'x', 'offline', NULL),
                ('vd', 'http://d', 'ebp', 'x', 'online', now())",
    )
    .execute(&db)
    .await
    .unwrap();
    // The script of each agent's life (the insert trigger's own rows replaced).
    sqlx::query("DELETE FROM agent_status_changes")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO agent_status_changes (vendor_id, status, changed_at) VALUES
             ('va', 'online', now() - interval '30 hours'),
             ('va', 'offline', now() - interval '12 hours'),
             ('va', 'online', now() - interval '6 hours'),
             ('vb', 'offline', now() - interval '6 hours'),
             ('vb', 'online', now() - interval '3 hours'),
             ('vd', 'online', now() - interval '48 hours')",
    )
    .execute(&db)
    .await
    .unwrap();
    let (status, page) = get(&app, "/api/admin/metrics/agents").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (page["total"].clone(), page["page"].clone()),
        (json!(4), json!(1))
    );
    let rows: Vec<(Value, Value, Value)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["vendorId"].clone(),
                a["status"].clone(),
                a["uptimePct24h"].clone(),
            )
        })
        .collect();
    // va: online 24h→12h ago and the last 6 h of 24: 75 %. vb: registered 6 h ago, online
    // the last 3: 50 %. vc: nothing recorded. vd: online throughout.
    assert_eq!(
        rows,
        [
            (json!("va"), json!("online"), json!(75.0)),
            (json!("vb"), json!("degraded"), json!(50.0)),
            (json!("vc"), json!("offline"), Value::Null),
            (json!("vd"), json!("online"), json!(100.0)),
        ]
    );
    assert!(page["data"][0]["lastHeartbeat"].is_string());
    let (_, second) = get(&app, "/api/admin/metrics/agents?limit=3&page=2").await;
    assert_eq!(second["data"][0]["vendorId"], "vd");
    let (status, _) = get(&app, "/api/admin/metrics/agents?limit=1000").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test]
async fn every_status_change_is_recorded(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let token = app.register_agent("v1").await;
    for _ in 0..2 {
        app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": "v1"}))
            .send()
            .await
            .unwrap();
    }
    let agents = &app.state.agents;
    agents
        .check_health_at(Utc::now() + Duration::seconds(61))
        .await
        .unwrap();
    agents
        .check_health_at(Utc::now() + Duration::seconds(301))
        .await
        .unwrap();
    app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": "v1"}))
        .send()
        .await
        .unwrap();
    agents.deregister("v1").await.unwrap();
    let changes: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT previous_status, status FROM agent_status_changes WHERE vendor_id = 'v1' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let changes: Vec<(Option<&str>, &str)> = changes
        .iter()
        .map(|(from, to)| (from.as_deref(), to.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            (None, "offline"),             // registered
            (Some("offline"), "online"),   // first heartbeat (the second changes nothing)
            (Some("online"), "degraded"),  // sweep
            (Some("degraded"), "offline"), // sweep
            (Some("offline"), "online"),   // heartbeat
            (Some("online"), "offline"),   // deregistered
        ]
    );
}
