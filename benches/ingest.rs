//! Ingest benchmark: `cargo bench --bench ingest`.
//!
//! Starts the release binary on the machine's Postgres (a database of its own, dropped at the
//! end) and measures:
//! 1. peak RSS growth while ingesting 5 000-item `/batch` requests, against the body size;
//! 2. 100 000 items posted as 500-item requests by a concurrent client: new, all changed,
//!    all unchanged — items/s and p50/p99 per request;
//! 3. the ceiling: the same rows (same vendor and SKUs, deleted first so they land in the same
//!    index positions) upserted straight into Postgres, one bulk statement per 500 rows, same
//!    concurrency, no HTTP and no validation.
//!
//! Every phase starts after `VACUUM (ANALYZE) items; CHECKPOINT` so none pays for the
//! previous one's dead tuples or WAL. Each phase also prints the CPU time the service and the
//! bench client used (of the machine's 2 cores), so the ratios can be read honestly.
//!
//! Knobs (environment): BENCH_ITEMS (100000), BENCH_CONCURRENCY (4), BENCH_PG
//! (postgres://postgres@127.0.0.1:5432/postgres).

mod common;

use common::cleanup_redis;
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};

const API_KEY: &str = "bench-api-secret-0123456789abcdefghijkl";
const AGENT_TOKEN: &str = "bench-agent-token-0123456789";
const VENDOR: &str = "bench-vendor";
const PER_REQUEST: usize = 500;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: a graceful stop deregisters the order-sync worker from Redis.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn item(sku: &str, version: u32) -> Value {
    json!({
        "sku": sku,
        "name": format!("Produit {sku} — calibre extra, origine France"),
        "description": "Colis de 5 kg, catégorie I, conservation entre 2 et 6 °C.",
        "unitCode": "PCE", "vatCode": "T1", "familyCode": "FRUITS", "subfamilyCode": "AGRUMES",
        "price": 12.3456,
        "isActive": true,
        "contentHash": format!("{:064x}", (version as u128) << 64 | sku.len() as u128 ^ fxhash(sku)),
        "lastModifiedAt": format!("2026-01-{:02}T00:00:00Z", 1 + version),
    })
}

fn fxhash(s: &str) -> u128 {
    s.bytes().fold(0xcbf29ce484222325_u128, |h, b| {
        (h ^ b as u128).wrapping_mul(0x100000001b3)
    })
}

fn bodies(
    vendor: &str,
    prefix: &str,
    total: usize,
    per_request: usize,
    version: u32,
) -> Vec<Vec<u8>> {
    (0..total.div_ceil(per_request))
        .map(|r| {
            let items: Vec<Value> = (r * per_request..((r + 1) * per_request).min(total))
                .map(|i| item(&format!("{prefix}{i:07}"), version))
                .collect();
            serde_json::to_vec(&json!({"vendorId": vendor, "items": items})).unwrap()
        })
        .collect()
}

/// Pays the previous phase's maintenance debt (dead tuples, dirty WAL) before the next one,
/// so autovacuum or a checkpoint does not land in the middle of a measurement.
async fn settle(db_url: &str) {
    let mut conn = PgConnection::connect(db_url).await.unwrap();
    sqlx::query("VACUUM (ANALYZE) items")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&mut conn).await.unwrap();
}

struct Phase {
    name: String,
    items: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU seconds used during the phase by the service and by this bench process.
    cpu: Option<(f64, f64)>,
}

/// CPU seconds (user + system) a process has used so far, from /proc (Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Measures the CPU the service (`pid`) and this bench use while `phase` runs.
async fn with_cpu(pid: Option<u32>, phase: impl std::future::Future<Output = Phase>) -> Phase {
    let me = std::process::id();
    let before = (pid.map(cpu_seconds), cpu_seconds(me));
    let mut phase = phase.await;
    let service = match (pid, before.0) {
        (Some(pid), Some(b)) => cpu_seconds(pid) - b,
        _ => 0.0,
    };
    phase.cpu = Some((service, cpu_seconds(me) - before.1));
    phase
}

impl Phase {
    fn items_per_sec(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(sorted.len() - 1)]
    }
    fn print(&self) {
        let cpu = self.cpu.map_or(String::new(), |(service, bench)| {
            let s = self.elapsed.as_secs_f64();
            format!(
                "  cpu: service {:.0} %, bench client {:.0} % of one core",
                100.0 * service / s,
                100.0 * bench / s
            )
        });
        println!(
            "{:<28} {:>8} items  {:>7.2} s  {:>9.0} items/s  p50 {:>6.1} ms  p99 {:>6.1} ms{cpu}",
            self.name,
            self.items,
            self.elapsed.as_secs_f64(),
            self.items_per_sec(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0
        );
    }
}

