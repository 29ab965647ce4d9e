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
    orders::{OrderSync, agent_client::AgentClient, queue::Dispatcher},
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
    pub rate_limits: Arc<RateLimits>,
    pub reconciliation: ReconciliationService,
}

impl AppState {
    pub fn new(settings: Settings, db: PgPool, redis: Redis) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let mappings = MappingService::new(db.clone());
        let agents = AgentService::new(db.clone(), &settings);
        let client = AgentClient::new(&settings)?;
        let orders = OrderSync::new(
            db.clone(),
            agents.clone(),
            client.clone(),
            Dispatcher::new(redis.clone()),
            &settings,
        );
        let ingest = IngestService::new(db.clone(), mappings.clone());
        let reconciliation = ReconciliationService::new(
            db.clone(),
            agents.clone(),
            ingest.clone(),
            client,
            orders.breakers().clone(),
            &settings,
        );
        Ok(Self {
            reconciliation,
            orders,
            agents,
            ingest,
            mappings,
            rate_limits: Arc::new(RateLimits::new(&settings)),
            settings,
            db,
            redis,
        })
    }
}
