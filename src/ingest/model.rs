//! Ingest request and response shapes. Records are parsed one by one, so one bad record fails
//! alone while the others go through.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use validator::{Validate, ValidationError};

use crate::domain::{validate_code, validate_content_hash};

/// Records per incremental request, and per `/batch` request.
pub const INCREMENTAL_LIMIT: usize = 500;
pub const BATCH_LIMIT: usize = 5_000;
/// Records written per transaction.
pub const CHUNK_SIZE: usize = 500;

/// Envelopes as they arrive: the records stay raw until each is parsed on its own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemsEnvelope<'a> {
    #[serde(borrow)]
    pub items: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockEnvelope<'a> {
    pub warehouse_id: String,
    #[serde(borrow)]
    pub stock: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarehousesEnvelope<'a> {
    #[serde(borrow)]
    pub warehouses: Vec<&'a RawValue>,
}

/// What every ingested record has: a key, a content hash, and the ERP's modification time.
pub trait IngestRecord<'a>: Deserialize<'a> + Validate {
    /// `sku` or `erpWarehouseId`.
    const KEY_FIELD: KeyField;
    fn key(&self) -> &str;
    fn content_hash(&self) -> &str;
    fn last_modified_at(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    Sku,
    ErpWarehouseId,
}

/// An item as the ERP describes it. Strings borrow from the request body where they can.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord<'a> {
    #[validate(custom(function = "validate_code"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub sku: Cow<'a, str>,
    #[validate(length(min = 1, max = 255))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub name: Cow<'a, str>,
    #[validate(length(max = 10000))]
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub description: Option<Cow<'a, str>>,
    #[validate(custom(function = "validate_code"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub unit_code: Cow<'a, str>,
    #[validate(custom(function = "validate_code"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub vat_code: Cow<'a, str>,
    #[validate(custom(function = "validate_code"))]
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub family_code: Option<Cow<'a, str>>,
    #[validate(custom(function = "validate_code"))]
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub subfamily_code: Option<Cow<'a, str>>,
    /// Unit price excluding VAT, ≥ 0, at most 4 decimals kept.
    #[validate(custom(function = "validate_price"))]
    #[schema(value_type = f64)]
    pub price: Decimal,
    pub is_active: Option<bool>,
    #[validate(custom(function = "validate_content_hash"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub content_hash: Cow<'a, str>,
    #[validate(custom(function = "validate_modified_at"))]
    pub last_modified_at: DateTime<Utc>,
}

impl<'a> IngestRecord<'a> for ItemRecord<'a> {
    const KEY_FIELD: KeyField = KeyField::Sku;
    fn key(&self) -> &str {
        &self.sku
    }
    fn content_hash(&self) -> &str {
        &self.content_hash
    }
    fn last_modified_at(&self) -> DateTime<Utc> {
        self.last_modified_at
    }
}

#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockRecord<'a> {
    #[validate(custom(function = "validate_code"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub sku: Cow<'a, str>,
    #[validate(custom(function = "validate_quantity"))]
    #[schema(value_type = f64)]
    pub quantity: Decimal,
    #[validate(custom(function = "validate_reserved"))]
    #[schema(value_type = Option<f64>)]
    pub reserved_quantity: Option<Decimal>,
    #[validate(custom(function = "validate_content_hash"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub content_hash: Cow<'a, str>,
    #[validate(custom(function = "validate_modified_at"))]
    pub last_modified_at: DateTime<Utc>,
}

impl<'a> IngestRecord<'a> for StockRecord<'a> {
    const KEY_FIELD: KeyField = KeyField::Sku;
    fn key(&self) -> &str {
        &self.sku
    }
    fn content_hash(&self) -> &str {
        &self.content_hash
    }
    fn last_modified_at(&self) -> DateTime<Utc> {
        self.last_modified_at
    }
}

