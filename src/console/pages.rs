//! The console's pages, one handler each: the flows (and their live rows), a department, the
//! case search and a case with its live timeline and the audited unmasking of one field, the
//! dead letters (list, one in full, replay, purge, a job's progress), the deadlines board, and
//! signing in and out. Handlers read through the store, [`crate::dlq`] and the flows snapshot,
//! and render with `view.rs`; none writes a case.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode, Uri, header};
use maud::{Markup, html};

use super::flows::{DepartmentFlow, MINUTES, RECENT, Snapshot};
use super::view::{self, Lang, Section};
use super::{Console, html_page, lang_of, redirect};
use crate::auth::{Caller, Permission, Refusal};
use crate::bus::dead::{Action, Selection};
use crate::privacy;
use crate::proto::v1::{Case, CaseEvent};
use crate::store::board::TaskLine;

/// The pairs of a query string or a form body.
/// `text` as one segment of a path (`/`, `?`, `#` and the rest percent-encoded).
fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn lang(headers: &HeaderMap, uri: &Uri) -> Lang {
    lang_of(headers, uri.query())
}

/// The address a request came from (the TCP peer; a header would be the client's word).
pub struct Peer(Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Peer, std::convert::Infallible> {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let tcp = parts
            .extensions
            .get::<TcpConnectInfo>()
            .cloned()
            .or_else(|| {
                parts
                    .extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .map(|t| t.get_ref().clone())
            });
        Ok(Peer(tcp.and_then(|t| t.remote_addr())))
    }
}

/// What every guarded page starts from: the console, the caller the guard let in, and the
/// page's language.
pub struct Ctx {
    c: Console,
    caller: Caller,
    lang: Lang,
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        console: &Console,
    ) -> Result<Ctx, Response> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                "no caller: the console's guard did not run",
            )
                .into_response()
        })?;
        Ok(Ctx {
            c: console.clone(),
            caller,
            lang: lang_of(&parts.headers, parts.uri.query()),
        })
    }
}

fn ok(markup: Markup) -> Response {
    html_page(StatusCode::OK, markup)
}

fn fragment(markup: Markup) -> Response {
    html_page(StatusCode::OK, markup)
}

fn problem_page(
    status: StatusCode,
    lang: Lang,
    caller: Option<&Caller>,
    heading: &str,
    detail: &str,
) -> Response {
    html_page(
        status,
        view::page(
            lang,
            heading,
            Section::None,
            caller,
            view::problem(lang, heading, detail),
        ),
    )
}

/// `caller` may do what `permission` names, or the refusal page (recorded).
async fn permitted(
    console: &Console,
    caller: &Caller,
    permission: Permission,
    what: &str,
    lang: Lang,
) -> Result<(), Response> {
    match console.gateway.guard.policy.allows(caller, permission) {
        Ok(()) => Ok(()),
        Err(refusal) => {
            console
                .gateway
                .guard
                .auditor
                .refused(Some(caller), "Console/page", what, &refusal)
                .await;
            Err(problem_page(
                StatusCode::FORBIDDEN,
                lang,
                Some(caller),
                lang.t("无此权限", "Not permitted"),
                refusal.reason(),
            ))
        }
    }
}

fn zone(console: &Console) -> chrono::FixedOffset {
    console.gateway.clocks.zone()
}

// ---------------------------------------------------------------------------------------------
// Flows

pub async fn flows_page(Ctx { c, caller, lang }: Ctx) -> Response {
    let snapshot = c.flows.snapshot(&c.gateway).await;
    let every = c.gateway.console.refresh_secs * 1000;
    ok(view::page(
        lang,
        lang.t("流转", "Flows"),
        Section::Flows,
        Some(&caller),
        html! {
            h1 { (lang.t("各部门流转", "Flows by department")) }
            p.hint {
                (lang.t("数字为最近", "Counts over the last ")) (RECENT)
                (lang.t(" 分钟;曲线为最近 ", " minutes; lines per minute over the last "))
                (MINUTES) (lang.t(" 分钟每分钟的量。", " minutes."))
            }
            table #flows {
                (flow_head(lang))
                tbody data-live="/console/flows" data-every=(every) {
                    (flow_rows(lang, &snapshot, zone(&c)))
                }
            }
        },
    ))
}

pub async fn flows_rows(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    let lang = lang(&headers, &uri);
    let snapshot = c.flows.snapshot(&c.gateway).await;
    fragment(flow_rows(lang, &snapshot, zone(&c)))
}

fn flow_head(lang: Lang) -> Markup {
    view::head(
        lang,
        &[
            ("部门", "Department"),
            ("派发", "Dispatched"),
            ("办结", "Decided"),
            ("失败", "Failed"),
            ("队列积压", "Backlog"),
            ("重试中", "Retrying"),
            ("死信", "Dead"),
            ("适配器", "Adapter"),
            ("按时率", "On time"),
            ("黄/红", "Yellow/red"),
        ],
    )
}

fn opt(n: Option<u32>) -> String {
    n.map_or_else(|| "?".to_string(), |n| n.to_string())
}

