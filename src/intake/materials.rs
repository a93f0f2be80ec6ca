//! The materials handed in at the window, checked against what each item requires: a known
//! kind, a form the item accepts, enough copies, and for an electronic one a file reference the
//! material store can serve (scheme, SHA-256, size, media type within the limits). Missing
//! materials are reported once per kind, naming every item and legal basis; under 容缺 a
//! tolerable one becomes an obligation instead; a material an earlier item of the bundle
//! produces is inherited, not asked for. Supplement checks what it is handed the same way.
//!
//! Owns: the material deficiencies and what is handed in, by kind. It never fetches or opens a
//! file (a reference is checked, not followed), never counts a due date itself (the caller's
//! `owe` does, on the evaluation's calendar), and never stores or sends anything.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::items::depends_on_item;
use super::labels::forms_zh;
use super::{Intake, IntakeError, Validator};
use crate::calendar::CalendarError;
use crate::catalog::{Catalog, Form, Item};
use crate::proto::v1::{AcceptanceMode, DeficiencyCode as Code, MaterialForm, Submission};

/// Materials handed in, by kind: the forms and the number of copies.
pub(super) type Handed<'m> = BTreeMap<&'m str, (BTreeSet<MaterialForm>, u32)>;

/// Materials missing, by kind: the deficiency code, the items that need it, their legal bases.
type Missing = BTreeMap<String, (Code, Vec<String>, Vec<String>)>;

impl Intake {
    /// Checks handed-in materials and each item's requirements. Returns, per item, the materials
    /// it inherits from prerequisite items. `owe` records a material tolerated under 容缺.
    pub(super) fn check_materials(
        &self,
        s: &Submission,
        items: &[&Item],
        depends: &[Vec<usize>],
        modes: &[AcceptanceMode],
        v: &mut Validator,
        owe: &mut dyn FnMut(&Item, &str, &str) -> Result<(), CalendarError>,
    ) -> Result<Vec<Vec<String>>, IntakeError> {
        let catalog = &*self.catalog;
        let (handed, defective) = self.check_handed(&s.materials, "materials", v);

        // Missing materials are reported once per kind, naming every item and legal basis.
        let mut missing: Missing = BTreeMap::new();
        let mut inherited = vec![Vec::new(); items.len()];
        for (i, it) in items.iter().enumerate() {
            for req in &it.materials {
                let code = req.code.get_ref();
                if let Some(from) = &req.from_item
                    && depends_on_item(items, depends, i, from.get_ref())
                {
                    inherited[i].push(code.clone());
                    continue;
                }
                let name = catalog.material_name(code);
                if !handed.contains_key(code.as_str()) && defective.contains(code.as_str()) {
                    continue;
                }
                match handed.get(code.as_str()) {
                    Some((forms, copies)) => {
                        let accepted = in_accepted_form(forms, &req.forms);
                        if !accepted {
                            v.push(
                                Code::MaterialForm,
                                "materials",
                                format!(
                                    "材料「{name}」须以{}形式提交（事项：{}）。",
                                    forms_zh(&req.forms),
                                    it.name
                                ),
                                |d| {
                                    d.material_code = code.clone();
                                    d.material_name = name.into();
                                    d.legal_basis = req.legal_basis.clone();
                                    d.item_code = it.code.get_ref().clone();
                                },
                            );
                        } else if *copies < req.copies {
                            v.push(
                                Code::MaterialCopies,
                                "materials",
                                format!(
                                    "材料「{name}」须提交 {} 份，已提交 {copies} 份（事项：{}）。",
                                    req.copies, it.name
                                ),
                                |d| {
                                    d.material_code = code.clone();
                                    d.material_name = name.into();
                                    d.legal_basis = req.legal_basis.clone();
                                    d.item_code = it.code.get_ref().clone();
                                },
                            );
                        }
                    }
                    None if modes[i] == AcceptanceMode::Tolerant && req.tolerable => {
                        owe(it, code, name)?
                    }
                    None => {
                        let kind = if modes[i] == AcceptanceMode::Tolerant {
                            Code::MaterialNotTolerable
                        } else {
                            Code::MaterialMissing
                        };
                        let e =
                            missing
                                .entry(code.clone())
                                .or_insert((kind, Vec::new(), Vec::new()));
                        e.1.push(it.code.get_ref().clone());
                        if !e.2.contains(&req.legal_basis) {
                            e.2.push(req.legal_basis.clone());
                        }
                        if kind == Code::MaterialNotTolerable {
                            e.0 = kind;
                        }
                    }
                }
            }
        }
        report_missing(catalog, missing, v);
        Ok(inherited)
    }

