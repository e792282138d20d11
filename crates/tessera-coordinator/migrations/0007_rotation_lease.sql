-- Coordinator state, version 7: the rotation lease (issue 16 B.4). Portable SQL (SQLite and
-- PostgreSQL). Never edit once released: add a new migration.

-- Who is refreshing or resharing the key (a token of one coordinator's rotation), and until
-- when (Unix seconds) unless renewed: at most one rotation of a key at a time across every
-- coordinator replica on this database. NULL when nobody is.
ALTER TABLE keys ADD COLUMN rotation_owner TEXT;
ALTER TABLE keys ADD COLUMN rotation_until BIGINT;
