//! Durable state: cases, their tasks and append-only event history (the audit trail), the
//! idempotency records of submissions and the audit of every attempt. One interface, two
//! engines: SQLite, the embedded default for one node, and PostgreSQL for several replicas.
//! Accepting a case and recording it is one transaction; the store never validates input.

pub mod board;
mod migrate;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use rows::{
    AccessQuery, AccessRecord, Attempt, Deficient, Evaluated, EventItem, FeedItem, FeedQuery,
    HotlineOrder, ListQuery, NotAcceptedQuery, OnTimeRow, OperatorAction, OutboxItem, PushDead,
    Silent, StoreError, SubmitCommand, SubmitResult,
};
// The engines' shared helpers and SQL, reached by them as `super::…`.
use rows::{
    CaseRows, Decision, Existing, FLAG_REPAIR_POSTGRES, FLAG_REPAIR_SQLITE, NotAcceptedRow,
    ON_TIME_POSTGRES, ON_TIME_SQLITE, SLA_COUNTS, STALL_CANDIDATES_POSTGRES,
    STALL_CANDIDATES_SQLITE, StoredNotAccepted, apply_dispatch_marks, attempt_detail, case_rows,
    decide, decode_case, decode_not_accepted, dispatch_in_case, dispatched_event, ms_to_timestamp,
    not_accepted_row, summary,
};

use chrono::{DateTime, Utc};

use crate::config::StoreConfig;
use crate::proto::v1::{Case, CaseEvent, CaseSummary};

pub use crate::lifecycle::{CaseChange, ClockRow};

