//! Intake: a window's submission in, a plan for a case or a one-time deficiency notice out.
//! Normalises (see [`normalise`]), then validates against the acceptance list and reports
//! **every** deficiency at once (一次性告知), then plans the tasks, their order and deadlines.
//! Intake is pure: it never stores or sends anything, so `PreCheck` and `Submit` share it.

mod envelope;
mod fields;
pub mod ids;
mod items;
mod labels;
mod materials;
pub mod normalise;
mod parties;
mod supplement;

#[cfg(test)]
mod fixtures;

pub use envelope::EnvelopeError;
pub use supplement::SupplementAnswer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::calendar::LiveCalendar;
use crate::catalog::{Catalog, FieldKind, Item};
use crate::config::IntakeConfig;
use crate::proto::v1::{
    AcceptanceMode, Deficiency, DeficiencyCode as Code, Obligation, Submission,
};
use crate::sla::{CalendarError, Reckoned};
use normalise::Change;

/// Why intake could not evaluate a submission at all (a gateway-side problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
}

/// What intake decided.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Complete: the case can be accepted as planned.
    Acceptable(Box<Plan>),
    /// Not acceptable: every deficiency found.
    Deficient {
        submission_id: String,
        changes: Vec<Change>,
        deficiencies: Vec<Deficiency>,
    },
}

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

/// The intake engine: the acceptance list, the calendar and the limits.
#[derive(Debug, Clone)]
pub struct Intake {
    catalog: Arc<Catalog>,
    calendar: LiveCalendar,
    config: IntakeConfig,
    offset: FixedOffset,
    /// How each item-specific field is typed, for normalisation (the catalog keeps kinds consistent).
    field_kinds: BTreeMap<String, FieldKind>,
}

/// SHA-256 of the submission as received: the idempotency record's content fingerprint.
pub fn content_hash(submission: &Submission) -> [u8; 32] {
    Sha256::digest(submission.encode_to_vec()).into()
}

