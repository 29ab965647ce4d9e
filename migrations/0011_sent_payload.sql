-- Agent authors (issue 17): the create-order body is built when the job is delivered, from the
-- order and its lines as they stand then (a marketplace may insert the lines after the order,
-- in another transaction). What an attempt actually sent is kept on the job and copied to its
-- dead-letter entry. Additive: `payload` (the order at insert) keeps its meaning.
ALTER TABLE sync_jobs ADD COLUMN sent_payload jsonb;
ALTER TABLE dead_letter_queue ADD COLUMN sent_payload jsonb;

-- The agent-scoped views list one vendor's jobs newest first.
CREATE INDEX IF NOT EXISTS sync_jobs_vendor_created ON sync_jobs (vendor_id, created_at DESC);
