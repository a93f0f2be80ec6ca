//! Normalisation of a window's submission: full-width → half-width, trimming, upper-case check
//! characters, 15 → 18-digit resident IDs, mobile numbers with spaces or `+86`, dates such as
//! `2019年10月8日`. Every change is recorded (what, from, to, which rule) so the clerk sees it.
//! Normalisation never rejects: a value it cannot repair is left for validation to report.

use std::borrow::Cow;

use crate::catalog::FieldKind;
use crate::ids::upgrade_resident_id_15;
use crate::privacy::Personal;
use crate::proto::v1::{IdType, Normalisation, Submission};

/// One change made to the submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// JSON path of the value (`applicant.idNumber`).
    pub path: String,
    pub from: String,
    pub to: String,
    /// Rules applied, joined by `+` (`full-width+trim`).
    pub rule: String,
    /// What kind of personal data the value is, for masking outside the case.
    pub personal: Personal,
}

impl Change {
    /// The change as recorded on the case: values verbatim.
    pub fn to_proto(&self) -> Normalisation {
        Normalisation {
            path: self.path.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            rule: self.rule.clone(),
        }
    }

    /// The change as it leaves the case (notices, audit records): personal values masked.
    pub fn to_masked_proto(&self) -> Normalisation {
        Normalisation {
            path: self.path.clone(),
            from: self.personal.mask(&self.from),
            to: self.personal.mask(&self.to),
            rule: self.rule.clone(),
        }
    }
}

/// How a value is normalised.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Free text: trimmed only (full-width characters are legitimate in Chinese text).
    Text(Personal),
    /// A code: half-width and trimmed.
    Code,
    /// An identity number of the given type.
    Id(IdType),
    /// A mobile number.
    Mobile,
    /// A date, to `YYYY-MM-DD`.
    Date,
    /// A number: half-width, thousands separators removed.
    Number,
    /// A SHA-256 digest: half-width, trimmed, lower-case.
    Digest,
}

struct Normaliser {
    changes: Vec<Change>,
}

impl Normaliser {
    fn apply(&mut self, path: impl FnOnce() -> String, value: &mut String, kind: Kind) {
        let mut rules: Vec<&'static str> = Vec::new();
        let original = value.clone();
        let mut v: String = match kind {
            Kind::Text(_) => original.clone(),
            _ => {
                let half = to_half_width(&original);
                if let Cow::Owned(_) = half {
                    rules.push("full-width");
                }
                half.into_owned()
            }
        };
        let trimmed = v.trim();
        if trimmed.len() != v.len() {
            rules.push("trim");
            v = trimmed.to_string();
        }
        match kind {
            Kind::Id(id_type) => {
                if v.contains([' ', '-']) && v.len() > 15 {
                    v.retain(|c| c != ' ' && c != '-');
                    rules.push("spaces");
                }
                let upper = v.to_ascii_uppercase();
                if upper != v {
                    rules.push(
                        if matches!(id_type, IdType::ResidentId | IdType::TemporaryResidentId) {
                            "id-upper-x"
                        } else {
                            "upper-case"
                        },
                    );
                    v = upper;
                }
                if matches!(id_type, IdType::ResidentId | IdType::TemporaryResidentId)
                    && let Some(upgraded) = upgrade_resident_id_15(&v)
                {
                    rules.push("id-15-to-18");
                    v = upgraded;
                }
            }
            Kind::Mobile => {
                if let Some(m) = normalise_mobile(&v)
                    && m != v
                {
                    rules.push("mobile");
                    v = m;
                }
            }
            Kind::Date => {
                if let Some(d) = normalise_date(&v)
                    && d != v
                {
                    rules.push("date");
                    v = d;
                }
            }
            Kind::Number => {
                if v.contains([',', ' ', '，']) {
                    v.retain(|c| !matches!(c, ',' | ' ' | '，'));
                    rules.push("number");
                }
            }
            Kind::Digest => {
                let lower = v.to_ascii_lowercase();
                if lower != v {
                    rules.push("lower-case");
                    v = lower;
                }
            }
            Kind::Text(_) | Kind::Code => {}
        }
        if v != original {
            let personal = match kind {
                Kind::Text(p) => p,
                Kind::Id(IdType::Uscc) => Personal::No,
                Kind::Id(_) => Personal::IdNumber,
                Kind::Mobile => Personal::Mobile,
                _ => Personal::No,
            };
            self.changes.push(Change {
                path: path(),
                from: original,
                to: v.clone(),
                rule: rules.join("+"),
                personal,
            });
            *value = v;
        }
    }
}

