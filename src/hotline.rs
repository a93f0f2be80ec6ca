//! The 12345 hotline (政务服务便民热线): the rules of the work orders (工单) its system sends —
//! the progress query: who is verified (the last four characters of the ID number or of the
//! mobile number on the case), how many wrong tries a case number may get in a day, and the
//! Chinese answer an agent reads out, built from the case with every name and number masked;
//! and the complaint about a case: the supervision (督办) it opens, assigned to a department,
//! its reply deadline on the working-day calendar and the yellow and red alerts the SLA sweeper
//! raises ([`alerts`], [`next_check_ms`]). The citizen's words are kept on the case and never
//! logged or put in a history entry.
//!
//! Owns the rules; the API (`api/hotline.rs`) checks the caller, audits the read and stores the
//! order with its answer. The verification digits are never logged, stored or echoed.

use chrono::{DateTime, FixedOffset, Utc};

use crate::catalog::Catalog;
use crate::clock::Clocks;
use crate::evaluation::{Refused, Rules};
use crate::event::EventKind;
use crate::privacy::{mask_free_text, mask_name};
use crate::proto::v1::{
    ApplicantKind, Case, CaseEvent, CaseStatus, RectificationState, Supervision, Task, TaskStatus,
};

/// The kind of a progress query, as stored.
pub const PROGRESS: &str = "progress";

/// The kind of a consultation, as stored.
pub const CONSULTATION: &str = "consultation";

/// The kind of a complaint, as stored.
pub const COMPLAINT: &str = "complaint";

/// What a complaint may be about.
pub const COMPLAINT_KINDS: [&str; 4] = ["slow", "refused", "rude", "other"];

/// The longest complaint, in characters.
pub const MAX_CONTENT_CHARS: usize = 2000;

/// How many characters the applicant says: the last four of the ID number or the mobile.
pub const VERIFY_CHARS: usize = 4;

/// The longest work order number, in characters.
pub const MAX_ORDER_NO_CHARS: usize = 64;

/// Checks a work order number: required, at most [`MAX_ORDER_NO_CHARS`] printable ASCII
/// characters without spaces (the hotline's numbers are codes). The refusal names the field.
pub fn check_order_no(order_no: &str) -> Result<(), String> {
    let n = order_no.chars().count();
    if n == 0 {
        return Err("orderNo: is required; give the hotline's work order number (工单编号)".into());
    }
    if n > MAX_ORDER_NO_CHARS || !order_no.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "orderNo: give the work order number as at most {MAX_ORDER_NO_CHARS} letters, digits and punctuation without spaces"
        ));
    }
    Ok(())
}

/// The verification digits as said (upper case: `x` read as `X`), when they have the form of
/// the last four characters of an ID number, a credit code or a mobile number (letters and
/// digits); `None` otherwise (a refusal as any other
/// wrong digits: the form says nothing about the case).
pub fn normalise_digits(digits: &str) -> Option<String> {
    let d = digits.trim().to_ascii_uppercase();
    (d.chars().count() == VERIFY_CHARS && d.chars().all(|c| c.is_ascii_alphanumeric())).then_some(d)
}

/// Whether `digits` (normalised by [`normalise_digits`]) are the last four characters of the
/// ID number or mobile of the case's applicant, its contact or its legal representative. The
/// applicant's own `id_number` counts only for a natural person: an organisation's is its
/// unified social credit code, which is public.
pub fn verified(case: &Case, digits: &str) -> bool {
    let Some(applicant) = case.submission.as_ref().and_then(|s| s.applicant.as_ref()) else {
        return false;
    };
    let mut numbers = Vec::new();
    if applicant.kind == ApplicantKind::Person as i32 {
        numbers.push(applicant.id_number.as_str());
    }
    if let Some(c) = &applicant.contact {
        numbers.push(c.mobile.as_str());
    }
    if let Some(r) = &applicant.legal_representative {
        numbers.push(r.id_number.as_str());
        numbers.push(r.mobile.as_str());
    }
    numbers.into_iter().any(|n| {
        let n: Vec<char> = n.trim().to_ascii_uppercase().chars().collect();
        n.len() >= VERIFY_CHARS
            && n[n.len() - VERIFY_CHARS..]
                .iter()
                .copied()
                .eq(digits.chars())
    })
}

