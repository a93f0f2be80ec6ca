//! The plan of an acceptable submission: when the case is accepted (the window's submission
//! time, unless it is unreadable or ahead of the gateway's clock), one task per item in bundle
//! order, each with its promised and legal deadline counted in working days from the end of its
//! prerequisites' deadlines, the case's deadline, and what a rejected task does to the case. A
//! deadline counted over a year whose calendar is not loaded yet is provisional, and so is any
//! deadline counted from it.
//!
//! Owns: [`Plan`] and [`PlannedTask`], and counting their deadlines on the one calendar an
//! evaluation uses. It never validates beyond the submission time, never loads or changes the
//! calendar (that is [`crate::calendar`] and [`crate::calendar`]), and never stores a plan or watches
//! its deadlines (the store records it; the clock sweeps it).

use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

use super::normalise::Change;
use super::{Intake, Validator};
use crate::calendar::{Calendar, CalendarError, Reckoned};
use crate::catalog::Item;
use crate::proto::v1::{AcceptanceMode, DeficiencyCode as Code, Obligation, Submission};

/// A complete submission, planned into tasks.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The submission after normalisation.
    pub submission: Submission,
    /// Every change normalisation made.
    pub changes: Vec<Change>,
    /// When the case is accepted, in the hall's time zone.
    pub accepted_at: DateTime<FixedOffset>,
    /// One task per item, in bundle order.
    pub tasks: Vec<PlannedTask>,
    /// Materials owed under 容缺.
    pub obligations: Vec<Obligation>,
    /// The latest promised deadline of the tasks.
    pub promised_deadline: NaiveDate,
    /// Years without a loaded calendar that `promised_deadline` was counted on (Monday–Friday):
    /// provisional while not empty.
    pub promised_deadline_assumes: BTreeSet<i32>,
    /// Years without a loaded calendar that any date of the plan was counted on.
    pub assumed_years: BTreeSet<i32>,
    /// Of those, the years the obligations' due dates were counted on.
    pub obligation_assumes: BTreeSet<i32>,
    /// Implementation code of the lead (first) item: the case number's prefix.
    pub lead_implementation_code: String,
    /// What a rejected task does to the case: its bundle's policy; independent items deliver
    /// what was approved.
    pub rejection_policy: crate::proto::v1::RejectionPolicy,
}

/// A task intake planned for one item.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub item_code: String,
    pub item_name: String,
    pub department: String,
    pub department_name: String,
    pub implementation_code: String,
    /// Indexes into [`Plan::tasks`] of the tasks that must be approved first.
    pub depends_on: Vec<usize>,
    /// Materials received from prerequisite tasks instead of from the applicant.
    pub inherited_materials: Vec<String>,
    pub mode: AcceptanceMode,
    pub promised_working_days: u32,
    pub legal_working_days: u32,
    pub promised_deadline: NaiveDate,
    pub legal_deadline: NaiveDate,
    /// Years without a loaded calendar that the promised and the legal deadline were counted on
    /// (Monday–Friday), their prerequisites' included: provisional while not empty.
    pub promised_assumes: BTreeSet<i32>,
    pub legal_assumes: BTreeSet<i32>,
}

impl PlannedTask {
    /// Every year without a loaded calendar its deadlines rest on.
    pub fn assumed_years(&self) -> BTreeSet<i32> {
        self.promised_assumes
            .union(&self.legal_assumes)
            .copied()
            .collect()
    }
}

/// What validation settled about a submission without deficiencies, per item in bundle order:
/// what planning needs besides the submission itself.
pub(super) struct Settled<'c> {
    pub(super) items: Vec<&'c Item>,
    /// Indexes into `items` of the items each waits for.
    pub(super) depends: Vec<Vec<usize>>,
    /// The mode each is handled in.
    pub(super) modes: Vec<AcceptanceMode>,
    /// The materials each receives from prerequisite items instead of from the applicant.
    pub(super) inherited: Vec<Vec<String>>,
    /// Materials owed under 容缺.
    pub(super) obligations: Vec<Obligation>,
    /// Years without a loaded calendar the obligations' due dates were counted on.
    pub(super) obligation_years: BTreeSet<i32>,
}

