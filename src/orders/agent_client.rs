//! Calls to the vendors' agents: `POST {agentUrl}/sync/create-order`, over the SSRF-checked
//! transport and signed with the agent's own secret the Standard Webhooks way (see
//! [`crate::agents::client`] and docs/agent-protocol.md). Every delivery of an order carries
//! the order id as `Idempotency-Key` and `webhook-id`, whichever job carries it.

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode, header};
use serde::Deserialize;

use super::response::{printable, retry_after};
use crate::{
    agents::client::{AgentHttp, AgentTarget, TransportError},
    config::Settings,
};

/// Longest agent answer read; anything longer is not an answer to create-order.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How much of an agent's answer is kept in a job's error (operators read it; it is never
/// shown to a vendor), with control characters replaced.
const ERROR_EXCERPT_BYTES: usize = 200;

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
    /// Not called at all: the agent's address, scheme or signing secret is refused.
    #[error("agent not called: {0}")]
    Refused(String),
    #[error("agent answered 200 without a usable erpReference: {0}")]
    BadResponse(String),
}

impl AgentCallError {
    /// 5xx, 401 (the agent refused our signature: its clock or its signing secret is off,
    /// which says nothing about the order), 408, 409 (the agent is still creating this order:
    /// an in-flight duplicate), 429, timeouts, connection errors, garbled answers and refused
    /// addresses are worth retrying; any other status (4xx, 3xx) is the agent refusing this
    /// order for good.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                *status >= 500 || matches!(*status, 401 | 408 | 409 | 429)
            }
            Self::Transport(_) | Self::BadResponse(_) | Self::Refused(_) => true,
        }
    }

    /// Whether the error says the agent is unwell (what opens its circuit breaker): a 409
    /// is a sane answer about one order, a permanent 4xx too, and a call refused before it
    /// was made says nothing of the agent. A 401 counts: an agent that refuses every
    /// signature opens its breaker, and its other orders then wait without spending attempts.
    pub fn is_ill_health(&self) -> bool {
        self.is_retryable() && !matches!(self, Self::Status { status: 409, .. } | Self::Refused(_))
    }

    /// Whether the agent refused erp-sync's signature (401): worth a warning to operators.
    pub fn is_signature_refusal(&self) -> bool {
        matches!(self, Self::Status { status: 401, .. })
    }

    /// Whether the agent was called at all (an attempt is spent only then).
    pub fn agent_was_called(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }

    /// What the agent asked for with `Retry-After`, if anything (already capped).
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
    http: AgentHttp,
    /// The longest `Retry-After` honoured (`ORDER_SYNC_MAX_RETRY_AFTER_SECS`).
    max_retry_after: Duration,
}

impl AgentClient {
    /// `None` without `AGENT_SECRET`: erp-sync never calls an agent unsigned.
    pub fn new(settings: &Settings) -> anyhow::Result<Option<Self>> {
        Ok(AgentHttp::new(settings)?.map(|http| Self {
            http,
            max_retry_after: settings.order_sync_max_retry_after,
        }))
    }

    pub fn http(&self) -> &AgentHttp {
        &self.http
    }

    /// `idempotency_key` is the order id: the `Idempotency-Key` and the `webhook-id` of every
    /// delivery of that order, whichever job carries it, so an agent that dedupes on either
    /// creates the ERP order once.
    pub async fn create_order(
        &self,
        agent: &AgentTarget<'_>,
        idempotency_key: &str,
        correlation_id: &str,
        body: &serde_json::Value,
    ) -> Result<CreateOrderOutcome, AgentCallError> {
        let mut request = self
            .http
            .request(agent, Method::POST, &["sync", "create-order"])
            .map_err(call_error)?
            .json(body)
            .map_err(|e| AgentCallError::BadResponse(e.to_string()))?
            .webhook_id(idempotency_key);
        for (name, value) in [
            ("x-correlation-id", correlation_id),
            ("idempotency-key", idempotency_key),
        ] {
            if let Ok(value) = header::HeaderValue::from_str(value) {
                request = request.header(header::HeaderName::from_static(name), value);
            }
        }
        let response = request
            .send(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match call_error(e) {
                AgentCallError::Transport(reason) => {
                    AgentCallError::Transport(format!("{reason} ({})", host_of(agent.agent_url)))
                }
                other => other,
            })?;
        let status = response.status;
        let retry_after = response
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now(), self.max_retry_after));
        let text = printable(
            &String::from_utf8_lossy(&response.body),
            ERROR_EXCERPT_BYTES,
        );
        match status {
            StatusCode::ACCEPTED => Ok(CreateOrderOutcome::Accepted),
            StatusCode::OK | StatusCode::CREATED if response.truncated => {
                Err(AgentCallError::BadResponse(format!(
                    "an answer longer than {MAX_RESPONSE_BYTES} bytes"
                )))
            }
            StatusCode::OK | StatusCode::CREATED => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Done {
                    erp_reference: String,
                }
                match serde_json::from_slice::<Done>(&response.body) {
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
                body: text,
            }),
        }
    }
}

/// A transport failure as the order-sync worker records it.
pub(crate) fn call_error(error: TransportError) -> AgentCallError {
    match error {
        TransportError::Refused(reason) => AgentCallError::Refused(reason),
        other => AgentCallError::Transport(other.to_string()),
    }
}

/// `host:port` of an agent URL, for error messages: never its user info, path or query.
fn host_of(agent_url: &str) -> String {
    url::Url::parse(agent_url)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_owned();
            Some(match url.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| "unparsable agent URL".into())
}

/// What `orders.erp_reference` (varchar(100)) can hold and a log line can show.
pub(crate) fn valid_reference(reference: &str) -> bool {
    !reference.trim().is_empty()
        && reference.chars().count() <= 100
        && !reference.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn connection_errors_name_the_host_and_never_credentials() {
        // Built at run time: the secrets scan reads URLs with user info in the source.
        let with_credentials = format!(
            "https://{}:{}@agent.example:8443/erp?token=fake-token",
            "fake-user", "fake-password"
        );
        assert_eq!(host_of(&with_credentials), "agent.example:8443");
        assert_eq!(host_of("http://10.0.0.5/agent"), "10.0.0.5:80");
    }
}
