//! One table of field rules per record type: what each JSON field must be and which column it
//! lands in. The table drives three things so they cannot disagree: the per-record check
//! (`invalid: <field>`), the records' OpenAPI schemas, and a test that compares every rule with
//! the column's definition in `information_schema` (varchar length, numeric precision/scale).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use utoipa::openapi::{
    KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type, schema::SchemaType,
};

use crate::domain::{
    CODE_MAX_CHARS, CODE_PATTERN, CONTENT_HASH_MAX_CHARS, CONTENT_HASH_PATTERN, LINE_PATTERN,
    TEXT_PATTERN, is_code, is_content_hash, is_line, is_text,
};

/// What a field must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ERP key or code: `varchar(max)`, not blank, no control, bidi or zero-width character.
    Code {
        max_chars: usize,
    },
    /// One-line text: `varchar(max)`, at least one character, no control character.
    Line {
        max_chars: usize,
    },
    /// Multi-line text: a `text` column; tabs and line breaks allowed, no other control
    /// character; `max_chars` is erp-sync's own bound (the column has none).
    Text {
        max_chars: usize,
    },
    /// `varchar(max)` of hex or base64.
    ContentHash {
        max_chars: usize,
    },
    /// `numeric(precision, scale)`: the value rounded to `scale` places (half away from zero,
    /// as Postgres rounds) must have at most `precision - scale` integer digits.
    Decimal {
        precision: u32,
        scale: u32,
        non_negative: bool,
    },
    /// `timestamptz`, within Postgres' range and at most a day in the future.
    Timestamp,
    Bool,
}

/// One field of a record type.
#[derive(Debug, Clone, Copy)]
pub struct FieldRule {
    /// The JSON field name.
    pub field: &'static str,
    /// The `(table, column)` the value is stored in, or checked against.
    pub column: (&'static str, &'static str),
    pub kind: Kind,
    pub required: bool,
    pub description: &'static str,
}

/// The rules of one record type.
#[derive(Debug, Clone, Copy)]
pub struct RecordRules<const N: usize> {
    /// OpenAPI schema name.
    pub name: &'static str,
    pub fields: [FieldRule; N],
}

/// A record's field value, as the check sees it.
#[derive(Debug, Clone, Copy)]
pub enum Value<'r> {
    Str(Option<&'r str>),
    Decimal(Option<Decimal>),
    Time(DateTime<Utc>),
    Bool(Option<bool>),
}

/// The oldest instant Postgres stores in a `timestamptz`: 4714-11-24 00:00:00 BC (UTC).
pub fn earliest_timestamp() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(-4713, 11, 24)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a valid date")
        .and_utc()
}

/// An ERP timestamp from the future would make every later real update "stale"; a day of
/// clock skew is tolerated.
pub fn latest_timestamp(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::days(1)
}

/// Postgres' rounding to `scale` places.
pub fn round_to_scale(value: Decimal, scale: u32) -> Decimal {
    value.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero)
}

/// The smallest magnitude that overflows `numeric(precision, scale)` once rounded:
/// `10^(precision - scale) - 0.5 × 10^-scale`.
pub fn decimal_overflow_bound(precision: u32, scale: u32) -> Decimal {
    let integer_digits = precision - scale;
    Decimal::from_i128_with_scale(10_i128.pow(integer_digits), 0) - Decimal::new(5, scale + 1)
}

impl Kind {
    pub fn accepts(&self, value: Value<'_>) -> bool {
        match (*self, value) {
            (_, Value::Str(None) | Value::Decimal(None) | Value::Bool(_)) => true,
            (Self::Code { max_chars }, Value::Str(Some(s))) => {
                is_code(s) && s.chars().count() <= max_chars
            }
            (Self::Line { max_chars }, Value::Str(Some(s))) => {
                !s.is_empty() && s.chars().count() <= max_chars && is_line(s)
            }
            (Self::Text { max_chars }, Value::Str(Some(s))) => {
                s.chars().count() <= max_chars && is_text(s)
            }
            (Self::ContentHash { max_chars }, Value::Str(Some(s))) => {
                is_content_hash(s) && s.len() <= max_chars
            }
            (
                Self::Decimal {
                    precision,
                    scale,
                    non_negative,
                },
                Value::Decimal(Some(d)),
            ) => {
                !(non_negative && d.is_sign_negative() && !d.is_zero())
                    && round_to_scale(d, scale).abs() < decimal_overflow_bound(precision, scale)
            }
            (Self::Timestamp, Value::Time(at)) => {
                at >= earliest_timestamp() && at <= latest_timestamp(Utc::now())
            }
            // A value of another shape than its rule: a wrong table, caught by the tests.
            _ => false,
        }
    }

