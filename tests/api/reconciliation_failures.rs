//! Reconciliation against an agent that fails, stalls or answers garbage: the run ends with
//! the drift it could not repair reported, and nothing half-applied.

use std::time::{Duration, Instant};

use erp_sync::reconciliation::model::RunOutcome;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    mock_erp::{Behaviour, content_hash, erp_item},
    reconciliation::{catalogue, fixture, numbered},
};

#[sqlx::test]
async fn an_agent_failing_mid_run_leaves_unresolved_drift_and_nothing_half_applied(db: PgPool) {
    let skus = numbered(600);
    let fx = fixture(
        db,
        catalogue(skus.clone(), 1),
        catalogue(skus.clone(), 1),
        &[("RECONCILIATION_CONCURRENCY", "1")],
    )
    .await;
    let originals: Vec<(String, String)> = sqlx::query_as("SELECT sku, content_hash FROM items")
        .fetch_all(&fx.app.db)
        .await
        .unwrap();
    for (i, sku) in skus.iter().enumerate().filter(|(i, _)| i % 20 == 0) {
        if i % 40 == 0 {
            fx.erp.remove(sku);
        } else {
            fx.erp.put(erp_item(sku, 2));
        }
    }
    fx.erp.set_behaviour(Behaviour::FailAfter {
        after: 9,
        status: 503,
    });
    let summary = fx.detect_drift().await;
    assert_eq!(summary.outcome, RunOutcome::Unresolved);
    assert!(
        summary.unresolved > 0 && summary.agent_calls >= 9,
        "{summary:?}"
    );
    let resolved = fx.events().await;
    assert_eq!(resolved[0]["eventType"], "drift_resolved");
    assert!(
        resolved[0]["details"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{}",
        resolved[0]
    );

    // Every row is either as it was or as the ERP has it; only items the ERP lacks are
    // deactivated, each one counted.
    let erp_hashes: std::collections::HashMap<String, String> = fx
        .erp
        .items()
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().unwrap().to_owned(),
                i["contentHash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let rows: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT sku, content_hash, is_active FROM items")
            .fetch_all(&fx.app.db)
            .await
            .unwrap();
    let original: std::collections::HashMap<_, _> = originals.into_iter().collect();
    let mut inactive = 0;
    for (sku, hash, active) in rows {
        assert!(
            original.get(&sku) == Some(&hash) || erp_hashes.get(&sku) == Some(&hash),
            "{sku}"
        );
        if !active {
            assert!(
                !erp_hashes.contains_key(&sku),
                "{sku} deactivated but the ERP has it"
            );
            inactive += 1;
        }
    }
    assert_eq!(inactive, summary.deactivated);

    // Once the agent is well again, a run finishes the job.
    fx.erp.set_behaviour(Behaviour::Correct);
    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.outcome, summary.unresolved),
        (RunOutcome::Repaired, 0),
        "{summary:?}"
    );
    fx.assert_in_step().await;
}

#[sqlx::test]
async fn an_agent_that_stalls_is_timed_out_and_reported(db: PgPool) {
    let items = catalogue(numbered(100), 1);
    // Long enough for the first (healthy) call on a loaded machine, short for the test.
    let fx = fixture(db, items.clone(), items, &[("AGENT_TIMEOUT_MS", "2000")]).await;
    fx.erp.put(erp_item("SKU-00050", 2));
    fx.erp.set_behaviour(Behaviour::HangAfter {
        after: 1,
        delay: Duration::from_secs(30),
    });
    let started = Instant::now();
    let summary = fx.detect_drift().await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(summary.outcome, RunOutcome::Unresolved);
    assert!(summary.unresolved >= 1);
    let details = fx.events().await[0]["details"].as_str().unwrap().to_owned();
    assert!(details.contains("timed out"), "{details}");
    // The reconciliation breaker saw it; the orders one did not.
    let breakers: Value = fx
        .app
        .admin_get("/api/admin/circuit-breakers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let apis: Vec<&str> = breakers
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["apiType"].as_str().unwrap())
        .collect();
    assert_eq!(apis, ["reconciliation"]);
}

