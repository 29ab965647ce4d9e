//! Order-sync benchmark: `cargo bench --bench orders`.
//!
//! End to end, each run on a database of its own with the release binary: inserts
//! BENCH_ORDERS (10 000) orders with one line each, in transactions of 500 (the trigger makes
//! the jobs), waits until every order of a healthy vendor is completed, and prints orders/s
//! (first insert → last completion) and p50/p99 of insert-to-completed latency of the healthy
//! vendors' orders, from Postgres timestamps.
//!
//! - one vendor, WORKER_CONCURRENCY 5 then 20 (mock agent answering 200 {erpReference});
//! - ten vendors at concurrency 20, all healthy, then the same with one of them (10 % of the
//!   orders) behind an agent that answers 503: the healthy vendors' latency should not move;
//! - `idle`: orders inserted one at a time into an idle service, each waited for: p50/p99 from
//!   the insert's commit to the agent's call (target p50 <= 50 ms: NOTIFY-driven, not polled);
//! - `queue`: the queue alone (apalis-redis, enqueue + no-op handler) and then, on the same
//!   Redis, BullMQ 5 doing the same (`peers/bullmq/bench.mjs` of the shared folder, installed
//!   with npm into `target/bullmq-peer`; skipped with a message when `node` is missing), and
//!   the ratio (target >= 1). BENCH_QUEUE_BATCH (1, the service's) sets apalis' fetch batch
//!   to see where the queue's wall is; BENCH_BULLMQ_DIR points at the peer scripts.
//!
//! BENCH_RUNS=one5,one20,ten,ten503,idle,queue picks runs (default: all).

mod common;

use common::cleanup_redis;
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use axum::{Json, Router, http::StatusCode, routing::post};
use serde_json::json;
use sqlx::{PgConnection, postgres::PgPoolOptions};

const API_KEY: &str = "bench-api-secret-0123456789abcdefghijkl";

struct Run<'a> {
    label: &'a str,
    concurrency: usize,
    orders: usize,
    /// Each vendor's agent; orders are spread evenly over them.
    agents: Vec<&'a str>,
    /// Vendors (by index) whose orders are not expected to complete.
    failing: Vec<usize>,
}

/// A release binary of its own on a database of its own.
struct Service {
    child: std::process::Child,
    admin: PgConnection,
    db_name: String,
    prefix: String,
    pool: sqlx::PgPool,
}

impl Service {
    async fn start(master: &str, tag: &str, concurrency: usize) -> Self {
        let db_name = format!("erp_sync_orders_bench_{tag}");
        let (admin, db_url) = common::create_database(master, &db_name).await;
        let port = common::free_port();
        let prefix = format!("erp-sync-orders-bench-{tag}");
        let child = Command::new(env!("CARGO_BIN_EXE_erp-sync"))
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &db_url)
            .env("REDIS_PREFIX", &prefix)
            .env("API_SECRET", API_KEY)
            .env("AGENT_SECRET", "bench-agent-secret-000")
            .env("WORKER_CONCURRENCY", concurrency.to_string())
            .env("ORDER_SYNC_SWEEP_INTERVAL_MS", "1000")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&db_url)
            .await
            .unwrap();
        Self {
            child,
            admin,
            db_name,
            prefix,
            pool,
        }
    }

    async fn register_agents(&self, agents: &[&str]) {
        for (i, agent_url) in agents.iter().enumerate() {
            sqlx::query(
                "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
                 VALUES ('bench-vendor-' || $1, $2, 'ebp', 'x', 'online', now())",
            )
            .bind(i as i32)
            .bind(agent_url)
            .execute(&self.pool)
            .await
            .unwrap();
        }
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        )))
        .execute(&mut self.admin)
        .await
        .unwrap();
        cleanup_redis(&self.prefix);
    }
}

