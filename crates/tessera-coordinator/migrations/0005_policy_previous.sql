-- Coordinator state, version 5: a policy activated by a change records the policy it replaced
-- (issue 16 B.8). Portable SQL (SQLite and PostgreSQL). Never edit once released: add a new
-- migration.

-- The hash (hex) of the policy the change was proposed against; NULL for a policy activated
-- at first start. Unique: two changes proposed against the same policy cannot both be
-- activated, whatever the isolation level of the transactions that try.
ALTER TABLE policies ADD COLUMN previous TEXT;
CREATE UNIQUE INDEX policies_previous ON policies (previous);
