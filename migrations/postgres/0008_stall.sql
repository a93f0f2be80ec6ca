-- Stalled tasks (docs/bus.md): `progress_ms` is when the gateway last heard of a task from its
-- department's adapter (its dispatch, any result, an ALIVE heartbeat); a task in a department's
-- hands that is silent for longer than the department allows is flagged `repair_due` (exactly
-- once: a conditional update), republished by the relay, and counted in `repairs`.
ALTER TABLE tasks ADD COLUMN progress_ms BIGINT;
ALTER TABLE tasks ADD COLUMN repair_due SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN repairs INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_repair_due ON tasks (repair_due) WHERE repair_due = 1;
