-- Agent security (issue 9).

-- Each agent's own Standard Webhooks signing secret, sealed (XChaCha20-Poly1305 under a key
-- derived from AGENT_SECRET, bound to the vendor id): a dump of this table alone reveals none.
-- NULL: an agent registered before per-agent secrets, still signed with the shared
-- AGENT_SECRET until it is rotated. After a rotation the former secret keeps signing, beside
-- the new one, until previous_signing_secret_expires_at.
ALTER TABLE agent_registry
    ADD COLUMN signing_secret_sealed bytea,
    ADD COLUMN previous_signing_secret_sealed bytea,
    ADD COLUMN previous_signing_secret_expires_at timestamptz;
