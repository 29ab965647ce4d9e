//! `/health`: every check in DESIGN's shape, 503 only for database, Redis or worker down,
//! bounded whatever hangs.

use std::time::{Duration, Instant};

use erp_sync::{config::Settings, startup::Application};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{RedisPrefix, spawn_app, test_vars},
    orders::eventually,
};

async fn health(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn insert_orders(db: &PgPool, count: i32) {
    // The insert trigger makes one pending job per order; no worker runs in these tests.
    sqlx::query(
        "INSERT INTO orders (id, vendor_id) SELECT gen_random_uuid(), 'v1' FROM generate_series(1, $1)",
    )
    .bind(count)
    .execute(db)
    .await
    .unwrap();
}

#[sqlx::test]
async fn the_worker_is_up_while_it_runs_and_down_once_stopped(db: PgPool) {
    let prefix = RedisPrefix::new();
    let mut vars = test_vars(&prefix.0);
    vars.push(("ORDER_SYNC_ENABLED".into(), "true".into()));
    let app = Application::build_with_pool(Settings::from_vars(vars).unwrap(), db)
        .await
        .unwrap();
    // A second server over the same state answers /health whatever the app's tasks do.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let router = erp_sync::http::router(app.state().clone());
    let observer = tokio::spawn(async move { axum::serve(listener, router).await });

    let (status, body) = health(&url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "down");
    assert_eq!(body["checks"]["worker"], json!({"status": "down"}));
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    eventually(
        Duration::from_secs(10),
        "the worker reported up",
        || async {
            let (status, body) = health(&url).await;
            status == StatusCode::OK && body["checks"]["worker"]["status"] == "up"
        },
    )
    .await;
    assert_eq!(health(&url).await.1["status"], "up");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the app stops")
        .unwrap()
        .unwrap();
    let (status, body) = health(&url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["worker"], json!({"status": "down"}));
    observer.abort();
}

#[sqlx::test]
async fn more_than_100_waiting_jobs_is_200_degraded(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let url = app.url("/health");
    insert_orders(&db, 100).await;
    let (status, body) = health(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "up", "100 waiting is still fine: {body}");
    assert_eq!(
        body["checks"]["queue"],
        json!({"status": "up", "waiting": 100})
    );

    insert_orders(&db, 50).await;
    // The checks of one second are shared by every caller: the new figure comes after it.
    eventually(Duration::from_secs(5), "150 waiting", || async {
        health(&url).await.1["checks"]["queue"]["waiting"] == 150
    })
    .await;
    let (status, body) = health(&url).await;
    assert_eq!(status, StatusCode::OK, "degraded is not down: {body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(
        body["checks"]["queue"],
        json!({"status": "degraded", "waiting": 150})
    );
    assert_eq!(body["checks"]["worker"]["status"], "disabled");

    // Jobs not due yet (a retry scheduled later) are not waiting.
    sqlx::query("UPDATE sync_jobs SET next_retry_at = now() + interval '1 hour'")
        .execute(&db)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "none waiting", || async {
        health(&url).await.1["checks"]["queue"]["waiting"] == 0
    })
    .await;
}

#[sqlx::test]
async fn agents_are_counted_online_and_total(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let token = app.register_agent("v1").await;
    app.register_agent("v2").await; // registered, never beat: offline
    app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": "v1"}))
        .send()
        .await
        .unwrap();
    let (_, body) = health(&app.url("/health")).await;
    assert_eq!(
        body["checks"]["agents"],
        json!({"status": "up", "online": 1, "total": 2})
    );
}

#[tokio::test]
async fn health_answers_within_3s_when_postgres_hangs() {
    // Accepts connections and never answers: the worst case for a health check.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/hangs",
        blackhole.local_addr().unwrap().port()
    );
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy(&url)
        .unwrap();
    let app = spawn_app(pool).await;
    let started = Instant::now();
    let (status, body) = health(&app.url("/health")).await;
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "down");
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert_eq!(body["checks"]["redis"]["status"], "up");
    assert_eq!(
        body["checks"]["queue"],
        json!({"status": "unknown", "waiting": null})
    );
    assert_eq!(body["checks"]["agents"]["status"], "unknown");
    drop(blackhole);
}