async fn run(spec: Run<'_>, master: &str) {
    let Run {
        label,
        concurrency,
        orders,
        agents,
        failing,
    } = spec;
    let tag = format!(
        "{}_{concurrency}_{}_{}",
        std::process::id(),
        agents.len(),
        failing.len()
    );
    let service = Service::start(master, &tag, concurrency).await;
    service.register_agents(&agents).await;
    let pool = &service.pool;
    let failing_vendors: Vec<String> = failing
        .iter()
        .map(|i| format!("bench-vendor-{i}"))
        .collect();

    let started = Instant::now();
    for batch in 0..orders.div_ceil(500) {
        let n = 500.min(orders - batch * 500) as i32;
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "WITH o AS (INSERT INTO orders (id, vendor_id, total_amount)
                        SELECT gen_random_uuid(), 'bench-vendor-' || (i % $2), 10 FROM generate_series(1, $1) i RETURNING id)
             INSERT INTO order_lines (order_id, sku, quantity, unit_price) SELECT id, 'SKU-1', 1, 10 FROM o",
        )
        .bind(n)
        .bind(agents.len() as i32)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let inserted_in = started.elapsed();
    let healthy: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE vendor_id <> ALL($1)")
        .bind(&failing_vendors)
        .fetch_one(pool)
        .await
        .unwrap();
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sync_jobs WHERE status = 'completed' AND vendor_id <> ALL($1)",
        )
        .bind(&failing_vendors)
        .fetch_one(pool)
        .await
        .unwrap();
        if done >= healthy || started.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (count, span_s, p50, p99): (i64, f64, f64, f64) = sqlx::query_as(
        "SELECT count(*),
                EXTRACT(EPOCH FROM max(j.completed_at) - min(o.created_at))::float8,
                (percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM j.completed_at - o.created_at)))::float8 * 1000,
                (percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM j.completed_at - o.created_at)))::float8 * 1000
         FROM sync_jobs j JOIN orders o ON o.id = j.postgres_order_id
         WHERE j.status = 'completed' AND j.vendor_id <> ALL($1)",
    )
    .bind(&failing_vendors)
    .fetch_one(pool)
    .await
    .unwrap();
    let failing_note = if failing.is_empty() {
        String::new()
    } else {
        let (calls, waiting): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(sum(retry_count), 0)::int8, count(*) FILTER (WHERE status IN ('pending', 'processing'))
             FROM sync_jobs WHERE vendor_id = ANY($1)",
        )
        .bind(&failing_vendors)
        .fetch_one(pool)
        .await
        .unwrap();
        format!("  (503 vendor: {waiting} orders waiting, {calls} calls made)")
    };
    let target = if concurrency == 20 && failing.is_empty() {
        " (target >= 1000)"
    } else {
        ""
    };
    println!(
        "{label:<34} C={concurrency:<3} {count} healthy orders completed  inserted in {:.2} s  {:>7.0} orders/s end to end{target}  p50 {:>7.1} ms  p99 {:>7.1} ms{failing_note}",
        inserted_in.as_secs_f64(),
        count as f64 / span_s,
        p50,
        p99
    );
    service.stop().await;
}

