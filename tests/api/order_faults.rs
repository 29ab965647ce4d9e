//! The fault test: two real service processes on one database and one Redis prefix, each
//! killed -9 several times while 2 000 orders flow, against an agent that dedupes on the
//! idempotency key. Every order must reach the ERP once, with its reference recorded.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use sqlx::PgPool;

use crate::{
    binary::database_url,
    erp_agent::{Behaviour, ErpAgent},
    helpers::{AGENT_SECRET, RedisPrefix},
    order_delivery::{count_where, insert_orders, online},
    orders::{VENDOR, eventually},
};

fn start(database_url: &str, prefix: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_erp-sync"))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATABASE_URL", database_url)
        .env("REDIS_PREFIX", prefix)
        .env("AGENT_SECRET", AGENT_SECRET)
        .env("WORKER_CONCURRENCY", "5")
        .env("ORDER_SYNC_SWEEP_INTERVAL_MS", "200")
        .env("ORDER_SYNC_BACKOFF_MS", "50")
        .env("AGENT_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[sqlx::test]
async fn two_processes_killed_9_repeatedly_deliver_every_order_once(db: PgPool) {
    // A few milliseconds per call, so that kills land mid-call too.
    let agent = ErpAgent::start(Behaviour::Create(Duration::from_millis(5))).await;
    online(&db, VENDOR, &agent.url).await;
    let prefix = RedisPrefix::new();
    let url = database_url(&db).await;
    let mut processes = [start(&url, &prefix.0), start(&url, &prefix.0)];

    let inserting = tokio::spawn({
        let db = db.clone();
        async move {
            let mut orders = Vec::new();
            for _ in 0..20 {
                orders.extend(insert_orders(&db, VENDOR, 100).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            orders
        }
    });
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let process = &mut processes[round % 2];
        process.kill().unwrap(); // SIGKILL: no graceful anything
        process.wait().unwrap();
        *process = start(&url, &prefix.0);
    }
    let orders = inserting.await.unwrap();
    assert_eq!(orders.len(), 2000);

    eventually(Duration::from_secs(60), "every order completed", || async {
        count_where(&db, "status = 'completed'").await == 2000
    })
    .await;
    assert_eq!(
        count_where(&db, "status IN ('pending', 'processing')").await,
        0
    );
    assert_eq!(count_where(&db, "true").await, 2000, "one job per order");
    let references: Vec<(uuid::Uuid, Option<String>)> =
        sqlx::query_as("SELECT id, erp_reference FROM orders")
            .fetch_all(&db)
            .await
            .unwrap();
    let keys = agent.keys_by_order();
    for (order_id, reference) in references {
        let order = order_id.to_string();
        assert_eq!(reference, agent.reference_of(&order), "order {order}");
        assert_eq!(
            keys[&order].iter().collect::<Vec<_>>(),
            vec![&order],
            "order {order} was seen under exactly its own key"
        );
    }
    assert_eq!(agent.created(), 2000, "each order created in the ERP once");
    assert!(agent.calls() >= 2000);

    for mut process in processes {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(process.id().to_string())
            .status();
        let _ = process.wait();
    }
}
