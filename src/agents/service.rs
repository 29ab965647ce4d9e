//! Agent registry: registration and rotation, heartbeats, health, and token verification.

use std::{net::IpAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    address::AddressPolicy,
    client::StoredSigning,
    model::{AgentHealth, AgentView, ErpType, RegisterAgent, RegisteredAgent},
    queries::{self, AgentRecord, NewAgent, StatusChange},
    signing::{self, Sealer},
    tokens::TokenVerifier,
};
use crate::{config::Settings, db::Redis, domain::validate_vendor_id, error::AppError};

const REGISTRATION_REFUSED: &str =
    "registering needs the admin API key, or the vendor's current agent token to rotate it";

/// The vendor a request's bearer token was verified for.
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    pub vendor_id: String,
    pub agent_url: String,
    pub status: String,
}

/// Who asks for a registration: the admin, or an agent presenting a token from an address.
pub enum RegistrationCaller<'a> {
    Admin,
    Agent { token: &'a str, client: IpAddr },
}

#[derive(Clone)]
pub struct AgentService {
    db: PgPool,
    tokens: Arc<TokenVerifier>,
    /// Unauthenticated body bytes beyond the per-request window, held by all requests at once
    /// (permits are bytes).
    preauth_budget: Arc<Semaphore>,
    /// `None` without `AGENT_SECRET`: no signing secret can be sealed, so nothing registers.
    sealer: Option<Sealer>,
    policy: AddressPolicy,
    degraded_after: Duration,
    offline_after: Duration,
}

impl AgentService {
    pub fn new(db: PgPool, settings: &Settings, redis: &Redis) -> Self {
        Self {
            db,
            tokens: Arc::new(TokenVerifier::new(settings, redis)),
            preauth_budget: Arc::new(Semaphore::new(settings.agent_preauth_budget_bytes)),
            sealer: Sealer::from_settings(settings),
            policy: AddressPolicy::from_settings(settings),
            degraded_after: settings.agent_degraded_after,
            offline_after: settings.agent_offline_after,
        }
    }

    /// Registers a vendor's agent (201 when new) or rotates its token and signing secret
    /// (200); either way the answer carries the new `signingSecret`, once. Only the admin may
    /// create an agent or change its URL; an agent may only rotate itself, with its current
    /// token.
    pub async fn register(
        &self,
        request: &RegisterAgent,
        caller: RegistrationCaller<'_>,
    ) -> Result<(RegisteredAgent, bool), AppError> {
        let sealer = self.sealer.as_ref().ok_or_else(|| {
            AppError::Unavailable(
                "AGENT_SECRET is not configured: agents cannot be given a signing secret".into(),
            )
        })?;
        // The caller is known before anything costs: DNS, bcrypt of the new token.
        let rotating = match caller {
            RegistrationCaller::Admin => None,
            RegistrationCaller::Agent { token, client } => {
                match self
                    .verify_current_token(&request.vendor_id, token, client)
                    .await?
                {
                    TokenCheck::Valid(record) => Some(record),
                    // Unknown vendor or wrong token: the same answer, so nobody learns which.
                    TokenCheck::UnknownVendor | TokenCheck::Invalid => {
                        return Err(AppError::Unauthorized(REGISTRATION_REFUSED));
                    }
                }
            }
        };
        let agent_url = self.check_agent_url(&request.agent_url).await?;
        if let Some(current) = &rotating
            && normalized(&current.agent_url) != agent_url
        {
            return Err(AppError::Forbidden(
                "changing agentUrl needs the admin API key",
            ));
        }
        let hash = self.tokens.hash(request.auth_token.clone()).await?;
        let secret = signing::generate_secret();
        let sealed = sealer.seal(&request.vendor_id, &secret.key);
        let agent = NewAgent {
            vendor_id: &request.vendor_id,
            agent_url: &agent_url,
            erp_type: request.erp_type.as_str(),
            version: request.version.as_deref(),
            auth_token_hash: &hash,
            signing_secret_sealed: &sealed,
        };
        let (record, created) = match &rotating {
            None => queries::upsert(&self.db, &agent).await?,
            Some(current) => {
                let record = queries::rotate(&self.db, &agent, &current.auth_token_hash)
                    .await?
                    // Rotated or deregistered meanwhile: the token proved is no longer current.
                    .ok_or(AppError::Unauthorized(REGISTRATION_REFUSED))?;
                (record, false)
            }
        };
        tracing::info!(vendor_id = %record.vendor_id, created, "agent registered; signing secret issued");
        Ok((
            RegisteredAgent {
                agent: self.view(record),
                signing_secret: secret.whsec.expose_secret().to_owned(),
            },
            created,
        ))
    }

    /// The URL as it will be stored (normalised), if this deployment may call it.
    async fn check_agent_url(&self, raw: &str) -> Result<String, AppError> {
        let refused = |reason: String| {
            AppError::validation(
                format!("agentUrl refused: {reason}"),
                json!({ "agentUrl": [reason] }),
            )
        };
        let url = url::Url::parse(raw).map_err(|e| refused(e.to_string()))?;
        self.policy
            .check_registration(&url)
            .await
            .map_err(|e| refused(e.0))?;
        Ok(url.into())
    }

