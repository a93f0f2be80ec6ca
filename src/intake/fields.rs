//! The item-specific form fields (表单项) of a submission, checked against the rules of the
//! items applied for: required, typed (text, integer, decimal, date, code), within range,
//! length or pattern, and known to at least one item.
//!
//! Owns: the field deficiencies. It never repairs a value (normalisation has already run, and
//! typed the values by the catalog's field kinds), never reads materials or parties, and never
//! stores or sends anything.

use std::collections::HashSet;

use chrono::NaiveDate;

use super::{Intake, Validator};
use crate::catalog::{FieldKind, FieldRule, Item};
use crate::proto::v1::{DeficiencyCode as Code, Submission};

impl Intake {
    /// Checks the item-specific form fields (表单项): each item's required ones present, every value
    /// valid for its rule (reported once per field), and no field that no submitted item knows.
    pub(super) fn check_fields(&self, s: &Submission, items: &[&Item], v: &mut Validator) {
        let mut known = HashSet::new();
        let mut reported = HashSet::new();
        for it in items {
            for rule in &it.fields {
                let name = rule.name.get_ref();
                known.insert(name.as_str());
                if reported.contains(name.as_str()) {
                    continue;
                }
                let path = format!("fields.{name}");
                let value = s
                    .fields
                    .get(name)
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty());
                let problem = match value {
                    None if rule.required => Some((
                        Code::FieldMissing,
                        format!("缺少「{}」（事项：{}）。", rule.label, it.name),
                    )),
                    None => None,
                    Some(value) => field_problem(rule, value).map(|why| {
                        (
                            Code::FieldInvalid,
                            format!("「{}」{why}（事项：{}）。", rule.label, it.name),
                        )
                    }),
                };
                if let Some((code, message)) = problem {
                    reported.insert(name.as_str());
                    v.push(code, &path, message, |d| {
                        d.item_code = it.code.get_ref().clone();
                        d.legal_basis = rule.legal_basis.clone();
                    });
                }
            }
        }
        for name in s.fields.keys() {
            if !known.contains(name.as_str()) {
                v.push(
                    Code::FieldUnknown,
                    &format!("fields.{name}"),
                    format!("表单项「{name}」不属于所申请的任何事项，请删除或核对名称。"),
                    |_| {},
                );
            }
        }
    }
}

/// What is wrong with a field's value under its rule, in words for the clerk; `None`: valid.
fn field_problem(rule: &FieldRule, value: &str) -> Option<String> {
    let range = |n: f64| -> Option<String> {
        if rule.min.is_some_and(|min| n < min) || rule.max.is_some_and(|max| n > max) {
            Some(format!(
                "应在 {} 至 {} 之间",
                rule.min.map_or("-∞".into(), |m| m.to_string()),
                rule.max.map_or("+∞".into(), |m| m.to_string())
            ))
        } else {
            None
        }
    };
    match rule.kind {
        FieldKind::Text => rule
            .max_chars
            .filter(|&m| value.chars().count() > m)
            .map(|m| format!("超过 {m} 个字")),
        FieldKind::Integer => match value.parse::<i64>() {
            Ok(n) => range(n as f64),
            Err(_) => Some(format!("应为整数，填写的是「{value}」")),
        },
        FieldKind::Decimal => match value.parse::<f64>() {
            Ok(n)
                if n.is_finite()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') =>
            {
                range(n)
            }
            _ => Some(format!("应为数字，填写的是「{value}」")),
        },
        FieldKind::Date => {
            let ok = value.len() == 10 && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok();
            (!ok).then(|| format!("应为日期（如 2019年10月8日），填写的是「{value}」"))
        }
        FieldKind::Code => rule
            .pattern
            .as_ref()
            .filter(|p| !p.matches(value))
            .map(|p| {
                format!(
                    "应为 {} 位（字符 {}），填写的是「{value}」",
                    p.length, p.chars
                )
            }),
    }
}
