//! One test binary for the whole API (one link instead of one per file).

mod helpers;

mod agents;
mod binary;
mod config;
mod foundation;
mod ingest;
mod ingest_lock_order;
mod mappings;
mod mock_agent;
mod orders;
mod repositories;
mod security_memory;
mod security_preauth;
mod security_signing;
mod security_ssrf;
mod security_transport;
