//! What operators do by hand and read: an order's timeline, dead-letter listings with
//! filters, retries and resolutions one at a time or in bulk, each recorded with its actor.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    breaker::Gate,
    dlq_queries::{self as dlq, DlqEntry},
    job_queries::{self as jobs, SyncJob},
    operator_queries::{
        self as ops, DlqSelection, NewAction, OperatorAction, OrderSummary, SyncAttempt,
    },
    service::{API_ORDERS, OrderSync},
};
use crate::{
    agents::model::AgentHealth,
    error::{AppError, ResultExt},
    pagination::{Page, Pagination},
};

/// The most entries one bulk call changes; the answer says when more matched.
pub const BULK_LIMIT: i64 = 1_000;

/// Everything that happened to one order, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderTimeline {
    pub order: OrderSummary,
    /// Every sync job of the order, oldest first.
    pub jobs: Vec<SyncJob>,
    /// Every call to the agent and every callback, oldest first.
    pub attempts: Vec<SyncAttempt>,
    /// Every dead-letter entry of the order, resolved or not, oldest first.
    pub dead_letters: Vec<DlqEntry>,
    /// Every action an operator took on the order, oldest first.
    pub actions: Vec<OperatorAction>,
    /// All of the above as one story, sorted by time.
    pub events: Vec<TimelineEvent>,
}

/// One line of an order's story.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    /// `job_created`, `attempt`, `callback`, `dead_lettered`, `dead_letter_resolved`,
    /// `operator_action` or `job_finished`.
    pub kind: &'static str,
    pub job_id: Option<Uuid>,
    /// One line an operator reads.
    pub summary: String,
}

/// What a bulk action changed (or, in a dry run, would change).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub dry_run: bool,
    /// Entries changed (or that would be), at most 1 000.
    pub count: usize,
    /// `true` when more entries matched than one call changes: call again.
    pub more: bool,
    pub entries: Vec<BulkEntry>,
}

