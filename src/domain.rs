//! Field rules shared by every request type, checked at the edge by `validator`.

use std::borrow::Cow;

use validator::ValidationError;

fn error(code: &'static str, message: &'static str) -> ValidationError {
    ValidationError::new(code).with_message(Cow::Borrowed(message))
}

/// Vendor ids key every table and appear in logs and Redis keys: 1–100 characters of
/// letters, digits and `-_.:`.
pub fn validate_vendor_id(value: &str) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(error(
            "vendor_id",
            "must be 1-100 characters of letters, digits, '-', '_', '.' or ':'",
        ))
    }
}

/// ERP keys (SKU, warehouse id, codes): 1–100 characters, no control characters, not blank.
pub fn validate_code(value: &str) -> Result<(), ValidationError> {
    let ok = !value.trim().is_empty()
        && value.chars().count() <= 100
        && !value.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(error(
            "code",
            "must be 1-100 characters without control characters",
        ))
    }
}

/// An absolute http(s) URL of at most 500 characters, without credentials, query or fragment
/// (paths are appended to it segment by segment: a query would swallow them).
pub fn validate_http_url(value: &str) -> Result<(), ValidationError> {
    if value.len() > 500 {
        return Err(error("url", "must be at most 500 characters"));
    }
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                Err(error("url", "must not embed credentials"))
            } else if url.query().is_some() || url.fragment().is_some() {
                Err(error("url", "must not have a query or a fragment"))
            } else {
                Ok(())
            }
        }
        _ => Err(error("url", "must be an absolute http(s) URL")),
    }
}

/// A content hash as agents send it: 1–128 characters of hex or base64.
pub fn validate_content_hash(value: &str) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(error(
            "content_hash",
            "must be 1-128 characters of hex or base64",
        ))
    }
}
