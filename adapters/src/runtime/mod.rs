//! The runtime every kind shares, so no kind repeats it: consuming a department's queue (prefetch
//! = the department's concurrency, manual acks), dropping duplicates by task id and supplement
//! round, the rate limit (evenly spaced calls) and a legacy `Retry-After`, maintenance windows,
//! failure classes — transient retried with exponential backoff and jitter through the delay
//! queues, permanent published as a `FAILED` result, poison dead-lettered with its reason — and
//! polling scheduled through the delay queues, so the adapter keeps no state of its own and can
//! be killed at any moment. A delivery is acknowledged only after everything it caused is
//! confirmed by the broker.
//!
//! Messages on a department's queue carry their stage in headers: none (a task from the gateway),
//! or `stage=poll` with `department-case-number`, `polls` and the last `step` seen.
//!
//! A task message that carries a `supplement` (补正, round N ≥ 1) resumes a task the department
//! already has: its materials are handed to the department's case (`resupply`, never `find` or
//! `submit`), and polling starts again without a second `ACCEPTED`. Every result published while
//! handling it — the poll messages are the same body, so the round travels with them — carries
//! `round = N`, and its `message_id` ends in `:s<N>`.
//!
//! One file per job: `session.rs` keeps the broker connections and hands deliveries to each
//! department's `worker.rs`, the per-delivery state machine; `stage.rs` reads and writes where a
//! message is in that protocol; `department.rs` calls the legacy system under its limits and
//! remembers what it handled; `publisher.rs` publishes results, delays and dead letters with
//! confirms; `callbacks.rs` checks a callback's signature and has the task polled now (or, for a
//! department whose callbacks are trusted, publishes what it says).

mod callbacks;
mod department;
mod publisher;
mod session;
mod stage;
mod worker;

pub use callbacks::{Callbacks, Handled, Refusal, Signed, sign, verify};
/// The headers of a signed callback.
pub use callbacks::{NONCE, SIGNATURE, TIMESTAMP};
pub use department::{Department, seen_key};
pub use publisher::{RESULT_CONTENT_TYPE, result_message_id};
pub use session::{Readiness, run};
pub use stage::{Polling, Stage};

/// The case number of a task id (`<case number>-NN`).
pub fn case_of(task_id: &str) -> &str {
    task_id.rsplit_once('-').map_or(task_id, |(c, _)| c)
}
