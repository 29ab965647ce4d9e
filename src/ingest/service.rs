//! The ingest pipeline, for items, stock and warehouses alike:
//! parse each record → check it against its rule table → keep the latest of duplicate keys →
//! skip unchanged (`no_changes`) and refuse older (`stale`) against what is stored → map ERP
//! codes → per chunk of 500, one light read of the stored versions and one bulk upsert of what
//! is new or changed. A request of several chunks is one transaction: a database failure
//! half-way writes nothing, never half a batch.
//!
//! Items are written in one of two orders, chosen per chunk from how the vendor's previous
//! chunk went (the outcomes are the same either way):
//! - read first: the light read, then the upsert of what is new or changed — the cheap path
//!   for a periodic full push, mostly unchanged (one light query per chunk);
//! - write first: the upsert of every mappable record, its guard refusing unchanged and older
//!   data, then the light read of only the keys it did not write, to tell `no_changes`,
//!   `stale` and unmapped apart — one round trip per chunk when the items are new or changed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use sqlx::{PgConnection, PgPool, Postgres, Transaction, pool::PoolConnection};
use uuid::Uuid;

use super::{
    model::{
        CHUNK_SIZE, IngestRecord, IngestReport, ItemRecord, KeyField, RecordResult, RecordStatus,
        StockRecord, WarehouseRecord,
    },
    queries::{self, ItemRows, StockRows, StoredVersion, WarehouseRows},
};
use crate::{
    domain::{is_code, quote},
    error::AppError,
    http::extract::missing_field,
    mappings::{MappingService, model::MappingType},
};

#[derive(Clone)]
pub struct IngestService {
    db: PgPool,
    mappings: MappingService,
    /// Per vendor: whether its last chunk of items was mostly unchanged (read it first).
    read_first: moka::sync::Cache<String, bool>,
}

/// Vendors whose last chunk is remembered (an unknown one is written first).
const WRITE_ORDER_VENDORS: u64 = 10_000;

impl IngestService {
    pub fn new(db: PgPool, mappings: MappingService) -> Self {
        Self {
            db,
            mappings,
            read_first: moka::sync::Cache::new(WRITE_ORDER_VENDORS),
        }
    }

    pub async fn ingest_items(
        &self,
        vendor_id: &str,
        records: &[&RawValue],
    ) -> Result<IngestReport, AppError> {
        let (candidates, mut results) = prepare::<ItemRecord>(records);
        let codes = self.resolve_item_codes(vendor_id, &candidates).await?;
        let mut db = Writer::for_records(&self.db, records.len()).await?;
        let mut read_first = self.read_first.get(vendor_id).unwrap_or(false);
        for chunk in candidates.chunks(CHUNK_SIZE) {
            let (outcomes, written) =
                write_items(db.conn(), vendor_id, chunk, &codes, read_first).await?;
            results.extend(outcomes);
            read_first = written * 2 < chunk.len();
        }
        db.finish().await?;
        if !candidates.is_empty() {
            self.read_first.insert(vendor_id.to_owned(), read_first);
        }
        Ok(IngestReport::from_results(results))
    }

    pub async fn ingest_warehouses(
        &self,
        vendor_id: &str,
        records: &[&RawValue],
    ) -> Result<IngestReport, AppError> {
        let (candidates, mut results) = prepare::<WarehouseRecord>(records);
        let mut db = Writer::for_records(&self.db, records.len()).await?;
        for chunk in candidates.chunks(CHUNK_SIZE) {
            results.extend(write_warehouses(db.conn(), vendor_id, chunk).await?);
        }
        db.finish().await?;
        Ok(IngestReport::from_results(results))
    }

    /// Stock of one warehouse. An unknown warehouse refuses the whole request (nothing written).
    pub async fn ingest_stock(
        &self,
        vendor_id: &str,
        erp_warehouse_id: &str,
        records: &[&RawValue],
    ) -> Result<IngestReport, AppError> {
        let mut db = Writer::for_records(&self.db, records.len()).await?;
        let warehouse_id = queries::warehouse_id(db.conn(), vendor_id, erp_warehouse_id)
            .await?
            .ok_or_else(|| {
                AppError::validation(
                    format!(
                        "unknown warehouse {}: push it to /api/sync/warehouses first",
                        quote(erp_warehouse_id)
                    ),
                    json!({ "warehouseId": ["unknown warehouse"] }),
                )
            })?;
        let (candidates, mut results) = prepare::<StockRecord>(records);
        for chunk in candidates.chunks(CHUNK_SIZE) {
            results.extend(write_stock(db.conn(), vendor_id, warehouse_id, chunk).await?);
        }
        db.finish().await?;
        Ok(IngestReport::from_results(results))
    }

