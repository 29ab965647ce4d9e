//! Outbound order sync: every marketplace order becomes a durable job that reaches the
//! vendor's agent. Postgres `sync_jobs` is the outbox and the source of truth; Redis
//! (apalis) only dispatches; a recovery sweep redoes whatever Redis lost.

pub mod agent_client;
pub mod breaker;
pub mod dlq_queries;
pub mod job_queries;
pub mod queue;
pub mod routes;
mod service;

pub use service::{CallbackStatus, OrderSync, WorkerStatus, backoff_delay};