/// The hall's date of `at` (`YYYY-MM-DD`): the day the lockout counts in.
pub fn day(at: DateTime<Utc>, zone: FixedOffset) -> String {
    at.with_timezone(&zone).format("%Y-%m-%d").to_string()
}

/// `2026-03-20` → `2026年3月20日`, as an agent reads a date out; anything else as given.
fn spoken_date(date: &str) -> String {
    match chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d") {
        Ok(d) => d.format("%Y年%-m月%-d日").to_string(),
        Err(_) => mask_free_text(date),
    }
}

fn case_state(status: i32) -> &'static str {
    match CaseStatus::try_from(status).unwrap_or(CaseStatus::Unspecified) {
        CaseStatus::Accepted => "已受理，正在分送各部门",
        CaseStatus::InProgress => "正在办理",
        CaseStatus::AwaitingSupplement => "等待申请人补正材料",
        CaseStatus::ReadyForDelivery => "已办结，等待领取或寄送结果",
        CaseStatus::Delivered => "已办结，结果已交付",
        CaseStatus::ClosedRejected => "已办结（不予许可或不予受理）",
        CaseStatus::Unspecified => "状态未知",
    }
}

fn task_state(status: i32) -> &'static str {
    match TaskStatus::try_from(status).unwrap_or(TaskStatus::Unspecified) {
        TaskStatus::Waiting => "等待前序事项办结",
        TaskStatus::Ready | TaskStatus::Dispatched => "已分送部门，等待部门受理",
        TaskStatus::AcceptedByDepartment => "部门已受理",
        TaskStatus::InReview => "部门审查中",
        TaskStatus::SupplementRequired => "需要补正材料",
        TaskStatus::Approved => "已准予",
        TaskStatus::Rejected => "不予许可",
        TaskStatus::Refused => "部门不予受理",
        TaskStatus::Unspecified => "状态未知",
    }
}

/// A material asked for, by its name in the acceptance list when it is a code of it.
fn material(catalog: &Catalog, requested: &str) -> String {
    catalog
        .materials
        .get(requested.trim())
        .map_or_else(|| mask_free_text(requested), |m| m.name.clone())
}

fn department(catalog: &Catalog, task: &Task) -> String {
    catalog
        .departments
        .get(&task.department)
        .map_or_else(|| task.department.clone(), |d| d.name.clone())
}

/// The answer to a verified progress query about `case`, in Chinese an agent reads out: the
/// applicant (name masked), the case's state, each department's task, the promised date and
/// what the applicant must do. Holds no ID or mobile number and no unmasked name.
pub fn progress_text(catalog: &Catalog, case: &Case) -> String {
    let applicant = case
        .submission
        .as_ref()
        .and_then(|s| s.applicant.as_ref())
        .map_or_else(String::new, |a| mask_name(&a.name));
    let mut text = format!(
        "您查询的办件{}（申请人{}）{}。",
        case.case_number,
        applicant,
        case_state(case.status)
    );
    if !case.promised_deadline.is_empty() {
        text.push_str(&format!(
            "承诺办结日期为{}。",
            spoken_date(&case.promised_deadline)
        ));
    }
    let mut todo = Vec::new();
    for (i, t) in case.tasks.iter().enumerate() {
        text.push_str(&format!(
            "{}. {}办理的“{}”：{}",
            i + 1,
            department(catalog, t),
            t.item_name,
            task_state(t.status)
        ));
        if !t.promised_deadline.is_empty()
            && !matches!(
                TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unspecified),
                TaskStatus::Approved | TaskStatus::Rejected | TaskStatus::Refused
            )
        {
            text.push_str(&format!(
                "，承诺{}前办结",
                spoken_date(&t.promised_deadline)
            ));
        }
        text.push('。');
        if t.status == TaskStatus::SupplementRequired as i32 && !t.materials_requested.is_empty() {
            let list: Vec<String> = t
                .materials_requested
                .iter()
                .map(|m| material(catalog, m))
                .collect();
            todo.push(format!(
                "向{}补正：{}",
                department(catalog, t),
                list.join("、")
            ));
        }
    }
    let status = CaseStatus::try_from(case.status).unwrap_or(CaseStatus::Unspecified);
    if !todo.is_empty() {
        text.push_str(&format!(
            "需要申请人办理：{}。请携带补正材料到受理窗口或通过原渠道提交。",
            todo.join("；")
        ));
    } else if status == CaseStatus::ReadyForDelivery {
        text.push_str("需要申请人办理：请按受理时选择的方式领取结果。");
    } else {
        text.push_str("目前无需申请人办理任何事项。");
    }
    text
}

