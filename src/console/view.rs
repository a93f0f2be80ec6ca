//! The console's HTML: the page frame (navigation, language, the signed-in operator), and the
//! small pieces every page uses (labels in Chinese or English, times in the hall's zone,
//! statuses, sparklines as inline SVG). Pure functions from data to markup; maud escapes every
//! value, so nothing a case or a department says can become markup.

use chrono::{DateTime, FixedOffset, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::auth::Caller;
use crate::proto::v1::{CaseStatus, TaskStatus};

/// The page's language: Chinese first, English on request (`?lang=en`, kept in a cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// The label in this language.
    pub fn t(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// Which part of the console a page belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Flows,
    Cases,
    DeadLetters,
    Deadlines,
    None,
}

/// A whole page: head with the console's stylesheet and script, the navigation, `body`.
pub fn page(
    lang: Lang,
    title: &str,
    section: Section,
    caller: Option<&Caller>,
    body: Markup,
) -> Markup {
    let nav = [
        (Section::Flows, "/console", lang.t("流转", "Flows")),
        (Section::Cases, "/console/cases", lang.t("办件", "Cases")),
        (
            Section::DeadLetters,
            "/console/dead-letters",
            lang.t("死信", "Dead letters"),
        ),
        (
            Section::Deadlines,
            "/console/deadlines",
            lang.t("时限", "Deadlines"),
        ),
    ];
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (lang.t("一窗运维台", "yichuang console")) }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { (lang.t("一窗运维台", "yichuang console")) }
                    nav {
                        @for (s, href, label) in nav {
                            a href=(href) class=[(s == section).then_some("here")] { (label) }
                        }
                    }
                    span.who {
                        @if let Some(c) = caller {
                            span #operator { (c.name) " · " (c.role) }
                            " "
                        }
                        @match lang {
                            Lang::Zh => a href="?lang=en" { "English" },
                            Lang::En => a href="?lang=zh" { "中文" },
                        }
                        @if caller.is_some() {
                            form.inline method="post" action="/console/logout" {
                                button type="submit" { (lang.t("退出", "Sign out")) }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A table's head row: one column a label pair (Chinese, English).
pub fn head(lang: Lang, labels: &[(&'static str, &'static str)]) -> Markup {
    html! {
        thead { tr { @for (zh, en) in labels { th { (lang.t(zh, en)) } } } }
    }
}

/// A time in the hall's zone, `MM-DD HH:MM:SS`.
pub fn time(at: DateTime<Utc>, zone: FixedOffset) -> String {
    at.with_timezone(&zone).format("%m-%d %H:%M:%S").to_string()
}

/// A time in milliseconds since the epoch, in the hall's zone; `-` for none.
pub fn time_ms(ms: Option<i64>, zone: FixedOffset) -> String {
    ms.and_then(DateTime::from_timestamp_millis)
        .map_or_else(|| "-".to_string(), |t| time(t, zone))
}

/// A task's status in words.
pub fn task_status(lang: Lang, status: i32) -> &'static str {
    use TaskStatus::*;
    match TaskStatus::try_from(status).unwrap_or(Unspecified) {
        Waiting => lang.t("等待前置", "waiting"),
        Ready => lang.t("待派发", "ready"),
        Dispatched => lang.t("已派发", "dispatched"),
        AcceptedByDepartment => lang.t("部门已受理", "accepted by department"),
        InReview => lang.t("审查中", "in review"),
        SupplementRequired => lang.t("需补正", "supplement required"),
        Approved => lang.t("准予", "approved"),
        Rejected => lang.t("不予", "rejected"),
        Refused => lang.t("部门系统拒收", "refused by the system"),
        Unspecified => "-",
    }
}

/// A case's status in words.
pub fn case_status(lang: Lang, status: i32) -> &'static str {
    use CaseStatus::*;
    match CaseStatus::try_from(status).unwrap_or(Unspecified) {
        Accepted => lang.t("已受理", "accepted"),
        InProgress => lang.t("办理中", "in progress"),
        AwaitingSupplement => lang.t("待补正", "awaiting supplement"),
        ReadyForDelivery => lang.t("待出件", "ready for delivery"),
        Delivered => lang.t("已出件", "delivered"),
        ClosedRejected => lang.t("已办结(不予)", "closed, rejected"),
        Unspecified => "-",
    }
}

/// A history entry's kind in words (the wire name when it has none).
pub fn event_kind(lang: Lang, kind: &str) -> String {
    let words = match kind {
        "accepted" => lang.t("窗口受理", "accepted at the window"),
        "deadline-provisional" => lang.t("时限暂按周一至周五计", "deadline provisional"),
        "normalised" => lang.t("信息规范化", "normalised"),
        "task-ready" => lang.t("待派发", "task ready"),
        "task-waiting" => lang.t("等待前置事项", "task waiting"),
        "obligation-recorded" => lang.t("容缺承诺", "material owed"),
        "task-dispatched" => lang.t("派发至部门", "dispatched"),
        "task-accepted-by-department" => lang.t("部门受理", "accepted by department"),
        "task-progress" => lang.t("部门办理环节", "department step"),
        "task-approved" => lang.t("准予", "approved"),
        "task-rejected" => lang.t("不予", "rejected"),
        "task-supplement-required" => lang.t("要求补正", "supplement required"),
        "task-refused" => lang.t("部门系统拒收", "refused by the system"),
        "task-released" => lang.t("前置完成,放行", "released"),
        "task-sla-warning" => lang.t("时限预警(黄)", "deadline warning (yellow)"),
        "task-overdue" => lang.t("已超期(红)", "overdue (red)"),
        "evaluated" => lang.t("好差评", "evaluated"),
        "rectification-opened" => lang.t("差评整改", "rectification opened"),
        "rectification-warning" => lang.t("整改预警(黄)", "rectification warning (yellow)"),
        "rectification-overdue" => lang.t("整改超期(红)", "rectification overdue (red)"),
        "rectification-closed" => lang.t("整改办结", "rectification closed"),
        "supervision-opened" => lang.t("热线投诉督办", "hotline complaint supervised"),
        "supervision-warning" => lang.t("督办预警(黄)", "supervision warning (yellow)"),
        "supervision-overdue" => lang.t("督办超期(红)", "supervision overdue (red)"),
        "supervision-replied" => lang.t("督办答复", "complaint replied"),
        _ => return kind.to_string(),
    };
    words.to_string()
}

/// Per-minute counts as a small line chart (inline SVG: no script, no image request).
pub fn sparkline(values: &[i64], class: &str) -> Markup {
    let (w, h) = (120.0_f64, 24.0_f64);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        w
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 1.0 - (*v as f64 / max) * (h - 2.0)
            )
        })
        .collect();
    html! {
        svg.spark class=(class) width="120" height="24" viewBox="0 0 120 24" role="img" {
            polyline points=(points.join(" ")) fill="none" stroke-width="1.5" {}
        }
    }
}

/// An error or refusal page's body.
pub fn problem(lang: Lang, heading: &str, detail: &str) -> Markup {
    html! {
        section.problem {
            h1 { (heading) }
            p { (detail) }
            p { a href="/console" { (lang.t("返回运维台", "Back to the console")) } }
        }
    }
}
