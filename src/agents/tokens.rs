//! Agent bearer tokens: how they are hashed, and what a verification may cost.
//!
//! A wrong token must be cheap to refuse and must not slow real agents down, so a request
//! meets, in order: the verified cache (a working agent pays bcrypt once, then never while it
//! stays active) → the budgets of its client address and of its vendor (429 before any
//! bcrypt) → the rejected cache → a bounded bcrypt queue (503 when full) → bcrypt on the
//! blocking pool, a few at a time.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::Engine;
use moka::sync::Cache;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::{config::Settings, db::Redis, error::AppError, http::rate_limit::SharedLimiter};

const BCRYPT_COST: u32 = 10;
/// Hashes made since tokens are pre-hashed carry this marker; hashes without it are checked
/// the way they were made (plain bcrypt, which ignores bytes past the 72nd).
const PREHASHED: &str = "bcrypt-sha256:";
/// A verified token is trusted without bcrypt while it keeps being used. Rotation and
/// deregistration take effect at once regardless: the key includes the stored hash, and the
/// row is read on every request.
const VERIFIED_IDLE: Duration = Duration::from_secs(300);
/// A wrong token is remembered briefly so a misconfigured agent repeating it costs no bcrypt.
/// Attackers send new tokens each time, which is what the failure limits are for.
const REJECTED_TTL: Duration = Duration::from_secs(30);
/// How long a (vendor, address) pair that authenticated stays exempt from its vendor's
/// failure limit: a vendor under attack from elsewhere still hears from its own agent.
const KNOWN_GOOD_TTL: Duration = Duration::from_secs(24 * 3600);
const RETRY_WHEN_BUSY: Duration = Duration::from_secs(1);

/// bcrypt over base64(SHA-256(token)): 44 bytes, so every byte of a token up to 256
/// characters counts.
pub fn hash_token(token: &str) -> Result<String, bcrypt::BcryptError> {
    Ok(format!(
        "{PREHASHED}{}",
        bcrypt::hash(prehash(token), BCRYPT_COST)?
    ))
}

pub fn verify_token(token: &str, stored: &str) -> bool {
    match stored.strip_prefix(PREHASHED) {
        Some(hash) => bcrypt::verify(prehash(token), hash),
        None => bcrypt::verify(token, stored),
    }
    .unwrap_or(false)
}

fn prehash(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(token.as_bytes()))
}

/// What a request's client is judged by: its IPv4 address, or its IPv6 /64 (one host
/// commonly holds a whole /64, so single IPv6 addresses would cost an attacker nothing).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Authentication attempts the caches cannot answer, per client address and per vendor
/// (`AUTH_FAILURES_PER_MIN`, the whole budget usable at once). A unit is spent *before*
/// bcrypt, so however many requests arrive together, no more than the budget reach bcrypt; a
/// working agent's token is cached after its first success, so in practice the budget counts
/// failures. An address that authenticated for a vendor is exempt from that vendor's budget,
/// so an attack on a vendor from elsewhere does not lock its own agent out. The budgets are
/// shared by every replica through Redis (see [`SharedLimiter`]); which addresses
/// authenticated is each replica's own memory.
pub struct FailureLimits {
    clients: SharedLimiter,
    vendors: SharedLimiter,
    known_good: Cache<(String, IpAddr), ()>,
}

impl FailureLimits {
    pub fn new(settings: &Settings, redis: &Redis) -> Self {
        let per_minute = settings.auth_failures_per_min;
        Self {
            clients: SharedLimiter::per_minute(
                redis.clone(),
                settings.redis_key("ratelimit:auth-failures:client"),
                per_minute,
            ),
            vendors: SharedLimiter::per_minute(
                redis.clone(),
                settings.redis_key("ratelimit:auth-failures:vendor"),
                per_minute,
            ),
            known_good: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(KNOWN_GOOD_TTL)
                .build(),
        }
    }

    /// Spends a unit of the client's budget and, unless this client has authenticated for
    /// this vendor before, of the vendor's; 429 when either is spent.
    pub async fn take(&self, client: IpAddr, vendor_id: Option<&str>) -> Result<(), AppError> {
        self.clients.check(&client.to_string()).await?;
        if let Some(vendor_id) = vendor_id
            && !self
                .known_good
                .contains_key(&(vendor_id.to_owned(), client))
        {
            self.vendors.check(vendor_id).await?;
        }
        Ok(())
    }

    /// 429 if the client's budget is spent now, without spending anything.
    pub async fn check_client(&self, client: IpAddr) -> Result<(), AppError> {
        self.clients.peek(&client.to_string()).await
    }

