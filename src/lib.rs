//! erp-sync: keeps a B2B restaurant marketplace's PostgreSQL in step with its vendors' ERPs.
//!
//! Feature modules (`agents`, `mappings`, …) each own their routes, service and queries; they
//! sit on thin shared layers: `config`, `db`, `http`, `error`.

pub mod agents;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod ingest;
pub mod mappings;
pub mod ops;
pub mod orders;
pub mod pagination;
pub mod reconciliation;
pub mod startup;
pub mod state;
pub mod telemetry;
