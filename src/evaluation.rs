//! 好差评 (GB/T 39735) and 整改: the applicant's evaluation of a concluded case, one per case
//! (一次一评), and the rectification a 差评 (overall level 2 or less) opens — its assignee, its
//! deadline in working days on the hall's calendar, its yellow warning and red alert (raised by
//! the SLA sweeper, [`crate::clock::sweep`]) and its closing by an operator.
//!
//! Owns the rules; the API checks the caller and the store writes the edit under the case's
//! lock, so a repeat or a second replica changes nothing twice. It never makes up an
//! evaluation: no default score, nothing on a timeout — a case nobody evaluated stays without
//! one. The comment is the applicant's own words: it is never logged and never in a history
//! entry (they say only whether there is one).

use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset, Utc};
use tracing::warn;

use crate::calendar::{Limit, years_list};
use crate::clock::Clocks;
use crate::config::EvaluationConfig;
use crate::event::EventKind;
use crate::proto::v1::{
    Case, CaseEvent, CaseStatus, Evaluation, IndicatorScore, Rectification, RectificationState,
};

/// The overall satisfaction: given as `Evaluation.level`, never as a score.
pub const OVERALL: &str = "整体满意度";

/// The longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 500;

/// The longest rectification response, in characters.
pub const MAX_RESPONSE_CHARS: usize = 2000;

/// The channels an evaluation is given on.
pub const CHANNELS: [&str; 3] = ["window", "terminal", "online"];

/// The highest overall level that is a 差评 (opens a rectification).
pub const POOR_LEVEL: i32 = 2;

/// Why an evaluation or a closing was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The request itself is wrong (INVALID_ARGUMENT): what, where, what to do.
    #[error("{0}")]
    Invalid(String),
    /// The case is not in a state for it (FAILED_PRECONDITION).
    #[error("{0}")]
    Precondition(String),
}

/// The evaluation rules of `[evaluation]`, checked at start.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Each channel's indicators but the overall one, in the configured order.
    sets: [(&'static str, Vec<String>); 3],
    /// A rectification's time, in working days from the evaluation date.
    working_days: u32,
    /// Share of that time after which the yellow warning comes.
    warn_share: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(&EvaluationConfig::default(), 0.8).expect("the defaults are valid")
    }
}

