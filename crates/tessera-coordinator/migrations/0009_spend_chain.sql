-- Coordinator state, version 9: the spend chain of every key (issue 16 A.1,
-- docs/protocols/spend-chain.md). Portable SQL (SQLite and PostgreSQL). Never edit once
-- released: add a new migration.

-- One row per signing of a key, in order: its place (`seq`, from 1), the hash of the record
-- before it (`prev`, hex, zeros for the first), its own record hash (`hash`, hex), when it was
-- admitted (`signed_at`) and, once the nodes produced it, the signature (`r || s`, hex). A row
-- is written in the transaction that admits its request to signing and is never removed: a
-- signing that failed keeps its place, and the nodes count its spend.
CREATE TABLE spend_links (
    key_id TEXT NOT NULL REFERENCES keys (id),
    seq BIGINT NOT NULL,
    request_id TEXT NOT NULL UNIQUE REFERENCES requests (id),
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    signed_at BIGINT NOT NULL,
    signature TEXT,
    PRIMARY KEY (key_id, seq)
);

-- Where each holder's copy of a key's spend chain stands, as the holder last said: every
-- record up to `head` is there. Records after it are delivered before the holder signs, and
-- after every signing.
CREATE TABLE spend_heads (
    key_id TEXT NOT NULL REFERENCES keys (id),
    party BIGINT NOT NULL,
    head BIGINT NOT NULL,
    PRIMARY KEY (key_id, party)
);
