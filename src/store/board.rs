//! What the operations console reads from the store ([`crate::console`]): a department's
//! dispatches and decisions per minute, its latest tasks, the open tasks whose deadline is
//! yellow, red or provisional, and the case a search term names. The records and the SQL both
//! engines run (written with SQLite's `?N`; [`postgres_sql`] gives PostgreSQL's `$N`). Reads only:
//! the console never changes a case.

use crate::event::EventKind;

/// How many history entries of one kind a department's tasks got in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCount {
    pub department: String,
    /// The minute's start, in milliseconds since the epoch.
    pub minute_ms: i64,
    /// The entry's kind (a task's dispatch or its department's answer).
    pub kind: String,
    pub count: i64,
}

/// One task as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLine {
    pub task_id: String,
    pub case_number: String,
    pub hall_code: String,
    pub window_code: String,
    pub department: String,
    pub item_code: String,
    /// `TaskStatus` as stored.
    pub status: i32,
    pub accepted_at_ms: i64,
    /// The promised deadline, once the SLA sweeper has counted it.
    pub due_ms: Option<i64>,
    pub decided_ms: Option<i64>,
    /// Counted Monday–Friday, the calendar's year missing.
    pub provisional: bool,
    /// The sweeper has warned about it (yellow).
    pub warned: bool,
}

/// The kinds the flows count: a task handed to its department, and every answer of the
/// department. Refused (the system would not take the data) is the failure the console shows.
pub const FLOW_KINDS: &[EventKind] = &[
    EventKind::TaskDispatched,
    EventKind::TaskApproved,
    EventKind::TaskRejected,
    EventKind::TaskSupplementRequired,
    EventKind::TaskRefused,
];

fn flow_kinds_sql() -> String {
    FLOW_KINDS
        .iter()
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ?1: since (ms).
pub fn flow_counts_sql() -> String {
    format!(
        "SELECT t.department, (e.at_ms / 60000) * 60000, e.kind, count(*)
         FROM case_events e JOIN tasks t ON t.task_id = e.task_id
         WHERE e.at_ms >= ?1 AND e.kind IN ({})
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        flow_kinds_sql()
    )
}

const TASK_COLUMNS: &str = "t.task_id, t.case_number, c.hall_code, c.window_code, t.department, t.item_code, t.status, c.accepted_at_ms, t.due_ms, t.decided_ms, t.deadline_provisional,
     EXISTS (SELECT 1 FROM case_events w WHERE w.case_number = t.case_number AND w.task_id = t.task_id AND w.kind = 'task-sla-warning')";

/// ?1: department, ?2: limit. Newest cases first.
pub fn department_tasks_sql() -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM cases c JOIN tasks t ON t.case_number = c.case_number
         WHERE t.department = ?1 ORDER BY c.accepted_at_ms DESC, c.case_number DESC LIMIT ?2"
    )
}

/// ?1: now (ms), ?2: limit. Undecided tasks past their deadline, warned about, or counted on a
/// provisional calendar; the earliest deadline first.
pub fn deadline_board_sql() -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks t JOIN cases c ON c.case_number = t.case_number
         WHERE t.decided_ms IS NULL AND (t.due_ms < ?1 OR t.deadline_provisional = 1
           OR EXISTS (SELECT 1 FROM case_events w WHERE w.case_number = t.case_number AND w.task_id = t.task_id AND w.kind = 'task-sla-warning'))
         ORDER BY t.due_ms IS NULL, t.due_ms, t.task_id LIMIT ?2"
    )
}

/// ?1: now (ms). Per department and window: undecided tasks past their deadline (red), warned
/// about and not yet past it (yellow), and counted on a provisional calendar.
pub const DEADLINE_COUNTS: &str = "SELECT t.department, c.hall_code, c.window_code,
       SUM(CASE WHEN t.due_ms < ?1 THEN 1 ELSE 0 END),
       SUM(CASE WHEN (t.due_ms IS NULL OR t.due_ms >= ?1) AND EXISTS (SELECT 1 FROM case_events w WHERE w.case_number = t.case_number AND w.task_id = t.task_id AND w.kind = 'task-sla-warning') THEN 1 ELSE 0 END),
       SUM(CASE WHEN t.deadline_provisional = 1 THEN 1 ELSE 0 END)
     FROM tasks t JOIN cases c ON c.case_number = t.case_number
     WHERE t.decided_ms IS NULL GROUP BY t.department, c.hall_code, c.window_code";

/// Red, yellow and provisional tasks of one department from one window now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadlineCounts {
    pub department: String,
    pub hall_code: String,
    pub window_code: String,
    pub red: i64,
    pub yellow: i64,
    pub provisional: i64,
}

