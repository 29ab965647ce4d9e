-- Outbound order sync: Postgres is the outbox and the source of truth; Redis only dispatches.

-- When a job was last handed to the queue, so the recovery sweep re-dispatches only jobs that
-- were due and not dispatched recently.
ALTER TABLE sync_jobs ADD COLUMN dispatched_at timestamptz;
-- Why a DLQ entry left the queue: the job its retry created.
ALTER TABLE dead_letter_queue ADD COLUMN retried_job_id uuid REFERENCES sync_jobs (id) ON DELETE SET NULL;

-- Never two live jobs for one order, whoever inserts them (trigger, sweep, admin, two replicas).
CREATE UNIQUE INDEX sync_jobs_one_live_job_per_order ON sync_jobs (postgres_order_id)
    WHERE operation = 'create_order' AND status IN ('pending', 'processing');
CREATE INDEX idx_sync_jobs_due ON sync_jobs (next_retry_at) WHERE status IN ('pending', 'processing');

-- The payload erp-sync sends for an order: the order and its lines, as they are at commit.
CREATE FUNCTION erp_sync_order_payload(order_id uuid) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'orderId', o.id,
        'vendorId', o.vendor_id,
        'order', jsonb_build_object(
            'id', o.id, 'vendorId', o.vendor_id, 'status', o.status,
            'totalAmount', o.total_amount, 'currency', o.currency,
            'deliveryDate', o.delivery_date, 'notes', o.notes, 'createdAt', o.created_at,
            'lines', COALESCE((
                SELECT jsonb_agg(jsonb_build_object('sku', l.sku, 'quantity', l.quantity, 'unitPrice', l.unit_price)
                                 ORDER BY l.sku, l.id)
                FROM order_lines l WHERE l.order_id = o.id), '[]'::jsonb)
        ))
    FROM orders o WHERE o.id = order_id
$$;

-- Every inserted order becomes exactly one job in the inserting transaction, even while
-- erp-sync is down. Deferred to commit so the order's lines, inserted after it, are included.
CREATE FUNCTION erp_sync_order_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sync_jobs (postgres_order_id, vendor_id, operation, payload, expires_at)
    SELECT NEW.id, NEW.vendor_id, 'create_order',
           erp_sync_order_payload(NEW.id) || jsonb_build_object('correlationId', gen_random_uuid()),
           now() + interval '30 days'
    WHERE EXISTS (SELECT 1 FROM orders WHERE id = NEW.id)
    ON CONFLICT (postgres_order_id) WHERE operation = 'create_order' AND status IN ('pending', 'processing')
    DO NOTHING;
    -- One payload for all: Postgres folds identical notifications of a transaction into one.
    PERFORM pg_notify('erp_sync_jobs', '');
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER erp_sync_order_inserted
    AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION erp_sync_order_inserted();