#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseRecord<'a> {
    #[validate(custom(function = "validate_code"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub erp_warehouse_id: Cow<'a, str>,
    #[validate(length(min = 1, max = 255))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub name: Cow<'a, str>,
    #[validate(length(max = 2000))]
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub address: Option<Cow<'a, str>>,
    pub is_active: Option<bool>,
    #[validate(custom(function = "validate_content_hash"))]
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub content_hash: Cow<'a, str>,
    #[validate(custom(function = "validate_modified_at"))]
    pub last_modified_at: DateTime<Utc>,
}

impl<'a> IngestRecord<'a> for WarehouseRecord<'a> {
    const KEY_FIELD: KeyField = KeyField::ErpWarehouseId;
    fn key(&self) -> &str {
        &self.erp_warehouse_id
    }
    fn content_hash(&self) -> &str {
        &self.content_hash
    }
    fn last_modified_at(&self) -> DateTime<Utc> {
        self.last_modified_at
    }
}

fn invalid(code: &'static str) -> ValidationError {
    ValidationError::new(code)
}

/// numeric(12,4): 0 ≤ price < 10^8.
fn validate_price(price: &Decimal) -> Result<(), ValidationError> {
    if price.is_sign_negative() || *price >= Decimal::from(100_000_000) {
        Err(invalid("range"))
    } else {
        Ok(())
    }
}

/// numeric(14,3): |quantity| < 10^11 (an ERP may report negative stock).
fn validate_quantity(quantity: &Decimal) -> Result<(), ValidationError> {
    if quantity.abs() >= Decimal::from(100_000_000_000_i64) {
        Err(invalid("range"))
    } else {
        Ok(())
    }
}

fn validate_reserved(quantity: &Decimal) -> Result<(), ValidationError> {
    if quantity.is_sign_negative() {
        Err(invalid("range"))
    } else {
        validate_quantity(quantity)
    }
}

/// A timestamp from the future would make every later real update "stale": refuse it
/// (a day of clock skew is tolerated).
fn validate_modified_at(at: &DateTime<Utc>) -> Result<(), ValidationError> {
    if *at > Utc::now() + chrono::Duration::days(1) {
        Err(invalid("future"))
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    Processed,
    Skipped,
    Failed,
}

/// The outcome of one record, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordResult {
    /// Position of the record in the request, from 0.
    pub index: usize,
    /// The record's key (items and stock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The record's key (warehouses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erp_warehouse_id: Option<String>,
    pub status: RecordStatus,
    /// `no_changes`, `stale`, `unmapped_unit: X`, `unmapped_vat: X`, `unknown_sku`, `invalid: <field>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RecordResult {
    pub fn new(
        index: usize,
        field: KeyField,
        key: Option<String>,
        status: RecordStatus,
        reason: Option<String>,
    ) -> Self {
        let (sku, erp_warehouse_id) = match field {
            KeyField::Sku => (key, None),
            KeyField::ErpWarehouseId => (None, key),
        };
        Self {
            index,
            sku,
            erp_warehouse_id,
            status,
            reason,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    pub processed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub results: Vec<RecordResult>,
}

impl IngestReport {
    /// The record counts, for the metrics.
    pub fn counts(&self, kind: &'static str) -> crate::ops::metrics::IngestCounts {
        crate::ops::metrics::IngestCounts {
            kind,
            processed: self.processed,
            skipped: self.skipped,
            failed: self.failed,
        }
    }

    pub fn from_results(mut results: Vec<RecordResult>) -> Self {
        results.sort_by_key(|r| r.index);
        let count = |s| results.iter().filter(|r| r.status == s).count();
        Self {
            processed: count(RecordStatus::Processed),
            skipped: count(RecordStatus::Skipped),
            failed: count(RecordStatus::Failed),
            results,
        }
    }
}

/// Documentation-only request schemas (the handlers parse records one by one).
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct ItemsRequest {
    vendor_id: String,
    items: Vec<ItemRecord<'static>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct StockRequest {
    vendor_id: String,
    /// The ERP's id of the warehouse all these rows belong to.
    warehouse_id: String,
    stock: Vec<StockRecord<'static>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct WarehousesRequest {
    vendor_id: String,
    warehouses: Vec<WarehouseRecord<'static>>,
}
