-- The service watches itself: scheduled job runs, agent status history, and the indexes the
-- clean-up jobs need to delete in bounded chunks.

-- Every run of a scheduled job, on whichever replica. A scheduled run is keyed by its cron
-- occurrence (`tick`): the first replica to insert the row runs it, the others see the
-- conflict and skip. Manual runs have no tick (NULLs never conflict).
CREATE TABLE scheduler_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          varchar(64)  NOT NULL,
    tick         timestamptz,
    trigger      varchar(10)  NOT NULL
        CONSTRAINT scheduler_runs_trigger_check CHECK (trigger IN ('schedule', 'manual')),
    instance     varchar(200) NOT NULL,
    status       varchar(20)  NOT NULL DEFAULT 'running'
        CONSTRAINT scheduler_runs_status_check
        CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'cancelled', 'abandoned')),
    result       jsonb,
    started_at   timestamptz  NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    duration_ms  bigint,
    CONSTRAINT scheduler_runs_one_per_tick UNIQUE (job, tick)
);
CREATE INDEX idx_scheduler_runs_job_started ON scheduler_runs (job, started_at DESC);
CREATE INDEX idx_scheduler_runs_started ON scheduler_runs (started_at);

-- Every change of an agent's stored status, whoever makes it (registration, heartbeat,
-- health sweep, deregistration, an operator's SQL): the source of `uptimePct24h`.
CREATE TABLE agent_status_changes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vendor_id        varchar(100) NOT NULL,
    previous_status  varchar(20),
    status           varchar(20)  NOT NULL,
    changed_at       timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX idx_agent_status_changes_vendor ON agent_status_changes (vendor_id, changed_at);
CREATE INDEX idx_agent_status_changes_changed ON agent_status_changes (changed_at);

CREATE FUNCTION erp_sync_agent_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_status_changes (vendor_id, previous_status, status)
    VALUES (NEW.vendor_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status);
    RETURN NULL;
END
$$;

CREATE TRIGGER erp_sync_agent_status_inserted
    AFTER INSERT ON agent_registry
    FOR EACH ROW EXECUTE FUNCTION erp_sync_agent_status_changed();
CREATE TRIGGER erp_sync_agent_status_updated
    AFTER UPDATE OF status ON agent_registry
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION erp_sync_agent_status_changed();

-- Agents registered before this migration: their history starts now.
INSERT INTO agent_status_changes (vendor_id, previous_status, status)
SELECT vendor_id, NULL, status FROM agent_registry;

-- Clean-up deletes in chunks of ids picked by these conditions; without the indexes every
-- chunk would scan the table.
CREATE INDEX IF NOT EXISTS idx_dlq_resolved_at ON dead_letter_queue (resolved_at) WHERE resolved;
CREATE INDEX IF NOT EXISTS idx_reconciliation_events_timestamp ON reconciliation_events ("timestamp");
-- Deleting a sync job sets the DLQ's references to it to NULL (ON DELETE SET NULL): without
-- these, each deleted job would scan the dead-letter queue.
CREATE INDEX IF NOT EXISTS idx_dlq_original_job ON dead_letter_queue (original_job_id);
CREATE INDEX IF NOT EXISTS idx_dlq_retried_job ON dead_letter_queue (retried_job_id);
