//! `erp-sync agent-check … --orders`: create-order checks, run against an agent in its test
//! mode (docs/agent-protocol.md §9). Every order the kit sends has an `orderId` (hence
//! `Idempotency-Key` and `webhook-id`) and skus under [`TEST_PREFIX`], which an agent in test
//! mode answers without forwarding to the ERP. Calls are signed the way erp-sync signs them
//! ([`crate::agents::signing::sign`]). For a `202` the kit listens for the callback on its
//! own small receiver and tells the agent where it is with [`CALLBACK_HEADER`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{agents::signing::sign, orders::agent_client::valid_reference};

/// The prefix of every order id, idempotency key and sku the kit sends.
pub const TEST_PREFIX: &str = "AGENT-CHECK-";
/// The erp-sync base URL an agent in test mode posts a check order's callback to
/// (`{value}/api/agents/callback`) instead of its configured one.
pub const CALLBACK_HEADER: &str = "x-agent-check-erp-sync-url";
/// Concurrent deliveries of one key in the concurrency check.
const CONCURRENT: usize = 5;
/// How far in the past the stale timestamp is (the guide's window is 5 minutes).
const STALE_SECS: i64 = 10 * 60;

/// What the order checks need from the command line.
pub struct OrderCheckConfig<'a> {
    pub http: reqwest::Client,
    pub base_url: &'a str,
    pub vendor: &'a str,
    /// The agent's signing key (the decoded `whsec_` secret).
    pub key: Vec<u8>,
    pub callback_listen: SocketAddr,
    pub callback_timeout: Duration,
}

/// The `whsec_` secret's key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(crate::agents::signing::SECRET_PREFIX)
        .ok_or("a signing secret starts with whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "the part after whsec_ is not base64".to_owned())
}

/// What one delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// 200 with a usable reference, or 202 followed by a `completed` callback.
    Reference(String),
    /// 409: the key is being created by another delivery.
    InFlight,
}

/// Callbacks received, by `jobId`.
#[derive(Default)]
struct Receiver {
    callbacks: Mutex<HashMap<String, (Value, bool)>>,
    arrived: Notify,
}

async fn callback(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > "Bearer ".len());
    let job_id = body["jobId"].as_str().unwrap_or_default().to_owned();
    let answer = json!({
        "jobId": body["jobId"],
        "status": body["status"],
        "erpReference": body["erpReference"],
    });
    receiver
        .callbacks
        .lock()
        .expect("callbacks lock")
        .insert(job_id, (body, bearer));
    receiver.arrived.notify_waiters();
    Json(answer)
}

struct Kit<'a> {
    config: &'a OrderCheckConfig<'a>,
    receiver: Arc<Receiver>,
    callback_base: String,
}