/// The refusal of a progress query whose digits did not verify. It says nothing of the case,
/// not even whether it exists; the same for an unknown case number.
pub fn not_verified() -> String {
    "verifyDigits: the applicant could not be verified for this case number; ask for the last 4 characters of the ID number or mobile number on the case (one new work order per try)".into()
}

/// The refusal of every progress query about a case number after `max` failed verifications on
/// `day`.
pub fn locked(max: u32, day: &str) -> String {
    format!(
        "caseNumber: {max} failed verifications for this case number on {day}; progress queries about it are refused until the next day (against guessing)"
    )
}

/// Checks a complaint as given, every problem at once.
pub fn check_complaint(kind: &str, content: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    if !COMPLAINT_KINDS.contains(&kind) {
        problems.push(format!(
            "kind: {:?} is not a kind of complaint; give {}",
            mask_free_text(kind),
            COMPLAINT_KINDS.join(", ")
        ));
    }
    let chars = content.chars().count();
    if chars == 0 {
        problems.push("content: is required; give what the citizen said".to_string());
    } else if chars > MAX_CONTENT_CHARS {
        problems.push(format!(
            "content: {chars} characters; shorten it to at most {MAX_CONTENT_CHARS}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The department a complaint is assigned to: the one named (which must have a task of the
/// case), or the department of the undecided task due first, or of the first task.
fn assignee(case: &Case, named: &str) -> Result<String, Refused> {
    let number = &case.case_number;
    if !named.is_empty() {
        if case.tasks.iter().any(|t| t.department == named) {
            return Ok(named.to_string());
        }
        let mut departments: Vec<&str> = case.tasks.iter().map(|t| t.department.as_str()).collect();
        departments.dedup();
        return Err(Refused::Invalid(format!(
            "department: {:?} handles no task of case {number}; give one of {}, or leave it empty for the department of the task due first",
            mask_free_text(named),
            departments.join(", ")
        )));
    }
    let decided = |t: &&Task| {
        matches!(
            TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unspecified),
            TaskStatus::Approved | TaskStatus::Rejected | TaskStatus::Refused
        )
    };
    case.tasks
        .iter()
        .filter(|t| !decided(t))
        .min_by_key(|t| t.promised_due_at.as_ref().map_or(i64::MAX, |d| d.seconds))
        .or(case.tasks.first())
        .map(|t| t.department.clone())
        .ok_or_else(|| {
            Refused::Precondition(format!(
                "case {number} has no task to assign a complaint to"
            ))
        })
}

/// Records the complaint `order_no` on `case` at `now`: a supervision assigned to `department`
/// (see [`assignee`]) with its reply due in `working_days` working days. `Ok((s, None))`: the
/// case already holds this very complaint (a repeat); nothing changes. The same order number
/// with other content is refused.
#[allow(clippy::too_many_arguments)]
pub fn complain(
    rules: &Rules,
    clocks: &Clocks,
    case: &mut Case,
    order_no: &str,
    kind: &str,
    content: &str,
    department: &str,
    working_days: u32,
    last_seq: i64,
    now: DateTime<Utc>,
) -> Result<(Supervision, Option<Vec<CaseEvent>>), Refused> {
    if let Some(first) = case.supervisions.iter().find(|s| s.order_no == order_no) {
        let same_department = department.is_empty()
            || first
                .watch
                .as_ref()
                .is_some_and(|w| w.assignee == department);
        if first.kind == kind && first.content == content && same_department {
            return Ok((first.clone(), None));
        }
        return Err(Refused::Precondition(format!(
            "orderNo: work order {order_no} was already recorded on case {} with other content; give each work order its own number",
            case.case_number
        )));
    }
    let assignee = assignee(case, department)?;
    let watch = rules.watch(clocks, assignee, now, working_days)?;
    let note = if watch.deadline_provisional {
        " (provisional: a year without its holiday notice counted Monday–Friday)"
    } else {
        ""
    };
    let mut events = Vec::new();
    EventKind::SupervisionOpened.push(
        &mut events,
        last_seq,
        timestamp(now),
        "",
        format!(
            "12345 work order {order_no}: complaint ({kind}) to {}, reply due {}{note}",
            watch.assignee, watch.deadline
        ),
    );
    let s = Supervision {
        order_no: order_no.to_string(),
        kind: kind.to_string(),
        content: content.to_string(),
        watch: Some(watch),
    };
    case.supervisions.push(s.clone());
    Ok((s, Some(events)))
}

/// The alerts of the case's open supervisions that came due at `now`, each raised once: the red
/// alert once the reply deadline passed (which also stands for the warning), else the yellow
/// warning once its share of the time passed. The flags live in the record, edited under the
/// case's lock: several sweepers raise nothing twice.
pub fn alerts(case: &mut Case, last_seq: i64, now: DateTime<Utc>) -> Vec<CaseEvent> {
    let mut events = Vec::new();
    let at = timestamp(now);
    let reached =
        |t: &Option<pbjson_types::Timestamp>| t.as_ref().is_some_and(|t| ms(t) <= ms(&at));
    for s in &mut case.supervisions {
        let Some(w) = s.watch.as_mut() else { continue };
        if w.state != RectificationState::Open as i32 {
            continue;
        }
        if reached(&w.due_at) && !w.overdue {
            w.overdue = true;
            w.warned = true;
            EventKind::SupervisionOverdue.push(
                &mut events,
                last_seq,
                at,
                "",
                format!(
                    "red alert: 12345 work order {} to {} is unanswered past its reply deadline {}",
                    s.order_no, w.assignee, w.deadline
                ),
            );
        } else if reached(&w.warn_at) && !w.warned {
            w.warned = true;
            EventKind::SupervisionWarning.push(
                &mut events,
                last_seq,
                at,
                "",
                format!(
                    "yellow warning: 12345 work order {} to {} is still unanswered, reply due {}",
                    s.order_no, w.assignee, w.deadline
                ),
            );
        }
    }
    events
}

/// When the sweeper must next look at one of the case's open supervisions (a warning, then a
/// deadline), in ms; `None`: nothing to watch.
pub fn next_check_ms(case: &Case) -> Option<i64> {
    case.supervisions
        .iter()
        .filter_map(|s| s.watch.as_ref())
        .filter(|w| w.state == RectificationState::Open as i32)
        .filter_map(|w| {
            if !w.warned {
                w.warn_at.as_ref().map(ms)
            } else if !w.overdue {
                w.due_at.as_ref().map(ms)
            } else {
                None
            }
        })
        .min()
}

/// The longest reply, in characters.
pub const MAX_REPLY_CHARS: usize = 2000;

/// Closes the open supervision of complaint `order_no` on `case` with `reply`, by `operator`,
/// at `at`. `Ok` with no entries: it is already closed with this very reply (a repeat).
pub fn reply(
    case: &mut Case,
    order_no: &str,
    reply: &str,
    operator: &str,
    last_seq: i64,
    at: pbjson_types::Timestamp,
) -> Result<Vec<CaseEvent>, Refused> {
    let reply = reply.trim();
    if reply.is_empty() {
        return Err(Refused::Invalid(
            "reply: is required; give the department's answer to the complaint".into(),
        ));
    }
    let chars = reply.chars().count();
    if chars > MAX_REPLY_CHARS {
        return Err(Refused::Invalid(format!(
            "reply: {chars} characters; shorten it to at most {MAX_REPLY_CHARS}"
        )));
    }
    let number = case.case_number.clone();
    let Some(w) = case
        .supervisions
        .iter_mut()
        .find(|s| s.order_no == order_no)
        .and_then(|s| s.watch.as_mut())
    else {
        return Err(Refused::Invalid(format!(
            "orderNo: case {number} has no complaint {}; give the work order number of one of its complaints",
            mask_free_text(order_no)
        )));
    };
    if w.state == RectificationState::Closed as i32 {
        if w.response == reply {
            return Ok(Vec::new());
        }
        return Err(Refused::Precondition(format!(
            "complaint {order_no} of case {number} was already replied to by {}; a complaint is replied to once",
            w.closed_by
        )));
    }
    w.state = RectificationState::Closed as i32;
    w.response = reply.to_string();
    w.closed_at = Some(at);
    w.closed_by = operator.to_string();
    let late = ms(&at) >= w.due_at.as_ref().map_or(i64::MAX, ms);
    let mut events = Vec::new();
    EventKind::SupervisionReplied.push(
        &mut events,
        last_seq,
        at,
        "",
        format!(
            "12345 work order {order_no} replied to by {operator} {} its deadline {} (department {})",
            if late { "after" } else { "within" },
            w.deadline,
            w.assignee
        ),
    );
    Ok(events)
}

/// The body of a reply to the hotline (JSON): the work order, the case, the department, the
/// reply and when it was given.
pub fn reply_body(
    case_number: &str,
    order_no: &str,
    department: &str,
    reply: &str,
    at: DateTime<Utc>,
) -> String {
    serde_json::json!({
        "orderNo": order_no,
        "caseNumber": case_number,
        "department": department,
        "reply": reply,
        "repliedAt": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
    .to_string()
}

/// Sends the queued replies to `[hotline] reply_url` until the task is dropped: each POSTed
/// signed (HMAC-SHA256 of `<timestamp>\n<order number>\n<body>`, the platform push's headers:
/// [`crate::feed::signature`]), tried again with a growing wait (1 s doubling, at most 5 min)
/// until the hotline answers 2xx. Each reply is claimed with a lease before it is sent
/// ([`crate::store::Store::claim_hotline_replies`]): one replica sends it at a time, and a
/// failure recorded late never undoes another's delivery. The hotline dedupes by order number:
/// a reply may still come twice (a crash after sending, or a send slower than the lease),
/// never not at all.
pub async fn deliver_replies(store: crate::store::Store, config: crate::config::HotlineConfig) {
    use crate::feed::{EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(config.timeout_secs))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %crate::tls::with_causes(&e), "the hotline reply worker cannot start");
            return;
        }
    };
    tracing::info!(url = %config.reply_url, "hotline replies: sending");
    // One reply claimed at a time, for longer than its send may take.
    let lease_ms = i64::try_from(config.timeout_secs)
        .unwrap_or(i64::MAX / 2_000)
        .saturating_mul(1000)
        .saturating_add(REPLY_LEASE_MARGIN_MS);
    loop {
        if crate::supervise::stopping() {
            return;
        }
        let now = Utc::now().timestamp_millis();
        match store.claim_hotline_replies(now, 1, lease_ms).await {
            Ok(due) => {
                crate::supervise::progressed();
                let claimed = !due.is_empty();
                for (order_no, body, tries) in due {
                    let timestamp = Utc::now().timestamp();
                    let sent = client
                        .post(&config.reply_url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .header(TIMESTAMP_HEADER, timestamp.to_string())
                        .header(EVENT_ID_HEADER, &order_no)
                        .header(
                            SIGNATURE_HEADER,
                            signature(&config.secret, timestamp, &order_no, body.as_bytes()),
                        )
                        .body(body)
                        .send()
                        .await;
                    let now = Utc::now().timestamp_millis();
                    let (delivered, next) = match sent {
                        Ok(r) if r.status().is_success() => (Some(now), now),
                        Ok(r) => {
                            tracing::warn!(order_no = %order_no, status = %r.status(), tries = tries + 1, "the hotline did not take a reply; trying again");
                            (None, now + backoff_ms(tries))
                        }
                        Err(e) => {
                            tracing::warn!(order_no = %order_no, error = %crate::tls::with_causes(&e), tries = tries + 1, "a reply could not reach the hotline; trying again");
                            (None, now + backoff_ms(tries))
                        }
                    };
                    if delivered.is_some() {
                        tracing::info!(order_no = %order_no, "a complaint's reply reached the hotline");
                    }
                    if let Err(e) = store.hotline_reply_tried(&order_no, delivered, next).await {
                        tracing::warn!(order_no = %order_no, error = %e, "the try of a hotline reply could not be recorded");
                    }
                }
                if claimed {
                    // The next one due, without waiting.
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "the hotline reply worker cannot read its queue"),
        }
        if crate::supervise::idle(tokio::time::sleep(std::time::Duration::from_millis(200)))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// What a reply's lease holds beyond the send's timeout: the time to record the try.
const REPLY_LEASE_MARGIN_MS: i64 = 30_000;

/// The wait before try `tries + 1`: 1 s doubling, at most 5 minutes.
fn backoff_ms(tries: i32) -> i64 {
    (1000i64 << tries.clamp(0, 9)).min(300_000)
}

/// The item a consultation asks about: by its code, or the one item whose name holds `query`.
/// A refusal says what to give (several items match: their names and codes).
pub fn find_item<'c>(
    catalog: &'c Catalog,
    code: &str,
    query: &str,
) -> Result<&'c crate::catalog::Item, String> {
    if !code.is_empty() {
        return catalog.items.get(code).ok_or_else(|| {
            format!(
                "itemCode: {:?} is not an item of the acceptance list; give its code, or words of its name as query",
                mask_free_text(code)
            )
        });
    }
    if query.is_empty() {
        return Err("itemCode or query: give the item's code or words of its name".into());
    }
    let found: Vec<&crate::catalog::Item> = catalog
        .items
        .values()
        .filter(|i| i.name.contains(query))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "query: no item of the acceptance list is named with {:?}; give other words or the item's code",
            mask_free_text(query)
        )),
        many => Err(format!(
            "query: {} items match; give one code: {}",
            many.len(),
            many.iter()
                .map(|i| format!("{} {}", i.code.get_ref(), i.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The answer to a consultation about `item`, read out from the acceptance list: the department,
/// the materials (form, copies, legal basis), the time limits and the acceptance modes.
pub fn consultation_text(catalog: &Catalog, item: &crate::catalog::Item) -> String {
    use crate::catalog::{Form, Mode};
    let department = catalog
        .departments
        .get(item.department.get_ref().as_str())
        .map_or_else(|| item.department.get_ref().clone(), |d| d.name.clone());
    let mut text = format!("“{}”由{}办理。需要携带的材料：", item.name, department);
    for (n, m) in item.materials.iter().enumerate() {
        let name = catalog
            .materials
            .get(m.code.get_ref().as_str())
            .map_or_else(|| m.code.get_ref().clone(), |k| k.name.clone());
        let forms: Vec<&str> = m
            .forms
            .iter()
            .map(|f| match f {
                Form::Original => "原件",
                Form::Copy => "复印件",
                Form::Electronic => "电子件",
            })
            .collect();
        text.push_str(&format!("{}. {}（{}", n + 1, name, forms.join("或")));
        if m.copies > 0 {
            text.push_str(&format!("，{}份", m.copies));
        }
        if !m.legal_basis.is_empty() {
            text.push_str(&format!("；依据：{}", m.legal_basis));
        }
        text.push_str("）；");
    }
    text.push_str(&format!(
        "承诺办结时限为{}个工作日，法定时限为{}个工作日。",
        item.promised_working_days, item.legal_working_days
    ));
    let modes: Vec<&str> = item
        .modes
        .iter()
        .map(|m| match m {
            Mode::Standard => "一般受理",
            Mode::Commitment => "告知承诺",
            Mode::Tolerant => "容缺受理",
        })
        .collect();
    if !modes.is_empty() {
        text.push_str(&format!("受理方式：{}。", modes.join("、")));
    }
    text
}

/// The answer stored for a complaint (no citizen's words in it).
pub fn complaint_text(catalog: &Catalog, case_number: &str, s: &Supervision) -> String {
    let w = s.watch.clone().unwrap_or_default();
    let department = catalog
        .departments
        .get(&w.assignee)
        .map_or_else(|| w.assignee.clone(), |d| d.name.clone());
    format!(
        "投诉工单{}已受理：办件{}已督办{}，答复期限为{}。",
        s.order_no,
        case_number,
        department,
        spoken_date(&w.deadline)
    )
}

fn ms(t: &pbjson_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
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
    use crate::proto::v1::{Applicant, Contact, Submission};

    fn case() -> Case {
        Case {
            case_number: "N1".into(),
            status: CaseStatus::AwaitingSupplement as i32,
            promised_deadline: "2026-03-20".into(),
            submission: Some(Submission {
                applicant: Some(Applicant {
                    kind: ApplicantKind::Person as i32,
                    name: "张三丰".into(),
                    id_number: "11010519491231002X".into(),
                    contact: Some(Contact {
                        name: "李四".into(),
                        mobile: "13800138000".into(),
                        address: "北京市东城区某路1号".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            tasks: vec![Task {
                item_name: "食品经营许可".into(),
                department: "SCJG".into(),
                status: TaskStatus::SupplementRequired as i32,
                materials_requested: vec!["营业执照副本".into()],
                promised_deadline: "2026-03-18".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_last_four_of_the_id_or_the_mobile_verify_and_nothing_else() {
        let c = case();
        assert!(verified(&c, &normalise_digits("002x").unwrap()));
        assert!(verified(&c, &normalise_digits(" 8000 ").unwrap()));
        assert!(!verified(&c, &normalise_digits("0021").unwrap()));
        assert!(!verified(&c, &normalise_digits("1380").unwrap()));
        assert_eq!(normalise_digits("12345"), None);
        assert_eq!(normalise_digits("12-4"), None);
        // The unified social credit code of an organisation ends in letters too.
        assert_eq!(normalise_digits("q23h").as_deref(), Some("Q23H"));
        assert_eq!(normalise_digits(""), None);
        assert!(!verified(&Case::default(), "0000"));
    }

    #[test]
    fn an_organisations_public_credit_code_does_not_verify() {
        let mut c = case();
        let a = c.submission.as_mut().unwrap().applicant.as_mut().unwrap();
        a.id_number = "91640104MA76L8Q23H".into();
        a.legal_representative = Some(crate::proto::v1::Person {
            id_number: "64010419800315001X".into(),
            mobile: "13909510007".into(),
            ..Default::default()
        });
        for kind in [
            ApplicantKind::Organization,
            ApplicantKind::Other,
            ApplicantKind::Unspecified,
        ] {
            c.submission
                .as_mut()
                .unwrap()
                .applicant
                .as_mut()
                .unwrap()
                .kind = kind as i32;
            assert!(!verified(&c, "Q23H"), "{kind:?}");
            assert!(verified(&c, "001X"), "{kind:?}: the legal representative");
            assert!(
                verified(&c, "0007"),
                "{kind:?}: the legal representative's mobile"
            );
            assert!(verified(&c, "8000"), "{kind:?}: the contact's mobile");
        }
        c.submission
            .as_mut()
            .unwrap()
            .applicant
            .as_mut()
            .unwrap()
            .kind = ApplicantKind::Person as i32;
        assert!(verified(&c, "Q23H"), "a person's own ID number");
    }

    #[test]
    fn the_answer_reads_out_state_dates_and_what_to_do_with_nothing_unmasked() {
        let catalog = Catalog {
            departments: Default::default(),
            materials: Default::default(),
            items: Default::default(),
            bundles: Default::default(),
        };
        let text = progress_text(&catalog, &case());
        assert!(text.contains("等待申请人补正材料"), "{text}");
        assert!(text.contains("2026年3月20日"), "{text}");
        assert!(text.contains("补正：营业执照副本"), "{text}");
        assert!(text.contains("张*"), "{text}");
        for secret in ["张三丰", "11010519491231002X", "13800138000", "李四"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn order_numbers_are_required_and_bounded() {
        assert!(check_order_no("12345-20260310-0001").is_ok());
        assert!(check_order_no("").unwrap_err().contains("orderNo"));
        assert!(check_order_no("a b").is_err());
        assert!(check_order_no(&"9".repeat(65)).is_err());
    }
}
