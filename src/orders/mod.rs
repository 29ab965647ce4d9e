//! Outbound order sync: every marketplace order becomes a durable job that reaches the
//! vendor's agent. Postgres `sync_jobs` is the outbox and the source of truth; Redis
//! (apalis) only dispatches due work; the dispatcher redoes whatever Redis lost.

pub mod agent_client;
pub mod agent_routes;
mod attempt;
pub mod breaker;
pub mod breaker_views;
pub mod delivery_queries;
mod dispatch;
pub mod dlq_queries;
pub mod fairness;
pub mod job_queries;
mod operations;
pub mod operator_queries;
pub mod operator_routes;
pub mod queue;
pub mod response;
pub mod routes;
mod service;
mod supervisor;

pub use service::{CallbackStatus, OrderSync, backoff_delay, due_after};
pub use supervisor::WorkerStatus;