impl BulkResult {
    fn new(dry_run: bool, entries: Vec<BulkEntry>, more: bool) -> Self {
        Self {
            dry_run,
            count: entries.len(),
            more,
            entries,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkEntry {
    pub id: Uuid,
    pub vendor_id: String,
    pub order_id: Option<Uuid>,
    pub failure_reason: String,
    /// The new job a retry created (absent in a dry run and for resolutions).
    pub job_id: Option<Uuid>,
}

impl BulkEntry {
    fn of(entry: &DlqEntry, job_id: Option<Uuid>) -> Self {
        Self {
            id: entry.id,
            vendor_id: entry.vendor_id.clone(),
            order_id: entry.order_id,
            failure_reason: entry.failure_reason.clone(),
            job_id,
        }
    }
}

/// Who acted and why, for `operator_actions`.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub note: Option<String>,
}

impl OrderSync {
    /// The order's timeline; 404 for an unknown order.
    pub async fn order_timeline(&self, order_id: Uuid) -> Result<OrderTimeline, AppError> {
        let db = &self.inner.db;
        let order = ops::order_summary(db, order_id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no order {order_id}")))?;
        let mut order_jobs = jobs::find_by_order_id(db, order_id).await?;
        order_jobs.reverse();
        let attempts = ops::attempts_of_order(db, order_id).await?;
        let dead_letters = ops::dead_letters_of_order(db, order_id).await?;
        let actions = ops::actions_of_order(db, order_id).await?;
        let events = timeline_events(&order_jobs, &attempts, &dead_letters, &actions);
        Ok(OrderTimeline {
            order,
            jobs: order_jobs,
            attempts,
            dead_letters,
            actions,
            events,
        })
    }

    pub async fn dead_letters_matching(
        &self,
        selection: &DlqSelection<'_>,
        pagination: Pagination,
    ) -> Result<Page<DlqEntry>, AppError> {
        let (rows, total) = ops::list_dead_letters(
            &self.inner.db,
            selection,
            i64::from(pagination.limit()),
            pagination.offset(),
        )
        .await?;
        Ok(Page::new(rows, pagination, total))
    }

    /// Why the agents of these vendors should not be sent retries now (breaker open, agent
    /// offline or not registered), per vendor; empty when all may be called.
    pub async fn retry_blockers(&self, vendors: &[&str]) -> Result<Value, AppError> {
        let mut blockers = serde_json::Map::new();
        for vendor in vendors {
            if blockers.contains_key(*vendor) {
                continue;
            }
            if let Gate::Open { remaining } = self.inner.breakers.gate(vendor, API_ORDERS).await {
                let next_probe = super::service::due_after(remaining);
                blockers.insert(
                    (*vendor).to_owned(),
                    json!(format!(
                        "circuit breaker open: next probe at {}",
                        next_probe.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )),
                );
                continue;
            }
            match self.inner.agents.get(vendor).await {
                Ok(agent) if agent.status == AgentHealth::Offline => {
                    blockers.insert((*vendor).to_owned(), json!("agent offline"));
                }
                Ok(_) => {}
                Err(AppError::NotFound(_)) => {
                    blockers.insert((*vendor).to_owned(), json!("no agent registered"));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(Value::Object(blockers))
    }

    async fn refuse_if_blocked(&self, vendors: &[&str]) -> Result<(), AppError> {
        let blockers = self.retry_blockers(vendors).await?;
        let Some(map) = blockers.as_object().filter(|m| !m.is_empty()) else {
            return Ok(());
        };
        let reasons: Vec<String> = map
            .iter()
            .map(|(vendor, why)| format!("{vendor}: {}", why.as_str().unwrap_or_default()))
            .collect();
        Err(AppError::Conflict(format!(
            "retry refused, it would only fail again ({}); fix the agent or reset the breaker first, or send force=true",
            reasons.join("; ")
        )))
    }

    /// Retries one entry (see [`OrderSync::retry_dead_letter`]), refused while its vendor's
    /// breaker is open or its agent offline unless `force`; recorded with its actor.
    pub async fn retry_dead_letter_by(
        &self,
        id: Uuid,
        correlation_id: &str,
        force: bool,
        actor: &Actor,
    ) -> Result<(DlqEntry, SyncJob), AppError> {
        let entry = self.dead_letter_entry(id).await?;
        if entry.resolved {
            return Err(AppError::Conflict("this entry is already resolved".into()));
        }
        if !force {
            self.refuse_if_blocked(&[entry.vendor_id.as_str()]).await?;
        }
        let (entry, job) = self.retry_dead_letter(id, correlation_id).await?;
        self.record(&NewAction {
            action: "dlq_retry",
            actor: &actor.name,
            note: actor.note.as_deref(),
            vendor_id: Some(&entry.vendor_id),
            order_id: entry.order_id,
            dlq_id: Some(entry.id),
            job_id: Some(job.id),
            details: force.then(|| json!({"force": true})),
        })
        .await?;
        Ok((entry, job))
    }

    /// Resolves one entry by hand, keeping the note and the ERP reference given.
    pub async fn resolve_dead_letter_by(
        &self,
        id: Uuid,
        actor: &Actor,
        erp_reference: Option<&str>,
    ) -> Result<DlqEntry, AppError> {
        let mut tx = self.inner.db.begin().await?;
        let details = erp_reference.map(|r| json!({"erpReference": r}));
        let entry = resolve_recorded(&mut tx, id, actor, erp_reference, details)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no dead-letter entry {id}")))?;
        tx.commit().await?;
        tracing::info!(dlq_id = %id, actor = %actor.name, "dead-letter entry resolved");
        Ok(entry)
    }

    /// Bulk retry: every unresolved entry matching `selection` whose order can take a new job
    /// (exists, not in the ERP, no live job), oldest first, at most [`BULK_LIMIT`]. A dry run
    /// lists exactly the entries the real run would then change. Refused (409) while a
    /// concerned vendor's breaker is open or its agent offline, unless `force`.
    pub async fn bulk_retry(
        &self,
        selection: &DlqSelection<'_>,
        dry_run: bool,
        force: bool,
        actor: &Actor,
        correlation_id: &str,
    ) -> Result<BulkResult, AppError> {
        let probe =
            ops::select_for_bulk(&self.inner.db, selection, true, BULK_LIMIT + 1, false).await?;
        if !force {
            let vendors: Vec<&str> = probe.iter().map(|e| e.vendor_id.as_str()).collect();
            self.refuse_if_blocked(&vendors).await?;
        }
        if dry_run {
            return Ok(dry_run_result(probe));
        }
        let mut tx = self.inner.db.begin().await?;
        let (selected, more) = at_most_one_call(
            ops::select_for_bulk(&mut *tx, selection, true, BULK_LIMIT + 1, true).await?,
        );
        let mut created: std::collections::HashMap<Uuid, Uuid> = Default::default();
        let mut changed = Vec::with_capacity(selected.len());
        for entry in selected {
            let Some(order_id) = entry.order_id else {
                continue;
            };
            let job_id = match created.get(&order_id) {
                Some(job_id) => *job_id,
                None => {
                    let job = jobs::create_for_order(
                        &mut *tx,
                        order_id,
                        correlation_id,
                        self.inner.max_attempts as i32,
                    )
                    .await
                    .on_constraint(jobs::ONE_LIVE_JOB_PER_ORDER, || {
                        AppError::Conflict(format!(
                            "order {order_id} got a live job meanwhile; run the bulk retry again"
                        ))
                    })?
                    .ok_or_else(|| {
                        AppError::Conflict(format!(
                            "order {order_id} changed meanwhile; run the bulk retry again"
                        ))
                    })?;
                    created.insert(order_id, job.id);
                    job.id
                }
            };
            let entry = dlq::mark_retried(&mut *tx, entry.id, job_id)
                .await?
                .ok_or_else(|| {
                    AppError::Conflict("an entry was resolved meanwhile; run again".into())
                })?;
            ops::record_action(
                &mut *tx,
                &NewAction {
                    action: "dlq_retry",
                    actor: &actor.name,
                    note: actor.note.as_deref(),
                    vendor_id: Some(&entry.vendor_id),
                    order_id: entry.order_id,
                    dlq_id: Some(entry.id),
                    job_id: Some(job_id),
                    details: Some(json!({"bulk": true, "force": force})),
                },
            )
            .await?;
            changed.push(BulkEntry::of(&entry, Some(job_id)));
        }
        tx.commit().await?;
        tracing::info!(actor = %actor.name, retried = changed.len(), more, "bulk dead-letter retry");
        self.wake();
        Ok(BulkResult::new(false, changed, more))
    }

    /// Bulk resolve: every unresolved entry matching `selection`, oldest first, at most
    /// [`BULK_LIMIT`]; a dry run lists exactly those.
    pub async fn bulk_resolve(
        &self,
        selection: &DlqSelection<'_>,
        dry_run: bool,
        actor: &Actor,
    ) -> Result<BulkResult, AppError> {
        if dry_run {
            let probe =
                ops::select_for_bulk(&self.inner.db, selection, false, BULK_LIMIT + 1, false)
                    .await?;
            return Ok(dry_run_result(probe));
        }
        let mut tx = self.inner.db.begin().await?;
        let (selected, more) = at_most_one_call(
            ops::select_for_bulk(&mut *tx, selection, false, BULK_LIMIT + 1, true).await?,
        );
        let mut changed = Vec::with_capacity(selected.len());
        for entry in selected {
            let details = Some(json!({"bulk": true}));
            let Some(entry) = resolve_recorded(&mut tx, entry.id, actor, None, details).await?
            else {
                continue;
            };
            changed.push(BulkEntry::of(&entry, None));
        }
        tx.commit().await?;
        tracing::info!(actor = %actor.name, resolved = changed.len(), more, "bulk dead-letter resolve");
        Ok(BulkResult::new(false, changed, more))
    }

    /// Records an operator's action (re-sync, breaker reset, single retry).
    pub async fn record(&self, action: &NewAction<'_>) -> Result<(), AppError> {
        ops::record_action(&self.inner.db, action).await?;
        Ok(())
    }
}

/// What one call takes of entries selected `BULK_LIMIT + 1` at a time, and whether more
/// matched.
fn at_most_one_call(mut entries: Vec<DlqEntry>) -> (Vec<DlqEntry>, bool) {
    let more = entries.len() as i64 > BULK_LIMIT;
    entries.truncate(BULK_LIMIT as usize);
    (entries, more)
}

/// A dry run's answer: the entries a real run would change.
fn dry_run_result(probe: Vec<DlqEntry>) -> BulkResult {
    let (entries, more) = at_most_one_call(probe);
    let entries = entries.iter().map(|e| BulkEntry::of(e, None)).collect();
    BulkResult::new(true, entries, more)
}

/// Resolves one entry by hand and records the action, in the caller's transaction; `None`
/// when there is no such entry.
async fn resolve_recorded(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    actor: &Actor,
    erp_reference: Option<&str>,
    details: Option<Value>,
) -> Result<Option<DlqEntry>, AppError> {
    let note = actor.note.as_deref();
    let Some(entry) = dlq::mark_resolved(&mut *tx, id, &actor.name, note, erp_reference).await?
    else {
        return Ok(None);
    };
    ops::record_action(
        &mut *tx,
        &NewAction {
            action: "dlq_resolve",
            actor: &actor.name,
            note,
            vendor_id: Some(&entry.vendor_id),
            order_id: entry.order_id,
            dlq_id: Some(entry.id),
            details,
            ..NewAction::default()
        },
    )
    .await?;
    Ok(Some(entry))
}

fn timeline_events(
    jobs: &[SyncJob],
    attempts: &[SyncAttempt],
    dead_letters: &[DlqEntry],
    actions: &[OperatorAction],
) -> Vec<TimelineEvent> {
    let mut events = Vec::new();
    for job in jobs {
        events.push(TimelineEvent {
            at: job.created_at,
            kind: "job_created",
            job_id: Some(job.id),
            summary: format!("job {} created", job.id),
        });
        if let Some(done) = job.completed_at {
            let summary = match (&job.erp_reference, &job.error_message) {
                (Some(reference), _) if job.status == "completed" => {
                    format!("job completed: ERP reference {reference}")
                }
                (_, Some(error)) => format!("job {}: {error}", job.status),
                _ => format!("job {}", job.status),
            };
            events.push(TimelineEvent {
                at: done,
                kind: "job_finished",
                job_id: Some(job.id),
                summary,
            });
        }
    }
    for a in attempts {
        let status = a
            .http_status
            .map(|s| format!(" HTTP {s}"))
            .unwrap_or_default();
        let error = a
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let (kind, summary) = if a.kind == "callback" {
            ("callback", format!("callback {}{error}", a.outcome))
        } else {
            (
                "attempt",
                format!(
                    "attempt {} {}{status} in {} ms{error}",
                    a.attempt, a.outcome, a.duration_ms
                ),
            )
        };
        events.push(TimelineEvent {
            at: a.started_at,
            kind,
            job_id: Some(a.job_id),
            summary,
        });
    }
    for d in dead_letters {
        events.push(TimelineEvent {
            at: d.created_at,
            kind: "dead_lettered",
            job_id: d.original_job_id,
            summary: format!("dead-lettered ({}): {}", d.id, d.failure_reason),
        });
        if let Some(at) = d.resolved_at {
            events.push(TimelineEvent {
                at,
                kind: "dead_letter_resolved",
                job_id: d.retried_job_id.or(d.original_job_id),
                summary: format!(
                    "dead-letter entry {} resolved by {}",
                    d.id,
                    d.resolved_by.as_deref().unwrap_or("unknown")
                ),
            });
        }
    }
    for a in actions {
        let note = a
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        events.push(TimelineEvent {
            at: a.created_at,
            kind: "operator_action",
            job_id: a.job_id,
            summary: format!("{} by {}{note}", a.action, a.actor),
        });
    }
    events.sort_by_key(|e| e.at);
    events
}
