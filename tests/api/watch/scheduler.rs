//! The scheduler: schedules validated at start-up, the admin routes, once per tick across
//! replicas, never two runs of a job at once.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use erp_sync::{
    config::Settings,
    ops::scheduler::{JobName, RunOutcome},
    startup::Application,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{app_with, dead_letter, replica_pool, run_job};
use crate::{
    helpers::{RedisPrefix, spawn_app, test_vars},
    mock_erp::erp_item,
    mock_slack::{Behaviour, MockSlack},
    orders::eventually,
    reconciliation::{VENDOR, catalogue, fixture, numbered},
};

fn settings_with(var: &str, value: &str) -> Result<Settings, erp_sync::config::ConfigError> {
    let mut vars = test_vars("unused");
    vars.push((var.into(), value.into()));
    Settings::from_vars(vars)
}

#[test]
fn schedules_are_validated_at_start_up_naming_the_variable() {
    for (var, value, expected) in [
        ("SCHEDULE_CHECK_DLQ", "*/5 * * * *", "6 fields"),
        ("SCHEDULE_DETECT_DRIFT", "every hour", "6 fields"),
        (
            "SCHEDULE_CLEANUP_EXPIRED_JOBS",
            "0 0 25 * * *",
            "not a valid cron",
        ),
        ("SCHEDULE_CHECK_AGENT_HEALTH", "0 0 0 31 2 *", "never fires"),
        (
            "SCHEDULE_CLEANUP_RESOLVED_DLQ",
            "0 0 4 * * SAT\u{0}",
            "not a valid cron",
        ),
    ] {
        let error = settings_with(var, value)
            .err()
            .unwrap_or_else(|| panic!("{value:?} accepted"));
        assert_eq!(error.variable(), Some(var), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
    let settings = settings_with("SCHEDULE_ARCHIVE_RECONCILIATION_EVENTS", "off").unwrap();
    let archive = settings
        .schedules
        .iter()
        .find(|s| s.job == JobName::ArchiveReconciliationEvents)
        .unwrap();
    assert!(archive.cron.is_none(), "off switches a job off");
    let settings = settings_with("SCHEDULE_CHECK_DLQ", " 30 */10 * * * * ").unwrap();
    let check = settings
        .schedules
        .iter()
        .find(|s| s.job == JobName::CheckDlq);
    assert_eq!(
        check.unwrap().cron.as_ref().unwrap().as_str(),
        "30 */10 * * * *"
    );
}

#[test]
fn defaults_and_the_example_env_file_agree_with_the_design() {
    let defaults = Settings::from_vars(Vec::<(String, String)>::new()).unwrap();
    assert!(defaults.metrics_enabled && defaults.scheduler_enabled);
    assert_eq!(defaults.alert_cooldown.as_secs(), 900);
    let example: Vec<(String, String)> = dotenvy::from_path_iter(".env.example")
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let from_example = Settings::from_vars(example).expect(".env.example is valid");
    let schedules = |settings: &Settings| -> Vec<(JobName, Option<String>)> {
        settings
            .schedules
            .iter()
            .map(|s| (s.job, s.cron.as_ref().map(|c| c.as_str().to_owned())))
            .collect()
    };
    assert_eq!(schedules(&from_example), schedules(&defaults));
    assert!(
        schedules(&defaults)
            .iter()
            .all(|(job, cron)| cron.as_deref() == Some(job.default_schedule()))
    );
}

#[sqlx::test]
async fn the_service_starts_its_cron_with_the_default_schedules(db: PgPool) {
    let prefix = RedisPrefix::new();
    let mut vars = test_vars(&prefix.0);
    vars.push(("SCHEDULER_ENABLED".into(), "true".into()));
    let app = Application::build_with_pool(Settings::from_vars(vars).unwrap(), db)
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}/health", app.port());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    // `run` starts the cron before it serves: an answer means the six schedules were taken.
    eventually(Duration::from_secs(10), "serving", || async {
        reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("stops")
        .unwrap()
        .expect("ran and stopped cleanly");
}

#[sqlx::test]
async fn the_scheduler_lists_every_job_with_its_schedule_and_runs(db: PgPool) {
    let app = app_with(db, &[("SCHEDULE_CLEANUP_RESOLVED_DLQ", "off")]).await;
    let jobs: Vec<Value> = app
        .admin_get("/api/admin/scheduler")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schedules: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["name"].as_str().unwrap(), j["schedule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        schedules,
        [
            ("detect-drift", "0 0 * * * *"),
            ("check-agent-health", "0 */5 * * * *"),
            ("check-dlq", "0 */15 * * * *"),
            ("cleanup-expired-jobs", "0 0 2 * * *"),
            ("archive-reconciliation-events", "0 0 3 * * SUN"),
            ("cleanup-resolved-dlq", "off"),
        ]
    );
    let next: DateTime<Utc> = serde_json::from_value(jobs[0]["nextRunAt"].clone()).unwrap();
    assert!(next > Utc::now() && next <= Utc::now() + chrono::Duration::hours(1));
    assert_eq!(next.format("%M:%S").to_string(), "00:00", "on the hour");
    let sunday: DateTime<Utc> = serde_json::from_value(jobs[4]["nextRunAt"].clone()).unwrap();
    assert_eq!(sunday.format("%a %H:%M:%S").to_string(), "Sun 03:00:00");
    assert!(jobs[5]["nextRunAt"].is_null(), "off: never");
    assert!(jobs.iter().all(|j| j["lastRunAt"].is_null()));

    let (status, run) = run_job(&app, "check-dlq").await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let jobs: Vec<Value> = app
        .admin_get("/api/admin/scheduler")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs[2]["lastRunAt"], run["startedAt"]);
    assert_eq!(jobs[2]["lastStatus"], "succeeded");
    assert_eq!(
        jobs[2]["lastResult"],
        json!({"unresolved": 0, "vendors": 0})
    );
    assert!(jobs[2]["lastDurationMs"].is_number());

    let unauthenticated = app
        .client
        .get(app.url("/api/admin/scheduler"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn run_now_answers_with_the_result_404_for_an_unknown_job(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    dead_letter(&db, "v1").await;
    let (status, run) = run_job(&app, "check-dlq").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&run["job"], &run["trigger"], &run["status"]),
        (&json!("check-dlq"), &json!("manual"), &json!("succeeded"))
    );
    assert_eq!(run["result"], json!({"unresolved": 1, "vendors": 1}));

    for name in ["nope", "CHECK-DLQ", "check-dlq%00", &"x".repeat(5000)] {
        let (status, body) = run_job(&app, name).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
        assert_eq!(body["error"]["code"], "not_found");
        assert!(!body.to_string().contains("xxxxxxxx"), "input not echoed");
    }
    let unauthenticated = app
        .client
        .post(app.url("/api/admin/scheduler/check-dlq/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn detect_drift_reconciles_through_the_real_service_and_alerts_on_drift(db: PgPool) {
    let slack = MockSlack::start(Behaviour::Ok).await;
    let skus = numbered(30);
    let mut erp = catalogue(skus.clone(), 1);
    erp[7] = erp_item(&skus[7], 2);
    let fixture = fixture(
        db,
        erp,
        catalogue(skus, 1),
        &[("SLACK_WEBHOOK_URL", slack.url.as_str())],
    )
    .await;
    let (status, run) = run_job(&fixture.app, "detect-drift").await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["vendors"], 1, "{run}");
    assert_eq!(run["result"]["driftedVendors"], json!([VENDOR]), "{run}");
    let (_, stored) = fixture.pg_checksum().await;
    assert_eq!(stored, fixture.erp.checksum(), "the drift was repaired");
    eventually(Duration::from_secs(10), "the drift alert", || async {
        slack.texts().len() == 1
    })
    .await;
    let text = &slack.texts()[0];
    assert!(
        text.contains("reconciliation_drift") && text.contains(VENDOR),
        "{text}"
    );
}

#[sqlx::test]
async fn a_job_running_on_another_replica_is_409(db: PgPool) {
    let a = spawn_app(replica_pool(&db).await).await;
    let b = spawn_app(replica_pool(&db).await).await;
    // Holds up check-dlq's read, so B's run stays in progress.
    let mut blocker = db.begin().await.unwrap();
    sqlx::query("LOCK TABLE dead_letter_queue IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let b_run = tokio::spawn(async move {
        let outcome = run_job(&b, "check-dlq").await;
        (b, outcome)
    });
    eventually(Duration::from_secs(10), "B's run in progress", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM scheduler_runs WHERE job = 'check-dlq' AND status = 'running'",
        )
        .fetch_one(&db)
        .await
        .unwrap()
            == 1
    })
    .await;

    let (status, body) = run_job(&a, "check-dlq").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let jobs: Vec<Value> = a
        .admin_get("/api/admin/scheduler")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs[2]["lastStatus"], "running");
    let (status, _) = run_job(&a, "check-agent-health").await;
    assert_eq!(status, StatusCode::OK, "other jobs are not held up");

    blocker.commit().await.unwrap();
    let (_b, (status, run)) = b_run.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "succeeded");
    let (status, _) = run_job(&a, "check-dlq").await;
    assert_eq!(status, StatusCode::OK, "free again once it finished");
}

