//! Narrowing drift down and repairing it, for one run.
//!
//! A mismatched range is split at Postgres' median sku into exact complements `[from, m]` and
//! `(m, to]`; each half whose checksums differ is split again, concurrently (bounded). A range
//! where either side has at most [`LEAF_SIZE`] items is compared item by item: the ERP's
//! listing is paged with `/sync/items` (so a range Postgres barely knows but the ERP fills is
//! paged, never bisected forever) and Postgres' side is read set-based (so an ERP that lost
//! most of a range costs one listing, not one call per ten items).
//!
//! Repairs go through the ingest path (validation, mappings, stale guard); items the complete
//! listing of a range lacks are deactivated. Every write is one statement and holds ERP data as
//! listed, so a run stopped anywhere leaves nothing half-applied.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use futures::{StreamExt, stream::FuturesUnordered};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    catalogue_queries::{self as catalogue, RangeDigest},
    erp::{ErpCatalogue, ErpError, ErpItem, RangeChecksum},
    range::SkuRange,
};
use crate::{
    error::AppError,
    ingest::{IngestService, model::RecordStatus},
};

/// Ranges with at most this many items on one side are compared item by item.
pub const LEAF_SIZE: i64 = 10;
/// Unresolved items and ranges named in a run's event; the count covers them all.
const MAX_NOTES: usize = 20;

#[derive(Debug, Default)]
pub struct Tally {
    pub items_fetched: u64,
    pub repaired: u64,
    pub deactivated: u64,
    pub unresolved: u64,
    pub notes: Vec<String>,
    pub stop_reason: Option<String>,
}

impl Tally {
    fn unresolved(&mut self, note: String) {
        self.unresolved += 1;
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        }
    }
}

enum Task {
    Check(SkuRange),
    Mismatch {
        range: SkuRange,
        pg: RangeDigest,
        erp: RangeChecksum,
    },
}

enum Failure {
    Agent(ErpError),
    Database(AppError),
    Stopped,
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<AppError> for Failure {
    fn from(error: AppError) -> Self {
        Self::Database(error)
    }
}

pub struct Search<'a> {
    pub vendor_id: &'a str,
    pub db: &'a PgPool,
    pub ingest: &'a IngestService,
    pub erp: &'a ErpCatalogue,
    pub page_size: usize,
    pub concurrency: usize,
    pub stop: CancellationToken,
    pub tally: Mutex<Tally>,
}

