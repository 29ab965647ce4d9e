//! The vendor's ERP as reconciliation reads it, through its agent:
//! `GET {agentUrl}/sync/checksum` and `GET {agentUrl}/sync/items` over sku ranges
//! (docs/agent-protocol.md). Requests are signed the Standard Webhooks way; answers are read up
//! to a size cap and validated, since an agent may answer anything.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;
use standardwebhooks::Webhook;

use super::range::SkuRange;
use crate::{
    agents::client::{AgentHttp, AgentTarget, StoredSigning, transport_error},
    domain::validate_code,
    orders::{
        agent_client::{AgentCallError, call_error},
        breaker::{BreakerError, BreakerRegistry},
        response::{printable, read_bounded},
    },
};

/// The breaker `apiType` of reconciliation calls: their own, so a sick `/sync/checksum` (or a
/// burst of bisection calls timing out) never holds up order delivery, and an open orders
/// breaker does not stop a reconciliation an operator asked for.
pub const API_RECONCILIATION: &str = "reconciliation";
/// Longest `/sync/checksum` answer read.
pub const MAX_CHECKSUM_BYTES: usize = 4 * 1024;
/// Longest `/sync/items` page read (500 items of 16 KiB each).
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub enum ErpError {
    BreakerOpen,
    /// Garbage answers are `AgentCallError::BadResponse`, so the breaker counts them as the
    /// agent's ill health.
    Call(AgentCallError),
}

impl std::fmt::Display for ErpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BreakerOpen => f.write_str("circuit breaker open: the agent was not called"),
            Self::Call(AgentCallError::BadResponse(what)) => {
                write!(f, "agent answered garbage: {what}")
            }
            Self::Call(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ErpError {}

impl From<AgentCallError> for ErpError {
    fn from(error: AgentCallError) -> Self {
        Self::Call(error)
    }
}

impl ErpError {
    /// Garbage for this one request (the agent is up): only its range is given up.
    pub fn is_bad_answer(&self) -> bool {
        matches!(self, Self::Call(AgentCallError::BadResponse(_)))
    }
}

impl From<BreakerError> for ErpError {
    fn from(error: BreakerError) -> Self {
        match error {
            BreakerError::Open => Self::BreakerOpen,
            BreakerError::Call(e) => Self::Call(e),
        }
    }
}

/// `{checksum, count}` of a range, as the agent computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeChecksum {
    pub checksum: String,
    pub count: u64,
}

/// One item of an ERP listing: what comparing needs, and the record as sent, for ingest.
#[derive(Debug)]
pub struct ErpItem {
    pub sku: String,
    /// `None` when absent or not a string: ingest reports the record invalid.
    pub content_hash: Option<String>,
    pub is_active: bool,
    pub raw: Box<RawValue>,
}

/// How `agent-check` signs its requests: the `whsec_` secret an agent author gives it.
#[derive(Clone)]
pub struct Signer {
    webhook: Arc<Webhook>,
}

impl Signer {
    /// An agent's own `whsec_<base64 key>` signing secret.
    pub fn signing_secret(secret: &str) -> Result<Self, String> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or("a signing secret starts with whsec_")?;
        let webhook =
            Webhook::new(encoded).map_err(|_| "the part after whsec_ is not base64".to_owned())?;
        Ok(Self {
            webhook: Arc::new(webhook),
        })
    }

    fn sign(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        // A GET has an empty body: the signed content is "id.timestamp.".
        let signature = self
            .webhook
            .sign(&id, timestamp, b"")
            .expect("an empty body is valid UTF-8");
        request
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
    }
}

/// How a catalogue reaches its agent.
#[derive(Clone)]
enum Transport {
    /// A registered agent, in a run: the SSRF-checked client, signed with the agent's own
    /// secret (or, for an agent registered before per-agent secrets, the legacy shared one).
    Registered {
        http: AgentHttp,
        vendor_id: Arc<str>,
        agent_url: Arc<str>,
        signing: Arc<StoredSigning>,
    },
    /// `agent-check`: whatever URL the agent author points it at, signed with the secret they
    /// give (or not at all).
    Direct {
        http: reqwest::Client,
        base_url: Arc<str>,
        signer: Option<Signer>,
    },
}

