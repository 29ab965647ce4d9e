//! Direct ingest: agents push items, stock and warehouses; they are validated, deduplicated,
//! mapped and upserted into Postgres in one hop.

pub mod model;
pub mod queries;
pub mod routes;
pub mod rules;
mod service;

pub use service::IngestService;
