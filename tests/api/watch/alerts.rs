//! Alerts: a warn log line always; one Slack message per (type, vendor) within the cooldown,
//! across replicas; a broken or hanging Slack costs the caller nothing.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use erp_sync::{
    error::AppError,
    ops::scheduler::{DriftReport, Reconciler},
};
use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{app_with, dead_letter, jobs, jobs_with, run_job};
use crate::{
    helpers::{TestApp, captured_logs, spawn_app_with},
    mock_agent::{MockAgent, Reply},
    mock_slack::{Behaviour, MockSlack, WEBHOOK_SECRET},
    orders::{eventually, insert_order},
};

/// Vendor ids of this test only: the captured logs are shared by every test.
fn vendor() -> String {
    format!("v-{}", Uuid::new_v4().simple())
}

/// Log lines of `alert` for `vendor`.
fn alert_lines(alert: &str, vendor: &str) -> usize {
    captured_logs()
        .lines()
        .filter(|l| {
            l.contains(r#""message":"alert""#)
                && l.contains(&format!(r#""alert":"{alert}""#))
                && l.contains(vendor)
        })
        .count()
}

async fn slack_app(db: PgPool, slack: &MockSlack, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("SLACK_WEBHOOK_URL", slack.url.as_str())];
    vars.extend_from_slice(extra);
    app_with(db, &vars).await
}

/// Waits for `count` messages, then makes sure no more arrive.
async fn expect_messages(slack: &MockSlack, count: usize) -> Vec<String> {
    eventually(Duration::from_secs(10), "Slack messages", || async {
        slack.texts().len() >= count
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts = slack.texts();
    assert_eq!(texts.len(), count, "{texts:?}");
    texts
}

#[sqlx::test]
async fn one_slack_message_per_alert_within_the_cooldown_across_replicas(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Ok).await;
    let a = slack_app(db.clone(), &slack, &[]).await;
    let prefix = a.redis_prefix.clone();
    let b = spawn_app_with(db.clone(), |vars| {
        vars.push(("SLACK_WEBHOOK_URL".into(), slack.url.clone()));
        vars.push(("REDIS_PREFIX".into(), prefix));
    })
    .await;
    let (v1, v2) = (vendor(), vendor());
    for vendor in [&v1, &v1, &v2] {
        dead_letter(&db, vendor).await;
    }
    for app in [&a, &a, &b] {
        let result = jobs(app).check_dlq().await.unwrap();
        assert_eq!(result, json!({"unresolved": 3, "vendors": 2}));
    }
    let mut texts = expect_messages(&slack, 2).await;
    texts.sort_by_key(|t| t.contains(&v2));
    assert!(
        texts[0].contains("dlq_entries_found") && texts[0].contains(&v1),
        "{texts:?}"
    );
    assert!(texts[0].contains("2 unresolved"), "{texts:?}");
    assert!(
        texts[1].contains("dlq_entries_found") && texts[1].contains(&v2),
        "{texts:?}"
    );
    assert_eq!(
        alert_lines("dlq_entries_found", &v1),
        3,
        "logged every time, sent once"
    );
}

#[sqlx::test]
async fn the_cooldown_ends(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Ok).await;
    let app = slack_app(db.clone(), &slack, &[("ALERT_COOLDOWN_SECS", "1")]).await;
    dead_letter(&db, &vendor()).await;
    jobs(&app).check_dlq().await.unwrap();
    expect_messages(&slack, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    jobs(&app).check_dlq().await.unwrap();
    expect_messages(&slack, 2).await;
}

#[sqlx::test]
async fn a_failed_post_frees_the_cooldown_for_the_next_occurrence(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Status(500)).await;
    let app = slack_app(db.clone(), &slack, &[]).await;
    let v = vendor();
    dead_letter(&db, &v).await;
    jobs(&app).check_dlq().await.unwrap();
    eventually(Duration::from_secs(10), "the failure logged", || async {
        captured_logs()
            .lines()
            .any(|l| l.contains("could not post the alert to Slack") && l.contains(&v))
    })
    .await;
    slack.set(Behaviour::Ok);
    jobs(&app).check_dlq().await.unwrap();
    let texts = expect_messages(&slack, 1).await;
    assert!(texts[0].contains(&v));
}

#[sqlx::test]
async fn nothing_is_posted_when_no_webhook_is_set(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Ok).await;
    let app = app_with(db.clone(), &[]).await;
    let v = vendor();
    dead_letter(&db, &v).await;
    jobs(&app).check_dlq().await.unwrap();
    assert_eq!(alert_lines("dlq_entries_found", &v), 1, "still logged");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(slack.texts().is_empty());
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:alerts:*", app.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.is_empty(), "no delivery was attempted: {keys:?}");
}

#[sqlx::test]
async fn a_hanging_slack_does_not_delay_the_caller(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Hang(Duration::from_secs(30))).await;
    let app = slack_app(db.clone(), &slack, &[]).await;
    let v = vendor();
    dead_letter(&db, &v).await;
    let started = Instant::now();
    let (status, run) = run_job(&app, "check-dlq").await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the job waited for Slack: {:?}",
        started.elapsed()
    );
    // The post gives up after its 5 s timeout, and says so without the webhook's secret.
    eventually(Duration::from_secs(15), "the timeout logged", || async {
        captured_logs().lines().any(|l| {
            l.contains("could not post the alert to Slack")
                && l.contains(&v)
                && l.contains(r#""error":"timed out""#)
        })
    })
    .await;
    assert!(
        !captured_logs().contains(WEBHOOK_SECRET),
        "webhook URL logged"
    );
}

