-- The 12345 hotline's work orders (docs/hotline.md): each order and the answer given to it, the
-- audit trail of work orders and their idempotency (an order number is answered once; a repeat
-- gets the stored answer). `answer` is the text as read out: names and numbers masked. `day` is
-- the hall's date of the order. `classification` is the order's code in the hotline's
-- classification table (GB/T 39666, `[hotline] classification`).
CREATE TABLE hotline_orders (
    order_no TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    case_number TEXT NOT NULL,
    caller TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    day TEXT NOT NULL,
    outcome TEXT NOT NULL,
    answer TEXT NOT NULL,
    classification TEXT NOT NULL
);
CREATE INDEX hotline_orders_case ON hotline_orders (case_number);
CREATE INDEX hotline_orders_at ON hotline_orders (at_ms);
-- Every progress query refused for wrong verification digits, new order or repeat: the
-- lockout counts them per case number and day. A try is written here before its digits are
-- checked (in one step with the count) and deleted when they verify. No digits are kept.
CREATE TABLE hotline_failures (
    id BIGSERIAL PRIMARY KEY,
    case_number TEXT NOT NULL,
    day TEXT NOT NULL,
    order_no TEXT NOT NULL,
    caller TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX hotline_failures_case_day ON hotline_failures (case_number, day);
-- Complaint replies owed to the hotline's reply interface (one per work order), written when an
-- operator closes the supervision, delivered by the reply worker with retries until the hotline
-- confirms (`delivered_ms`).
CREATE TABLE hotline_replies (
    order_no TEXT PRIMARY KEY,
    case_number TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    next_try_ms BIGINT NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    delivered_ms BIGINT
);
CREATE INDEX hotline_replies_due ON hotline_replies (next_try_ms) WHERE delivered_ms IS NULL;
