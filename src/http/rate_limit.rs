//! Request rate limits shared by every replica: GCRA (the generic cell rate algorithm, as
//! governor implements it) in one Redis Lua script, so N replicas on one `REDIS_PREFIX` allow
//! one budget between them, not N. Each key holds one timestamp (the "theoretical arrival
//! time"), expires once its budget is full again, and the clock is Redis' own: replicas'
//! clocks need not agree.
//!
//! Redis unreachable (or slower than [`REDIS_WAIT`]): the request is judged by this process'
//! own limiter with the same budget instead, never refused for it and never a 500 — so while
//! Redis is down, N replicas allow up to N budgets.

use std::{
    num::NonZeroU32,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::{config::Settings, db::Redis, error::AppError};

/// Longest wait for Redis' answer before the local limiter decides.
const REDIS_WAIT: Duration = Duration::from_millis(500);
/// At most one "Redis unavailable" warning per limiter this often.
const WARN_EVERY_SECS: u64 = 60;

/// `KEYS[1]`: the bucket. `ARGV`: emission interval (ms), burst, 1 to spend / 0 to look.
/// Returns 0 when a request may pass (and, spending, records it), else the wait in ms.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
if wait > 0 then return wait end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
end
return 0
",
    )
});

pub struct RateLimits {
    /// `POST /api/agents/register` with a valid admin key, per client address.
    pub register: SharedLimiter,
    /// `POST /api/agents/register` attempts not made with a valid admin key (missing or wrong
    /// credentials, agent-token rotations: taken before the bcrypt check), per client address.
    /// A valid admin key is never refused by it, whatever others did from the same address.
    pub register_unverified: SharedLimiter,
    /// Incremental ingest, per vendor.
    pub ingest: SharedLimiter,
    /// Batch ingest, per vendor.
    pub ingest_batch: SharedLimiter,
}

impl RateLimits {
    pub fn new(settings: &Settings, redis: &Redis) -> Self {
        let limiter = |name: &str, n| {
            SharedLimiter::per_minute(
                redis.clone(),
                settings.redis_key(&format!("ratelimit:{name}")),
                n,
            )
        };
        Self {
            register: limiter("register", settings.register_rate_limit_per_min),
            register_unverified: limiter(
                "register-unverified",
                settings.register_rate_limit_per_min,
            ),
            ingest: limiter("ingest", settings.ingest_rate_limit_per_min),
            ingest_batch: limiter("ingest-batch", settings.ingest_batch_rate_limit_per_min),
        }
    }

    /// Forgets local fallback keys whose budget is full again; called periodically so memory
    /// stays bounded (Redis keys expire by themselves).
    pub fn retain_recent(&self) {
        self.register.retain_recent();
        self.register_unverified.retain_recent();
        self.ingest.retain_recent();
        self.ingest_batch.retain_recent();
    }
}

/// `n` requests a minute per key, the whole budget usable at once, shared through Redis.
#[derive(Clone)]
pub struct SharedLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    /// `{REDIS_PREFIX}:ratelimit:{name}`; a bucket is `{key_prefix}:{key}`.
    key_prefix: String,
    interval_ms: u64,
    burst: u32,
    fallback: DefaultKeyedRateLimiter<String>,
    last_warning: AtomicU64,
}

/// Why a Redis answer was not had.
enum Unshared {
    Redis(redis::RedisError),
    Slow,
}

impl SharedLimiter {
    pub fn per_minute(redis: Redis, key_prefix: String, n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: Arc::new(Inner {
                redis,
                key_prefix,
                // Rounded up: never more than `n` a minute.
                interval_ms: 60_000u64.div_ceil(u64::from(n.get())),
                burst: n.get(),
                fallback: RateLimiter::keyed(Quota::per_minute(n)),
                last_warning: AtomicU64::new(0),
            }),
        }
    }

    /// Takes one request from `key`'s budget, or says when to come back (429 + Retry-After).
    pub async fn check(&self, key: &str) -> Result<(), AppError> {
        self.judge(key, true).await
    }

    /// 429 when `key`'s budget is spent now, without spending anything.
    pub async fn peek(&self, key: &str) -> Result<(), AppError> {
        self.judge(key, false).await
    }

    async fn judge(&self, key: &str, spend: bool) -> Result<(), AppError> {
        let wait_ms = match self.shared(key, spend).await {
            Ok(wait_ms) => wait_ms,
            Err(why) => {
                self.warn(why);
                return self.local(key, spend);
            }
        };
        if wait_ms == 0 {
            Ok(())
        } else {
            Err(AppError::RateLimited {
                retry_after: Duration::from_millis(wait_ms),
            })
        }
    }

    async fn shared(&self, key: &str, spend: bool) -> Result<u64, Unshared> {
        let inner = &self.inner;
        let ask = async {
            let mut conn = inner.redis.connection().await?;
            GCRA.key(format!("{}:{key}", inner.key_prefix))
                .arg(inner.interval_ms)
                .arg(inner.burst)
                .arg(if spend { "1" } else { "0" })
                .invoke_async::<u64>(&mut conn)
                .await
        };
        match tokio::time::timeout(REDIS_WAIT, ask).await {
            Ok(Ok(wait_ms)) => Ok(wait_ms),
            Ok(Err(error)) => Err(Unshared::Redis(error)),
            Err(_) => Err(Unshared::Slow),
        }
    }

    fn local(&self, key: &str, spend: bool) -> Result<(), AppError> {
        let limiter = &self.inner.fallback;
        let key = key.to_owned();
        let verdict = if spend {
            limiter.check_key(&key)
        } else {
            // governor cannot look without spending; a look never refuses locally.
            Ok(())
        };
        verdict.map_err(|not_until| AppError::RateLimited {
            retry_after: not_until.wait_time_from(limiter.clock().now()),
        })
    }

    fn warn(&self, why: Unshared) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.inner.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) < WARN_EVERY_SECS
            || self
                .inner
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let limiter = self.inner.key_prefix.as_str();
        match why {
            Unshared::Redis(error) => {
                tracing::warn!(%error, limiter, "rate limit not shared (Redis unavailable): this replica judges alone")
            }
            Unshared::Slow => tracing::warn!(
                limiter,
                "rate limit not shared (Redis too slow): this replica judges alone"
            ),
        }
    }

    /// Forgets local fallback keys whose budget is full again.
    pub fn retain_recent(&self) {
        self.inner.fallback.retain_recent();
    }
}
