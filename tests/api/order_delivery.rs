//! Order delivery under slow, flapping and hostile agents (issue 8): real Postgres, real
//! Redis under the test's prefix, agents that dedupe on the idempotency key over HTTP.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    erp_agent::{Behaviour, ErpAgent},
    helpers::TestApp,
    orders::{VENDOR, eventually, insert_order, job_of, order_app, status_is},
};

const OTHER: &str = "vendor-b";

/// `vendor`'s agent at `url`, online, written straight into the registry.
pub(crate) async fn online(db: &PgPool, vendor: &str, url: &str) {
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
         VALUES ($1, $2, 'ebp', 'unused', 'online', now())",
    )
    .bind(vendor)
    .bind(url)
    .execute(db)
    .await
    .unwrap();
}

/// `count` orders of `vendor` in one statement (the trigger makes the jobs at commit).
pub(crate) async fn insert_orders(db: &PgPool, vendor: &str, count: i32) -> Vec<Uuid> {
    sqlx::query_scalar(
        "WITH o AS (INSERT INTO orders (id, vendor_id, total_amount)
                    SELECT gen_random_uuid(), $1, 10 FROM generate_series(1, $2) RETURNING id),
              l AS (INSERT INTO order_lines (order_id, sku, quantity, unit_price) SELECT id, 'SKU-1', 1, 10 FROM o)
         SELECT id FROM o",
    )
    .bind(vendor)
    .bind(count)
    .fetch_all(db)
    .await
    .unwrap()
}

pub(crate) async fn count_where(db: &PgPool, condition: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM sync_jobs WHERE {condition}"
    )))
    .fetch_one(db)
    .await
    .unwrap()
}

pub(crate) async fn order_reference(db: &PgPool, order_id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT erp_reference FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(db)
        .await
        .unwrap()
}

pub(crate) async fn health(app: &TestApp) -> (StatusCode, Value) {
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

pub(crate) async fn get(app: &TestApp, path: &str) -> Value {
    app.admin_get(path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_huge_retry_after_from_vendor_a_never_stalls_vendor_b(db: PgPool) {
    let busy = |retry_after: &str| {
        Behaviour::Raw(
            503,
            vec![("retry-after", retry_after.to_owned())],
            b"busy".to_vec(),
        )
    };
    let a = ErpAgent::start(busy("18446744073709551615")).await;
    a.then(busy("99999999999999"))
        .then(busy("Fri, 31 Dec 9999 23:59:59 GMT"));
    let b = ErpAgent::start(Behaviour::Create(Duration::ZERO)).await;
    online(&db, VENDOR, &a.url).await;
    online(&db, OTHER, &b.url).await;
    let app = order_app(
        db.clone(),
        &[
            ("ORDER_SYNC_MAX_RETRY_AFTER_SECS", "120"),
            ("BREAKER_MIN_CALLS", "1000"),
        ],
    )
    .await;

    let a_orders = insert_orders(&db, VENDOR, 3).await;
    eventually(
        Duration::from_secs(15),
        "every A order tried once",
        || async {
            count_where(
                &db,
                "vendor_id = 'vendor-a' AND status = 'pending' AND retry_count = 1",
            )
            .await
                == 3
        },
    )
    .await;
    // Each asked for centuries; each waits exactly the cap.
    let waits: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM next_retry_at - now())::float8 FROM sync_jobs WHERE vendor_id = 'vendor-a'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        waits.iter().all(|w| (100.0..=121.0).contains(w)),
        "capped at 120 s: {waits:?}"
    );
    assert_eq!(a.calls(), 3);

    let started = Instant::now();
    let b_orders = insert_orders(&db, OTHER, 5).await;
    for order_id in &b_orders {
        eventually(Duration::from_secs(10), "B's order completed", || {
            status_is(&db, *order_id, "completed")
        })
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "B on time: {:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(5), "health 200, worker up", || async {
        let (status, body) = health(&app).await;
        status == StatusCode::OK && body["checks"]["worker"]["status"] == "up"
    })
    .await;
    for order_id in a_orders {
        assert_eq!(job_of(&db, order_id).await["status"], "pending");
    }
}

