//! Every replica's view of its circuit breakers, and resets that reach them all.
//!
//! Each replica keeps its own breakers (it judges an agent from its own calls) and publishes
//! what they say to Redis every [`PUBLISH_EVERY`], under a key that expires after
//! [`VIEW_TTL`]: a replica that stops (or is killed) drops out of the listing by itself. An
//! operator's reset is applied where it arrives and announced with Postgres `NOTIFY
//! erp_sync_breakers`; every replica listening resets its own breaker and republishes at once.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::{
    OrderSync,
    attempt::BREAKER_WAIT,
    breaker::{BreakerRegistry, BreakerSnapshot, ReplicaBreaker},
    delivery_queries,
    service::API_ORDERS,
};
use crate::{config::Settings, db::Redis};

/// How often a replica republishes its view.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// How long a view outlives its replica's last publication.
const VIEW_TTL: Duration = Duration::from_secs(10);
const REDIS_WAIT: Duration = Duration::from_millis(500);
pub const RESET_CHANNEL: &str = "erp_sync_breakers";

#[derive(Clone)]
pub struct BreakerViews {
    inner: Arc<Inner>,
}

struct Inner {
    registry: BreakerRegistry,
    orders: OrderSync,
    redis: Redis,
    db: PgPool,
    replica_id: String,
    /// `{REDIS_PREFIX}:breakers:replicas` (the set of publishing replicas); a view is
    /// `{REDIS_PREFIX}:breakers:replica:{id}`.
    members_key: String,
    view_prefix: String,
}

/// What a replica publishes.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishedView {
    replica_id: String,
    breakers: Vec<PublishedBreaker>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishedBreaker {
    vendor_id: String,
    api_type: String,
    #[serde(flatten)]
    view: ReplicaBreaker,
}

/// The `NOTIFY` payload of a reset.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetAnnouncement {
    origin: String,
    vendor_id: String,
    api_type: String,
}