#[sqlx::test]
async fn an_alert_storm_is_bounded_and_never_blocks(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Hang(Duration::from_secs(30))).await;
    let app = slack_app(db.clone(), &slack, &[]).await;
    let tag = vendor();
    sqlx::query(
        "INSERT INTO dead_letter_queue (vendor_id, operation, payload, failure_reason)
         SELECT $1 || '-' || n, 'create_order', '{}', 'boom' FROM generate_series(1, 80) n",
    )
    .bind(&tag)
    .execute(&db)
    .await
    .unwrap();
    let started = Instant::now();
    let result = jobs(&app).check_dlq().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(result, json!({"unresolved": 80, "vendors": 80}));
    // 64 posts in flight at most: the other 16 alerts are only logged.
    let dropped = captured_logs()
        .lines()
        .filter(|l| l.contains("too many alerts in flight") && l.contains(&tag))
        .count();
    assert_eq!(dropped, 16);
}

#[sqlx::test]
async fn an_agent_gone_offline_is_alerted_by_the_health_sweep(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Ok).await;
    let app = slack_app(db.clone(), &slack, &[]).await;
    let v = vendor();
    let token = app.register_agent(&v).await;
    app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": v}))
        .send()
        .await
        .unwrap();
    let age = |minutes: i32| {
        sqlx::query(
            "UPDATE agent_registry SET last_heartbeat = now() - make_interval(mins => $1) WHERE vendor_id = $2",
        )
        .bind(minutes)
        .bind(v.clone())
        .execute(&db)
    };
    age(2).await.unwrap();
    let (_, run) = run_job(&app, "check-agent-health").await;
    assert_eq!(
        run["result"],
        json!({"changed": 1, "offline": [], "degraded": [v]}),
        "degraded: no alert"
    );
    age(10).await.unwrap();
    let (_, run) = run_job(&app, "check-agent-health").await;
    assert_eq!(
        run["result"],
        json!({"changed": 1, "offline": [v], "degraded": []})
    );
    let (_, run) = run_job(&app, "check-agent-health").await;
    assert_eq!(run["result"]["changed"], 0, "a change is reported once");
    let texts = expect_messages(&slack, 1).await;
    assert!(
        texts[0].contains("agent_offline") && texts[0].contains(&v),
        "{texts:?}"
    );
}

