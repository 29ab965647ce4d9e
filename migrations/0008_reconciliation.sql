-- Reconciliation (see src/reconciliation/): bytewise sku ranges, tombstones for items the ERP
-- no longer has, and one running reconciliation per vendor across replicas.

-- Checksums, medians and range reads compare skus bytewise (COLLATE "C"), as agents do; the
-- unique key's index uses the database's collation and cannot serve those range scans.
CREATE INDEX IF NOT EXISTS idx_items_vendor_sku_c ON items (vendor_id, sku COLLATE "C");

-- Set when reconciliation found the item absent from the ERP (and deactivated it). Such rows
-- are left out of the Postgres checksum: the ERP does not list them, so counting them would
-- report the same drift on every run. They come back when the ERP lists or pushes them again.
ALTER TABLE items ADD COLUMN IF NOT EXISTS erp_absent_since timestamptz;

-- An ingest push that changes a tombstoned item proves the ERP has it again.
CREATE OR REPLACE FUNCTION erp_sync_items_clear_absent() RETURNS trigger AS $$
BEGIN
    NEW.erp_absent_since := NULL;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS items_clear_absent ON items;
CREATE TRIGGER items_clear_absent
    BEFORE UPDATE OF content_hash ON items
    FOR EACH ROW
    WHEN (OLD.erp_absent_since IS NOT NULL AND NEW.content_hash IS DISTINCT FROM OLD.content_hash)
    EXECUTE FUNCTION erp_sync_items_clear_absent();

-- One row per run. The partial unique index lets one run per vendor be `running` at a time,
-- whichever replica started it; a run renews its lease while it works, so a run whose process
-- died stops blocking the vendor once its lease has expired.
CREATE TABLE reconciliation_runs (
    id           uuid PRIMARY KEY,
    vendor_id    varchar(100) NOT NULL,
    status       varchar(20)  NOT NULL DEFAULT 'running'
        CONSTRAINT reconciliation_runs_status_check
        CHECK (status IN ('running', 'in_sync', 'repaired', 'unresolved', 'failed', 'abandoned')),
    started_at   timestamptz  NOT NULL DEFAULT now(),
    lease_until  timestamptz  NOT NULL,
    finished_at  timestamptz,
    summary      jsonb
);
CREATE UNIQUE INDEX reconciliation_runs_one_running
    ON reconciliation_runs (vendor_id) WHERE status = 'running';
CREATE INDEX idx_reconciliation_runs_vendor_started ON reconciliation_runs (vendor_id, started_at);