impl BreakerViews {
    pub fn new(
        settings: &Settings,
        orders: OrderSync,
        redis: Redis,
        db: PgPool,
        replica_id: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: orders.breakers().clone(),
                orders,
                redis,
                db,
                replica_id,
                members_key: settings.redis_key("breakers:replicas"),
                view_prefix: settings.redis_key("breakers:replica"),
            }),
        }
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// Every breaker any live replica has, each with every replica's view of it; the top-level
    /// state is the worst of them and the counts are summed. This replica's view is read now,
    /// the others' as they last published it (at most [`PUBLISH_EVERY`] old). Redis
    /// unreachable: this replica's view alone.
    pub async fn merged(&self) -> Vec<BreakerSnapshot> {
        let mut views = vec![self.own_view().await];
        views.extend(self.others().await);
        let mut merged: BTreeMap<(String, String), Vec<ReplicaBreaker>> = BTreeMap::new();
        for view in views {
            for breaker in view.breakers {
                merged
                    .entry((breaker.vendor_id, breaker.api_type))
                    .or_default()
                    .push(breaker.view);
            }
        }
        merged
            .into_iter()
            .map(|((vendor_id, api_type), mut replicas)| {
                replicas.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
                let total_calls = replicas.iter().map(|r| r.total_calls).sum();
                let failure_count = replicas.iter().map(|r| r.failure_count).sum();
                let success_count = replicas.iter().map(|r| r.success_count).sum();
                let state = replicas
                    .iter()
                    .map(|r| r.state.as_str())
                    .max_by_key(|s| severity(s))
                    .map_or("CLOSED", canonical_state);
                BreakerSnapshot {
                    vendor_id,
                    api_type,
                    state,
                    total_calls,
                    failure_count,
                    success_count,
                    failure_rate: if let [only] = replicas.as_slice() {
                        only.failure_rate
                    } else if total_calls == 0 {
                        0.0
                    } else {
                        failure_count as f64 / total_calls as f64
                    },
                    ms_since_state_change: replicas
                        .iter()
                        .map(|r| r.ms_since_state_change)
                        .min()
                        .unwrap_or_default(),
                    // The first replica to probe the agent again.
                    next_probe_at: replicas.iter().filter_map(|r| r.next_probe_at).min(),
                    replicas,
                }
            })
            .collect()
    }

    /// Does any live replica (this one included) have this breaker?
    pub async fn known(&self, vendor_id: &str, api_type: &str) -> bool {
        self.merged()
            .await
            .iter()
            .any(|b| b.vendor_id == vendor_id && b.api_type == api_type)
    }

    /// How many replicas publish a view now (this one included).
    pub async fn live_replicas(&self) -> usize {
        1 + self.others().await.len()
    }

    /// Resets the breaker here and tells every other replica to; `false` when the
    /// announcement could not be made (the other replicas keep their state). The vendor's
    /// orders that waited for its `orders` breaker are due at once.
    pub async fn broadcast_reset(&self, vendor_id: &str, api_type: &str) -> bool {
        self.inner.registry.reset(vendor_id, api_type).await;
        if api_type == API_ORDERS {
            match delivery_queries::resume_waiting(&self.inner.db, vendor_id, BREAKER_WAIT).await {
                Ok(resumed) => tracing::info!(
                    vendor_id,
                    resumed,
                    "orders that waited for the breaker are due now"
                ),
                Err(error) => {
                    tracing::warn!(%error, vendor_id, "orders that wait for the breaker keep their wait")
                }
            }
            self.inner.orders.wake();
        }
        let payload = serde_json::to_string(&ResetAnnouncement {
            origin: self.inner.replica_id.clone(),
            vendor_id: vendor_id.to_owned(),
            api_type: api_type.to_owned(),
        })
        .unwrap_or_default();
        let announced = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(RESET_CHANNEL)
            .bind(payload)
            .execute(&self.inner.db)
            .await;
        self.publish().await;
        match announced {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, vendor_id, api_type, "could not announce a breaker reset to the other replicas");
                false
            }
        }
    }

    /// Handles an `erp_sync_breakers` notification from another replica.
    pub async fn on_announcement(&self, payload: &str) {
        let Ok(reset) = serde_json::from_str::<ResetAnnouncement>(payload) else {
            tracing::warn!("ignoring a malformed breaker-reset announcement");
            return;
        };
        if reset.origin == self.inner.replica_id {
            return;
        }
        if reset.api_type == API_ORDERS {
            self.inner.orders.wake();
        }
        if self
            .inner
            .registry
            .reset(&reset.vendor_id, &reset.api_type)
            .await
        {
            self.publish().await;
        }
    }

    /// Publishes this replica's view (best effort: Redis unreachable only hides it from the
    /// others' listings).
    pub async fn publish(&self) {
        let view = self.own_view().await;
        let Ok(json) = serde_json::to_string(&view) else {
            return;
        };
        let inner = &self.inner;
        let write = async {
            let mut conn = inner.redis.connection().await?;
            redis::pipe()
                .cmd("SET")
                .arg(format!("{}:{}", inner.view_prefix, inner.replica_id))
                .arg(json)
                .arg("PX")
                .arg(VIEW_TTL.as_millis() as u64)
                .ignore()
                .cmd("SADD")
                .arg(&inner.members_key)
                .arg(&inner.replica_id)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&inner.members_key)
                .arg((VIEW_TTL.as_millis() * 6) as u64)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        };
        match tokio::time::timeout(REDIS_WAIT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "could not publish the breakers' view"),
            Err(_) => tracing::debug!("publishing the breakers' view timed out"),
        }
    }

    /// Takes this replica's view out of the listing (on a clean stop).
    pub async fn withdraw(&self) {
        let inner = &self.inner;
        let remove = async {
            let mut conn = inner.redis.connection().await?;
            redis::pipe()
                .cmd("DEL")
                .arg(format!("{}:{}", inner.view_prefix, inner.replica_id))
                .ignore()
                .cmd("SREM")
                .arg(&inner.members_key)
                .arg(&inner.replica_id)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        };
        let _ = tokio::time::timeout(REDIS_WAIT, remove).await;
    }

    async fn own_view(&self) -> PublishedView {
        let replica_id = self.inner.replica_id.clone();
        let breakers = self
            .inner
            .registry
            .snapshot()
            .await
            .into_iter()
            .map(|b| PublishedBreaker {
                vendor_id: b.vendor_id,
                api_type: b.api_type,
                view: ReplicaBreaker {
                    replica_id: replica_id.clone(),
                    state: b.state.to_owned(),
                    total_calls: b.total_calls,
                    failure_count: b.failure_count,
                    success_count: b.success_count,
                    failure_rate: b.failure_rate,
                    ms_since_state_change: b.ms_since_state_change,
                    next_probe_at: b.next_probe_at,
                },
            })
            .collect();
        PublishedView {
            replica_id,
            breakers,
        }
    }

    /// The other live replicas' last published views; forgets replicas whose view expired.
    async fn others(&self) -> Vec<PublishedView> {
        let inner = &self.inner;
        let read = async {
            let mut conn = inner.redis.connection().await?;
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&inner.members_key)
                .query_async(&mut conn)
                .await?;
            let members: Vec<String> = members
                .into_iter()
                .filter(|m| *m != inner.replica_id)
                .collect();
            if members.is_empty() {
                return Ok::<_, redis::RedisError>(Vec::new());
            }
            let keys: Vec<String> = members
                .iter()
                .map(|m| format!("{}:{m}", inner.view_prefix))
                .collect();
            let views: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            let mut out = Vec::new();
            for (member, view) in members.iter().zip(views) {
                match view.and_then(|v| serde_json::from_str::<PublishedView>(&v).ok()) {
                    Some(view) => out.push(view),
                    None => {
                        let _: redis::RedisResult<()> = redis::cmd("SREM")
                            .arg(&inner.members_key)
                            .arg(member)
                            .query_async(&mut conn)
                            .await;
                    }
                }
            }
            Ok(out)
        };
        match tokio::time::timeout(REDIS_WAIT, read).await {
            Ok(Ok(views)) => views,
            Ok(Err(error)) => {
                tracing::warn!(%error, "other replicas' breakers unavailable (Redis); showing this replica's");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(
                    "other replicas' breakers unavailable (Redis too slow); showing this replica's"
                );
                Vec::new()
            }
        }
    }
}

fn severity(state: &str) -> u8 {
    match state {
        "OPEN" => 2,
        "HALF_OPEN" => 1,
        _ => 0,
    }
}

fn canonical_state(state: &str) -> &'static str {
    match state {
        "OPEN" => "OPEN",
        "HALF_OPEN" => "HALF_OPEN",
        _ => "CLOSED",
    }
}
