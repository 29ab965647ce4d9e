//! Agent request and response shapes.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use super::queries::AgentRecord;
use crate::domain::{VendorId, schema, validate_http_url, validate_line};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErpType {
    Ebp,
    Sage,
    Odoo,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentHealth {
    Online,
    Degraded,
    Offline,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
#[validate(schema(function = "validate_token"))]
pub struct RegisterAgent {
    pub vendor_id: VendorId,
    /// Absolute http(s) URL erp-sync calls the agent at (https in production), without query
    /// or fragment; it may not lead to link-local or metadata addresses, nor to loopback or
    /// private ones unless the deployment allows them. Changing it needs the admin key.
    #[validate(custom(function = "validate_http_url"))]
    #[schema(
        format = "uri",
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub agent_url: String,
    pub erp_type: ErpType,
    /// The agent's bearer token, 16-256 characters. Stored only as a bcrypt hash.
    #[schema(value_type = String, min_length = 16, max_length = 256)]
    pub auth_token: SecretString,
    /// The agent's version, one line.
    #[validate(length(min = 1, max = 50), custom(function = "validate_line"))]
    #[schema(schema_with = schema::optional_line::<1, 50>)]
    pub version: Option<String>,
}

/// `authToken` is a secret, so it is checked here rather than by a field rule (which would
/// copy the value into the error).
fn validate_token(request: &RegisterAgent) -> Result<(), ValidationError> {
    let len = request.auth_token.expose_secret().chars().count();
    if (16..=256).contains(&len) {
        Ok(())
    } else {
        Err(ValidationError::new("authToken").with_message("must be 16-256 characters".into()))
    }
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub vendor_id: VendorId,
    /// The agent's version, one line.
    #[validate(length(min = 1, max = 50), custom(function = "validate_line"))]
    #[schema(schema_with = schema::optional_line::<1, 50>)]
    pub version: Option<String>,
}

/// The answer to a registration or rotation: the agent, and its new signing secret, shown
/// this once and never again.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredAgent {
    #[serde(flatten)]
    pub agent: AgentView,
    /// `whsec_` + base64 of 32 random bytes: the key (the decoded base64 part) this agent
    /// verifies erp-sync's calls with, per Standard Webhooks. Returned only here.
    #[schema(example = "whsec_ZXhhbXBsZS1zaWduaW5nLXNlY3JldC0zMi1ieXRlcyE=")]
    pub signing_secret: String,
}

impl std::fmt::Debug for RegisteredAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredAgent")
            .field("agent", &self.agent)
            .field("signing_secret", &"[REDACTED]")
            .finish()
    }
}

/// An agent as the API shows it: never its token or hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: Uuid,
    pub vendor_id: String,
    pub agent_url: String,
    pub erp_type: String,
    /// Health computed from the last heartbeat (degraded after 60 s, offline after 300 s).
    pub status: AgentHealth,
    /// Status as last stored by a heartbeat or the health sweep.
    pub stored_status: String,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub version: Option<String>,
    pub deregistered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AgentView {
    pub fn from_record(record: AgentRecord, health: AgentHealth) -> Self {
        Self {
            id: record.id,
            vendor_id: record.vendor_id,
            agent_url: record.agent_url,
            erp_type: record.erp_type,
            status: health,
            stored_status: record.status,
            last_heartbeat: record.last_heartbeat,
            version: record.version,
            deregistered_at: record.deregistered_at,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}
