//! The acceptance list's vocabulary: departments, material kinds, items with their materials and
//! form-field rules, and bundles, as a catalog file spells them (`deny_unknown_fields`, with
//! their defaults). Each code keeps its span so a problem can name its file and line.
//! This file owns the shapes only: it never reads files and never judges whether one definition
//! agrees with another (`load.rs` reads; `check.rs` and `bundle.rs` judge).

use serde::Deserialize;
use toml::Spanned;

/// Who may apply for an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicantKind {
    Person,
    Organization,
    Other,
}

/// Acceptance modes an item allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Standard,
    Commitment,
    Tolerant,
}

/// Forms a material may be handed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Original,
    Copy,
    Electronic,
}

/// Types of item-specific form fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// Free text; `max_chars` applies.
    Text,
    /// Whole number; `min` / `max` apply.
    Integer,
    /// Decimal number; `min` / `max` apply.
    Decimal,
    /// Calendar date, normalised to `YYYY-MM-DD`.
    Date,
    /// Text that must match `pattern` (a character-class pattern, see [`FieldRule::pattern`]).
    Code,
}

/// A department taking part in the window (one queue and one adapter each).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Short code; also the routing key of the department's queue.
    pub code: Spanned<String>,
    /// Official name.
    pub name: String,
    /// Unified social credit code of the implementing body: the first 18 characters of its items'
    /// implementation codes.
    pub body_code: Spanned<String>,
    /// How its legacy system is reached (informative; the adapter configuration decides).
    #[serde(default)]
    pub system: String,
    /// How many of the department's items the hall handles in all, through the comprehensive
    /// window or still at the department's own window: the denominator of the one-window share
    /// (`yichuang_one_window_item_share`). Absent: the department is left out of the share.
    #[serde(default)]
    pub hall_items: Option<u32>,
}

/// A kind of document, shared by every item that needs it (一次收件).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaterialKind {
    /// Code, e.g. `SFZ`.
    pub code: Spanned<String>,
    /// Name read to the applicant.
    pub name: String,
}

/// A material an item requires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemMaterial {
    /// Material kind code.
    pub code: Spanned<String>,
    /// Legal basis for requiring it, quoted in the deficiency notice.
    pub legal_basis: String,
    /// Forms accepted.
    #[serde(default = "all_forms")]
    pub forms: Vec<Form>,
    /// Copies required.
    #[serde(default = "one")]
    pub copies: u32,
    /// Whether it may be missing under 容缺 and brought later.
    #[serde(default)]
    pub tolerable: bool,
    /// The item of the same bundle that produces it (e.g. `YYZZ` from `QY-SL`): not collected
    /// from the applicant when that item is part of the submission and ordered before.
    #[serde(default)]
    pub from_item: Option<Spanned<String>>,
    /// A note for the clerk (e.g. "买卖双方各一份").
    #[serde(default)]
    pub note: String,
}

/// A rule on an item-specific field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Field name as it appears in the submission's `fields` map.
    pub name: Spanned<String>,
    /// Label read to the applicant.
    pub label: String,
    /// Value type.
    pub kind: FieldKind,
    /// Whether the field must be present.
    #[serde(default)]
    pub required: bool,
    /// Longest value in characters (text and code fields).
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// Smallest value (numbers).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest value (numbers).
    #[serde(default)]
    pub max: Option<f64>,
    /// For code fields: exact length and allowed characters, e.g. `{ length = 28, chars = "0-9A-Z" }`.
    #[serde(default)]
    pub pattern: Option<CodePattern>,
    /// Legal basis quoted when the field is missing or wrong.
    #[serde(default)]
    pub legal_basis: String,
}

/// A simple pattern for code fields: a fixed length over a set of character ranges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodePattern {
    /// Exact length in characters.
    pub length: usize,
    /// Allowed characters as ranges and single characters, e.g. `0-9A-Z`.
    pub chars: String,
}