async fn post_all(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<Vec<u8>>,
    concurrency: usize,
    name: &str,
    items: usize,
) -> Phase {
    let started = Instant::now();
    let latencies: Vec<Duration> = stream::iter(bodies)
        .map(|body| async move {
            let t = Instant::now();
            let response = client
                .post(url)
                .bearer_auth(AGENT_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request");
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(
                status.is_success(),
                "{status}: {}",
                &text[..text.len().min(300)]
            );
            t.elapsed()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Phase {
        name: name.into(),
        items,
        elapsed: started.elapsed(),
        latencies,
        cpu: None,
    }
}

/// The same rows, straight into Postgres: the ceiling HTTP ingest is measured against.
async fn ceiling(
    pg_url: &str,
    prefix: &str,
    total: usize,
    concurrency: usize,
    version: u32,
    name: &str,
) -> Phase {
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(pg_url)
        .await
        .unwrap();
    let at: DateTime<Utc> = format!("2026-01-{:02}T00:00:00Z", 1 + version)
        .parse()
        .unwrap();
    let chunks: Vec<Vec<String>> = (0..total.div_ceil(PER_REQUEST))
        .map(|r| {
            (r * PER_REQUEST..((r + 1) * PER_REQUEST).min(total))
                .map(|i| format!("{prefix}{i:07}"))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let latencies: Vec<Duration> = stream::iter(chunks)
        .map(|skus| {
            let pool = pool.clone();
            async move {
                let hashes: Vec<String> = skus.iter().map(|s| format!("{:064x}", (version as u128) << 64 ^ fxhash(s))).collect();
                let names: Vec<String> = skus.iter().map(|s| format!("Produit {s} — calibre extra, origine France")).collect();
                let n = skus.len();
                let description = vec!["Colis de 5 kg, catégorie I, conservation entre 2 et 6 °C."; n];
                let (unit, vat, family, subfamily) = (vec!["PCE"; n], vec!["T1"; n], vec!["FRUITS"; n], vec!["AGRUMES"; n]);
                let (r_unit, r_vat, r_family, r_sub) = (vec!["piece"; n], vec!["vat_20"; n], vec!["fruits"; n], vec!["citrus"; n]);
                let prices = vec![rust_decimal::Decimal::new(123456, 4); n];
                let t = Instant::now();
                // The plain bulk upsert of the same rows, every column bound as an array: what a
                // hand-written loader would do, nothing more.
                sqlx::query(
                    "INSERT INTO items (vendor_id, sku, name, description, erp_unit_code, erp_vat_code, erp_family_code,
                                        erp_subfamily_code, unit_code, vat_code, family_code, subfamily_code, price,
                                        is_active, content_hash, erp_updated_at, last_synced_at)
                     SELECT 'bench-vendor', t.*, now()
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                 $8::text[], $9::text[], $10::text[], $11::text[], $12::numeric[], $13::bool[],
                                 $14::text[], $15::timestamptz[]) AS t
                     ON CONFLICT (vendor_id, sku) DO UPDATE SET
                         name = excluded.name, description = excluded.description,
                         erp_unit_code = excluded.erp_unit_code, erp_vat_code = excluded.erp_vat_code,
                         erp_family_code = excluded.erp_family_code, erp_subfamily_code = excluded.erp_subfamily_code,
                         unit_code = excluded.unit_code, vat_code = excluded.vat_code,
                         family_code = excluded.family_code, subfamily_code = excluded.subfamily_code,
                         price = excluded.price, is_active = excluded.is_active,
                         content_hash = excluded.content_hash, erp_updated_at = excluded.erp_updated_at,
                         last_synced_at = excluded.last_synced_at, updated_at = now()",
                )
                .bind(&skus)
                .bind(&names)
                .bind(&description)
                .bind(&unit)
                .bind(&vat)
                .bind(&family)
                .bind(&subfamily)
                .bind(&r_unit)
                .bind(&r_vat)
                .bind(&r_family)
                .bind(&r_sub)
                .bind(&prices)
                .bind(vec![true; n])
                .bind(&hashes)
                .bind(vec![at; n])
                .execute(&pool)
                .await
                .unwrap();
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Phase {
        name: name.into(),
        items: total,
        elapsed: started.elapsed(),
        latencies,
        cpu: None,
    }
}

#[tokio::main]
async fn main() {
    let total: usize = env_or("BENCH_ITEMS", "100000").parse().unwrap();
    let concurrency: usize = env_or("BENCH_CONCURRENCY", "4").parse().unwrap();
    let master = std::env::var("BENCH_PG")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db_name = format!("erp_sync_bench_{}", std::process::id());
    let (mut admin, db_url) = common::create_database(&master, &db_name).await;
    let prefix = format!("erp-sync-bench-{}", std::process::id());

    let port = common::free_port();
    let binary = env!("CARGO_BIN_EXE_erp-sync");
    let child = Command::new(binary)
        .env("APP_ENV", "development")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", &db_url)
        .env("REDIS_PREFIX", &prefix)
        .env("API_SECRET", API_KEY)
        .env("AGENT_SECRET", "bench-agent-secret-000")
        .env("INGEST_RATE_LIMIT_PER_MIN", "1000000")
        .env("INGEST_BATCH_RATE_LIMIT_PER_MIN", "1000000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("erp-sync starts");
    let server = Server {
        url: format!("http://127.0.0.1:{port}"),
        child,
    };
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    for _ in 0..100 {
        if client
            .get(format!("{}/health", server.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let register = json!({"vendorId": VENDOR, "agentUrl": "http://127.0.0.1:9/agent", "erpType": "ebp", "authToken": AGENT_TOKEN});
    let response = client
        .post(format!("{}/api/agents/register", server.url))
        .header("x-api-key", API_KEY)
        .json(&register)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let seed = json!({"vendorId": VENDOR, "mappings": [
        {"mappingType": "unit", "erpCode": "PCE", "restoCode": "piece", "restoLabel": "Pièce"},
        {"mappingType": "vat", "erpCode": "T1", "restoCode": "vat_20", "restoLabel": "TVA 20 %"},
        {"mappingType": "family", "erpCode": "FRUITS", "restoCode": "fruits", "restoLabel": "Fruits"},
        {"mappingType": "subfamily", "erpCode": "AGRUMES", "restoCode": "citrus", "restoLabel": "Agrumes"}
    ]});
    client
        .post(format!("{}/api/admin/mappings/seed", server.url))
        .header("x-api-key", API_KEY)
        .json(&seed)
        .send()
        .await
        .unwrap();

    println!(
        "erp-sync ingest bench: {total} items, {PER_REQUEST}/request, concurrency {concurrency}\n"
    );

    // 1. Memory while ingesting 5 000-item batches (one at a time, new items).
    let batch_url = format!("{}/api/sync/items/batch", server.url);
    let warm = bodies(VENDOR, "WARM-", 5000, 5000, 1);
    post_all(&client, &batch_url, warm, 1, "warm-up", 5000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kib(pid, "VmRSS:");
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5"); // reset the peak (VmHWM)
    let batches = bodies(VENDOR, "BATCH-", 20_000, 5000, 1);
    settle(&db_url).await;
    let body_kib = batches[0].len() as u64 / 1024;
    let batch_phase = post_all(&client, &batch_url, batches, 1, "batch 5000 (new)", 20_000).await;
    let peak = rss_kib(pid, "VmHWM:");
    batch_phase.print();
    let growth = peak.saturating_sub(baseline);
    println!(
        "memory: body {body_kib} KiB; RSS before {baseline} KiB, peak {peak} KiB; growth {growth} KiB = {:.2}× the body\n",
        growth as f64 / body_kib as f64
    );

    // 2. HTTP ingest of 500-item requests.
    let url = format!("{}/api/sync/items", server.url);
    settle(&db_url).await;
    let new = with_cpu(
        Some(pid),
        post_all(
            &client,
            &url,
            bodies(VENDOR, "SKU-", total, PER_REQUEST, 1),
            concurrency,
            "http new",
            total,
        ),
    )
    .await;
    new.print();
    settle(&db_url).await;
    let changed = with_cpu(
        Some(pid),
        post_all(
            &client,
            &url,
            bodies(VENDOR, "SKU-", total, PER_REQUEST, 2),
            concurrency,
            "http all changed",
            total,
        ),
    )
    .await;
    changed.print();
    settle(&db_url).await;
    let unchanged = with_cpu(
        Some(pid),
        post_all(
            &client,
            &url,
            bodies(VENDOR, "SKU-", total, PER_REQUEST, 2),
            concurrency,
            "http all unchanged",
            total,
        ),
    )
    .await;
    unchanged.print();

    // 3. Ceiling: the very same rows (same vendor, same SKUs, same index positions), written
    //    again from scratch by the plain bulk upsert.
    let mut conn = PgConnection::connect(&db_url).await.unwrap();
    sqlx::query("DELETE FROM items WHERE vendor_id = $1 AND sku LIKE 'SKU-%'")
        .bind(VENDOR)
        .execute(&mut conn)
        .await
        .unwrap();
    settle(&db_url).await;
    let ceiling_new = with_cpu(
        None,
        ceiling(
            &db_url,
            "SKU-",
            total,
            concurrency,
            1,
            "ceiling new (SQL only)",
        ),
    )
    .await;
    ceiling_new.print();
    settle(&db_url).await;
    let ceiling_changed = with_cpu(
        None,
        ceiling(
            &db_url,
            "SKU-",
            total,
            concurrency,
            2,
            "ceiling changed (SQL only)",
        ),
    )
    .await;
    ceiling_changed.print();

    println!();
    println!(
        "http new / ceiling new:           {:>5.1} %  (target >= 80 %)",
        100.0 * new.items_per_sec() / ceiling_new.items_per_sec()
    );
    println!(
        "http changed / ceiling changed:   {:>5.1} %  (target >= 90 %)",
        100.0 * changed.items_per_sec() / ceiling_changed.items_per_sec()
    );
    println!(
        "p99 per 500-item request:          new {:.1} ms, changed {:.1} ms (target <= 150 ms)",
        new.percentile(0.99).as_secs_f64() * 1000.0,
        changed.percentile(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "unchanged vs new speed-up:         {:>5.2}×  (target >= 3×)",
        unchanged.items_per_sec() / new.items_per_sec()
    );
    println!(
        "peak RSS growth / body:            {:>5.2}×  (target <= 3×)",
        growth as f64 / body_kib as f64
    );

    drop(server);
    cleanup_redis(&prefix);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}