    /// Re-seals every signing secret still sealed under `AGENT_SECRET_PREVIOUS` with the
    /// current `AGENT_SECRET` (start-up, after a master-secret rotation); returns how many
    /// agents changed. Secrets that open under neither are left for an operator (logged).
    pub async fn reseal_signing_secrets(&self) -> Result<u64, AppError> {
        let Some(sealer) = &self.sealer else {
            return Ok(0);
        };
        let mut changed = 0;
        for record in queries::find_all(&self.db).await? {
            let read = &record.signing;
            let stale =
                |sealed: &Option<Vec<u8>>| sealed.as_deref().is_some_and(|s| sealer.is_stale(s));
            if !stale(&read.signing_secret_sealed) && !stale(&read.previous_signing_secret_sealed) {
                continue;
            }
            let reseal = |sealed: &Option<Vec<u8>>| -> Result<Option<Vec<u8>>, signing::SealError> {
                match sealed {
                    Some(s) if sealer.is_stale(s) => {
                        let key = sealer.open(&record.vendor_id, s)?;
                        Ok(Some(sealer.seal(&record.vendor_id, &key)))
                    }
                    other => Ok(other.clone()),
                }
            };
            let resealed = match (
                reseal(&read.signing_secret_sealed),
                reseal(&read.previous_signing_secret_sealed),
            ) {
                (Ok(current), Ok(previous)) => StoredSigning {
                    signing_secret_sealed: current,
                    previous_signing_secret_sealed: previous,
                    previous_signing_secret_expires_at: read.previous_signing_secret_expires_at,
                },
                (Err(error), _) | (_, Err(error)) => {
                    tracing::error!(vendor_id = %record.vendor_id, %error, "cannot re-seal the agent's signing secret; rotate the agent");
                    continue;
                }
            };
            if queries::reseal(&self.db, &record.vendor_id, read, &resealed).await? {
                changed += 1;
            }
        }
        if changed > 0 {
            tracing::info!(
                agents = changed,
                "signing secrets re-sealed under the current AGENT_SECRET"
            );
        }
        Ok(changed)
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
        client: IpAddr,
    ) -> Result<AuthenticatedAgent, AppError> {
        // No query for an id no vendor can have (a NUL byte would fail in Postgres).
        if validate_vendor_id(vendor_id).is_err() {
            return Err(AppError::validation(
                "vendorId is not a valid vendor id",
                json!({ "vendorId": ["must be 1-100 characters of letters, digits, '-', '_', '.' or ':'"] }),
            ));
        }
        match self.verify_current_token(vendor_id, token, client).await? {
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

    /// Takes `bytes` of the process-wide budget of unauthenticated body bytes, for as long
    /// as the permit lives; 503 + `Retry-After` when it is spent.
    pub fn hold_unauthenticated(&self, bytes: usize) -> Result<OwnedSemaphorePermit, AppError> {
        u32::try_from(bytes)
            .ok()
            .and_then(|n| self.preauth_budget.clone().try_acquire_many_owned(n).ok())
            .ok_or(AppError::Overloaded {
                message: "too many unauthenticated request bytes in flight",
                retry_after: Duration::from_secs(1),
            })
    }

    /// 429 when this client has spent its failed-authentication budget: checked before
    /// reading more of its body.
    pub async fn check_client(&self, client: IpAddr) -> Result<(), AppError> {
        self.tokens.check_client(client).await
    }

    /// bcrypt verifications started so far (tests, metrics).
    pub fn bcrypt_runs(&self) -> u64 {
        self.tokens.bcrypt_runs()
    }

    /// Forgets failure budgets that are full again (called periodically).
    pub fn retain_recent(&self) {
        self.tokens.retain_recent();
    }

    async fn verify_current_token(
        &self,
        vendor_id: &str,
        token: &str,
        client: IpAddr,
    ) -> Result<TokenCheck, AppError> {
        let Some(record) = queries::find_by_vendor_id(&self.db, vendor_id).await? else {
            self.tokens.refused_without_bcrypt(client).await?;
            return Ok(TokenCheck::UnknownVendor);
        };
        if record.deregistered_at.is_some() {
            self.tokens.refused_without_bcrypt(client).await?;
            return Ok(TokenCheck::Invalid);
        }
        if self
            .tokens
            .verify(vendor_id, &record.auth_token_hash, token, client)
            .await?
        {
            Ok(TokenCheck::Valid(Box::new(record)))
        } else {
            Ok(TokenCheck::Invalid)
        }
    }
}

enum TokenCheck {
    Valid(Box<AgentRecord>),
    UnknownVendor,
    Invalid,
}

/// A URL as [`AgentService::check_agent_url`] stores it (older rows may be stored raw).
fn normalized(raw: &str) -> String {
    url::Url::parse(raw).map_or_else(|_| raw.to_owned(), String::from)
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
