//! One test binary for the whole API (one link instead of one per file).

mod helpers;

mod agent_authors;
mod agent_check;
mod agents;
mod bad_input;
mod binary;
mod config;
mod contract;
mod erp_agent;
mod foundation;
mod ingest;
mod ingest_lock_order;
mod mappings;
mod mock_agent;
mod mock_erp;
mod mock_slack;
mod order_delivery;
mod order_faults;
mod order_resilience;
mod orders;
mod properties;
mod reconciliation;
mod reconciliation_failures;
mod reconciliation_routes;
mod reference_agent;
mod repositories;
mod security_memory;
mod security_preauth;
mod security_signing;
mod security_ssrf;
mod security_transport;
mod tcp_proxy;
mod watch;