impl Intake {
    /// When the case is accepted, in the hall's time zone: the window's submission time, or now
    /// when it sent none or one that cannot be used (reported when it is unreadable or ahead of
    /// the gateway's clock by more than the allowed skew).
    pub(super) fn accepted_at(
        &self,
        s: &Submission,
        now: DateTime<Utc>,
        v: &mut Validator,
    ) -> DateTime<FixedOffset> {
        let now_local = now.with_timezone(&self.offset);
        let Some(ts) = &s.submitted_at else {
            return now_local;
        };
        let Some(at) = DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32) else {
            v.push(
                Code::SubmittedAt,
                "submittedAt",
                "受理时间无法识别。".into(),
                |_| {},
            );
            return now_local;
        };
        if (at - now).num_seconds() > self.config.max_clock_skew_secs {
            v.push(
                Code::SubmittedAt,
                "submittedAt",
                format!(
                    "受理时间 {} 晚于当前时间，请校准窗口终端时钟后重新提交。",
                    at.with_timezone(&self.offset).format("%Y-%m-%d %H:%M:%S")
                ),
                |_| {},
            );
            return now_local;
        }
        at.with_timezone(&self.offset)
    }

    /// Plans a submission without deficiencies: its tasks and their deadlines, the case's
    /// deadline, and what a rejection does. `calendar` is the one the whole evaluation uses.
    pub(super) fn plan(
        &self,
        s: Submission,
        changes: Vec<Change>,
        accepted_at: DateTime<FixedOffset>,
        calendar: &Calendar,
        settled: Settled<'_>,
    ) -> Result<Plan, CalendarError> {
        let catalog = &self.catalog;
        let start = accepted_at.date_naive();
        let tasks = self.tasks(calendar, start, &settled)?;
        let promised_deadline = tasks
            .iter()
            .map(|t| t.promised_deadline)
            .max()
            .unwrap_or(start);
        // The case's date is provisional when the task that sets it is (a later-year date needs
        // that year; a date inside a loaded year may still rest on a provisional prerequisite).
        let promised_deadline_assumes: BTreeSet<i32> = tasks
            .iter()
            .filter(|t| t.promised_deadline == promised_deadline)
            .flat_map(|t| t.promised_assumes.iter().copied())
            .collect();
        let mut assumed_years = settled.obligation_years.clone();
        for t in &tasks {
            assumed_years.extend(t.assumed_years());
        }
        let lead_implementation_code = tasks[0].implementation_code.clone();
        let rejection_policy = match catalog.bundles.get(&s.bundle_code).map(|b| b.on_rejection) {
            Some(crate::catalog::OnRejection::Close) => crate::proto::v1::RejectionPolicy::Close,
            Some(crate::catalog::OnRejection::DeliverApproved) | None => {
                crate::proto::v1::RejectionPolicy::DeliverApproved
            }
        };
        Ok(Plan {
            submission: s,
            changes,
            accepted_at,
            tasks,
            obligations: settled.obligations,
            promised_deadline,
            promised_deadline_assumes,
            assumed_years,
            obligation_assumes: settled.obligation_years,
            lead_implementation_code,
            rejection_policy,
        })
    }

    /// One task per item, in bundle order, with its deadlines on `calendar` from `start`.
    fn tasks(
        &self,
        calendar: &Calendar,
        start: NaiveDate,
        settled: &Settled<'_>,
    ) -> Result<Vec<PlannedTask>, CalendarError> {
        let catalog = &self.catalog;
        // Deadlines: an item's clock starts when its prerequisites' promised deadlines end.
        let mut tasks: Vec<PlannedTask> = Vec::with_capacity(settled.items.len());
        for (i, it) in settled.items.iter().enumerate() {
            let after = |f: fn(&PlannedTask) -> NaiveDate| {
                settled.depends[i]
                    .iter()
                    .map(|&p| f(&tasks[p]))
                    .max()
                    .unwrap_or(start)
            };
            let promised: Reckoned<NaiveDate> = calendar.reckon(|c| {
                c.add_working_days(after(|t| t.promised_deadline), it.promised_working_days)
            })?;
            let legal = calendar.reckon(|c| {
                c.add_working_days(after(|t| t.legal_deadline), it.legal_working_days)
            })?;
            // A deadline counted from provisional prerequisites is provisional too.
            let inherit = |f: fn(&PlannedTask) -> &BTreeSet<i32>, own: BTreeSet<i32>| {
                let mut years = own;
                for &p in &settled.depends[i] {
                    years.extend(f(&tasks[p]).iter().copied());
                }
                years
            };
            let promised_assumes = inherit(|t| &t.promised_assumes, promised.assumed);
            let legal_assumes = inherit(|t| &t.legal_assumes, legal.assumed);
            let dept = &catalog.departments[it.department.get_ref()];
            tasks.push(PlannedTask {
                item_code: it.code.get_ref().clone(),
                item_name: it.name.clone(),
                department: it.department.get_ref().clone(),
                department_name: dept.name.clone(),
                implementation_code: catalog.implementation_code(it),
                depends_on: settled.depends[i].clone(),
                inherited_materials: settled.inherited[i].clone(),
                mode: settled.modes[i],
                promised_working_days: it.promised_working_days,
                legal_working_days: it.legal_working_days,
                promised_deadline: promised.value,
                legal_deadline: legal.value,
                promised_assumes,
                legal_assumes,
            });
        }
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use crate::intake::fixtures::{deficiencies, example, now};
    use crate::proto::v1::DeficiencyCode as Code;

    #[test]
    fn a_submission_time_in_the_future_is_a_deficiency() {
        let mut s = example("kai-canguan");
        s.submitted_at.as_mut().unwrap().seconds = now().timestamp() + 3600;
        assert_eq!(
            deficiencies(s),
            [(Code::SubmittedAt, "submittedAt".to_string(), String::new())]
        );
    }
}