impl CodePattern {
    /// True when `value` has the length and only allowed characters.
    pub fn matches(&self, value: &str) -> bool {
        value.chars().count() == self.length && value.chars().all(|c| self.allows(c))
    }

    fn allows(&self, c: char) -> bool {
        let set: Vec<char> = self.chars.chars().collect();
        let mut i = 0;
        while i < set.len() {
            if i + 2 < set.len() && set[i + 1] == '-' {
                if (set[i]..=set[i + 2]).contains(&c) {
                    return true;
                }
                i += 3;
            } else {
                if set[i] == c {
                    return true;
                }
                i += 1;
            }
        }
        false
    }
}

/// A service item of the acceptance list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Code used by windows, e.g. `QY-SL`.
    pub code: Spanned<String>,
    /// Official name.
    pub name: String,
    /// Department that decides it.
    pub department: Spanned<String>,
    /// The 13 characters that follow the body's credit code in the 31-character implementation code.
    pub implementation_suffix: Spanned<String>,
    /// Who may apply.
    pub applicant_kinds: Vec<ApplicantKind>,
    /// Whether approving it creates the organisation later items of a bundle apply as (企业设立).
    #[serde(default)]
    pub establishes_organization: bool,
    /// Materials it produces for later items of a bundle (e.g. `YYZZ`).
    #[serde(default)]
    pub produces: Vec<Spanned<String>>,
    /// Promised time limit (承诺时限) in working days.
    pub promised_working_days: u32,
    /// Legal time limit (法定时限) in working days.
    pub legal_working_days: u32,
    /// Acceptance modes allowed.
    pub modes: Vec<Mode>,
    /// Working days after acceptance within which materials missing under 容缺 are due.
    #[serde(default = "default_tolerance_days")]
    pub tolerance_working_days: u32,
    /// Roles of other parties that must be named (e.g. `seller`).
    #[serde(default)]
    pub required_parties: Vec<String>,
    /// Required materials.
    #[serde(default, rename = "material")]
    pub materials: Vec<ItemMaterial>,
    /// Rules on item-specific fields.
    #[serde(default, rename = "field")]
    pub fields: Vec<FieldRule>,
    /// Conditions of acceptance (受理条件), each a sentence shown in the item's guide.
    /// Informative: intake checks materials and fields, not these.
    #[serde(default)]
    pub conditions: Vec<String>,
    /// Fees charged (收费标准); none listed: the guide says the item is free.
    #[serde(default, rename = "fee")]
    pub fees: Vec<Fee>,
}

/// A fee an item charges, as its guide shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fee {
    /// What is charged for, e.g. `不动产登记费`.
    pub name: String,
    /// The amount as the public reads it, e.g. `每件80元`.
    pub amount: String,
    /// Legal basis of the charge.
    pub legal_basis: String,
}

/// One ordering constraint of a bundle: `item` waits until every item in `after` is approved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleStep {
    /// The waiting item.
    pub item: Spanned<String>,
    /// Items that must be approved first.
    pub after: Vec<Spanned<String>>,
}

/// A 一件事 bundle: several items handled as one, with an order among them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Code, e.g. `qiye-kaiban`.
    pub code: Spanned<String>,
    /// Name read to the applicant.
    pub name: String,
    /// Items of the bundle.
    pub items: Vec<Spanned<String>>,
    /// Ordering constraints; items without a step run in parallel from the start.
    #[serde(default, rename = "step")]
    pub steps: Vec<BundleStep>,
    /// What a rejected item does to the case: `close` (the default: the bundle stands or falls
    /// together) or `deliver-approved` (what was approved is delivered).
    #[serde(default)]
    pub on_rejection: OnRejection,
}

/// What a rejected item of a bundle does to its case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRejection {
    #[default]
    Close,
    DeliverApproved,
}

fn all_forms() -> Vec<Form> {
    vec![Form::Original, Form::Copy, Form::Electronic]
}
fn one() -> u32 {
    1
}
fn default_tolerance_days() -> u32 {
    10
}
