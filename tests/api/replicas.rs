//! Three real service processes on one database and one Redis prefix, no proxy in front,
//! behave as one service (DESIGN.md invariant 4): one ingest budget between them, a breaker
//! reset and a mapping change through one reach the others, each cron tick runs once, and
//! 1 000 orders are each completed once while one of them is killed -9.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    binary::Binary,
    erp_agent::{Behaviour, ErpAgent},
    helpers::{AGENT_SECRET, API_KEY, RedisPrefix},
    ingest::ts,
    order_delivery::{count_where, insert_orders, online},
    orders::eventually,
};

const BUDGET: usize = 30;

struct Replicas {
    processes: Vec<Binary>,
    client: reqwest::Client,
}

impl Replicas {
    async fn start(db: &PgPool, prefix: &str, extra: &[(&str, &str)]) -> Self {
        let mut env = vec![("API_SECRET", API_KEY), ("AGENT_SECRET", AGENT_SECRET)];
        env.extend_from_slice(extra);
        let mut processes = Vec::new();
        for _ in 0..3 {
            processes.push(Binary::start(db, prefix, &env).await);
        }
        Self {
            processes,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, replica: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.processes[replica].port)
    }

    async fn admin_post(&self, replica: usize, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(replica, path))
            .header("x-api-key", API_KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn admin_get(&self, replica: usize, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(replica, path))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    async fn agent_post(
        &self,
        replica: usize,
        path: &str,
        token: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(replica, path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers `vendor`'s agent through replica 0; returns its token.
    async fn register(&self, vendor: &str, agent_url: &str) -> String {
        let token = format!("fake-token-{vendor}-0123456789");
        let (status, _) = self
            .admin_post(
                0,
                "/api/agents/register",
                &json!({"vendorId": vendor, "agentUrl": agent_url, "erpType": "ebp", "authToken": token}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {vendor}");
        token
    }

    /// Each live replica's own state of `vendor`'s orders breaker, as listed by `lister`.
    async fn breaker_states(&self, lister: usize, vendor: &str) -> Vec<String> {
        let breakers = self.admin_get(lister, "/api/admin/circuit-breakers").await;
        breakers
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["vendorId"] == vendor && b["apiType"] == "orders")
            .flat_map(|b| b["replicas"].as_array().unwrap().clone())
            .map(|r| r["state"].as_str().unwrap().to_owned())
            .collect()
    }

    fn stop(mut self) {
        for binary in &mut self.processes {
            if !matches!(binary.child.try_wait(), Ok(None)) {
                continue;
            }
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(binary.child.id().to_string())
                .status();
        }
    }
}

#[sqlx::test]
async fn three_replicas_share_limits_breakers_mappings_and_cron(db: PgPool) {
    let sick = ErpAgent::start(Behaviour::Raw(503, vec![], vec![])).await;
    let prefix = RedisPrefix::new();
    let replicas = Replicas::start(
        &db,
        &prefix.0,
        &[
            ("INGEST_RATE_LIMIT_PER_MIN", "30"),
            ("SCHEDULER_ENABLED", "true"),
            ("SCHEDULE_CHECK_DLQ", "* * * * * *"),
            ("ORDER_SYNC_ENABLED", "true"),
            ("ORDER_SYNC_BACKOFF_MS", "50"),
            ("ORDER_SYNC_MAX_ATTEMPTS", "25"),
            ("ORDER_SYNC_SWEEP_INTERVAL_MS", "200"),
            ("BREAKER_MIN_CALLS", "2"),
            // Longer than the test: only a reset closes an open breaker here.
            ("BREAKER_OPEN_MS", "600000"),
            ("AGENT_TIMEOUT_MS", "1000"),
        ],
    )
    .await;

    // One ingest budget of 30 a minute for the vendor, whichever replica answers.
    let token = replicas
        .register("rl-vendor", "http://127.0.0.1:9/agent")
        .await;
    let body = json!({"vendorId": "rl-vendor", "warehouses": [
        {"erpWarehouseId": "W1", "name": "Rungis", "contentHash": "w1", "lastModifiedAt": ts(0)}
    ]});
    let started = Instant::now();
    let (mut accepted, mut limited) = (0, 0);
    for request in 0..3 * BUDGET {
        let (status, _) = replicas
            .agent_post(request % 3, "/api/sync/warehouses", &token, &body)
            .await;
        match status {
            StatusCode::OK => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("ingest answered {other}"),
        }
    }
    // The budget refills at one every 2 s: what the elapsed time allows on top of 30.
    let refilled = (started.elapsed().as_secs_f64() / 2.0).ceil() as usize;
    assert!(
        accepted >= BUDGET && accepted <= BUDGET + refilled,
        "{accepted} accepted in {:?} (budget {BUDGET}, refilled {refilled})",
        started.elapsed()
    );
    assert_eq!(accepted + limited, 3 * BUDGET);

    // A mapping added through replica 0 is used by replica 1, which had cached its absence.
    let token = replicas
        .register("map-vendor", "http://127.0.0.1:9/agent")
        .await;
    for (kind, code) in [("vat", "T1")] {
        let (status, _) = replicas
            .admin_post(
                0,
                "/api/admin/mappings",
                &json!({"vendorId": "map-vendor", "mappingType": kind, "erpCode": code, "restoCode": "r", "restoLabel": "l"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let items = json!({"vendorId": "map-vendor", "items": [
        {"sku": "S1", "name": "Apple", "unitCode": "KG", "vatCode": "T1", "price": 1.5, "contentHash": "h1", "lastModifiedAt": ts(0)}
    ]});
    let (status, report) = replicas
        .agent_post(1, "/api/sync/items", &token, &items)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["results"][0]["reason"], "unmapped_unit: KG");
    let (status, _) = replicas
        .admin_post(
            0,
            "/api/admin/mappings",
            &json!({"vendorId": "map-vendor", "mappingType": "unit", "erpCode": "KG", "restoCode": "kg", "restoLabel": "Kilogram"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // The announcement travels through Postgres: a bounded wait, far below the cache's TTL.
    let mut processed = false;
    for _ in 0..20 {
        let (status, report) = replicas
            .agent_post(1, "/api/sync/items", &token, &items)
            .await;
        assert_eq!(status, StatusCode::OK);
        if report["processed"] == 1 {
            processed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(processed, "replica 1 never saw the new mapping");

    // Every replica calls a sick agent until its own breaker opens.
    online(&db, "sick-vendor", &sick.url).await;
    insert_orders(&db, "sick-vendor", 30).await;
    eventually(
        Duration::from_secs(30),
        "every replica's breaker open",
        || async {
            let states = replicas.breaker_states(2, "sick-vendor").await;
            states.len() == 3 && states.iter().all(|s| s == "OPEN")
        },
    )
    .await;
    // The agent recovers, but the breakers stay open for 10 minutes unless reset.
    sick.set(Behaviour::Create(Duration::ZERO));
    let (status, reset) = replicas
        .admin_post(
            0,
            "/api/admin/circuit-breakers/sick-vendor/orders/reset",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reset["broadcast"], true);
    assert_eq!(reset["liveReplicas"], 3);
    for lister in 0..3 {
        eventually(
            Duration::from_secs(10),
            "every replica's breaker closed after one reset",
            || async {
                let states = replicas.breaker_states(lister, "sick-vendor").await;
                states.len() == 3 && states.iter().all(|s| s == "CLOSED")
            },
        )
        .await;
    }

    // The orders that waited for the breakers go at once.
    eventually(
        Duration::from_secs(30),
        "the waiting orders delivered",
        || async {
            count_where(&db, "vendor_id = 'sick-vendor' AND status = 'completed'").await == 30
        },
    )
    .await;

    // Every second, three schedulers: each tick of check-dlq ran once.
    eventually(Duration::from_secs(10), "a few ticks of check-dlq", || async {
        let ticks: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT tick) FROM scheduler_runs WHERE job = 'check-dlq' AND status <> 'running'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        ticks >= 3
    })
    .await;
    let (runs, ticks): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT tick) FROM scheduler_runs WHERE job = 'check-dlq'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(runs, ticks, "one run per tick across three replicas");
    replicas.stop();
}

#[sqlx::test]
async fn a_thousand_orders_complete_once_while_a_replica_is_killed_9(db: PgPool) {
    const ORDERS: i64 = 1000;
    let agent = ErpAgent::start(Behaviour::Create(Duration::from_millis(5))).await;
    online(&db, "bulk-vendor", &agent.url).await;
    let prefix = RedisPrefix::new();
    let mut replicas = Replicas::start(
        &db,
        &prefix.0,
        &[
            ("ORDER_SYNC_ENABLED", "true"),
            ("ORDER_SYNC_SWEEP_INTERVAL_MS", "200"),
            ("ORDER_SYNC_BACKOFF_MS", "50"),
            ("AGENT_TIMEOUT_MS", "1000"),
            ("SCHEDULER_ENABLED", "false"),
        ],
    )
    .await;
    insert_orders(&db, "bulk-vendor", 500).await;
    eventually(Duration::from_secs(30), "deliveries under way", || async {
        agent.created() >= 50
    })
    .await;
    let victim = &mut replicas.processes[1].child;
    victim.kill().unwrap(); // SIGKILL: no graceful anything
    victim.wait().unwrap();
    insert_orders(&db, "bulk-vendor", 500).await;

    eventually(Duration::from_secs(60), "every order completed", || async {
        count_where(&db, "status = 'completed'").await == ORDERS
    })
    .await;
    assert_eq!(count_where(&db, "true").await, ORDERS, "one job per order");
    let keys = agent.keys_by_order();
    assert_eq!(keys.len() as i64, ORDERS);
    for (order, seen) in &keys {
        assert_eq!(
            seen.iter().collect::<Vec<_>>(),
            vec![order],
            "order {order} came under its own key only"
        );
    }
    assert_eq!(agent.created() as i64, ORDERS, "each order created once");
    let unreferenced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE erp_reference IS NULL")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(unreferenced, 0);
    replicas.stop();
}