/// Runs the order checks, each pushed to `push` as `(name, outcome)`. `Err` when the callback
/// receiver cannot listen.
pub async fn run(
    config: &OrderCheckConfig<'_>,
    mut push: impl FnMut(&'static str, Result<String, String>),
) -> Result<(), String> {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind(config.callback_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.callback_listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot listen: {e}"))?;
    let app = Router::new()
        .route("/api/agents/callback", post(callback))
        .with_state(receiver.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let kit = Kit {
        config,
        receiver,
        callback_base: format!("http://{address}"),
    };
    kit.all(&mut push).await;
    server.abort();
    Ok(())
}

impl Kit<'_> {
    async fn all(&self, push: &mut impl FnMut(&'static str, Result<String, String>)) {
        // 1. A signed delivery, and for a 202 its callback.
        let key = new_key();
        let job = uuid::Uuid::new_v4().to_string();
        let body = self.order_body(&key, &job);
        let first = self.send(&key, &body, Signing::Correct).await;
        let (accepted, first_status) = match first {
            Ok((200 | 201, text)) => match reference_of(&text) {
                Some(reference) => (
                    Ok(format!("200 with erpReference {reference:?}")),
                    Some(Ok(reference)),
                ),
                None => (
                    Err(format!("200 without a usable erpReference: {text}")),
                    None,
                ),
            },
            Ok((202, _)) => (
                Ok("202: the outcome comes by callback".into()),
                Some(Err(())),
            ),
            Ok((status, text)) => (Err(not_accepted(status, &text)), None),
            Err(error) => (Err(error), None),
        };
        push("signed create-order accepted", accepted);
        let first_reference = match first_status {
            Some(Ok(reference)) => {
                push(
                    "callback posted back for a 202",
                    Ok("not needed: the agent answered 200".into()),
                );
                Some(reference)
            }
            Some(Err(())) => {
                let outcome = self.await_callback(&job).await;
                push(
                    "callback posted back for a 202",
                    outcome
                        .clone()
                        .map(|r| format!("completed with erpReference {r:?}")),
                );
                outcome.ok()
            }
            None => {
                push(
                    "callback posted back for a 202",
                    Err("no delivery was accepted".into()),
                );
                None
            }
        };

        // 2. Refusals: each with a fresh key, so a refusal is not confused with a repeat.
        for (name, signing) in [
            ("tampered body refused with 401", Signing::TamperedBody),
            ("wrong secret refused with 401", Signing::Forged),
            ("stale timestamp refused with 401", Signing::Stale),
        ] {
            let key = new_key();
            let body = self.order_body(&key, &uuid::Uuid::new_v4().to_string());
            let outcome = match self.send(&key, &body, signing).await {
                Ok((401, _)) => Ok(format!("refused with 401 ({})", signing.what())),
                Ok((status, text)) if (200..300).contains(&status) => Err(format!(
                    "answered {status} to a request with {}: signatures are not verified \
                     ({})",
                    signing.what(),
                    excerpt(&text)
                )),
                Ok((status, text)) => Err(format!(
                    "answered {status} to a request with {}, not 401: erp-sync takes any \
                     other 4xx as a permanent refusal of the order ({})",
                    signing.what(),
                    excerpt(&text)
                )),
                Err(error) => Err(error),
            };
            push(name, outcome);
        }

        // 3. The same key again, sequentially: the same answer.
        let outcome = match &first_reference {
            None => Err("no first delivery completed to repeat".into()),
            Some(reference) => {
                let job = uuid::Uuid::new_v4().to_string();
                match self.deliver(&key, &job).await {
                    Ok(Answer::Reference(again)) if &again == reference => Ok(format!(
                        "a second delivery of {key} answered the same erpReference {again:?}"
                    )),
                    Ok(Answer::Reference(again)) => Err(format!(
                        "a second delivery of {key} answered erpReference {again:?}, the \
                         first {reference:?}: the ERP order was created twice"
                    )),
                    Ok(Answer::InFlight) => Err(format!(
                        "a second delivery of {key}, after the first completed, answered 409"
                    )),
                    Err(error) => Err(format!("a second delivery of {key}: {error}")),
                }
            }
        };
        push(
            "same idempotency key twice: one order, same answer",
            outcome,
        );

        // 4. Concurrent deliveries of a new key: one order.
        let key = new_key();
        let answers = futures::future::join_all((0..CONCURRENT).map(|_| {
            let job = uuid::Uuid::new_v4().to_string();
            let key = key.clone();
            async move { self.deliver(&key, &job).await }
        }))
        .await;
        push(
            "concurrent duplicates: one order",
            concurrent(&key, &answers),
        );
    }

    /// One correctly signed delivery of `key`, to its end (a 202 waits for the callback).
    async fn deliver(&self, key: &str, job: &str) -> Result<Answer, String> {
        let body = self.order_body(key, job);
        match self.send(key, &body, Signing::Correct).await? {
            (200 | 201, text) => reference_of(&text)
                .map(Answer::Reference)
                .ok_or_else(|| format!("200 without a usable erpReference: {}", excerpt(&text))),
            (202, _) => self.await_callback(job).await.map(Answer::Reference),
            (409, _) => Ok(Answer::InFlight),
            (status, text) => Err(not_accepted(status, &text)),
        }
    }

    /// The body erp-sync sends (docs/agent-protocol.md §4), for a check order.
    fn order_body(&self, key: &str, job: &str) -> Vec<u8> {
        let body = json!({
            "jobId": job,
            "vendorId": self.config.vendor,
            "orderId": key,
            "order": {
                "id": key,
                "vendorId": self.config.vendor,
                "status": "pending",
                "totalAmount": 7.0,
                "currency": "EUR",
                "deliveryDate": null,
                "notes": "agent-check test order: never forward to the ERP",
                "createdAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "lines": [{"sku": format!("{TEST_PREFIX}SKU-1"), "quantity": 2, "unitPrice": 3.5}],
            },
        });
        serde_json::to_vec(&body).expect("a JSON value serialises")
    }

    /// Sends one create-order; `(status, body excerpt)`.
    async fn send(
        &self,
        key: &str,
        body: &[u8],
        signing: Signing,
    ) -> Result<(u16, String), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let (signed_key, timestamp, sent) = match signing {
            Signing::Correct => (self.config.key.clone(), now, body.to_vec()),
            Signing::Forged => (rand::random::<[u8; 32]>().to_vec(), now, body.to_vec()),
            Signing::Stale => (self.config.key.clone(), now - STALE_SECS, body.to_vec()),
            Signing::TamperedBody => {
                // The signed order, with its first line's quantity changed.
                let mut tampered: Value = serde_json::from_slice(body).unwrap_or_default();
                tampered["order"]["lines"][0]["quantity"] = json!(200);
                let tampered = serde_json::to_vec(&tampered).expect("a JSON value serialises");
                (self.config.key.clone(), now, tampered)
            }
        };
        let signature = sign(&signed_key, key, timestamp, body);
        let correlation = format!("agent-check-{}", uuid::Uuid::new_v4().simple());
        let response = self
            .config
            .http
            .post(format!(
                "{}/sync/create-order",
                self.config.base_url.trim_end_matches('/')
            ))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-correlation-id", correlation)
            .header("idempotency-key", key)
            .header("webhook-id", key)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(CALLBACK_HEADER, &self.callback_base)
            .body(sent)
            .send()
            .await
            .map_err(|e| format!("agent unreachable: {e}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((status, text))
    }

    /// The `completed` callback for `job`, within the callback timeout.
    async fn await_callback(&self, job: &str) -> Result<String, String> {
        let wait = async {
            loop {
                let arrived = self.receiver.arrived.notified();
                if let Some(found) = self.receiver.callbacks.lock().expect("lock").get(job) {
                    return found.clone();
                }
                arrived.await;
            }
        };
        let (body, bearer) = tokio::time::timeout(self.config.callback_timeout, wait)
            .await
            .map_err(|_| {
                format!(
                    "202 but no callback for job {job} within {} ms (posted to {}/api/agents/callback?)",
                    self.config.callback_timeout.as_millis(),
                    self.callback_base
                )
            })?;
        if !bearer {
            return Err("the callback carries no Authorization: Bearer <authToken>".into());
        }
        if body["vendorId"] != self.config.vendor {
            return Err(format!(
                "the callback names vendorId {}, not {:?}",
                body["vendorId"], self.config.vendor
            ));
        }
        if body["status"] != "completed" {
            return Err(format!(
                "the callback says status {} ({}), not \"completed\"",
                body["status"], body["error"]
            ));
        }
        match body["erpReference"].as_str() {
            Some(reference) if valid_reference(reference) => Ok(reference.to_owned()),
            _ => Err(format!(
                "the callback's erpReference {} is not 1–100 characters without control characters",
                body["erpReference"]
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Signing {
    Correct,
    TamperedBody,
    Forged,
    Stale,
}

impl Signing {
    fn what(self) -> &'static str {
        match self {
            Self::Correct => "a valid signature",
            Self::TamperedBody => "a body changed after signing",
            Self::Forged => "a signature made with another key",
            Self::Stale => "a timestamp 10 minutes old",
        }
    }
}

fn new_key() -> String {
    format!("{TEST_PREFIX}{}", uuid::Uuid::new_v4())
}

fn reference_of(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    let reference = value.get("erpReference")?.as_str()?;
    valid_reference(reference).then(|| reference.to_owned())
}

fn not_accepted(status: u16, text: &str) -> String {
    let hint = if status == 401 {
        " (the signature was refused: is --signing-secret the agent's?)"
    } else if (400..500).contains(&status) {
        " (is the agent in its test mode? see docs/agent-protocol.md §9)"
    } else {
        ""
    };
    format!(
        "answered {status} to a correctly signed delivery{hint}: {}",
        excerpt(text)
    )
}

fn concurrent(key: &str, answers: &[Result<Answer, String>]) -> Result<String, String> {
    if let Some(error) = answers.iter().find_map(|a| a.as_ref().err()) {
        return Err(format!("a concurrent delivery of {key}: {error}"));
    }
    let mut references: Vec<&str> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(Answer::Reference(r)) => Some(r.as_str()),
            _ => None,
        })
        .collect();
    references.sort_unstable();
    references.dedup();
    match references.as_slice() {
        [] => Err(format!(
            "none of {CONCURRENT} concurrent deliveries of {key} produced an erpReference"
        )),
        [one] => Ok(format!(
            "{CONCURRENT} concurrent deliveries of {key}: one erpReference {one:?}"
        )),
        many => Err(format!(
            "{CONCURRENT} concurrent deliveries of {key} gave {} different erpReferences \
             ({}): the ERP order was created more than once",
            many.len(),
            many.join(", ")
        )),
    }
}

fn excerpt(text: &str) -> String {
    crate::orders::response::printable(text, 200)
}
