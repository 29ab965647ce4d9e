//! Field rules shared by every request type, checked at the edge (by `validator`, or by the
//! types below while deserializing) so the core never re-checks. The same rules are stated in
//! the OpenAPI document (patterns, lengths) and in `docs/field-rules.md`.

use std::{borrow::Cow, fmt, ops::Deref};

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, Type},
};
use validator::ValidationError;

fn error(code: &'static str, message: &'static str) -> ValidationError {
    ValidationError::new(code).with_message(Cow::Borrowed(message))
}

/// Longest vendor id (`varchar(100)` wherever a vendor id is stored).
pub const VENDOR_ID_MAX_CHARS: usize = 100;
/// Longest ERP key or code (`varchar(100)`: sku, warehouse id, unit/VAT/family codes).
pub const CODE_MAX_CHARS: usize = 100;
/// Longest content hash (`varchar(128)`).
pub const CONTENT_HASH_MAX_CHARS: usize = 128;

/// The vendor-id rule as a regular expression (OpenAPI `pattern`).
pub const VENDOR_ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,100}$";
/// One-line text: no control character (C0, DEL, C1).
pub const LINE_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
/// Multi-line text: no control character but tab, line feed and carriage return.
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";
/// Keys and codes: one-line text, not blank, without invisible formatting characters (bidi
/// controls, zero-width characters). Kept in step with [`is_invisible_format`].
pub const CODE_PATTERN: &str = concat!(
    r"^\s*[^\s\u0000-\u001F\u007F-\u009F\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]",
    r"[^\u0000-\u001F\u007F-\u009F\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]*$"
);
/// Content hashes: hex or base64 (standard or URL-safe).
pub const CONTENT_HASH_PATTERN: &str = "^[A-Za-z0-9+/=_-]{1,128}$";

/// Vendor ids key every table and appear in logs and Redis keys: 1–100 characters of
/// letters, digits and `-_.:`.
pub fn validate_vendor_id(value: &str) -> Result<(), ValidationError> {
    if is_vendor_id(value) {
        Ok(())
    } else {
        Err(error("vendor_id", VENDOR_ID_RULE))
    }
}

const VENDOR_ID_RULE: &str = "must be 1-100 characters of letters, digits, '-', '_', '.' or ':'";

fn is_vendor_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= VENDOR_ID_MAX_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Bidi controls and zero-width characters: invisible, they make two keys that look the same
/// differ (or a key display as another), so keys refuse them.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// An ERP key or code (sku, warehouse id, unit/VAT/family codes).
pub fn is_code(value: &str) -> bool {
    !value.trim().is_empty()
        && value.chars().count() <= CODE_MAX_CHARS
        && !value
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
}

/// ERP keys (SKU, warehouse id, codes): 1–100 characters, not blank, no control characters,
/// no bidi controls or zero-width characters.
pub fn validate_code(value: &str) -> Result<(), ValidationError> {
    if is_code(value) {
        Ok(())
    } else {
        Err(error(
            "code",
            "must be 1-100 characters, not blank, without control, bidi or zero-width characters",
        ))
    }
}

/// One-line text (names, labels, references) has no control character at all.
pub fn is_line(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

pub fn validate_line(value: &str) -> Result<(), ValidationError> {
    if is_line(value) {
        Ok(())
    } else {
        Err(error("line", "must not contain control characters"))
    }
}

/// Multi-line text (descriptions, addresses, error reports) may hold tabs and line breaks,
/// no other control character (Postgres refuses NUL in text outright).
pub fn is_text(value: &str) -> bool {
    !value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

pub fn validate_text(value: &str) -> Result<(), ValidationError> {
    if is_text(value) {
        Ok(())
    } else {
        Err(error(
            "text",
            "must not contain control characters other than tab and line breaks",
        ))
    }
}

/// An absolute http(s) URL of at most 500 characters, without credentials, query or fragment
/// (paths are appended to it segment by segment: a query would swallow them).
pub fn validate_http_url(value: &str) -> Result<(), ValidationError> {
    if value.len() > 500 {
        return Err(error("url", "must be at most 500 characters"));
    }
    // The URL parser would quietly drop or escape these; the stored string would keep them.
    if !is_line(value) {
        return Err(error("url", "must not contain control characters"));
    }
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                Err(error("url", "must not embed credentials"))
            } else if url.query().is_some() || url.fragment().is_some() {
                Err(error("url", "must not have a query or a fragment"))
            } else if url.as_str().len() > 500 {
                // What is stored is the normalised form (a trailing '/', punycode, escapes),
                // which can be longer than what was sent.
                Err(error(
                    "url",
                    "must be at most 500 characters once normalised",
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(error("url", "must be an absolute http(s) URL")),
    }
}

/// A content hash as agents send it: 1–128 characters of hex or base64.
pub fn is_content_hash(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= CONTENT_HASH_MAX_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b))
}

pub fn validate_content_hash(value: &str) -> Result<(), ValidationError> {
    if is_content_hash(value) {
        Ok(())
    } else {
        Err(error(
            "content_hash",
            "must be 1-128 characters of hex or base64",
        ))
    }
}

/// A client-supplied value quoted in a message: at most 64 characters, so an error never
/// mirrors a megabyte back.
pub fn quote(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
    }
}

