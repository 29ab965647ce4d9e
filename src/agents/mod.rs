//! Agents: the on-premise programs next to each vendor's ERP. Registry, heartbeats, health,
//! and the verification of their bearer tokens.

pub mod model;
pub mod queries;
pub mod routes;
mod service;

pub use service::{AgentService, AuthenticatedAgent, RegistrationCaller};
