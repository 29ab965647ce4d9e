//! Nothing an agent sends, no panic, no stale worker and no Redis outage can stop order
//! delivery or leave Redis growing (issue 8, points 4, 6 and 7).

use std::time::{Duration, Instant};

use chrono::Utc;
use erp_sync::orders::{
    delivery_queries::{self as delivery, Release},
    job_queries as jobs,
};
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    erp_agent::{Behaviour, ErpAgent},
    helpers::captured_logs,
    order_delivery::{count_where, get, health, insert_orders, online, order_reference},
    orders::{VENDOR, eventually, insert_order, job_of, order_app, status_is},
};

#[sqlx::test]
async fn hostile_answers_cost_an_attempt_never_the_worker(db: PgPool) {
    let agent = ErpAgent::start(Behaviour::Create(Duration::ZERO)).await;
    let mut garbage = b"boom\0\x1b[31m".to_vec();
    garbage.push(0xff);
    agent
        .then(Behaviour::Endless)
        .then(Behaviour::Raw(200, vec![], vec![b'x'; 1 << 20]))
        .then(Behaviour::Raw(500, vec![], garbage))
        .then(Behaviour::Raw(
            200,
            vec![],
            br#"{"erpReference":"ERP\u0000X"}"#.to_vec(),
        ))
        .then(Behaviour::Raw(
            200,
            vec![],
            format!(r#"{{"erpReference":"{}"}}"#, "x".repeat(101)).into_bytes(),
        ))
        .then(Behaviour::Raw(
            503,
            vec![("x-huge", "a".repeat(1_000_000))],
            vec![],
        ))
        .then(Behaviour::Hang(Duration::from_secs(3)))
        .then(Behaviour::Raw(409, vec![], b"already in flight".to_vec()))
        .then(Behaviour::Raw(
            503,
            vec![("retry-after", "-1".into())],
            vec![],
        ));
    online(&db, VENDOR, &agent.url).await;
    let app = order_app(
        db.clone(),
        &[
            ("AGENT_TIMEOUT_MS", "500"),
            ("ORDER_SYNC_MAX_ATTEMPTS", "25"),
            ("ORDER_SYNC_BACKOFF_MS", "1"),
            ("BREAKER_MIN_CALLS", "1000"),
        ],
    )
    .await;
    let order_id = insert_order(&db, VENDOR).await;
    eventually(
        Duration::from_secs(30),
        "completed after nine bad answers",
        || status_is(&db, order_id, "completed"),
    )
    .await;
    assert_eq!(agent.calls(), 10);
    assert_eq!(job_of(&db, order_id).await["attempts"], 10);
    assert_eq!(
        order_reference(&db, order_id).await,
        agent.reference_of(&order_id.to_string())
    );
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["worker"]["status"], "up");

    // A refusal whose body carries NUL and escape bytes: dead-lettered, its reason clean.
    agent.set(Behaviour::Raw(422, vec![], b"bad\0order\x1b".to_vec()));
    let refused = insert_order(&db, VENDOR).await;
    eventually(
        Duration::from_secs(10),
        "refused order dead-lettered",
        || status_is(&db, refused, "failed"),
    )
    .await;
    let page = get(&app, "/api/admin/dlq").await;
    let reason = page["data"][0]["failureReason"].as_str().unwrap();
    assert!(
        reason.starts_with("permanent: agent answered HTTP 422"),
        "{reason}"
    );
    assert!(reason.contains("bad\u{FFFD}order\u{FFFD}"), "{reason}");
}

