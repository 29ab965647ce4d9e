//! Operations: health, and (later) metrics and scheduled housekeeping.

pub mod health;
