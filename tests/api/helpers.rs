//! Test harness: the real router on 127.0.0.1:0 over a database of the test's own
//! (`#[sqlx::test]`) and a Redis key prefix of its own, removed when the test ends.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use erp_sync::{config::Settings, startup::Application, state::AppState};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const API_KEY: &str = "test-api-secret-0123456789abcdefghijkl";
pub const AGENT_SECRET: &str = "test-agent-secret-0123456789";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: PgPool,
    pub state: AppState,
    pub redis_prefix: String,
    shutdown: CancellationToken,
}

/// Settings every test starts from: port 0, the machine's Redis, a fresh key prefix.
pub fn test_vars(prefix: &str) -> Vec<(String, String)> {
    [
        ("APP_ENV", "development"),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/unused"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("API_SECRET", API_KEY),
        ("AGENT_SECRET", AGENT_SECRET),
        ("REDIS_PREFIX", prefix),
        // The order-sync worker only where a test wants it (orders.rs turns it on).
        ("ORDER_SYNC_ENABLED", "false"),
        // No cron tick lands in the middle of a test; scheduler tests turn it on.
        ("SCHEDULER_ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn spawn_app(db: PgPool) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Starts the app with the test settings changed by `adjust`.
pub async fn spawn_app_with(
    db: PgPool,
    adjust: impl FnOnce(&mut Vec<(String, String)>),
) -> TestApp {
    init_log_capture();
    let redis_prefix = format!("erp-sync-test-{}", uuid::Uuid::new_v4().simple());
    let mut vars = test_vars(&redis_prefix);
    adjust(&mut vars);
    let settings = Settings::from_vars(vars).expect("test settings are valid");
    let app = Application::build_with_pool(settings, db.clone())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        address,
        client,
        db,
        state,
        redis_prefix,
        shutdown,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn admin_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).header("x-api-key", API_KEY)
    }

    pub fn admin_post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("x-api-key", API_KEY)
            .json(body)
    }

    pub fn admin_put(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .put(self.url(path))
            .header("x-api-key", API_KEY)
            .json(body)
    }

    pub fn admin_delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(self.url(path))
            .header("x-api-key", API_KEY)
    }

    pub fn agent_post(&self, path: &str, token: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
    }

    /// Registers `vendor`'s agent with the admin key; returns its token.
    pub async fn register_agent(&self, vendor: &str) -> String {
        let token = format!("tok-{vendor}-{}", uuid::Uuid::new_v4().simple());
        self.register_agent_at(vendor, &token, "http://127.0.0.1:9/agent")
            .await;
        token
    }

    pub async fn register_agent_at(&self, vendor: &str, token: &str, agent_url: &str) {
        self.register_agent_with_secret(vendor, token, agent_url)
            .await;
    }

    /// Registers `vendor`'s agent with the admin key; returns its signing secret (`whsec_…`).
    pub async fn register_agent_with_secret(
        &self,
        vendor: &str,
        token: &str,
        agent_url: &str,
    ) -> String {
        let response = self
            .admin_post(
                "/api/agents/register",
                &json!({"vendorId": vendor, "agentUrl": agent_url, "erpType": "ebp", "authToken": token}),
            )
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "register {vendor}: {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        body["signingSecret"]
            .as_str()
            .expect("a registration answers with the signing secret")
            .to_owned()
    }
}

/// Polls `check` until it holds (the app is asynchronous), failing after `limit`.
pub async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        drop(RedisPrefix(self.redis_prefix.clone()));
    }
}

/// A Redis key prefix of a test's own, removed when dropped (for tests that run an
/// `Application` themselves rather than through [`spawn_app`]).
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub fn new() -> Self {
        Self(format!("erp-sync-test-{}", uuid::Uuid::new_v4().simple()))
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        delete_redis_keys(&self.0);
        // A command the app had already written to its socket (a worker registering, say) may
        // land after that: the test's runtime is blocked here, so nothing new is sent, and a
        // second pass after a pause catches what was in flight.
        std::thread::sleep(std::time::Duration::from_millis(100));
        delete_redis_keys(&self.0);
    }
}

/// Removes every key under `prefix:` (and nothing else) from the shared Redis.
pub fn delete_redis_keys(prefix: &str) {
    let Ok(client) = redis::Client::open("redis://127.0.0.1:6379") else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(std::time::Duration::from_secs(2)) else {
        return;
    };
    let keys: Vec<String> = match conn.scan_match::<_, String>(format!("{prefix}:*")) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
    // apalis registers every queue in one global sorted set: take our member out of it.
    let _: redis::RedisResult<()> = redis::cmd("ZREM")
        .arg(erp_sync::orders::queue::APALIS_QUEUES_LIST)
        .arg(erp_sync::orders::queue::QueueKeys::new(prefix).workers)
        .query(&mut conn);
}

use redis::Commands as _;

/// Every log line of this test binary, at debug level, so tests can assert what never
/// reaches the logs.
pub fn captured_logs() -> String {
    let buffer = LOGS.get().expect("log capture initialised").lock().unwrap();
    String::from_utf8_lossy(&buffer).into_owned()
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

fn init_log_capture() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = CaptureWriter(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter("debug,sqlx=info,hyper=info,h2=info,reqwest=info,rustls=info")
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
