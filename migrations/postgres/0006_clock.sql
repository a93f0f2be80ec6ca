-- The legal clock of each task, for the SLA sweeper: `clock_dirty` marks a task whose facts
-- changed (dispatched, paused, resumed, decided) so its deadlines are derived again;
-- `next_check_ms` is when it must next be looked at (its yellow warning or its deadline);
-- `due_ms` its promised deadline and `decided_ms` when its department decided, for on-time rates.
-- Every task starts marked (new ones, and those already in flight when this migration runs).
ALTER TABLE tasks ADD COLUMN clock_dirty SMALLINT NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN next_check_ms BIGINT;
ALTER TABLE tasks ADD COLUMN due_ms BIGINT;
ALTER TABLE tasks ADD COLUMN decided_ms BIGINT;
CREATE INDEX tasks_clock_dirty ON tasks (clock_dirty) WHERE clock_dirty = 1;
CREATE INDEX tasks_next_check ON tasks (next_check_ms) WHERE next_check_ms IS NOT NULL;
