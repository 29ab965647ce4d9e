//! Reconciliation over HTTP and across runs: trigger, events, one run per vendor, leases,
//! shutdown, refusals.

use std::time::{Duration, Instant};

use erp_sync::reconciliation::model::RunOutcome;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::spawn_app_with,
    mock_erp::{Behaviour, MockErp, erp_item},
    reconciliation::{Fixture, VENDOR, catalogue, fixture, numbered, register_online},
};

async fn trigger(fx: &Fixture, vendor: &str) -> reqwest::Response {
    fx.app
        .admin_post(
            "/api/admin/reconciliation/trigger",
            &json!({ "vendorId": vendor }),
        )
        .send()
        .await
        .unwrap()
}

/// Polls the events until the run has recorded its last one (generous deadline, loaded CI).
async fn final_event(fx: &Fixture, run_id: &str) -> Value {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let last = fx
            .events()
            .await
            .into_iter()
            .find(|e| e["summary"]["runId"] == run_id && e["eventType"] != "drift_detected");
        let finished: Option<String> =
            sqlx::query_scalar("SELECT status FROM reconciliation_runs WHERE id = $1::uuid")
                .bind(run_id)
                .fetch_optional(&fx.app.db)
                .await
                .unwrap();
        if let (Some(event), Some(status)) = (last, finished)
            && status != "running"
        {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} did not finish");
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (
        status,
        response.json::<Value>().await.unwrap()["error"].clone(),
    )
}

#[sqlx::test]
async fn a_triggered_run_goes_on_in_the_background_and_its_events_are_listed(db: PgPool) {
    let items = catalogue(numbered(120), 1);
    let fx = fixture(db, items.clone(), items, &[]).await;
    fx.erp.put(erp_item("SKU-00077", 2));
    let response = trigger(&fx, VENDOR).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let run_id = response.json::<Value>().await.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = final_event(&fx, &run_id).await;
    assert_eq!(last["eventType"], "drift_resolved");
    assert_eq!(
        (
            last["summary"]["repaired"].clone(),
            last["summary"]["outcome"].clone()
        ),
        (json!(1), json!("repaired"))
    );
    assert!(last["durationMs"].as_i64().unwrap() >= 0);
    fx.assert_in_step().await;

    // Newest first, filtered by type, paginated.
    let page: Value = fx
        .app
        .admin_get(&format!(
            "/api/admin/reconciliation/events?vendorId={VENDOR}&limit=1&page=2"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            page["total"].clone(),
            page["page"].clone(),
            page["limit"].clone()
        ),
        (json!(2), json!(2), json!(1))
    );
    assert_eq!(page["data"][0]["eventType"], "drift_detected");
    let detected: Value = fx
        .app
        .admin_get("/api/admin/reconciliation/events?type=drift_detected")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detected["total"], 1);
    assert_eq!(detected["data"][0]["summary"]["runId"], json!(run_id));
    let other: Value = fx
        .app
        .admin_get("/api/admin/reconciliation/events?vendorId=someone-else")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["total"], 0);
}

#[sqlx::test]
async fn two_triggers_at_once_start_one_run_and_the_other_gets_409(db: PgPool) {
    let items = catalogue(numbered(20), 1);
    let fx = fixture(db, items.clone(), items, &[]).await;
    // The first run holds its first agent call until the gate opens.
    fx.erp.set_behaviour(Behaviour::Gated);
    let (a, b) = tokio::join!(trigger(&fx, VENDOR), trigger(&fx, VENDOR));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT]);
    let (accepted, refused) = if a.status() == StatusCode::ACCEPTED {
        (a, b)
    } else {
        (b, a)
    };
    let run_id = accepted.json::<Value>().await.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, error) = error_of(refused).await;
    assert_eq!(error["code"], "conflict");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("already running (run {run_id}")),
        "{error}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM reconciliation_runs")
        .fetch_one(&fx.app.db)
        .await
        .unwrap();
    assert_eq!(runs, 1);

    fx.erp.open_gate();
    assert_eq!(
        final_event(&fx, &run_id).await["eventType"],
        "full_checksum"
    );
    fx.erp.set_behaviour(Behaviour::Correct);
    assert_eq!(trigger(&fx, VENDOR).await.status(), StatusCode::ACCEPTED);
}