/// The same call on whichever engine the store is: each engine implements the primitives with
/// the same signature, and [`Store`] adds what is the same for both (e.g.
/// [`Store::record_result`] as an edit of the case).
macro_rules! on_engine {
    ($store:expr, $s:ident => $call:expr) => {
        match $store {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

/// Tells feed readers that history was committed, so they read at once instead of polling: a
/// counter bumped after every commit of this process that wrote history entries (a submission,
/// an edit of a case, a dispatch mark). Readers wait with [`HistorySignal::subscribe`]'s
/// `changed()`, which never misses a commit made after the reader's last look; several commits
/// while a reader is busy wake it once. A PostgreSQL store shared by replicas is also written by
/// the others, which this signal does not see: their readers keep a slow poll as well.
#[derive(Clone, Debug)]
pub struct HistorySignal(std::sync::Arc<tokio::sync::watch::Sender<u64>>);

impl Default for HistorySignal {
    fn default() -> Self {
        HistorySignal(std::sync::Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

impl HistorySignal {
    /// History was committed.
    pub fn committed(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` completes after the next commit.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The gateway's store.
#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl Store {
    /// Opens the configured store and applies pending migrations.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        Ok(match config {
            StoreConfig::Sqlite { path } => Store::Sqlite(sqlite::SqliteStore::open(path).await?),
            StoreConfig::Postgres {
                url,
                schema,
                pool_size,
            } => Store::Postgres(postgres::PgStore::open(url, schema, *pool_size).await?),
        })
    }

    /// The first answer to a repeated attempt (same id and content), or the conflict of an id
    /// reused for other content, with the repeat written to the audit trail; `None` for a new
    /// attempt. Lets the API answer a repeat without evaluating it again.
    pub async fn replay(&self, attempt: &Attempt) -> Result<Option<SubmitResult>, StoreError> {
        on_engine!(self, s => s.replay(attempt).await)
    }

    /// Records a submission: accepts the case, or records the deficient attempt, or replays the
    /// first answer to a repeated submission. One transaction.
    pub async fn submit(&self, command: SubmitCommand) -> Result<SubmitResult, StoreError> {
        let result = on_engine!(self, s => s.submit(command).await)?;
        self.history().committed();
        Ok(result)
    }

    /// The signal sent after each commit of this process that wrote history.
    pub fn history(&self) -> &HistorySignal {
        on_engine!(self, s => &s.history)
    }

    /// True when other processes may write history too (PostgreSQL shared by replicas), so a
    /// reader cannot rely on [`Store::history`] alone.
    pub fn shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// One case and its history, oldest first.
    pub async fn get_case(
        &self,
        case_number: &str,
    ) -> Result<Option<(Case, Vec<CaseEvent>)>, StoreError> {
        on_engine!(self, s => s.get_case(case_number).await)
    }

    /// Cases matching `query`, newest first.
    pub async fn list_cases(
        &self,
        query: ListQuery,
    ) -> Result<Vec<(i64, CaseSummary)>, StoreError> {
        on_engine!(self, s => s.list_cases(query).await)
    }

    /// The submissions not accepted (one-time notices given) that `query` selects, in position
    /// order (issue 19: reported upward as not accepted).
    pub async fn not_accepted(
        &self,
        query: NotAcceptedQuery,
    ) -> Result<Vec<crate::proto::v1::NotAccepted>, StoreError> {
        on_engine!(self, s => s.not_accepted(query).await)
    }

    /// Number of attempts recorded for a submission id (the audit trail).
    pub async fn attempt_count(&self, submission_id: &str) -> Result<i64, StoreError> {
        on_engine!(self, s => s.attempt_count(submission_id).await)
    }

    /// Appends an operator's action to the audit of operators' actions.
    pub async fn record_operator_action(&self, action: OperatorAction) -> Result<(), StoreError> {
        on_engine!(self, s => s.record_operator_action(action).await)
    }

    /// The last `limit` operator actions, newest first.
    pub async fn operator_actions(&self, limit: i64) -> Result<Vec<OperatorAction>, StoreError> {
        on_engine!(self, s => s.operator_actions(limit).await)
    }

    /// Appends to the access log (reads of personal data, refused calls).
    pub async fn record_access(&self, record: AccessRecord) -> Result<(), StoreError> {
        on_engine!(self, s => s.record_access(record).await)
    }

    /// The access records `query` selects, newest first.
    pub async fn access_log(&self, query: AccessQuery) -> Result<Vec<AccessRecord>, StoreError> {
        on_engine!(self, s => s.access_log(query).await)
    }

    /// The 12345 work order `order_no`, when one was stored.
    pub async fn hotline_order(&self, order_no: &str) -> Result<Option<HotlineOrder>, StoreError> {
        on_engine!(self, s => s.hotline_order(order_no).await)
    }

    /// Stores a work order with its answer; `false` when its number was stored already (by a
    /// concurrent repeat or another replica: nothing is written, the first stands).
    pub async fn record_hotline_order(&self, order: HotlineOrder) -> Result<bool, StoreError> {
        on_engine!(self, s => s.record_hotline_order(order).await)
    }

    /// The last `limit` work orders, newest first.
    pub async fn hotline_orders(&self, limit: i64) -> Result<Vec<HotlineOrder>, StoreError> {
        on_engine!(self, s => s.hotline_orders(limit).await)
    }

    /// Counts a progress query's try about `case_number` on `day` (the hall's date) before its
    /// digits are checked, atomically with the day's count (replicas and concurrent queries
    /// alike): the try's id, or `None` when the case number already had `max` failed tries
    /// that day (locked: nothing is written). A try whose digits verify is taken back with
    /// [`Store::hotline_try_verified`]; the others stay counted as failures.
    pub async fn hotline_try(
        &self,
        case_number: &str,
        day: &str,
        order_no: &str,
        caller: &str,
        at_ms: i64,
        max: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (case_number, day, order_no, caller) = (
            case_number.to_string(),
            day.to_string(),
            order_no.to_string(),
            caller.to_string(),
        );
        on_engine!(self, s => s.hotline_try(case_number, day, order_no, caller, at_ms, max).await)
    }

    /// Takes back try `id` of [`Store::hotline_try`]: its digits verified, it is no failure.
    pub async fn hotline_try_verified(&self, id: i64) -> Result<(), StoreError> {
        on_engine!(self, s => s.hotline_try_verified(id).await)
    }

    /// How many progress queries about `case_number` were refused for wrong verification digits
    /// on `day` (the hall's date).
    pub async fn hotline_failures(&self, case_number: &str, day: &str) -> Result<i64, StoreError> {
        on_engine!(self, s => s.hotline_failures(case_number.to_string(), day.to_string()).await)
    }

    /// Claims up to `limit` replies to the hotline not delivered yet whose next try is due by
    /// `now_ms`: each is made not due for `lease_ms` (another replica does not send it
    /// meanwhile; one that is not recorded by then, a crash, is due again). Order number, body
    /// and tries so far.
    pub async fn claim_hotline_replies(
        &self,
        now_ms: i64,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<(String, String, i32)>, StoreError> {
        on_engine!(self, s => s.claim_hotline_replies(now_ms, limit, lease_ms).await)
    }

    /// Records a try of reply `order_no`: delivered at `delivered_ms` (a delivery already
    /// recorded keeps its time), or to be tried again at `next_try_ms` (nothing is written over
    /// a delivery another replica recorded).
    pub async fn hotline_reply_tried(
        &self,
        order_no: &str,
        delivered_ms: Option<i64>,
        next_try_ms: i64,
    ) -> Result<(), StoreError> {
        let o = order_no.to_string();
        on_engine!(self, s => s.hotline_reply_tried(o, delivered_ms, next_try_ms).await)
    }

    /// Number of cases stored.
    pub async fn case_count(&self) -> Result<i64, StoreError> {
        on_engine!(self, s => s.case_count().await)
    }

    /// Leases up to `limit` READY tasks to the outbox relay for `lease_ms`; a task whose lease
    /// ran out (its relay died before the confirm) is handed out again.
    pub async fn claim_ready(
        &self,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let now = Utc::now().timestamp_millis();
        on_engine!(self, s => s.claim_ready(limit, now, lease_ms).await)
    }

    /// Marks tasks dispatched after the broker confirmed them; records it in each case's history.
    pub async fn mark_dispatched(&self, task_ids: Vec<String>) -> Result<(), StoreError> {
        self.mark_dispatched_at(task_ids, Utc::now()).await
    }

    /// [`Store::mark_dispatched`] at `at` on the legal clock (see [`crate::clock`]).
    pub async fn mark_dispatched_at(
        &self,
        task_ids: Vec<String>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = at.timestamp_millis();
        on_engine!(self, s => s.mark_dispatched(task_ids, now).await)?;
        self.history().committed();
        Ok(())
    }

    /// Records what a department said about a task (see [`crate::lifecycle`]) in one
    /// transaction: the task row, the case record and status, the released tasks (READY for
    /// the relay) and the history entries. `Ok(None)`: unknown task, or nothing to change (a
    /// duplicate or stale result). `round` is the supplement round the result is about.
    pub async fn record_result(
        &self,
        task_id: &str,
        department: &str,
        round: i32,
        update: crate::lifecycle::TaskUpdate,
    ) -> Result<Option<crate::lifecycle::Applied>, StoreError> {
        self.record_result_at(task_id, department, round, update, None, Utc::now())
            .await
    }

    /// [`Store::record_result`] with the department's decision time, at `at` on the legal clock.
    pub async fn record_result_at(
        &self,
        task_id: &str,
        department: &str,
        round: i32,
        update: crate::lifecycle::TaskUpdate,
        decided_at: Option<pbjson_types::Timestamp>,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::lifecycle::Applied>, StoreError> {
        self.apply_result(task_id, Some(department), round, update, decided_at, at)
            .await
    }

    /// What a department (or, with `department` `None`, an operator) said about a task, applied
    /// by [`crate::lifecycle::apply`] as an edit of its case: the task's status, the released
    /// tasks (READY for the relay) and the history entries, in one transaction.
    async fn apply_result(
        &self,
        task_id: &str,
        department: Option<&str>,
        round: i32,
        update: crate::lifecycle::TaskUpdate,
        decided_at: Option<pbjson_types::Timestamp>,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::lifecycle::Applied>, StoreError> {
        // A task never changes case: looked up before the case's transaction.
        let Some(case_number) = self.case_of_task(task_id).await? else {
            return Ok(None);
        };
        let (task, department) = (task_id.to_string(), department.map(str::to_string));
        let edited = self
            .edit_case(
                &case_number,
                at,
                move |case, last_seq, at| match crate::lifecycle::apply(
                    case,
                    &task,
                    department.as_deref(),
                    round,
                    update,
                    last_seq,
                    decided_at,
                    at,
                ) {
                    Some(applied) => (Some(applied.change(&task)), Some(applied)),
                    None => (None, None),
                },
            )
            .await?;
        Ok(edited.and_then(|(_, applied)| applied))
    }

    /// The case a task belongs to.
    pub async fn case_of_task(&self, task_id: &str) -> Result<Option<String>, StoreError> {
        on_engine!(self, s => s.case_of_task(task_id).await)
    }

    /// Edits one case in one transaction: `edit` gets the case record, the seq of its last
    /// history entry and the time, and returns what it changed — the history entries to
    /// append and the task rows whose status moved (a task set READY goes to the relay) — and
    /// an answer for the caller; `at` is the time on the gateway's clock. No change: nothing is written and the case is returned as it
    /// was. `Ok(None)`: no such case.
    pub async fn edit_case<T: Send + 'static>(
        &self,
        case_number: &str,
        at: DateTime<Utc>,
        edit: impl FnOnce(&mut Case, i64, pbjson_types::Timestamp) -> (Option<CaseChange>, T)
        + Send
        + 'static,
    ) -> Result<Option<(Case, T)>, StoreError> {
        let now = at.timestamp_millis();
        let edited = on_engine!(self, s => s.edit_case(case_number, now, edit).await)?;
        if edited.is_some() {
            // Perhaps nothing was written (no change); a reader woken for nothing reads once.
            self.history().committed();
        }
        Ok(edited)
    }

    /// Records the delivery of a ready case (see [`crate::lifecycle::deliver`]). `Ok(None)`: no
    /// such case.
    pub async fn deliver(
        &self,
        case_number: &str,
        detail: String,
        at: DateTime<Utc>,
    ) -> Result<Option<Result<Case, crate::lifecycle::DeliveryRefused>>, StoreError> {
        let edited =
            self.edit_case(case_number, at, move |case, last_seq, at| {
                match crate::lifecycle::deliver(case, detail, last_seq, at) {
                    Ok(events) => (
                        Some(CaseChange {
                            events,
                            ..Default::default()
                        }),
                        Ok(()),
                    ),
                    Err(refused) => (None, Err(refused)),
                }
            })
            .await?;
        Ok(edited.map(|(case, answer)| answer.map(|()| case)))
    }

    /// Records a department's approval with its result documents, whoever reports it (an
    /// operator's correction); returns the released tasks.
    pub async fn approve_task(
        &self,
        task_id: &str,
        documents: Vec<crate::proto::v1::ResultDocument>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let update = crate::lifecycle::TaskUpdate::Approved {
            department_case_number: String::new(),
            documents,
        };
        // An operator's word holds whatever round the task is in.
        let applied = self
            .apply_result(task_id, None, i32::MAX, update, None, Utc::now())
            .await?;
        Ok(applied.map(|a| a.released))
    }

    /// Tasks the SLA sweeper must look at by `now_ms`: their facts changed, or their warning or
    /// deadline came; `(case number, task id)`.
    pub async fn clock_candidates(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        on_engine!(self, s => s.clock_candidates(now_ms, limit).await)
    }

    /// Cases whose open rectification (整改) the SLA sweeper must look at by `now_ms` (its
    /// warning or deadline came), the earliest first.
    pub async fn rectification_candidates(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        on_engine!(self, s => s.rectification_candidates(now_ms, limit).await)
    }

    /// Records an evaluation (好差评) of a concluded case, and opens the rectification of a 差评
    /// (see [`crate::evaluation`]). `Ok(None)`: no such case; `Some(Ok((case, false)))`: the
    /// case already held this very evaluation (nothing written).
    pub async fn evaluate(
        &self,
        case_number: &str,
        rules: std::sync::Arc<crate::evaluation::Rules>,
        clocks: crate::clock::Clocks,
        evaluation: crate::proto::v1::Evaluation,
        department: String,
        at: DateTime<Utc>,
    ) -> Result<Option<Result<(Case, bool), crate::evaluation::Refused>>, StoreError> {
        let edited = self
            .edit_case(case_number, at, move |case, last_seq, _| {
                match rules.evaluate(&clocks, case, evaluation, &department, last_seq, at) {
                    Ok(Some(events)) => (
                        Some(CaseChange {
                            events,
                            ..Default::default()
                        }),
                        Ok(true),
                    ),
                    Ok(None) => (None, Ok(false)),
                    Err(refused) => (None, Err(refused)),
                }
            })
            .await?;
        Ok(edited.map(|(case, answer)| answer.map(|recorded| (case, recorded))))
    }

    /// Closes a case's open rectification with `response`, by `operator` (see
    /// [`crate::evaluation::close`]). `Ok(None)`: no such case; `Some(Ok((case, false)))`: it
    /// was already closed with this response (nothing written).
    pub async fn close_rectification(
        &self,
        case_number: &str,
        response: String,
        operator: String,
        zone: chrono::FixedOffset,
        at: DateTime<Utc>,
    ) -> Result<Option<Result<(Case, bool), crate::evaluation::Refused>>, StoreError> {
        let edited = self
            .edit_case(
                case_number,
                at,
                move |case, last_seq, at| match crate::evaluation::close(
                    case, &response, &operator, last_seq, at, zone,
                ) {
                    Ok(events) if events.is_empty() => (None, Ok(false)),
                    Ok(events) => (
                        Some(CaseChange {
                            events,
                            ..Default::default()
                        }),
                        Ok(true),
                    ),
                    Err(refused) => (None, Err(refused)),
                },
            )
            .await?;
        Ok(edited.map(|(case, answer)| answer.map(|closed| (case, closed))))
    }

    /// On-time figures by department and item (filters empty: all), open tasks judged at `now`.
    pub async fn on_time(
        &self,
        department: &str,
        item_code: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<OnTimeRow>, StoreError> {
        let now = now.timestamp_millis();
        on_engine!(self, s => s.on_time(department, item_code, now).await)
    }

    /// Records that the task's adapter was heard of at `at_ms` (a result or a heartbeat).
    pub async fn touch_progress(&self, task_id: &str, at_ms: i64) -> Result<(), StoreError> {
        on_engine!(self, s => s.touch_progress(task_id, at_ms).await)
    }

    /// Tasks in a department's hands not heard of since before `before_ms` (oldest first).
    pub async fn stall_candidates(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<Silent>, StoreError> {
        on_engine!(self, s => s.stall_candidates(before_ms, limit).await)
    }

    /// Flags a silent task for the relay to republish; `Some(repairs so far)` when this call
    /// flagged it (exactly one caller does), `None` when it moved meanwhile or is flagged.
    pub async fn flag_repair(&self, silent: &Silent) -> Result<Option<i64>, StoreError> {
        on_engine!(self, s => s.flag_repair(&silent.task_id, silent.since_ms).await)
    }

    /// After the broker confirmed a republished task: clears its flag, restarts its silence
    /// from `at_ms`; `Some((case number, repairs))` when this call cleared it.
    pub async fn finish_repair(
        &self,
        task_id: &str,
        at_ms: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        on_engine!(self, s => s.finish_repair(task_id, at_ms).await)
    }

    /// Marks every open task (undecided, or with provisional deadlines) for the SLA sweeper,
    /// after the calendar was reloaded; how many.
    pub async fn mark_open_clocks(&self) -> Result<u64, StoreError> {
        on_engine!(self, s => s.mark_open_clocks().await)
    }

    /// Dispatches and department answers per department and minute since `since_ms`
    /// ([`board::FLOW_KINDS`]), for the console's flows.
    pub async fn flow_counts(&self, since_ms: i64) -> Result<Vec<board::FlowCount>, StoreError> {
        on_engine!(self, s => s.flow_counts(since_ms).await)
    }

    /// The tasks of `department`'s latest `limit` cases, newest first.
    pub async fn department_tasks(
        &self,
        department: &str,
        limit: i64,
    ) -> Result<Vec<board::TaskLine>, StoreError> {
        on_engine!(self, s => s.department_tasks(department, limit).await)
    }

    /// Undecided tasks past their deadline at `now_ms`, warned about, or with a provisional
    /// deadline, the earliest deadline first.
    pub async fn deadline_board(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<board::TaskLine>, StoreError> {
        on_engine!(self, s => s.deadline_board(now_ms, limit).await)
    }

    /// Per department and window: undecided tasks red, yellow and provisional at `now_ms`.
    pub async fn deadline_counts(
        &self,
        now_ms: i64,
    ) -> Result<Vec<board::DeadlineCounts>, StoreError> {
        on_engine!(self, s => s.deadline_counts(now_ms).await)
    }

    /// The case accepted for `submission_id`, if any.
    pub async fn case_by_submission(
        &self,
        submission_id: &str,
    ) -> Result<Option<String>, StoreError> {
        on_engine!(self, s => s.case_by_submission(submission_id).await)
    }

    /// The cases one of whose tasks a department's system took as `number` (its own case
    /// number), exactly.
    pub async fn cases_by_department_number(
        &self,
        number: &str,
    ) -> Result<Vec<String>, StoreError> {
        on_engine!(self, s => s.cases_by_department_number(number).await)
    }

    /// The first `limit` cases (by number) on which `id` (an identity number or credit code)
    /// is a party's, exactly.
    pub async fn cases_by_party_id(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        on_engine!(self, s => s.cases_by_party_id(id, limit).await)
    }

    /// Undecided tasks whose deadlines are provisional.
    pub async fn provisional_open(&self) -> Result<i64, StoreError> {
        on_engine!(self, s => s.provisional_open().await)
    }

    /// How many yellow warnings, red alerts and late-to-window decisions the history holds, by
    /// department and item: `(department, item, kind, count)`.
    pub async fn sla_counts(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        on_engine!(self, s => s.sla_counts().await)
    }

    /// Leases up to `limit` unpublished history entries to the relay, oldest first.
    pub async fn claim_events(
        &self,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<EventItem>, StoreError> {
        let now = Utc::now().timestamp_millis();
        on_engine!(self, s => s.claim_events(limit, now, lease_ms).await)
    }

    /// Marks history entries published after the broker confirmed them.
    pub async fn mark_events_published(&self, keys: Vec<(String, i64)>) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        on_engine!(self, s => s.mark_events_published(keys, now).await)
    }

    /// Number of tasks written but not yet confirmed by the broker.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        on_engine!(self, s => s.outbox_backlog().await)
    }

    /// History entries after a position, in the order they were committed (see [`FeedQuery`]).
    pub async fn feed(&self, query: FeedQuery) -> Result<Vec<FeedItem>, StoreError> {
        on_engine!(self, s => s.feed(query).await)
    }

    /// Takes (or keeps) the push cursor `name` for `owner` for `lease_ms`; its position, or
    /// `None` while another owner holds it.
    pub async fn lease_push(
        &self,
        name: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = Utc::now().timestamp_millis();
        on_engine!(self, s => s.lease_push(name, owner, now, lease_ms).await)
    }

    /// Gives up `owner`'s lease on the push cursor `name` (a stopping gateway), so another
    /// replica takes over at once.
    pub async fn release_push(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.lease_push(name, owner, -1).await.map(|_| ())
    }

    /// Moves the push cursor `name` forward to `position` and renews `owner`'s lease; false
    /// when `owner` no longer holds it (or another holder got further).
    pub async fn advance_push(
        &self,
        name: &str,
        owner: &str,
        position: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let until = Utc::now().timestamp_millis() + lease_ms;
        on_engine!(self, s => s.advance_push(name, owner, position, until).await)
    }

    /// Sets the entry at `dead.position` aside (a receiver refused it for good) and moves the
    /// push cursor `name` past it, in one transaction; false when `owner` no longer holds the
    /// cursor (nothing is recorded then).
    pub async fn set_aside_push(
        &self,
        name: &str,
        owner: &str,
        dead: PushDead,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let until = Utc::now().timestamp_millis() + lease_ms;
        on_engine!(self, s => s.set_aside_push(name, owner, dead, until).await)
    }

    /// The entries set aside from the push cursor `name`, oldest first.
    pub async fn push_dead(&self, name: &str) -> Result<Vec<PushDead>, StoreError> {
        on_engine!(self, s => s.push_dead(name).await)
    }

    /// Number of case history entries not yet confirmed on the events exchange.
    pub async fn events_backlog(&self) -> Result<i64, StoreError> {
        on_engine!(self, s => s.events_backlog().await)
    }

    /// Checks the store answers (for health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.case_count().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    /// The SLA query counts exactly the SLA alerts, by their wire names.
    #[test]
    fn sla_counts_names_the_sla_alerts() {
        let listed = SLA_COUNTS
            .split_once("IN (")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(list, _)| list)
            .expect("SLA_COUNTS filters with IN (...)");
        let kinds: Vec<&str> = listed
            .split(',')
            .map(|k| k.trim().trim_matches('\''))
            .collect();
        let alerts: Vec<&str> = EventKind::SLA_ALERTS.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, alerts);
    }
}