impl Rules {
    /// The rules of `config`; `sla_warn_share` (the tasks' share) when it names no share. A
    /// refusal names the key at fault and says what to give.
    pub fn new(
        config: &EvaluationConfig,
        sla_warn_share: f64,
    ) -> Result<Rules, (&'static str, String)> {
        let warn_share = config.warn_share.unwrap_or(sla_warn_share);
        if !(warn_share > 0.0 && warn_share < 1.0) {
            return Err((
                "warn_share",
                format!(
                    "[evaluation] warn_share = {warn_share}: give a share of the rectification's time between 0 and 1, e.g. 0.8"
                ),
            ));
        }
        if config.rectification_working_days == 0 {
            return Err((
                "rectification_working_days",
                "[evaluation] rectification_working_days = 0: give at least 1 working day (default 5)"
                    .into(),
            ));
        }
        let set = |channel: &'static str,
                   list: &[String]|
         -> Result<Vec<String>, (&'static str, String)> {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for name in list.iter().map(|n| n.trim()) {
                if name.is_empty() {
                    return Err((
                        channel,
                        format!(
                            "[evaluation.indicators] {channel}: an empty indicator name; remove it"
                        ),
                    ));
                }
                if !seen.insert(name) {
                    return Err((
                        channel,
                        format!(
                            "[evaluation.indicators] {channel}: {name} is listed twice; list each indicator once"
                        ),
                    ));
                }
                if name != OVERALL {
                    out.push(name.to_string());
                }
            }
            Ok(out)
        };
        let i = &config.indicators;
        Ok(Rules {
            sets: [
                ("window", set("window", &i.window)?),
                ("terminal", set("terminal", &i.terminal)?),
                ("online", set("online", &i.online)?),
            ],
            working_days: config.rectification_working_days,
            warn_share,
        })
    }

    /// The indicators `channel` scores besides the overall level.
    pub fn indicators(&self, channel: &str) -> Option<&[String]> {
        self.sets
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, set)| set.as_slice())
    }

    /// A rectification's time in working days.
    pub fn working_days(&self) -> u32 {
        self.working_days
    }

    /// Checks an evaluation as given, every problem at once: its channel, its levels, its
    /// indicators against the channel's set (each scored once, none outside it) and its comment.
    pub fn check(&self, e: &Evaluation) -> Result<(), Refused> {
        let mut problems = Vec::new();
        let channel = e.channel.trim();
        let level = |n: i32| (1..=5).contains(&n);
        if !level(e.level) {
            problems.push(format!(
                "evaluation.level: {} is outside 1–5; give the overall satisfaction (整体满意度): 5 非常满意, 4 满意, 3 基本满意, 2 不满意, 1 非常不满意",
                e.level
            ));
        }
        match self.indicators(channel) {
            None => problems.push(format!(
                "evaluation.channel: {:?} is not a channel; give window, terminal or online",
                crate::privacy::mask_free_text(channel)
            )),
            Some(set) => {
                let mut scored = BTreeSet::new();
                for s in &e.scores {
                    let name = s.indicator.trim();
                    // Echoed masked: what a caller sends may be logged with the refusal.
                    let shown = crate::privacy::mask_free_text(name);
                    if name == OVERALL {
                        problems.push(format!(
                            "evaluation.scores: {OVERALL} is the overall level; give it as evaluation.level, not as a score"
                        ));
                    } else if !set.iter().any(|i| i == name) {
                        problems.push(format!(
                            "evaluation.scores: {shown:?} is not an indicator of the {channel} channel; it scores {}",
                            set.join(", ")
                        ));
                    } else if !scored.insert(name) {
                        problems.push(format!(
                            "evaluation.scores: {name} is scored twice; score each indicator once"
                        ));
                    }
                    if !level(s.level) {
                        problems.push(format!(
                            "evaluation.scores: {shown} level {} is outside 1–5",
                            s.level
                        ));
                    }
                }
                let missing: Vec<&str> = set
                    .iter()
                    .map(String::as_str)
                    .filter(|i| !scored.contains(i))
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "evaluation.scores: {} not scored; the {channel} channel scores {}, 1–5 each",
                        missing.join(", "),
                        set.join(", ")
                    ));
                }
            }
        }
        let chars = e.comment.trim().chars().count();
        if chars > MAX_COMMENT_CHARS {
            problems.push(format!(
                "evaluation.comment: {chars} characters; shorten it to at most {MAX_COMMENT_CHARS}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Refused::Invalid(problems.join("; ")))
        }
    }

    /// Records evaluation `e` (checked by [`Rules::check`], `hall_code`/`window_code` set by the
    /// caller) on `case` at `now`, and for a 差评 opens its rectification, assigned to
    /// `department` (a department of one of the case's tasks) or, empty, the accepting window.
    /// `Ok(None)`: the case already holds this very evaluation (a repeat); nothing changes.
    pub fn evaluate(
        &self,
        clocks: &Clocks,
        case: &mut Case,
        mut e: Evaluation,
        department: &str,
        last_seq: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<CaseEvent>>, Refused> {
        let zone = clocks.zone();
        e.channel = e.channel.trim().to_string();
        e.comment = e.comment.trim().to_string();
        for s in &mut e.scores {
            s.indicator = s.indicator.trim().to_string();
        }
        let department = department.trim();
        let number = case.case_number.clone();
        if let Some(first) = &case.evaluation {
            // A department matters only to the rectification a 差评 opened.
            let assignee_same = department.is_empty()
                || case
                    .rectification
                    .as_ref()
                    .is_none_or(|r| r.assignee == department);
            if same_content(first, &e) && assignee_same {
                return Ok(None);
            }
            return Err(Refused::Precondition(format!(
                "case {number} was already evaluated at {} ({} channel); one evaluation per case (一次一评): the first stands",
                local(first.at.as_ref(), zone),
                first.channel
            )));
        }
        let status = CaseStatus::try_from(case.status).unwrap_or(CaseStatus::Unspecified);
        if !matches!(status, CaseStatus::Delivered | CaseStatus::ClosedRejected) {
            return Err(Refused::Precondition(format!(
                "case {number} is {}: only a delivered (出件) or closed-rejected case may be evaluated; evaluate it once its results are handed over",
                status
                    .as_str_name()
                    .trim_start_matches("CASE_STATUS_")
                    .to_lowercase()
            )));
        }
        if !department.is_empty() && !case.tasks.iter().any(|t| t.department == department) {
            let mut departments: Vec<&str> =
                case.tasks.iter().map(|t| t.department.as_str()).collect();
            departments.dedup();
            return Err(Refused::Invalid(format!(
                "departmentCode: {:?} handled no task of case {number}; give one of {}, or leave it empty for the accepting window",
                crate::privacy::mask_free_text(department),
                departments.join(", ")
            )));
        }
        let at = timestamp(now);
        e.at = Some(at);
        let mut events = Vec::new();
        EventKind::Evaluated.push(
            &mut events,
            last_seq,
            at,
            "",
            format!(
                "{} channel, overall {} ({}), comment: {}",
                e.channel,
                e.level,
                level_name(e.level),
                if e.comment.is_empty() { "no" } else { "yes" }
            ),
        );
        let poor = e.level <= POOR_LEVEL;
        case.evaluation = Some(e);
        if poor {
            let assignee = if department.is_empty() {
                let s = case.submission.as_ref();
                format!(
                    "window:{}/{}",
                    s.map_or("", |s| s.hall_code.as_str()),
                    s.map_or("", |s| s.window_code.as_str())
                )
            } else {
                department.to_string()
            };
            let rectification = self.open(clocks, assignee, now)?;
            let note = if rectification.deadline_provisional {
                " (provisional: a year without its holiday notice counted Monday–Friday)"
            } else {
                ""
            };
            EventKind::RectificationOpened.push(
                &mut events,
                last_seq,
                at,
                "",
                format!(
                    "assignee {}, deadline {}{note}",
                    rectification.assignee, rectification.deadline
                ),
            );
            case.rectification = Some(rectification);
        }
        Ok(Some(events))
    }

    /// A rectification for `assignee` opened at `now`: its deadline `working_days` working days
    /// after the evaluation date (24:00 of the last), and when its warning comes.
    fn open(
        &self,
        clocks: &Clocks,
        assignee: String,
        now: DateTime<Utc>,
    ) -> Result<Rectification, Refused> {
        self.watch(clocks, assignee, now, self.working_days)
    }

    /// Something owed by `assignee` from `now` within `working_days` working days on the hall's
    /// calendar (24:00 of the last), open, with its warning at this share of the time: a
    /// rectification's, or a 12345 complaint's reply ([`crate::hotline`]).
    pub fn watch(
        &self,
        clocks: &Clocks,
        assignee: String,
        now: DateTime<Utc>,
        working_days: u32,
    ) -> Result<Rectification, Refused> {
        let mut r = Rectification {
            assignee,
            opened_at: Some(timestamp(now)),
            state: RectificationState::Open as i32,
            working_days: working_days as i32,
            ..Default::default()
        };
        let assumed = self.count(clocks, &mut r).map_err(|e| {
            Refused::Precondition(format!(
                "cannot count the rectification's deadline on the working-day calendar: {e}; load the calendar and evaluate again"
            ))
        })?;
        if !assumed.is_empty() {
            warn!(years = %years_list(&assumed), "a rectification's deadline counted Monday–Friday in years without a loaded calendar");
            // Looked at hourly until the year's notice is loaded.
            r.recheck_at = Some(timestamp(now + chrono::Duration::hours(1)));
        }
        Ok(r)
    }

    /// Counts `r`'s deadline and warning from its opening and working days on the calendar in
    /// use, and marks it provisional when it rests on years without their notice (named).
    fn count(
        &self,
        clocks: &Clocks,
        r: &mut Rectification,
    ) -> Result<BTreeSet<i32>, crate::calendar::CalendarError> {
        let zone = clocks.zone();
        let calendar = clocks.calendar().current();
        let opened = r
            .opened_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
            .unwrap_or_default()
            .with_timezone(&zone);
        let limit = Limit::working_days(r.working_days.max(1) as u32);
        let reckoned = calendar.reckon(|c| {
            let hall = c.in_zone(zone);
            let due = hall.deadline(opened, limit)?;
            let warn = hall.share_reached_at(opened, limit, &[], self.warn_share)?;
            Ok((due, warn))
        })?;
        let (due, warn) = reckoned.value;
        r.deadline = calendar.in_zone(zone).last_day(due).to_string();
        r.due_at = Some(timestamp(due.with_timezone(&Utc)));
        r.warn_at = Some(timestamp(warn.with_timezone(&Utc)));
        r.deadline_provisional = !reckoned.assumed.is_empty();
        Ok(reckoned.assumed)
    }
}

/// What the SLA sweeper does with the case's open rectification at `now`: a provisional
/// deadline counted again (confirmed or moved once its year's notice is loaded, with a
/// `deadline-confirmed` entry; looked at again hourly otherwise), then its alerts
/// ([`alerts`]).
pub fn refresh(
    clocks: &Clocks,
    case: &mut Case,
    last_seq: i64,
    now: DateTime<Utc>,
) -> Vec<CaseEvent> {
    let mut events = Vec::new();
    if let Some(r) = case.rectification.as_mut()
        && r.state == RectificationState::Open as i32
        && r.deadline_provisional
    {
        let was = r.deadline.clone();
        match clocks.evaluation().count(clocks, r) {
            Ok(assumed) if assumed.is_empty() => {
                r.recheck_at = None;
                // A deadline moved later takes back an alert raised on the provisional one: it
                // is raised again, once, at the real time.
                let later = |t: &Option<pbjson_types::Timestamp>| {
                    t.as_ref().is_some_and(|t| t.seconds > now.timestamp())
                };
                if later(&r.due_at) {
                    r.overdue = false;
                }
                if later(&r.warn_at) {
                    r.warned = false;
                }
                let change = if was == r.deadline {
                    format!("{} confirmed", r.deadline)
                } else {
                    format!("{was} → {}", r.deadline)
                };
                EventKind::DeadlineConfirmed.push(
                    &mut events,
                    last_seq,
                    timestamp(now),
                    "",
                    format!(
                        "rectification by {}: the working-day calendar is loaded; deadline {change}",
                        r.assignee
                    ),
                );
            }
            Ok(_) | Err(_) => {
                r.recheck_at = Some(timestamp(now + chrono::Duration::hours(1)));
            }
        }
    }
    let seq = last_seq + events.len() as i64;
    events.extend(alerts(case, seq, now));
    // The 12345 complaints' replies are watched in the same sweep.
    let seq = last_seq + events.len() as i64;
    events.extend(crate::hotline::alerts(case, seq, now));
    events
}

/// The alerts of the case's open rectification that came due at `now`, each raised once: the
/// red alert once its deadline passed (which also stands for the warning), else the yellow
/// warning once its share of the time passed. The flags live in the record, edited under the
/// case's lock: several sweepers raise nothing twice.
pub fn alerts(case: &mut Case, last_seq: i64, now: DateTime<Utc>) -> Vec<CaseEvent> {
    let mut events = Vec::new();
    let Some(r) = case.rectification.as_mut() else {
        return events;
    };
    if r.state != RectificationState::Open as i32 {
        return events;
    }
    let at = timestamp(now);
    let reached =
        |t: &Option<pbjson_types::Timestamp>| t.as_ref().is_some_and(|t| ms(t) <= ms(&at));
    if reached(&r.due_at) && !r.overdue {
        r.overdue = true;
        r.warned = true;
        EventKind::RectificationOverdue.push(
            &mut events,
            last_seq,
            at,
            "",
            format!(
                "red alert: the rectification by {} is open past its deadline {}",
                r.assignee, r.deadline
            ),
        );
    } else if reached(&r.warn_at) && !r.warned {
        r.warned = true;
        EventKind::RectificationWarning.push(
            &mut events,
            last_seq,
            at,
            "",
            format!(
                "yellow warning: the rectification by {} is still open, due {}",
                r.assignee, r.deadline
            ),
        );
    }
    events
}

/// When the sweeper must next look at the case's rectification (its warning, then its
/// deadline, and hourly while the deadline is provisional) or at one of its 12345 complaints
/// ([`crate::hotline::next_check_ms`]), in ms; `None`: nothing to watch (none, closed, or
/// every alert raised on a deadline that is final). The store keeps it beside the record
/// ([`crate::store`]).
pub fn next_check_ms(case: &Case) -> Option<i64> {
    match (
        rectification_check_ms(case),
        crate::hotline::next_check_ms(case),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn rectification_check_ms(case: &Case) -> Option<i64> {
    let r = case.rectification.as_ref()?;
    if r.state != RectificationState::Open as i32 {
        return None;
    }
    let alert = if !r.warned {
        r.warn_at.as_ref().map(ms)
    } else if !r.overdue {
        r.due_at.as_ref().map(ms)
    } else {
        None
    };
    let recheck = r
        .recheck_at
        .as_ref()
        .filter(|_| r.deadline_provisional)
        .map(ms);
    match (alert, recheck) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Closes the case's open rectification with the assignee's `response`, by `operator`, at
/// `at`. `Ok` with no entries: it is already closed with this very response (a repeat).
pub fn close(
    case: &mut Case,
    response: &str,
    operator: &str,
    last_seq: i64,
    at: pbjson_types::Timestamp,
    zone: FixedOffset,
) -> Result<Vec<CaseEvent>, Refused> {
    let response = response.trim();
    if response.is_empty() {
        return Err(Refused::Invalid(
            "response: is required; say what was done about the 差评".into(),
        ));
    }
    let chars = response.chars().count();
    if chars > MAX_RESPONSE_CHARS {
        return Err(Refused::Invalid(format!(
            "response: {chars} characters; shorten it to at most {MAX_RESPONSE_CHARS}"
        )));
    }
    let number = case.case_number.clone();
    let Some(r) = case.rectification.as_mut() else {
        return Err(Refused::Precondition(format!(
            "case {number} has no rectification: only a 差评 (overall level {POOR_LEVEL} or less) opens one"
        )));
    };
    if r.state == RectificationState::Closed as i32 {
        if r.response == response {
            return Ok(Vec::new());
        }
        return Err(Refused::Precondition(format!(
            "the rectification of case {number} was closed at {} by {}; it is closed once",
            local(r.closed_at.as_ref(), zone),
            r.closed_by
        )));
    }
    r.state = RectificationState::Closed as i32;
    r.response = response.to_string();
    r.closed_at = Some(at);
    r.closed_by = operator.to_string();
    let late = ms(&at) >= r.due_at.as_ref().map_or(i64::MAX, ms);
    let mut events = Vec::new();
    EventKind::RectificationClosed.push(
        &mut events,
        last_seq,
        at,
        "",
        format!(
            "closed by {operator} {} its deadline {} (assignee {})",
            if late { "after" } else { "within" },
            r.deadline,
            r.assignee
        ),
    );
    Ok(events)
}

/// Whether two evaluations say the same (their time and place aside).
fn same_content(a: &Evaluation, b: &Evaluation) -> bool {
    let scores = |e: &Evaluation| {
        let mut s: Vec<(String, i32)> = e
            .scores
            .iter()
            .map(|IndicatorScore { indicator, level }| (indicator.clone(), *level))
            .collect();
        s.sort();
        s
    };
    a.channel == b.channel && a.level == b.level && a.comment == b.comment && scores(a) == scores(b)
}

/// The name of a level (GB/T 39735).
pub fn level_name(level: i32) -> &'static str {
    match level {
        5 => "非常满意",
        4 => "满意",
        3 => "基本满意",
        2 => "不满意",
        1 => "非常不满意",
        _ => "?",
    }
}

fn ms(t: &pbjson_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

fn local(t: Option<&pbjson_types::Timestamp>, zone: FixedOffset) -> String {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "an unknown time".into())
}

fn timestamp(t: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(level: i32, scores: &[(&str, i32)]) -> Evaluation {
        Evaluation {
            channel: "window".into(),
            level,
            scores: scores
                .iter()
                .map(|(i, l)| IndicatorScore {
                    indicator: i.to_string(),
                    level: *l,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_window_evaluation_passes() {
        let rules = Rules::default();
        let e = window(4, &[("服务效率", 5), ("服务水平", 4), ("服务态度", 3)]);
        assert_eq!(rules.check(&e), Ok(()));
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let rules = Rules::default();
        let mut e = window(6, &[("服务效率", 0), ("办事效率", 3), ("服务效率", 4)]);
        e.comment = "好".repeat(501);
        let Err(Refused::Invalid(m)) = rules.check(&e) else {
            panic!("refused as invalid")
        };
        for part in [
            "evaluation.level: 6 is outside 1–5",
            "服务效率 level 0 is outside 1–5",
            "\"办事效率\" is not an indicator of the window channel",
            "服务效率 is scored twice",
            "服务水平, 服务态度 not scored",
            "evaluation.comment: 501 characters",
        ] {
            assert!(m.contains(part), "{part:?} in {m}");
        }
    }

    #[test]
    fn the_overall_level_is_not_a_score_and_channels_are_known() {
        let rules = Rules::default();
        let e = window(
            3,
            &[
                ("整体满意度", 3),
                ("服务效率", 5),
                ("服务水平", 4),
                ("服务态度", 3),
            ],
        );
        assert!(
            matches!(rules.check(&e), Err(Refused::Invalid(m)) if m.contains("give it as evaluation.level"))
        );
        let mut e = window(3, &[]);
        e.channel = "phone".into();
        assert!(
            matches!(rules.check(&e), Err(Refused::Invalid(m)) if m.contains("give window, terminal or online"))
        );
    }

    #[test]
    fn a_bad_configuration_is_refused() {
        let mut c = EvaluationConfig::default();
        c.indicators.online.push("办事效率".into());
        let (key, message) = Rules::new(&c, 0.8).unwrap_err();
        assert_eq!(key, "online");
        assert!(message.contains("办事效率 is listed twice"), "{message}");
        let c = EvaluationConfig {
            warn_share: Some(1.0),
            ..Default::default()
        };
        assert_eq!(Rules::new(&c, 0.8).unwrap_err().0, "warn_share");
    }
}
