//! Agent authentication under attack: `cargo bench --bench auth`.
//!
//! For each scenario: starts the release binary on a database of its own, registers one
//! vendor, and lets its real agent (from 127.0.0.1) heartbeat back to back, 10 ms apart,
//! while an attacker (from 127.0.0.2) sends BENCH_WRONG_TOKENS (1 000) wrong tokens for that
//! same vendor at concurrency 50. Prints the heartbeat latency (p50, p99, max) while the
//! attack lasts and what the attacker got. Scenarios: no attack (baseline); the default
//! failure limit (20 a minute); the limit lifted, so every wrong token reaches the bounded
//! bcrypt queue. Target: heartbeat p99 < 500 ms.

mod common;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::cleanup_redis;
use futures::StreamExt;
use serde_json::json;

const API_KEY: &str = "bench-api-secret-0123456789abcdefghijkl";
const TOKEN: &str = "bench-real-agent-token-0123456789";
const VENDOR: &str = "bench-vendor";

struct Scenario {
    name: &'static str,
    failures_per_min: Option<&'static str>,
    attack: bool,
}

async fn run(scenario: &Scenario, index: usize, master: &str, wrong_tokens: usize) {
    let db_name = format!("erp_sync_auth_bench_{}_{index}", std::process::id());
    let (mut admin, db_url) = common::create_database(master, &db_name).await;
    let port = common::free_port();
    let prefix = format!("erp-sync-auth-bench-{}-{index}", std::process::id());
    let mut command = Command::new(env!("CARGO_BIN_EXE_erp-sync"));
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", &db_url)
        .env("REDIS_PREFIX", &prefix)
        .env("API_SECRET", API_KEY)
        .env("AGENT_SECRET", "bench-agent-secret-000")
        .env("ORDER_SYNC_ENABLED", "false")
        .env("RUST_LOG", "warn");
    if let Some(limit) = scenario.failures_per_min {
        command.env("AUTH_FAILURES_PER_MIN", limit);
    }
    let mut child = command.stdin(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let agent = reqwest::Client::new();
    for _ in 0..100 {
        if agent
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered = agent
        .post(format!("{base}/api/agents/register"))
        .header("x-api-key", API_KEY)
        .json(&json!({"vendorId": VENDOR, "agentUrl": "http://127.0.0.1:9/agent", "erpType": "ebp", "authToken": TOKEN}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{}", registered.status());
    let heartbeat = {
        let (agent, url) = (agent.clone(), format!("{base}/api/agents/heartbeat"));
        move || {
            agent
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({"vendorId": VENDOR}))
                .send()
        }
    };
    assert!(heartbeat().await.unwrap().status().is_success());

    let stop = Arc::new(AtomicBool::new(false));
    let beats = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match heartbeat().await {
                    Ok(r) if r.status().is_success() => latencies.push(started.elapsed()),
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (latencies, failures)
        }
    });

    let started = Instant::now();
    let mut statuses = BTreeMap::new();
    if scenario.attack {
        let attacker = reqwest::Client::builder()
            .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
            .build()
            .unwrap();
        let url = format!("{base}/api/agents/heartbeat");
        let mut answers = futures::stream::iter(0..wrong_tokens)
            .map(|i| {
                attacker
                    .post(&url)
                    .bearer_auth(format!("wrong-token-{i:06}-0123456789"))
                    .json(&json!({"vendorId": VENDOR}))
                    .send()
            })
            .buffer_unordered(50);
        while let Some(answer) = answers.next().await {
            let key =
                answer.map_or_else(|_| "transport error".to_owned(), |r| r.status().to_string());
            *statuses.entry(key).or_insert(0) += 1;
        }
    } else {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let lasted = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, failures) = beats.await.unwrap();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{:<44} {:>5.1} s  heartbeats {:>4} ok {:>2} failed  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
        scenario.name,
        lasted.as_secs_f64(),
        latencies.len(),
        failures,
        percentile(0.50),
        percentile(0.99),
        latencies
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
    );
    if scenario.attack {
        println!("{:<44} attacker got {statuses:?}", "");
    }

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    cleanup_redis(&prefix);
}

#[tokio::main]
async fn main() {
    let wrong_tokens: usize = std::env::var("BENCH_WRONG_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let master = std::env::var("BENCH_PG")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    println!(
        "erp-sync auth bench: a real agent heartbeats while {wrong_tokens} wrong tokens arrive at concurrency 50\n"
    );
    let scenarios = [
        Scenario {
            name: "no attack",
            failures_per_min: None,
            attack: false,
        },
        Scenario {
            name: "attack, AUTH_FAILURES_PER_MIN=20 (default)",
            failures_per_min: None,
            attack: true,
        },
        Scenario {
            name: "attack, failure limit lifted (bcrypt queue)",
            failures_per_min: Some("1000000"),
            attack: true,
        },
    ];
    for (index, scenario) in scenarios.iter().enumerate() {
        run(scenario, index, &master, wrong_tokens).await;
    }
}
