//! What an agent may read of its own order sync: its jobs and its unresolved dead-letter
//! entries, read-only, with its own token (or the admin key). Never another vendor's rows:
//! every query is filtered by the vendor the token was checked against.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    dlq_queries::DlqEntry, job_queries::SyncJob, operator_queries::DlqSelection, routes::JobStatus,
};
use crate::{
    error::AppError,
    http::{
        auth::VendorReader,
        extract::{Page, Pagination, Query},
        responses::{AgentErrors, PathErrors, QueryErrors},
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_jobs))
        .routes(routes!(agent_dead_letters))
}

/// One of the vendor's sync jobs, as its agent sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentJob {
    pub id: Uuid,
    /// The order (its id is the `Idempotency-Key` of every delivery).
    pub order_id: Option<Uuid>,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    /// Attempts made: calls to the agent spent on this job (0 before the first call, 1 after
    /// a first-try success).
    pub retry_count: i32,
    /// The attempt budget (`ORDER_SYNC_MAX_ATTEMPTS` when the job was last claimed).
    pub max_retries: i32,
    /// When the job is next due (a retry, or the end of a callback wait).
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Why the job waits or failed (an agent error, or e.g. "agent offline").
    pub error_message: Option<String>,
    /// The last error a call to the agent produced.
    pub last_agent_error: Option<String>,
    pub erp_reference: Option<String>,
    /// The create-order body the last attempt sent; null before the first call.
    #[schema(value_type = Option<Object>)]
    pub sent_payload: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<SyncJob> for AgentJob {
    fn from(job: SyncJob) -> Self {
        Self {
            id: job.id,
            order_id: job.postgres_order_id,
            status: job.status,
            retry_count: job.retry_count,
            max_retries: job.max_retries,
            next_retry_at: job.next_retry_at,
            error_message: job.error_message,
            last_agent_error: job.last_agent_error,
            erp_reference: job.erp_reference,
            sent_payload: job.sent_payload,
            created_at: job.created_at,
            completed_at: job.completed_at,
        }
    }
}

/// One of the vendor's unresolved dead-letter entries, as its agent sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentDeadLetter {
    pub id: Uuid,
    pub original_job_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub failure_reason: String,
    /// Attempts the job made (calls to the agent).
    pub attempt_count: i32,
    /// The create-order body the job's last attempt sent; null when none called the agent.
    #[schema(value_type = Option<Object>)]
    pub sent_payload: Option<Value>,
    pub created_at: DateTime<Utc>,
}

impl From<DlqEntry> for AgentDeadLetter {
    fn from(entry: DlqEntry) -> Self {
        Self {
            id: entry.id,
            original_job_id: entry.original_job_id,
            order_id: entry.order_id,
            failure_reason: entry.failure_reason,
            attempt_count: entry.attempt_count,
            sent_payload: entry.sent_payload,
            created_at: entry.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AgentJobFilter {
    /// Only jobs in this state.
    #[param(inline)]
    pub status: Option<JobStatus>,
    /// Only the jobs of this marketplace order.
    pub order_id: Option<Uuid>,
}

/// List the agent's own sync jobs
///
/// The vendor's own sync jobs, newest first, paginated. With that vendor's agent token (or
/// the admin key); a token of another vendor is refused (401).
#[utoipa::path(
    get, path = "/api/agents/{vendorId}/jobs", tag = "orders",
    params(
        ("vendorId" = inline(crate::domain::VendorId), Path, description = "The agent's own vendor id"),
        AgentJobFilter, Pagination,
    ),
    responses(
        AgentErrors, PathErrors, QueryErrors,
        (status = 200, description = "A page of the vendor's jobs", body = Page<AgentJob>),
    ),
    security(("agent_token" = []), ("api_key" = []))
)]
async fn agent_jobs(
    reader: VendorReader,
    State(state): State<AppState>,
    Query(filter): Query<AgentJobFilter>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<Page<AgentJob>>, AppError> {
    let page = state
        .orders
        .jobs(
            Some(&reader.vendor_id),
            filter.status.map(JobStatus::as_str),
            filter.order_id,
            pagination.check()?,
        )
        .await?;
    Ok(Json(Page {
        data: page.data.into_iter().map(AgentJob::from).collect(),
        page: page.page,
        limit: page.limit,
        total: page.total,
    }))
}

/// List the agent's own unresolved dead-letter entries
///
/// The vendor's unresolved dead-letter entries, newest first, paginated. With that vendor's
/// agent token (or the admin key); a token of another vendor is refused (401).
#[utoipa::path(
    get, path = "/api/agents/{vendorId}/dlq", tag = "orders",
    params(
        ("vendorId" = inline(crate::domain::VendorId), Path, description = "The agent's own vendor id"),
        Pagination,
    ),
    responses(
        AgentErrors, PathErrors, QueryErrors,
        (status = 200, description = "A page of the vendor's unresolved entries", body = Page<AgentDeadLetter>),
    ),
    security(("agent_token" = []), ("api_key" = []))
)]
async fn agent_dead_letters(
    reader: VendorReader,
    State(state): State<AppState>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<Page<AgentDeadLetter>>, AppError> {
    let page = state
        .orders
        .dead_letters_matching(
            &DlqSelection {
                vendor_id: Some(&reader.vendor_id),
                ..DlqSelection::default()
            },
            pagination.check()?,
        )
        .await?;
    Ok(Json(Page {
        data: page.data.into_iter().map(AgentDeadLetter::from).collect(),
        page: page.page,
        limit: page.limit,
        total: page.total,
    }))
}
