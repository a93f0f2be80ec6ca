//! The acceptance list (受理清单): departments, material kinds, items and 一件事 bundles, read
//! from every `*.toml` file of a directory and checked as a whole. Every problem is reported
//! with its file and line, all at once. The gateway refuses to start on an invalid catalog.
//! This module owns the catalog's shape and its consistency rules; it knows nothing of cases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigProblem, line_at, toml_problem};
use crate::intake::ids::check_credit_code;

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

/// What one catalog file may contain.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    department: Vec<Department>,
    #[serde(default)]
    material: Vec<MaterialKind>,
    #[serde(default)]
    item: Vec<Item>,
    #[serde(default)]
    bundle: Vec<Bundle>,
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

/// The whole acceptance list, checked and indexed.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub departments: BTreeMap<String, Department>,
    pub materials: BTreeMap<String, MaterialKind>,
    pub items: BTreeMap<String, Item>,
    pub bundles: BTreeMap<String, Bundle>,
}

/// Every problem found in a catalog directory.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the catalog:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct CatalogErrors(pub Vec<ConfigProblem>);

/// Where a definition came from, for error messages.
#[derive(Clone)]
struct Origin {
    file: PathBuf,
    text: std::sync::Arc<str>,
}

impl Origin {
    fn problem<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            file: self.file.display().to_string(),
            line: line_at(&self.text, spanned.span().start),
            message: message.into(),
        }
    }
}

impl Catalog {
    /// Loads every `*.toml` file of `dir` and checks the catalog as a whole.
    pub fn load(dir: &Path) -> Result<Catalog, CatalogErrors> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            CatalogErrors(vec![ConfigProblem {
                file: dir.display().to_string(),
                line: 0,
                message: format!("cannot read the catalog directory: {e}"),
            }])
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) => problems.push(ConfigProblem {
                    file: path.display().to_string(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if sources.is_empty() && problems.is_empty() {
            problems.push(ConfigProblem {
                file: dir.display().to_string(),
                line: 0,
                message: "no *.toml files: the catalog is empty".into(),
            });
        }
        match Self::from_sources(&sources) {
            Ok(catalog) if problems.is_empty() => Ok(catalog),
            Ok(_) => Err(CatalogErrors(problems)),
            Err(CatalogErrors(more)) => {
                problems.extend(more);
                Err(CatalogErrors(problems))
            }
        }
    }

    /// Builds a catalog from `(path, text)` pairs; paths are only used in messages.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Catalog, CatalogErrors> {
        let mut problems = Vec::new();
        let mut departments: BTreeMap<String, (Department, Origin)> = BTreeMap::new();
        let mut materials: BTreeMap<String, (MaterialKind, Origin)> = BTreeMap::new();
        let mut items: BTreeMap<String, (Item, Origin)> = BTreeMap::new();
        let mut bundles: BTreeMap<String, (Bundle, Origin)> = BTreeMap::new();

        for (path, text) in sources {
            let file: CatalogFile = match toml::from_str(text) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(toml_problem(path, text, &e));
                    continue;
                }
            };
            let origin = Origin {
                file: path.clone(),
                text: text.as_str().into(),
            };
            insert_unique(
                &mut departments,
                file.department,
                |d| &d.code,
                "department",
                &origin,
                &mut problems,
            );
            insert_unique(
                &mut materials,
                file.material,
                |m| &m.code,
                "material",
                &origin,
                &mut problems,
            );
            insert_unique(
                &mut items,
                file.item,
                |i| &i.code,
                "item",
                &origin,
                &mut problems,
            );
            insert_unique(
                &mut bundles,
                file.bundle,
                |b| &b.code,
                "bundle",
                &origin,
                &mut problems,
            );
        }

        for (dept, origin) in departments.values() {
            if let Err(e) = check_credit_code(dept.body_code.get_ref()) {
                problems.push(origin.problem(
                    &dept.body_code,
                    format!("department {}: body_code {} is not a valid unified social credit code: {e}", dept.code.get_ref(), dept.body_code.get_ref()),
                ));
            }
            if let Some(hall) = dept.hall_items {
                let listed = items
                    .values()
                    .filter(|(i, _)| i.department.get_ref() == dept.code.get_ref())
                    .count();
                if (hall as usize) < listed {
                    problems.push(origin.problem(
                        &dept.code,
                        format!("department {}: hall_items = {hall} is fewer than the {listed} items the acceptance list gives it; count every item the hall handles for the department", dept.code.get_ref()),
                    ));
                }
            }
        }
        for (item, origin) in items.values() {
            check_item(
                item,
                origin,
                &departments,
                &materials,
                &items,
                &mut problems,
            );
        }
        for (bundle, origin) in bundles.values() {
            check_bundle(bundle, origin, &items, &mut problems);
        }
        // A field name means one thing everywhere: normalisation types it once per submission.
        let mut kinds: HashMap<&str, (FieldKind, &str)> = HashMap::new();
        for (item, origin) in items.values() {
            for f in &item.fields {
                match kinds.get(f.name.get_ref().as_str()) {
                    Some((kind, first)) if *kind != f.kind => problems.push(origin.problem(
                        &f.name,
                        format!(
                            "item {}: field {} is {:?} here but {:?} in item {first}",
                            item.code.get_ref(),
                            f.name.get_ref(),
                            f.kind,
                            kind
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        kinds.insert(f.name.get_ref(), (f.kind, item.code.get_ref()));
                    }
                }
            }
        }

        if !problems.is_empty() {
            return Err(CatalogErrors(problems));
        }
        Ok(Catalog {
            departments: departments.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            materials: materials.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            items: items.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            bundles: bundles.into_iter().map(|(k, (v, _))| (k, v)).collect(),
        })
    }

    /// The 31-character implementation code (实施编码) of an item.
    pub fn implementation_code(&self, item: &Item) -> String {
        let body = self.departments[item.department.get_ref()]
            .body_code
            .get_ref();
        format!("{body}{}", item.implementation_suffix.get_ref())
    }

    /// Name of a material kind, or its code when unknown.
    pub fn material_name<'a>(&'a self, code: &'a str) -> &'a str {
        self.materials.get(code).map_or(code, |m| m.name.as_str())
    }

    /// The material kind a department means when it names a material: its code, or its name
    /// as the acceptance list spells it (half- or full-width brackets alike).
    pub fn material_code_of(&self, said: &str) -> Option<&str> {
        let plain = |s: &str| {
            s.trim()
                .replace('(', "（")
                .replace(')', "）")
                .replace(' ', "")
        };
        let said = plain(said);
        self.materials
            .values()
            .find(|m| *m.code.get_ref() == said || plain(&m.name) == said)
            .map(|m| m.code.get_ref().as_str())
    }
}

