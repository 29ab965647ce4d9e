//! Alerts: what an operator must hear about without reading logs. Every alert is a `warn` log
//! line; when `SLACK_WEBHOOK_URL` is set it is also posted to Slack, in the background, at most
//! once per (type, vendor) within `ALERT_COOLDOWN_SECS` across every replica (a Redis key set
//! with NX and an expiry under `REDIS_PREFIX`).
//!
//! Raising never waits and never fails: a slow or broken Slack costs the caller nothing, and
//! a delivery that fails is logged (without the webhook URL, which is a secret) and frees the
//! cooldown so the next occurrence tries again.

use std::{sync::Arc, time::Duration};

use moka::future::Cache;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::{config::Settings, db::Redis};

/// Slack's answer, or no answer, within this.
const SLACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries in flight at once; beyond it an alert is only logged (a storm of alerts must not
/// become a storm of tasks and sockets).
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    AgentOffline,
    DlqEntriesFound,
    CircuitBreakerOpen,
    ReconciliationDrift,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentOffline => "agent_offline",
            Self::DlqEntriesFound => "dlq_entries_found",
            Self::CircuitBreakerOpen => "circuit_breaker_open",
            Self::ReconciliationDrift => "reconciliation_drift",
        }
    }
}

/// Something an operator must hear about, about one vendor.
#[derive(Debug, Clone)]
pub struct Alert {
    pub kind: AlertKind,
    pub vendor_id: String,
    pub message: String,
}

impl Alert {
    pub fn new(kind: AlertKind, vendor_id: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            vendor_id: vendor_id.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Clone)]
pub struct AlertService {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    /// `{REDIS_PREFIX}:alerts`: the cooldown keys live under it.
    key_prefix: String,
    webhook: Option<SecretString>,
    http: reqwest::Client,
    cooldown: Duration,
    /// This replica's own memory of the cooldown: spares Redis a round trip, and keeps the
    /// cooldown when Redis is unreachable.
    recent: Cache<(AlertKind, String), ()>,
    deliveries: TaskTracker,
    in_flight: Arc<Semaphore>,
}

impl AlertService {
    pub fn new(settings: &Settings, redis: Redis) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(SLACK_TIMEOUT)
            .connect_timeout(SLACK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                key_prefix: settings.redis_key("alerts"),
                webhook: settings.slack_webhook_url.clone(),
                http,
                cooldown: settings.alert_cooldown,
                recent: Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(settings.alert_cooldown)
                    .build(),
                deliveries: TaskTracker::new(),
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            }),
        })
    }

    /// Logs the alert now and, when Slack is configured, posts it in the background.
    pub fn raise(&self, alert: Alert) {
        tracing::warn!(
            alert = alert.kind.as_str(),
            vendor_id = %alert.vendor_id,
            detail = %alert.message,
            "alert"
        );
        if self.inner.webhook.is_none() {
            return;
        }
        let Ok(permit) = self.inner.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(
                alert = alert.kind.as_str(),
                vendor_id = %alert.vendor_id,
                "too many alerts in flight: this one is only logged"
            );
            return;
        };
        let this = self.clone();
        self.inner.deliveries.spawn(async move {
            let _permit = permit;
            this.deliver(&alert).await;
        });
    }

    /// Posts the alert to Slack unless it was sent within the cooldown.
    async fn deliver(&self, alert: &Alert) {
        let Some(webhook) = self.inner.webhook.as_ref() else {
            return;
        };
        let local_key = (alert.kind, alert.vendor_id.clone());
        let fresh = self
            .inner
            .recent
            .entry(local_key.clone())
            .or_insert(())
            .await
            .is_fresh();
        if !fresh || !self.claim_cooldown(alert).await {
            tracing::debug!(alert = alert.kind.as_str(), vendor_id = %alert.vendor_id, "alert already sent within the cooldown");
            return;
        }
        let text = format!(
            ":warning: erp-sync {} (vendor {}): {}",
            alert.kind.as_str(),
            alert.vendor_id,
            alert.message
        );
        let result = self
            .inner
            .http
            .post(webhook.expose_secret())
            .json(&json!({ "text": text }))
            .send()
            .await;
        // Only a 2xx is a delivery (redirects are not followed). The URL is the webhook's
        // secret: never in a log line.
        let failure = match result {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("Slack answered {}", response.status().as_u16())),
            Err(error) if error.is_timeout() => Some("timed out".to_owned()),
            Err(error) => Some(error.without_url().to_string()),
        };
        match failure {
            None => {
                tracing::debug!(alert = alert.kind.as_str(), vendor_id = %alert.vendor_id, "alert posted to Slack");
            }
            Some(error) => {
                tracing::warn!(
                    alert = alert.kind.as_str(),
                    vendor_id = %alert.vendor_id,
                    error,
                    "could not post the alert to Slack"
                );
                // Not sent: the next occurrence should try again.
                self.inner.recent.invalidate(&local_key).await;
                self.release_cooldown(alert).await;
            }
        }
    }

    fn cooldown_key(&self, alert: &Alert) -> String {
        format!(
            "{}:{}:{}",
            self.inner.key_prefix,
            alert.kind.as_str(),
            alert.vendor_id
        )
    }

    /// `true` when this replica may send: no replica sent this alert within the cooldown.
    /// An unreachable Redis does not silence alerts: this replica's own cooldown still holds.
    async fn claim_cooldown(&self, alert: &Alert) -> bool {
        let claim = async {
            let mut conn = self.inner.redis.connection().await?;
            redis::cmd("SET")
                .arg(self.cooldown_key(alert))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(self.inner.cooldown.as_secs().max(1))
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        match claim.await {
            Ok(set) => set.is_some(),
            Err(error) => {
                tracing::warn!(%error, "alert cooldown not shared (Redis unavailable); sending");
                true
            }
        }
    }

    async fn release_cooldown(&self, alert: &Alert) {
        if let Ok(mut conn) = self.inner.redis.connection().await {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(self.cooldown_key(alert))
                .query_async(&mut conn)
                .await;
        }
    }

    /// Lets deliveries in flight finish (each is bounded by the Slack timeout), at shutdown.
    pub async fn drain(&self) {
        self.inner.deliveries.close();
        let waited = tokio::time::timeout(
            SLACK_TIMEOUT + Duration::from_secs(1),
            self.inner.deliveries.wait(),
        )
        .await;
        if waited.is_err() {
            tracing::warn!("alerts still being posted at shutdown were abandoned");
        }
    }
}
