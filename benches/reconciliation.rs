//! Reconciliation benchmark: `cargo bench --bench reconciliation`.
//!
//! Starts the release binary on a database of its own, with a mock ERP agent on 127.0.0.1:0
//! (tests/api/mock_erp.rs) holding the same BENCH_ITEMS (100 000) items as Postgres. For each
//! k in {0, 1, 10, 100, 1 000}, drifts k items spread at random (a third changed in the ERP, a
//! third gone from it, a third new in it), triggers a reconciliation over HTTP, waits for the
//! run to end and prints: agent calls, items fetched, wall time (trigger → run finished) and
//! the run's own duration, beside the targets. Then times Postgres' checksum of the whole
//! catalogue (median of 5). Each round starts from the previous round's repaired state.
//!
//! Knobs (environment): BENCH_ITEMS (100000), BENCH_PG (postgres://…/postgres, else
//! DATABASE_URL).

mod common;
#[path = "../tests/api/mock_erp.rs"]
mod mock_erp;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use erp_sync::reconciliation::{catalogue_queries, range::SkuRange};
use mock_erp::{MockErp, erp_item};
use rand::{SeedableRng, seq::index::sample};
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};

const API_KEY: &str = "bench-api-secret-0123456789abcdefghijkl";
const AGENT_SECRET: &str = "bench-agent-secret-000";
const VENDOR: &str = "bench-vendor";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sku(i: usize) -> String {
    format!("SKU-{i:07}")
}

/// The catalogue straight into Postgres, with the mock's content hashes (version 1).
async fn load_postgres(db: &PgPool, n: usize) {
    sqlx::query(
        "INSERT INTO erp_code_mappings (vendor_id, mapping_type, erp_code, resto_code, resto_label)
         VALUES ($1, 'unit', 'KG', 'kg', 'kg'), ($1, 'vat', 'T1', '20', '20')",
    )
    .bind(VENDOR)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO items (vendor_id, sku, name, erp_unit_code, erp_vat_code, unit_code, vat_code,
                            price, content_hash, erp_updated_at)
         SELECT $1, s.sku, 'Article ' || s.sku || ' v1', 'KG', 'T1', 'kg', '20', 11,
                encode(sha256(convert_to(s.sku || '/1', 'UTF8')), 'hex'), '2026-01-02T00:00:00Z'
         FROM (SELECT 'SKU-' || lpad(g::text, 7, '0') AS sku FROM generate_series(0, $2 - 1) g) s",
    )
    .bind(VENDOR)
    .bind(n as i64)
    .execute(db)
    .await
    .unwrap();
    sqlx::query("VACUUM (ANALYZE) items")
        .execute(db)
        .await
        .unwrap();
}

/// Drifts k random items of the ERP: changed, removed, or new, in turn.
fn drift(erp: &MockErp, n: usize, k: usize, round: u64, rng: &mut rand::rngs::StdRng) {
    for (j, i) in sample(rng, n, k).into_iter().enumerate() {
        match j % 3 {
            0 => erp.put(erp_item(&sku(i), 2 + round as u32)),
            1 => erp.remove(&sku(i)),
            _ => erp.put(erp_item(&format!("{}-new{round}", sku(i)), 1)),
        }
    }
}

async fn reconcile(client: &reqwest::Client, base: &str, db: &PgPool) -> (Value, Duration) {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/api/admin/reconciliation/trigger"))
        .header("x-api-key", API_KEY)
        .json(&json!({ "vendorId": VENDOR }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let run_id: uuid::Uuid = response.json::<Value>().await.unwrap()["runId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    loop {
        let summary: Option<Value> = sqlx::query_scalar(
            "SELECT summary FROM reconciliation_runs WHERE id = $1 AND status <> 'running'",
        )
        .bind(run_id)
        .fetch_optional(db)
        .await
        .unwrap();
        if let Some(summary) = summary {
            return (summary, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let master = std::env::var("BENCH_PG")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db_name = format!("erp_sync_recon_bench_{}", std::process::id());
    let (mut admin, db_url) = common::create_database(&master, &db_name).await;

    let port = common::free_port();
    let prefix = format!("erp-sync-recon-bench-{}", std::process::id());
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_erp-sync"))
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &db_url)
            .env("REDIS_PREFIX", &prefix)
            .env("API_SECRET", API_KEY)
            .env("AGENT_SECRET", AGENT_SECRET)
            .env("ORDER_SYNC_ENABLED", "false")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await
        .unwrap();

    let erp = MockErp::start((0..n).map(|i| erp_item(&sku(i), 1))).await;
    erp.verify_with(
        standardwebhooks::Webhook::from_bytes(AGENT_SECRET.as_bytes().to_vec()).unwrap(),
    );
    load_postgres(&db, n).await;
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
         VALUES ($1, $2, 'custom', 'unused', 'online', now())",
    )
    .bind(VENDOR)
    .bind(&erp.url)
    .execute(&db)
    .await
    .unwrap();

    let depth = ((n as f64 / 10.0).log2()).ceil() as u64;
    println!(
        "erp-sync reconciliation bench: {n} items, mock ERP agent in this process, release binary\n"
    );
    println!(
        "{:>5}  {:>11}  {:>13}  {:>13}  {:>10}  {:>9}  {:>8}  {:>10}  {:>10}",
        "k",
        "agent calls",
        "target calls",
        "items fetched",
        "wall ms",
        "run ms",
        "repaired",
        "deactivated",
        "unresolved"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (round, k) in [0usize, 1, 10, 100, 1_000].into_iter().enumerate() {
        drift(&erp, n, k, round as u64, &mut rng);
        erp.reset_counts();
        sqlx::query("UPDATE agent_registry SET last_heartbeat = now()")
            .execute(&db)
            .await
            .unwrap();
        let (summary, wall) = reconcile(&client, &base, &db).await;
        let target = if k == 0 {
            "≤ 2".to_owned()
        } else {
            format!("≤ {}", 4 * k as u64 * depth + 2)
        };
        let field = |name: &str| summary[name].as_u64().unwrap_or_default();
        println!(
            "{k:>5}  {:>11}  {target:>13}  {:>13}  {:>10.0}  {:>9}  {:>8}  {:>10}  {:>10}{}",
            field("agentCalls"),
            field("itemsFetched"),
            wall.as_secs_f64() * 1000.0,
            field("durationMs"),
            field("repaired"),
            field("deactivated"),
            field("unresolved"),
            if k == 0 {
                "   (target: ≤ 300 ms wall)"
            } else {
                ""
            },
        );
        assert_eq!(
            erp.calls(),
            summary["agentCalls"].as_u64().unwrap(),
            "the mock and the summary agree"
        );
        assert_eq!(erp.bad_signatures(), 0);
    }

    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let digest = catalogue_queries::digest(&db, VENDOR, &SkuRange::all())
            .await
            .unwrap();
        times.push(started.elapsed());
        assert_eq!(
            digest.checksum,
            erp.checksum(),
            "Postgres and the ERP agree after the runs"
        );
    }
    times.sort();
    println!(
        "\nPostgres checksum of the whole catalogue: {:.1} ms (median of 5; target ≤ 200 ms)",
        times[2].as_secs_f64() * 1000.0
    );

    drop(server);
    db.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    common::cleanup_redis(&prefix);
}
