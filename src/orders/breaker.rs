//! Circuit breakers per `vendorId:apiType` (tower-resilience-circuitbreaker).
//!
//! Chosen over failsafe 1.3 because failsafe's half-open state lets every call through (a
//! burst hits a sick agent) and exposes no state or counts. This crate gives a failure-rate
//! threshold over a minimum number of calls, exactly one probe when half-open, state and
//! counts, and reset. Breakers live in each process: every replica judges an agent from its
//! own calls, which is what a breaker is for; `breaker_views` shows every replica's view and
//! carries a reset to all of them.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tower::ServiceExt;
use tower_resilience_circuitbreaker::{
    CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer, CircuitState, FailureClassifier,
    SlidingWindowType,
};
use utoipa::ToSchema;

use super::agent_client::{AgentCallError, AgentClient, CreateOrderOutcome};
use crate::{
    agents::client::{AgentTarget, StoredSigning},
    config::Settings,
    ops::alerts::{Alert, AlertKind, AlertService},
};

type Breaker = CircuitBreaker<RunCall, BreakerFailure>;

/// One create-order call, as the request the breaker's service runs. A plain struct (no trait
/// objects) keeps the futures around it provably `Send`.
pub struct CreateOrderCall {
    pub client: AgentClient,
    pub vendor_id: String,
    pub agent_url: String,
    pub signing: StoredSigning,
    /// The order id (see [`AgentClient::create_order`]).
    pub idempotency_key: String,
    pub correlation_id: String,
    pub body: serde_json::Value,
}

/// The service a breaker wraps: makes the call.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunCall;

impl tower::Service<CreateOrderCall> for RunCall {
    type Response = CreateOrderOutcome;
    type Error = AgentCallError;
    type Future =
        Pin<Box<dyn Future<Output = Result<CreateOrderOutcome, AgentCallError>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: CreateOrderCall) -> Self::Future {
        Box::pin(async move {
            let agent = AgentTarget {
                vendor_id: &call.vendor_id,
                agent_url: &call.agent_url,
                signing: &call.signing,
            };
            call.client
                .create_order(
                    &agent,
                    &call.idempotency_key,
                    &call.correlation_id,
                    &call.body,
                )
                .await
        })
    }
}

/// Any other agent call (reconciliation's reads), as a boxed future: the breaker's service
/// runs it as is, so every kind of call shares one breaker implementation.
pub struct AgentCall<T>(pub Pin<Box<dyn Future<Output = Result<T, AgentCallError>> + Send>>);

impl<T: Send + 'static> tower::Service<AgentCall<T>> for RunCall {
    type Response = T;
    type Error = AgentCallError;
    type Future = Pin<Box<dyn Future<Output = Result<T, AgentCallError>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: AgentCall<T>) -> Self::Future {
        call.0
    }
}

/// Only the agent's ill health opens a breaker: 5xx, timeouts, connection errors, 408/429.
/// A permanent 4xx, or a 409 (that order is still being created), is a sane answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct BreakerFailure;

impl<Res> FailureClassifier<Res, AgentCallError> for BreakerFailure {
    fn classify(&self, result: &Result<Res, AgentCallError>) -> bool {
        matches!(result, Err(e) if e.is_ill_health())
    }
}

#[derive(Debug)]
pub enum BreakerError {
    /// Open (or half-open with its probe already out): the call was not made.
    Open,
    Call(AgentCallError),
}

#[derive(Clone, Debug)]
struct BreakerSettings {
    failure_rate: f64,
    min_calls: usize,
    window: Duration,
    open_for: Duration,
}

/// Whether a vendor's agent may be called now, as its breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// Open: no call for `remaining`, then one probe.
    Open {
        remaining: Duration,
    },
    /// Half-open (or due to be): one probe may go.
    Probing,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    pub vendor_id: String,
    pub api_type: String,
    /// CLOSED, OPEN or HALF_OPEN.
    pub state: &'static str,
    pub total_calls: usize,
    pub failure_count: usize,
    pub success_count: usize,
    pub failure_rate: f64,
    pub ms_since_state_change: u64,
    /// While OPEN: when the next probe call may go (the breaker then lets one call through).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_probe_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Each live replica's own view of this breaker (in `GET /api/admin/circuit-breakers`;
    /// the fields above then merge them: the worst state, summed counts). Empty elsewhere.
    pub replicas: Vec<ReplicaBreaker>,
}

/// One replica's view of one breaker.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaBreaker {
    pub replica_id: String,
    /// CLOSED, OPEN or HALF_OPEN.
    pub state: String,
    pub total_calls: usize,
    pub failure_count: usize,
    pub success_count: usize,
    pub failure_rate: f64,
    pub ms_since_state_change: u64,
    /// While OPEN on this replica: when it lets its next probe call through.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_probe_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone)]
pub struct BreakerRegistry {
    breakers: Arc<Mutex<HashMap<(String, String), Breaker>>>,
    settings: BreakerSettings,
    alerts: AlertService,
}

impl BreakerRegistry {
    pub fn new(settings: &Settings, alerts: AlertService) -> Self {
        Self {
            breakers: Arc::default(),
            settings: BreakerSettings {
                failure_rate: settings.breaker_failure_rate,
                min_calls: settings.breaker_min_calls as usize,
                window: Duration::from_secs(60),
                open_for: settings.breaker_open_for,
            },
            alerts,
        }
    }