#[sqlx::test]
async fn a_panic_in_an_attempt_is_caught_and_the_job_retried(db: PgPool) {
    let agent = ErpAgent::start(Behaviour::Create(Duration::ZERO)).await;
    online(&db, VENDOR, &agent.url).await;
    let idle = order_app(db.clone(), &[("ORDER_SYNC_ENABLED", "false")]).await;
    let order_id = insert_order(&db, VENDOR).await;
    let job_id: Uuid = job_of(&db, order_id).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let token = Uuid::new_v4();
    let lease = chrono::Duration::seconds(60);
    assert!(
        delivery::claim(&db, job_id, token, lease, 5)
            .await
            .unwrap()
            .is_some()
    );
    idle.state
        .orders
        .guarded(job_id, token, async { panic!("boom in an attempt") })
        .await;
    let job = jobs::find_by_id(&db, job_id).await.unwrap().unwrap();
    assert_eq!(job.status, "pending", "given back, not left to its lease");
    assert_eq!(
        job.retry_count, 1,
        "the attempt counts: the agent may have been called"
    );
    assert!(
        job.error_message
            .unwrap()
            .contains("panic): boom in an attempt"),
        "the panic is recorded"
    );
    assert_eq!(job.lease_token, None);
    assert!(captured_logs().contains("order sync attempt panicked"));
    drop(idle);

    let _worker = order_app(db.clone(), &[]).await;
    eventually(
        Duration::from_secs(10),
        "the job completed after the panic",
        || status_is(&db, order_id, "completed"),
    )
    .await;
    assert_eq!(job_of(&db, order_id).await["attempts"], 2);
}

#[sqlx::test]
async fn a_worker_whose_lease_ran_out_changes_nothing(db: PgPool) {
    let app = order_app(db.clone(), &[("ORDER_SYNC_ENABLED", "false")]).await;
    assert!(
        app.state.orders.lease()
            >= Duration::from_millis(1000) + erp_sync::db::POOL_ACQUIRE_TIMEOUT,
        "the lease covers the agent timeout and the wait for a connection"
    );
    let order_id = insert_order(&db, VENDOR).await;
    let job_id: Uuid = job_of(&db, order_id).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (stale, current) = (Uuid::new_v4(), Uuid::new_v4());
    let claim = |token: Uuid, lease: chrono::Duration| {
        let db = db.clone();
        async move { delivery::claim(&db, job_id, token, lease, 5).await.unwrap() }
    };
    assert!(claim(stale, chrono::Duration::zero()).await.is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = claim(current, chrono::Duration::seconds(60)).await.unwrap();
    assert_eq!(
        taken.job.retry_count, 1,
        "the stale attempt's lost outcome is counted"
    );
    assert!(
        claim(Uuid::new_v4(), chrono::Duration::seconds(60))
            .await
            .is_none()
    );

    let failure = Release {
        due_at: Utc::now(),
        reason: "stale failure",
        spent_attempt: true,
        agent_error: Some("HTTP 500 from the stale attempt"),
        sent: None,
    };
    assert!(
        !delivery::release(&db, job_id, stale, &failure)
            .await
            .unwrap()
    );
    assert!(
        !delivery::await_callback(
            &db,
            job_id,
            stale,
            chrono::Duration::seconds(60),
            &serde_json::json!({})
        )
        .await
        .unwrap()
    );
    assert!(
        delivery::dead_letter(&db, job_id, Some(stale), "stale", true, None)
            .await
            .unwrap()
            .is_none()
    );
    let job = jobs::find_by_id(&db, job_id).await.unwrap().unwrap();
    assert_eq!(job.status, "processing");
    assert_eq!(job.lease_token, Some(current));
    assert_eq!(job.retry_count, 1);
    assert_eq!(job.last_agent_error, None);
    assert_eq!(count_where(&db, "true").await, 1);

    let failure = Release {
        agent_error: Some("HTTP 503"),
        ..failure
    };
    assert!(
        delivery::release(&db, job_id, current, &failure)
            .await
            .unwrap()
    );
    let job = jobs::find_by_id(&db, job_id).await.unwrap().unwrap();
    assert_eq!(
        (
            job.status.as_str(),
            job.retry_count,
            job.last_agent_error.as_deref()
        ),
        ("pending", 2, Some("HTTP 503"))
    );

    // A success is a fact about the ERP, whichever attempt heard it: recorded even when
    // stale, without counting as the current attempt's call.
    let (stale, current) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(claim(stale, chrono::Duration::zero()).await.is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        claim(current, chrono::Duration::seconds(60))
            .await
            .is_some()
    );
    let done = delivery::complete(&db, job_id, "ERP-1", Some(stale), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.job.status, "completed");
    assert_eq!(done.job.retry_count, 3);
    assert_eq!(
        order_reference(&db, order_id).await.as_deref(),
        Some("ERP-1")
    );
    assert!(
        delivery::complete(&db, job_id, "ERP-2", Some(current), None)
            .await
            .unwrap()
            .is_none(),
        "a second success changes nothing"
    );
    assert_eq!(
        order_reference(&db, order_id).await.as_deref(),
        Some("ERP-1")
    );
}
#[sqlx::test]
async fn redis_keys_return_to_the_baseline_after_2000_orders(db: PgPool) {
    let agent = ErpAgent::start(Behaviour::Create(Duration::ZERO)).await;
    online(&db, VENDOR, &agent.url).await;
    let app = order_app(db.clone(), &[]).await;
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = app.redis_prefix.clone();
    let keys = |mut redis: redis::aio::MultiplexedConnection| {
        let pattern = format!("{prefix}:*");
        async move {
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut redis)
                .await
                .unwrap();
            keys.sort();
            keys
        }
    };
    eventually(Duration::from_secs(10), "worker up", || async {
        health(&app).await.1["checks"]["worker"]["status"] == "up"
    })
    .await;
    let baseline = keys(redis.clone()).await;

    let orders = insert_orders(&db, VENDOR, 2000).await;
    eventually(Duration::from_secs(60), "2000 orders completed", || async {
        count_where(&db, "status = 'completed'").await == 2000
    })
    .await;
    assert_eq!(agent.created(), orders.len());
    eventually(
        Duration::from_secs(10),
        "Redis back to its baseline",
        || async { keys(redis.clone()).await == baseline },
    )
    .await;

    // A worker killed -9 leaves its registration behind; it is reaped.
    let queue = erp_sync::orders::queue::QueueKeys::new(&app.redis_prefix);
    let dead = "order-sync-1-deadbeef";
    let _: () = redis::pipe()
        .zadd(&queue.workers, dead, 1_000)
        .hset(queue.worker_metadata(dead), "backend_name", "x")
        .zadd(&queue.known_workers, dead, 1_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "dead worker reaped", || async {
        keys(redis.clone()).await == baseline
    })
    .await;
}