#[sqlx::test]
async fn slow_agent_then_dlq_retry_sends_one_idempotency_key_per_order(db: PgPool) {
    // Slower than the timeout: the ERP creates each order, erp-sync hears nothing back.
    let agent = ErpAgent::start(Behaviour::Create(Duration::from_millis(1500))).await;
    online(&db, VENDOR, &agent.url).await;
    let app = order_app(
        db.clone(),
        &[
            ("AGENT_TIMEOUT_MS", "300"),
            ("ORDER_SYNC_MAX_ATTEMPTS", "2"),
            ("BREAKER_MIN_CALLS", "1000"),
        ],
    )
    .await;
    let orders = insert_orders(&db, VENDOR, 10).await;
    eventually(
        Duration::from_secs(30),
        "every order dead-lettered",
        || async { count_where(&db, "status = 'failed'").await == 10 },
    )
    .await;
    let page = get(&app, "/api/admin/dlq?limit=100").await;
    assert_eq!(page["total"], 10);
    for entry in page["data"].as_array().unwrap() {
        assert!(
            entry["failureReason"]
                .as_str()
                .unwrap()
                .contains("timed out"),
            "{entry}"
        );
        assert_eq!(entry["attemptCount"], 2);
    }
    assert_eq!(agent.created(), 10, "the ERP created each order once");

    agent.set(Behaviour::Create(Duration::ZERO));
    for entry in page["data"].as_array().unwrap() {
        let id = entry["id"].as_str().unwrap();
        let retried = app
            .admin_post(&format!("/api/admin/dlq/{id}/retry"), &json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(retried.status(), StatusCode::CREATED);
    }
    for order_id in &orders {
        eventually(Duration::from_secs(15), "retried order completed", || {
            status_is(&db, *order_id, "completed")
        })
        .await;
    }
    assert_eq!(
        agent.created(),
        10,
        "still once each: the retry reused the key"
    );
    assert_eq!(agent.calls(), 30);
    let keys = agent.keys_by_order();
    let webhook_ids = agent.webhook_ids_by_order();
    for order_id in &orders {
        let order = order_id.to_string();
        assert_eq!(keys[&order].len(), 1, "one key per order");
        assert!(keys[&order].contains(&order), "the key is the order id");
        assert_eq!(webhook_ids[&order].len(), 1, "one webhook-id per order");
        assert_eq!(
            order_reference(&db, *order_id).await,
            agent.reference_of(&order),
            "the order has the ERP's reference"
        );
    }

    // Re-syncing an order that is in the ERP would send it again: refused.
    let resync = app
        .admin_post(&format!("/api/admin/orders/{}/sync", orders[0]), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resync.status(), StatusCode::CONFLICT);
    let body: Value = resync.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already in the ERP"),
        "{body}"
    );
    assert_eq!(agent.calls(), 30);
}

