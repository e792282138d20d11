-- Coordinator state, version 4: key epochs and lifecycle certificates (issue 15,
-- docs/protocols/reshare.md). Portable SQL (SQLite and PostgreSQL). Never edit once released:
-- add a new migration.

-- The key's epoch: 0 after key generation, one more after each refresh or reshare.
ALTER TABLE keys ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
-- The step of the key's last rotation that has not reached every party yet: the reshare
-- session, and the step (activate or close, with its certificates and the parties still to
-- answer), canonically encoded (hex). NULL when nothing is due.
ALTER TABLE keys ADD COLUMN lifecycle_session TEXT;
ALTER TABLE keys ADD COLUMN lifecycle TEXT;
-- Replaced by the lifecycle: an activation now needs the nodes' certificate, not a bare
-- confirmation.
ALTER TABLE keys DROP COLUMN activation_session;
ALTER TABLE keys DROP COLUMN activation_confirmation;
ALTER TABLE keys DROP COLUMN activation_parties;
