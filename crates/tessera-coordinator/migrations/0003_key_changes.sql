-- Coordinator state, version 3: key changes approved by admins, refresh schedules, and
-- activations still to deliver. Portable SQL (SQLite and PostgreSQL). Never edit once
-- released: add a new migration.

-- A change to how a key is held (refresh, reshare, refresh schedule), proposed by an admin and
-- carried out once enough other admins approved it. `body` is the canonical encoded change
-- (hex) that approvers sign; `operation` its summary for people.
CREATE TABLE key_changes (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys (id),
    operation TEXT NOT NULL,
    proposed_by TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'applied', 'failed', 'expired')),
    error TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX key_changes_created ON key_changes (created_at, id);

-- Refresh the key automatically this often (seconds), next at `next_refresh_at` (Unix
-- seconds); both NULL for never.
ALTER TABLE keys ADD COLUMN refresh_every_secs BIGINT;
ALTER TABLE keys ADD COLUMN next_refresh_at BIGINT;
-- When the key's shares last changed (refresh or reshare); NULL if never since generation.
ALTER TABLE keys ADD COLUMN rotated_at BIGINT;
-- A recorded rotation whose activation has not reached every participant yet: the reshare
-- session, the confirmation (hex) and the participants ('1,2,3'). NULL when none is due.
ALTER TABLE keys ADD COLUMN activation_session TEXT;
ALTER TABLE keys ADD COLUMN activation_confirmation TEXT;
ALTER TABLE keys ADD COLUMN activation_parties TEXT;
