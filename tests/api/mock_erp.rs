//! A real HTTP agent on 127.0.0.1:0 serving an ERP catalogue held in memory, per the agent
//! contract: `GET /sync/checksum` and `GET /sync/items` over sku ranges. It counts calls,
//! verifies Standard Webhooks signatures when given the key, and can be told to misbehave.
//! The reconciliation benchmark includes this file too.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How the agent departs from the contract.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Behaviour {
    #[default]
    Correct,
    /// Every call answers this status once `after` calls have been answered.
    FailAfter { after: u64, status: u16 },
    /// Every call waits this long once `after` calls have been answered.
    HangAfter { after: u64, delay: Duration },
    /// Treats `skuAfter` as `skuFrom` (a classic off-by-one).
    SkuAfterInclusive,
    /// Ignores `skuTo`.
    IgnoresSkuTo,
    /// Hashes lines without the trailing newline.
    WrongChecksumFormula,
    /// Sorts skus by UTF-16 code units (JavaScript's default) instead of bytes.
    Utf16Order,
    /// `/sync/checksum` answers this body.
    ChecksumBody(String),
    /// `/sync/items` answers this body (the first `after` calls excepted).
    ItemsBodyAfter { after: u64, body: String },
    /// `/sync/items` answers a body of this many bytes, with a Content-Length or streamed
    /// (chunked, no length announced).
    HugeItems { bytes: usize, streamed: bool },
    /// Every call waits until the test opens the gate ([`MockErp::open_gate`]).
    Gated,
    /// Every call answers this status and body.
    ErrorBody { status: u16, body: String },
}

#[derive(Default)]
struct Shared {
    catalogue: Mutex<BTreeMap<String, Value>>,
    behaviour: Mutex<Behaviour>,
    webhook: Mutex<Option<standardwebhooks::Webhook>>,
    checksum_calls: AtomicU64,
    items_calls: AtomicU64,
    items_served: AtomicU64,
    bad_signatures: AtomicU64,
    correlation_ids: Mutex<Vec<String>>,
    gate: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    order_mode: Mutex<OrderMode>,
    /// Idempotency key → the ERP reference created for it.
    orders: Mutex<HashMap<String, String>>,
    created: AtomicU64,
}

/// How `POST /sync/create-order` answers (signatures are checked as for the reads).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum OrderMode {
    /// Dedupes on `Idempotency-Key`, answers 200 `{erpReference}`.
    #[default]
    Answer200,
    /// Dedupes, answers 202 and posts the callback to the `X-Agent-Check-Erp-Sync-Url` header.
    Answer202,
    /// Never checks a signature.
    IgnoresSignatures,
    /// Creates a new ERP order for every delivery, repeated key or not.
    CreatesTwice,
    /// Refuses a bad signature with 403 instead of 401.
    Refuses403,
}

pub struct MockErp {
    pub url: String,
    shared: Arc<Shared>,
    _server: tokio::task::JoinHandle<()>,
}

/// An ERP item in the ingest shape; `version` changes its content (hash and date).
pub fn erp_item(sku: &str, version: u32) -> Value {
    json!({
        "sku": sku,
        "name": format!("Article {sku} v{version}"),
        "unitCode": "KG",
        "vatCode": "T1",
        "price": 10 + version,
        "isActive": true,
        "contentHash": content_hash(sku, version),
        "lastModifiedAt": format!("2026-01-{:02}T00:00:00Z", 1 + version % 28),
    })
}

pub fn content_hash(sku: &str, version: u32) -> String {
    hex::encode(Sha256::digest(format!("{sku}/{version}").as_bytes()))
}

/// The contract's checksum over `(sku, contentHash)` pairs sorted by sku bytes.
pub fn checksum_of<'a>(lines: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    for (sku, hash) in lines {
        hasher.update(format!("{sku}:{hash}\n").as_bytes());
    }
    hex::encode(hasher.finalize())
}