/// Converts full-width ASCII variants (U+FF01–U+FF5E) and the ideographic space to half-width.
pub fn to_half_width(s: &str) -> Cow<'_, str> {
    let wide = |c: char| ('\u{FF01}'..='\u{FF5E}').contains(&c) || c == '\u{3000}';
    if !s.chars().any(wide) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c {
                '\u{3000}' => ' ',
                c if wide(c) => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                c => c,
            })
            .collect(),
    )
}

/// Strips spaces, dashes and a `+86` / `0086` / `86` prefix; `None` when the result is not 11 digits.
pub fn normalise_mobile(s: &str) -> Option<String> {
    let mut digits: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    if let Some(rest) = digits.strip_prefix('+') {
        digits = rest.to_string();
    }
    for prefix in ["0086", "86"] {
        if digits.len() == 11 + prefix.len() && digits.starts_with(prefix) {
            digits = digits[prefix.len()..].to_string();
        }
    }
    (digits.len() == 11 && digits.starts_with('1') && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// Reads `2019年10月8日`, `2019/10/8`, `2019-10-8`, `2019.10.8` and `20191008` as `2019-10-08`;
/// `None` when the text is no date.
pub fn normalise_date(s: &str) -> Option<String> {
    let s = s.trim();
    let (y, m, d) = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        (
            s[..4].parse().ok()?,
            s[4..6].parse().ok()?,
            s[6..].parse().ok()?,
        )
    } else {
        let s = s
            .strip_suffix('日')
            .or_else(|| s.strip_suffix('号'))
            .unwrap_or(s);
        let parts: Vec<&str> = s.split(['年', '月', '/', '-', '.']).collect();
        let [y, m, d] = parts.as_slice() else {
            return None;
        };
        (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    };
    let date = chrono::NaiveDate::from_ymd_opt(y, m, d)?;
    Some(date.format("%Y-%m-%d").to_string())
}

/// Normalises `submission` in place and returns every change made. `field_kind` says how an
/// item-specific field is typed (from the acceptance list); unknown fields are treated as text.
pub fn normalise(
    submission: &mut Submission,
    field_kind: impl Fn(&str) -> Option<FieldKind>,
) -> Vec<Change> {
    let mut n = Normaliser {
        changes: Vec::new(),
    };
    let s = submission;
    n.apply(|| "submissionId".into(), &mut s.submission_id, Kind::Code);
    n.apply(|| "hallCode".into(), &mut s.hall_code, Kind::Code);
    n.apply(|| "windowCode".into(), &mut s.window_code, Kind::Code);
    n.apply(|| "bundleCode".into(), &mut s.bundle_code, Kind::Code);
    if let Some(clerk) = &mut s.clerk {
        n.apply(|| "clerk.staffNo".into(), &mut clerk.staff_no, Kind::Code);
        n.apply(
            || "clerk.name".into(),
            &mut clerk.name,
            Kind::Text(Personal::Name),
        );
    }
    if let Some(a) = &mut s.applicant {
        applicant_fields(&mut n, a);
    }
    if let Some(p) = &mut s.agent {
        person_fields(&mut n, "agent", p);
    }
    for (i, p) in s.other_parties.iter_mut().enumerate() {
        n.apply(
            || format!("otherParties[{i}].role"),
            &mut p.role,
            Kind::Code,
        );
        n.apply(
            || format!("otherParties[{i}].name"),
            &mut p.name,
            Kind::Text(Personal::Name),
        );
        let id_type = p.id_type();
        n.apply(
            || format!("otherParties[{i}].idNumber"),
            &mut p.id_number,
            Kind::Id(id_type),
        );
        n.apply(
            || format!("otherParties[{i}].mobile"),
            &mut p.mobile,
            Kind::Mobile,
        );
    }
    for (i, item) in s.items.iter_mut().enumerate() {
        n.apply(
            || format!("items[{i}].itemCode"),
            &mut item.item_code,
            Kind::Code,
        );
    }
    for (i, m) in s.materials.iter_mut().enumerate() {
        n.apply(
            || format!("materials[{i}].materialCode"),
            &mut m.material_code,
            Kind::Code,
        );
        if let Some(f) = &mut m.file {
            n.apply(
                || format!("materials[{i}].file.uri"),
                &mut f.uri,
                Kind::Code,
            );
            n.apply(
                || format!("materials[{i}].file.sha256"),
                &mut f.sha256,
                Kind::Digest,
            );
            n.apply(
                || format!("materials[{i}].file.mediaType"),
                &mut f.media_type,
                Kind::Code,
            );
        }
    }
    for (name, value) in s.fields.iter_mut() {
        let kind = match field_kind(name) {
            Some(FieldKind::Date) => Kind::Date,
            Some(FieldKind::Integer | FieldKind::Decimal) => Kind::Number,
            Some(FieldKind::Code) => Kind::Code,
            Some(FieldKind::Text) | None => Kind::Text(Personal::No),
        };
        n.apply(|| format!("fields.{name}"), value, kind);
    }
    if let Some(d) = &mut s.delivery {
        n.apply(
            || "delivery.recipient".into(),
            &mut d.recipient,
            Kind::Text(Personal::Name),
        );
        n.apply(|| "delivery.mobile".into(), &mut d.mobile, Kind::Mobile);
        n.apply(
            || "delivery.address".into(),
            &mut d.address,
            Kind::Text(Personal::Address),
        );
    }
    n.changes
}

/// The applicant's own fields: a person's name is personal data, an organisation's is not.
fn applicant_fields(n: &mut Normaliser, a: &mut crate::proto::v1::Applicant) {
    let person = a.kind == crate::proto::v1::ApplicantKind::Person as i32;
    let name_kind = if person { Personal::Name } else { Personal::No };
    n.apply(
        || "applicant.name".into(),
        &mut a.name,
        Kind::Text(name_kind),
    );
    let id_type = a.id_type();
    n.apply(
        || "applicant.idNumber".into(),
        &mut a.id_number,
        Kind::Id(id_type),
    );
    if let Some(p) = &mut a.legal_representative {
        person_fields(n, "applicant.legalRepresentative", p);
    }
    if let Some(c) = &mut a.contact {
        n.apply(
            || "applicant.contact.name".into(),
            &mut c.name,
            Kind::Text(Personal::Name),
        );
        n.apply(
            || "applicant.contact.mobile".into(),
            &mut c.mobile,
            Kind::Mobile,
        );
        n.apply(
            || "applicant.contact.address".into(),
            &mut c.address,
            Kind::Text(Personal::Address),
        );
    }
}

fn person_fields(n: &mut Normaliser, base: &str, p: &mut crate::proto::v1::Person) {
    n.apply(
        || format!("{base}.name"),
        &mut p.name,
        Kind::Text(Personal::Name),
    );
    let id_type = p.id_type();
    n.apply(
        || format!("{base}.idNumber"),
        &mut p.id_number,
        Kind::Id(id_type),
    );
    n.apply(|| format!("{base}.mobile"), &mut p.mobile, Kind::Mobile);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates_in_window_formats() {
        for s in [
            "2019年10月8日",
            "2019/10/8",
            "20191008",
            "2019-10-08",
            "2019.10.8",
            "2019年10月08日",
        ] {
            assert_eq!(normalise_date(s).as_deref(), Some("2019-10-08"), "{s}");
        }
        assert_eq!(normalise_date("2019年2月30日"), None);
        assert_eq!(normalise_date("下周一"), None);
    }

    #[test]
    fn mobiles_with_spaces_and_country_code() {
        for s in [
            "139 0951 7788",
            "+86 139-0951-7788",
            "008613909517788",
            "8613909517788",
        ] {
            assert_eq!(normalise_mobile(s).as_deref(), Some("13909517788"), "{s}");
        }
        assert_eq!(normalise_mobile("0951-1234567"), None);
    }

    #[test]
    fn full_width_id_becomes_half_width_and_is_recorded() {
        let mut s = Submission {
            applicant: Some(crate::proto::v1::Applicant {
                kind: crate::proto::v1::ApplicantKind::Person as i32,
                id_type: IdType::ResidentId as i32,
                id_number: "６４０２０２１９７５０１０１１３７９".into(),
                name: " 刘建国".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let changes = normalise(&mut s, |_| None);
        let a = s.applicant.as_ref().unwrap();
        assert_eq!(a.id_number, "640202197501011379");
        assert_eq!(a.name, "刘建国");
        let id = changes
            .iter()
            .find(|c| c.path == "applicant.idNumber")
            .unwrap();
        assert_eq!(id.rule, "full-width");
        assert_eq!(id.to_masked_proto().to, "6402**********1379");
        assert!(
            changes
                .iter()
                .any(|c| c.path == "applicant.name" && c.rule == "trim")
        );
    }

    #[test]
    fn lower_x_and_fifteen_digits_are_upgraded() {
        let mut s = Submission {
            agent: Some(crate::proto::v1::Person {
                id_type: IdType::ResidentId as i32,
                id_number: "11010519491231002x".into(),
                ..Default::default()
            }),
            other_parties: vec![crate::proto::v1::Party {
                id_type: IdType::ResidentId as i32,
                id_number: "110105491231002".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let changes = normalise(&mut s, |_| None);
        assert_eq!(s.agent.unwrap().id_number, "11010519491231002X");
        assert_eq!(s.other_parties[0].id_number, "11010519491231002X");
        assert_eq!(
            changes.iter().map(|c| c.rule.as_str()).collect::<Vec<_>>(),
            ["id-upper-x", "id-15-to-18"]
        );
    }

    proptest! {
        #[test]
        fn half_width_is_idempotent_and_preserves_ascii(s in "\\PC{0,40}") {
            let once = to_half_width(&s).into_owned();
            prop_assert_eq!(to_half_width(&once).into_owned(), once.clone());
            let ascii: String = s.chars().filter(char::is_ascii).collect();
            let ascii_once: String = to_half_width(&ascii).into_owned();
            prop_assert_eq!(ascii_once, ascii);
        }

        #[test]
        fn full_width_digits_map_to_ascii_digits(digits in "[0-9]{1,20}") {
            let wide: String = digits.chars().map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap()).collect();
            prop_assert_eq!(to_half_width(&wide).into_owned(), digits);
        }

        #[test]
        fn any_valid_date_in_any_window_format_normalises(y in 1900i32..2100, m in 1u32..=12, d in 1u32..=28) {
            let iso = format!("{y:04}-{m:02}-{d:02}");
            for s in [format!("{y}年{m}月{d}日"), format!("{y}/{m}/{d}"), format!("{y:04}{m:02}{d:02}")] {
                prop_assert_eq!(normalise_date(&s), Some(iso.clone()));
            }
        }

        #[test]
        fn normalising_twice_changes_nothing_more(id in "[0-9]{17}[0-9xX]", mobile in "1[3-9][0-9]{9}") {
            let mut s = Submission {
                agent: Some(crate::proto::v1::Person {
                    id_type: IdType::ResidentId as i32,
                    id_number: format!(" {id}"),
                    mobile: format!("+86 {mobile}"),
                    ..Default::default()
                }),
                ..Default::default()
            };
            normalise(&mut s, |_| None);
            prop_assert!(normalise(&mut s, |_| None).is_empty());
        }
    }
}
