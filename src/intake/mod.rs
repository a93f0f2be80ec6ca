//! Intake: a window's submission in, a plan for a case or a one-time deficiency notice out.
//! Normalises (see [`normalise`]), then validates against the acceptance list and reports
//! **every** deficiency at once (一次性告知), then plans the tasks, their order and deadlines.
//! Intake is pure: it never stores or sends anything, so `PreCheck` and `Submit` share it.
//!
//! This module owns the orchestration: the [`Intake`] engine and its entry points
//! ([`Intake::check_envelope`], [`Intake::evaluate`], [`Intake::supplement`]), the order the
//! checks run in, and the one calendar an evaluation counts on. Each concern has its own file:
//!
//! - `envelope`: what the window system must get right, refused outright ([`EnvelopeError`]);
//! - [`normalise`]: repairs values and records each change; [`ids`]: the check-digit algorithms;
//! - `items`: the items, their bundle order and dependencies, the mode each is handled in;
//! - `parties`: who applies and for whom, their IDs and mobiles, the delivery details;
//! - `materials`: what is handed in, what each item requires, what is inherited or owed;
//! - `fields`: the item-specific form fields (表单项);
//! - `plan`: when the case is accepted, its tasks and their deadlines ([`Plan`]);
//! - `labels`: the Chinese words the deficiency messages use;
//! - `supplement`: 补正 on an accepted case, in three phases: check, match, apply.
//!
//! No file of intake reads the clock, the store or the network: `now`, the calendar and the case
//! are handed in, and what comes out is a value the caller records.

mod envelope;
mod fields;
/// The check digits live outside intake (the catalog and privacy use them too).
pub use crate::ids;
mod items;
mod labels;
mod materials;
pub mod normalise;
mod parties;
mod plan;
mod supplement;

#[cfg(test)]
mod fixtures;

pub use envelope::EnvelopeError;
pub use plan::{Plan, PlannedTask};
pub use supplement::SupplementAnswer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::calendar::CalendarError;
use crate::calendar::LiveCalendar;
use crate::catalog::{Catalog, FieldKind, Item};
use crate::config::IntakeConfig;
use crate::proto::v1::{
    Deficiency, DeficiencyCode as Code, NotAcceptedItem, Obligation, Submission,
};
use normalise::Change;
use plan::Settled;

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
        /// The submission after normalisation, kept with the notice for reporting upward.
        submission: Box<Submission>,
        /// The items applied for that the acceptance list knows, in the order they are
        /// handled (unknown, repeated or out-of-bundle codes are left out).
        items: Vec<NotAcceptedItem>,
    },
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

    /// Checks a supplement's envelope: ids, list lengths, the case number.
    pub fn check_supplement_envelope(
        &self,
        r: &crate::proto::v1::SupplementRequest,
    ) -> Result<(), EnvelopeError> {
        envelope::check_supplement(r, &self.config)
    }

    /// Normalises, validates and plans a submission. `now` is the gateway's clock.
    pub fn evaluate(&self, mut s: Submission, now: DateTime<Utc>) -> Result<Outcome, IntakeError> {
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
            let items = items
                .iter()
                .map(|it| NotAcceptedItem {
                    item_code: it.code.get_ref().clone(),
                    item_name: it.name.clone(),
                    implementation_code: self.catalog.implementation_code(it),
                    department: it.department.get_ref().clone(),
                })
                .collect();
            return Ok(Outcome::Deficient {
                submission_id: s.submission_id.clone(),
                changes,
                deficiencies: v.d,
                submission: Box::new(s),
                items,
            });
        }

        let settled = Settled {
            items,
            depends,
            modes,
            inherited,
            obligations,
            obligation_years,
        };
        let plan = self.plan(s, changes, accepted_at, &calendar, settled)?;
        Ok(Outcome::Acceptable(Box::new(plan)))
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
    use super::fixtures::{deficiencies, example};
    use super::*;
    use crate::proto::v1::AcceptanceMode;

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
}