    fn schema(&self) -> ObjectBuilder {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        match *self {
            Self::Code { max_chars } => string()
                .min_length(Some(1))
                .max_length(Some(max_chars))
                .pattern(Some(CODE_PATTERN)),
            Self::Line { max_chars } => string()
                .min_length(Some(1))
                .max_length(Some(max_chars))
                .pattern(Some(LINE_PATTERN)),
            Self::Text { max_chars } => string()
                .max_length(Some(max_chars))
                .pattern(Some(TEXT_PATTERN)),
            Self::ContentHash { max_chars } => string()
                .min_length(Some(1))
                .max_length(Some(max_chars))
                .pattern(Some(CONTENT_HASH_PATTERN)),
            Self::Decimal {
                precision,
                scale,
                non_negative,
            } => {
                let bound = decimal_overflow_bound(precision, scale)
                    .try_into()
                    .unwrap_or(f64::MAX);
                let schema = ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .exclusive_maximum(Some(bound));
                if non_negative {
                    schema.minimum(Some(0))
                } else {
                    schema.exclusive_minimum(Some(-bound))
                }
            }
            Self::Timestamp => {
                string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            }
            Self::Bool => ObjectBuilder::new().schema_type(Type::Boolean),
        }
    }
}

impl FieldRule {
    pub fn schema(&self) -> RefOr<Schema> {
        self.kind
            .schema()
            .description(Some(self.description))
            .into()
    }
}

