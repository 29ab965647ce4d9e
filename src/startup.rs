//! Building and running the service: the same code path for `main` and the tests.

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Settings,
    db,
    http::server::ServerLimits,
    orders::breaker_views::{PUBLISH_EVERY, RESET_CHANNEL},
    state::AppState,
};

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connects to Postgres (creating the database in development), applies migrations,
    /// binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings).await?;
        db::migrate(&pool).await?;
        Self::build_with_pool(settings, pool).await
    }

    /// As [`build`](Self::build) over an existing, migrated pool (tests).
    pub async fn build_with_pool(settings: Settings, pool: PgPool) -> anyhow::Result<Self> {
        let redis = db::Redis::new(&settings)?;
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let state = AppState::new(settings, pool, redis)?;
        if state.settings.agent_secret_previous.is_some() {
            state.agents.reseal_signing_secrets().await?;
        }
        Ok(Self { listener, state })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops taking connections, lets in-flight
    /// requests finish and waits for the background tasks.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // First, so a scheduler that cannot start stops the service before anything runs.
        let cron = if self.state.settings.scheduler_enabled {
            Some(
                self.state
                    .scheduler
                    .start()
                    .await
                    .context("starting the scheduler")?,
            )
        } else {
            tracing::info!(
                "scheduler disabled (SCHEDULER_ENABLED=false): jobs run only when another replica or an operator starts them"
            );
            None
        };
        let tasks = TaskTracker::new();
        spawn_housekeeping(&tasks, &self.state, shutdown.clone());
        spawn_listener(&tasks, &self.state, shutdown.clone());
        spawn_breaker_views(&tasks, &self.state, shutdown.clone());
        spawn_order_sync(&tasks, &self.state, shutdown.clone());
        spawn_watch(&tasks, &self.state, cron, shutdown.clone());

        let address = self.listener.local_addr()?;
        tracing::info!(%address, "erp-sync listening");
        let app = crate::http::router(self.state.clone());
        crate::http::server::serve(
            self.listener,
            app,
            ServerLimits::from_settings(&self.state.settings),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        // Manual scheduler runs (started over HTTP) stop too; alerts in flight get their
        // Slack timeout to go out.
        self.state.scheduler.stop().await;
        self.state.alerts.drain().await;
        self.state.reconciliation.shutdown().await;
        tracing::info!("erp-sync stopped");
        Ok(())
    }
}

/// In-process upkeep that needs no coordination between replicas.
fn spawn_housekeeping(tasks: &TaskTracker, state: &AppState, shutdown: CancellationToken) {
    let limits = state.rate_limits.clone();
    let agents = state.agents.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    limits.retain_recent();
                    agents.retain_recent();
                }
            }
        }
    });
}

/// What other processes announce through Postgres: new orders (`erp_sync_jobs`, from the
/// trigger; a burst wakes the dispatch loop once), mapping changes made by another replica
/// (`erp_sync_mappings`, payload `{instance} {vendor id}`) and breaker resets
/// (`erp_sync_breakers`).
fn spawn_listener(tasks: &TaskTracker, state: &AppState, shutdown: CancellationToken) {
    let (db, orders, mappings, breakers) = (
        state.db.clone(),
        state.orders.clone(),
        state.mappings.clone(),
        state.breaker_views.clone(),
    );
    tasks.spawn(async move {
        loop {
            let listener = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&db).await?;
                listener
                    .listen_all(["erp_sync_jobs", "erp_sync_mappings", RESET_CHANNEL])
                    .await?;
                // Whatever was announced while not listening is lost: forget every cached
                // mapping rather than serve one another replica changed meanwhile.
                mappings.forget_all();
                loop {
                    let notification = listener.recv().await?;
                    match notification.channel() {
                        "erp_sync_mappings" => mappings.on_announcement(notification.payload()),
                        RESET_CHANNEL => breakers.on_announcement(notification.payload()).await,
                        _ => orders.wake(),
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                result = listener => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "LISTEN failed (the sweep still runs; mapping caches expire); reconnecting");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    });
}

/// Publishes this replica's breakers for the others' listings, and withdraws them on stop.
fn spawn_breaker_views(tasks: &TaskTracker, state: &AppState, shutdown: CancellationToken) {
    let views = state.breaker_views.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => views.publish().await,
            }
        }
        views.withdraw().await;
    });
}

/// The order-sync worker and its dispatcher, supervised by the orders module.
fn spawn_order_sync(tasks: &TaskTracker, state: &AppState, shutdown: CancellationToken) {
    let orders = state.orders.clone();
    if !state.settings.order_sync_enabled {
        tracing::info!(
            "order sync disabled (ORDER_SYNC_ENABLED=false): jobs accumulate in Postgres"
        );
        return;
    }
    if !orders.can_call_agents() {
        tracing::warn!(
            "AGENT_SECRET is not set: order sync is paused, jobs accumulate in Postgres"
        );
        return;
    }
    orders.start(tasks, state.settings.worker_concurrency, shutdown);
}

/// How often the SQL-fed Prometheus gauges are read (never per scrape).
const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// The scheduler's cron (when SCHEDULER_ENABLED) and the Prometheus gauges (when
/// METRICS_ENABLED).
fn spawn_watch(
    tasks: &TaskTracker,
    state: &AppState,
    cron: Option<tokio_cron_scheduler::JobScheduler>,
    shutdown: CancellationToken,
) {
    if let Some(cron) = cron {
        let scheduler = state.scheduler.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { scheduler.run_until(cron, shutdown).await });
    }
    if state.settings.metrics_enabled {
        let metrics = state.metrics.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(GAUGE_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let refreshed = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => tokio::select! {
                        _ = shutdown.cancelled() => break,
                        refreshed = metrics.refresh_gauges() => refreshed,
                    },
                };
                if let Err(error) = refreshed {
                    tracing::warn!(error = ?error, "could not refresh the metrics gauges");
                }
            }
        });
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
        _ = token.cancelled() => return,
    }
    tracing::info!("shutdown signal received; draining");
    token.cancel();
}
