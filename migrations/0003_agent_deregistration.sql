-- A deregistered agent keeps its row (history, jobs) but its token is refused until an
-- admin registers it again.
ALTER TABLE agent_registry ADD COLUMN deregistered_at timestamptz;
