//! Calls to agents, for any feature (order sync, reconciliation): SSRF-checked transport and
//! per-agent Standard Webhooks signatures. A feature builds a request with
//! [`AgentHttp::request`], adds a query, headers or a JSON body, and sends it:
//!
//! ```text
//! let response = http
//!     .request(&agent, Method::GET, &["sync", "checksum"])?
//!     .query(&[("skuFrom", "A"), ("skuTo", "M")])
//!     .send(MAX_ANSWER_BYTES)
//!     .await?;
//! ```
//!
//! Paths are joined segment by segment onto the agent's URL (never concatenated, so nothing
//! in them can reach another path); the URL's scheme and IP-literal host are checked before
//! each call and every resolved address at connect time (see [`super::address`]); no proxy,
//! no redirects; the answer's body is read up to a cap and no further.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, header};
use secrecy::SecretString;
use serde::Serialize;
use url::Url;

use super::{
    address::{AddressPolicy, AddressRefused, CheckedResolver},
    signing::{SealError, Sealer, SigningKeys},
};
use crate::config::Settings;

/// How long a rotated-out signing secret still signs (beside the new one).
pub const ROTATION_GRACE: chrono::Duration = chrono::Duration::hours(24);

/// What erp-sync stores of an agent's signing secrets (`agent_registry` columns), sealed.
#[derive(Clone, Default, sqlx::FromRow)]
pub struct StoredSigning {
    pub signing_secret_sealed: Option<Vec<u8>>,
    pub previous_signing_secret_sealed: Option<Vec<u8>>,
    pub previous_signing_secret_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigning")
            .field("own_secret", &self.signing_secret_sealed.is_some())
            .field("previous_until", &self.previous_signing_secret_expires_at)
            .finish()
    }
}

/// The agent a call goes to.
#[derive(Debug, Clone, Copy)]
pub struct AgentTarget<'a> {
    pub vendor_id: &'a str,
    pub agent_url: &'a str,
    pub signing: &'a StoredSigning,
}

/// Why a call did not produce an answer. Messages name the kind of failure, never the URL or
/// anything of the request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Not sent: the address, the scheme or the agent's signing secret is not acceptable.
    #[error("agent not called: {0}")]
    Refused(String),
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Connect,
    #[error("broken response body")]
    Body,
    #[error("request failed")]
    Other,
}

/// An agent's answer: status, headers and at most the requested number of body bytes.
#[derive(Debug)]
pub struct AgentResponse {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: Bytes,
    /// The agent sent more than the cap; `body` holds the first bytes only.
    pub truncated: bool,
}

#[derive(Clone)]
pub struct AgentHttp {
    client: reqwest::Client,
    policy: AddressPolicy,
    sealer: Sealer,
    shared_secret: SecretString,
}

impl AgentHttp {
    /// `None` without `AGENT_SECRET`: erp-sync never calls an agent unsigned.
    pub fn new(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let (Some(sealer), Some(shared_secret)) = (
            Sealer::from_settings(settings),
            settings.agent_secret.clone(),
        ) else {
            return Ok(None);
        };
        let policy = AddressPolicy::from_settings(settings);
        let client = reqwest::Client::builder()
            .timeout(settings.agent_timeout)
            .connect_timeout(settings.agent_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the agent's name itself, out of the resolver's sight.
            .no_proxy()
            .dns_resolver(CheckedResolver::new(policy))
            .user_agent(concat!("erp-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Self {
            client,
            policy,
            sealer,
            shared_secret,
        }))
    }

    /// A request to `path` (segments) under the agent's URL, signed with the agent's keys
    /// when sent. Refused here if the URL's scheme or IP-literal host is not allowed.
    pub fn request(
        &self,
        agent: &AgentTarget<'_>,
        method: Method,
        path: &[&str],
    ) -> Result<SignedRequest, TransportError> {
        let url = endpoint(agent.agent_url, path)?;
        self.policy
            .check_url(&url)
            .map_err(|e| TransportError::Refused(e.0))?;
        let keys = self
            .keys_of(agent)
            .map_err(|e| TransportError::Refused(e.to_string()))?;
        Ok(SignedRequest {
            client: self.client.clone(),
            method,
            url,
            keys,
            headers: header::HeaderMap::new(),
            body: Vec::new(),
            webhook_id: None,
        })
    }

