-- Coordinator state, version 8: spend is reserved when a request is admitted to signing
-- (issue 16 B.4). Portable SQL (SQLite and PostgreSQL). Never edit once released: add a new
-- migration.

-- A spend row is now written when the request is admitted to signing, in the transaction that
-- admits it, and `signed_at` is that admission time. A request whose signing fails gives its
-- reservation back: the row stays (what was reserved, and when it was released) and no longer
-- counts toward any window.
ALTER TABLE spend ADD COLUMN released_at BIGINT;

-- Admissions to signing per key. Each admission increments it first, which takes the key
-- row's lock (PostgreSQL) or the writer lock (SQLite) until it commits: admissions of one key
-- run one at a time across every coordinator replica, each seeing the spend of those before.
ALTER TABLE keys ADD COLUMN admissions BIGINT NOT NULL DEFAULT 0;