fn flow_row(lang: Lang, d: &DepartmentFlow) -> Markup {
    let failing = d.failed_recent() > 0;
    html! {
        tr id={"dept-" (d.code)} class=[failing.then_some("failing")]
            data-dispatched=(d.dispatched_recent()) data-decided=(d.decided_recent())
            data-failed=(d.failed_recent()) data-backlog=(opt(d.backlog)) data-dead=(opt(d.dead)) {
            td { a href={"/console/departments/" (d.code)} { (d.name) } br; small { (d.code) } }
            td.n { span.count { (d.dispatched_recent()) } (view::sparkline(&d.dispatched, "dispatched")) }
            td.n { span.count { (d.decided_recent()) } (view::sparkline(&d.decided, "decided")) }
            td.n.failed { span.count { (d.failed_recent()) } (view::sparkline(&d.failed, "failed")) }
            td.n.backlog { (opt(d.backlog)) }
            td.n { (opt(d.retrying)) }
            td.n.dead {
                @if d.dead.unwrap_or(0) > 0 {
                    a href={"/console/dead-letters?department=" (d.code)} { (opt(d.dead)) }
                } @else { (opt(d.dead)) }
            }
            td {
                @match (&d.adapter, d.consumers) {
                    (Some(a), _) => {
                        span class=(if a.ready && a.breaker == "closed" { "ok" } else { "bad" }) {
                            (if a.ready { lang.t("就绪", "ready") } else { lang.t("未就绪", "not ready") })
                            " · " (lang.t("熔断", "breaker")) " " (a.breaker)
                        }
                    }
                    (None, Some(0)) => span.bad { (lang.t("无消费者", "no consumer")) },
                    (None, Some(n)) => span.ok { (n) " " (lang.t("个消费者", "consumer(s)")) },
                    (None, None) => "?",
                }
            }
            td.n {
                @match d.on_time_share() {
                    Some(s) => (format!("{:.0}%", s * 100.0)),
                    None => "-",
                }
            }
            td.n {
                span.yellow { (d.yellow) } " / " span.red { (d.red) }
            }
        }
    }
}

