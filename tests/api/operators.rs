//! Operators (issue 18): an order's timeline, bulk dead-letter recovery with dry runs,
//! retries refused while the agent cannot take them, filters that refuse nonsense, logs that
//! follow one order. Real Postgres, Redis, mock agent and worker, through the router.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::{TestApp, captured_logs, spawn_app},
    mock_agent::{MockAgent, Reply},
    orders::{VENDOR, eventually, insert_order, order_app, status_is},
};

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// A vendor whose agent answers `reply`, registered through the API and online.
async fn online_vendor(app: &TestApp, reply: Reply) -> MockAgent {
    let agent = MockAgent::start(reply).await;
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
    agent
}

async fn open_entries(app: &TestApp, query: &str) -> Value {
    let (status, page) = json_of(
        app.admin_get(&format!("/api/admin/dlq?{query}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

#[sqlx::test]
async fn a_vendor_failing_then_fixed_shows_every_attempt_in_the_order_timeline(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    let agent = online_vendor(&app, Reply::Body(500, "ERP database locked".into())).await;
    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(20), "job dead-lettered", || {
        status_is(&db, order_id, "failed")
    })
    .await;
    let page = open_entries(&app, &format!("vendorId={VENDOR}")).await;
    assert_eq!(page["total"], 1, "{page}");
    let entry_id = page["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        page["data"][0]["failureReason"]
            .as_str()
            .unwrap()
            .contains("agent answered HTTP 500: ERP database locked"),
        "the DLQ keeps the agent's error: {page}"
    );

    agent.set_fallback(Reply::Done("ERP-FIXED".into()));
    let retried = app
        .admin_post(
            &format!("/api/admin/dlq/{entry_id}/retry?note=agent%20fixed"),
            &json!({}),
        )
        .header("x-operator", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    eventually(Duration::from_secs(10), "retried job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;

    let (status, timeline) = json_of(
        app.admin_get(&format!("/api/admin/orders/{order_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    assert_eq!(timeline["order"]["erpReference"], "ERP-FIXED");
    assert_eq!(timeline["jobs"].as_array().unwrap().len(), 2, "{timeline}");
    let attempts = timeline["attempts"].as_array().unwrap();
    let outcomes: Vec<(&str, Option<i64>)> = attempts
        .iter()
        .map(|a| (a["outcome"].as_str().unwrap(), a["httpStatus"].as_i64()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("failed", Some(500)),
            ("failed", Some(500)),
            ("failed", Some(500)),
            ("completed", Some(200)),
        ],
        "{timeline}"
    );
    for failed in &attempts[..3] {
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("ERP database locked")
        );
        assert!(
            failed["correlationId"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
        assert!(failed["durationMs"].as_i64().unwrap() >= 0);
    }
    let dead_letters = timeline["deadLetters"].as_array().unwrap();
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0]["resolved"], true);
    let actions = timeline["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{timeline}");
    assert_eq!(actions[0]["action"], "dlq_retry");
    assert_eq!(actions[0]["actor"], "alice");
    assert_eq!(actions[0]["note"], "agent fixed");
    let events = timeline["events"].as_array().unwrap();
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by_key(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap());
    assert_eq!(times, sorted, "events sorted by time");
    assert!(events.iter().any(|e| e["kind"] == "dead_lettered"));
    assert!(events.iter().any(|e| e["kind"] == "operator_action"));

    // Every log line of the order's sync attempts carries its order and vendor ids.
    let order = order_id.to_string();
    let job_ids: Vec<String> = timeline["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    let lines: Vec<String> = captured_logs()
        .lines()
        .filter(|l| l.contains("\"order_sync\"") && job_ids.iter().any(|j| l.contains(j)))
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 4, "one line per attempt at least: {lines:?}");
    for line in &lines {
        assert!(line.contains(&order), "order id missing: {line}");
        assert!(line.contains(VENDOR), "vendor id missing: {line}");
    }

    let (status, _) = json_of(
        app.admin_get(&format!("/api/admin/orders/{}", Uuid::new_v4()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Fails the order's job and parks it in the DLQ with `reason`, as the worker would.
async fn dead_letter(db: &PgPool, vendor: &str, reason: &str) -> (Uuid, Uuid) {
    let order_id = insert_order(db, vendor).await;
    let entry: Uuid = sqlx::query_scalar(
        "WITH failed AS (
             UPDATE sync_jobs SET status = 'failed', completed_at = now(), retry_count = 3
             WHERE postgres_order_id = $1 RETURNING id, vendor_id, payload)
         INSERT INTO dead_letter_queue (original_job_id, order_id, vendor_id, operation, payload, failure_reason, attempt_count)
         SELECT id, $1, vendor_id, 'create_order', payload, $2, 3 FROM failed RETURNING id",
    )
    .bind(order_id)
    .bind(reason)
    .fetch_one(db)
    .await
    .unwrap();
    (order_id, entry)
}

fn ids(result: &Value) -> Vec<String> {
    let mut ids: Vec<String> = result["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[sqlx::test]
async fn a_bulk_retry_dry_run_lists_exactly_what_the_real_run_then_changes(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let _agent = online_vendor(&app, Reply::Done("ERP-1".into())).await;
    let mut expected = Vec::new();
    for _ in 0..3 {
        expected.push(
            dead_letter(&db, VENDOR, "agent answered HTTP 500: boom")
                .await
                .1
                .to_string(),
        );
    }
    dead_letter(&db, VENDOR, "permanent: agent answered HTTP 400: bad sku").await;
    dead_letter(&db, "vendor-other", "agent answered HTTP 500: boom").await;
    // An entry whose order is already in the ERP cannot be retried: not listed.
    let (in_erp, _) = dead_letter(&db, VENDOR, "agent answered HTTP 500: boom").await;
    sqlx::query("UPDATE orders SET erp_reference = 'BY-HAND' WHERE id = $1")
        .bind(in_erp)
        .execute(&db)
        .await
        .unwrap();
    expected.sort();

    let filter = json!({"vendorId": VENDOR, "reason": "http 500", "dryRun": true, "actor": "bob", "note": "agent restarted"});
    let (status, dry) = json_of(
        app.admin_post("/api/admin/dlq/retry", &filter)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["dryRun"], true);
    assert_eq!(ids(&dry), expected);
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_jobs WHERE status = 'pending'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(live, 0, "a dry run changes nothing");

    let mut real_filter = filter.clone();
    real_filter["dryRun"] = json!(false);
    let (status, real) = json_of(
        app.admin_post("/api/admin/dlq/retry", &real_filter)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{real}");
    assert_eq!(
        ids(&real),
        expected,
        "the real run changes exactly the dry run's entries"
    );
    assert!(
        real["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["jobId"].is_string())
    );
    let recorded: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT actor, note FROM operator_actions WHERE action = 'dlq_retry'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(recorded.len(), 3);
    assert!(
        recorded
            .iter()
            .all(|(a, n)| a == "bob" && n.as_deref() == Some("agent restarted"))
    );

    let (_, again) = json_of(
        app.admin_post("/api/admin/dlq/retry", &filter)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["count"], 0, "nothing left to retry: {again}");

    // Resolved entries are listed on request; the filters are honoured.
    let resolved = open_entries(&app, &format!("vendorId={VENDOR}&resolved=true")).await;
    assert_eq!(resolved["total"], 3);
    let open = open_entries(&app, &format!("vendorId={VENDOR}&reason=bad%20sku")).await;
    assert_eq!(open["total"], 1);
    let future = open_entries(&app, "since=2030-01-01T00:00:00Z").await;
    assert_eq!(future["total"], 0, "since is honoured");

    // Bulk resolve: the dry run and the real run agree; note and actor are kept.
    let resolve = json!({"reason": "bad sku", "dryRun": true, "note": "sku retired"});
    let (_, dry) = json_of(
        app.admin_post("/api/admin/dlq/resolve", &resolve)
            .header("x-operator", "carol")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(dry["count"], 1);
    let mut resolve_real = resolve.clone();
    resolve_real["dryRun"] = json!(false);
    let (status, real) = json_of(
        app.admin_post("/api/admin/dlq/resolve", &resolve_real)
            .header("x-operator", "carol")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{real}");
    assert_eq!(ids(&real), ids(&dry));
    let (status, entry) = json_of(
        app.admin_get(&format!("/api/admin/dlq/{}", ids(&real)[0]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entry["resolvedBy"], "carol");
    assert_eq!(entry["resolutionNote"], "sku retired");
}

#[sqlx::test]
async fn filters_refuse_nonsense(db: PgPool) {
    let app = spawn_app(db).await;
    for path in [
        "/api/admin/sync-jobs?status=bogus",
        "/api/admin/sync-jobs?status=FAILED",
        "/api/admin/dlq?resolved=maybe",
        "/api/admin/dlq?since=yesterday",
        "/api/admin/dlq?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "/api/admin/dlq?reason=",
        "/api/admin/dlq?since=-5000-01-01T00:00:00Z",
        "/api/agents?status=asleep",
    ] {
        let (status, body) = json_of(app.admin_get(path).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
    }
    let (status, body) = json_of(
        app.admin_post("/api/admin/dlq/resolve", &json!({"dryRun": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a bulk action needs a filter: {body}"
    );
}

#[sqlx::test]
async fn a_retry_is_refused_while_the_breaker_is_open_unless_forced(db: PgPool) {
    let app = order_app(
        db.clone(),
        &[
            ("ORDER_SYNC_MAX_ATTEMPTS", "2"),
            ("BREAKER_MIN_CALLS", "2"),
            ("BREAKER_OPEN_MS", "600000"),
        ],
    )
    .await;
    let agent = online_vendor(&app, Reply::Status(500)).await;
    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(20), "job dead-lettered", || {
        status_is(&db, order_id, "failed")
    })
    .await;
    let (_, breakers) = json_of(
        app.admin_get("/api/admin/circuit-breakers")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(breakers[0]["state"], "OPEN", "{breakers}");
    assert!(breakers[0]["nextProbeAt"].is_string(), "{breakers}");
    let page = open_entries(&app, &format!("vendorId={VENDOR}")).await;
    let entry_id = page["data"][0]["id"].as_str().unwrap().to_owned();

    let (status, refused) = json_of(
        app.admin_post(&format!("/api/admin/dlq/{entry_id}/retry"), &json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit breaker open"),
        "{refused}"
    );
    let (status, _) = json_of(
        app.admin_post(
            "/api/admin/dlq/retry",
            &json!({"vendorId": VENDOR, "dryRun": true}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "the bulk retry refuses too");
    assert_eq!(open_entries(&app, "").await["total"], 1, "nothing changed");

    agent.set_fallback(Reply::Done("ERP-FORCED".into()));
    let forced = app
        .admin_post(
            &format!("/api/admin/dlq/{entry_id}/retry?force=true"),
            &json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), StatusCode::CREATED);
    let action: (String, Value) =
        sqlx::query_as("SELECT actor, details FROM operator_actions WHERE action = 'dlq_retry'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(action.0, "api-key");
    assert_eq!(action.1["force"], true);
}

#[sqlx::test]
async fn an_order_completed_by_resync_closes_its_old_dead_letter_entry(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    let agent = online_vendor(&app, Reply::Status(503)).await;
    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(20), "job dead-lettered", || {
        status_is(&db, order_id, "failed")
    })
    .await;
    assert_eq!(open_entries(&app, "").await["total"], 1);

    agent.set_fallback(Reply::Done("ERP-RESYNC".into()));
    let resync = app
        .admin_post(&format!("/api/admin/orders/{order_id}/sync"), &json!({}))
        .header("x-operator", "dave")
        .send()
        .await
        .unwrap();
    assert_eq!(resync.status(), StatusCode::ACCEPTED);
    eventually(Duration::from_secs(10), "re-sync completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    assert_eq!(
        open_entries(&app, "").await["total"],
        0,
        "no open entry for a synced order"
    );
    let resolved = open_entries(&app, "resolved=true").await;
    assert_eq!(resolved["total"], 1);
    assert_eq!(resolved["data"][0]["resolvedBy"], "agent");
    let (_, timeline) = json_of(
        app.admin_get(&format!("/api/admin/orders/{order_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(timeline["actions"][0]["action"], "resync");
    assert_eq!(timeline["actions"][0]["actor"], "dave");
}

/// The captured log lines of one request, found by the correlation id it was sent with.
fn lines_of(correlation_id: &str) -> Vec<String> {
    captured_logs()
        .lines()
        .filter(|l| l.contains(correlation_id))
        .map(str::to_owned)
        .collect()
}

#[sqlx::test]
async fn access_heartbeat_and_ingest_lines_say_what_an_operator_needs(db: PgPool) {
    let (app, token) = crate::ingest::setup(db).await;

    let heartbeat = Uuid::new_v4().to_string();
    app.agent_post(
        "/api/agents/heartbeat",
        &token,
        &json!({"vendorId": crate::ingest::VENDOR}),
    )
    .header("x-correlation-id", &heartbeat)
    .send()
    .await
    .unwrap();
    let finished: Vec<String> = lines_of(&heartbeat)
        .into_iter()
        .filter(|l| l.contains("request finished"))
        .collect();
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert!(
        finished[0].contains("\"level\":\"DEBUG\""),
        "{}",
        finished[0]
    );

    let listing = Uuid::new_v4().to_string();
    app.admin_get("/api/admin/dlq?vendorId=vendor-a&password=fake-hunter2")
        .header("x-correlation-id", &listing)
        .send()
        .await
        .unwrap();
    let lines = lines_of(&listing);
    let access = lines
        .iter()
        .find(|l| l.contains("request finished"))
        .expect("an access line");
    assert!(access.contains("\"level\":\"INFO\""), "{access}");
    assert!(access.contains("\"route\":\"/api/admin/dlq\""), "{access}");
    assert!(
        access.contains("vendorId=vendor-a&password=%5Bredacted%5D"),
        "{access}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("fake-hunter2")),
        "{lines:?}"
    );

    let ingest = Uuid::new_v4().to_string();
    let mut unmapped = crate::ingest::item("SKU-U1", "hu1", 0);
    unmapped["unitCode"] = json!("KG-UNKNOWN");
    let mut unmapped_too = crate::ingest::item("SKU-U2", "hu2", 0);
    unmapped_too["unitCode"] = json!("KG-UNKNOWN");
    let body = json!({"vendorId": crate::ingest::VENDOR, "items": [
        crate::ingest::item("SKU-OK", "hok", 0), unmapped, unmapped_too
    ]});
    let response = app
        .agent_post("/api/sync/items", &token, &body)
        .header("x-correlation-id", &ingest)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let summary: Vec<String> = lines_of(&ingest)
        .into_iter()
        .filter(|l| l.contains("ingest request done"))
        .collect();
    assert_eq!(summary.len(), 1, "one summary line: {summary:?}");
    for part in [
        "\"processed\":1",
        "\"failed\":2",
        "unmapped_unit: KG-UNKNOWN ×2",
    ] {
        assert!(summary[0].contains(part), "{part}: {}", summary[0]);
    }
}
