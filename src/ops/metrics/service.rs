//! The figures behind `/api/admin/metrics/*` and the SQL-fed Prometheus gauges.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::{
    prometheus::{GaugeReadings, Prometheus},
    queries,
};
use crate::{
    agents::{AgentService, model::AgentHealth},
    error::AppError,
    orders::{
        OrderSync,
        job_queries::{self as jobs, JobMetrics},
    },
    pagination::{Page, Pagination},
    reconciliation::queries::{self as events, ReconciliationMetrics},
};

/// Waiting jobs are counted up to this (the count stays cheap however deep the backlog).
pub const WAITING_COUNT_CAP: i64 = 100_000;

/// `GET /api/admin/metrics/{vendorId}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncMetrics {
    pub vendor_id: String,
    #[serde(flatten)]
    pub jobs: JobMetrics,
}

/// One agent in `GET /api/admin/metrics/agents`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentUptime {
    pub vendor_id: String,
    /// Health from the last heartbeat.
    pub status: AgentHealth,
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Share of the last 24 h (or since registration, if later) the agent was recorded
    /// online, in percent (0.1 %); null when nothing was recorded.
    pub uptime_pct_24h: Option<f64>,
}

#[derive(Clone)]
pub struct MetricsService {
    db: PgPool,
    agents: AgentService,
    orders: OrderSync,
    prometheus: Prometheus,
}

impl MetricsService {
    pub fn new(
        db: PgPool,
        agents: AgentService,
        orders: OrderSync,
        prometheus: Prometheus,
    ) -> Self {
        Self {
            db,
            agents,
            orders,
            prometheus,
        }
    }

    /// A vendor's sync jobs in one aggregate (zeros for a vendor without any).
    pub async fn sync(&self, vendor_id: &str) -> Result<SyncMetrics, AppError> {
        Ok(SyncMetrics {
            vendor_id: vendor_id.to_owned(),
            jobs: jobs::get_metrics(&self.db, vendor_id).await?,
        })
    }

    pub async fn reconciliation(&self, vendor_id: &str) -> Result<ReconciliationMetrics, AppError> {
        Ok(events::get_metrics(&self.db, vendor_id).await?)
    }

    pub async fn agents(&self, pagination: Pagination) -> Result<Page<AgentUptime>, AppError> {
        let now = Utc::now();
        let rows = queries::agents_with_uptime(
            &self.db,
            now,
            i64::from(pagination.limit()),
            pagination.offset(),
        )
        .await?;
        let total = queries::count_agents(&self.db).await?;
        let data = rows
            .into_iter()
            .map(|row| AgentUptime {
                status: self.agents.health_at(
                    row.last_heartbeat,
                    row.deregistered_at.is_some(),
                    now,
                ),
                uptime_pct_24h: match (row.online_secs, row.observed_secs) {
                    (_, None) => None,
                    (_, Some(observed)) if observed <= 0.0 => None,
                    (online, Some(observed)) => {
                        Some((1000.0 * online.unwrap_or(0.0) / observed).round() / 10.0)
                    }
                },
                vendor_id: row.vendor_id,
                last_heartbeat: row.last_heartbeat,
            })
            .collect();
        Ok(Page::new(data, pagination, total))
    }

    /// Reads the gauges that need SQL and publishes them; run on a timer, never per scrape.
    pub async fn refresh_gauges(&self) -> Result<GaugeReadings, AppError> {
        let (waiting, unresolved, agents) = tokio::try_join!(
            async { Ok::<_, AppError>(jobs::count_waiting(&self.db, WAITING_COUNT_CAP).await?) },
            self.orders.dead_letter_count(),
            self.agents.count_by_health(),
        )?;
        let breakers_open = self
            .orders
            .breakers()
            .snapshot()
            .await
            .iter()
            .filter(|b| b.state == "OPEN")
            .count() as i64;
        let readings = GaugeReadings {
            queue_waiting: waiting,
            dlq_unresolved: unresolved,
            agents_online: agents.online,
            agents_degraded: agents.degraded,
            agents_offline: agents.offline,
            breakers_open,
        };
        self.prometheus.set_gauges(&readings);
        Ok(readings)
    }
}