impl MockErp {
    pub async fn start(items: impl IntoIterator<Item = Value>) -> Self {
        let shared = Arc::new(Shared::default());
        let erp_app = Router::new()
            .route("/sync/checksum", get(checksum))
            .route("/sync/items", get(list_items))
            .route("/sync/create-order", axum::routing::post(create_order))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, erp_app).await.unwrap();
        });
        let erp = Self {
            url,
            shared,
            _server: server,
        };
        erp.put_all(items);
        erp
    }

    /// Verify every request's signature with this HMAC key (requests failing it get 401).
    pub fn verify_with(&self, webhook: standardwebhooks::Webhook) {
        *self.shared.webhook.lock().unwrap() = Some(webhook);
    }

    pub fn put_all(&self, items: impl IntoIterator<Item = Value>) {
        let mut catalogue = self.shared.catalogue.lock().unwrap();
        for item in items {
            catalogue.insert(item["sku"].as_str().unwrap().to_owned(), item);
        }
    }

    pub fn put(&self, item: Value) {
        self.put_all([item]);
    }

    pub fn remove(&self, sku: &str) {
        self.shared.catalogue.lock().unwrap().remove(sku);
    }

    /// Lets the calls held by [`Behaviour::Gated`] through.
    pub fn open_gate(&self) {
        self.shared
            .gate
            .lock()
            .unwrap()
            .get_or_insert_with(|| tokio::sync::watch::channel(false).0)
            .send_replace(true);
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn items(&self) -> Vec<Value> {
        self.shared
            .catalogue
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }

    pub fn checksum(&self) -> String {
        let catalogue = self.shared.catalogue.lock().unwrap();
        checksum_of(
            catalogue
                .iter()
                .map(|(sku, item)| (sku.as_str(), item["contentHash"].as_str().unwrap())),
        )
    }

    pub fn checksum_calls(&self) -> u64 {
        self.shared.checksum_calls.load(Ordering::SeqCst)
    }

    pub fn items_calls(&self) -> u64 {
        self.shared.items_calls.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> u64 {
        self.checksum_calls() + self.items_calls()
    }

    pub fn items_served(&self) -> u64 {
        self.shared.items_served.load(Ordering::SeqCst)
    }

    pub fn bad_signatures(&self) -> u64 {
        self.shared.bad_signatures.load(Ordering::SeqCst)
    }

    pub fn correlation_ids(&self) -> Vec<String> {
        self.shared.correlation_ids.lock().unwrap().clone()
    }

    pub fn set_order_mode(&self, mode: OrderMode) {
        *self.shared.order_mode.lock().unwrap() = mode;
    }

    /// ERP orders created through `/sync/create-order`.
    pub fn orders_created(&self) -> u64 {
        self.shared.created.load(Ordering::SeqCst)
    }

    pub fn reset_counts(&self) {
        self.shared.checksum_calls.store(0, Ordering::SeqCst);
        self.shared.items_calls.store(0, Ordering::SeqCst);
        self.shared.items_served.store(0, Ordering::SeqCst);
    }
}

async fn create_order(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mode = *shared.order_mode.lock().unwrap();
    let verified = mode == OrderMode::IgnoresSignatures
        || match &*shared.webhook.lock().unwrap() {
            Some(webhook) => webhook.verify(&body, &headers).is_ok(),
            None => true,
        };
    if !verified {
        shared.bad_signatures.fetch_add(1, Ordering::SeqCst);
        let status = if mode == OrderMode::Refuses403 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        return (status, "bad signature").into_response();
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "no Idempotency-Key").into_response();
    };
    let order: Value = serde_json::from_slice(&body).unwrap_or_default();
    let reference = {
        let mut orders = shared.orders.lock().unwrap();
        if mode == OrderMode::CreatesTwice || !orders.contains_key(&key) {
            let n = shared.created.fetch_add(1, Ordering::SeqCst) + 1;
            orders.insert(key.clone(), format!("ERP-{n}"));
        }
        orders[&key].clone()
    };
    if mode != OrderMode::Answer202 {
        return Json(json!({"erpReference": reference})).into_response();
    }
    let base = headers
        .get("x-agent-check-erp-sync-url")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    tokio::spawn(async move {
        let callback = json!({
            "vendorId": order["vendorId"],
            "jobId": order["jobId"],
            "status": "completed",
            "erpReference": reference,
        });
        let _ = reqwest::Client::new()
            .post(format!("{base}/api/agents/callback"))
            .bearer_auth("fake-mock-erp-agent-token")
            .json(&callback)
            .send()
            .await;
    });
    StatusCode::ACCEPTED.into_response()
}

type Params = Query<HashMap<String, String>>;

