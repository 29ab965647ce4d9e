//! Agent registry: registration and rotation, heartbeats, health, and token verification.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use moka::future::Cache;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use super::{
    model::{AgentHealth, AgentView, ErpType, RegisterAgent},
    queries::{self, AgentRecord, NewAgent, StatusChange},
};
use crate::{config::Settings, domain::validate_vendor_id, error::AppError};

const BCRYPT_COST: u32 = 10;
/// How long a verified token is trusted without bcrypt. Rotation and deregistration take
/// effect at once regardless: the cache key includes the stored hash.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// A wrong token is remembered briefly so a misconfigured agent hammering us costs no bcrypt.
const REJECTED_TTL: Duration = Duration::from_secs(30);

/// The vendor a request's bearer token was verified for.
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    pub vendor_id: String,
    pub agent_url: String,
    pub status: String,
}

/// Who asks for a registration: the admin, or an agent presenting a token.
pub enum RegistrationCaller<'a> {
    Admin,
    Agent { token: &'a str },
}

#[derive(Clone)]
pub struct AgentService {
    db: PgPool,
    verified: Cache<[u8; 32], ()>,
    rejected: Cache<[u8; 32], ()>,
    /// bcrypt is ~50 ms of CPU: bound how many run at once so a flood of bad tokens cannot
    /// starve the blocking pool.
    bcrypt_permits: Arc<Semaphore>,
    degraded_after: Duration,
    offline_after: Duration,
}

