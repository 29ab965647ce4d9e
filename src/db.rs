//! Connections to Postgres and Redis.

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::OnceCell;

use crate::config::{Settings, redact_url};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Longest wait for a pooled Postgres connection (the order-sync lease allows for it).
pub const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the pool. In development a missing database is created first, so the service runs
/// on a fresh machine with its defaults; in production the database must already exist.
pub async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.database_url.expose_secret();
    if !settings.is_production() && !sqlx::Postgres::database_exists(url).await.unwrap_or(true) {
        tracing::info!(database = %redact_url(url), "database does not exist; creating it");
        sqlx::Postgres::create_database(url)
            .await
            .with_context(|| format!("creating database {}", redact_url(url)))?;
    }
    let options: PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a valid Postgres URL")?;
    PgPoolOptions::new()
        .max_connections(settings.db_max_connections)
        .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
        .connect_with(options.application_name("erp-sync"))
        .await
        .with_context(|| format!("connecting to Postgres at {}", redact_url(url)))
}

/// Applies the migrations this binary knows. Migrations it does not know are fine: after a
/// rollback, or while the old colour of a blue-green deploy restarts, the schema is one release
/// ahead, and migrations stay backward compatible for one release
/// (docs/deployment-runbook.md). sqlx would otherwise refuse to start (`VersionMissing`).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.context("applying migrations")
}

/// A Redis connection made on first use and then kept (the manager reconnects by itself),
/// so the service starts, and `/health` answers, while Redis is down.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: std::sync::Arc<OnceCell<redis::aio::ConnectionManager>>,
    prefix: String,
}

impl Redis {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.redis_url.expose_secret())
            .context("REDIS_URL is not a valid Redis URL")?;
        Ok(Self {
            client,
            manager: Default::default(),
            prefix: settings.redis_prefix.clone(),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn connection(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        self.manager
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(2);
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
    }
}
