-- The tasks table is the transactional outbox: the relay leases READY rows, publishes them with
-- publisher confirms and marks them dispatched.
ALTER TABLE tasks ADD COLUMN lease_until_ms BIGINT;
ALTER TABLE tasks ADD COLUMN dispatched_at_ms BIGINT;
