-- Deadlines counted on a year whose working-day calendar was not loaded (Monday–Friday):
-- `deadline_provisional` = 1 on such a task's row, so a calendar reload marks exactly those
-- tasks for the sweeper to count again, and the gateway can say how many open ones there are.
ALTER TABLE tasks ADD COLUMN deadline_provisional INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_deadline_provisional ON tasks (deadline_provisional) WHERE deadline_provisional = 1;
