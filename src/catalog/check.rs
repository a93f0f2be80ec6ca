//! The catalog's consistency rules, over every definition at once: a department's credit code
//! and item count, an item's department, implementation code, limits, materials and form
//! fields, each bundle (in `bundle.rs`), and one meaning per field name across items. Every
//! problem is collected, located by file and line; none stops the others.
//! It never reads files and never changes a definition: it only reports.

use std::collections::{HashMap, HashSet};

use super::bundle::check_bundle;
use super::load::{Defined, Definitions, Origin};
use super::model::{Department, FieldKind, Item, ItemMaterial, MaterialKind, Mode};
use crate::config::ConfigProblem;
use crate::ids::check_credit_code;

/// Checks every definition against the others, in a fixed order: departments, items, bundles,
/// then field names across items.
pub(super) fn all(defs: &Definitions, problems: &mut Vec<ConfigProblem>) {
    for (dept, origin) in defs.departments.values() {
        check_department(dept, origin, &defs.items, problems);
    }
    for (item, origin) in defs.items.values() {
        check_item(item, origin, defs, problems);
    }
    for (bundle, origin) in defs.bundles.values() {
        check_bundle(bundle, origin, &defs.items, problems);
    }
    check_field_kinds(&defs.items, problems);
}

fn check_department(
    dept: &Department,
    origin: &Origin,
    items: &Defined<Item>,
    problems: &mut Vec<ConfigProblem>,
) {
    if let Err(e) = check_credit_code(dept.body_code.get_ref()) {
        problems.push(origin.problem(
            &dept.body_code,
            format!(
                "department {}: body_code {} is not a valid unified social credit code: {e}",
                dept.code.get_ref(),
                dept.body_code.get_ref()
            ),
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

/// An item's own terms, what it produces, each material it requires and its form fields.
fn check_item(item: &Item, origin: &Origin, defs: &Definitions, problems: &mut Vec<ConfigProblem>) {
    check_item_terms(item, origin, &defs.departments, problems);
    check_produces(item, origin, &defs.materials, problems);
    let mut seen = HashSet::new();
    for m in &item.materials {
        let first = seen.insert(m.code.get_ref().clone());
        check_item_material(item, m, first, origin, defs, problems);
    }
    check_item_fields(item, origin, problems);
}

/// The department that decides the item, its implementation code, who may apply, its modes
/// and its time limits.
fn check_item_terms(
    item: &Item,
    origin: &Origin,
    departments: &Defined<Department>,
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
    for fee in &item.fees {
        if [&fee.name, &fee.amount, &fee.legal_basis]
            .iter()
            .any(|v| v.trim().is_empty())
        {
            problems.push(origin.problem(
                &item.code,
                format!("item {code}: a fee needs name, amount and legal_basis, each not empty (the guide shows all three)"),
            ));
        }
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
}

/// Every material the item produces is a known material kind.
fn check_produces(
    item: &Item,
    origin: &Origin,
    materials: &Defined<MaterialKind>,
    problems: &mut Vec<ConfigProblem>,
) {
    let code = item.code.get_ref();
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
}

/// One material the item requires: a known kind, listed once (`first`), at least one copy and
/// one form, a legal basis, tolerable only where 容缺 is allowed, and produced by the item it
/// says it comes from.
fn check_item_material(
    item: &Item,
    m: &ItemMaterial,
    first: bool,
    origin: &Origin,
    defs: &Definitions,
    problems: &mut Vec<ConfigProblem>,
) {
    let code = item.code.get_ref();
    let mcode = m.code.get_ref();
    if !defs.materials.contains_key(mcode) {
        problems.push(origin.problem(&m.code, format!("item {code}: unknown material {mcode:?}")));
    }
    if !first {
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
        match defs.items.get(from.get_ref()) {
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

/// The item's form fields: each named once, `min` not above `max`, and a pattern for code fields.
fn check_item_fields(item: &Item, origin: &Origin, problems: &mut Vec<ConfigProblem>) {
    let code = item.code.get_ref();
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

/// A field name means one thing everywhere: normalisation types it once per submission.
fn check_field_kinds(items: &Defined<Item>, problems: &mut Vec<ConfigProblem>) {
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
}