impl<const N: usize> RecordRules<N> {
    /// The first field whose value breaks its rule. `values` are in the table's order.
    pub fn check(&self, values: [Value<'_>; N]) -> Result<(), &'static str> {
        for (rule, value) in self.fields.iter().zip(values) {
            if !rule.kind.accepts(value) {
                return Err(rule.field);
            }
        }
        Ok(())
    }

    /// The decimal fields whose value has more places than their column keeps: stored
    /// rounded (half away from zero), reported to the agent as `rounded: <field>` warnings.
    pub fn rounded(&self, values: [Value<'_>; N]) -> Vec<&'static str> {
        self.fields
            .iter()
            .zip(values)
            .filter_map(|(rule, value)| match (rule.kind, value) {
                (Kind::Decimal { scale, .. }, Value::Decimal(Some(d)))
                    if round_to_scale(d, scale) != d =>
                {
                    Some(rule.field)
                }
                _ => None,
            })
            .collect()
    }

    /// The record's OpenAPI schema, from the table.
    pub fn schema(&self) -> RefOr<Schema> {
        let mut object = ObjectBuilder::new().schema_type(Type::Object);
        for rule in &self.fields {
            let mut field = rule.kind.schema().description(Some(rule.description));
            if !rule.required {
                field = field.schema_type(nullable(&rule.kind));
            }
            object = object.property(rule.field, field);
            if rule.required {
                object = object.required(rule.field);
            }
        }
        object.into()
    }
}

fn nullable(kind: &Kind) -> SchemaType {
    let base = match kind {
        Kind::Decimal { .. } => Type::Number,
        Kind::Bool => Type::Boolean,
        _ => Type::String,
    };
    SchemaType::Array(vec![base, Type::Null])
}

const fn rule(
    field: &'static str,
    column: (&'static str, &'static str),
    kind: Kind,
    required: bool,
    description: &'static str,
) -> FieldRule {
    FieldRule {
        field,
        column,
        kind,
        required,
        description,
    }
}

const CODE: Kind = Kind::Code {
    max_chars: CODE_MAX_CHARS,
};
const HASH: Kind = Kind::ContentHash {
    max_chars: CONTENT_HASH_MAX_CHARS,
};
const fn line(max_chars: usize) -> Kind {
    Kind::Line { max_chars }
}
const fn text(max_chars: usize) -> Kind {
    Kind::Text { max_chars }
}
const fn decimal(precision: u32, scale: u32, non_negative: bool) -> Kind {
    Kind::Decimal {
        precision,
        scale,
        non_negative,
    }
}
const REQUIRED: bool = true;
const OPTIONAL: bool = false;
const NON_NEGATIVE: bool = true;
const SIGNED: bool = false;
const HASH_DOC: &str =
    "Whatever the agent computes over the record (hex or base64), compared for equality only.";
const MODIFIED_DOC: &str =
    "RFC 3339; the ERP's modification time. From 4714-11-24 BC to at most a day in the future.";

// One row per field, kept on one line each so the tables read as tables.
#[rustfmt::skip]
pub const ITEM: RecordRules<11> = RecordRules {
    name: "ItemRecord",
    fields: [
        rule("sku", ("items", "sku"), CODE, REQUIRED, "The ERP's article code: the item's key."),
        rule("name", ("items", "name"), line(255), REQUIRED, "Label, one line."),
        rule("description", ("items", "description"), text(10_000), OPTIONAL, "Free text; tabs and line breaks allowed."),
        rule("unitCode", ("items", "erp_unit_code"), CODE, REQUIRED, "ERP unit code; must have a `unit` mapping."),
        rule("vatCode", ("items", "erp_vat_code"), CODE, REQUIRED, "ERP VAT code; must have a `vat` mapping."),
        rule("familyCode", ("items", "erp_family_code"), CODE, OPTIONAL, "ERP family code; null when unmapped."),
        rule("subfamilyCode", ("items", "erp_subfamily_code"), CODE, OPTIONAL, "ERP subfamily code; null when unmapped."),
        rule("price", ("items", "price"), decimal(12, 4, NON_NEGATIVE), REQUIRED,
            "Unit price excluding VAT, >= 0; stored rounded to 4 decimals (half away from zero), must then be < 10^8."),
        rule("isActive", ("items", "is_active"), Kind::Bool, OPTIONAL, "Default true."),
        rule("contentHash", ("items", "content_hash"), HASH, REQUIRED, HASH_DOC),
        rule("lastModifiedAt", ("items", "erp_updated_at"), Kind::Timestamp, REQUIRED, MODIFIED_DOC),
    ],
};

#[rustfmt::skip]
pub const STOCK: RecordRules<5> = RecordRules {
    name: "StockRecord",
    fields: [
        // Stock rows hold the item's id; the sku is the items table's key.
        rule("sku", ("items", "sku"), CODE, REQUIRED, "The item's sku (pushed to /api/sync/items before)."),
        rule("quantity", ("stock", "quantity"), decimal(14, 3, SIGNED), REQUIRED,
            "Quantity on hand (may be negative); stored rounded to 3 decimals, must then be within ±10^11."),
        rule("reservedQuantity", ("stock", "reserved_quantity"), decimal(14, 3, NON_NEGATIVE), OPTIONAL,
            "Reserved quantity, >= 0, default 0; stored rounded to 3 decimals, must then be < 10^11."),
        rule("contentHash", ("stock", "content_hash"), HASH, REQUIRED, HASH_DOC),
        rule("lastModifiedAt", ("stock", "erp_updated_at"), Kind::Timestamp, REQUIRED, MODIFIED_DOC),
    ],
};

#[rustfmt::skip]
pub const WAREHOUSE: RecordRules<6> = RecordRules {
    name: "WarehouseRecord",
    fields: [
        rule("erpWarehouseId", ("warehouses", "erp_warehouse_id"), CODE, REQUIRED, "The ERP's warehouse id: the warehouse's key."),
        rule("name", ("warehouses", "name"), line(255), REQUIRED, "Label, one line."),
        rule("address", ("warehouses", "address"), text(2_000), OPTIONAL, "Free text; tabs and line breaks allowed."),
        rule("isActive", ("warehouses", "is_active"), Kind::Bool, OPTIONAL, "Default true."),
        rule("contentHash", ("warehouses", "content_hash"), HASH, REQUIRED, HASH_DOC),
        rule("lastModifiedAt", ("warehouses", "erp_updated_at"), Kind::Timestamp, REQUIRED, MODIFIED_DOC),
    ],
};

/// `warehouseId` of a stock request: the ERP's warehouse id.
pub const STOCK_WAREHOUSE_ID: FieldRule = rule(
    "warehouseId",
    ("warehouses", "erp_warehouse_id"),
    CODE,
    true,
    "The ERP's id of the warehouse all these rows belong to (pushed to /api/sync/warehouses before).",
);

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn dec(s: &str) -> Value<'static> {
        Value::Decimal(Some(Decimal::from_str(s).unwrap()))
    }

    #[test]
    fn decimals_are_judged_after_rounding_to_the_column() {
        let price = ITEM.fields[7].kind;
        assert!(price.accepts(dec("99999999.99994")));
        assert!(!price.accepts(dec("99999999.99995")), "rounds to 10^8");
        assert!(!price.accepts(dec("99999999.99999")));
        assert!(!price.accepts(dec("-0.01")));
        assert!(price.accepts(dec("-0")), "negative zero is zero");
        let quantity = STOCK.fields[1].kind;
        assert!(quantity.accepts(dec("-99999999999.9994")));
        assert!(!quantity.accepts(dec("99999999999.9999")));
        assert!(!quantity.accepts(dec("-99999999999.9995")));
        assert_eq!(decimal_overflow_bound(12, 4).to_string(), "99999999.99995");
    }

    #[test]
    fn timestamps_stay_within_postgres_range_and_a_day_ahead() {
        let at = STOCK.fields[4].kind;
        assert!(at.accepts(Value::Time(earliest_timestamp())));
        assert!(!at.accepts(Value::Time(
            earliest_timestamp() - chrono::Duration::microseconds(1)
        )));
        assert!(at.accepts(Value::Time(Utc::now() + chrono::Duration::hours(23))));
        assert!(!at.accepts(Value::Time(Utc::now() + chrono::Duration::hours(25))));
    }

    #[test]
    fn a_value_of_the_wrong_shape_never_passes() {
        assert!(!Kind::Timestamp.accepts(Value::Str(Some("x"))));
        assert!(!CODE.accepts(Value::Time(Utc::now())));
    }
}
