//! The envelope of a submission: what the window system itself must get right before intake
//! looks at the application — the submission id (the idempotency key), hall, window and
//! channel, list lengths and string sizes within the configured limits. A broken envelope is
//! refused outright ([`EnvelopeError`], `INVALID_ARGUMENT`): there is nothing to tell the
//! applicant.
//!
//! Owns: the limits check and the walk over every string of a submission. It never judges the
//! application itself (items, materials, parties: those are deficiencies, reported by the
//! other intake modules), never normalises, and never stores or sends anything.

use crate::config::IntakeConfig;
use crate::proto::v1::{Channel, Submission, SupplementRequest};

/// Longest supplement id (the window's idempotency key for a supplement), in characters.
const SUPPLEMENT_ID_CHARS: usize = 64;
/// Longest staff number of the clerk taking a supplement, in characters.
const STAFF_NO_CHARS: usize = 32;

/// Checks a supplement's envelope, as [`check`] does a submission's: bounded, so a broken window
/// system cannot bloat a case.
pub(super) fn check_supplement(
    r: &SupplementRequest,
    config: &IntakeConfig,
) -> Result<(), EnvelopeError> {
    let err = |field: &str, message: String| {
        Err(EnvelopeError {
            field: field.into(),
            message,
        })
    };
    let too_long = |v: &str, max: usize| v.chars().count() > max || v.chars().any(char::is_control);
    if too_long(&r.supplement_id, SUPPLEMENT_ID_CHARS) {
        return err(
            "supplementId",
            format!("must be at most {SUPPLEMENT_ID_CHARS} printable characters"),
        );
    }
    if too_long(&r.staff_no, STAFF_NO_CHARS) {
        return err(
            "staffNo",
            format!("must be at most {STAFF_NO_CHARS} printable characters"),
        );
    }
    let limits = [
        (
            "materials",
            r.materials.len(),
            config.max_supplement_materials,
        ),
        ("taskIds", r.task_ids.len(), config.max_supplement_tasks),
    ];
    for (field, len, max) in limits {
        if len > max {
            return err(
                field,
                format!(
                    "{len} entries exceed a supplement's limit of {max}; hand them in over several supplements"
                ),
            );
        }
    }
    if r.case_number.trim().is_empty() {
        return err(
            "caseNumber",
            "is required: the national case number of the case the materials are for".into(),
        );
    }
    Ok(())
}

/// A submission the API must refuse outright (`INVALID_ARGUMENT`): the window system's
/// envelope is broken or over a limit, so there is nothing to tell the applicant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EnvelopeError {
    /// JSON path of the offending value.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Checks what the window system itself must get right: ids, codes, list lengths, string sizes,
/// against the limits of `config`.
pub(super) fn check(s: &Submission, config: &IntakeConfig) -> Result<(), EnvelopeError> {
    let err = |field: &str, message: String| {
        Err(EnvelopeError {
            field: field.into(),
            message,
        })
    };
    let id = s.submission_id.trim();
    if id.is_empty() {
        return err(
            "submissionId",
            "is required: the window's idempotency key for this attempt".into(),
        );
    }
    if id.chars().count() > 128 || id.chars().any(char::is_control) {
        return err(
            "submissionId",
            "must be at most 128 printable characters".into(),
        );
    }
    if s.hall_code.trim().is_empty() {
        return err(
            "hallCode",
            "is required: the hall that accepts the case".into(),
        );
    }
    if s.window_code.trim().is_empty() {
        return err(
            "windowCode",
            "is required: results return to this window".into(),
        );
    }
    if Channel::try_from(s.channel).map_or(true, |c| c == Channel::Unspecified) {
        return err("channel", "is required, e.g. CHANNEL_WINDOW".into());
    }
    let limits = [
        ("items", s.items.len(), config.max_items),
        ("materials", s.materials.len(), config.max_materials),
        ("fields", s.fields.len(), config.max_fields),
        ("otherParties", s.other_parties.len(), config.max_parties),
    ];
    for (field, len, max) in limits {
        if len > max {
            return err(
                field,
                format!("{len} entries exceed the limit of {max}; split the application"),
            );
        }
    }
    let max = config.max_string_chars;
    let mut long = None;
    visit_strings(s, &mut |path, value| {
        if long.is_none() && value.chars().count() > max {
            long = Some(path());
        }
    });
    if let Some(path) = long {
        return err(
            &path,
            format!("is longer than the limit of {max} characters"),
        );
    }
    Ok(())
}

/// Calls `f` with the path and value of every string in a submission.
fn visit_strings(s: &Submission, f: &mut dyn FnMut(&dyn Fn() -> String, &str)) {
    let mut one = |path: &str, value: &str| f(&|| path.to_string(), value);
    one("submissionId", &s.submission_id);
    one("hallCode", &s.hall_code);
    one("windowCode", &s.window_code);
    one("bundleCode", &s.bundle_code);
    if let Some(c) = &s.clerk {
        one("clerk.staffNo", &c.staff_no);
        one("clerk.name", &c.name);
    }
    if let Some(a) = &s.applicant {
        one("applicant.name", &a.name);
        one("applicant.idNumber", &a.id_number);
        if let Some(p) = &a.legal_representative {
            one("applicant.legalRepresentative.name", &p.name);
            one("applicant.legalRepresentative.idNumber", &p.id_number);
            one("applicant.legalRepresentative.mobile", &p.mobile);
        }
        if let Some(c) = &a.contact {
            one("applicant.contact.name", &c.name);
            one("applicant.contact.mobile", &c.mobile);
            one("applicant.contact.address", &c.address);
        }
    }
    if let Some(p) = &s.agent {
        one("agent.name", &p.name);
        one("agent.idNumber", &p.id_number);
        one("agent.mobile", &p.mobile);
    }
    for (i, p) in s.other_parties.iter().enumerate() {
        for (k, v) in [
            ("role", &p.role),
            ("name", &p.name),
            ("idNumber", &p.id_number),
            ("mobile", &p.mobile),
        ] {
            one(&format!("otherParties[{i}].{k}"), v);
        }
    }
    for (i, it) in s.items.iter().enumerate() {
        one(&format!("items[{i}].itemCode"), &it.item_code);
    }
    for (i, m) in s.materials.iter().enumerate() {
        one(&format!("materials[{i}].materialCode"), &m.material_code);
        if let Some(file) = &m.file {
            one(&format!("materials[{i}].file.uri"), &file.uri);
            one(&format!("materials[{i}].file.sha256"), &file.sha256);
            one(&format!("materials[{i}].file.mediaType"), &file.media_type);
        }
    }
    for (k, v) in &s.fields {
        one(&format!("fields.{k}"), k);
        one(&format!("fields.{k}"), v);
    }
    if let Some(d) = &s.delivery {
        one("delivery.recipient", &d.recipient);
        one("delivery.mobile", &d.mobile);
        one("delivery.address", &d.address);
    }
}
