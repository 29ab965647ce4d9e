//! One test binary for the whole API (one link instead of one per file).

mod helpers;

mod agents;
mod binary;
mod config;
mod erp_agent;
mod foundation;
mod ingest;
mod mappings;
mod mock_agent;
mod order_delivery;
mod order_faults;
mod order_resilience;
mod orders;
mod repositories;
mod tcp_proxy;
