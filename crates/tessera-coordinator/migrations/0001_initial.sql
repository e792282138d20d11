-- Coordinator state, version 1. Portable SQL: it runs unchanged on SQLite and PostgreSQL.
-- Ids are 32 lowercase hex digits, byte strings lowercase hex TEXT, times Unix seconds BIGINT.
-- Never edit this file once released: add a new numbered migration instead
-- (a changed migration is refused by every database that already applied it).

CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    threshold BIGINT NOT NULL,
    committee TEXT NOT NULL,
    public_key TEXT,
    status TEXT NOT NULL CHECK (status IN ('creating', 'ready', 'failed')),
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys (id),
    kind TEXT NOT NULL
        CHECK (kind IN ('transfer', 'contract_call', 'contract_creation', 'message')),
    state TEXT NOT NULL
        CHECK (state IN ('pending_approval', 'approved', 'signing', 'signed', 'rejected',
                         'failed', 'cancelled', 'expired')),
    body TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    result TEXT,
    error TEXT,
    attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX requests_created ON requests (created_at, id);
CREATE INDEX requests_state_created ON requests (state, created_at, id);
CREATE INDEX requests_key_created ON requests (key_id, created_at, id);
CREATE INDEX requests_open_expiry ON requests (expires_at)
    WHERE state IN ('pending_approval', 'approved');

CREATE TABLE approvals (
    subject TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    signature TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (subject, approver)
);

CREATE TABLE spend (
    request_id TEXT PRIMARY KEY REFERENCES requests (id),
    key_id TEXT NOT NULL REFERENCES keys (id),
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    signed_at BIGINT NOT NULL
);
CREATE INDEX spend_window ON spend (key_id, asset, signed_at);

CREATE TABLE api_nonces (
    principal TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (principal, nonce)
);
CREATE INDEX api_nonces_expiry ON api_nonces (expires_at);

CREATE TABLE policies (
    hash TEXT PRIMARY KEY,
    revision BIGINT NOT NULL UNIQUE,
    document TEXT NOT NULL,
    activated_at BIGINT NOT NULL
);

CREATE TABLE policy_proposals (
    id TEXT PRIMARY KEY,
    previous_hash TEXT,
    document TEXT NOT NULL,
    proposed_by TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'rejected', 'expired')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX policy_proposals_created ON policy_proposals (created_at, id);

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    operation TEXT NOT NULL,
    parties TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT,
    blamed TEXT
);
CREATE INDEX sessions_subject ON sessions (subject, started_at);
