//! The service watching itself: `/health`, the scheduler and its jobs, alerts, metrics.

mod alerts;
mod cleanup;
mod health;
mod metrics;
mod prometheus;
mod scheduler;

use std::sync::Arc;

use erp_sync::ops::scheduler::{Jobs, Reconciler};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};

/// The test app with some settings added.
pub async fn app_with(db: PgPool, extra: &[(&str, &str)]) -> TestApp {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spawn_app_with(db, move |vars| vars.extend(extra)).await
}

/// The job bodies over the app's services, to call directly.
pub fn jobs(app: &TestApp) -> Jobs {
    jobs_with(app, Arc::new(app.state.reconciliation.clone()))
}

/// The job bodies with `detect-drift` going through `reconciler`.
pub fn jobs_with(app: &TestApp, reconciler: Arc<dyn Reconciler>) -> Jobs {
    Jobs::new(
        app.db.clone(),
        app.state.agents.clone(),
        app.state.alerts.clone(),
        reconciler,
    )
}

/// An unresolved dead-letter entry of `vendor`.
pub async fn dead_letter(db: &PgPool, vendor: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO dead_letter_queue (vendor_id, operation, payload, failure_reason, attempt_count)
         VALUES ($1, 'create_order', '{}', 'agent answered 500', 5) RETURNING id",
    )
    .bind(vendor)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Runs a job over the admin API; returns the status and the run.
pub async fn run_job(app: &TestApp, name: &str) -> (reqwest::StatusCode, Value) {
    let response = app
        .client
        .post(app.url(&format!("/api/admin/scheduler/{name}/run")))
        .header("x-api-key", crate::helpers::API_KEY)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// A pool of its own on the test's database: what another replica would have.
pub async fn replica_pool(db: &PgPool) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(db.connect_options().as_ref().clone())
        .await
        .unwrap()
}
