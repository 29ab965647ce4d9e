//! Request rate limits (governor, GCRA). Limits live in this process: with several replicas
//! each enforces its own budget, which bounds abuse per replica rather than globally.

use std::{hash::Hash, net::IpAddr, num::NonZeroU32};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::{config::Settings, error::AppError};

pub struct RateLimits {
    /// `POST /api/agents/register` with a valid admin key, per client address.
    pub register: Limiter<IpAddr>,
    /// `POST /api/agents/register` attempts not made with a valid admin key (missing or wrong
    /// credentials, agent-token rotations: taken before the bcrypt check), per client address.
    /// A valid admin key is never refused by it, whatever others did from the same address.
    pub register_unverified: Limiter<IpAddr>,
    /// Incremental ingest, per vendor.
    pub ingest: Limiter<String>,
    /// Batch ingest, per vendor.
    pub ingest_batch: Limiter<String>,
}

impl RateLimits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            register: Limiter::per_minute(settings.register_rate_limit_per_min),
            register_unverified: Limiter::per_minute(settings.register_rate_limit_per_min),
            ingest: Limiter::per_minute(settings.ingest_rate_limit_per_min),
            ingest_batch: Limiter::per_minute(settings.ingest_batch_rate_limit_per_min),
        }
    }

    /// Forgets keys whose budget is full again; called periodically so memory stays bounded.
    pub fn retain_recent(&self) {
        self.register.inner.retain_recent();
        self.register_unverified.inner.retain_recent();
        self.ingest.inner.retain_recent();
        self.ingest_batch.inner.retain_recent();
    }
}

/// `n` requests a minute, the whole budget usable at once.
pub struct Limiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: RateLimiter::keyed(Quota::per_minute(n)),
        }
    }

    /// Takes one request from `key`'s budget, or says when to come back (429 + Retry-After).
    pub fn check(&self, key: &K) -> Result<(), AppError> {
        self.inner
            .check_key(key)
            .map_err(|not_until| AppError::RateLimited {
                retry_after: not_until.wait_time_from(self.inner.clock().now()),
            })
    }
}
