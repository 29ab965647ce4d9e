-- Order delivery that holds under slow, flapping and hostile agents (issue 8).

-- The attempt that holds a processing job: set by the claim, required by every outcome write
-- of that attempt, cleared by the outcome. A worker whose lease ran out changes nothing.
ALTER TABLE sync_jobs ADD COLUMN lease_token uuid;
-- The last error an agent call produced. `error_message` also says why a job waits (breaker
-- open, agent offline), which is not the agent's fault; the dead-letter reason is this one.
ALTER TABLE sync_jobs ADD COLUMN last_agent_error text;

-- The order of a dead-letter entry, so an order completed by any path resolves its entries.
ALTER TABLE dead_letter_queue ADD COLUMN order_id uuid;
UPDATE dead_letter_queue d SET order_id = j.postgres_order_id
FROM sync_jobs j WHERE j.id = d.original_job_id AND d.order_id IS NULL;
CREATE INDEX dead_letter_queue_unresolved_order ON dead_letter_queue (order_id) WHERE NOT resolved;

-- When a live job is next due (new: created_at; retry: next_retry_at; processing: the end of
-- its lease or callback deadline). The dispatcher reads due work per vendor and the next due
-- time; the jobs in flight per vendor are those holding a lease.
CREATE INDEX sync_jobs_live_due ON sync_jobs ((COALESCE(next_retry_at, created_at)))
    WHERE status IN ('pending', 'processing');
CREATE INDEX sync_jobs_live_vendor_due ON sync_jobs (vendor_id, (COALESCE(next_retry_at, created_at)))
    WHERE status IN ('pending', 'processing');
CREATE INDEX sync_jobs_leased ON sync_jobs (vendor_id) WHERE lease_token IS NOT NULL;