    fn build(&self, vendor_id: &str, api_type: &str) -> Breaker {
        let (vendor, api) = (vendor_id.to_owned(), api_type.to_owned());
        let alerts = self.alerts.clone();
        CircuitBreakerLayer::builder()
            .name(format!("{vendor_id}:{api_type}"))
            .failure_rate_threshold(self.settings.failure_rate)
            // Time-based: old calls age out, so a long healthy past cannot mask a sick present.
            .sliding_window_type(SlidingWindowType::TimeBased)
            .sliding_window_duration(self.settings.window)
            .minimum_number_of_calls(self.settings.min_calls)
            .wait_duration_in_open(self.settings.open_for)
            .permitted_calls_in_half_open(1)
            .on_state_transition(move |from, to| {
                tracing::warn!(vendor_id = %vendor, api_type = %api, from = ?from, to = ?to, "circuit breaker changed state");
                if to == CircuitState::Open {
                    alerts.raise(Alert::new(
                        AlertKind::CircuitBreakerOpen,
                        &vendor,
                        format!("circuit breaker {api} opened: calls to the agent are paused"),
                    ));
                }
            })
            .failure_classifier_type(BreakerFailure)
            .build()
            .expect("circuit breaker settings are validated at start-up")
            .layer_fn(RunCall)
    }

    fn get(&self, vendor_id: &str, api_type: &str) -> Breaker {
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((vendor_id.to_owned(), api_type.to_owned()))
            .or_insert_with(|| self.build(vendor_id, api_type))
            .clone()
    }

    /// Makes the call through the vendor's breaker; it is not made when the breaker is open.
    pub async fn create_order(
        &self,
        vendor_id: &str,
        api_type: &str,
        call: CreateOrderCall,
    ) -> Result<CreateOrderOutcome, BreakerError> {
        match self.get(vendor_id, api_type).oneshot(call).await {
            Ok(outcome) => Ok(outcome),
            Err(CircuitBreakerError::OpenCircuit) => Err(BreakerError::Open),
            Err(CircuitBreakerError::Inner(e)) => Err(BreakerError::Call(e)),
        }
    }

    /// Runs any agent call through the vendor's breaker for `api_type`; it is not made when
    /// the breaker is open.
    pub async fn call<T: Send + 'static>(
        &self,
        vendor_id: &str,
        api_type: &str,
        call: impl Future<Output = Result<T, AgentCallError>> + Send + 'static,
    ) -> Result<T, BreakerError> {
        match self
            .get(vendor_id, api_type)
            .oneshot(AgentCall(Box::pin(call)))
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(CircuitBreakerError::OpenCircuit) => Err(BreakerError::Open),
            Err(CircuitBreakerError::Inner(e)) => Err(BreakerError::Call(e)),
        }
    }

    /// What a call to this vendor's agent would meet now. No breaker yet: closed.
    pub async fn gate(&self, vendor_id: &str, api_type: &str) -> Gate {
        let breaker = {
            let map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&(vendor_id.to_owned(), api_type.to_owned()))
                .cloned()
        };
        let Some(breaker) = breaker else {
            return Gate::Closed;
        };
        // The state is an atomic read; the metrics walk the whole time window under the
        // breaker's lock, so they are read only when the breaker is open.
        match breaker.state_sync() {
            CircuitState::Closed => Gate::Closed,
            CircuitState::HalfOpen => Gate::Probing,
            CircuitState::Open => {
                let since = breaker.metrics().await.time_since_state_change;
                match self.settings.open_for.checked_sub(since) {
                    Some(remaining) if !remaining.is_zero() => Gate::Open { remaining },
                    _ => Gate::Probing,
                }
            }
        }
    }

    pub async fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let entries: Vec<((String, String), Breaker)> = {
            let map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(k, b)| (k.clone(), b.clone())).collect()
        };
        let mut out = Vec::with_capacity(entries.len());
        for ((vendor_id, api_type), breaker) in entries {
            let m = breaker.metrics().await;
            // Open → half-open happens lazily on the next call; report what a call would meet.
            let state = match m.state {
                CircuitState::Open if m.time_since_state_change >= self.settings.open_for => {
                    "HALF_OPEN"
                }
                CircuitState::Open => "OPEN",
                CircuitState::HalfOpen => "HALF_OPEN",
                CircuitState::Closed => "CLOSED",
            };
            out.push(BreakerSnapshot {
                vendor_id,
                api_type,
                state,
                total_calls: m.total_calls,
                failure_count: m.failure_count,
                success_count: m.success_count,
                failure_rate: m.failure_rate,
                ms_since_state_change: m.time_since_state_change.as_millis() as u64,
                replicas: Vec::new(),
                next_probe_at: (state == "OPEN").then(|| {
                    super::service::due_after(
                        self.settings
                            .open_for
                            .saturating_sub(m.time_since_state_change),
                    )
                }),
            });
        }
        out.sort_by(|a, b| (&a.vendor_id, &a.api_type).cmp(&(&b.vendor_id, &b.api_type)));
        out
    }

    /// Closes the breaker and clears its counts; `false` when this replica has no such
    /// breaker. (An operator's reset reaches the other replicas through
    /// [`super::breaker_views::BreakerViews::broadcast_reset`].)
    pub async fn reset(&self, vendor_id: &str, api_type: &str) -> bool {
        let old = {
            let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
            map.get_mut(&(vendor_id.to_owned(), api_type.to_owned()))
                .map(|slot| std::mem::replace(slot, self.build(vendor_id, api_type)))
        };
        match old {
            Some(old) => {
                old.reset().await;
                tracing::info!(vendor_id, api_type, "circuit breaker reset");
                true
            }
            None => false,
        }
    }
}