#[sqlx::test]
async fn a_tick_runs_once_across_two_replicas(db: PgPool) {
    let a = spawn_app(replica_pool(&db).await).await;
    let b = spawn_app(replica_pool(&db).await).await;
    dead_letter(&db, "v1").await;
    let tick = Utc::now().trunc_subsecs(0);
    let (first, second) = tokio::join!(
        a.state.scheduler.run_scheduled(JobName::CheckDlq, tick),
        b.state.scheduler.run_scheduled(JobName::CheckDlq, tick),
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    let ran: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            RunOutcome::Ran(run) => Some(run),
            _ => None,
        })
        .collect();
    assert_eq!(ran.len(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().any(|o| matches!(o, RunOutcome::TickTaken)),
        "{outcomes:?}"
    );
    assert_eq!(ran[0].status, "succeeded");
    assert_eq!(ran[0].tick, Some(tick));
    let later = a
        .state
        .scheduler
        .run_scheduled(JobName::CheckDlq, tick)
        .await;
    assert!(
        matches!(later.unwrap(), RunOutcome::TickTaken),
        "a tick is run once, ever"
    );
    let next = b
        .state
        .scheduler
        .run_scheduled(JobName::CheckDlq, tick + chrono::Duration::seconds(1))
        .await;
    assert!(
        matches!(next.unwrap(), RunOutcome::Ran(_)),
        "the next tick runs"
    );
}

