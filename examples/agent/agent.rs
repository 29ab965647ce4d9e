//! The reference agent: everything an agent does, against an "ERP" that is a JSON file held in
//! memory. See examples/agent/README.md and docs/agent-protocol.md.
//!
//! * [`heartbeat_loop`]: `POST /api/agents/heartbeat` every `heartbeat` interval.
//! * [`push_catalogue`]: warehouses, then items, then stock, through the `/batch` routes in
//!   batches of at most 5 000 records, waiting out `Retry-After` on a 429.
//! * [`router`]: `POST /sync/create-order`, verified with the Standard Webhooks library,
//!   deduplicated on `Idempotency-Key` in a JSON file written atomically, answered `200
//!   {erpReference}` or `202` and a callback (`Mode`). In test mode, orders under
//!   `AGENT-CHECK-` never reach the ERP (what `erp-sync agent-check --orders` relies on).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The most records one `/batch` request takes.
pub const BATCH_SIZE: usize = 5_000;
/// Orders whose id starts with this are `agent-check` test orders.
pub const TEST_PREFIX: &str = "AGENT-CHECK-";

/// How create-order answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `200 {"erpReference"}` once the ERP has the order.
    Sync,
    /// `202` at once, then `POST /api/agents/callback` with the reference.
    Async,
}

/// The ERP's catalogue, in the ingest shapes (docs/ingest.md): `{"warehouses": [...],
/// "items": [...], "stock": {"<erpWarehouseId>": [...]}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Catalogue {
    #[serde(default)]
    pub warehouses: Vec<Value>,
    #[serde(default)]
    pub items: Vec<Value>,
    #[serde(default)]
    pub stock: std::collections::BTreeMap<String, Vec<Value>>,
}

impl Catalogue {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }
}

pub struct Config {
    /// erp-sync's base URL, e.g. `https://erp-sync.example.com`.
    pub erp_sync_url: String,
    pub vendor_id: String,
    /// The agent's own token (`authToken` at registration).
    pub token: String,
    /// The `whsec_…` secret the registration answered.
    pub signing_secret: String,
    pub catalogue: Catalogue,
    /// The idempotency store: a JSON file `{"<Idempotency-Key>": "<erpReference>"}`.
    pub store_path: PathBuf,
    pub mode: Mode,
    /// Answer `agent-check` test orders (never forwarded to the ERP); off in production.
    pub test_mode: bool,
    pub heartbeat: Duration,
}

pub struct Agent {
    config: Config,
    webhook: standardwebhooks::Webhook,
    http: reqwest::Client,
    /// Keys already created, and the lock that lets one delivery of a key create at a time.
    store: tokio::sync::Mutex<HashMap<String, String>>,
    /// The ERP's orders (a real agent calls its ERP here).
    erp_orders: std::sync::Mutex<Vec<Value>>,
}

impl Agent {
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let webhook = standardwebhooks::Webhook::new(&config.signing_secret)
            .map_err(|e| anyhow::anyhow!("invalid signing secret: {e}"))?;
        let store = match std::fs::read(&config.store_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Arc::new(Self {
            config,
            webhook,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            store: tokio::sync::Mutex::new(store),
            erp_orders: std::sync::Mutex::default(),
        }))
    }

    /// The orders the ERP received (test orders are never among them).
    pub fn erp_orders(&self) -> Vec<Value> {
        self.erp_orders.lock().expect("erp lock").clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.erp_sync_url.trim_end_matches('/'))
    }
}

/// Heartbeats forever; a failed one is logged and the next one tried on time.
pub async fn heartbeat_loop(agent: Arc<Agent>) {
    let mut every = tokio::time::interval(agent.config.heartbeat);
    loop {
        every.tick().await;
        let body =
            json!({"vendorId": agent.config.vendor_id, "version": env!("CARGO_PKG_VERSION")});
        if let Err(error) = post_json(&agent, "/api/agents/heartbeat", &body).await {
            eprintln!("heartbeat failed: {error}");
        }
    }
}

/// Pushes the whole catalogue once: warehouses, items, then stock per warehouse.
pub async fn push_catalogue(agent: &Agent) -> anyhow::Result<()> {
    let catalogue = &agent.config.catalogue;
    let vendor = &agent.config.vendor_id;
    for chunk in catalogue.warehouses.chunks(BATCH_SIZE) {
        let body = json!({"vendorId": vendor, "warehouses": chunk});
        post_json(agent, "/api/sync/warehouses/batch", &body).await?;
    }
    for chunk in catalogue.items.chunks(BATCH_SIZE) {
        let body = json!({"vendorId": vendor, "items": chunk});
        post_json(agent, "/api/sync/items/batch", &body).await?;
    }
    for (warehouse, stock) in &catalogue.stock {
        for chunk in stock.chunks(BATCH_SIZE) {
            let body = json!({"vendorId": vendor, "warehouseId": warehouse, "stock": chunk});
            post_json(agent, "/api/sync/stock/batch", &body).await?;
        }
    }
    Ok(())
}