/// Counts the call, checks its signature, and applies the failure behaviours; `Some` is the
/// answer to give instead of the real one.
async fn intercept(shared: &Shared, headers: &HeaderMap, counter: &AtomicU64) -> Option<Response> {
    let answered =
        shared.checksum_calls.load(Ordering::SeqCst) + shared.items_calls.load(Ordering::SeqCst);
    counter.fetch_add(1, Ordering::SeqCst);
    if let Some(id) = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
    {
        shared.correlation_ids.lock().unwrap().push(id.to_owned());
    }
    let verified = match &*shared.webhook.lock().unwrap() {
        Some(webhook) => webhook.verify(b"", headers).is_ok(),
        None => true,
    };
    if !verified {
        shared.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return Some((StatusCode::UNAUTHORIZED, "bad signature").into_response());
    }
    let behaviour = shared.behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::FailAfter { after, status } if answered >= after => {
            Some(StatusCode::from_u16(status).unwrap().into_response())
        }
        Behaviour::Gated => {
            let mut open = shared
                .gate
                .lock()
                .unwrap()
                .get_or_insert_with(|| tokio::sync::watch::channel(false).0)
                .subscribe();
            let _ = open.wait_for(|open| *open).await;
            None
        }
        Behaviour::ErrorBody { status, body } => {
            Some((StatusCode::from_u16(status).unwrap(), body).into_response())
        }
        Behaviour::HangAfter { after, delay } if answered >= after => {
            tokio::time::sleep(delay).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        _ => None,
    }
}

/// The range a request asks for, as this agent (mis)understands it.
fn bounds(
    behaviour: &Behaviour,
    params: &HashMap<String, String>,
) -> Option<(Bound<String>, Bound<String>)> {
    let lower = match (params.get("skuFrom"), params.get("skuAfter")) {
        (_, Some(after)) if *behaviour == Behaviour::SkuAfterInclusive => {
            Bound::Included(after.clone())
        }
        (_, Some(after)) => Bound::Excluded(after.clone()),
        (Some(from), None) => Bound::Included(from.clone()),
        (None, None) => Bound::Unbounded,
    };
    let upper = match params.get("skuTo") {
        Some(to) if *behaviour != Behaviour::IgnoresSkuTo => Bound::Included(to.clone()),
        _ => Bound::Unbounded,
    };
    // BTreeMap::range panics on an inverted range; the contract's answer is an empty one.
    let inverted = matches!((&lower, &upper), (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u)) if l > u);
    (!inverted).then_some((lower, upper))
}

/// Up to `limit` items of a range, in this agent's order.
fn in_range(shared: &Shared, params: &HashMap<String, String>, limit: usize) -> Vec<Value> {
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let Some(range) = bounds(&behaviour, params) else {
        return Vec::new();
    };
    let catalogue = shared.catalogue.lock().unwrap();
    let items = catalogue.range(range);
    if behaviour == Behaviour::Utf16Order {
        let mut all: Vec<(&String, &Value)> = items.collect();
        all.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        return all
            .into_iter()
            .take(limit)
            .map(|(_, item)| item.clone())
            .collect();
    }
    items.take(limit).map(|(_, item)| item.clone()).collect()
}

/// `(checksum, count)` of a range, hashed in place.
fn checksum_in_range(shared: &Shared, params: &HashMap<String, String>) -> (String, usize) {
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let newline = if behaviour == Behaviour::WrongChecksumFormula {
        ""
    } else {
        "\n"
    };
    let mut hasher = Sha256::new();
    let mut count = 0;
    if let Some(range) = bounds(&behaviour, params) {
        let catalogue = shared.catalogue.lock().unwrap();
        for (sku, item) in catalogue.range(range) {
            let hash = item["contentHash"].as_str().unwrap_or("");
            hasher.update(sku.as_bytes());
            hasher.update(b":");
            hasher.update(hash.as_bytes());
            hasher.update(newline.as_bytes());
            count += 1;
        }
    }
    (hex::encode(hasher.finalize()), count)
}

async fn checksum(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(answer) = intercept(&shared, &headers, &shared.checksum_calls).await {
        return answer;
    }
    if let Behaviour::ChecksumBody(body) = shared.behaviour.lock().unwrap().clone() {
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    let (checksum, count) = checksum_in_range(&shared, &params);
    Json(json!({"checksum": checksum, "count": count})).into_response()
}

async fn list_items(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let earlier = shared.items_calls.load(Ordering::SeqCst);
    if let Some(answer) = intercept(&shared, &headers, &shared.items_calls).await {
        return answer;
    }
    match shared.behaviour.lock().unwrap().clone() {
        Behaviour::ItemsBodyAfter { after, body } if earlier >= after => {
            return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
        }
        Behaviour::HugeItems { bytes, streamed } => {
            let body = format!("{{\"items\":[],\"pad\":\"{}\"}}", "x".repeat(bytes));
            let body = if streamed {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
                    .into_bytes()
                    .chunks(64 * 1024)
                    .map(|c| Ok(c.to_vec()))
                    .collect();
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            } else {
                axum::body::Body::from(body)
            };
            return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
        }
        _ => {}
    }
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000);
    let items = in_range(&shared, &params, limit);
    shared
        .items_served
        .fetch_add(items.len() as u64, Ordering::SeqCst);
    Json(json!({ "items": items })).into_response()
}
