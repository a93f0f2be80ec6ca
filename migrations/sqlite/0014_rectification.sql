-- 好差评: when the SLA sweeper must next look at a case's open rectification (整改) — its
-- yellow warning, then its deadline; NULL when there is nothing to watch. Written with the case
-- record (derived from it by `evaluation::next_check_ms`).
ALTER TABLE cases ADD COLUMN rectification_check_ms INTEGER;
CREATE INDEX cases_rectification_check ON cases (rectification_check_ms) WHERE rectification_check_ms IS NOT NULL;
