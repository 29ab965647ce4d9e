//! Reconciliation: finds drift between each vendor's ERP and Postgres by comparing checksums
//! over sku ranges, narrows it by bisection, and repairs it (the ERP wins). See DESIGN.md
//! "Reconciliation" and docs/agent-protocol.md for the agent's side.

pub mod agent_check;
pub mod agent_check_orders;
pub mod catalogue_queries;
pub mod erp;
pub mod model;
pub mod queries;
pub mod range;
pub mod routes;
mod search;
mod service;

pub use service::ReconciliationService;
