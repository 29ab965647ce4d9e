//! Finds the top-level `vendorId` of a JSON body before the agent is authenticated, at a cost
//! that does not grow with what an attacker sends: keys are compared without being copied,
//! every value before `vendorId` is skipped with `IgnoredAny` (no tree), the value itself is
//! borrowed from the body, and the walk stops as soon as it is found. The input is at most
//! the pre-auth window, so a body whose `vendorId` lies beyond it is reported as such.

use std::{borrow::Cow, fmt};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::json;

use crate::error::AppError;

const FIELD: &str = "vendorId";
/// The error the visitor stops the walk with once `vendorId` is found.
const FOUND: &str = "erp-sync: vendorId found";

/// Why no usable `vendorId` came out of the window.
#[derive(Debug)]
pub enum ProbeError {
    /// `vendorId` is there but is not a string (an array of a million zeros, say), or is a
    /// string longer than the window.
    NotAString,
    /// The input ended before `vendorId` (or the end of the document) was reached.
    Truncated,
    /// Not JSON.
    Malformed(String),
    /// JSON, but not an object.
    NotAnObject,
}

impl ProbeError {
    /// The client's error. (`Truncated` is not one while more of the body may follow: the
    /// caller reads on.)
    pub fn into_error(self) -> AppError {
        match self {
            Self::NotAString => AppError::validation(
                "vendorId must be a short string",
                json!({ "vendorId": ["must be 1-100 characters of letters, digits, '-', '_', '.' or ':'"] }),
            ),
            Self::Truncated => {
                AppError::MalformedJson("malformed JSON: unexpected end of the body".into())
            }
            Self::Malformed(message) => {
                AppError::MalformedJson(format!("malformed JSON: {message}"))
            }
            Self::NotAnObject => AppError::validation(
                "the body must be a JSON object with a vendorId",
                json!({ "body": ["must be a JSON object"] }),
            ),
        }
    }
}

/// `Ok(None)`: the document is an object without `vendorId` (or with one that is `null`).
pub fn find_vendor_id(window: &[u8]) -> Result<Option<Cow<'_, str>>, ProbeError> {
    let mut found = Found::Nothing;
    let mut deserializer = serde_json::Deserializer::from_slice(window);
    let result = deserializer.deserialize_map(Probe { found: &mut found });
    match (found, result) {
        (Found::VendorId(id), _) => Ok(Some(id)),
        (Found::Absent, _) => Ok(None),
        (Found::NotAString, _) => Err(ProbeError::NotAString),
        (_, Err(error)) if error.is_eof() => Err(ProbeError::Truncated),
        (_, Err(error)) if error.is_data() => Err(ProbeError::NotAnObject),
        (_, Err(error)) => Err(ProbeError::Malformed(error.to_string())),
        (Found::Nothing, Ok(())) => Ok(None),
    }
}

enum Found<'de> {
    Nothing,
    Absent,
    VendorId(Cow<'de, str>),
    NotAString,
}

struct Probe<'a, 'de> {
    found: &'a mut Found<'de>,
}

impl<'de> Visitor<'de> for Probe<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(is_vendor_id) = map.next_key_seed(KeyIs(FIELD))? {
            if !is_vendor_id {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match map.next_value::<Option<MaybeBorrowed<'de>>>() {
                Ok(Some(value)) => *self.found = Found::VendorId(value.0),
                Ok(None) => *self.found = Found::Absent,
                Err(error) => {
                    *self.found = Found::NotAString;
                    return Err(error);
                }
            }
            // Stop here: the rest of the body is read only once the agent is authenticated.
            return Err(de::Error::custom(FOUND));
        }
        *self.found = Found::Absent;
        Ok(())
    }
}

/// Deserializes a key into "is it `name`?", without allocating it.
struct KeyIs(&'static str);

impl<'de> de::DeserializeSeed<'de> for KeyIs {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// A string borrowed from the body when it has no escapes, copied otherwise.
struct MaybeBorrowed<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(MaybeBorrowedVisitor)
    }
}

struct MaybeBorrowedVisitor;

impl<'de> Visitor<'de> for MaybeBorrowedVisitor {
    type Value = MaybeBorrowed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(MaybeBorrowed(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(MaybeBorrowed(Cow::Owned(value.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_vendor_id_wherever_it_is_in_the_window() {
        let id = |body: &str| find_vendor_id(body.as_bytes()).map(|v| v.map(Cow::into_owned));
        assert_eq!(
            id(r#"{"vendorId":"v1","items":[1,2]}"#).unwrap().as_deref(),
            Some("v1")
        );
        assert_eq!(
            id(r#"{"items":[{"a":[1,{"b":2}]}],"vendorId":"v\u0031"}"#)
                .unwrap()
                .as_deref(),
            Some("v1")
        );
        // Found before the (truncated) rest: the window need not be valid JSON after it.
        assert_eq!(
            id(r#"{"vendorId":"v1","items":[1,2"#).unwrap().as_deref(),
            Some("v1")
        );
        assert_eq!(id(r#"{"items":[]}"#).unwrap(), None);
        assert_eq!(id(r#"{"vendorId":null}"#).unwrap(), None);
        assert!(matches!(
            id(r#"{"vendorId":[0,0,0"#),
            Err(ProbeError::NotAString)
        ));
        assert!(matches!(
            id(r#"{"vendorId":{"a":1}}"#),
            Err(ProbeError::NotAString)
        ));
        assert!(matches!(
            id(r#"{"vendorId":"aaaa"#),
            Err(ProbeError::NotAString)
        ));
        assert!(matches!(
            id(r#"{"items":[1,2,3"#),
            Err(ProbeError::Truncated)
        ));
        assert!(matches!(id(r#"[1,2]"#), Err(ProbeError::NotAnObject)));
        assert!(matches!(id("not json"), Err(ProbeError::Malformed(_))));
    }
}
