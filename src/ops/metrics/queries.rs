//! Agent uptime from `agent_status_changes` (filled by a trigger on `agent_registry`).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// An agent with how long it was recorded online within the window.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentUptimeRow {
    pub vendor_id: String,
    pub status: String,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub deregistered_at: Option<DateTime<Utc>>,
    /// Seconds recorded `online` within the window.
    pub online_secs: Option<f64>,
    /// Seconds of the window with a recorded status (from registration, if later).
    pub observed_secs: Option<f64>,
}

/// A page of agents (by vendor id) with their time online over the 24 hours before `now`:
/// each status holds from its change to the next one; the status in force when the window
/// opens is the last change before it.
pub async fn agents_with_uptime(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<AgentUptimeRow>> {
    sqlx::query_as(
        "WITH page AS (
             SELECT vendor_id, status, last_heartbeat, deregistered_at FROM agent_registry
             ORDER BY vendor_id LIMIT $2 OFFSET $3
         ), relevant AS (
             SELECT c.id, c.vendor_id, c.status, c.changed_at
             FROM agent_status_changes c JOIN page USING (vendor_id)
             WHERE c.changed_at > $1 - interval '24 hours' AND c.changed_at <= $1
             UNION ALL
             SELECT * FROM (
                 SELECT DISTINCT ON (c.vendor_id) c.id, c.vendor_id, c.status, c.changed_at
                 FROM agent_status_changes c JOIN page USING (vendor_id)
                 WHERE c.changed_at <= $1 - interval '24 hours'
                 ORDER BY c.vendor_id, c.changed_at DESC, c.id DESC
             ) opening
         ), segments AS (
             SELECT vendor_id, status,
                    greatest(changed_at, $1 - interval '24 hours') AS from_at,
                    COALESCE(lead(changed_at) OVER (PARTITION BY vendor_id ORDER BY changed_at, id), $1)
                        AS until_at
             FROM relevant
         ), uptime AS (
             SELECT vendor_id,
                    sum(EXTRACT(EPOCH FROM until_at - from_at)) FILTER (WHERE status = 'online')
                        AS online_secs,
                    sum(EXTRACT(EPOCH FROM until_at - from_at)) AS observed_secs
             FROM segments GROUP BY vendor_id
         )
         SELECT page.vendor_id, page.status, page.last_heartbeat, page.deregistered_at,
                uptime.online_secs::float8 AS online_secs, uptime.observed_secs::float8 AS observed_secs
         FROM page LEFT JOIN uptime USING (vendor_id)
         ORDER BY page.vendor_id",
    )
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}

pub async fn count_agents(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM agent_registry")
        .fetch_one(db)
        .await
}

/// Deletes up to `limit` status changes older than `days`, except each agent's latest before
/// the cutoff (the status in force when a later uptime window opens).
pub async fn delete_old_status_changes(
    db: impl PgExecutor<'_>,
    days: i32,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM agent_status_changes WHERE id IN (
             SELECT c.id FROM agent_status_changes c
             WHERE c.changed_at < now() - make_interval(days => $1)
               AND EXISTS (SELECT 1 FROM agent_status_changes later
                           WHERE later.vendor_id = c.vendor_id AND later.id > c.id
                             AND later.changed_at < now() - make_interval(days => $1))
             LIMIT $2)",
    )
    .bind(days)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