    pub fn succeeded(&self, client: IpAddr, vendor_id: &str) {
        self.known_good.insert((vendor_id.to_owned(), client), ());
    }

    /// Forgets local fallback keys whose budget is full again (called periodically).
    pub fn retain_recent(&self) {
        self.clients.retain_recent();
        self.vendors.retain_recent();
    }
}

/// At most `AUTH_BCRYPT_CONCURRENCY` bcrypt runs at once and `AUTH_BCRYPT_QUEUE` requests
/// waiting for one; beyond that, 503 + `Retry-After` at once rather than an ever longer wait.
pub struct BcryptGate {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    runs: AtomicU64,
}

impl BcryptGate {
    pub fn new(concurrency: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            runs: AtomicU64::new(0),
        }
    }

    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(AppError::Overloaded {
                        message: "too many agent authentications in progress",
                        retry_after: RETRY_WHEN_BUSY,
                    });
                }
                // Decrements on every way out, a cancelled request included.
                let _waiting = Waiting(&self.waiting);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| AppError::Internal(e.into()))?
            }
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))
    }

    /// bcrypt runs started so far (tests and metrics).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Verifies tokens against stored hashes, within the limits above.
pub struct TokenVerifier {
    verified: Cache<[u8; 32], ()>,
    rejected: Cache<[u8; 32], ()>,
    limits: FailureLimits,
    gate: BcryptGate,
}

impl TokenVerifier {
    pub fn new(settings: &Settings, redis: &Redis) -> Self {
        Self {
            verified: Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(VERIFIED_IDLE)
                .build(),
            rejected: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REJECTED_TTL)
                .build(),
            limits: FailureLimits::new(settings, redis),
            gate: BcryptGate::new(settings.auth_bcrypt_concurrency, settings.auth_bcrypt_queue),
        }
    }

    /// Is `token` the one `stored_hash` was made from? `Err` when the answer must wait
    /// (429: budget spent; 503: bcrypt queue full).
    pub async fn verify(
        &self,
        vendor_id: &str,
        stored_hash: &str,
        token: &str,
        client: IpAddr,
    ) -> Result<bool, AppError> {
        let client = client_key(client);
        let key = cache_key(vendor_id, token, stored_hash);
        if self.verified.contains_key(&key) {
            self.limits.succeeded(client, vendor_id);
            return Ok(true);
        }
        self.limits.take(client, Some(vendor_id)).await?;
        if self.rejected.contains_key(&key) {
            return Ok(false);
        }
        let (token, hash) = (token.to_owned(), stored_hash.to_owned());
        let valid = self.gate.run(move || verify_token(&token, &hash)).await?;
        if valid {
            self.verified.insert(key, ());
            self.limits.succeeded(client, vendor_id);
        } else {
            self.rejected.insert(key, ());
        }
        Ok(valid)
    }

    /// A request refused without bcrypt (no agent for that vendor, or a deregistered one):
    /// it spends the client's budget all the same (probing for vendor ids is a failure).
    pub async fn refused_without_bcrypt(&self, client: IpAddr) -> Result<(), AppError> {
        self.limits.take(client_key(client), None).await
    }

    /// 429 when the client was refused lately (nothing spent).
    pub async fn check_client(&self, client: IpAddr) -> Result<(), AppError> {
        self.limits.check_client(client_key(client)).await
    }

    /// Hashes a new token (through the same bounded queue as verifications).
    pub async fn hash(&self, token: SecretString) -> Result<String, AppError> {
        self.gate
            .run(move || hash_token(token.expose_secret()))
            .await?
            .map_err(|e| AppError::Internal(e.into()))
    }

    pub fn bcrypt_runs(&self) -> u64 {
        self.gate.runs()
    }

    pub fn retain_recent(&self) {
        self.limits.retain_recent();
    }
}

/// SHA-256 over vendor, token and the stored hash: the token itself is never kept, and a new
/// hash (rotation) makes every old entry unreachable.
fn cache_key(vendor_id: &str, token: &str, stored_hash: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [vendor_id, token, stored_hash] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_of_a_long_token_counts_and_old_hashes_still_verify() {
        let token = format!("{}-tail-one", "x".repeat(80));
        let same_first_72 = format!("{}-tail-two", "x".repeat(80));
        let hash = hash_token(&token).unwrap();
        assert!(hash.starts_with(PREHASHED));
        assert!(verify_token(&token, &hash));
        assert!(!verify_token(&same_first_72, &hash));

        let legacy = bcrypt::hash("legacy-token-0123456789", 4).unwrap();
        assert!(verify_token("legacy-token-0123456789", &legacy));
        assert!(!verify_token("legacy-token-012345678", &legacy));
    }

    #[test]
    fn ipv6_clients_are_judged_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