/// A mock agent on 127.0.0.1:0: 200 {erpReference} when `healthy`, else 503.
async fn mock_agent(healthy: bool) -> String {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = Router::new().route(
        "/sync/create-order",
        post(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                if healthy {
                    Ok(Json(json!({"erpReference": format!("ERP-{n}")})))
                } else {
                    Err(StatusCode::SERVICE_UNAVAILABLE)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A mock agent answering 200 {erpReference} that reports the instant of every call.
async fn signalling_agent() -> (String, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    let (calls, called) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route(
        "/sync/create-order",
        post(move || {
            let _ = calls.send(Instant::now());
            async move { Json(json!({"erpReference": format!("ERP-{}", uuid::Uuid::new_v4())})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, called)
}

/// An idle service: one order at a time, each waited for, 200 ms apart; p50/p99 of the time
/// from the insert's commit to the agent's call.
async fn idle_latency(master: &str, samples: usize) {
    let (agent, mut called) = signalling_agent().await;
    let tag = format!("{}_idle", std::process::id());
    let service = Service::start(master, &tag, 20).await;
    service.register_agents(&[&agent]).await;
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        tokio::time::sleep(Duration::from_millis(200)).await;
        while called.try_recv().is_ok() {}
        let mut tx = service.pool.begin().await.unwrap();
        sqlx::query(
            "WITH o AS (INSERT INTO orders (id, vendor_id, total_amount)
                        VALUES (gen_random_uuid(), 'bench-vendor-0', 10) RETURNING id)
             INSERT INTO order_lines (order_id, sku, quantity, unit_price) SELECT id, 'SKU-1', 1, 10 FROM o",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let committed = Instant::now();
        match tokio::time::timeout(Duration::from_secs(10), called.recv()).await {
            Ok(Some(at)) => latencies.push(at.saturating_duration_since(committed)),
            _ => break,
        }
    }
    latencies.sort();
    let at = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{:<34} C=20  {} of {samples} orders, one at a time: insert -> agent called  p50 {:>6.1} ms (target <= 50 ms)  p99 {:>6.1} ms",
        "idle service",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
    service.stop().await;
}

/// The queue alone: `tasks` pushed to apalis-redis and consumed by a worker whose handler does
/// nothing, with the same storage settings as the service.
async fn queue_only(tasks: usize, concurrency: usize, batch: usize) -> f64 {
    use apalis::prelude::{
        BackendExt, Data, TaskBuilder, TaskSink, WorkerBuilder, WorkerBuilderExt,
    };
    use erp_sync::orders::queue::OrderTask;

    let prefix = format!("erp-sync-queue-bench-{}-{concurrency}", std::process::id());
    let conn = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let config = erp_sync::orders::queue::queue_config(&prefix).batch_size(batch);
    let mut storage = apalis_redis::RedisStorage::<OrderTask>::new(conn).with_config(config);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    async fn noop(
        _: OrderTask,
        done: Data<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    ) -> Result<(), apalis::prelude::BoxDynError> {
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("queue-bench-{}", uuid::Uuid::new_v4().simple()))
        .backend(
            storage
                .clone()
                .poll_with_interval(Duration::from_millis(100)),
        )
        .data(done.clone())
        .concurrency(concurrency)
        .build(noop);
    let stop = tokio_util::sync::CancellationToken::new();
    let stopper = stop.clone();
    let running = tokio::spawn(worker.run_until(async move {
        stopper.cancelled().await;
        Ok::<(), std::io::Error>(())
    }));
    let started = Instant::now();
    // Pushed in chunks of 500 with at most 2 000 waiting, as the service's dispatcher does
    // (apalis' fetch script fails on a backlog of ~8 000 due tasks).
    let mut pushed = 0;
    while pushed < tasks {
        if pushed - done.load(std::sync::atomic::Ordering::Relaxed) > 2_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let n = 500.min(tasks - pushed);
        let batch = (0..n).map(|_| {
            TaskBuilder::new(OrderTask {
                job_id: uuid::Uuid::new_v4(),
                vendor_id: None,
            })
            .build()
        });
        storage
            .push_all(&mut futures::stream::iter(batch))
            .await
            .unwrap();
        pushed += n;
    }
    while done.load(std::sync::atomic::Ordering::Relaxed) < tasks
        && started.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    let _ = running.await;
    let consumed = done.load(std::sync::atomic::Ordering::Relaxed);
    let rate = consumed as f64 / elapsed.as_secs_f64();
    println!(
        "erp-sync queue alone, concurrency {concurrency:<3} fetch batch {batch:<3} {consumed} of {tasks} tasks consumed in {:.2} s  {rate:>7.0} tasks/s (enqueue + no-op handler)",
        elapsed.as_secs_f64(),
    );
    cleanup_redis(&prefix);
    rate
}

/// The BullMQ peer scripts, installed once (npm) under target/; `None` (and why, printed)
/// when they cannot run here.
fn bullmq_peer() -> Option<std::path::PathBuf> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::env::var("BENCH_BULLMQ_DIR")
        .map(std::path::PathBuf::from)
        .ok()
        .into_iter()
        .chain([
            manifest.join("../shared/peers/bullmq"),
            manifest.join("../../shared/peers/bullmq"),
        ])
        .find(|dir| dir.join("bench.mjs").is_file());
    let Some(source) = source else {
        println!("bullmq: skipped (no peers/bullmq/bench.mjs; set BENCH_BULLMQ_DIR)");
        return None;
    };
    if Command::new("node").arg("--version").output().is_err() {
        println!("bullmq: skipped (node is not installed)");
        return None;
    }
    let dir = manifest.join("target/bullmq-peer");
    std::fs::create_dir_all(&dir).ok()?;
    for file in ["bench.mjs", "package.json"] {
        std::fs::copy(source.join(file), dir.join(file)).ok()?;
    }
    if !dir.join("node_modules/bullmq").is_dir() {
        let installed = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status();
        if !installed.is_ok_and(|s| s.success()) {
            println!("bullmq: skipped (npm install failed in {})", dir.display());
            return None;
        }
    }
    Some(dir)
}

/// BullMQ's queue alone on the same Redis: tasks/s, from the script's line.
fn bullmq_queue(dir: &std::path::Path, tasks: usize, concurrency: usize) -> Option<f64> {
    let output = Command::new("node")
        .args(["bench.mjs", &tasks.to_string(), &concurrency.to_string()])
        .current_dir(dir)
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    println!("{line}");
    let rate = line
        .split(" tasks/s")
        .next()?
        .rsplit(' ')
        .next()?
        .parse()
        .ok();
    if rate.is_none() {
        println!(
            "bullmq: no figure ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    rate
}

#[tokio::main]
async fn main() {
    let orders: usize = std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let master = std::env::var("BENCH_PG")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // BENCH_RUNS=one5,one20,ten,ten503,idle,queue picks runs (default: all).
    let runs = std::env::var("BENCH_RUNS").unwrap_or_default();
    let wanted = |name: &str| runs.is_empty() || runs.split(',').any(|r| r.trim() == name);
    let healthy = mock_agent(true).await;
    let failing = mock_agent(false).await;
    println!("erp-sync order-sync bench: {orders} orders per run\n");
    for concurrency in [5, 20] {
        if !wanted(&format!("one{concurrency}")) {
            continue;
        }
        let spec = Run {
            label: "one vendor",
            concurrency,
            orders,
            agents: vec![&healthy],
            failing: vec![],
        };
        run(spec, &master).await;
    }
    let ten_healthy = vec![healthy.as_str(); 10];
    let mut one_failing = ten_healthy.clone();
    one_failing[0] = &failing;
    if wanted("ten") {
        let spec = Run {
            label: "ten vendors, all healthy",
            concurrency: 20,
            orders,
            agents: ten_healthy,
            failing: vec![],
        };
        run(spec, &master).await;
    }
    if wanted("ten503") {
        let spec = Run {
            label: "ten vendors, one answering 503",
            concurrency: 20,
            orders,
            agents: one_failing,
            failing: vec![0],
        };
        run(spec, &master).await;
    }
    if wanted("idle") {
        idle_latency(&master, 50).await;
    }
    if wanted("queue") {
        println!();
        let batch: usize = std::env::var("BENCH_QUEUE_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let peer = bullmq_peer();
        for concurrency in [5, 20] {
            let ours = queue_only(orders, concurrency, batch).await;
            if let Some(theirs) = peer
                .as_deref()
                .and_then(|dir| bullmq_queue(dir, orders, concurrency))
            {
                println!(
                    "queue alone, concurrency {concurrency:<3} erp-sync / BullMQ: {:.2}  (target >= 1)\n",
                    ours / theirs
                );
            }
        }
    }
}
