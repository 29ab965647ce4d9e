//! A real HTTP agent on 127.0.0.1:0 whose answers a test scripts.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router, extract::State, http::HeaderMap, http::StatusCode, response::IntoResponse,
    routing::post,
};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 {erpReference}
    Done(String),
    /// 202: will call back
    Accepted,
    Status(u16),
    /// A status with `Retry-After: seconds`.
    RetryAfter(u16, u64),
    /// 200 {erpReference} after a delay.
    SlowDone(String, Duration),
    /// Never answers within the test's agent timeout.
    Hang(Duration),
    /// A status with this body.
    Body(u16, String),
}

#[derive(Clone, Debug)]
pub struct Call {
    pub at: std::time::Instant,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Arc<Mutex<Option<Reply>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

pub struct MockAgent {
    pub url: String,
    script: Script,
    _server: tokio::task::JoinHandle<()>,
}

impl MockAgent {
    /// Answers `fallback` once the scripted replies run out.
    pub async fn start(fallback: Reply) -> Self {
        let script = Script::default();
        *script.fallback.lock().unwrap() = Some(fallback);
        let app = Router::new()
            .route("/sync/create-order", post(create_order))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            script,
            _server: server,
        }
    }

    pub fn then(&self, reply: Reply) -> &Self {
        self.script.replies.lock().unwrap().push_back(reply);
        self
    }

    pub fn set_fallback(&self, reply: Reply) {
        *self.script.fallback.lock().unwrap() = Some(reply);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.script.calls.lock().unwrap().clone()
    }
}

async fn create_order(
    State(script): State<Script>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> impl IntoResponse {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    script.calls.lock().unwrap().push(Call {
        at: std::time::Instant::now(),
        headers,
        body,
        raw: raw.to_vec(),
    });
    let reply = script
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| script.fallback.lock().unwrap().clone());
    match reply.unwrap_or(Reply::Status(500)) {
        Reply::Done(reference) => {
            (StatusCode::OK, Json(json!({"erpReference": reference}))).into_response()
        }
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::RetryAfter(code, seconds) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", seconds.to_string())],
        )
            .into_response(),
        Reply::SlowDone(reference, delay) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, Json(json!({"erpReference": reference}))).into_response()
        }
        Reply::Hang(duration) => {
            tokio::time::sleep(duration).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::Body(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
    }
}
