//! Reconciliation: drift between each ERP and Postgres, found by checksums. For now, the
//! audit trail of its events.

pub mod queries;