impl AgentService {
    pub fn new(db: PgPool, settings: &Settings) -> Self {
        Self {
            db,
            verified: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
            rejected: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REJECTED_TTL)
                .build(),
            bcrypt_permits: Arc::new(Semaphore::new(4)),
            degraded_after: settings.agent_degraded_after,
            offline_after: settings.agent_offline_after,
        }
    }

    /// Registers a vendor's agent (201 when new) or rotates its token and URL (200). Only the
    /// admin may create one; an agent may only re-register itself with its current token.
    pub async fn register(
        &self,
        request: &RegisterAgent,
        caller: RegistrationCaller<'_>,
    ) -> Result<(AgentView, bool), AppError> {
        if let RegistrationCaller::Agent { token } = caller {
            match self.verify_current_token(&request.vendor_id, token).await? {
                TokenCheck::Valid(_) => {}
                // Unknown vendor or wrong token: the same answer, so nobody learns which.
                TokenCheck::UnknownVendor | TokenCheck::Invalid => {
                    return Err(AppError::Unauthorized(
                        "registering needs the admin API key, or the vendor's current agent token to rotate it",
                    ));
                }
            }
        }
        let hash = hash_token(request.auth_token.clone()).await?;
        let (record, created) = queries::upsert(
            &self.db,
            &NewAgent {
                vendor_id: &request.vendor_id,
                agent_url: request.agent_url.as_str(),
                erp_type: request.erp_type.as_str(),
                version: request.version.as_deref(),
                auth_token_hash: &hash,
            },
        )
        .await?;
        tracing::info!(vendor_id = %record.vendor_id, created, "agent registered");
        Ok((self.view(record), created))
    }

    pub async fn heartbeat(
        &self,
        vendor_id: &str,
        version: Option<&str>,
    ) -> Result<AgentView, AppError> {
        let record = queries::update_heartbeat(&self.db, vendor_id, version)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!("no active agent for vendor {vendor_id}"))
            })?;
        Ok(self.view(record))
    }

    pub async fn deregister(&self, vendor_id: &str) -> Result<AgentView, AppError> {
        let record = queries::deregister(&self.db, vendor_id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no agent for vendor {vendor_id}")))?;
        tracing::info!(vendor_id, "agent deregistered");
        Ok(self.view(record))
    }

    pub async fn get(&self, vendor_id: &str) -> Result<AgentView, AppError> {
        let record = queries::find_by_vendor_id(&self.db, vendor_id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no agent for vendor {vendor_id}")))?;
        Ok(self.view(record))
    }

    pub async fn list(&self) -> Result<Vec<AgentView>, AppError> {
        let records = queries::find_all(&self.db).await?;
        Ok(records.into_iter().map(|r| self.view(r)).collect())
    }

    /// Demotes agents whose heartbeat is too old (degraded, then offline) and returns those
    /// whose status changed, for the scheduler and alerts.
    pub async fn check_health(&self) -> Result<Vec<StatusChange>, AppError> {
        self.check_health_at(Utc::now()).await
    }

    /// [`check_health`](Self::check_health) as of a given instant, so tests need not sleep.
    pub async fn check_health_at(&self, now: DateTime<Utc>) -> Result<Vec<StatusChange>, AppError> {
        let changes = queries::demote_stale(
            &self.db,
            now,
            chrono_duration(self.degraded_after),
            chrono_duration(self.offline_after),
        )
        .await?;
        for change in &changes {
            tracing::warn!(
                vendor_id = %change.vendor_id,
                from = %change.previous_status,
                to = %change.status,
                "agent health changed"
            );
        }
        Ok(changes)
    }

    /// Registered agents by health as of now (for `/health` and the metrics).
    pub async fn count_by_health(&self) -> Result<queries::HealthCounts, AppError> {
        Ok(queries::count_by_health(
            &self.db,
            Utc::now(),
            chrono_duration(self.degraded_after),
            chrono_duration(self.offline_after),
        )
        .await?)
    }

    /// Agents that may be called (registered, not offline as last stored), by vendor id.
    pub async fn active(&self) -> Result<Vec<AgentRecord>, AppError> {
        Ok(queries::find_active(&self.db).await?)
    }

    /// Health as of now, from the last heartbeat, whatever the last sweep stored.
    pub fn health_of(&self, record: &AgentRecord, now: DateTime<Utc>) -> AgentHealth {
        self.health_at(record.last_heartbeat, record.deregistered_at.is_some(), now)
    }

    /// Health from a last heartbeat (degraded and offline thresholds from the settings).
    pub fn health_at(
        &self,
        last_heartbeat: Option<DateTime<Utc>>,
        deregistered: bool,
        now: DateTime<Utc>,
    ) -> AgentHealth {
        if deregistered {
            return AgentHealth::Offline;
        }
        match last_heartbeat {
            None => AgentHealth::Offline,
            Some(at) => {
                let age = (now - at).to_std().unwrap_or_default();
                if age > self.offline_after {
                    AgentHealth::Offline
                } else if age > self.degraded_after {
                    AgentHealth::Degraded
                } else {
                    AgentHealth::Online
                }
            }
        }
    }

    fn view(&self, record: AgentRecord) -> AgentView {
        let health = self.health_of(&record, Utc::now());
        AgentView::from_record(record, health)
    }

    /// Verifies an agent's bearer token for `vendor_id`.
    pub async fn authenticate(
        &self,
        vendor_id: &str,
        token: &str,
    ) -> Result<AuthenticatedAgent, AppError> {
        // No query for an id no vendor can have (a NUL byte would fail in Postgres).
        if validate_vendor_id(vendor_id).is_err() {
            return Err(AppError::validation(
                "vendorId is not a valid vendor id",
                json!({ "vendorId": ["must be 1-100 characters of letters, digits, '-', '_', '.' or ':'"] }),
            ));
        }
        match self.verify_current_token(vendor_id, token).await? {
            TokenCheck::Valid(record) => Ok(AuthenticatedAgent {
                vendor_id: record.vendor_id,
                agent_url: record.agent_url,
                status: record.status,
            }),
            TokenCheck::UnknownVendor => Err(AppError::not_found(format!(
                "no agent registered for vendor {vendor_id}"
            ))),
            TokenCheck::Invalid => Err(AppError::Unauthorized(
                "invalid agent token for this vendor",
            )),
        }
    }

    async fn verify_current_token(
        &self,
        vendor_id: &str,
        token: &str,
    ) -> Result<TokenCheck, AppError> {
        let Some(record) = queries::find_by_vendor_id(&self.db, vendor_id).await? else {
            return Ok(TokenCheck::UnknownVendor);
        };
        if record.deregistered_at.is_some() {
            return Ok(TokenCheck::Invalid);
        }
        let key = cache_key(vendor_id, token, &record.auth_token_hash);
        if self.verified.contains_key(&key) {
            return Ok(TokenCheck::Valid(Box::new(record)));
        }
        if self.rejected.contains_key(&key) {
            return Ok(TokenCheck::Invalid);
        }
        let permit = self
            .bcrypt_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::Internal(e.into()))?;
        let (token, hash) = (token.to_owned(), record.auth_token_hash.clone());
        let valid = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(token, &hash).unwrap_or(false)
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
        if valid {
            self.verified.insert(key, ()).await;
            Ok(TokenCheck::Valid(Box::new(record)))
        } else {
            self.rejected.insert(key, ()).await;
            Ok(TokenCheck::Invalid)
        }
    }
}

enum TokenCheck {
    Valid(Box<AgentRecord>),
    UnknownVendor,
    Invalid,
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

async fn hash_token(token: secrecy::SecretString) -> Result<String, AppError> {
    use secrecy::ExposeSecret;
    tokio::task::spawn_blocking(move || bcrypt::hash(token.expose_secret(), BCRYPT_COST))
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(|e| AppError::Internal(e.into()))
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl ErpType {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ebp => "ebp",
            Self::Sage => "sage",
            Self::Odoo => "odoo",
            Self::Custom => "custom",
        }
    }
}
