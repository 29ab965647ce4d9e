//! Operations: the service watching itself. `/health`, alerts, metrics (Prometheus and the
//! admin figures) and the scheduler with its housekeeping jobs.

pub mod alerts;
pub mod health;
pub mod metrics;
pub mod scheduler;
