//! The real binary: start-up, SIGTERM, subcommands.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::PgPool;

/// The test database's URL, so the binary works on the database `#[sqlx::test]` made.
pub(crate) async fn database_url(db: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(db)
        .await
        .unwrap();
    let master = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = master
        .rsplit_once('/')
        .map_or(master.as_str(), |(server, _)| server);
    format!("{server}/{name}")
}

#[sqlx::test]
async fn serve_answers_health_and_stops_cleanly_on_sigterm(db: PgPool) {
    let prefix = crate::helpers::RedisPrefix::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_erp-sync"))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATABASE_URL", database_url(&db).await)
        .env("REDIS_PREFIX", &prefix.0)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The port is in the "listening" log line.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the binary logs that it listens");
        if let Some(address) = line.split("address=").nth(1) {
            break address
                .split_whitespace()
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .trim_matches(|c: char| !c.is_ascii_digit())
                .to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    };
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 15 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a graceful stop exits 0: {status}");
}

#[sqlx::test]
async fn seed_mappings_applies_the_example_file_idempotently(db: PgPool) {
    let url = database_url(&db).await;
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_erp-sync"))
            .args([
                "seed-mappings",
                concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/mappings.example.json"),
            ])
            .env("DATABASE_URL", &url)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("7 inserted"));
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("0 inserted, 0 updated, 7 unchanged"));
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM erp_code_mappings WHERE vendor_id = 'vendor-demo'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(count, 7);

    let bad = Command::new(env!("CARGO_BIN_EXE_erp-sync"))
        .args(["seed-mappings", "/nonexistent/file.json"])
        .env("DATABASE_URL", &url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
