-- Coordinator state, version 6: a request spends in several assets (an ERC-20 transfer moves
-- the token and pays its fee in the native coin; issue 16 B.3). Portable SQL (SQLite and
-- PostgreSQL). Never edit once released: add a new migration.

CREATE TABLE spend_per_asset (
    request_id TEXT NOT NULL REFERENCES requests (id),
    key_id TEXT NOT NULL REFERENCES keys (id),
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    signed_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, asset)
);
INSERT INTO spend_per_asset (request_id, key_id, asset, amount, signed_at)
    SELECT request_id, key_id, asset, amount, signed_at FROM spend;
DROP TABLE spend;
ALTER TABLE spend_per_asset RENAME TO spend;
CREATE INDEX spend_window ON spend (key_id, asset, signed_at);
