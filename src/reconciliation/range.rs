//! Sku ranges, in the agent contract's terms: a lower bound `skuFrom` (≥) or `skuAfter` (>),
//! an upper bound `skuTo` (≤), each optional. Skus compare bytewise (UTF-8 bytes, which is
//! Rust's `str` order and Postgres' `COLLATE "C"`), on both sides of the wire.

use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lower {
    #[default]
    Unbounded,
    /// `skuFrom`: sku ≥ this.
    From(String),
    /// `skuAfter`: sku > this.
    After(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkuRange {
    pub lower: Lower,
    /// `skuTo`: sku ≤ this.
    pub upper: Option<String>,
}

impl SkuRange {
    /// Every sku.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn new(lower: Lower, upper: Option<String>) -> Self {
        Self { lower, upper }
    }

    /// Exact complements around `median`: `[lower, median]` and `(median, upper]`.
    pub fn split_at(&self, median: &str) -> (Self, Self) {
        (
            Self::new(self.lower.clone(), Some(median.to_owned())),
            Self::new(Lower::After(median.to_owned()), self.upper.clone()),
        )
    }

    /// The part of this range after `sku` (the next page of a listing).
    pub fn after(&self, sku: &str) -> Self {
        Self::new(Lower::After(sku.to_owned()), self.upper.clone())
    }

    pub fn contains(&self, sku: &str) -> bool {
        let above = match &self.lower {
            Lower::Unbounded => true,
            Lower::From(from) => sku >= from.as_str(),
            Lower::After(after) => sku > after.as_str(),
        };
        above && self.upper.as_deref().is_none_or(|to| sku <= to)
    }

    /// The agent's query parameters for this range.
    pub fn query_pairs(&self) -> Vec<(&'static str, &str)> {
        let mut pairs = Vec::with_capacity(2);
        match &self.lower {
            Lower::Unbounded => {}
            Lower::From(from) => pairs.push(("skuFrom", from.as_str())),
            Lower::After(after) => pairs.push(("skuAfter", after.as_str())),
        }
        if let Some(to) = &self.upper {
            pairs.push(("skuTo", to.as_str()));
        }
        pairs
    }

    /// The SQL condition on `{column}` for this range, with placeholders from `$first` on, and
    /// the values to bind to them in order. Only the bounds present appear, so every shape is
    /// its own prepared statement and keeps its index range scan (a `$n IS NULL OR …` form
    /// would lose it under a generic plan).
    pub fn sql_condition(&self, column: &str, first: usize) -> (String, Vec<&str>) {
        let lower = match &self.lower {
            Lower::Unbounded => None,
            Lower::From(from) => Some((">=", from.as_str())),
            Lower::After(after) => Some((">", after.as_str())),
        };
        let upper = self.upper.as_deref().map(|to| ("<=", to));
        let mut sql = String::new();
        let mut binds = Vec::with_capacity(2);
        for (op, value) in lower.into_iter().chain(upper) {
            let n = first + binds.len();
            sql.push_str(&format!(" AND {column} COLLATE \"C\" {op} ${n}"));
            binds.push(value);
        }
        (sql, binds)
    }
}

impl fmt::Display for SkuRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lower {
            Lower::Unbounded => write!(f, "(start")?,
            Lower::From(from) => write!(f, "[{from:?}")?,
            Lower::After(after) => write!(f, "({after:?}")?,
        }
        match &self.upper {
            Some(to) => write!(f, ", {to:?}]"),
            None => write!(f, ", end)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_halves_are_exact_complements() {
        let range = SkuRange::new(Lower::From("b".into()), Some("y".into()));
        let (left, right) = range.split_at("m");
        for sku in ["a", "b", "l", "m", "m\u{1}", "ma", "x", "y", "z"] {
            assert_eq!(
                range.contains(sku),
                left.contains(sku) || right.contains(sku),
                "{sku}"
            );
            assert!(!(left.contains(sku) && right.contains(sku)), "{sku}");
        }
        assert!(left.contains("m") && !right.contains("m"));
    }

    #[test]
    fn order_is_bytewise() {
        let range = SkuRange::new(Lower::After("Z".into()), Some("é".into()));
        // 'a' (0x61) > 'Z' (0x5A); 'é' (0xC3 0xA9) > 'z'; '😀' (0xF0…) > 'é'.
        assert!(range.contains("a") && range.contains("z") && range.contains("é"));
        assert!(!range.contains("😀") && !range.contains("Z") && !range.contains("A"));
    }

    #[test]
    fn sql_condition_binds_only_present_bounds() {
        let all = SkuRange::all();
        let (sql, binds) = all.sql_condition("sku", 2);
        assert_eq!((sql.as_str(), binds.len()), ("", 0));
        let bounded = SkuRange::new(Lower::After("a".into()), Some("b".into()));
        let (sql, binds) = bounded.sql_condition("i.sku", 3);
        assert_eq!(
            sql,
            " AND i.sku COLLATE \"C\" > $3 AND i.sku COLLATE \"C\" <= $4"
        );
        assert_eq!(binds, ["a", "b"]);
    }

    #[test]
    fn query_pairs_follow_the_contract() {
        let range = SkuRange::new(Lower::From("a".into()), Some("b".into()));
        assert_eq!(range.query_pairs(), [("skuFrom", "a"), ("skuTo", "b")]);
        assert_eq!(
            range.after("a1").query_pairs(),
            [("skuAfter", "a1"), ("skuTo", "b")]
        );
    }
}