    fn keys_of(&self, agent: &AgentTarget<'_>) -> Result<SigningKeys, SealError> {
        let signing = agent.signing;
        let Some(current) = &signing.signing_secret_sealed else {
            return Ok(SigningKeys::Legacy(self.shared_secret.clone()));
        };
        let current = self.sealer.open(agent.vendor_id, current)?;
        let in_grace = signing
            .previous_signing_secret_expires_at
            .is_some_and(|until| until > Utc::now());
        let previous = match &signing.previous_signing_secret_sealed {
            // A previous secret that no longer opens is dropped rather than failing the call:
            // the current one is what the agent should hold.
            Some(sealed) if in_grace => self.sealer.open(agent.vendor_id, sealed).ok(),
            _ => None,
        };
        Ok(SigningKeys::Own { current, previous })
    }
}

/// `agent_url` + path segments. The stored URL has no query or fragment (registration refuses
/// them); one found anyway is dropped rather than sent.
fn endpoint(agent_url: &str, path: &[&str]) -> Result<Url, TransportError> {
    let mut url = Url::parse(agent_url)
        .map_err(|_| TransportError::Refused("agentUrl is not a valid URL".into()))?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|_| TransportError::Refused("agentUrl cannot take a path".into()))?
        .pop_if_empty()
        .extend(path);
    Ok(url)
}

/// A request being built; signed and sent by [`send`](Self::send).
pub struct SignedRequest {
    client: reqwest::Client,
    method: Method,
    url: Url,
    keys: SigningKeys,
    headers: header::HeaderMap,
    body: Vec<u8>,
    webhook_id: Option<String>,
}

impl SignedRequest {
    /// Query parameters, encoded (never spliced into the URL as text).
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        self.url.query_pairs_mut().extend_pairs(pairs);
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: header::HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, serde_json::Error> {
        self.body = serde_json::to_vec(body)?;
        self.headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        Ok(self)
    }

    /// `webhook-id`: what agents dedupe on. Random per request unless set.
    pub fn webhook_id(mut self, id: impl Into<String>) -> Self {
        self.webhook_id = Some(id.into());
        self
    }

    /// Signs and sends; reads at most `max_body` bytes of the answer.
    pub async fn send(self, max_body: usize) -> Result<AgentResponse, TransportError> {
        let id = self
            .webhook_id
            .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let signature = self.keys.signature(&id, timestamp, &self.body);
        let mut request = self
            .client
            .request(self.method, self.url)
            .headers(self.headers)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
        if let Some(bearer) = self.keys.legacy_bearer() {
            request = request.bearer_auth(bearer);
        }
        let mut response = request
            .body(self.body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
            let room = max_body - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break; // dropping the response closes the connection: the rest is never read
            }
            body.extend_from_slice(&chunk);
        }
        Ok(AgentResponse {
            status,
            headers,
            body: Bytes::from(body),
            truncated,
        })
    }
}

pub(crate) fn transport_error(error: &reqwest::Error) -> TransportError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<AddressRefused>() {
            return TransportError::Refused(refused.0.clone());
        }
        source = cause.source();
    }
    if error.is_timeout() {
        TransportError::Timeout
    } else if error.is_connect() {
        TransportError::Connect
    } else if error.is_body() || error.is_decode() {
        TransportError::Body
    } else {
        TransportError::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_by_segment_and_queries_never_survive() {
        for (base, expected) in [
            (
                "https://a.example.com",
                "https://a.example.com/sync/create-order",
            ),
            (
                "https://a.example.com/",
                "https://a.example.com/sync/create-order",
            ),
            (
                "https://a.example.com/erp",
                "https://a.example.com/erp/sync/create-order",
            ),
            (
                "https://a.example.com/erp/",
                "https://a.example.com/erp/sync/create-order",
            ),
            (
                "http://10.0.0.5:8080/admin/reset?x=",
                "http://10.0.0.5:8080/admin/reset/sync/create-order",
            ),
        ] {
            let url = endpoint(base, &["sync", "create-order"]).unwrap();
            assert_eq!(url.as_str(), expected);
        }
        let url = endpoint("https://a.example.com", &["sync", "../admin", "?x"]).unwrap();
        assert_eq!(url.as_str(), "https://a.example.com/sync/..%2Fadmin/%3Fx");
    }
}
