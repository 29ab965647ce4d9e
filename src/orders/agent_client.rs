//! Calls to the vendors' agents: `POST {agentUrl}/sync/create-order`, authenticated with
//! `AGENT_SECRET`, signed the Standard Webhooks way so agents can verify and refuse replays.
//! See docs/agent-protocol.md.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use super::response::{printable, read_bounded, retry_after};
use crate::config::Settings;

/// Longest agent answer read; anything longer is not an answer to create-order.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    #[error("agent answered HTTP {status}: {body}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    #[error("agent unreachable: {0}")]
    Transport(String),
    #[error("agent answered 200 without a usable erpReference: {0}")]
    BadResponse(String),
}

impl AgentCallError {
    /// 5xx, 408, 409 (the agent is still creating this order: an in-flight duplicate), 429,
    /// timeouts, connection errors and garbled answers are worth retrying; any other status
    /// (4xx, 3xx) is the agent refusing this order for good.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || matches!(*status, 408 | 409 | 429),
            Self::Transport(_) | Self::BadResponse(_) => true,
        }
    }

    /// Whether the error says the agent is unwell (what opens its circuit breaker): a 409
    /// is a sane answer about one order, a permanent 4xx too.
    pub fn is_ill_health(&self) -> bool {
        self.is_retryable() && !matches!(self, Self::Status { status: 409, .. })
    }

    /// What the agent asked for with `Retry-After`, if anything.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOrderOutcome {
    /// 200: the ERP has the order.
    Done { erp_reference: String },
    /// 202: the agent took it and will call back.
    Accepted,
}

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    secret: SecretString,
    /// The longest `Retry-After` honoured (`ORDER_SYNC_MAX_RETRY_AFTER_SECS`).
    max_retry_after: Duration,
}

impl AgentClient {
    /// `None` without `AGENT_SECRET`: erp-sync never calls an agent unauthenticated.
    pub fn new(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let Some(secret) = settings.agent_secret.clone() else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(settings.agent_timeout)
            .connect_timeout(settings.agent_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("erp-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Self {
            http,
            secret,
            max_retry_after: settings.order_sync_max_retry_after,
        }))
    }

    /// `idempotency_key` is the order id: the `Idempotency-Key` and the `webhook-id` of every
    /// delivery of that order, whichever job carries it, so an agent that dedupes on either
    /// creates the ERP order once.
    pub async fn create_order(
        &self,
        agent_url: &str,
        idempotency_key: &str,
        correlation_id: &str,
        body: &serde_json::Value,
    ) -> Result<CreateOrderOutcome, AgentCallError> {
        let url = format!("{}/sync/create-order", agent_url.trim_end_matches('/'));
        let body =
            serde_json::to_vec(body).map_err(|e| AgentCallError::BadResponse(e.to_string()))?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let signature = sign(
            self.secret.expose_secret(),
            idempotency_key,
            timestamp,
            &body,
        );
        let mut response = self
            .http
            .post(&url)
            .bearer_auth(self.secret.expose_secret())
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-correlation-id", correlation_id)
            .header("idempotency-key", idempotency_key)
            .header("webhook-id", idempotency_key)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| AgentCallError::Transport(transport_kind(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now(), self.max_retry_after));
        let (bytes, truncated) = read_bounded(&mut response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| AgentCallError::Transport(transport_kind(&e)))?;
        drop(response); // an unread rest (of a huge body) closes the connection
        let text = String::from_utf8_lossy(&bytes);
        match status {
            StatusCode::ACCEPTED => Ok(CreateOrderOutcome::Accepted),
            StatusCode::OK | StatusCode::CREATED if truncated => Err(AgentCallError::BadResponse(
                format!("an answer longer than {MAX_RESPONSE_BYTES} bytes"),
            )),
            StatusCode::OK | StatusCode::CREATED => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Done {
                    erp_reference: String,
                }
                match serde_json::from_slice::<Done>(&bytes) {
                    Ok(done) if valid_reference(&done.erp_reference) => {
                        Ok(CreateOrderOutcome::Done {
                            erp_reference: done.erp_reference,
                        })
                    }
                    _ => Err(AgentCallError::BadResponse(printable(&text, 200))),
                }
            }
            _ => Err(AgentCallError::Status {
                status: status.as_u16(),
                retry_after,
                body: printable(&text, 500),
            }),
        }
    }
}

/// `v1,<base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))>` (Standard Webhooks).
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The kind of transport failure, without the URL (which may carry a host we should not log
/// at length) or anything from the request.
fn transport_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else if error.is_body() || error.is_decode() {
        "broken response body".into()
    } else {
        "request failed".into()
    }
}

/// What `orders.erp_reference` (varchar(100)) can hold and a log line can show.
fn valid_reference(reference: &str) -> bool {
    !reference.trim().is_empty()
        && reference.chars().count() <= 100
        && !reference.chars().any(char::is_control)
}
