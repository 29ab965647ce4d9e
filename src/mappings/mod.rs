//! ERP code mappings: a vendor's unit, VAT, family and subfamily codes translated to the
//! marketplace's. Cached for ingest, administered over the admin API.

pub mod model;
pub mod queries;
pub mod routes;
mod service;

pub use service::MappingService;