/// One vendor's ERP catalogue, for one run (or one agent-check). Cheap to clone; counts calls.
#[derive(Clone)]
pub struct ErpCatalogue {
    transport: Transport,
    correlation_id: Arc<str>,
    breaker: Option<(BreakerRegistry, Arc<str>)>,
    calls: Arc<AtomicU64>,
}

impl ErpCatalogue {
    /// The catalogue of a registered agent, read over the agent-call transport.
    pub fn registered(http: AgentHttp, agent: &AgentTarget<'_>, correlation_id: &str) -> Self {
        Self::with(
            Transport::Registered {
                http,
                vendor_id: agent.vendor_id.into(),
                agent_url: agent.agent_url.into(),
                signing: Arc::new(agent.signing.clone()),
            },
            correlation_id,
        )
    }

    /// The catalogue behind any URL (agent-check), signed with `signer` when given.
    pub fn direct(
        http: reqwest::Client,
        agent_url: &str,
        signer: Option<Signer>,
        correlation_id: &str,
    ) -> Self {
        Self::with(
            Transport::Direct {
                http,
                base_url: agent_url.trim_end_matches('/').into(),
                signer,
            },
            correlation_id,
        )
    }

    fn with(transport: Transport, correlation_id: &str) -> Self {
        Self {
            transport,
            correlation_id: correlation_id.into(),
            breaker: None,
            calls: Arc::default(),
        }
    }

    /// Every call goes through the vendor's reconciliation breaker.
    pub fn through_breaker(mut self, breakers: BreakerRegistry, vendor_id: &str) -> Self {
        self.breaker = Some((breakers, vendor_id.into()));
        self
    }

    /// Calls made to the agent so far (not those a breaker refused).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `GET /sync/checksum` of a range.
    pub async fn checksum(&self, range: &SkuRange) -> Result<RangeChecksum, ErpError> {
        let this = self.clone();
        let pairs = owned_pairs(range, None);
        self.guarded(async move {
            let body = this.get("checksum", &pairs, MAX_CHECKSUM_BYTES).await?;
            parse_checksum(&body)
        })
        .await
    }

    /// `GET /sync/items` of a range, at most `limit` items: checked to be in the range, in
    /// strictly increasing bytewise order, and no more than asked for.
    pub async fn items(&self, range: &SkuRange, limit: usize) -> Result<Vec<ErpItem>, ErpError> {
        let this = self.clone();
        let pairs = owned_pairs(range, Some(limit));
        let range = range.clone();
        self.guarded(async move {
            let body = this.get("items", &pairs, MAX_PAGE_BYTES).await?;
            parse_items(&body, &range, limit)
        })
        .await
    }

    async fn guarded<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, AgentCallError>> + Send + 'static,
    ) -> Result<T, ErpError> {
        match &self.breaker {
            Some((breakers, vendor_id)) => {
                Ok(breakers.call(vendor_id, API_RECONCILIATION, call).await?)
            }
            None => Ok(call.await?),
        }
    }

    /// `GET /sync/{endpoint}` with the range's query: the answer's body when it is a 200 of
    /// at most `cap` bytes.
    async fn get(
        &self,
        endpoint: &str,
        pairs: &[(&'static str, String)],
        cap: usize,
    ) -> Result<Vec<u8>, AgentCallError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let correlation = header::HeaderValue::from_str(&self.correlation_id)
            .unwrap_or_else(|_| header::HeaderValue::from_static("reconciliation"));
        let (status, body, truncated) = match &self.transport {
            Transport::Registered {
                http,
                vendor_id,
                agent_url,
                signing,
            } => {
                let target = AgentTarget {
                    vendor_id,
                    agent_url,
                    signing,
                };
                let response = http
                    .request(&target, Method::GET, &["sync", endpoint])
                    .map_err(call_error)?
                    .query(&pairs)
                    .header(
                        header::HeaderName::from_static("x-correlation-id"),
                        correlation,
                    )
                    .header(
                        header::ACCEPT,
                        header::HeaderValue::from_static("application/json"),
                    )
                    .send(cap)
                    .await
                    .map_err(call_error)?;
                (response.status, response.body.to_vec(), response.truncated)
            }
            Transport::Direct {
                http,
                base_url,
                signer,
            } => {
                let mut url = url::Url::parse(&format!("{base_url}/sync/{endpoint}"))
                    .map_err(|e| AgentCallError::Transport(format!("invalid agent URL: {e}")))?;
                if !pairs.is_empty() {
                    url.query_pairs_mut().extend_pairs(&pairs);
                }
                let mut request = http
                    .get(url)
                    .header("x-correlation-id", correlation)
                    .header(header::ACCEPT, "application/json");
                if let Some(signer) = signer {
                    request = signer.sign(request);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| call_error(transport_error(&e)))?;
                let mut response = response;
                let status = response.status();
                let (body, truncated) = read_bounded(&mut response, cap)
                    .await
                    .map_err(|e| call_error(transport_error(&e)))?;
                (status, body, truncated)
            }
        };
        if status != StatusCode::OK {
            return Err(AgentCallError::Status {
                status: status.as_u16(),
                retry_after: None,
                // Agent text reaches events and logs: no control characters (Postgres refuses
                // NUL in text), bounded.
                body: printable(&String::from_utf8_lossy(&body), 500),
            });
        }
        if truncated {
            return Err(AgentCallError::BadResponse(format!(
                "answer larger than {cap} bytes"
            )));
        }
        Ok(body)
    }
}