#[sqlx::test]
async fn the_worker_recovers_quickly_from_repeated_redis_outages(db: PgPool) {
    let proxy = crate::tcp_proxy::TcpProxy::start("127.0.0.1:6379").await;
    let agent = ErpAgent::start(Behaviour::Create(Duration::ZERO)).await;
    online(&db, VENDOR, &agent.url).await;
    let redis_url = format!("redis://127.0.0.1:{}", proxy.port);
    let app = order_app(db.clone(), &[("REDIS_URL", redis_url.as_str())]).await;
    eventually(Duration::from_secs(10), "worker up", || async {
        health(&app).await.1["checks"]["worker"]["status"] == "up"
    })
    .await;
    for outage in 1..=3 {
        proxy.cut();
        eventually(
            Duration::from_secs(10),
            "health reports the worker down",
            || async {
                let (status, body) = health(&app).await;
                status == StatusCode::SERVICE_UNAVAILABLE
                    && body["checks"]["worker"]["status"] == "down"
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.restore();
        let restored = Instant::now();
        let order_id = insert_order(&db, VENDOR).await;
        eventually(
            Duration::from_secs(20),
            "order completed after the outage",
            || status_is(&db, order_id, "completed"),
        )
        .await;
        let recovery = restored.elapsed();
        assert!(
            recovery < Duration::from_secs(6),
            "outage {outage}: orders moved again after {recovery:?}"
        );
        eventually(Duration::from_secs(10), "health up again", || async {
            let (status, body) = health(&app).await;
            status == StatusCode::OK && body["checks"]["worker"]["status"] == "up"
        })
        .await;
    }
}
