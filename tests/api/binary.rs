//! The real binary: start-up, SIGTERM, subcommands.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
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

/// The real binary serving on the test's database and Redis prefix, on a port of its own.
pub struct Binary {
    pub child: Child,
    pub port: u16,
}

impl Binary {
    /// Starts `erp-sync` with `extra` environment on top of the test defaults and waits until
    /// it logs the address it listens on.
    pub async fn start(db: &PgPool, prefix: &str, extra: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_erp-sync"));
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATABASE_URL", database_url(db).await)
            .env("REDIS_PREFIX", prefix)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        for (key, value) in extra {
            command.env(key, value);
        }
        let mut child = command
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
                    .parse()
                    .unwrap();
            }
            assert!(started.elapsed() < Duration::from_secs(30));
        };
        Self { child, port }
    }

    /// SIGTERM, then the exit status (within 15 s).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 15 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[sqlx::test]
async fn serve_answers_health_and_stops_cleanly_on_sigterm(db: PgPool) {
    let prefix = crate::helpers::RedisPrefix::new();
    let mut binary = Binary::start(&db, &prefix.0, &[]).await;
    let health = reqwest::get(format!("http://127.0.0.1:{}/health", binary.port))
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);

    let status = binary.terminate().await;
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

/// After a rollback (or while the old colour of a blue-green deploy restarts) the schema is one
/// release ahead of the binary: `migrate` (and so `serve`, which migrates first) must accept
/// migrations it does not know, but still refuse a known migration that was changed.
#[sqlx::test]
async fn migrate_accepts_a_schema_one_release_ahead_but_not_an_edited_migration(db: PgPool) {
    let url = database_url(&db).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from the next release', true, '\\x00', 1)",
    )
    .execute(&db)
    .await
    .unwrap();
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_erp-sync"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ahead = migrate();
    assert!(
        ahead.status.success(),
        "{}",
        String::from_utf8_lossy(&ahead.stderr)
    );
    let unknown: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = 99990101000000")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(unknown, 1, "the newer release's migration record stays");

    sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = '\\x01'
         WHERE version = (SELECT min(version) FROM _sqlx_migrations)",
    )
    .execute(&db)
    .await
    .unwrap();
    let edited = migrate();
    assert!(!edited.status.success(), "an edited migration is an error");
    assert!(
        String::from_utf8_lossy(&edited.stderr).contains("modified"),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
}
