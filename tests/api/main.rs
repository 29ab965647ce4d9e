//! One test binary for the whole API (one link instead of one per file).

mod helpers;

mod agents;
mod bad_input;
mod binary;
mod config;
mod contract;
mod foundation;
mod ingest;
mod mappings;
mod mock_agent;
mod orders;
mod properties;
mod repositories;
