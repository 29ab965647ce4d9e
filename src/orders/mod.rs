//! Outbound order sync: every marketplace order becomes a durable job that reaches the
//! vendor's agent. Postgres `sync_jobs` is the source of truth; Redis dispatches.

pub mod dlq_queries;
pub mod job_queries;
