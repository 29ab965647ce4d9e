//! `agent_registry` repository: set-based SQL, one statement per operation.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::client::{ROTATION_GRACE, StoredSigning};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRecord {
    pub id: Uuid,
    pub vendor_id: String,
    pub agent_url: String,
    pub erp_type: String,
    pub status: String,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub version: Option<String>,
    pub auth_token_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deregistered_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    pub signing: StoredSigning,
}

pub struct NewAgent<'a> {
    pub vendor_id: &'a str,
    pub agent_url: &'a str,
    pub erp_type: &'a str,
    pub version: Option<&'a str>,
    pub auth_token_hash: &'a str,
    pub signing_secret_sealed: &'a [u8],
}

const COLUMNS: &str = "id, vendor_id, agent_url, erp_type, status, last_heartbeat, version, \
                       auth_token_hash, created_at, updated_at, deregistered_at, \
                       signing_secret_sealed, previous_signing_secret_sealed, \
                       previous_signing_secret_expires_at";

/// The secret being replaced keeps signing, beside the new one, for [`ROTATION_GRACE`];
/// a legacy agent (no secret of its own) has nothing to keep.
const ROTATE_SIGNING_SECRET: &str = "
    previous_signing_secret_sealed = agent_registry.signing_secret_sealed,
    previous_signing_secret_expires_at =
        CASE WHEN agent_registry.signing_secret_sealed IS NULL THEN NULL ELSE now() + $7 END";

/// Inserts or replaces the agent of a vendor (the admin's registration); `true` when the row
/// is new. Re-registering clears a deregistration and rotates the signing secret; the status
/// stays as the heartbeats make it.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    agent: &NewAgent<'_>,
) -> sqlx::Result<(AgentRecord, bool)> {
    let sql = format!(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, version, auth_token_hash, signing_secret_sealed)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (vendor_id) DO UPDATE SET
             agent_url = excluded.agent_url,
             erp_type = excluded.erp_type,
             version = COALESCE(excluded.version, agent_registry.version),
             auth_token_hash = excluded.auth_token_hash,
             signing_secret_sealed = excluded.signing_secret_sealed,
             {ROTATE_SIGNING_SECRET},
             deregistered_at = NULL,
             updated_at = now()
         RETURNING {COLUMNS}, (xmax = 0) AS inserted"
    );
    let row: AgentWithInserted = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(agent.vendor_id)
        .bind(agent.agent_url)
        .bind(agent.erp_type)
        .bind(agent.version)
        .bind(agent.auth_token_hash)
        .bind(agent.signing_secret_sealed)
        .bind(ROTATION_GRACE)
        .fetch_one(db)
        .await?;
    Ok((row.agent, row.inserted))
}

/// An agent rotating its own token (and signing secret): only while the token it proved is
/// still the current one and the agent is not deregistered, so a rotation racing another
/// rotation or a deregistration changes nothing. The URL is not the agent's to change.
/// `None` when the condition no longer holds.
pub async fn rotate(
    db: impl PgExecutor<'_>,
    agent: &NewAgent<'_>,
    verified_hash: &str,
) -> sqlx::Result<Option<AgentRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE agent_registry SET
             erp_type = $2,
             version = COALESCE($3, version),
             auth_token_hash = $4,
             signing_secret_sealed = $6,
             {ROTATE_SIGNING_SECRET},
             updated_at = now()
         WHERE vendor_id = $1 AND auth_token_hash = $5 AND deregistered_at IS NULL
         RETURNING {COLUMNS}"
    )))
    .bind(agent.vendor_id)
    .bind(agent.erp_type)
    .bind(agent.version)
    .bind(agent.auth_token_hash)
    .bind(verified_hash)
    .bind(agent.signing_secret_sealed)
    .bind(ROTATION_GRACE)
    .fetch_optional(db)
    .await
}

/// Replaces sealed signing secrets (master-secret rotation), only if they are still the
/// values read: a registration in between wins.
pub async fn reseal(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    read: &StoredSigning,
    resealed: &StoredSigning,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE agent_registry
         SET signing_secret_sealed = $4, previous_signing_secret_sealed = $5
         WHERE vendor_id = $1
           AND signing_secret_sealed IS NOT DISTINCT FROM $2
           AND previous_signing_secret_sealed IS NOT DISTINCT FROM $3",
    )
    .bind(vendor_id)
    .bind(&read.signing_secret_sealed)
    .bind(&read.previous_signing_secret_sealed)
    .bind(&resealed.signing_secret_sealed)
    .bind(&resealed.previous_signing_secret_sealed)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(sqlx::FromRow)]
