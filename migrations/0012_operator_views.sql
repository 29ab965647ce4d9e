-- Operators (issue 18): every attempt kept, every operator action recorded, resolutions that
-- keep what the operator said. Additive only.

-- One row per attempt at a job: the agent was called (or the call was refused before it went
-- out). Deleted with its job by the clean-up of expired jobs.
CREATE TABLE sync_attempts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id          uuid NOT NULL REFERENCES sync_jobs (id) ON DELETE CASCADE,
    order_id        uuid,
    vendor_id       varchar(100) NOT NULL,
    -- call: erp-sync called the agent; callback: the agent reported back.
    kind            varchar(10)  NOT NULL DEFAULT 'call',
    attempt         integer      NOT NULL,
    started_at      timestamptz  NOT NULL,
    duration_ms     integer      NOT NULL,
    -- call: completed (200), accepted (202), failed (retryable), rejected (permanent), refused
    -- (never sent); callback: completed or failed
    outcome         varchar(20)  NOT NULL,
    http_status     integer,
    error           text,
    correlation_id  varchar(200)
);
CREATE INDEX sync_attempts_job ON sync_attempts (job_id, started_at);
CREATE INDEX sync_attempts_order ON sync_attempts (order_id, started_at);

-- Who did what, by hand: retries, resolutions, re-syncs, breaker resets, bulk runs.
CREATE TABLE operator_actions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    action      varchar(30)  NOT NULL,
    actor       varchar(100) NOT NULL,
    note        text,
    vendor_id   varchar(100),
    order_id    uuid,
    dlq_id      uuid,
    job_id      uuid,
    details     jsonb,
    created_at  timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_order ON operator_actions (order_id, created_at);
CREATE INDEX operator_actions_created ON operator_actions (created_at);

-- What an operator said when resolving an entry by hand.
ALTER TABLE dead_letter_queue ADD COLUMN resolution_note text;
ALTER TABLE dead_letter_queue ADD COLUMN resolution_erp_reference varchar(100);
