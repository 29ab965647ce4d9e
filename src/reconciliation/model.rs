//! Reconciliation request and response shapes.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

use super::queries::EventType;
use crate::domain::VendorId;

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerReconciliation {
    pub vendor_id: VendorId,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStarted {
    /// The run's id; its events carry it in `summary.runId`.
    pub run_id: Uuid,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only this vendor's events.
    pub vendor_id: Option<VendorId>,
    /// full_checksum, drift_detected, drift_resolved or incremental_sync.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<EventType>)]
    pub event_type: Option<EventType>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The checksums matched: nothing to do.
    InSync,
    /// Drift found, and all of it repaired.
    Repaired,
    /// Drift found; some of it is left (see `unresolved` and the event's details).
    Unresolved,
    /// The first comparison could not be made (agent or database failure).
    Failed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InSync => "in_sync",
            Self::Repaired => "repaired",
            Self::Unresolved => "unresolved",
            Self::Failed => "failed",
        }
    }
}

/// What a run did: the `summary` of its last event, and what `detect_drift` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run_id: Uuid,
    pub vendor_id: String,
    pub outcome: RunOutcome,
    /// Items in the ERP, as its agent counted them (none when it could not be asked).
    pub erp_count: Option<u64>,
    /// Items in Postgres at the start (those found absent from the ERP earlier excluded).
    pub pg_count: i64,
    /// Requests made to the agent.
    pub agent_calls: u64,
    /// Items the agent listed.
    pub items_fetched: u64,
    /// Items written from the ERP (new, changed, or listed again).
    pub repaired: u64,
    /// Items absent from the ERP, deactivated.
    pub deactivated: u64,
    /// Drifted items refused by ingest (unmapped code, invalid, stale) plus ranges left
    /// unchecked because the agent failed or the run was stopped.
    pub unresolved: u64,
    pub duration_ms: u64,
}