fn flow_rows(lang: Lang, s: &Snapshot, zone: chrono::FixedOffset) -> Markup {
    html! {
        @for d in &s.departments { (flow_row(lang, d)) }
        tr.meta {
            td colspan="10" {
                (lang.t("更新于 ", "Updated ")) time #updated { (view::time(s.at, zone)) }
                @for p in &s.problems { " · " span.bad.problem { (p) } }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A department

pub async fn department_page(Ctx { c, caller, lang }: Ctx, Path(code): Path<String>) -> Response {
    let snapshot = c.flows.snapshot(&c.gateway).await;
    let Some(d) = snapshot.departments.iter().find(|d| d.code == code) else {
        return problem_page(
            StatusCode::NOT_FOUND,
            lang,
            Some(&caller),
            lang.t("没有这个部门", "No such department"),
            &format!("{code:?} is not a department of the acceptance list"),
        );
    };
    let tasks = match c.gateway.store.department_tasks(&code, LIST as i64).await {
        Ok(t) => t,
        Err(e) => {
            return problem_page(
                StatusCode::SERVICE_UNAVAILABLE,
                lang,
                Some(&caller),
                lang.t("存储不可用", "Store unavailable"),
                &e.to_string(),
            );
        }
    };
    let now_ms = c.gateway.clocks.now().timestamp_millis();
    ok(view::page(
        lang,
        &d.name,
        Section::Flows,
        Some(&caller),
        html! {
            h1 { (d.name) " " small { (d.code) } }
            table #flows {
                (flow_head(lang))
                tbody { (flow_row(lang, d)) }
            }
            h2 { (lang.t("最近办件的事项", "Tasks of the latest cases")) }
            (task_table(lang, &tasks, now_ms, zone(&c)))
        },
    ))
}

fn deadline_state(lang: Lang, t: &TaskLine, now_ms: i64) -> Markup {
    let red = t.decided_ms.is_none() && t.due_ms.is_some_and(|d| d < now_ms);
    let late = matches!((t.decided_ms, t.due_ms), (Some(at), Some(due)) if at > due);
    html! {
        @if red || late { span.red { (lang.t("超期", "overdue")) } }
        @else if t.warned && t.decided_ms.is_none() { span.yellow { (lang.t("预警", "warning")) } }
        @else { span.ok { (lang.t("正常", "on time")) } }
        @if t.provisional { " " span.yellow { (lang.t("暂定", "provisional")) } }
    }
}

fn task_table(lang: Lang, tasks: &[TaskLine], now_ms: i64, zone: chrono::FixedOffset) -> Markup {
    html! {
        table.tasks {
            (view::head(lang, &[("事项", "Task"), ("办件", "Case"), ("窗口", "Window"), ("状态", "Status"), ("受理时间", "Accepted"), ("承诺时限", "Due"), ("时限", "Deadline")]))
            tbody {
                @for t in tasks {
                    tr {
                        td { (t.task_id) br; small { (t.item_code) " · " (t.department) } }
                        td { a href={"/console/cases/" (t.case_number)} { (t.case_number) } }
                        td { (t.hall_code) "/" (t.window_code) }
                        td { (view::task_status(lang, t.status)) }
                        td { (view::time_ms(Some(t.accepted_at_ms), zone)) }
                        td { (view::time_ms(t.due_ms, zone)) }
                        td { (deadline_state(lang, t, now_ms)) }
                    }
                }
                @if tasks.is_empty() { tr { td colspan="7" { (lang.t("无", "None")) } } }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// The search form.
pub async fn search(Ctx { caller, lang, .. }: Ctx) -> Response {
    ok(search_view(lang, &caller, "", &[], None))
}

/// A search: sent as a form (`POST`), so the term, which may be an identity number, stays out
/// of addresses, browser history and other sites' links.
pub async fn find(Ctx { c, caller, lang }: Ctx, body: Bytes) -> Response {
    let q = first(&pairs(&body), "q");
    let store = &c.gateway.store;
    let looked: Result<Vec<String>, String> = async {
        let failed = |e: crate::store::StoreError| e.to_string();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        if store.get_case(&q).await.map_err(failed)?.is_some() {
            return Ok(vec![q.clone()]);
        }
        if let Some(n) = store.case_by_submission(&q).await.map_err(failed)? {
            return Ok(vec![n]);
        }
        let by_department = store.cases_by_department_number(&q).await.map_err(failed)?;
        if !by_department.is_empty() || !looks_like_id(&q) {
            return Ok(by_department);
        }
        // Personal data as the term: the search itself is recorded (the number masked) first.
        c.gateway
            .guard
            .auditor
            .read(&caller, "Console/search-by-id", privacy::mask_id(&q))
            .await
            .map_err(|e| e.message().to_string())?;
        store.cases_by_party_id(&q, LIST).await.map_err(failed)
    }
    .await;
    match looked {
        Ok(found) if found.len() == 1 => redirect(&format!("/console/cases/{}", found[0])),
        Ok(found) => ok(search_view(lang, &caller, &q, &found, None)),
        Err(e) => html_page(
            StatusCode::SERVICE_UNAVAILABLE,
            search_view(lang, &caller, &q, &[], Some(&e)),
        ),
    }
}

fn search_view(
    lang: Lang,
    caller: &Caller,
    q: &str,
    found: &[String],
    failed: Option<&str>,
) -> Markup {
    view::page(
        lang,
        lang.t("办件查询", "Find a case"),
        Section::Cases,
        Some(caller),
        html! {
            h1 { (lang.t("办件查询", "Find a case")) }
            form #search method="post" action="/console/cases" {
                input type="search" name="q" value=(q) autofocus autocomplete="off"
                    placeholder=(lang.t("办件编号、申请编号、部门办件号或证件号码(精确匹配)", "Case number, submission id, department case number or ID number (exact)"));
                button type="submit" { (lang.t("查询", "Find")) }
            }
            @if let Some(e) = failed { p.bad { (e) } }
            @if !q.is_empty() && found.is_empty() && failed.is_none() {
                p #not-found { (lang.t("没有找到与此完全一致的办件。", "No case matches exactly.")) }
            }
            @if found.len() > 1 {
                @if found.len() >= LIST { p.hint { (lang.t("只列出前 ", "The first ")) (LIST) (lang.t(" 件。", " only.")) } }
                ul #found { @for n in found { li { a href={"/console/cases/" (n)} { (n) } } } }
            }
        },
    )
}

/// An identity number or credit code: 15 or 18 letters and digits, personal data as a term.
fn looks_like_id(q: &str) -> bool {
    matches!(q.len(), 15 | 18) && q.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Which field of the applicant an unmasking shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    IdNumber,
    Mobile,
    Address,
}

impl Field {
    const ALL: [Field; 4] = [Field::Name, Field::IdNumber, Field::Mobile, Field::Address];

    fn key(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::IdNumber => "id_number",
            Field::Mobile => "mobile",
            Field::Address => "address",
        }
    }

    fn label(self, lang: Lang) -> &'static str {
        match self {
            Field::Name => lang.t("申请人", "Applicant"),
            Field::IdNumber => lang.t("证件号码", "ID number"),
            Field::Mobile => lang.t("手机", "Mobile"),
            Field::Address => lang.t("地址", "Address"),
        }
    }

    fn value(self, case: &Case) -> String {
        let a = case.submission.as_ref().and_then(|s| s.applicant.as_ref());
        let contact = a.and_then(|a| a.contact.as_ref());
        match self {
            Field::Name => a.map(|a| a.name.clone()),
            Field::IdNumber => a.map(|a| a.id_number.clone()),
            Field::Mobile => contact.map(|c| c.mobile.clone()),
            Field::Address => contact.map(|c| c.address.clone()),
        }
        .unwrap_or_default()
    }

    fn masked(self, case: &Case) -> String {
        let v = self.value(case);
        match self {
            Field::Name => privacy::mask_name(&v),
            Field::IdNumber => privacy::mask_id(&v),
            Field::Mobile => privacy::mask_mobile(&v),
            Field::Address => privacy::mask_address(&v),
        }
    }
}

async fn load_case(
    c: &Console,
    caller: &Caller,
    number: &str,
    lang: Lang,
) -> Result<(Case, Vec<CaseEvent>), Response> {
    match c.gateway.store.get_case(number).await {
        Ok(Some((case, events))) => {
            let hall = case
                .submission
                .as_ref()
                .map(|s| s.hall_code.as_str())
                .unwrap_or_default();
            if let Some(own) = &caller.hall
                && own != hall
            {
                let refusal = Refusal::Denied(format!(
                    "{} acts for hall {own}; case {number} is of another hall",
                    caller.name
                ));
                c.gateway
                    .guard
                    .auditor
                    .refused(Some(caller), "Console/page", number, &refusal)
                    .await;
                return Err(problem_page(
                    StatusCode::FORBIDDEN,
                    lang,
                    Some(caller),
                    lang.t("无此权限", "Not permitted"),
                    refusal.reason(),
                ));
            }
            Ok((case, events))
        }
        Ok(None) => Err(problem_page(
            StatusCode::NOT_FOUND,
            lang,
            Some(caller),
            lang.t("没有这个办件", "No such case"),
            &format!(
                "no case {number}; search by case number, submission id, department case number or ID number"
            ),
        )),
        Err(e) => Err(problem_page(
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            Some(caller),
            lang.t("存储不可用", "Store unavailable"),
            &e.to_string(),
        )),
    }
}

/// The address of an unmasked view asked for again (a language link, a reload): the case.
pub async fn unmasked_again(Path(number): Path<String>) -> Response {
    redirect(&format!("/console/cases/{number}"))
}

pub async fn case_page(Ctx { c, caller, lang }: Ctx, Path(number): Path<String>) -> Response {
    match load_case(&c, &caller, &number, lang).await {
        Ok((case, events)) => ok(case_view(&c, &caller, lang, &case, &events, None)),
        Err(r) => r,
    }
}

pub async fn timeline(Ctx { c, caller, lang }: Ctx, Path(number): Path<String>) -> Response {
    match load_case(&c, &caller, &number, lang).await {
        Ok((case, events)) => fragment(timeline_table(&c, lang, &case, &events)),
        Err(r) => r,
    }
}

pub async fn unmask(
    Ctx { c, caller, lang }: Ctx,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let what = format!("{number} applicant");
    if let Err(r) = permitted(&c, &caller, Permission::Unmask, &what, lang).await {
        return r;
    }
    let asked = first(&pairs(&body), "field");
    let Some(field) = Field::ALL.into_iter().find(|f| f.key() == asked) else {
        return problem_page(
            StatusCode::BAD_REQUEST,
            lang,
            Some(&caller),
            lang.t("无法显示", "Cannot show"),
            &format!("field {asked:?} is not one of name, id_number, mobile, address"),
        );
    };
    let (case, events) = match load_case(&c, &caller, &number, lang).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Recorded before it is shown; not shown when it cannot be recorded.
    if let Err(e) = c
        .gateway
        .guard
        .auditor
        .read(
            &caller,
            "Console/unmask",
            format!("{number} {}", field.key()),
        )
        .await
    {
        return problem_page(
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            Some(&caller),
            lang.t("无法记录本次查看", "This view could not be recorded"),
            e.message(),
        );
    }
    ok(case_view(&c, &caller, lang, &case, &events, Some(field)))
}

/// A trace id linked to the tracing UI (`[console] trace_url`); `short`: shown by its first
/// eight characters (every entry of a case shares it).
fn trace_link(c: &Console, trace_id: &str, short: bool) -> Markup {
    let template = &c.gateway.console.trace_url;
    let shown = if short {
        format!("{}…", trace_id.get(..8).unwrap_or(trace_id))
    } else {
        trace_id.to_string()
    };
    html! {
        @if trace_id.is_empty() { "-" }
        @else if template.is_empty() { code.trace title=(trace_id) { (shown) } }
        @else {
            a.trace href=(template.replace("{trace_id}", &segment(trace_id))) title=(trace_id) target="_blank" rel="noopener noreferrer" {
                code { (shown) }
            }
        }
    }
}

fn case_view(
    c: &Console,
    caller: &Caller,
    lang: Lang,
    case: &Case,
    events: &[CaseEvent],
    shown: Option<Field>,
) -> Markup {
    let zone = zone(c);
    let submission = case.submission.clone().unwrap_or_default();
    let may_unmask = c
        .gateway
        .guard
        .policy
        .allows(caller, Permission::Unmask)
        .is_ok();
    let accepted = case
        .accepted_at
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32));
    let departments = &c.gateway.intake.catalog().departments;
    let every = 2000;
    view::page(
        lang,
        &case.case_number,
        Section::Cases,
        Some(caller),
        html! {
            h1 { (lang.t("办件 ", "Case ")) code #case-number { (case.case_number) } " "
                span.status #case-status { (view::case_status(lang, case.status)) } }
            dl.facts {
                dt { (lang.t("申请编号", "Submission")) } dd { (case.submission_id) }
                dt { (lang.t("受理窗口", "Window")) } dd { (submission.hall_code) " / " (submission.window_code) }
                dt { (lang.t("受理时间", "Accepted")) } dd { (accepted.map(|t| view::time(t, zone)).unwrap_or_default()) }
                dt { (lang.t("承诺办结", "Promised")) } dd { (case.promised_deadline) }
                dt { (lang.t("追踪", "Trace")) } dd { (trace_link(c, &case.trace_id, false)) }
                @for f in Field::ALL {
                    dt { (f.label(lang)) }
                    dd data-field=(f.key()) {
                        @if shown == Some(f) {
                            span.unmasked { (f.value(case)) }
                            " " small { (lang.t("(本次查看已记录)", "(this view is recorded)")) }
                        } @else {
                            span.masked { (f.masked(case)) }
                            @if may_unmask {
                                form.inline method="post" action={"/console/cases/" (case.case_number) "/unmask"} {
                                    input type="hidden" name="field" value=(f.key());
                                    button type="submit" { (lang.t("显示", "Show")) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { (lang.t("事项", "Tasks")) }
            table.tasks #tasks {
                (view::head(lang, &[("部门", "Department"), ("事项", "Item"), ("状态", "Status"), ("部门办件号", "Department case"), ("环节", "Step"), ("承诺时限", "Due")]))
                tbody {
                    @for t in &case.tasks {
                        tr data-task=(t.task_id) {
                            td { (departments.get(&t.department).map_or(t.department.as_str(), |d| d.name.as_str())) }
                            td { (t.item_name) br; small { (t.task_id) } }
                            td { (view::task_status(lang, t.status)) }
                            td { (t.department_case_number) }
                            td { (t.step) }
                            td { (t.promised_deadline) }
                        }
                    }
                }
            }
            h2 { (lang.t("时间线", "Timeline")) }
            div data-live={"/console/cases/" (case.case_number) "/timeline"} data-every=(every) {
                (timeline_table(c, lang, case, events))
            }
        },
    )
}

fn timeline_table(c: &Console, lang: Lang, case: &Case, events: &[CaseEvent]) -> Markup {
    let zone = zone(c);
    let departments = &c.gateway.intake.catalog().departments;
    let window = case
        .submission
        .as_ref()
        .map(|s| format!("{}/{}", s.hall_code, s.window_code))
        .unwrap_or_default();
    let tasks: BTreeMap<&str, &crate::proto::v1::Task> =
        case.tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
    let mut warned: BTreeMap<&str, bool> = BTreeMap::new();
    html! {
        table #timeline {
            (view::head(lang, &[("时间", "Time"), ("事件", "Event"), ("窗口", "Window"), ("部门", "Department"), ("说明/环节", "Step / detail"), ("时限", "Deadline"), ("追踪", "Trace")]))
            tbody {
                @for e in events {
                    @let task = tasks.get(e.task_id.as_str());
                    @let at = e.at.as_ref().and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32));
                    @let state = {
                        if e.kind == "task-sla-warning" { warned.insert(e.task_id.as_str(), true); }
                        let due = task.and_then(|t| chrono::NaiveDate::parse_from_str(&t.promised_deadline, "%Y-%m-%d").ok());
                        let day = at.map(|t| t.with_timezone(&zone).date_naive());
                        if e.kind == "task-overdue" || matches!((day, due), (Some(d), Some(due)) if d > due) { "red" }
                        else if warned.get(e.task_id.as_str()).copied().unwrap_or(false) { "yellow" }
                        else if task.is_some() { "ok" } else { "" }
                    };
                    tr.event data-kind=(e.kind) {
                        td { (at.map(|t| view::time(t, zone)).unwrap_or_default()) }
                        td { (view::event_kind(lang, &e.kind)) }
                        td { (window) }
                        td { @if let Some(t) = task { (departments.get(&t.department).map_or(t.department.as_str(), |d| d.name.as_str())) } }
                        td { (privacy::mask_free_text(&e.detail)) }
                        td { @if !state.is_empty() { span class=(state) { (match state {
                            "red" => lang.t("超期", "overdue"),
                            "yellow" => lang.t("预警", "warning"),
                            _ => lang.t("正常", "on time"),
                        }) } } }
                        td { (trace_link(c, &case.trace_id, true)) }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dead letters

fn dead_owner(c: &Console, department: &str) -> bool {
    department == "results"
        || c.gateway
            .intake
            .catalog()
            .departments
            .contains_key(department)
}

pub async fn dead_letters(Ctx { c, caller, lang }: Ctx, uri: Uri) -> Response {
    let q = pairs(uri.query().unwrap_or("").as_bytes());
    let department = first(&q, "department");
    let reason = first(&q, "reason");
    let snapshot = c.flows.snapshot(&c.gateway).await;
    let mut listed = None;
    if !department.is_empty() {
        if !dead_owner(&c, &department) {
            return problem_page(
                StatusCode::NOT_FOUND,
                lang,
                Some(&caller),
                lang.t("没有这个死信队列", "No such dead queue"),
                &format!(
                    "{department:?} is neither a department of the acceptance list nor `results`"
                ),
            );
        }
        listed = Some(if c.jobs.busy(&department) {
            Err("a replay or purge of this queue is running; its page shows its progress. The queue is listed when it ends".to_string())
        } else {
            crate::dlq::list(&c.gateway.bus, &department, 100, &reason)
                .await
                .map_err(|e| e.to_string())
        });
    }
    let may_write = c
        .gateway
        .guard
        .policy
        .allows(&caller, Permission::AdminWrite)
        .is_ok();
    ok(view::page(
        lang,
        lang.t("死信", "Dead letters"),
        Section::DeadLetters,
        Some(&caller),
        html! {
            h1 { (lang.t("死信队列", "Dead queues")) }
            table #dead-queues {
                (view::head(lang, &[("队列", "Queue"), ("消息数", "Messages")]))
                tbody {
                    @for d in &snapshot.departments {
                        tr class=[(d.code == department).then_some("here")] {
                            td { a href={"/console/dead-letters?department=" (d.code)} { (d.name) " (" (d.code) ")" } }
                            td.n { (opt(d.dead)) }
                        }
                    }
                    tr { td { a href="/console/dead-letters?department=results" { (lang.t("网关结果队列", "Gateway results")) " (results)" } } td.n { "" } }
                }
            }
            @match listed {
                None => {}
                Some(Err(e)) => p.bad #queue-busy { (e) },
                Some(Ok(letters)) => {
                    h2 { (lang.t("队列 ", "Queue ")) (department) }
                    @let reasons = by_reason(&letters);
                    table #reasons {
                        (view::head(lang, &[("原因", "Reason"), ("数量", "Count")]))
                        tbody { @for (r, n) in &reasons { tr {
                            td { a href={"/console/dead-letters?department=" (department) "&reason=" (form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>())} { (r) } }
                            td.n { (n) }
                        } } }
                    }
                    form #dead-form method="post" action={"/console/dead-letters/" (department) "/replay"} {
                        table #letters {
                            thead { tr {
                                th { input type="checkbox" #select-all title=(lang.t("全选", "Select all")); }
                                th { (lang.t("消息", "Message")) }
                                th { (lang.t("办件", "Case")) }
                                th { (lang.t("原因", "Reason")) }
                                th { (lang.t("尝试", "Attempts")) }
                                th { (lang.t("进入死信", "Dead since")) }
                                th { (lang.t("追踪", "Trace")) }
                            } }
                            tbody {
                                @for l in &letters {
                                    tr.dead data-id=(l.message_id) {
                                        td { input type="checkbox" name="id" value=(l.message_id); }
                                        td { a href={"/console/dead-letters/" (department) "/messages/" (segment(&l.message_id))} { code { (l.message_id) } } }
                                        td { @if !l.case_number.is_empty() { a href={"/console/cases/" (l.case_number)} { (l.case_number) } } }
                                        td { (l.reason) }
                                        td.n { (l.attempt.map_or("-".to_string(), |a| a.to_string())) }
                                        td { (l.dead_at) }
                                        td { (trace_link(&c, &l.trace_id, false)) }
                                    }
                                }
                                @if letters.is_empty() { tr { td colspan="7" #no-letters { (lang.t("队列为空", "The queue is empty")) } } }
                            }
                        }
                        @if may_write && !letters.is_empty() {
                            fieldset.actions {
                                label { (lang.t("每秒最多", "At most per second")) " "
                                    input type="number" name="rate" value=(DEFAULT_RATE) min="1" max=(MAX_RATE); }
                                button #replay-selected type="submit" { (lang.t("重放所选", "Replay selected")) }
                                button #replay-all type="submit" name="all" value="1" { (lang.t("全部重放", "Replay all")) }
                            }
                            fieldset.actions {
                                label { (lang.t("清除原因", "Reason to purge")) " "
                                    input type="text" name="note" maxlength=(NOTE_CHARS); }
                                button #purge-selected type="submit" formaction={"/console/dead-letters/" (department) "/purge"} { (lang.t("清除所选", "Purge selected")) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// How many of `letters` died for each reason.
fn by_reason(letters: &[crate::bus::dead::DeadLetter]) -> BTreeMap<&str, usize> {
    let mut reasons = BTreeMap::new();
    for l in letters {
        *reasons.entry(l.reason.as_str()).or_default() += 1;
    }
    reasons
}

pub async fn dead_letter(
    Ctx { c, caller, lang }: Ctx,
    Path((department, id)): Path<(String, String)>,
) -> Response {
    if !dead_owner(&c, &department) {
        return problem_page(
            StatusCode::NOT_FOUND,
            lang,
            Some(&caller),
            lang.t("没有这个死信队列", "No such dead queue"),
            &format!("{department:?} has no dead queue"),
        );
    }
    if c.jobs.busy(&department) {
        return problem_page(
            StatusCode::CONFLICT,
            lang,
            Some(&caller),
            lang.t("队列正在处理", "The queue is being worked on"),
            "a replay or purge of this queue is running; look again when it ends",
        );
    }
    let found = match crate::dlq::look(&c.gateway.bus, &department, &id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return problem_page(
                StatusCode::NOT_FOUND,
                lang,
                Some(&caller),
                lang.t("没有这条消息", "No such message"),
                &format!(
                    "no message {id:?} among the first 1000 of the dead queue of {department}"
                ),
            );
        }
        Err(e) => {
            return problem_page(
                StatusCode::SERVICE_UNAVAILABLE,
                lang,
                Some(&caller),
                lang.t("无法读取死信队列", "Cannot read the dead queue"),
                &e.to_string(),
            );
        }
    };
    let l = &found.letter;
    ok(view::page(
        lang,
        &l.message_id,
        Section::DeadLetters,
        Some(&caller),
        html! {
            h1 { (lang.t("死信 ", "Dead letter ")) code { (l.message_id) } }
            dl.facts {
                dt { (lang.t("队列", "Queue")) } dd { a href={"/console/dead-letters?department=" (department)} { (department) } }
                dt { (lang.t("办件", "Case")) } dd { @if !l.case_number.is_empty() { a href={"/console/cases/" (l.case_number)} { (l.case_number) } } }
                dt { (lang.t("事项", "Task")) } dd { (l.task_id) }
                dt { (lang.t("最后错误", "Last error")) } dd #reason { (l.reason) }
                dt { (lang.t("首次错误", "First error")) } dd { (found.deaths.first().cloned().unwrap_or_else(|| l.reason.clone())) }
                dt { (lang.t("尝试次数", "Attempts")) } dd { (l.attempt.map_or("-".to_string(), |a| a.to_string())) }
                dt { (lang.t("进入死信", "Dead since")) } dd { (l.dead_at) }
                dt { (lang.t("追踪", "Trace")) } dd { (trace_link(&c, &l.trace_id, false)) }
            }
            h2 { (lang.t("死亡记录", "Deaths")) }
            ul { @for d in &found.deaths { li { (d) } } }
            h2 { (lang.t("消息头", "Headers")) }
            table { tbody { @for (k, v) in &found.headers { tr { th { (k) } td { (v) } } } } }
            h2 { (lang.t("内容(已脱敏)", "Body (masked)")) }
            pre #body { (found.body) }
        },
    ))
}

/// A reason's length at most, in characters.
const NOTE_CHARS: usize = 200;
/// Messages a second when the form gives none, and at most.
const DEFAULT_RATE: u32 = 5;
const MAX_RATE: u32 = 100;

async fn start_job(
    Ctx { c, caller, lang }: Ctx,
    department: String,
    peer: Option<std::net::SocketAddr>,
    body: Bytes,
    action: Action,
) -> Response {
    let what = crate::bus::dead::queue(&c.gateway.bus, &department);
    if let Err(r) = permitted(&c, &caller, Permission::AdminWrite, &what, lang).await {
        return r;
    }
    let bad = |detail: String| {
        problem_page(
            StatusCode::BAD_REQUEST,
            lang,
            Some(&caller),
            lang.t("未执行", "Not done"),
            &detail,
        )
    };
    if !dead_owner(&c, &department) {
        return bad(format!("{department:?} has no dead queue"));
    }
    let form = pairs(&body);
    let ids: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .collect();
    let all = first(&form, "all") == "1";
    let note = first(&form, "note");
    if note.chars().count() > NOTE_CHARS {
        return bad(format!(
            "the reason is {} characters; say it in at most {NOTE_CHARS}",
            note.chars().count()
        ));
    }
    let rate = match first(&form, "rate").as_str() {
        "" => DEFAULT_RATE,
        r => match r.parse::<u32>() {
            Ok(r) if (1..=MAX_RATE).contains(&r) => r,
            _ => {
                return bad(format!(
                    "rate {r:?}: give messages a second, 1 to {MAX_RATE}"
                ));
            }
        },
    };
    if c.jobs.busy(&department) {
        return bad(format!(
            "a replay or purge of {department}'s dead queue is running; wait for it (its page shows its progress)"
        ));
    }
    let selection = match (all, ids.is_empty()) {
        (true, _) => Selection::All,
        (false, false) => Selection::Ids(ids),
        (false, true) => {
            return bad(
                "nothing selected: tick the messages to act on, or use the button for all".into(),
            );
        }
    };
    if action == Action::Purge && note.is_empty() {
        return bad("a purge needs its reason: say why these messages are discarded".into());
    }
    let origin = format!(
        "console@{}",
        peer.map_or("?".to_string(), |p| p.to_string())
    );
    let job = c.jobs.start(
        &c.gateway,
        &department,
        selection,
        action,
        rate,
        crate::dlq::Actor {
            operator: caller.name.clone(),
            origin,
            note,
        },
    );
    redirect(&format!("/console/jobs/{}", job.id))
}

pub async fn replay(ctx: Ctx, Path(department): Path<String>, peer: Peer, body: Bytes) -> Response {
    start_job(ctx, department, peer.0, body, Action::Replay).await
}

pub async fn purge(ctx: Ctx, Path(department): Path<String>, peer: Peer, body: Bytes) -> Response {
    start_job(ctx, department, peer.0, body, Action::Purge).await
}

fn job_view(lang: Lang, job: &super::jobs::Job, zone: chrono::FixedOffset) -> Markup {
    let outcome = job.outcome();
    let state = match &outcome {
        None => "running",
        Some(Ok(_)) => "done",
        Some(Err(_)) => "failed",
    };
    html! {
        div #job data-state=(state) data-moved=(job.moved()) {
            p {
                (match job.action { Action::Replay => lang.t("重放", "Replay"), Action::Purge => lang.t("清除", "Purge") })
                " · " (job.department) " · " (job.operator) " · " (view::time(job.started, zone))
                @if job.rate > 0 { " · " (job.rate) (lang.t(" 条/秒", " a second")) }
            }
            p.progress {
                (lang.t("已处理 ", "Moved ")) strong #moved { (job.moved()) }
                @if job.named > 0 { " / " (job.named) }
                (lang.t(" 条;已查看 ", "; looked at ")) (job.looked()) " / " (job.queued())
            }
            @match outcome {
                None => p { (lang.t("进行中…", "Running…")) },
                Some(Ok(n)) => p.ok { (lang.t("完成,共 ", "Done: ")) (n) (lang.t(" 条,已记入操作审计。", " message(s), recorded in the audit of operators' actions.")) },
                Some(Err(e)) => p.bad { (e) },
            }
        }
    }
}

pub async fn job_page(Ctx { c, caller, lang }: Ctx, Path(id): Path<String>) -> Response {
    let Some(job) = c.jobs.get(&id) else {
        return problem_page(
            StatusCode::NOT_FOUND,
            lang,
            Some(&caller),
            lang.t("没有这个任务", "No such job"),
            "jobs are kept in memory for the latest 64; the audit of operators' actions keeps them all",
        );
    };
    ok(view::page(
        lang,
        lang.t("死信操作", "Dead-letter job"),
        Section::DeadLetters,
        Some(&caller),
        html! {
            h1 { (lang.t("死信操作进度", "Dead-letter job")) }
            div data-live={"/console/jobs/" (job.id) "/progress"} data-every="1000" { (job_view(lang, &job, zone(&c))) }
            p { a href={"/console/dead-letters?department=" (job.department)} { (lang.t("返回队列", "Back to the queue")) } }
        },
    ))
}

pub async fn job_progress(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let lang = lang(&headers, &uri);
    match c.jobs.get(&id) {
        Some(job) => fragment(job_view(lang, &job, zone(&c))),
        None => html_page(StatusCode::NOT_FOUND, html! { p { "no such job" } }),
    }
}

// ---------------------------------------------------------------------------------------------
// Deadlines

/// Tasks the deadlines board's lists are drawn from at most (the earliest deadlines first; the
/// counts are of every task).
const BOARD: usize = 5000;
/// Rows a list shows at most: the page stays light on a hall office PC (docs/console.md).
const LIST: usize = 50;

fn listed(lang: Lang, shown: usize, of: usize) -> Markup {
    html! {
        @if shown < of {
            p.hint { (lang.t("显示最早的 ", "The earliest ")) (shown) (lang.t(" 项,共 ", " of ")) (of) }
        }
    }
}

pub async fn deadlines(Ctx { c, caller, lang }: Ctx) -> Response {
    let now_ms = c.gateway.clocks.now().timestamp_millis();
    let store = &c.gateway.store;
    let (board, counts) = match tokio::try_join!(
        store.deadline_board(now_ms, BOARD as i64),
        store.deadline_counts(now_ms)
    ) {
        Ok(both) => both,
        Err(e) => {
            return problem_page(
                StatusCode::SERVICE_UNAVAILABLE,
                lang,
                Some(&caller),
                lang.t("存储不可用", "Store unavailable"),
                &e.to_string(),
            );
        }
    };
    let red: Vec<TaskLine> = board
        .iter()
        .filter(|t| t.due_ms.is_some_and(|d| d < now_ms))
        .cloned()
        .collect();
    let yellow: Vec<TaskLine> = board
        .iter()
        .filter(|t| t.warned && t.due_ms.is_none_or(|d| d >= now_ms))
        .cloned()
        .collect();
    let provisional: Vec<TaskLine> = board.iter().filter(|t| t.provisional).cloned().collect();
    // The counts are exact; the lists show the earliest of the board's first BOARD.
    let counts: Vec<_> = counts
        .into_iter()
        .filter(|n| n.red + n.yellow + n.provisional > 0)
        .collect();
    let total = |f: fn(&crate::store::board::DeadlineCounts) -> i64| -> usize {
        counts.iter().map(f).sum::<i64>() as usize
    };
    let (red_total, yellow_total, provisional_total) = (
        total(|n| n.red),
        total(|n| n.yellow),
        total(|n| n.provisional),
    );
    let zone = zone(&c);
    let shown = |v: &[TaskLine]| v.len().min(LIST);
    ok(view::page(
        lang,
        lang.t("时限", "Deadlines"),
        Section::Deadlines,
        Some(&caller),
        html! {
            h1 { (lang.t("时限预警", "Deadlines")) }
            table #deadline-summary {
                (view::head(lang, &[("部门", "Department"), ("窗口", "Window"), ("黄", "Yellow"), ("红", "Red"), ("暂定", "Provisional")]))
                tbody {
                    @for n in &counts {
                        tr { td { a href={"/console/departments/" (n.department)} { (n.department) } }
                             td { (n.hall_code) "/" (n.window_code) }
                             td.n.yellow { (n.yellow) } td.n.red { (n.red) } td.n { (n.provisional) } }
                    }
                    @if counts.is_empty() { tr { td colspan="5" { (lang.t("今日无预警", "Nothing yellow or red")) } } }
                }
            }
            h2 { span.red { (lang.t("红:已超期", "Red: overdue")) } " (" (red_total) ")" }
            (listed(lang, shown(&red), red_total))
            (task_table(lang, &red[..shown(&red)], now_ms, zone))
            h2 { span.yellow { (lang.t("黄:临近时限", "Yellow: close to the deadline")) } " (" (yellow_total) ")" }
            (listed(lang, shown(&yellow), yellow_total))
            (task_table(lang, &yellow[..shown(&yellow)], now_ms, zone))
            h2 { (lang.t("暂定时限(缺下一年日历)", "Provisional deadlines (next year's calendar missing)")) " (" (provisional_total) ")" }
            (listed(lang, shown(&provisional), provisional_total))
            (task_table(lang, &provisional[..shown(&provisional)], now_ms, zone))
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

fn login_view(lang: Lang, next: &str, error: Option<&str>) -> Markup {
    view::page(
        lang,
        lang.t("登录", "Sign in"),
        Section::None,
        None,
        html! {
            h1 { (lang.t("登录运维台", "Sign in to the console")) }
            p.hint { (lang.t(
                "使用客户端证书的浏览器无需登录。否则请粘贴身份服务签发的令牌(需 operator 角色)。",
                "A browser with a client certificate needs no sign-in. Otherwise paste a token from the identity provider (role operator)."
            )) }
            @if let Some(e) = error { p.bad #login-error { (e) } }
            form #login method="post" action="/console/login" {
                input type="hidden" name="next" value=(next);
                textarea name="token" rows="6" cols="60" required autocomplete="off" {}
                br;
                button type="submit" { (lang.t("登录", "Sign in")) }
            }
        },
    )
}

/// Where to go after signing in: a console path, never another site.
fn next_of(asked: &str) -> String {
    if asked.starts_with("/console")
        && !asked.contains("://")
        && !asked.chars().any(char::is_control)
    {
        asked.to_string()
    } else {
        "/console".to_string()
    }
}

pub async fn login_page(headers: HeaderMap, uri: Uri) -> Response {
    let lang = lang(&headers, &uri);
    let next = next_of(&first(&pairs(uri.query().unwrap_or("").as_bytes()), "next"));
    ok(login_view(lang, &next, None))
}

pub async fn login(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let lang = lang(&headers, &uri);
    let form = pairs(&body);
    let next = next_of(&first(&form, "next"));
    let token = first(&form, "token");
    let guard = &c.gateway.guard;
    let checked = guard
        .authenticator
        .from_token(&token)
        .map_err(|e| Refusal::Unauthenticated(e.to_string()))
        .and_then(|caller| {
            guard
                .policy
                .allows(&caller, Permission::AdminRead)
                .map(|()| caller)
        });
    match checked {
        Ok(_) => {
            let mut r = redirect(&next);
            if let Some(v) = super::token_cookie(&c.gateway, &token) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(refusal) => {
            let caller = guard.authenticator.from_token(&token).ok();
            guard
                .auditor
                .refused(caller.as_ref(), "Console/login", "console", &refusal)
                .await;
            html_page(
                StatusCode::UNAUTHORIZED,
                login_view(lang, &next, Some(refusal.reason())),
            )
        }
    }
}

pub async fn logout(State(c): State<Console>) -> Response {
    let mut r = redirect("/console/login");
    r.headers_mut()
        .append(header::SET_COOKIE, super::clear_token_cookie(&c.gateway));
    r
}