/// OpenAPI schemas of the rules above, for `#[schema(schema_with = …)]` on request fields
/// (utoipa's attributes take literals only; these keep the patterns in one place).
pub mod schema {
    use utoipa::openapi::{ObjectBuilder, Type, schema::SchemaType};

    use super::{CODE_MAX_CHARS, CODE_PATTERN, LINE_PATTERN, TEXT_PATTERN};

    fn string(nullable: bool) -> ObjectBuilder {
        if nullable {
            ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        } else {
            ObjectBuilder::new().schema_type(Type::String)
        }
    }

    fn one_line(nullable: bool, min: usize, max: usize) -> ObjectBuilder {
        string(nullable)
            .min_length(Some(min))
            .max_length(Some(max))
            .pattern(Some(LINE_PATTERN))
    }

    /// One-line text of `MIN`–`MAX` characters.
    pub fn line<const MIN: usize, const MAX: usize>() -> ObjectBuilder {
        one_line(false, MIN, MAX)
    }

    pub fn optional_line<const MIN: usize, const MAX: usize>() -> ObjectBuilder {
        one_line(true, MIN, MAX)
    }

    /// Multi-line text of at most `MAX` characters.
    pub fn optional_text<const MAX: usize>() -> ObjectBuilder {
        string(true)
            .max_length(Some(MAX))
            .pattern(Some(TEXT_PATTERN))
    }

    fn code(nullable: bool) -> ObjectBuilder {
        string(nullable)
            .min_length(Some(1))
            .max_length(Some(CODE_MAX_CHARS))
            .pattern(Some(CODE_PATTERN))
    }

    /// An ERP key or code.
    pub fn code_required() -> ObjectBuilder {
        code(false)
    }

    pub fn optional_code() -> ObjectBuilder {
        code(true)
    }
}

/// A vendor id, valid by construction: deserializing (body, path, query) refuses anything
/// else, so no query ever sees a NUL byte or a megabyte-long id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct VendorId(String);

impl VendorId {
    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        validate_vendor_id(&value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl Deref for VendorId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for VendorId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for VendorId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if is_vendor_id(&value) {
            Ok(Self(value))
        } else {
            Err(serde::de::Error::custom(VENDOR_ID_RULE))
        }
    }
}

impl PartialSchema for VendorId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(VENDOR_ID_MAX_CHARS))
            .pattern(Some(VENDOR_ID_PATTERN))
            .description(Some(
                "Vendor id: 1-100 characters of letters, digits, '-', '_', '.' or ':'.",
            ))
            .into()
    }
}

impl ToSchema for VendorId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_refuse_controls_invisible_characters_and_blanks() {
        for bad in [
            "",
            "   ",
            "a\u{0}b",
            "a\nb",
            "a\u{7f}",
            "a\u{85}",
            "sku\u{202E}",
            "\u{200B}sku",
            "a\u{2066}b",
            "\u{FEFF}x",
        ] {
            assert!(!is_code(bad), "{bad:?} accepted");
        }
        assert!(!is_code(&"x".repeat(101)));
        assert!(
            is_code(&"é".repeat(100)),
            "characters are counted, not bytes"
        );
        assert!(is_code(" SKU 1 "));
    }

    #[test]
    fn text_allows_line_breaks_and_tabs_only() {
        assert!(is_text("1 rue du Marché\r\n75001 Paris\tFR"));
        for bad in ["a\u{0}", "a\u{1b}[31m", "a\u{7f}", "a\u{9b}"] {
            assert!(!is_text(bad), "{bad:?} accepted");
            assert!(!is_line(bad), "{bad:?} accepted");
        }
        assert!(!is_line("a\nb"));
    }

    #[test]
    fn vendor_ids_deserialize_only_when_valid() {
        let ok: VendorId = serde_json::from_str("\"vendor-a.1:x_y\"").unwrap();
        assert_eq!(ok.as_str(), "vendor-a.1:x_y");
        for bad in ["\"\"", "\"a\\u0000\"", "\"has space\"", "42"] {
            assert!(serde_json::from_str::<VendorId>(bad).is_err(), "{bad}");
        }
        let long = format!("\"{}\"", "v".repeat(101));
        assert!(serde_json::from_str::<VendorId>(&long).is_err());
    }

    #[test]
    fn quotes_are_truncated() {
        assert_eq!(quote("abc"), "\"abc\"");
        let quoted = quote(&"x".repeat(1_000_000));
        assert!(quoted.chars().count() < 70, "{quoted}");
        assert_eq!(quote("a\u{0}"), "\"a\\0\"");
    }
}