    /// Every distinct code of the request, resolved through the mapping cache (one query per
    /// type for the codes not cached yet).
    async fn resolve_item_codes(
        &self,
        vendor_id: &str,
        items: &[(usize, ItemRecord<'_>)],
    ) -> Result<ResolvedCodes, AppError> {
        let mut codes = ResolvedCodes::default();
        for mapping_type in [
            MappingType::Unit,
            MappingType::Vat,
            MappingType::Family,
            MappingType::Subfamily,
        ] {
            let distinct: Vec<String> = items
                .iter()
                .filter_map(|(_, item)| erp_code(item, mapping_type))
                .collect::<HashSet<_>>()
                .into_iter()
                .map(str::to_owned)
                .collect();
            if distinct.is_empty() {
                continue;
            }
            let resolved = self
                .mappings
                .resolve_many(vendor_id, mapping_type, &distinct)
                .await?;
            for (code, mapping) in resolved {
                if let Some(mapping) = mapping {
                    codes
                        .0
                        .entry(mapping_type)
                        .or_default()
                        .insert(code, mapping.resto_code);
                }
            }
        }
        Ok(codes)
    }
}

/// One chunk of items, read first or written first; returns the outcomes and how many
/// records were written.
async fn write_items(
    db: &mut PgConnection,
    vendor_id: &str,
    chunk: &[(usize, ItemRecord<'_>)],
    codes: &ResolvedCodes,
    read_first: bool,
) -> Result<(Vec<RecordResult>, usize), AppError> {
    let mut stored = if read_first {
        let keys: Vec<&str> = chunk.iter().map(|(_, r)| r.key()).collect();
        stored_map(queries::item_versions(&mut *db, vendor_id, &keys).await?)
    } else {
        Stored::default()
    };
    let mut rows = ItemRows::default();
    let mut unmapped = HashMap::new();
    let mut dropped_codes: HashMap<&str, Vec<String>> = HashMap::new();
    for (_, item) in needing_write(chunk, &stored) {
        let (unit, vat) = (
            codes.get(MappingType::Unit, &item.unit_code),
            codes.get(MappingType::Vat, &item.vat_code),
        );
        let (Some(unit), Some(vat)) = (unit, vat) else {
            let reason = match unit {
                None => format!("unmapped_unit: {}", item.unit_code),
                Some(_) => format!("unmapped_vat: {}", item.vat_code),
            };
            unmapped.insert(item.key(), reason);
            continue;
        };
        rows.sku.push(&item.sku);
        rows.name.push(&item.name);
        rows.description.push(item.description.as_deref());
        rows.erp_unit_code.push(&item.unit_code);
        rows.erp_vat_code.push(&item.vat_code);
        rows.erp_family_code.push(item.family_code.as_deref());
        rows.erp_subfamily_code.push(item.subfamily_code.as_deref());
        rows.unit_code.push(unit);
        rows.vat_code.push(vat);
        // An unmapped family or subfamily is stored as null: the item is written, with a
        // warning so the agent sees what was dropped.
        for (mapping_type, code, column) in [
            (
                MappingType::Family,
                &item.family_code,
                &mut rows.family_code,
            ),
            (
                MappingType::Subfamily,
                &item.subfamily_code,
                &mut rows.subfamily_code,
            ),
        ] {
            let mapped = code.as_deref().and_then(|c| codes.get(mapping_type, c));
            if let (Some(code), None) = (code, mapped) {
                dropped_codes
                    .entry(item.key())
                    .or_default()
                    .push(format!("unmapped_{}: {code}", mapping_type.as_str()));
            }
            column.push(mapped);
        }
        rows.price.push(item.price);
        rows.is_active.push(item.is_active.unwrap_or(true));
        rows.content_hash.push(&item.content_hash);
        rows.erp_updated_at.push(item.last_modified_at);
    }
    let written: HashSet<String> = match (rows.sku.is_empty(), read_first) {
        (true, _) => Vec::new(),
        (false, true) => queries::upsert_items(&mut *db, vendor_id, &rows).await?,
        (false, false) => queries::upsert_changed_items(&mut *db, vendor_id, &rows).await?,
    }
    .into_iter()
    .collect();
    if !read_first && written.len() < chunk.len() {
        // Written first: what was not written is judged against what is stored.
        let rest: Vec<&str> = chunk
            .iter()
            .map(|(_, r)| r.key())
            .filter(|key| !written.contains(*key))
            .collect();
        stored = stored_map(queries::item_versions(&mut *db, vendor_id, &rest).await?);
    }
    let outcomes = classify(
        chunk,
        &stored,
        &written,
        |key| unmapped.remove(key),
        |key| dropped_codes.remove(key).unwrap_or_default(),
    );
    Ok((outcomes, written.len()))
}

async fn write_warehouses(
    db: &mut PgConnection,
    vendor_id: &str,
    chunk: &[(usize, WarehouseRecord<'_>)],
) -> Result<Vec<RecordResult>, AppError> {
    let keys: Vec<&str> = chunk.iter().map(|(_, r)| r.key()).collect();
    let stored = stored_map(queries::warehouse_versions(&mut *db, vendor_id, &keys).await?);
    let mut rows = WarehouseRows::default();
    for (_, w) in needing_write(chunk, &stored) {
        rows.erp_warehouse_id.push(&w.erp_warehouse_id);
        rows.name.push(&w.name);
        rows.address.push(w.address.as_deref());
        rows.is_active.push(w.is_active.unwrap_or(true));
        rows.content_hash.push(&w.content_hash);
        rows.erp_updated_at.push(w.last_modified_at);
    }
    let written: HashSet<String> = if rows.erp_warehouse_id.is_empty() {
        HashSet::new()
    } else {
        queries::upsert_warehouses(&mut *db, vendor_id, &rows)
            .await?
            .into_iter()
            .collect()
    };
    Ok(classify(chunk, &stored, &written, |_| None, |_| Vec::new()))
}

async fn write_stock(
    db: &mut PgConnection,
    vendor_id: &str,
    warehouse_id: Uuid,
    chunk: &[(usize, StockRecord<'_>)],
) -> Result<Vec<RecordResult>, AppError> {
    let keys: Vec<&str> = chunk.iter().map(|(_, r)| r.key()).collect();
    let targets = queries::stock_targets(&mut *db, vendor_id, warehouse_id, &keys).await?;
    let mut item_ids = HashMap::with_capacity(targets.len());
    let mut versions = Vec::with_capacity(targets.len());
    for target in targets {
        if let (Some(content_hash), Some(erp_updated_at)) =
            (target.content_hash, target.erp_updated_at)
        {
            versions.push(StoredVersion {
                key: target.sku.clone(),
                content_hash,
                erp_updated_at,
            });
        }
        item_ids.insert(target.sku, target.item_id);
    }
    let stored = stored_map(versions);
    let mut rows = StockRows::default();
    let mut sent = Vec::new();
    for (_, s) in needing_write(chunk, &stored) {
        let Some(item_id) = item_ids.get(s.key()) else {
            continue;
        };
        rows.item_id.push(*item_id);
        rows.quantity.push(s.quantity);
        rows.reserved_quantity
            .push(s.reserved_quantity.unwrap_or(Decimal::ZERO));
        rows.content_hash.push(&s.content_hash);
        rows.erp_updated_at.push(s.last_modified_at);
        sent.push(s.key());
    }
    let written: HashSet<String> = if sent.is_empty() {
        HashSet::new()
    } else {
        let ids: HashSet<Uuid> = queries::upsert_stock(&mut *db, vendor_id, warehouse_id, &rows)
            .await?
            .into_iter()
            .collect();
        sent.into_iter()
            .filter(|sku| ids.contains(&item_ids[*sku]))
            .map(str::to_owned)
            .collect()
    };
    Ok(classify(
        chunk,
        &stored,
        &written,
        |key| (!item_ids.contains_key(key)).then(|| "unknown_sku".to_owned()),
        |_| Vec::new(),
    ))
}

/// Where a request's chunks are written. Several chunks share one transaction, so a failure
/// half-way writes nothing; a single chunk's upsert is one statement, atomic already, so it
/// runs without BEGIN/COMMIT (two round trips fewer on the common incremental request).
enum Writer {
    Single(PoolConnection<Postgres>),
    Atomic(Transaction<'static, Postgres>),
}

impl Writer {
    async fn for_records(db: &PgPool, records: usize) -> Result<Self, AppError> {
        Ok(if records > CHUNK_SIZE {
            Self::Atomic(db.begin().await?)
        } else {
            Self::Single(db.acquire().await?)
        })
    }

    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Self::Single(conn) => conn,
            Self::Atomic(tx) => tx,
        }
    }

    async fn finish(self) -> Result<(), AppError> {
        if let Self::Atomic(tx) = self {
            tx.commit().await?;
        }
        Ok(())
    }
}

type Stored = HashMap<String, (String, DateTime<Utc>)>;

fn stored_map(versions: Vec<StoredVersion>) -> Stored {
    versions
        .into_iter()
        .map(|v| (v.key, (v.content_hash, v.erp_updated_at)))
        .collect()
}

/// The records that are new, or changed and not older than what is stored.
fn needing_write<'c, 'a, T: IngestRecord<'a>>(
    chunk: &'c [(usize, T)],
    stored: &Stored,
) -> impl Iterator<Item = &'c (usize, T)> {
    chunk
        .iter()
        .filter(|(_, record)| match stored.get(record.key()) {
            None => true,
            Some((hash, at)) => hash != record.content_hash() && *at <= record.last_modified_at(),
        })
}

/// Judges each record of a chunk, in the plan's order: unchanged (`no_changes`), older than
/// stored (`stale`), refused before writing (`refusal`: `unmapped_unit: X`, `unknown_sku`, …),
/// written (`processed`, with its `warnings`: what was dropped, `warning(key)`, and the
/// fields stored rounded), or refused by the upsert's guard because a concurrent request
/// stored a newer version after our read (`stale`).
fn classify<'a, T: IngestRecord<'a>>(
    chunk: &[(usize, T)],
    stored: &Stored,
    written: &HashSet<String>,
    mut refusal: impl FnMut(&str) -> Option<String>,
    mut warning: impl FnMut(&str) -> Vec<String>,
) -> Vec<RecordResult> {
    chunk
        .iter()
        .map(|(index, record)| {
            let key = record.key();
            match stored.get(key) {
                Some((hash, _)) if hash == record.content_hash() => {
                    skipped::<T>(*index, key, "no_changes")
                }
                Some((_, at)) if *at > record.last_modified_at() => {
                    skipped::<T>(*index, key, "stale")
                }
                _ => match refusal(key) {
                    Some(reason) => failed::<T>(*index, key, reason),
                    None if written.contains(key) => {
                        let mut result = outcome_of::<T>(*index, key, true);
                        result.warnings = warning(key);
                        result.warnings.extend(
                            record
                                .rounded()
                                .into_iter()
                                .map(|field| format!("rounded: {field}")),
                        );
                        result
                    }
                    None => outcome_of::<T>(*index, key, false),
                },
            }
        })
        .collect()
}

/// The item's ERP code of a mapping type.
fn erp_code<'r>(item: &'r ItemRecord<'_>, mapping_type: MappingType) -> Option<&'r str> {
    match mapping_type {
        MappingType::Unit => Some(&item.unit_code),
        MappingType::Vat => Some(&item.vat_code),
        MappingType::Family => item.family_code.as_deref(),
        MappingType::Subfamily => item.subfamily_code.as_deref(),
    }
}

/// ERP code → marketplace code, per mapping type; absent codes are unmapped.
#[derive(Default)]
struct ResolvedCodes(HashMap<MappingType, HashMap<String, String>>);

impl ResolvedCodes {
    fn get(&self, mapping_type: MappingType, erp_code: &str) -> Option<&str> {
        self.0.get(&mapping_type)?.get(erp_code).map(String::as_str)
    }
}

/// Parses and validates every record on its own, then keeps, for each key, the record with
/// the latest `lastModifiedAt` (the later one in the request on a tie); earlier duplicates are
/// reported `stale`. Returns the survivors sorted by key, and the results so far.
///
/// Sorted by key so that every upsert locks its rows in one global order: two requests
/// writing the same keys in opposite orders would otherwise deadlock. (Results are put back
/// in request order by [`IngestReport::from_results`].)
fn prepare<'a, T: IngestRecord<'a>>(raws: &[&'a RawValue]) -> (Vec<(usize, T)>, Vec<RecordResult>) {
    let mut results = Vec::new();
    let mut records: Vec<(usize, T)> = Vec::with_capacity(raws.len());
    for (index, raw) in raws.iter().enumerate() {
        match parse_record::<T>(raw) {
            Ok(record) => records.push((index, record)),
            Err(field) => results.push(failed::<T>(
                index,
                probe_key::<T>(raw).as_deref().unwrap_or_default(),
                format!("invalid: {field}"),
            )),
        }
    }
    // By key, and within a key the one to keep first (latest, then later in the request); the
    // others of the key follow it and are dropped in place: no second copy of the records.
    records.sort_unstable_by(|(ia, a), (ib, b)| {
        a.key()
            .cmp(b.key())
            .then_with(|| b.last_modified_at().cmp(&a.last_modified_at()))
            .then_with(|| ib.cmp(ia))
    });
    records.dedup_by(|(index, record), (_, kept)| {
        let superseded = record.key() == kept.key();
        if superseded {
            results.push(skipped::<T>(*index, record.key(), "stale"));
        }
        superseded
    });
    (records, results)
}

fn parse_record<'a, T: IngestRecord<'a>>(raw: &'a RawValue) -> Result<T, String> {
    // The fast path parses plainly; only a failing record is parsed again with path tracking,
    // to name the offending field.
    let record: T = serde_json::from_str(raw.get()).map_err(|_| failing_field::<T>(raw))?;
    record.check().map_err(str::to_owned)?;
    Ok(record)
}

fn failing_field<'a, T: IngestRecord<'a>>(raw: &'a RawValue) -> String {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(_) => "record".into(),
        Err(e) => {
            let path = e.path().to_string();
            if path.is_empty() || path == "." {
                // "missing field `unitCode`" at the root: the field (one of ours) is in the
                // message. Other root errors quote the input, which is not echoed.
                missing_field(&e.inner().to_string())
                    .unwrap_or("record")
                    .to_owned()
            } else {
                path
            }
        }
    }
}

/// The key of a record that failed to parse, for the result line, when it is a valid key (an
/// invalid one is not echoed back: it may be a megabyte, or hold control characters).
fn probe_key<'a, T: IngestRecord<'a>>(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        sku: Option<serde_json::Value>,
        #[serde(rename = "erpWarehouseId")]
        erp_warehouse_id: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_str(raw.get()).ok()?;
    let value = match T::KEY_FIELD {
        KeyField::Sku => probe.sku,
        KeyField::ErpWarehouseId => probe.erp_warehouse_id,
    };
    match value {
        Some(serde_json::Value::String(key)) if is_code(&key) => Some(key),
        _ => None,
    }
}

fn key_of(key: &str) -> Option<String> {
    (!key.is_empty()).then(|| key.to_owned())
}

fn failed<'a, T: IngestRecord<'a>>(index: usize, key: &str, reason: String) -> RecordResult {
    RecordResult::new(
        index,
        T::KEY_FIELD,
        key_of(key),
        RecordStatus::Failed,
        Some(reason),
    )
}

fn skipped<'a, T: IngestRecord<'a>>(index: usize, key: &str, reason: &str) -> RecordResult {
    RecordResult::new(
        index,
        T::KEY_FIELD,
        key_of(key),
        RecordStatus::Skipped,
        Some(reason.to_owned()),
    )
}

/// A record the upsert wrote, or one its guard refused because a newer version was stored
/// by a concurrent request after our snapshot.
fn outcome_of<'a, T: IngestRecord<'a>>(index: usize, key: &str, written: bool) -> RecordResult {
    if written {
        RecordResult::new(
            index,
            T::KEY_FIELD,
            key_of(key),
            RecordStatus::Processed,
            None,
        )
    } else {
        skipped::<T>(index, key, "stale")
    }
}
