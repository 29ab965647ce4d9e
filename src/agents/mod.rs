//! Agents: the on-premise programs next to each vendor's ERP. Registry, heartbeats, health,
//! the verification of their bearer tokens, and the signed, SSRF-checked calls erp-sync makes
//! to them.

pub mod address;
pub mod client;
pub mod model;
pub mod queries;
pub mod routes;
mod service;
pub mod signing;
pub mod tokens;

pub use service::{AgentService, AuthenticatedAgent, RegistrationCaller};
