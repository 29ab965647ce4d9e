//! ERP code mapping shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

use crate::domain::{VendorId, schema, validate_code, validate_line};

/// What an ERP code stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MappingType {
    Unit,
    Vat,
    Family,
    Subfamily,
}

impl MappingType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unit => "unit",
            Self::Vat => "vat",
            Self::Family => "family",
            Self::Subfamily => "subfamily",
        }
    }

    /// The inverse of [`as_str`](Self::as_str), for values read back from the table.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Unit, Self::Vat, Self::Family, Self::Subfamily]
            .into_iter()
            .find(|t| t.as_str() == value)
    }
}

/// One mapping row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Mapping {
    pub id: Uuid,
    pub vendor_id: String,
    /// unit, vat, family or subfamily.
    pub mapping_type: String,
    pub erp_code: String,
    pub resto_code: String,
    pub resto_label: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `resolve` answers: the marketplace code and label of an ERP code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub resto_code: String,
    pub resto_label: String,
}

#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateMapping {
    pub vendor_id: VendorId,
    pub mapping_type: MappingType,
    #[validate(custom(function = "validate_code"))]
    #[schema(schema_with = schema::code_required)]
    pub erp_code: String,
    #[validate(custom(function = "validate_code"))]
    #[schema(schema_with = schema::code_required)]
    pub resto_code: String,
    #[validate(length(min = 1, max = 255), custom(function = "validate_line"))]
    #[schema(schema_with = schema::line::<1, 255>)]
    pub resto_label: String,
    pub is_active: Option<bool>,
}

/// Fields to change; the vendor and type of a mapping never change.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMapping {
    #[validate(custom(function = "validate_code"))]
    #[schema(schema_with = schema::optional_code)]
    pub erp_code: Option<String>,
    #[validate(custom(function = "validate_code"))]
    #[schema(schema_with = schema::optional_code)]
    pub resto_code: Option<String>,
    #[validate(length(min = 1, max = 255), custom(function = "validate_line"))]
    #[schema(schema_with = schema::optional_line::<1, 255>)]
    pub resto_label: Option<String>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedEntry {
    pub mapping_type: MappingType,
    #[validate(custom(function = "validate_code"))]
    #[schema(schema_with = schema::code_required)]
    pub erp_code: String,
    #[validate(custom(function = "validate_code"))]
    #[schema(schema_with = schema::code_required)]
    pub resto_code: String,
    #[validate(length(min = 1, max = 255), custom(function = "validate_line"))]
    #[schema(schema_with = schema::line::<1, 255>)]
    pub resto_label: String,
}

/// A vendor's mapping file: applied as a whole, idempotently.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedMappings {
    pub vendor_id: VendorId,
    #[validate(length(min = 1, max = 10000), nested)]
    #[schema(min_items = 1, max_items = 10000)]
    pub mappings: Vec<SeedEntry>,
}

/// What a seed changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct MappingFilter {
    /// Only this vendor's mappings.
    #[param(inline)]
    pub vendor_id: Option<VendorId>,
    /// Only mappings of this type (`unit`, `vat`, `family` or `subfamily`).
    pub mapping_type: Option<MappingType>,
    /// Include deactivated mappings (default false).
    pub include_inactive: Option<bool>,
}
