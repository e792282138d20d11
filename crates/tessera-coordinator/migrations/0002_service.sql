-- Coordinator state, version 2: what the service core needs on top of version 1.
-- Portable SQL (SQLite and PostgreSQL). Never edit once released: add a new migration.

-- Committees: the parties that share auxiliary info (Paillier keys), set up once and reused by
-- every key of the committee. `parties` is the ordered party list, e.g. '1,2,3'.
CREATE TABLE committees (
    parties TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('creating', 'ready', 'failed')),
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The HD chain code key generation reports (hex), so child public keys and addresses can be
-- derived without a share. NULL for keys without one.
ALTER TABLE keys ADD COLUMN chain_code TEXT;

-- The reasons of a request's last policy evaluation (JSON array of strings), or why it was
-- rejected.
ALTER TABLE requests ADD COLUMN reasons TEXT;

-- The signing worker takes requests by state, oldest change first.
CREATE INDEX requests_state_updated ON requests (state, updated_at, id);