#[sqlx::test]
async fn a_late_completed_callback_after_dlq_heals_the_order(db: PgPool) {
    let agent = ErpAgent::start(Behaviour::Accept).await;
    let app = order_app(
        db.clone(),
        &[
            ("ORDER_SYNC_CALLBACK_TIMEOUT_MS", "300"),
            ("ORDER_SYNC_MAX_ATTEMPTS", "2"),
        ],
    )
    .await;
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
    let healed = insert_order(&db, VENDOR).await;
    let superseded = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(20), "both dead-lettered", || async {
        status_is(&db, healed, "failed").await && status_is(&db, superseded, "failed").await
    })
    .await;
    let page = get(&app, "/api/admin/dlq").await;
    assert_eq!(page["total"], 2);
    assert!(
        page["data"][0]["failureReason"]
            .as_str()
            .unwrap()
            .contains("never reported back"),
        "{page}"
    );
    let first_job = |order_id: Uuid| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM sync_jobs WHERE postgres_order_id = $1 ORDER BY created_at LIMIT 1",
            )
            .bind(order_id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let callback = |job_id: Uuid, status: &str, reference: &str| {
        let mut body = json!({"vendorId": VENDOR, "jobId": job_id, "status": status});
        if status == "completed" {
            body["erpReference"] = json!(reference);
        } else {
            body["error"] = json!(reference);
        }
        app.agent_post("/api/agents/callback", &token, &body).send()
    };

    // The operator retries the second order: a new live job, waiting for its callback.
    let entry = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["payload"]["orderId"] == superseded.to_string())
        .unwrap();
    let retried: Value = app
        .admin_post(
            &format!("/api/admin/dlq/{}/retry", entry["id"].as_str().unwrap()),
            &json!({}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_job = retried["job"]["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(10),
        "the new job was delivered",
        || async { agent.calls_of(&superseded.to_string()) == 3 },
    )
    .await;

    // Late success for the first order's dead-lettered job.
    let answer: Value = callback(first_job(healed).await, "completed", "ERP-LATE-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "completed");
    assert_eq!(
        order_reference(&db, healed).await.as_deref(),
        Some("ERP-LATE-1")
    );
    let entry = get(
        &app,
        &format!("/api/admin/dlq/{}", {
            let all = get(&app, "/api/admin/dlq").await;
            assert_eq!(all["total"], 0, "no open dead-letter entry left: {all}");
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM dead_letter_queue WHERE order_id = $1")
                .bind(healed)
                .fetch_one(&db)
                .await
                .unwrap()
        }),
    )
    .await;
    assert_eq!(entry["resolved"], true);
    assert_eq!(entry["resolvedBy"], "agent");

    // Late success for the second order's old job: the newer live job is cancelled.
    let answer: Value = callback(first_job(superseded).await, "completed", "ERP-LATE-2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "completed");
    assert_eq!(
        order_reference(&db, superseded).await.as_deref(),
        Some("ERP-LATE-2")
    );
    let newer = get(&app, &format!("/api/admin/sync-status/{new_job}")).await;
    assert_eq!(newer["status"], "cancelled", "{newer}");

    // A late `failed` never undoes a completion; the cancelled job's own answer changes nothing.
    let answer: Value = callback(first_job(healed).await, "failed", "late failure")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "completed");
    let answer = callback(new_job.parse().unwrap(), "completed", "ERP-OTHER")
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        order_reference(&db, superseded).await.as_deref(),
        Some("ERP-LATE-2")
    );
    assert_eq!(
        count_where(&db, "status IN ('pending', 'processing')").await,
        0
    );
}

#[sqlx::test]
async fn a_long_breaker_outage_ends_with_every_order_completed_and_attempts_only_for_calls(
    db: PgPool,
) {
    let agent = ErpAgent::start(Behaviour::Raw(503, vec![], b"down".to_vec())).await;
    online(&db, VENDOR, &agent.url).await;
    let app = order_app(
        db.clone(),
        &[
            ("BREAKER_MIN_CALLS", "2"),
            ("BREAKER_OPEN_MS", "400"),
            ("ORDER_SYNC_MAX_ATTEMPTS", "25"),
        ],
    )
    .await;
    let orders = insert_orders(&db, VENDOR, 20).await;
    // Eight breaker windows of outage.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let calls_in_outage = agent.calls();
    assert!(
        calls_in_outage <= 2 + 3200 / 400 + 2,
        "while open, only one probe per window: {calls_in_outage} calls"
    );
    assert_eq!(get(&app, "/api/admin/dlq").await["total"], 0);

    agent.set(Behaviour::Create(Duration::ZERO));
    for order_id in &orders {
        eventually(
            Duration::from_secs(15),
            "order completed after the outage",
            || status_is(&db, *order_id, "completed"),
        )
        .await;
    }
    let mut called_once = 0;
    for order_id in &orders {
        let calls = agent.calls_of(&order_id.to_string());
        assert_eq!(
            job_of(&db, *order_id).await["attempts"],
            calls as i64,
            "attempts are spent only on calls"
        );
        called_once += usize::from(calls == 1);
    }
    assert!(
        called_once >= 10,
        "most orders waited without a call: {called_once}"
    );
}

#[sqlx::test]
async fn vendor_a_with_3000_jobs_in_backoff_does_not_delay_vendor_b(db: PgPool) {
    let a = ErpAgent::start(Behaviour::Raw(
        503,
        vec![("retry-after", "3600".into())],
        vec![],
    ))
    .await;
    let b = ErpAgent::start(Behaviour::Create(Duration::ZERO)).await;
    online(&db, VENDOR, &a.url).await;
    online(&db, OTHER, &b.url).await;
    let app = order_app(db.clone(), &[("BREAKER_MIN_CALLS", "10000")]).await;

    insert_orders(&db, VENDOR, 3000).await;
    // B's orders arrive while A's 3 000 are being worked through: B gets its share at once.
    let early = insert_orders(&db, OTHER, 10).await;
    for order_id in &early {
        eventually(Duration::from_secs(15), "B's order completed", || {
            status_is(&db, *order_id, "completed")
        })
        .await;
    }
    // Fairness is an order, not a speed: B's orders are through while A still has orders that
    // were never tried (first come, first served would have tried all 3 000 of A's first).
    let untried = count_where(&db, "vendor_id = 'vendor-a' AND retry_count = 0").await;
    assert!(
        untried >= 100,
        "B's orders completed only after (nearly) every one of A's had been tried: {untried} untried"
    );

    eventually(
        Duration::from_secs(60),
        "all of A's jobs in backoff",
        || async {
            count_where(
                &db,
                "vendor_id = 'vendor-a' AND status = 'pending' AND retry_count = 1",
            )
            .await
                == 3000
        },
    )
    .await;
    // Redis holds only due work: none of A's retries.
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let queue = erp_sync::orders::queue::QueueKeys::new(&app.redis_prefix);
    let (active, scheduled): (u64, u64) = redis::pipe()
        .llen(&queue.active)
        .zcard(&queue.scheduled)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((active, scheduled), (0, 0));

    let late = insert_orders(&db, OTHER, 10).await;
    for order_id in &late {
        eventually(Duration::from_secs(15), "B's order completed", || {
            status_is(&db, *order_id, "completed")
        })
        .await;
    }
    // (Each within 15 s, where A's retries come due in an hour: the Redis bound kept none of them.)
    assert_eq!(
        a.calls(),
        3000,
        "A was called once per order, then left to its Retry-After"
    );
}

#[sqlx::test]
async fn callbacks_carrying_control_characters_are_refused_or_cleaned(db: PgPool) {
    let app = order_app(db.clone(), &[("ORDER_SYNC_ENABLED", "false")]).await;
    let token = app.register_agent(VENDOR).await;
    let order_id = insert_order(&db, VENDOR).await;
    let job_id = job_of(&db, order_id).await["id"].clone();
    let refused = app
        .agent_post(
            "/api/agents/callback",
            &token,
            &json!({"vendorId": VENDOR, "jobId": job_id, "status": "completed", "erpReference": "ERP\u{0}1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(order_reference(&db, order_id).await, None);
    assert_eq!(job_of(&db, order_id).await["status"], "pending");

    // An error text with control characters (a NUL, an escape sequence) is refused whole
    // (docs/field-rules.md: tabs and line breaks only); nothing changes.
    let refused = app
        .agent_post(
            "/api/agents/callback",
            &token,
            &json!({"vendorId": VENDOR, "jobId": job_id, "status": "failed", "error": "blocked\u{0}\u{1b}[2J"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(job_of(&db, order_id).await["status"], "pending");
    assert_eq!(get(&app, "/api/admin/dlq").await["total"], 0);

    let failed = app
        .agent_post(
            "/api/agents/callback",
            &token,
            &json!({"vendorId": VENDOR, "jobId": job_id, "status": "failed", "error": "blocked:\tcustomer\non hold"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::OK);
    let page = get(&app, "/api/admin/dlq").await;
    assert_eq!(
        page["data"][0]["failureReason"],
        "agent reported failure: blocked:\u{FFFD}customer\u{FFFD}on hold",
        "even allowed line breaks never reach a log line or column raw"
    );
}

#[sqlx::test]
async fn an_order_already_in_the_erp_is_never_sent_again(db: PgPool) {
    let agent = ErpAgent::start(Behaviour::Create(Duration::ZERO)).await;
    online(&db, VENDOR, &agent.url).await;
    // Its job is pending, but the order got its reference by another path meanwhile.
    let order_id = insert_order(&db, VENDOR).await;
    sqlx::query("UPDATE orders SET erp_reference = 'ERP-ELSEWHERE' WHERE id = $1")
        .bind(order_id)
        .execute(&db)
        .await
        .unwrap();
    let _app = order_app(db.clone(), &[]).await;
    eventually(Duration::from_secs(10), "job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    let job = job_of(&db, order_id).await;
    assert_eq!(job["erpReference"], "ERP-ELSEWHERE");
    assert_eq!(job["attempts"], 0);
    assert_eq!(agent.calls(), 0, "not sent again");
}
