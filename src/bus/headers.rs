//! The names of the AMQP headers on task and result messages, one spelling for the gateway and
//! the adapters (docs/bus.md, "Task messages" and "Results").

/// The national case number.
pub const CASE_ID: &str = "case-id";
/// The task's id.
pub const TASK_ID: &str = "task-id";
/// The department code.
pub const DEPARTMENT: &str = "department";
/// Our own attempt counter (x-death is not relied on); the relay's publish is attempt 1.
pub const ATTEMPT: &str = "attempt";
/// W3C trace context of the span that published the message.
pub const TRACEPARENT: &str = "traceparent";
/// What the adapter does with the message: absent (a task to submit) or [`STAGE_POLL`].
pub const STAGE: &str = "stage";
/// The [`STAGE`] of a message that asks the department about a case it has.
pub const STAGE_POLL: &str = "poll";
/// The department's own case number, on a poll message.
pub const DEPARTMENT_CASE_NUMBER: &str = "department-case-number";
/// Polls so far, on a poll message.
pub const POLLS: &str = "polls";
/// The last step the department reported, on a poll message.
pub const STEP: &str = "step";
/// Why a message was dead-lettered (masked), set by whoever dead-letters it.
pub const REASON: &str = "x-yichuang-reason";
/// When a message was dead-lettered (RFC 3339).
pub const DEAD_AT: &str = "x-yichuang-dead-at";
/// A task message that may be a second copy of one already published (the relay's earlier
/// claim of the task ran out unrecorded): the adapter holds it before looking the task up, as it
/// holds a redelivery (docs/adapters.md).
pub const COPY: &str = "copy";
/// A stalled task published again: the n-th repair ([`crate::stall`]).
pub const REPAIR: &str = "repair";
/// On a task an operator moved back from its dead queue (`yichuang dlq replay`, the console):
/// the adapter handles it even if it remembers the task, as it does a repair (the lookup before
/// submitting keeps the department's one case).
pub const REPLAYED: &str = "replayed";
/// A copy of a task that was held once: it is not held again.
pub const HELD: &str = "held";