impl Intake {
    pub fn new(
        catalog: Arc<Catalog>,
        calendar: impl Into<LiveCalendar>,
        config: IntakeConfig,
    ) -> Result<Self, String> {
        let calendar = calendar.into();
        let offset = config.offset()?;
        let mut field_kinds = BTreeMap::new();
        for item in catalog.items.values() {
            for rule in &item.fields {
                field_kinds
                    .entry(rule.name.get_ref().clone())
                    .or_insert(rule.kind);
            }
        }
        Ok(Self {
            catalog,
            calendar,
            config,
            offset,
            field_kinds,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The acceptance list, shared.
    pub fn shared_catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// The hall's UTC offset.
    pub fn offset(&self) -> FixedOffset {
        self.offset
    }

    /// Checks what the window system itself must get right: ids, codes, list lengths, string sizes.
    pub fn check_envelope(&self, s: &Submission) -> Result<(), EnvelopeError> {
        envelope::check(s, &self.config)
    }

    /// Normalises, validates and plans a submission. `now` is the gateway's clock.
    pub fn evaluate(&self, mut s: Submission, now: DateTime<Utc>) -> Result<Outcome, IntakeError> {
        let catalog = &self.catalog;
        let changes = normalise::normalise(&mut s, |name| self.field_kinds.get(name).copied());
        let mut v = Validator { d: Vec::new() };

        let accepted_at = self.accepted_at(&s, now, &mut v);
        let items = self.resolve_items(&s, &mut v);
        let applicant_kind = parties::check_applicant(&s, &mut v);
        parties::check_parties(&s, &mut v);
        parties::check_delivery(&s, &mut v);

        let depends = self.dependencies(&s, &items);

        if let Some(kind) = applicant_kind {
            parties::check_applicant_kind(kind, &items, &depends, &mut v);
        }
        parties::required_parties(&s, &items, &mut v);

        let modes = self.item_modes(&s, &items, &mut v);
        // One calendar for the whole evaluation, even if an operator reloads it meanwhile.
        let calendar = self.calendar.current();
        let obligations_due = |it: &Item| {
            calendar
                .reckon(|c| c.add_working_days(accepted_at.date_naive(), it.tolerance_working_days))
        };
        let mut obligations = Vec::new();
        let mut obligation_years = BTreeSet::new();
        let inherited = self.check_materials(
            &s,
            &items,
            &depends,
            &modes,
            &mut v,
            &mut |it, code, name| {
                let due = obligations_due(it)?;
                obligations.push(Obligation {
                    item_code: it.code.get_ref().clone(),
                    material_code: code.to_string(),
                    material_name: name.to_string(),
                    due_date: due.value.to_string(),
                    fulfilled: false,
                    fulfilled_by: String::new(),
                    due_date_provisional: due.provisional(),
                });
                obligation_years.extend(due.assumed);
                Ok(())
            },
        )?;
        self.check_fields(&s, &items, &mut v);

        if !v.d.is_empty() {
            return Ok(Outcome::Deficient {
                submission_id: s.submission_id.clone(),
                changes,
                deficiencies: v.d,
            });
        }

        // Deadlines: an item's clock starts when its prerequisites' promised deadlines end.
        let start = accepted_at.date_naive();
        let mut tasks: Vec<PlannedTask> = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let after = |f: fn(&PlannedTask) -> NaiveDate| {
                depends[i]
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
                for &p in &depends[i] {
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
                depends_on: depends[i].clone(),
                inherited_materials: inherited[i].clone(),
                mode: modes[i],
                promised_working_days: it.promised_working_days,
                legal_working_days: it.legal_working_days,
                promised_deadline: promised.value,
                legal_deadline: legal.value,
                promised_assumes,
                legal_assumes,
            });
        }
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
        let mut assumed_years = obligation_years.clone();
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
        Ok(Outcome::Acceptable(Box::new(Plan {
            submission: s,
            changes,
            accepted_at,
            tasks,
            obligations,
            promised_deadline,
            promised_deadline_assumes,
            assumed_years,
            obligation_assumes: obligation_years,
            lead_implementation_code,
            rejection_policy,
        })))
    }

    fn accepted_at(
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
}

/// Collects deficiencies.
struct Validator {
    d: Vec<Deficiency>,
}

impl Validator {
    fn push(
        &mut self,
        code: Code,
        path: &str,
        message: String,
        extra: impl FnOnce(&mut Deficiency),
    ) {
        let mut d = Deficiency {
            code: code as i32,
            path: path.to_string(),
            message,
            ..Default::default()
        };
        extra(&mut d);
        self.d.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{deficiencies, example, now};
    use super::*;

    #[test]
    fn examples_evaluate_as_documented() {
        assert!(deficiencies(example("kai-canguan")).is_empty());
        assert!(deficiencies(example("qiye-kaiban")).is_empty());
        assert_eq!(deficiencies(example("bdc-deficient")).len(), 3);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut s = example("kai-canguan");
        s.applicant
            .as_mut()
            .unwrap()
            .contact
            .as_mut()
            .unwrap()
            .mobile = "1390951".into();
        s.fields.insert("seats".into(), "八十".into());
        s.fields.insert("colour".into(), "red".into());
        s.materials.retain(|m| m.material_code != "ZD-XFAQ");
        s.delivery.as_mut().unwrap().address.clear();
        let found = deficiencies(s);
        let codes: Vec<Code> = found.iter().map(|d| d.0).collect();
        for code in [
            Code::Mobile,
            Code::FieldInvalid,
            Code::FieldUnknown,
            Code::MaterialMissing,
            Code::Delivery,
        ] {
            assert!(codes.contains(&code), "{code:?} missing from {found:?}");
        }
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn applicant_kind_and_mode_are_checked_per_item() {
        let mut s = example("kai-canguan");
        s.mode = AcceptanceMode::Commitment as i32;
        assert_eq!(
            deficiencies(s),
            [(
                Code::ModeNotAllowed,
                "mode".to_string(),
                "SP-JY".to_string()
            )]
        );

        let mut s = example("bdc-deficient");
        s.items = vec![crate::proto::v1::ItemRequest {
            item_code: "GZ-KZ".into(),
        }];
        let found = deficiencies(s);
        assert!(
            found.contains(&(
                Code::ApplicantKind,
                "applicant.kind".to_string(),
                "GZ-KZ".to_string()
            )),
            "a person cannot apply for GZ-KZ outside 企业开办: {found:?}"
        );
    }

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