    /// Checks each material handed in (`<base>[i]`): a known kind, a form, copies, and the
    /// file reference of an electronic one. Returns what was handed in by kind (forms, copies)
    /// and the kinds handed in with a defect already reported (neither missing nor owed).
    pub(super) fn check_handed<'m>(
        &self,
        materials: &'m [crate::proto::v1::Material],
        base: &str,
        v: &mut Validator,
    ) -> (Handed<'m>, HashSet<&'m str>) {
        let catalog = &*self.catalog;
        let mut handed: Handed<'m> = BTreeMap::new();
        let mut defective: HashSet<&str> = HashSet::new();
        for (i, m) in materials.iter().enumerate() {
            let base = format!("{base}[{i}]");
            let Some(kind) = catalog.materials.get(&m.material_code) else {
                v.push(
                    Code::MaterialUnknown,
                    &format!("{base}.materialCode"),
                    format!("材料编码「{}」不在材料目录中。", m.material_code),
                    |d| d.material_code = m.material_code.clone(),
                );
                continue;
            };
            let form = MaterialForm::try_from(m.form).unwrap_or(MaterialForm::Unspecified);
            if form == MaterialForm::Unspecified {
                v.push(
                    Code::MaterialForm,
                    &format!("{base}.form"),
                    format!("材料「{}」未注明形式（原件、复印件或电子件）。", kind.name),
                    |d| d.material_code = m.material_code.clone(),
                );
                defective.insert(&m.material_code);
                continue;
            }
            let copies = if m.copies == 0 && form == MaterialForm::Electronic {
                1
            } else {
                m.copies
            };
            if copies < 1 {
                v.push(
                    Code::MaterialCopies,
                    &format!("{base}.copies"),
                    format!("材料「{}」份数须至少为 1。", kind.name),
                    |d| d.material_code = m.material_code.clone(),
                );
                defective.insert(&m.material_code);
                continue;
            }
            if form == MaterialForm::Electronic
                && !self.check_file(&base, &kind.name, &m.material_code, m.file.as_ref(), v)
            {
                defective.insert(&m.material_code);
                continue;
            }
            let entry = handed.entry(m.material_code.as_str()).or_default();
            entry.0.insert(form);
            entry.1 = entry.1.saturating_add(copies.unsigned_abs());
        }
        (handed, defective)
    }

    fn check_file(
        &self,
        base: &str,
        name: &str,
        code: &str,
        file: Option<&crate::proto::v1::FileRef>,
        v: &mut Validator,
    ) -> bool {
        let mut ok = true;
        let mut bad = |field: &str, what: String| {
            v.push(
                Code::FileReference,
                &format!("{base}.file{field}"),
                format!("电子材料「{name}」{what}"),
                |d| d.material_code = code.into(),
            );
            ok = false;
        };
        let Some(f) = file else {
            bad("", "缺少电子文件引用，请重新上传。".into());
            return false;
        };
        let scheme_ok = f.uri.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "s3" | "https" | "oss" | "obs" | "cos" | "file") && !rest.is_empty()
        });
        if !scheme_ok {
            bad(
                ".uri",
                "的文件地址无效（应为 s3://、https:// 等材料库地址）。".into(),
            );
        }
        if f.sha256.len() != 64
            || !f
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bad(".sha256", "的 SHA-256 摘要应为 64 位十六进制字符。".into());
        }
        if f.size_bytes <= 0 || f.size_bytes > self.config.max_file_bytes {
            bad(
                ".sizeBytes",
                format!(
                    "的文件大小 {} 字节不在 1 至 {} 字节之间。",
                    f.size_bytes, self.config.max_file_bytes
                ),
            );
        }
        if !self.config.media_types.iter().any(|t| t == &f.media_type) {
            bad(
                ".mediaType",
                format!(
                    "的文件类型「{}」不受理（可用：{}）。",
                    f.media_type,
                    self.config.media_types.join("、")
                ),
            );
        }
        ok
    }
}

/// Reports each missing material once, naming every item that needs it and their legal bases.
fn report_missing(catalog: &Catalog, missing: Missing, v: &mut Validator) {
    for (code, (kind, item_codes, bases)) in missing {
        let name = catalog.material_name(&code).to_string();
        let item_names: Vec<&str> = item_codes
            .iter()
            .map(|c| catalog.items[c].name.as_str())
            .collect();
        let basis = bases.join("；");
        let message = if kind == Code::MaterialNotTolerable {
            format!(
                "缺少材料「{name}」：该材料不适用容缺受理，须当场提交（事项：{}；依据：{basis}）。",
                item_names.join("、")
            )
        } else {
            format!(
                "缺少材料「{name}」（事项：{}；依据：{basis}）。",
                item_names.join("、")
            )
        };
        v.push(kind, "materials", message, |d| {
            d.material_code = code.clone();
            d.material_name = name.clone();
            d.legal_basis = basis.clone();
            d.item_code = item_codes.join(",");
        });
    }
}

/// True when a form the material was handed in is one of the forms `accepted`.
pub(super) fn in_accepted_form(handed: &BTreeSet<MaterialForm>, accepted: &[Form]) -> bool {
    handed.iter().any(|f| accepted.contains(&form_of(*f)))
}

/// The catalog's form of a material handed in (no form stated counts as the original).
fn form_of(f: MaterialForm) -> Form {
    match f {
        MaterialForm::Original | MaterialForm::Unspecified => Form::Original,
        MaterialForm::Copy => Form::Copy,
        MaterialForm::Electronic => Form::Electronic,
    }
}

#[cfg(test)]
mod tests {
    use crate::intake::Outcome;
    use crate::intake::fixtures::{deficiencies, example, intake, now};
    use crate::proto::v1::DeficiencyCode as Code;

    #[test]
    fn a_defective_file_is_reported_once_not_also_as_missing() {
        let mut s = example("kai-canguan");
        let pmt = s
            .materials
            .iter_mut()
            .find(|m| m.material_code == "PMT")
            .unwrap();
        pmt.file.as_mut().unwrap().sha256 = "not-a-digest".into();
        assert_eq!(
            deficiencies(s),
            [(
                Code::FileReference,
                "materials[4].file.sha256".to_string(),
                String::new()
            )]
        );
    }

    #[test]
    fn a_defective_tolerable_material_is_not_silently_owed() {
        let mut s = example("qiye-kaiban");
        let yhkh = s
            .materials
            .iter_mut()
            .find(|m| m.material_code == "YHKH")
            .unwrap();
        yhkh.file.as_mut().unwrap().media_type = "application/x-msdownload".into();
        let Outcome::Deficient { deficiencies, .. } = intake().evaluate(s, now()).unwrap() else {
            panic!("a bad file is a deficiency, not an obligation")
        };
        assert_eq!(deficiencies.len(), 1);
        assert_eq!(deficiencies[0].code, Code::FileReference as i32);
    }
}