struct AgentWithInserted {
    #[sqlx(flatten)]
    agent: AgentRecord,
    inserted: bool,
}

pub async fn find_by_vendor_id(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
) -> sqlx::Result<Option<AgentRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agent_registry WHERE vendor_id = $1"
    )))
    .bind(vendor_id)
    .fetch_optional(db)
    .await
}

pub async fn find_all(db: &PgPool) -> sqlx::Result<Vec<AgentRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agent_registry ORDER BY vendor_id"
    )))
    .fetch_all(db)
    .await
}

/// Agents that may be called: registered and not offline.
pub async fn find_active(db: &PgPool) -> sqlx::Result<Vec<AgentRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agent_registry
         WHERE deregistered_at IS NULL AND status <> 'offline' ORDER BY vendor_id"
    )))
    .fetch_all(db)
    .await
}

/// Records a heartbeat; `None` when the vendor has no active agent.
pub async fn update_heartbeat(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
    version: Option<&str>,
) -> sqlx::Result<Option<AgentRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE agent_registry
         SET last_heartbeat = now(), status = 'online',
             version = COALESCE($2, version), updated_at = now()
         WHERE vendor_id = $1 AND deregistered_at IS NULL
         RETURNING {COLUMNS}"
    )))
    .bind(vendor_id)
    .bind(version)
    .fetch_optional(db)
    .await
}

/// A status change made by [`demote_stale`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatusChange {
    pub vendor_id: String,
    pub previous_status: String,
    pub status: String,
}

/// Moves every agent whose heartbeat is too old one way only (online → degraded → offline)
/// in one statement, and returns what changed. A heartbeat is the only way back up.
pub async fn demote_stale(
    db: &PgPool,
    now: DateTime<Utc>,
    degraded_after: chrono::Duration,
    offline_after: chrono::Duration,
) -> sqlx::Result<Vec<StatusChange>> {
    sqlx::query_as(
        "WITH computed AS (
             SELECT id, status AS previous_status,
                    CASE WHEN last_heartbeat IS NULL OR last_heartbeat < $1 THEN 'offline'
                         WHEN last_heartbeat < $2 THEN 'degraded'
                         ELSE 'online' END AS status
             FROM agent_registry
             WHERE deregistered_at IS NULL
             FOR UPDATE
         )
         UPDATE agent_registry a
         SET status = c.status, updated_at = now()
         FROM computed c
         WHERE a.id = c.id
           AND (c.status = 'offline' AND c.previous_status <> 'offline'
                OR c.status = 'degraded' AND c.previous_status = 'online')
         RETURNING a.vendor_id, c.previous_status, a.status",
    )
    .bind(now - offline_after)
    .bind(now - degraded_after)
    .fetch_all(db)
    .await
}

/// Soft removal: offline, token refused until an admin registers the agent again.
pub async fn deregister(
    db: impl PgExecutor<'_>,
    vendor_id: &str,
) -> sqlx::Result<Option<AgentRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE agent_registry
         SET status = 'offline', deregistered_at = COALESCE(deregistered_at, now()), updated_at = now()
         WHERE vendor_id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(vendor_id)
    .fetch_optional(db)
    .await
}

/// Registered agents by health as of `now`, from their last heartbeat (the same thresholds as
/// [`AgentService::health_at`](super::AgentService::health_at), whatever the last sweep stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct HealthCounts {
    pub online: i64,
    pub degraded: i64,
    pub offline: i64,
}

pub async fn count_by_health(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    degraded_after: chrono::Duration,
    offline_after: chrono::Duration,
) -> sqlx::Result<HealthCounts> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE last_heartbeat >= $2) AS online,
                count(*) FILTER (WHERE last_heartbeat < $2 AND last_heartbeat >= $1) AS degraded,
                count(*) FILTER (WHERE last_heartbeat IS NULL OR last_heartbeat < $1) AS offline
         FROM agent_registry WHERE deregistered_at IS NULL",
    )
    .bind(now - offline_after)
    .bind(now - degraded_after)
    .fetch_one(db)
    .await
}
