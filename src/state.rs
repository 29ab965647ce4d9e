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
}

impl AppState {
    pub fn new(settings: Settings, db: PgPool, redis: Redis) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let mappings = MappingService::new(db.clone());
        let agents = AgentService::new(db.clone(), &settings);
        let orders = OrderSync::new(
            db.clone(),
            agents.clone(),
            AgentClient::new(&settings)?,
            Dispatcher::new(redis.clone()),
            &settings,
        );
        Ok(Self {
            orders,
            agents,
            ingest: IngestService::new(db.clone(), mappings.clone()),
            mappings,
            rate_limits: Arc::new(RateLimits::new(&settings)),
            settings,
            db,
            redis,
        })
    }
}
