-- Coordinator state, version 10: every key has a kind (issue 17, ADR 0020): `ecdsa` (CGGMP24),
-- `taproot` (FROST, BIP-340 with the Taproot tweak) or `ed25519` (FROST). Keys made before
-- kinds existed are ECDSA keys. Portable SQL (SQLite and PostgreSQL). Never edit once
-- released: add a new migration.
ALTER TABLE keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'ecdsa'
    CHECK (kind IN ('ecdsa', 'taproot', 'ed25519'));