#[sqlx::test]
async fn two_replicas_on_a_schedule_run_each_tick_once(db: PgPool) {
    let prefix = RedisPrefix::new();
    let mut vars = test_vars(&prefix.0);
    vars.push(("SCHEDULER_ENABLED".into(), "true".into()));
    for job in JobName::ALL {
        let schedule = if job == JobName::CheckDlq {
            "* * * * * *"
        } else {
            "off"
        };
        vars.push((job.env_var(), schedule.into()));
    }
    let (shutdown, mut running, mut states) = (CancellationToken::new(), Vec::new(), Vec::new());
    for _ in 0..2 {
        let settings = Settings::from_vars(vars.clone()).unwrap();
        let app = Application::build_with_pool(settings, replica_pool(&db).await)
            .await
            .unwrap();
        states.push(app.state().clone());
        running.push(tokio::spawn(app.run(shutdown.clone())));
    }
    let runs = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT count(*), count(DISTINCT tick), count(*) FILTER (WHERE status = 'succeeded')
             FROM scheduler_runs WHERE job = 'check-dlq' AND trigger = 'schedule'",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    eventually(Duration::from_secs(20), "3 ticks run", || async {
        runs().await.2 >= 3
    })
    .await;
    shutdown.cancel();
    for app in running {
        tokio::time::timeout(Duration::from_secs(15), app)
            .await
            .expect("stops")
            .unwrap()
            .unwrap();
    }

    let (rows, ticks, succeeded) = runs().await;
    assert_eq!(rows, ticks, "one row per tick");
    let other: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scheduler_runs
         WHERE job <> 'check-dlq' OR status NOT IN ('succeeded', 'skipped', 'cancelled')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    // (`skipped`: a tick whose previous run had not finished; never run alongside it.)
    assert_eq!(other, 0, "only check-dlq ran, and nothing failed");
    // Each replica counts the runs it made: together, exactly one per tick that succeeded.
    let executed: f64 = states
        .iter()
        .map(|state| counter(&state.prometheus.encode(), "check-dlq", "succeeded"))
        .sum();
    assert_eq!(executed, succeeded as f64);
}

fn counter(text: &str, job: &str, status: &str) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "erp_sync_scheduler_runs_total"
                && s.labels.get("job") == Some(job)
                && s.labels.get("status") == Some(status)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[sqlx::test]
async fn a_run_left_by_a_dead_replica_is_marked_abandoned(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let dead: i64 = sqlx::query_scalar(
        "INSERT INTO scheduler_runs (job, trigger, instance, started_at)
         VALUES ('check-dlq', 'manual', 'dead-replica', now() - interval '1 hour') RETURNING id",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let (status, _) = run_job(&app, "check-dlq").await;
    assert_eq!(status, StatusCode::OK, "its lock died with its connection");
    let dead_status: String = sqlx::query_scalar("SELECT status FROM scheduler_runs WHERE id = $1")
        .bind(dead)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(dead_status, "abandoned");
}