fn owned_pairs(range: &SkuRange, limit: Option<usize>) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&'static str, String)> = range
        .query_pairs()
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
    if let Some(limit) = limit {
        pairs.push(("limit", limit.to_string()));
    }
    pairs
}

fn bad(message: impl Into<String>) -> AgentCallError {
    AgentCallError::BadResponse(message.into())
}

pub fn parse_checksum(body: &[u8]) -> Result<RangeChecksum, AgentCallError> {
    #[derive(Deserialize)]
    struct Answer {
        checksum: String,
        count: u64,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|_| {
        bad("checksum answer is not {\"checksum\": string, \"count\": integer ≥ 0}")
    })?;
    let well_formed = answer.checksum.len() == 64
        && answer
            .checksum
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(bad("checksum is not 64 lowercase hex digits"));
    }
    if answer.count > i64::MAX as u64 {
        return Err(bad("count out of range"));
    }
    Ok(RangeChecksum {
        checksum: answer.checksum,
        count: answer.count,
    })
}

pub fn parse_items(
    body: &[u8],
    range: &SkuRange,
    limit: usize,
) -> Result<Vec<ErpItem>, AgentCallError> {
    #[derive(Deserialize)]
    struct Page {
        items: Vec<Box<RawValue>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Keys {
        sku: String,
        content_hash: Option<serde_json::Value>,
        is_active: Option<serde_json::Value>,
    }
    let page: Page =
        serde_json::from_slice(body).map_err(|_| bad("items answer is not {\"items\": [...]}"))?;
    if page.items.len() > limit {
        return Err(bad(format!(
            "{} items returned for limit={limit}",
            page.items.len()
        )));
    }
    let mut items: Vec<ErpItem> = Vec::with_capacity(page.items.len());
    for raw in page.items {
        let keys: Keys = serde_json::from_str(raw.get())
            .map_err(|_| bad("an item is not an object with a string sku"))?;
        if validate_code(&keys.sku).is_err() {
            return Err(bad(format!(
                "invalid sku {:?}: 1-100 characters without control characters",
                printable(&keys.sku, 120)
            )));
        }
        if !range.contains(&keys.sku) {
            return Err(bad(format!("sku {:?} is outside {range}", keys.sku)));
        }
        if let Some(previous) = items.last()
            && previous.sku >= keys.sku
        {
            return Err(bad(format!(
                "skus not in strictly increasing bytewise order: {:?} then {:?}",
                previous.sku, keys.sku
            )));
        }
        items.push(ErpItem {
            sku: keys.sku,
            content_hash: match keys.content_hash {
                Some(serde_json::Value::String(hash)) => Some(hash),
                _ => None,
            },
            is_active: !matches!(keys.is_active, Some(serde_json::Value::Bool(false))),
            raw,
        });
    }
    Ok(items)
}
