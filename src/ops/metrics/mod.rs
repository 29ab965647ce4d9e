//! Metrics: Prometheus counters and gauges (`GET /metrics`), and the admin figures per vendor
//! and per agent (`/api/admin/metrics/*`).

mod prometheus;
pub mod queries;
pub mod routes;
mod service;

pub use prometheus::{GaugeReadings, IngestCounts, JobOutcome, Prometheus, track_http};
pub use service::{AgentUptime, MetricsService, SyncMetrics, WAITING_COUNT_CAP};
