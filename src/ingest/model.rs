//! Ingest request and response shapes. Records are parsed one by one, so one bad record fails
//! alone while the others go through.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{RefOr, Schema},
};

use super::rules::{self, Value};
use crate::domain::VendorId;

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
pub trait IngestRecord<'a>: Deserialize<'a> {
    /// `sku` or `erpWarehouseId`.
    const KEY_FIELD: KeyField;
    fn key(&self) -> &str;
    fn content_hash(&self) -> &str;
    fn last_modified_at(&self) -> DateTime<Utc>;
    /// The record against its rule table ([`rules`]); the failing JSON field otherwise.
    fn check(&self) -> Result<(), &'static str>;
    /// The decimal fields stored rounded to their column's scale.
    fn rounded(&self) -> Vec<&'static str>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    Sku,
    ErpWarehouseId,
}

/// An item as the ERP describes it (rules: [`rules::ITEM`]). Strings borrow from the request
/// body where they can.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord<'a> {
    #[serde(borrow)]
    pub sku: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub description: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub unit_code: Cow<'a, str>,
    #[serde(borrow)]
    pub vat_code: Cow<'a, str>,
    #[serde(borrow)]
    pub family_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub subfamily_code: Option<Cow<'a, str>>,
    #[serde(deserialize_with = "strict_number")]
    pub price: Decimal,
    pub is_active: Option<bool>,
    #[serde(borrow)]
    pub content_hash: Cow<'a, str>,
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
    fn check(&self) -> Result<(), &'static str> {
        rules::ITEM.check(self.values())
    }
    fn rounded(&self) -> Vec<&'static str> {
        rules::ITEM.rounded(self.values())
    }
}

impl ItemRecord<'_> {
    /// The fields in [`rules::ITEM`]'s order.
    fn values(&self) -> [Value<'_>; 11] {
        [
            Value::Str(Some(&self.sku)),
            Value::Str(Some(&self.name)),
            Value::Str(self.description.as_deref()),
            Value::Str(Some(&self.unit_code)),
            Value::Str(Some(&self.vat_code)),
            Value::Str(self.family_code.as_deref()),
            Value::Str(self.subfamily_code.as_deref()),
            Value::Decimal(Some(self.price)),
            Value::Bool(self.is_active),
            Value::Str(Some(&self.content_hash)),
            Value::Time(self.last_modified_at),
        ]
    }
}

/// One stock level (rules: [`rules::STOCK`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockRecord<'a> {
    #[serde(borrow)]
    pub sku: Cow<'a, str>,
    #[serde(deserialize_with = "strict_number")]
    pub quantity: Decimal,
    #[serde(default, deserialize_with = "strict_optional_number")]
    pub reserved_quantity: Option<Decimal>,
    #[serde(borrow)]
    pub content_hash: Cow<'a, str>,
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
    fn check(&self) -> Result<(), &'static str> {
        rules::STOCK.check(self.values())
    }
    fn rounded(&self) -> Vec<&'static str> {
        rules::STOCK.rounded(self.values())
    }
}

impl StockRecord<'_> {
    /// The fields in [`rules::STOCK`]'s order.
    fn values(&self) -> [Value<'_>; 5] {
        [
            Value::Str(Some(&self.sku)),
            Value::Decimal(Some(self.quantity)),
            Value::Decimal(self.reserved_quantity),
            Value::Str(Some(&self.content_hash)),
            Value::Time(self.last_modified_at),
        ]
    }
}

/// A warehouse (rules: [`rules::WAREHOUSE`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseRecord<'a> {
    #[serde(borrow)]
    pub erp_warehouse_id: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub address: Option<Cow<'a, str>>,
    pub is_active: Option<bool>,
    #[serde(borrow)]
    pub content_hash: Cow<'a, str>,
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
    fn check(&self) -> Result<(), &'static str> {
        rules::WAREHOUSE.check([
            Value::Str(Some(&self.erp_warehouse_id)),
            Value::Str(Some(&self.name)),
            Value::Str(self.address.as_deref()),
            Value::Bool(self.is_active),
            Value::Str(Some(&self.content_hash)),
            Value::Time(self.last_modified_at),
        ])
    }
    fn rounded(&self) -> Vec<&'static str> {
        Vec::new() // no decimal field
    }
}

/// A JSON number, never a string that looks like one (`"1.5"` is `invalid`): an agent that
/// sends strings has a bug worth seeing, and strings are not what the schema says.
struct StrictNumber(Decimal);

impl<'de> Deserialize<'de> for StrictNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl serde::de::Visitor<'_> for NumberVisitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
                Ok(Decimal::from(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
                Ok(Decimal::from(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Decimal, E> {
                // As rust_decimal parses a float: its shortest decimal form.
                v.to_string()
                    .parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
        deserializer.deserialize_any(NumberVisitor).map(Self)
    }
}

fn strict_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    StrictNumber::deserialize(deserializer).map(|n| n.0)
}

fn strict_optional_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    Option::<StrictNumber>::deserialize(deserializer).map(|n| n.map(|n| n.0))
}

/// The records' OpenAPI schemas come from their rule tables.
macro_rules! schema_from_rules {
    ($record:ident, $rules:expr) => {
        impl PartialSchema for $record<'_> {
            fn schema() -> RefOr<Schema> {
                $rules.schema()
            }
        }
        impl ToSchema for $record<'_> {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($rules.name)
            }
        }
    };
}

schema_from_rules!(ItemRecord, rules::ITEM);
schema_from_rules!(StockRecord, rules::STOCK);
schema_from_rules!(WarehouseRecord, rules::WAREHOUSE);

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
    /// On a `processed` record, what was written other than sent: `unmapped_family: X`,
    /// `unmapped_subfamily: X` (stored as null), `rounded: <field>` (stored rounded to the
    /// column's scale). Absent when there is nothing to report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
            warnings: Vec::new(),
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
    /// One line per ingest request: the counts and the three most frequent reasons a record
    /// was skipped or failed (`unmapped_unit: KG ×12`), so a partly failed 200 is visible.
    pub fn log_summary(&self, kind: &'static str, vendor_id: &str) {
        let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
        for reason in self.results.iter().filter_map(|r| r.reason.as_deref()) {
            *reasons.entry(reason).or_default() += 1;
        }
        let mut top: Vec<(&str, usize)> = reasons.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top_reasons = top
            .iter()
            .take(3)
            .map(|(reason, n)| format!("{} ×{n}", crate::orders::response::printable(reason, 120)))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(
            kind,
            vendor_id,
            processed = self.processed,
            skipped = self.skipped,
            failed = self.failed,
            top_reasons,
            "ingest request done"
        );
    }

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
    vendor_id: VendorId,
    /// At most 500 records (5 000 on `/batch`).
    #[schema(max_items = 5000)]
    items: Vec<ItemRecord<'static>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct StockRequest {
    vendor_id: VendorId,
    #[schema(schema_with = warehouse_id_schema)]
    warehouse_id: String,
    /// At most 500 records (5 000 on `/batch`).
    #[schema(max_items = 5000)]
    stock: Vec<StockRecord<'static>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct WarehousesRequest {
    vendor_id: VendorId,
    /// At most 500 records (5 000 on `/batch`).
    #[schema(max_items = 5000)]
    warehouses: Vec<WarehouseRecord<'static>>,
}

fn warehouse_id_schema() -> RefOr<Schema> {
    rules::STOCK_WAREHOUSE_ID.schema()
}