fn insert_unique<T>(
    into: &mut BTreeMap<String, (T, Origin)>,
    defs: Vec<T>,
    code: impl Fn(&T) -> &Spanned<String>,
    what: &str,
    origin: &Origin,
    problems: &mut Vec<ConfigProblem>,
) {
    for def in defs {
        let key = code(&def).get_ref().clone();
        if key.trim().is_empty() {
            problems.push(origin.problem(code(&def), format!("{what} has an empty code")));
            continue;
        }
        if let Some((_, first)) = into.get(&key) {
            let first_line = line_at(&first.text, code(&into[&key].0).span().start);
            problems.push(origin.problem(
                code(&def),
                format!(
                    "duplicate {what} code {key:?} (first defined at {}:{first_line})",
                    first.file.display()
                ),
            ));
            continue;
        }
        into.insert(key, (def, origin.clone()));
    }
}

fn check_item(
    item: &Item,
    origin: &Origin,
    departments: &BTreeMap<String, (Department, Origin)>,
    materials: &BTreeMap<String, (MaterialKind, Origin)>,
    items: &BTreeMap<String, (Item, Origin)>,
    problems: &mut Vec<ConfigProblem>,
) {
    let code = item.code.get_ref();
    if !departments.contains_key(item.department.get_ref()) {
        problems.push(origin.problem(
            &item.department,
            format!(
                "item {code}: unknown department {:?} (known: {})",
                item.department.get_ref(),
                departments.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let suffix = item.implementation_suffix.get_ref();
    if suffix.len() != 13 || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        problems.push(origin.problem(
            &item.implementation_suffix,
            format!("item {code}: implementation_suffix {suffix:?} must be 13 letters or digits (body code + suffix = 31 characters)"),
        ));
    }
    if item.applicant_kinds.is_empty() {
        problems.push(origin.problem(&item.code, format!("item {code}: applicant_kinds is empty")));
    }
    if item.modes.is_empty() {
        problems.push(origin.problem(&item.code, format!("item {code}: modes is empty")));
    }
    if item.promised_working_days > item.legal_working_days {
        problems.push(origin.problem(
            &item.code,
            format!(
                "item {code}: promised_working_days {} exceeds legal_working_days {}",
                item.promised_working_days, item.legal_working_days
            ),
        ));
    }
    for produced in &item.produces {
        if !materials.contains_key(produced.get_ref()) {
            problems.push(origin.problem(
                produced,
                format!(
                    "item {code}: produces unknown material {:?}",
                    produced.get_ref()
                ),
            ));
        }
    }
    let mut seen = HashSet::new();
    for m in &item.materials {
        let mcode = m.code.get_ref();
        if !materials.contains_key(mcode) {
            problems
                .push(origin.problem(&m.code, format!("item {code}: unknown material {mcode:?}")));
        }
        if !seen.insert(mcode.clone()) {
            problems.push(origin.problem(
                &m.code,
                format!("item {code}: material {mcode} listed twice"),
            ));
        }
        if m.copies == 0 {
            problems.push(origin.problem(
                &m.code,
                format!("item {code}: material {mcode} requires 0 copies"),
            ));
        }
        if m.forms.is_empty() {
            problems.push(origin.problem(
                &m.code,
                format!("item {code}: material {mcode} accepts no form"),
            ));
        }
        if m.legal_basis.trim().is_empty() {
            problems.push(origin.problem(
                &m.code,
                format!("item {code}: material {mcode} has no legal_basis"),
            ));
        }
        if m.tolerable && !item.modes.contains(&Mode::Tolerant) {
            problems.push(origin.problem(
                &m.code,
                format!("item {code}: material {mcode} is tolerable but the item does not allow the tolerant mode"),
            ));
        }
        if let Some(from) = &m.from_item {
            match items.get(from.get_ref()) {
                None => problems.push(origin.problem(
                    from,
                    format!(
                        "item {code}: material {mcode} comes from unknown item {:?}",
                        from.get_ref()
                    ),
                )),
                Some((producer, _)) if !producer.produces.iter().any(|p| p.get_ref() == mcode) => {
                    problems.push(origin.problem(
                        from,
                        format!("item {code}: material {mcode} comes from item {} which does not list it in `produces`", from.get_ref()),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let mut fields = HashSet::new();
    for f in &item.fields {
        if !fields.insert(f.name.get_ref().clone()) {
            problems.push(origin.problem(
                &f.name,
                format!("item {code}: field {} listed twice", f.name.get_ref()),
            ));
        }
        if let (Some(min), Some(max)) = (f.min, f.max)
            && min > max
        {
            problems.push(origin.problem(
                &f.name,
                format!(
                    "item {code}: field {}: min {min} exceeds max {max}",
                    f.name.get_ref()
                ),
            ));
        }
        if f.kind == FieldKind::Code && f.pattern.is_none() {
            problems.push(origin.problem(
                &f.name,
                format!(
                    "item {code}: code field {} needs a pattern",
                    f.name.get_ref()
                ),
            ));
        }
    }
}

fn check_bundle(
    bundle: &Bundle,
    origin: &Origin,
    items: &BTreeMap<String, (Item, Origin)>,
    problems: &mut Vec<ConfigProblem>,
) {
    let code = bundle.code.get_ref();
    let mut members = HashSet::new();
    if bundle.items.is_empty() {
        problems.push(origin.problem(&bundle.code, format!("bundle {code} has no items")));
    }
    for item in &bundle.items {
        if !items.contains_key(item.get_ref()) {
            problems.push(origin.problem(
                item,
                format!("bundle {code} names missing item {:?}", item.get_ref()),
            ));
        }
        if !members.insert(item.get_ref().clone()) {
            problems.push(origin.problem(
                item,
                format!("bundle {code} lists item {} twice", item.get_ref()),
            ));
        }
    }
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for step in &bundle.steps {
        if !members.contains(step.item.get_ref()) {
            problems.push(origin.problem(
                &step.item,
                format!(
                    "bundle {code}: step for {:?}, which is not in the bundle's items",
                    step.item.get_ref()
                ),
            ));
        }
        for before in &step.after {
            if !members.contains(before.get_ref()) {
                problems.push(origin.problem(
                    before,
                    format!(
                        "bundle {code}: {} waits for {:?}, which is not in the bundle's items",
                        step.item.get_ref(),
                        before.get_ref()
                    ),
                ));
            }
            edges
                .entry(step.item.get_ref())
                .or_default()
                .push(before.get_ref());
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        problems.push(origin.problem(
            &bundle.code,
            format!(
                "bundle {code}: its order has a cycle: {}",
                cycle.join(" → ")
            ),
        ));
        return;
    }
    // A material produced by an earlier item must come from an item that is ordered before.
    let order = BundleOrder::of(bundle);
    for member in &bundle.items {
        let Some((item, _)) = items.get(member.get_ref()) else {
            continue;
        };
        for m in &item.materials {
            if let Some(from) = &m.from_item
                && members.contains(from.get_ref())
                && !order.precedes(from.get_ref(), member.get_ref())
            {
                problems.push(origin.problem(
                    member,
                    format!("bundle {code}: {} needs {} from {}, but the bundle does not order {} before it", member.get_ref(), m.code.get_ref(), from.get_ref(), from.get_ref()),
                ));
            }
        }
    }
}

fn find_cycle<'a>(edges: &HashMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &HashMap<&'a str, Vec<&'a str>>,
        state: &mut HashMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node, 1);
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(node, 2);
        None
    }
    let mut state = HashMap::new();
    let mut nodes: Vec<_> = edges.keys().copied().collect();
    nodes.sort();
    for node in nodes {
        if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// The direct prerequisites of each item of a bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleOrder {
    after: HashMap<String, Vec<String>>,
}

impl BundleOrder {
    /// The order a bundle declares.
    pub fn of(bundle: &Bundle) -> Self {
        let mut after: HashMap<String, Vec<String>> = HashMap::new();
        for step in &bundle.steps {
            after
                .entry(step.item.get_ref().clone())
                .or_default()
                .extend(step.after.iter().map(|a| a.get_ref().clone()));
        }
        Self { after }
    }

    /// Direct prerequisites of `item`.
    pub fn prerequisites(&self, item: &str) -> &[String] {
        self.after.get(item).map_or(&[], Vec::as_slice)
    }

    /// True when `earlier` must be approved (directly or transitively) before `later`.
    pub fn precedes(&self, earlier: &str, later: &str) -> bool {
        let mut stack = vec![later];
        let mut seen = HashSet::new();
        while let Some(node) = stack.pop() {
            for pre in self.prerequisites(node) {
                if pre == earlier {
                    return true;
                }
                if seen.insert(pre.as_str()) {
                    stack.push(pre);
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog")
    }

    #[test]
    fn shipped_catalog_is_valid_and_complete() {
        let catalog = Catalog::load(&shipped()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(catalog.departments.len(), 7);
        assert_eq!(catalog.materials.len(), 21);
        assert_eq!(catalog.items.len(), 8);
        assert_eq!(catalog.bundles.len(), 2);
        let qysl = &catalog.items["QY-SL"];
        assert_eq!(
            catalog.implementation_code(qysl),
            "1164010001013301851000112001000"
        );
        let order = BundleOrder::of(&catalog.bundles["qiye-kaiban"]);
        for later in ["GZ-KZ", "SW-XB", "SB-DJ", "GJJ-DJ"] {
            assert!(order.precedes("QY-SL", later), "{later}");
        }
    }

    fn errors(text: &str) -> Vec<ConfigProblem> {
        let base = std::fs::read_to_string(shipped().join("departments.toml")).unwrap();
        let mats = std::fs::read_to_string(shipped().join("materials.toml")).unwrap();
        let sources = vec![
            (PathBuf::from("departments.toml"), base),
            (PathBuf::from("materials.toml"), mats),
            (PathBuf::from("test.toml"), text.to_string()),
        ];
        Catalog::from_sources(&sources).expect_err("must fail").0
    }

    const ITEM: &str = r#"
[[item]]
code = "T-1"
name = "测试事项"
department = "scjg"
implementation_suffix = "1000999000000"
applicant_kinds = ["person"]
promised_working_days = 1
legal_working_days = 2
modes = ["standard"]
"#;

    #[test]
    fn unknown_department_is_reported_with_file_and_line() {
        let errs = errors(&ITEM.replace("\"scjg\"", "\"nope\""));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].file, "test.toml");
        assert_eq!(errs[0].line, 5);
        assert!(
            errs[0].message.contains("unknown department \"nope\""),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn duplicate_item_code_names_both_places() {
        let errs = errors(&format!("{ITEM}{ITEM}"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 13);
        assert!(
            errs[0].message.contains("first defined at test.toml:3"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn bundle_naming_a_missing_item_and_a_cycle_are_both_reported() {
        let text = format!(
            "{ITEM}{}",
            r#"
[[bundle]]
code = "b"
name = "环"
items = ["T-1", "T-2"]
[[bundle.step]]
item = "T-1"
after = ["T-1"]
"#
        );
        let errs = errors(&text);
        let messages: Vec<_> = errors_text(&errs);
        assert!(
            messages.iter().any(|m| m.contains("missing item \"T-2\"")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("cycle: T-1 → T-1")),
            "{messages:?}"
        );
    }

    #[test]
    fn a_longer_cycle_is_reported_with_its_path() {
        let second = ITEM
            .replace("T-1", "T-2")
            .replace("1000999000000", "1000999000001");
        let text = format!(
            "{ITEM}{second}{}",
            r#"
[[bundle]]
code = "b"
name = "环"
items = ["T-1", "T-2"]
[[bundle.step]]
item = "T-1"
after = ["T-2"]
[[bundle.step]]
item = "T-2"
after = ["T-1"]
"#
        );
        let errs = errors_text(&errors(&text));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("cycle: T-1 → T-2 → T-1"), "{errs:?}");
    }

    #[test]
    fn unknown_key_is_reported_with_line() {
        let errs = errors(&format!("{ITEM}promised_days = 3\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("promised_days"),
            "{}",
            errs[0].message
        );
        assert_eq!(errs[0].line, 11, "{}", errs[0].message);
    }

    fn errors_text(errs: &[ConfigProblem]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }
}
