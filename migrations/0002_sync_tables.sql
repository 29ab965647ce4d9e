-- The five sync tables of the NestJS plan (Task 2), column for column.

CREATE TABLE sync_jobs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    postgres_order_id  uuid REFERENCES orders (id) ON DELETE SET NULL,
    vendor_id          varchar(100) NOT NULL,
    operation          varchar(50)  NOT NULL,
    status             varchar(20)  NOT NULL DEFAULT 'pending'
        CONSTRAINT sync_jobs_status_check
        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    payload            jsonb        NOT NULL,
    retry_count        integer      NOT NULL DEFAULT 0,
    max_retries        integer      NOT NULL DEFAULT 5,
    next_retry_at      timestamptz,
    error_message      text,
    error_stack        text,
    erp_reference      varchar(100),
    created_at         timestamptz  NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    expires_at         timestamptz
);
CREATE INDEX idx_sync_jobs_vendor_status ON sync_jobs (vendor_id, status);
CREATE INDEX idx_sync_jobs_status ON sync_jobs (status);
CREATE INDEX idx_sync_jobs_next_retry ON sync_jobs (next_retry_at);
CREATE INDEX idx_sync_jobs_expires ON sync_jobs (expires_at);
CREATE INDEX idx_sync_jobs_order ON sync_jobs (postgres_order_id);

CREATE TABLE agent_registry (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id        varchar(100) NOT NULL CONSTRAINT agent_registry_vendor_id_key UNIQUE,
    agent_url        varchar(500) NOT NULL,
    erp_type         varchar(20)  NOT NULL
        CONSTRAINT agent_registry_erp_type_check CHECK (erp_type IN ('ebp', 'sage', 'odoo', 'custom')),
    status           varchar(20)  NOT NULL DEFAULT 'offline'
        CONSTRAINT agent_registry_status_check CHECK (status IN ('online', 'offline', 'degraded')),
    last_heartbeat   timestamptz,
    version          varchar(50),
    auth_token_hash  varchar(256) NOT NULL,
    created_at       timestamptz  NOT NULL DEFAULT now(),
    updated_at       timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX idx_agent_registry_status ON agent_registry (status);
CREATE INDEX idx_agent_registry_heartbeat ON agent_registry (last_heartbeat);

CREATE TABLE erp_code_mappings (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id     varchar(100) NOT NULL,
    mapping_type  varchar(20)  NOT NULL
        CONSTRAINT erp_code_mappings_type_check CHECK (mapping_type IN ('unit', 'vat', 'family', 'subfamily')),
    erp_code      varchar(100) NOT NULL,
    resto_code    varchar(100) NOT NULL,
    resto_label   varchar(255) NOT NULL,
    is_active     boolean      NOT NULL DEFAULT true,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT erp_code_mappings_vendor_type_code_key UNIQUE (vendor_id, mapping_type, erp_code)
);
CREATE INDEX idx_erp_code_mappings_vendor_type ON erp_code_mappings (vendor_id, mapping_type);

CREATE TABLE dead_letter_queue (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    original_job_id  uuid REFERENCES sync_jobs (id) ON DELETE SET NULL,
    vendor_id        varchar(100) NOT NULL,
    operation        varchar(50)  NOT NULL,
    payload          jsonb        NOT NULL,
    failure_reason   text         NOT NULL,
    failure_stack    text,
    attempt_count    integer      NOT NULL DEFAULT 0,
    last_attempt_at  timestamptz  NOT NULL DEFAULT now(),
    resolved         boolean      NOT NULL DEFAULT false,
    resolved_at      timestamptz,
    resolved_by      varchar(100),
    created_at       timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX idx_dlq_vendor ON dead_letter_queue (vendor_id);
CREATE INDEX idx_dlq_resolved ON dead_letter_queue (resolved);
CREATE INDEX idx_dlq_created ON dead_letter_queue (created_at);

CREATE TABLE reconciliation_events (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id    varchar(100) NOT NULL,
    event_type   varchar(30)  NOT NULL
        CONSTRAINT reconciliation_events_type_check
        CHECK (event_type IN ('incremental_sync', 'full_checksum', 'drift_detected', 'drift_resolved')),
    summary      jsonb        NOT NULL,
    details      text,
    "timestamp"  timestamptz  NOT NULL DEFAULT now(),
    duration_ms  integer      NOT NULL DEFAULT 0
);
CREATE INDEX idx_reconciliation_events_vendor_ts ON reconciliation_events (vendor_id, "timestamp");
CREATE INDEX idx_reconciliation_events_type ON reconciliation_events (event_type);