/// ?1: a submission id.
pub const CASE_BY_SUBMISSION: &str = "SELECT case_number FROM cases WHERE submission_id = ?1";

/// ?1: `% accepted as <number>`: the entries the department's own case number may have been
/// recorded by. `LIKE` ignores the case of letters on SQLite and not on PostgreSQL, so the
/// match is made exact by [`exactly_numbered`].
pub const CASES_BY_DEPARTMENT_NUMBER: &str = "SELECT case_number, detail FROM case_events
     WHERE kind = 'task-accepted-by-department' AND detail LIKE ?1 ESCAPE '\\' LIMIT 100";

/// The cases of `rows` (case number, entry) whose entry names `number` exactly, each once.
pub fn exactly_numbered(rows: Vec<(String, String)>, number: &str) -> Vec<String> {
    let tail = format!(" accepted as {number}");
    let mut cases: Vec<String> = rows
        .into_iter()
        .filter(|(_, detail)| detail.ends_with(&tail))
        .map(|(case, _)| case)
        .collect();
    cases.sort();
    cases.dedup();
    cases
}

/// Whether `id` (an identity number or credit code, compared without case) is the applicant's,
/// their legal representative's, the agent's or another party's on `case`.
pub fn names_party(case: &crate::proto::v1::Case, id: &str) -> bool {
    let Some(s) = &case.submission else {
        return false;
    };
    let same = |other: &str| !other.is_empty() && other.eq_ignore_ascii_case(id);
    let applicant = s.applicant.as_ref();
    applicant.is_some_and(|a| {
        same(&a.id_number)
            || a.legal_representative
                .as_ref()
                .is_some_and(|p| same(&p.id_number))
    }) || s.agent.as_ref().is_some_and(|p| same(&p.id_number))
        || s.other_parties.iter().any(|p| same(&p.id_number))
}

/// ?1: the last case number read, ?2: how many. Cases in number order, a page at a time, for
/// the exact search by identity number (a scan; see docs/console.md).
pub const CASE_BODIES: &str =
    "SELECT case_number, body FROM cases WHERE case_number > ?1 ORDER BY case_number LIMIT ?2";

/// Cases [`CASE_BODIES`] reads at a time.
pub const CASE_PAGE: i64 = 500;

/// Adds to `found` the cases of `page` (number, record) on which `id` is a party's, up to
/// `limit`; a record that does not decode is passed over (and logged), not the search's end.
/// Returns the last number of the page, where the next one starts; `None` after the last.
pub fn match_page(
    page: Vec<(String, Vec<u8>)>,
    id: &str,
    found: &mut Vec<String>,
    limit: usize,
) -> Option<String> {
    let full = page.len() as i64 == CASE_PAGE;
    let mut last = None;
    for (number, body) in page {
        match super::decode_case(&body) {
            Ok(case) if names_party(&case, id) && found.len() < limit => found.push(number.clone()),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(case = %number, error = %e, "a case record does not decode; the search passes it over")
            }
        }
        last = Some(number);
    }
    if full && found.len() < limit {
        last
    } else {
        None
    }
}

/// SQLite's `?N` placeholders as PostgreSQL's `$N`.
pub fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The `LIKE` pattern that finds the entry recording the department's case number `number`
/// (`<department> accepted as <number>`), with `%`, `_` and `\` in it taken literally.
pub fn department_number_pattern(number: &str) -> String {
    let mut escaped = String::with_capacity(number.len());
    for c in number.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("% accepted as {escaped}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_ones_and_nothing_else_changes() {
        assert_eq!(
            postgres_sql("SELECT a FROM t WHERE x = ?1 AND y = '?' AND z < ?12"),
            "SELECT a FROM t WHERE x = $1 AND y = '?' AND z < $12"
        );
    }

    #[test]
    fn a_department_number_matches_exactly_whatever_the_engine_s_like() {
        let rows = vec![
            ("c1".to_string(), "市场监管 accepted as SCJG001".to_string()),
            ("c2".to_string(), "市场监管 accepted as scjg001".to_string()),
            ("c1".to_string(), "市场监管 accepted as SCJG001".to_string()),
        ];
        assert_eq!(exactly_numbered(rows, "SCJG001"), vec!["c1".to_string()]);
    }

    #[test]
    fn a_department_number_with_wildcards_cannot_match_other_cases() {
        assert_eq!(
            department_number_pattern("SC%_2026"),
            "% accepted as SC\\%\\_2026"
        );
    }
}