#[sqlx::test]
async fn an_opening_circuit_breaker_is_alerted(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Ok).await;
    let app = slack_app(
        db.clone(),
        &slack,
        &[
            ("ORDER_SYNC_ENABLED", "true"),
            ("ORDER_SYNC_BACKOFF_MS", "20"),
            ("ORDER_SYNC_SWEEP_INTERVAL_MS", "200"),
            ("ORDER_SYNC_MAX_ATTEMPTS", "20"),
            ("AGENT_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let agent = MockAgent::start(Reply::Status(500)).await;
    let v = vendor();
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(&v, &token, &agent.url).await;
    app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": v}))
        .send()
        .await
        .unwrap();
    for _ in 0..6 {
        insert_order(&db, &v).await;
    }
    let texts = expect_messages(&slack, 1).await;
    assert!(
        texts[0].contains("circuit_breaker_open") && texts[0].contains(&v),
        "{texts:?}"
    );
}

/// Stands in for the reconciliation service behind the `Reconciler` seam: drift for one
/// vendor, a failure for another, a run already going for a third, and a record of concurrency.
struct ScriptedReconciler {
    drifting: String,
    failing: String,
    busy: String,
    calls: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Reconciler for ScriptedReconciler {
    fn detect_drift<'a>(
        &'a self,
        vendor_id: &'a str,
    ) -> BoxFuture<'a, Result<DriftReport, AppError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(vendor_id.to_owned());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if vendor_id == self.failing {
                return Err(AppError::Unavailable("agent unreachable".into()));
            }
            if vendor_id == self.busy {
                return Err(AppError::Conflict("a run is already going".into()));
            }
            let drifted = u64::from(vendor_id == self.drifting) * 3;
            Ok(DriftReport {
                drifted,
                summary: json!({"repaired": drifted}),
            })
        })
    }
}

#[sqlx::test]
async fn detect_drift_reconciles_online_agents_a_few_at_a_time(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Ok).await;
    let app = slack_app(
        db.clone(),
        &slack,
        &[("REGISTER_RATE_LIMIT_PER_MIN", "100")],
    )
    .await;
    let online: Vec<String> = (0..7).map(|_| vendor()).collect();
    for v in &online {
        let token = app.register_agent(v).await;
        app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": v}))
            .send()
            .await
            .unwrap();
    }
    let (degraded, offline) = (vendor(), vendor());
    for v in [&degraded, &offline] {
        let token = app.register_agent(v).await;
        app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": v}))
            .send()
            .await
            .unwrap();
    }
    sqlx::query("UPDATE agent_registry SET last_heartbeat = now() - interval '2 minutes' WHERE vendor_id = $1")
        .bind(&degraded)
        .execute(&db)
        .await
        .unwrap();
    app.state.agents.deregister(&offline).await.unwrap();

    let reconciler = Arc::new(ScriptedReconciler {
        drifting: online[0].clone(),
        failing: online[1].clone(),
        busy: online[2].clone(),
        calls: Mutex::default(),
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
    });
    let result = jobs_with(&app, reconciler.clone())
        .detect_drift()
        .await
        .unwrap();
    assert_eq!(
        result,
        json!({"vendors": 7, "drifted": 1, "skipped": 1, "failed": 1,
               "driftedVendors": [online[0]], "skippedVendors": [online[2]],
               "failedVendors": [online[1]]})
    );
    let mut called = reconciler.calls.lock().unwrap().clone();
    called.sort();
    let mut expected = online.clone();
    expected.sort();
    assert_eq!(called, expected, "online agents only");
    assert_eq!(
        reconciler.most_in_flight.load(Ordering::SeqCst),
        4,
        "bounded"
    );
    // The reconciliation service alerts where it finds drift; the job only counts.
    expect_messages(&slack, 0).await;
}
