//! ERP code mappings: admin writes and the cached `resolve` ingest leans on.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    model::{
        CreateMapping, Mapping, MappingType, Resolved, SeedMappings, SeedOutcome, UpdateMapping,
    },
    queries::{self, MappingChanges, NewMapping},
};
use crate::{
    error::{AppError, ResultExt},
    pagination::{Page, Pagination},
};

const CACHE_CAPACITY: u64 = 10_000;
const HIT_TTL: Duration = Duration::from_secs(300);
/// Misses are cached too (an unmapped code in every item of a 5 000-item batch must not cost
/// 5 000 queries) but briefly, so a mapping added elsewhere shows up soon.
const MISS_TTL: Duration = Duration::from_secs(30);

type Key = (String, MappingType, String);

#[derive(Clone)]
pub struct MappingService {
    db: PgPool,
    cache: Cache<Key, Option<Resolved>>,
    db_lookups: Arc<AtomicU64>,
    /// This process's id in mapping-change announcements.
    instance: Arc<str>,
}

struct TtlByOutcome {
    hit: Duration,
    miss: Duration,
}

impl Expiry<Key, Option<Resolved>> for TtlByOutcome {
    fn expire_after_create(
        &self,
        _: &Key,
        value: &Option<Resolved>,
        _: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() { self.hit } else { self.miss })
    }
}

impl MappingService {
    pub fn new(db: PgPool) -> Self {
        Self::with_ttls(db, HIT_TTL, MISS_TTL)
    }

    pub fn with_ttls(db: PgPool, hit: Duration, miss: Duration) -> Self {
        let cache = Cache::builder()
            .support_invalidation_closures()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(TtlByOutcome { hit, miss })
            .build();
        Self {
            db,
            cache,
            db_lookups: Arc::default(),
            instance: Uuid::new_v4().simple().to_string().into(),
        }
    }

    /// How many lookups reached Postgres (each one query, whatever the number of codes).
    pub fn db_lookups(&self) -> u64 {
        self.db_lookups.load(Ordering::Relaxed)
    }

    /// The marketplace code of an ERP code, if an active mapping exists.
    pub async fn resolve(
        &self,
        vendor_id: &str,
        mapping_type: MappingType,
        erp_code: &str,
    ) -> Result<Option<Resolved>, AppError> {
        let mut found = self
            .resolve_many(vendor_id, mapping_type, &[erp_code.to_owned()])
            .await?;
        Ok(found.remove(erp_code).flatten())
    }

