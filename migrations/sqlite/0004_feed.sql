-- The feed position of a history entry is its rowid: the single writer appends in commit order.
CREATE INDEX cases_hall_window ON cases (hall_code, window_code);