/// POSTs `body` with the agent's token; on a 429 or 503 waits `Retry-After` (or 1 s) and
/// sends it again. Records that fail are reported by erp-sync per record: logged here.
async fn post_json(agent: &Agent, path: &str, body: &Value) -> anyhow::Result<Value> {
    loop {
        let response = agent
            .http
            .post(agent.url(path))
            .bearer_auth(&agent.config.token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if matches!(status.as_u16(), 429 | 503) {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
            continue;
        }
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("{path}: HTTP {status}: {answer}");
        }
        if answer["failed"].as_u64().unwrap_or(0) > 0 {
            eprintln!("{path}: some records failed: {}", answer["results"]);
        }
        return Ok(answer);
    }
}

/// The routes erp-sync calls.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/sync/create-order", post(create_order))
        .with_state(agent)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn create_order(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Signature and timestamp (5 minutes) first; 401 is what erp-sync expects for a refusal.
    if agent.webhook.verify(&body, &headers).is_err() {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "signature refused",
        );
    }
    let Ok(order) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "not a create-order body",
        );
    };
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "no Idempotency-Key",
        );
    };
    let test_order = order["orderId"]
        .as_str()
        .is_some_and(|id| id.starts_with(TEST_PREFIX));
    if test_order && !agent.config.test_mode {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "test_order",
            "an agent-check test order, and this agent is not in test mode",
        );
    }
    // One delivery of a key at a time: a concurrent duplicate waits here, then finds the key.
    let mut store = agent.store.lock().await;
    let reference = match store.get(&key) {
        Some(reference) => return Json(json!({"erpReference": reference})).into_response(),
        None => {
            let reference = create_in_erp(&agent, &order, test_order);
            store.insert(key.clone(), reference.clone());
            // The ERP has the order now: keep the key in memory even if the file cannot be
            // written (the next write saves it), so a repeat is never created again here.
            if let Err(e) = save_store(&agent.config.store_path, &store) {
                eprintln!("cannot save the idempotency store: {e}");
            }
            reference
        }
    };
    drop(store);
    match agent.config.mode {
        Mode::Sync => Json(json!({"erpReference": reference})).into_response(),
        Mode::Async => {
            // A test order's callback goes where agent-check listens.
            let base = headers
                .get("x-agent-check-erp-sync-url")
                .and_then(|v| v.to_str().ok())
                .filter(|_| test_order)
                .map_or_else(|| agent.config.erp_sync_url.clone(), str::to_owned);
            let callback = json!({
                "vendorId": agent.config.vendor_id,
                "jobId": order["jobId"],
                "status": "completed",
                "erpReference": reference,
            });
            tokio::spawn(send_callback(agent.clone(), base, callback));
            StatusCode::ACCEPTED.into_response()
        }
    }
}

/// The ERP call. Here: a reference made up and the order kept in memory (test orders: made up
/// and never kept).
fn create_in_erp(agent: &Agent, order: &Value, test_order: bool) -> String {
    let mut erp = agent.erp_orders.lock().expect("erp lock");
    if test_order {
        return format!("TEST-{}", uuid::Uuid::new_v4().simple());
    }
    erp.push(order.clone());
    format!("ERP-{}", erp.len())
}

/// Writes the store to a temporary file, syncs it, then renames it over the old one.
fn save_store(path: &Path, store: &HashMap<String, String>) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(store)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Posts the callback, retrying (1 s, 2 s, 4 s …, ten times) on no answer or a 5xx.
async fn send_callback(agent: Arc<Agent>, base: String, callback: Value) {
    let url = format!("{}/api/agents/callback", base.trim_end_matches('/'));
    for attempt in 0..10u32 {
        let sent = agent
            .http
            .post(&url)
            .bearer_auth(&agent.config.token)
            .json(&callback)
            .send()
            .await;
        match sent {
            Ok(response) if !response.status().is_server_error() => {
                if !response.status().is_success() {
                    eprintln!("callback refused: HTTP {}", response.status());
                }
                return;
            }
            Ok(response) => eprintln!("callback: HTTP {}", response.status()),
            Err(error) => eprintln!("callback: {error}"),
        }
        tokio::time::sleep(Duration::from_secs(1 << attempt.min(6))).await;
    }
}