impl Search<'_> {
    /// Stops the search (no new range is started, agent calls in flight are dropped); the
    /// first reason given is the one reported.
    pub fn stop(&self, reason: impl Into<String>) {
        let mut tally = self.tally();
        if tally.stop_reason.is_none() {
            tally.stop_reason = Some(reason.into());
        }
        self.stop.cancel();
    }

    pub fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An agent call, abandoned if the run is stopped meanwhile.
    pub async fn agent<T>(
        &self,
        call: impl Future<Output = Result<T, ErpError>>,
    ) -> Result<T, FailureKind> {
        tokio::select! {
            result = call => result.map_err(FailureKind::Agent),
            _ = self.stop.cancelled() => Err(FailureKind::Stopped),
        }
    }

    /// Searches a range whose checksums differ, and repairs what it finds.
    pub async fn run(&self, range: SkuRange, pg: RangeDigest, erp: RangeChecksum) {
        let mut queue = vec![Task::Mismatch { range, pg, erp }];
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < self.concurrency && !self.stop.is_cancelled() {
                let Some(task) = queue.pop() else { break };
                running.push(self.handle(task));
            }
            let Some((range, outcome)) = running.next().await else {
                break;
            };
            match outcome {
                Ok(children) => queue.extend(children),
                Err(failure) => self.record_failure(&range, failure),
            }
        }
        let mut tally = self.tally();
        if !queue.is_empty() {
            tally.unresolved += queue.len() as u64;
            if tally.notes.len() < MAX_NOTES {
                tally
                    .notes
                    .push(format!("{} ranges left unchecked", queue.len()));
            }
        }
        // Why the run stopped matters more than any one range: always named.
        if let Some(reason) = tally.stop_reason.clone() {
            tally.notes.push(format!("run stopped: {reason}"));
        }
    }

    fn record_failure(&self, range: &SkuRange, failure: Failure) {
        match failure {
            Failure::Agent(error) if error.is_bad_answer() => {
                tracing::warn!(vendor_id = self.vendor_id, %range, %error, "agent answered garbage for a range; range left unresolved");
                self.tally().unresolved(format!("{range}: {error}"));
            }
            Failure::Agent(error) => {
                tracing::warn!(vendor_id = self.vendor_id, %range, %error, "agent call failed; stopping the run");
                self.tally().unresolved(format!("{range}: {error}"));
                self.stop(format!("agent failed: {error}"));
            }
            Failure::Database(error) => {
                tracing::error!(vendor_id = self.vendor_id, %range, error = ?error, "database error during reconciliation; stopping the run");
                self.tally().unresolved(format!("{range}: database error"));
                self.stop("database error");
            }
            Failure::Stopped => self.tally().unresolved(format!("{range}: not finished")),
        }
    }

    async fn handle(&self, task: Task) -> (SkuRange, Result<Vec<Task>, Failure>) {
        let range = match &task {
            Task::Check(range) | Task::Mismatch { range, .. } => range.clone(),
        };
        let outcome = self.narrow(task).await;
        (range, outcome)
    }

    async fn narrow(&self, task: Task) -> Result<Vec<Task>, Failure> {
        let (range, pg, erp) = match task {
            Task::Mismatch { range, pg, erp } => (range, pg, erp),
            Task::Check(range) => {
                let (pg, erp) = tokio::join!(
                    catalogue::digest(self.db, self.vendor_id, &range),
                    self.agent(self.erp.checksum(&range)),
                );
                let (pg, erp) = (pg?, erp.map_err(Failure::from)?);
                if in_step(&pg, &erp) {
                    return Ok(Vec::new());
                }
                (range, pg, erp)
            }
        };
        if pg.count <= LEAF_SIZE || erp.count <= LEAF_SIZE as u64 {
            self.compare(&range, &pg, erp.count).await?;
            return Ok(Vec::new());
        }
        let Some(median) = catalogue::median(self.db, self.vendor_id, &range, pg.count).await?
        else {
            // Postgres lost the range's rows since the digest: the next run looks again.
            self.tally()
                .unresolved(format!("{range}: Postgres changed during the search"));
            return Ok(Vec::new());
        };
        let (left, right) = range.split_at(&median);
        Ok(vec![Task::Check(left), Task::Check(right)])
    }

    /// Pages through the ERP's listing of the range, repairing each page, then deactivates
    /// what the complete listing lacks (never after a partial one).
    async fn compare(
        &self,
        range: &SkuRange,
        pg: &RangeDigest,
        erp_count: u64,
    ) -> Result<(), Failure> {
        // An agent that keeps listing past what it counted is answering garbage.
        let most = erp_count.saturating_add(self.page_size as u64);
        let mut listed: Vec<String> = Vec::new();
        loop {
            let page_range = match listed.last() {
                Some(last) => range.after(last),
                None => range.clone(),
            };
            let page = self
                .agent(self.erp.items(&page_range, self.page_size))
                .await?;
            self.tally().items_fetched += page.len() as u64;
            if (listed.len() + page.len()) as u64 > most {
                return Err(Failure::Agent(ErpError::Call(
                    crate::orders::agent_client::AgentCallError::BadResponse(format!(
                        "agent listed more than the {erp_count} items it counted"
                    )),
                )));
            }
            let full = page.len() == self.page_size;
            self.repair(&page).await?;
            listed.extend(page.into_iter().map(|item| item.sku));
            if !full {
                break;
            }
        }
        let deactivated = if listed.len() as i64 <= pg.count.max(LEAF_SIZE) {
            let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
            catalogue::deactivate_absent(self.db, self.vendor_id, range, &listed, pg.observed_at)
                .await?
        } else {
            // Postgres is the small side (the ERP filled a range it barely knows): diff here
            // rather than send Postgres the whole listing.
            let listed: HashSet<&str> = listed.iter().map(String::as_str).collect();
            let stored =
                catalogue::range_skus(self.db, self.vendor_id, range, pg.observed_at).await?;
            let absent: Vec<&str> = stored
                .iter()
                .map(String::as_str)
                .filter(|sku| !listed.contains(sku))
                .collect();
            catalogue::deactivate_skus(self.db, self.vendor_id, &absent, pg.observed_at).await?
        };
        if !deactivated.is_empty() {
            tracing::info!(vendor_id = self.vendor_id, count = deactivated.len(), %range, "items absent from the ERP deactivated");
        }
        self.tally().deactivated += deactivated.len() as u64;
        Ok(())
    }

    /// Writes the page's items that Postgres lacks or holds differently, through ingest.
    async fn repair(&self, page: &[ErpItem]) -> Result<(), Failure> {
        if page.is_empty() {
            return Ok(());
        }
        let skus: Vec<&str> = page.iter().map(|item| item.sku.as_str()).collect();
        let stored: HashMap<String, catalogue::StoredItem> =
            catalogue::stored_items(self.db, self.vendor_id, &skus)
                .await?
                .into_iter()
                .map(|s| (s.sku.clone(), s))
                .collect();
        let mut changed = Vec::new();
        let (mut restore_skus, mut restore_hashes, mut restore_active) =
            (Vec::new(), Vec::new(), Vec::new());
        for item in page {
            match (stored.get(&item.sku), item.content_hash.as_deref()) {
                (Some(s), Some(hash)) if s.content_hash == hash => {
                    if s.absent {
                        restore_skus.push(item.sku.as_str());
                        restore_hashes.push(hash);
                        restore_active.push(item.is_active);
                    }
                }
                _ => changed.push(&*item.raw),
            }
        }
        if !changed.is_empty() {
            let report = self.ingest.ingest_items(self.vendor_id, &changed).await?;
            let mut tally = self.tally();
            for result in report.results {
                let sku = result.sku.unwrap_or_default();
                match (result.status, result.reason.as_deref()) {
                    (RecordStatus::Processed, _) => tally.repaired += 1,
                    // Written meanwhile by a push with the ERP's very version.
                    (RecordStatus::Skipped, Some("no_changes")) => {}
                    (_, reason) => {
                        let reason = reason.unwrap_or("refused");
                        tracing::warn!(
                            vendor_id = self.vendor_id,
                            sku,
                            reason,
                            "drifted item not repaired"
                        );
                        tally.unresolved(format!("{sku:?}: {reason}"));
                    }
                }
            }
        }
        if !restore_skus.is_empty() {
            let restored = catalogue::restore_listed(
                self.db,
                self.vendor_id,
                &restore_skus,
                &restore_hashes,
                &restore_active,
            )
            .await?;
            self.tally().repaired += restored.len() as u64;
        }
        Ok(())
    }
}

/// Why an agent call gave nothing: the agent, or the run being stopped.
pub enum FailureKind {
    Agent(ErpError),
    Stopped,
}

impl From<FailureKind> for Failure {
    fn from(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Agent(error) => Self::Agent(error),
            FailureKind::Stopped => Self::Stopped,
        }
    }
}

pub fn in_step(pg: &RangeDigest, erp: &RangeChecksum) -> bool {
    pg.count as u64 == erp.count && pg.checksum == erp.checksum
}
