//! Calls to the vendors' agents: `POST {agentUrl}/sync/create-order`, over the SSRF-checked
//! transport and signed with the agent's own secret the Standard Webhooks way (see
//! [`crate::agents::client`] and docs/agent-protocol.md).

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde::Deserialize;

use crate::{
    agents::client::{AgentHttp, AgentTarget, TransportError},
    config::Settings,
};

/// Longest agent answer read; anything longer is not an answer to create-order.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How much of an agent's answer is kept in a job's error (operators read it; it is never
/// shown to a vendor), with control characters removed.
const ERROR_EXCERPT_CHARS: usize = 200;

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
    /// 5xx, 408, 429, timeouts, connection errors and garbled answers are worth retrying;
    /// any other status (4xx, 3xx) is the agent refusing this order for good.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::Transport(_) | Self::BadResponse(_) | Self::Refused(_) => true,
        }
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
    http: AgentHttp,
}

impl AgentClient {
    /// `None` without `AGENT_SECRET`: erp-sync never calls an agent unsigned.
    pub fn new(settings: &Settings) -> anyhow::Result<Option<Self>> {
        Ok(AgentHttp::new(settings)?.map(|http| Self { http }))
    }

    pub fn http(&self) -> &AgentHttp {
        &self.http
    }

    pub async fn create_order(
        &self,
        agent: &AgentTarget<'_>,
        job_id: &str,
        correlation_id: &str,
        body: &serde_json::Value,
    ) -> Result<CreateOrderOutcome, AgentCallError> {
        let mut request = self
            .http
            .request(agent, Method::POST, &["sync", "create-order"])
            .map_err(call_error)?
            .json(body)
            .map_err(|e| AgentCallError::BadResponse(e.to_string()))?
            .webhook_id(job_id);
        for (name, value) in [
            ("x-correlation-id", correlation_id),
            ("idempotency-key", job_id),
        ] {
            if let Ok(value) = header::HeaderValue::from_str(value) {
                request = request.header(header::HeaderName::from_static(name), value);
            }
        }
        let response = request.send(MAX_RESPONSE_BYTES).await.map_err(call_error)?;
        let status = response.status;
        let retry_after = response
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = excerpt(&response.body);
        match status {
            StatusCode::ACCEPTED => Ok(CreateOrderOutcome::Accepted),
            StatusCode::OK | StatusCode::CREATED => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Done {
                    erp_reference: String,
                }
                match serde_json::from_slice::<Done>(&response.body) {
                    Ok(done)
                        if !response.truncated
                            && !done.erp_reference.trim().is_empty()
                            && done.erp_reference.len() <= 100 =>
                    {
                        Ok(CreateOrderOutcome::Done {
                            erp_reference: done.erp_reference,
                        })
                    }
                    _ => Err(AgentCallError::BadResponse(text)),
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

pub(crate) fn call_error(error: TransportError) -> AgentCallError {
    match error {
        TransportError::Refused(reason) => AgentCallError::Refused(reason),
        other => AgentCallError::Transport(other.to_string()),
    }
}

/// The start of an agent's answer, fit to store: control characters replaced, at most
/// [`ERROR_EXCERPT_CHARS`] characters.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(ERROR_EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(ERROR_EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}
