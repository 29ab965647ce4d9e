//! A real HTTP agent on 127.0.0.1:0 in front of a pretend ERP that dedupes on the
//! `Idempotency-Key`, as a real agent should: the first delivery of a key creates the ERP
//! order (at once, even if the answer is then slow), every later one gets the same
//! reference. It counts what it saw, and can be scripted to misbehave.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Create (or find) the ERP order, answer 200 {erpReference} after `delay`.
    Create(Duration),
    /// Create (or find) the ERP order, answer 202; the test calls back.
    Accept,
    /// Answer this status, these headers and this body; nothing is created.
    Raw(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// 200 with a body that never ends.
    Endless,
    /// Wait, then 504; nothing is created.
    Hang(Duration),
}

#[derive(Default)]
struct Erp {
    references: Mutex<HashMap<String, String>>,
    keys_by_order: Mutex<HashMap<String, HashSet<String>>>,
    webhook_ids: Mutex<HashMap<String, HashSet<String>>>,
    calls_by_order: Mutex<HashMap<String, usize>>,
    script: Mutex<VecDeque<Behaviour>>,
    fallback: Mutex<Option<Behaviour>>,
    calls: AtomicUsize,
    created: AtomicUsize,
}

pub struct ErpAgent {
    pub url: String,
    state: Arc<Erp>,
    _server: tokio::task::JoinHandle<()>,
}

impl ErpAgent {
    pub async fn start(fallback: Behaviour) -> Self {
        let state = Arc::new(Erp::default());
        *state.fallback.lock().unwrap() = Some(fallback);
        let app = Router::new()
            .route("/sync/create-order", post(create_order))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            state,
            _server: server,
        }
    }

    /// Answers `behaviour` to the next call (before the fallback).
    pub fn then(&self, behaviour: Behaviour) -> &Self {
        self.state.script.lock().unwrap().push_back(behaviour);
        self
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.state.fallback.lock().unwrap() = Some(behaviour);
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// ERP orders created (distinct idempotency keys).
    pub fn created(&self) -> usize {
        self.state.created.load(Ordering::SeqCst)
    }

    pub fn reference_of(&self, order_id: &str) -> Option<String> {
        self.state.references.lock().unwrap().get(order_id).cloned()
    }

    /// Deliveries of one order.
    pub fn calls_of(&self, order_id: &str) -> usize {
        self.state
            .calls_by_order
            .lock()
            .unwrap()
            .get(order_id)
            .copied()
            .unwrap_or(0)
    }

    /// For each `orderId` of the bodies: the idempotency keys it came with.
    pub fn keys_by_order(&self) -> HashMap<String, HashSet<String>> {
        self.state.keys_by_order.lock().unwrap().clone()
    }

    /// For each `orderId`: the `webhook-id`s it came with.
    pub fn webhook_ids_by_order(&self) -> HashMap<String, HashSet<String>> {
        self.state.webhook_ids.lock().unwrap().clone()
    }
}

async fn create_order(State(state): State<Arc<Erp>>, headers: HeaderMap, raw: Bytes) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let order_id = body["orderId"].as_str().unwrap_or_default().to_owned();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let key = header("idempotency-key");
    *state
        .calls_by_order
        .lock()
        .unwrap()
        .entry(order_id.clone())
        .or_default() += 1;
    state
        .keys_by_order
        .lock()
        .unwrap()
        .entry(order_id.clone())
        .or_default()
        .insert(key.clone());
    state
        .webhook_ids
        .lock()
        .unwrap()
        .entry(order_id)
        .or_default()
        .insert(header("webhook-id"));
    let behaviour = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| state.fallback.lock().unwrap().clone())
        .expect("a behaviour");
    let create = || {
        let mut references = state.references.lock().unwrap();
        let next = references.len() + 1;
        references
            .entry(key.clone())
            .or_insert_with(|| {
                state.created.fetch_add(1, Ordering::SeqCst);
                format!("ERP-{next}")
            })
            .clone()
    };
    match behaviour {
        Behaviour::Create(delay) => {
            let reference = create();
            tokio::time::sleep(delay).await;
            Json(json!({"erpReference": reference})).into_response()
        }
        Behaviour::Accept => {
            create();
            StatusCode::ACCEPTED.into_response()
        }
        Behaviour::Raw(status, extra, body) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in extra {
                response.headers_mut().append(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(&value).unwrap(),
                );
            }
            response
        }
        Behaviour::Endless => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream =
                futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            Response::new(Body::from_stream(stream))
        }
        Behaviour::Hang(duration) => {
            tokio::time::sleep(duration).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}
