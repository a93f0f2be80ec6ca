-- The 12345 hotline's work orders (docs/hotline.md): each order and the answer given to it, the
-- audit trail of work orders and their idempotency (an order number is answered once; a repeat
-- gets the stored answer). `answer` is the text as read out: names and numbers masked. `day` is
-- the hall's date of the order.
CREATE TABLE hotline_orders (
    order_no TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    case_number TEXT NOT NULL,
    caller TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    day TEXT NOT NULL,
    outcome TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE INDEX hotline_orders_case ON hotline_orders (case_number);
CREATE INDEX hotline_orders_at ON hotline_orders (at_ms);
-- Every progress query refused for wrong verification digits, new order or repeat: the
-- lockout counts them per case number and day. No digits are kept.
CREATE TABLE hotline_failures (
    id BIGSERIAL PRIMARY KEY,
    case_number TEXT NOT NULL,
    day TEXT NOT NULL,
    order_no TEXT NOT NULL,
    caller TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX hotline_failures_case_day ON hotline_failures (case_number, day);