#[sqlx::test]
async fn a_run_that_outlives_its_deadline_stops_and_says_so(db: PgPool) {
    let items = catalogue(numbered(100), 1);
    let fx = fixture(
        db,
        items.clone(),
        items,
        &[
            ("AGENT_TIMEOUT_MS", "60000"),
            ("RECONCILIATION_RUN_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    fx.erp.put(erp_item("SKU-00050", 2));
    fx.erp.set_behaviour(Behaviour::HangAfter {
        after: 1,
        delay: Duration::from_secs(60),
    });
    let started = Instant::now();
    let summary = fx.detect_drift().await;
    assert!(started.elapsed() < Duration::from_secs(20));
    // Stopped in the search, or (on a very slow machine) before the first answer.
    assert_ne!(summary.outcome, RunOutcome::InSync);
    assert!(summary.unresolved >= 1, "{summary:?}");
    let details = fx.events().await[0]["details"].as_str().unwrap().to_owned();
    assert!(details.contains("run timed out after 3000 ms"), "{details}");
}

#[sqlx::test]
async fn garbage_from_the_agent_is_refused_and_reported(db: PgPool) {
    let items = catalogue(numbered(30), 1);
    // Each case on its own: garbage counts against the breaker, which would open.
    let fx = fixture(db, items.clone(), items, &[("BREAKER_MIN_CALLS", "10000")]).await;
    for body in [
        "not json",
        r#"{"checksum": "ABC", "count": 1}"#,
        r#"{"checksum": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "count": -1}"#,
    ] {
        fx.erp.set_behaviour(Behaviour::ChecksumBody(body.into()));
        let summary = fx.detect_drift().await;
        assert_eq!(
            (summary.outcome, summary.unresolved, summary.erp_count),
            (RunOutcome::Failed, 1, None),
            "{body}"
        );
        let event = &fx.events().await[0];
        assert_eq!(event["eventType"], "full_checksum");
        assert!(
            event["details"].as_str().unwrap().contains("agent failed"),
            "{event}"
        );
    }
    // An error body with a NUL byte (Postgres refuses those in text) still gets recorded.
    fx.erp.set_behaviour(Behaviour::ErrorBody {
        status: 500,
        body: "boom\u{0}boom".into(),
    });
    let summary = fx.detect_drift().await;
    assert_eq!(summary.outcome, RunOutcome::Failed);
    let details = fx.events().await[0]["details"].as_str().unwrap().to_owned();
    assert!(
        details.contains("HTTP 500: boom") && !details.contains('\u{0}'),
        "{details}"
    );

    fx.erp.put(erp_item("SKU-00007", 2));
    let nul = json!({"items": [erp_item("SKU-\u{0}1", 1)]}).to_string();
    let outside = json!({"items": [erp_item("ZZZ", 1)]}).to_string();
    let unsorted =
        json!({"items": [erp_item("SKU-00002", 1), erp_item("SKU-00001", 1)]}).to_string();
    let too_many =
        json!({"items": (0..600).map(|i| erp_item(&format!("SKU-{i:05}"), 1)).collect::<Vec<_>>()})
            .to_string();
    for (behaviour, expected) in [
        (
            Behaviour::ItemsBodyAfter {
                after: 0,
                body: nul,
            },
            "control characters",
        ),
        (
            Behaviour::ItemsBodyAfter {
                after: 0,
                body: outside,
            },
            "outside",
        ),
        (
            Behaviour::ItemsBodyAfter {
                after: 0,
                body: unsorted,
            },
            "increasing",
        ),
        (
            Behaviour::ItemsBodyAfter {
                after: 0,
                body: too_many,
            },
            "limit=500",
        ),
        (
            Behaviour::HugeItems {
                bytes: 9 * 1024 * 1024,
                streamed: false,
            },
            "larger than",
        ),
        (
            Behaviour::HugeItems {
                bytes: 64 * 1024 * 1024,
                streamed: true,
            },
            "larger than",
        ),
    ] {
        fx.erp.set_behaviour(behaviour);
        let summary = fx.detect_drift().await;
        assert_eq!(
            (summary.outcome, summary.repaired),
            (RunOutcome::Unresolved, 0)
        );
        let details = fx.events().await[0]["details"].as_str().unwrap().to_owned();
        assert!(details.contains(expected), "{expected}: {details}");
    }
    // Nothing was written from any of it.
    let hash: String = sqlx::query_scalar("SELECT content_hash FROM items WHERE sku = 'SKU-00007'")
        .fetch_one(&fx.app.db)
        .await
        .unwrap();
    assert_eq!(hash, content_hash("SKU-00007", 1));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&fx.app.db)
        .await
        .unwrap();
    assert_eq!(count, 30);
}

#[sqlx::test]
async fn an_open_breaker_spares_a_sick_agent_until_it_is_reset(db: PgPool) {
    let items = catalogue(numbered(30), 1);
    let fx = fixture(db, items.clone(), items, &[("BREAKER_MIN_CALLS", "1")]).await;
    fx.erp.set_behaviour(Behaviour::FailAfter {
        after: 0,
        status: 500,
    });
    assert_eq!(fx.detect_drift().await.outcome, RunOutcome::Failed);
    assert_eq!(fx.erp.calls(), 1);

    // Open: the next run does not call the agent at all.
    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.outcome, summary.agent_calls),
        (RunOutcome::Failed, 0)
    );
    assert_eq!(fx.erp.calls(), 1);
    let details = fx.events().await[0]["details"].as_str().unwrap().to_owned();
    assert!(details.contains("circuit breaker open"), "{details}");

    fx.erp.set_behaviour(Behaviour::Correct);
    let reset = fx
        .app
        .admin_post(
            &format!(
                "/api/admin/circuit-breakers/{}/reconciliation/reset",
                crate::reconciliation::VENDOR
            ),
            &json!({}),
        )
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    assert_eq!(fx.detect_drift().await.outcome, RunOutcome::InSync);
}