    /// Resolves many codes of one type: cached ones from memory, all the others in one query.
    pub async fn resolve_many(
        &self,
        vendor_id: &str,
        mapping_type: MappingType,
        erp_codes: &[String],
    ) -> Result<HashMap<String, Option<Resolved>>, AppError> {
        let mut out = HashMap::with_capacity(erp_codes.len());
        let mut missing = Vec::new();
        for code in erp_codes {
            if out.contains_key(code) {
                continue;
            }
            match self
                .cache
                .get(&(vendor_id.to_owned(), mapping_type, code.clone()))
                .await
            {
                Some(cached) => {
                    out.insert(code.clone(), cached);
                }
                None => {
                    out.insert(code.clone(), None);
                    missing.push(code.clone());
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        self.db_lookups.fetch_add(1, Ordering::Relaxed);
        let rows = queries::find_by_codes(&self.db, vendor_id, mapping_type, &missing).await?;
        let mut by_code: HashMap<String, Resolved> = rows
            .into_iter()
            .map(|m| {
                (
                    m.erp_code,
                    Resolved {
                        resto_code: m.resto_code,
                        resto_label: m.resto_label,
                    },
                )
            })
            .collect();
        for code in missing {
            let resolved = by_code.remove(&code);
            self.cache
                .insert(
                    (vendor_id.to_owned(), mapping_type, code.clone()),
                    resolved.clone(),
                )
                .await;
            out.insert(code, resolved);
        }
        Ok(out)
    }

    pub async fn list(
        &self,
        vendor_id: Option<&str>,
        mapping_type: Option<MappingType>,
        include_inactive: bool,
        pagination: Pagination,
    ) -> Result<Page<Mapping>, AppError> {
        let (rows, total) = queries::find_all(
            &self.db,
            vendor_id,
            mapping_type,
            include_inactive,
            i64::from(pagination.limit()),
            pagination.offset(),
        )
        .await?;
        Ok(Page::new(rows, pagination, total))
    }

    pub async fn get(&self, id: Uuid) -> Result<Mapping, AppError> {
        queries::find_by_id(&self.db, id)
            .await?
            .ok_or_else(|| mapping_not_found(id))
    }

    pub async fn create(&self, request: &CreateMapping) -> Result<Mapping, AppError> {
        let mapping = queries::insert(
            &self.db,
            &NewMapping {
                vendor_id: &request.vendor_id,
                mapping_type: request.mapping_type,
                erp_code: &request.erp_code,
                resto_code: &request.resto_code,
                resto_label: &request.resto_label,
                is_active: request.is_active.unwrap_or(true),
            },
        )
        .await
        .on_constraint("erp_code_mappings_vendor_type_code_key", || {
            AppError::Conflict(format!(
                "a {} mapping for ERP code {:?} of vendor {} already exists",
                request.mapping_type.as_str(),
                request.erp_code,
                request.vendor_id
            ))
        })?;
        self.forget(&mapping).await;
        self.announce(&mapping.vendor_id).await;
        Ok(mapping)
    }

    pub async fn update(&self, id: Uuid, request: &UpdateMapping) -> Result<Mapping, AppError> {
        let before = self.get(id).await?;
        let after = queries::update(
            &self.db,
            id,
            &MappingChanges {
                erp_code: request.erp_code.as_deref(),
                resto_code: request.resto_code.as_deref(),
                resto_label: request.resto_label.as_deref(),
                is_active: request.is_active,
            },
        )
        .await
        .on_constraint("erp_code_mappings_vendor_type_code_key", || {
            AppError::Conflict(
                "another mapping of this vendor and type already has that ERP code".into(),
            )
        })?
        .ok_or_else(|| mapping_not_found(id))?;
        // The old code may have stopped resolving, the new one may have started.
        self.forget(&before).await;
        self.forget(&after).await;
        self.announce(&after.vendor_id).await;
        Ok(after)
    }

    /// Soft delete: the row stays for history, `resolve` stops returning it at once.
    pub async fn deactivate(&self, id: Uuid) -> Result<Mapping, AppError> {
        let mapping = queries::deactivate(&self.db, id)
            .await?
            .ok_or_else(|| mapping_not_found(id))?;
        self.forget(&mapping).await;
        Ok(mapping)
    }

    /// Applies a vendor's mapping set; seeding the same set twice changes nothing.
    pub async fn seed(&self, request: &SeedMappings) -> Result<SeedOutcome, AppError> {
        let outcome = queries::bulk_upsert(&self.db, &request.vendor_id, &request.mappings).await?;
        for entry in &request.mappings {
            self.cache
                .invalidate(&(
                    request.vendor_id.to_string(),
                    entry.mapping_type,
                    entry.erp_code.clone(),
                ))
                .await;
        }
        self.announce(&request.vendor_id).await;
        tracing::info!(vendor_id = %request.vendor_id, ?outcome, "mappings seeded");
        Ok(outcome)
    }

    /// Handles an `erp_sync_mappings` notification: drops every cached entry of the vendor
    /// another replica changed.
    pub fn on_announcement(&self, payload: &str) {
        match payload.split_once(' ') {
            Some((instance, _)) if instance == &*self.instance => {}
            Some((_, vendor_id)) => self.forget_vendor(vendor_id),
            None => self.forget_vendor(payload),
        }
    }

    /// Drops every cached entry (after missed announcements).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// Drops every cached entry of a vendor.
    pub fn forget_vendor(&self, vendor_id: &str) {
        let vendor_id = vendor_id.to_owned();
        if let Err(error) = self
            .cache
            .invalidate_entries_if(move |key, _| key.0 == vendor_id)
        {
            tracing::warn!(%error, "could not invalidate the mapping cache");
        }
    }

    /// Tells the other replicas (see `startup`'s listener) that a vendor's mappings changed.
    async fn announce(&self, vendor_id: &str) {
        if let Err(error) = sqlx::query("SELECT pg_notify('erp_sync_mappings', $1)")
            .bind(vendor_id)
            .execute(&self.db)
            .await
        {
            tracing::warn!(%error, vendor_id, "could not announce a mapping change; other replicas see it within 5 minutes");
        }
    }

    async fn forget(&self, mapping: &Mapping) {
        if let Some(mapping_type) = MappingType::parse(&mapping.mapping_type) {
            self.cache
                .invalidate(&(
                    mapping.vendor_id.clone(),
                    mapping_type,
                    mapping.erp_code.clone(),
                ))
                .await;
        }
    }
}

fn mapping_not_found(id: Uuid) -> AppError {
    AppError::not_found(format!("no mapping with id {id}"))
}