#[sqlx::test]
async fn refusals_are_clear_4xx_and_start_nothing(db: PgPool) {
    let fx = fixture(db, Vec::new(), Vec::new(), &[]).await;
    let url = fx.app.url("/api/admin/reconciliation/trigger");
    let no_key = fx
        .app
        .client
        .post(&url)
        .json(&json!({"vendorId": VENDOR}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    for body in [
        json!({}),
        json!({"vendorId": "a\u{0}b"}),
        json!({"vendorId": "x".repeat(101)}),
        json!({"vendorId": 7}),
    ] {
        let (status, error) = error_of(
            fx.app
                .admin_post("/api/admin/reconciliation/trigger", &body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{body}: {status}"
        );
        assert!(error["code"].is_string(), "{error}");
    }
    let (status, error) = error_of(trigger(&fx, "nobody").await).await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );

    register_online(&fx.app.db, "sleepy", &fx.erp.url).await;
    sqlx::query("UPDATE agent_registry SET last_heartbeat = now() - interval '1 hour' WHERE vendor_id = 'sleepy'")
        .execute(&fx.app.db).await.unwrap();
    let (status, error) = error_of(trigger(&fx, "sleepy").await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error["message"].as_str().unwrap().contains("offline"),
        "{error}"
    );

    register_online(&fx.app.db, "gone", &fx.erp.url).await;
    sqlx::query("UPDATE agent_registry SET deregistered_at = now() WHERE vendor_id = 'gone'")
        .execute(&fx.app.db)
        .await
        .unwrap();
    let (status, error) = error_of(trigger(&fx, "gone").await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error["message"].as_str().unwrap().contains("deregistered"),
        "{error}"
    );

    for query in [
        "type=nope",
        "vendorId=%00",
        "vendorId=a%20b",
        "limit=0",
        "page=0",
        "limit=abc",
    ] {
        let response = fx
            .app
            .admin_get(&format!("/api/admin/reconciliation/events?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
    }
    let no_key = fx
        .app
        .client
        .get(fx.app.url("/api/admin/reconciliation/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);

    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM reconciliation_runs")
        .fetch_one(&fx.app.db)
        .await
        .unwrap();
    assert_eq!((runs, fx.erp.calls()), (0, 0));
}

#[sqlx::test]
async fn without_agent_secret_reconciliation_is_unavailable(db: PgPool) {
    let app = spawn_app_with(db.clone(), |vars| vars.retain(|(k, _)| k != "AGENT_SECRET")).await;
    register_online(&db, VENDOR, "http://127.0.0.1:9").await;
    let response = app
        .admin_post(
            "/api/admin/reconciliation/trigger",
            &json!({"vendorId": VENDOR}),
        )
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        error["message"].as_str().unwrap().contains("AGENT_SECRET"),
        "{error}"
    );
}

#[sqlx::test]
async fn a_run_whose_process_died_blocks_the_vendor_only_until_its_lease_ends(db: PgPool) {
    let items = catalogue(numbered(15), 1);
    let fx = fixture(db, items.clone(), items, &[]).await;
    let live = Uuid::new_v4();
    sqlx::query("INSERT INTO reconciliation_runs (id, vendor_id, lease_until) VALUES ($1, $2, now() + interval '1 minute')")
        .bind(live).bind(VENDOR).execute(&fx.app.db).await.unwrap();
    assert_eq!(trigger(&fx, VENDOR).await.status(), StatusCode::CONFLICT);

    sqlx::query("UPDATE reconciliation_runs SET lease_until = now() - interval '1 second'")
        .execute(&fx.app.db)
        .await
        .unwrap();
    let summary = fx
        .app
        .state
        .reconciliation
        .detect_drift(VENDOR)
        .await
        .unwrap();
    assert_eq!(summary.outcome, RunOutcome::InSync);
    let statuses: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM reconciliation_runs ORDER BY started_at")
            .fetch_all(&fx.app.db)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        [
            (live, "abandoned".to_owned()),
            (summary.run_id, "in_sync".to_owned())
        ]
    );
}

#[sqlx::test]
async fn a_stalled_vendor_never_holds_up_another(db: PgPool) {
    let items = catalogue(numbered(40), 1);
    let fx = fixture(
        db,
        items.clone(),
        items.clone(),
        &[("AGENT_TIMEOUT_MS", "60000")],
    )
    .await;
    fx.erp.set_behaviour(Behaviour::HangAfter {
        after: 0,
        delay: Duration::from_secs(60),
    });
    assert_eq!(trigger(&fx, VENDOR).await.status(), StatusCode::ACCEPTED);

    let other = MockErp::start(vec![erp_item("X-1", 1)]).await;
    register_online(&fx.app.db, "vendor-other", &other.url).await;
    let started = Instant::now();
    let summary = fx
        .app
        .state
        .reconciliation
        .detect_drift("vendor-other")
        .await
        .unwrap();
    // The other vendor's run does not wait for the stalled one: it finds its one item missing.
    assert_eq!((summary.erp_count, summary.pg_count), (Some(1), 0));
    assert!(started.elapsed() < Duration::from_secs(20));

    // Shutting down stops the stalled run promptly, and it says why.
    let started = Instant::now();
    fx.app.state.reconciliation.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let event = &fx.events().await[0];
    assert_eq!(event["eventType"], "full_checksum");
    assert_eq!(event["summary"]["outcome"], "failed");
    assert!(
        event["details"].as_str().unwrap().contains("shutting down"),
        "{event}"
    );
    let (status, _) = error_of(trigger(&fx, VENDOR).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[sqlx::test]
async fn openapi_documents_the_reconciliation_routes(db: PgPool) {
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
    let trigger = &document["paths"]["/api/admin/reconciliation/trigger"]["post"];
    for status in ["202", "401", "404", "409", "422", "503"] {
        assert!(
            trigger["responses"][status].is_object(),
            "trigger lacks {status}"
        );
    }
    let events = &document["paths"]["/api/admin/reconciliation/events"]["get"];
    let params: Vec<&str> = events["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["vendorId", "type", "page", "limit"] {
        assert!(params.contains(&name), "events lacks ?{name}: {params:?}");
    }
}

/// An agent registered with its own `whsec_` secret is read with that secret, never with the
/// shared `AGENT_SECRET`: its Standard Webhooks check passes, and an agent that only knows the
/// shared secret would refuse the run's calls.
#[sqlx::test]
async fn a_run_is_signed_with_the_agents_own_secret(db: PgPool) {
    let app = spawn_app_with(db, |_| {}).await;
    let vendor = "vendor-own-secret";
    let erp = MockErp::start(Vec::<Value>::new()).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    let secret = app
        .register_agent_with_secret(vendor, &token, &erp.url)
        .await;
    let heartbeat = app
        .agent_post(
            "/api/agents/heartbeat",
            &token,
            &json!({"vendorId": vendor}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(heartbeat.status(), StatusCode::OK);
    erp.verify_with(
        standardwebhooks::Webhook::new(secret.strip_prefix("whsec_").unwrap()).unwrap(),
    );
    let summary = app.state.reconciliation.detect_drift(vendor).await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::InSync, "{summary:?}");
    assert_eq!(erp.bad_signatures(), 0);
    assert_eq!(erp.checksum_calls(), 1);

    erp.verify_with(
        standardwebhooks::Webhook::from_bytes(crate::helpers::AGENT_SECRET.as_bytes().to_vec())
            .unwrap(),
    );
    let summary = app.state.reconciliation.detect_drift(vendor).await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Failed, "{summary:?}");
    assert_eq!(
        erp.bad_signatures(),
        1,
        "signed with the agent's key, not the shared one"
    );
}
