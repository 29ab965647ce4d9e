//! What every handler, job and test reaches the features through.

use std::sync::Arc;

use sqlx::PgPool;

use crate::{
    agents::AgentService,
    config::Settings,
    db::Redis,
    http::rate_limit::RateLimits,
    ingest::IngestService,
    mappings::MappingService,
    ops::{
        alerts::AlertService,
        health::HealthChecks,
        metrics::{MetricsService, Prometheus},
        scheduler::{Jobs, Scheduler},
    },
    orders::{
        OrderSync, agent_client::AgentClient, breaker_views::BreakerViews, queue::Dispatcher,
    },
    reconciliation::ReconciliationService,
};

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub redis: Redis,
    pub agents: AgentService,
    pub mappings: MappingService,
    pub ingest: IngestService,
    pub orders: OrderSync,
    /// Every replica's breakers, and resets that reach them all.
    pub breaker_views: BreakerViews,
    pub rate_limits: Arc<RateLimits>,
    pub alerts: AlertService,
    pub prometheus: Prometheus,
    pub metrics: MetricsService,
    pub scheduler: Scheduler,
    pub health: HealthChecks,
    pub reconciliation: ReconciliationService,
}

impl AppState {
    pub fn new(settings: Settings, db: PgPool, redis: Redis) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let mappings = MappingService::new(db.clone());
        let agents = AgentService::new(db.clone(), &settings, &redis);
        let alerts = AlertService::new(&settings, redis.clone())?;
        let prometheus = Prometheus::new();
        let client = AgentClient::new(&settings)?;
        let orders = OrderSync::new(
            db.clone(),
            agents.clone(),
            client.clone(),
            Dispatcher::new(redis.clone()),
            &settings,
            alerts.clone(),
            prometheus.clone(),
        );
        let breaker_views = BreakerViews::new(
            &settings,
            orders.clone(),
            redis.clone(),
            db.clone(),
            replica_id(),
        );
        let ingest = IngestService::new(db.clone(), mappings.clone());
        let reconciliation = ReconciliationService::new(
            db.clone(),
            agents.clone(),
            ingest.clone(),
            client,
            orders.breakers().clone(),
            alerts.clone(),
            &settings,
        );
        let jobs = Jobs::new(
            db.clone(),
            agents.clone(),
            alerts.clone(),
            Arc::new(reconciliation.clone()),
        );
        let scheduler = Scheduler::new(
            db.clone(),
            jobs,
            settings.schedules.clone(),
            prometheus.clone(),
        );
        let metrics = MetricsService::new(
            db.clone(),
            agents.clone(),
            orders.clone(),
            prometheus.clone(),
        );
        Ok(Self {
            alerts,
            prometheus,
            metrics,
            scheduler,
            health: HealthChecks::default(),
            reconciliation,
            orders,
            breaker_views,
            agents,
            ingest,
            mappings,
            rate_limits: Arc::new(RateLimits::new(&settings, &redis)),
            settings,
            db,
            redis,
        })
    }
}

/// This process among the replicas: host, pid and a random part (a restarted process is a new
/// replica).
fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "erp-sync".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
