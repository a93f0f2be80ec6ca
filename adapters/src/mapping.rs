//! Declarative field mapping, edited by integration teams without recompiling: `mapping.request`
//! turns the canonical task into the legacy system's fields with templates, `mapping.result`
//! reads the legacy system's answers back into steps, decisions and documents (a description's
//! `outcome` does the latter for `kind: http`).
//!
//! A template is a MiniJinja template (`crate::expr`) over the task message in its JSON form:
//! `{{ caseNumber }}`, `{{ task.taskId }}`, `{{ submission.applicant.name }}`,
//! `{{ submission.fields.seats }}`, `{{ acceptedAt | date_cn }}` (2019年06月20日),
//! `{{ acceptedAt | datetime }}` (2019-06-20 10:30:00). A field the task lacks is an error naming
//! the template, unless written optional: `{{ submission.applicant.contact.mobile | default('') }}`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use yichuang::proto::v1::{ResultDocument, TaskMessage};

use crate::system::Answer;

/// Reads a date the way legacy systems and our own messages write it: RFC 3339,
/// `2019-06-20`, `20190620`, `2019年06月20日` / `2019年6月20日`, `2019/06/20`, with or without a time.
pub fn parse_date(value: &str) -> Option<chrono::NaiveDate> {
    let v = value.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        // Our timestamps are UTC; the hall's date is UTC+8.
        return Some((t.with_timezone(&chrono::Utc) + chrono::Duration::hours(8)).date_naive());
    }
    let date_part = v.split([' ', 'T']).next().unwrap_or(v);
    for format in ["%Y-%m-%d", "%Y%m%d", "%Y年%m月%d日", "%Y/%m/%d"] {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(date_part, format) {
            return Some(d);
        }
    }
    None
}

/// A `mapping.request` template, compiled when the department file is read.
#[derive(Debug, Clone)]
pub struct Template(std::sync::Arc<crate::expr::Template>);

impl Template {
    /// Compiles `source`; the error says what is wrong. The placeholders of earlier versions
    /// (`{task.taskId}`) are refused with the way to write them now.
    pub fn parse(source: &str) -> Result<Template, String> {
        if !source.contains("{{") && !source.contains("{%") && source.contains('{') {
            return Err("it uses the old placeholders: templates are MiniJinja now, write `{{ task.taskId }}` for `{task.taskId}`, `{{ x | default('') }}` for an optional `{x?}`, `{{ acceptedAt | date_cn }}` for `{acceptedAt|date_cn}`".into());
        }
        crate::expr::Template::compile(source).map(|t| Template(std::sync::Arc::new(t)))
    }

    /// Renders the template over a task message in its JSON form.
    pub fn render(&self, task: &Value) -> Result<String, String> {
        self.0.render(&minijinja::Value::from_serialize(task))
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(|e| serde::de::Error::custom(format!("template {s:?}: {e}")))
    }
}

/// The task message as templates see it.
pub fn task_json(task: &TaskMessage) -> Value {
    serde_json::to_value(task).unwrap_or(Value::Null)
}

/// How to read a legacy answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultMapping {
    /// Field carrying the department's own case number.
    #[serde(default)]
    pub case_number: Option<String>,
    /// Field carrying the status.
    #[serde(default)]
    pub status: Option<String>,
    /// Status values that mean approved, rejected, supplement required.
    #[serde(default)]
    pub approved: Vec<String>,
    #[serde(default)]
    pub rejected: Vec<String>,
    #[serde(default)]
    pub supplement: Vec<String>,
    /// Field naming the current step (承办, 审核, 批准…).
    #[serde(default)]
    pub step: Option<String>,
    /// Field with the department's reasons (rejection) or opinion.
    #[serde(default)]
    pub reasons: Option<String>,
    /// Field listing the materials asked for, separated by `,`, `，`, `、` or `;`.
    #[serde(default)]
    pub materials: Option<String>,
    /// Fields of the issued document, and the material kind it serves as for later items.
    #[serde(default)]
    pub document_name: Option<String>,
    #[serde(default)]
    pub document_number: Option<String>,
    #[serde(default)]
    pub document_material_code: Option<String>,
    /// Field with the date the department decided, in any form [`parse_date`] reads
    /// (`2019年06月20日`, `20190620`…); the outcome's `at` is taken from it.
    #[serde(default)]
    pub decided_on: Option<String>,
}

/// What an answer says, read through the mapping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    pub department_case_number: Option<String>,
    pub step: Option<String>,
    pub decision: Option<Decision>,
    /// The department's decision date, when the mapping names it and it reads as a date.
    pub decided_on: Option<chrono::NaiveDate>,
}

/// A department's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Approved(Vec<ResultDocument>),
    Rejected(Vec<String>),
    Supplement(Vec<String>),
}

impl ResultMapping {
    /// Reads an answer.
    pub fn read(&self, answer: &Answer) -> Reading {
        let get = |field: &Option<String>| {
            field
                .as_ref()
                .and_then(|f| answer.get(f))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let list = |field: &Option<String>| -> Vec<String> {
            get(field)
                .map(|v| {
                    v.split([',', '，', '、', ';', '；'])
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let status = get(&self.status);
        let is = |values: &[String]| status.as_ref().is_some_and(|s| values.contains(s));
        let decision = if is(&self.approved) {
            let document = ResultDocument {
                material_code: self.document_material_code.clone().unwrap_or_default(),
                name: get(&self.document_name).unwrap_or_default(),
                number: get(&self.document_number).unwrap_or_default(),
                file: None,
            };
            Some(Decision::Approved(
                if document.name.is_empty() && document.number.is_empty() {
                    Vec::new()
                } else {
                    vec![document]
                },
            ))
        } else if is(&self.rejected) {
            Some(Decision::Rejected(list(&self.reasons)))
        } else if is(&self.supplement) {
            Some(Decision::Supplement(list(&self.materials)))
        } else {
            None
        };
        Reading {
            department_case_number: get(&self.case_number),
            step: get(&self.step),
            decided_on: get(&self.decided_on).and_then(|v| parse_date(&v)),
            decision,
        }
    }
}

/// Renders every request template over a task.
pub fn render_all(
    request: &BTreeMap<String, Template>,
    task: &TaskMessage,
) -> Result<BTreeMap<String, String>, String> {
    let json = task_json(task);
    request
        .iter()
        .map(|(field, t)| Ok((field.clone(), t.render(&json)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "caseNumber": "11640100010133018540011A00001201910210001",
            "acceptedAt": "2019-10-21T02:30:00Z",
            "task": {"taskId": "T-01"},
            "submission": {"applicant": {"name": "马强"}, "fields": {"seats": "40"}}
        })
    }

    #[test]
    fn templates_render_fields_and_filters_of_the_task() {
        let t = Template::parse("{{ task.taskId }} {{ submission.applicant.name }} {{ acceptedAt | date_cn }} {{ acceptedAt | date_compact }} {{ submission.fields.seats }}").unwrap();
        assert_eq!(
            t.render(&sample()).unwrap(),
            "T-01 马强 2019年10月21日 20191021 40"
        );
    }

    #[test]
    fn a_missing_field_is_an_error_unless_optional() {
        let t = Template::parse("{{ submission.fields.area }}").unwrap();
        let e = t.render(&sample()).unwrap_err();
        assert!(
            e.contains("submission.fields.area") && e.contains("undefined"),
            "{e}"
        );
        let t = Template::parse("[{{ submission.fields.area | default('') }}]").unwrap();
        assert_eq!(t.render(&sample()).unwrap(), "[]");
        // The default is reached through a missing parent too.
        let t =
            Template::parse("[{{ submission.applicant.legalRepresentative.name | default('') }}]")
                .unwrap();
        assert_eq!(t.render(&sample()).unwrap(), "[]");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(
            Template::parse("{{ a.b")
                .unwrap_err()
                .contains("syntax error")
        );
        assert!(
            Template::parse("{{ a | date_us }}")
                .unwrap_err()
                .contains("unknown filter `date_us`")
        );
        let old = Template::parse("{task.taskId}").unwrap_err();
        assert!(
            old.contains("old placeholders") && old.contains("{{ task.taskId }}"),
            "{old}"
        );
    }

    #[test]
    fn legacy_dates_are_read_in_every_usual_form() {
        let d = chrono::NaiveDate::from_ymd_opt(2019, 6, 20).unwrap();
        for v in [
            "2019年06月20日",
            "2019年6月20日",
            "20190620",
            "2019-06-20 10:00:00",
            "2019/06/20",
        ] {
            assert_eq!(parse_date(v), Some(d), "{v}");
        }
    }

    #[test]
    fn an_answer_is_read_into_a_decision() {
        let mapping = ResultMapping {
            case_number: Some("slbh".into()),
            status: Some("zt".into()),
            approved: vec!["办结".into()],
            rejected: vec!["不予许可".into()],
            supplement: vec!["补正".into()],
            materials: Some("bzcl".into()),
            document_number: Some("zzbh".into()),
            document_name: Some("zzmc".into()),
            document_material_code: Some("YYZZ".into()),
            ..Default::default()
        };
        let answer: Answer = [
            ("slbh", "S1"),
            ("zt", "补正"),
            ("bzcl", "租赁合同、 平面图"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            mapping.read(&answer),
            Reading {
                department_case_number: Some("S1".into()),
                step: None,
                decision: Some(Decision::Supplement(vec![
                    "租赁合同".into(),
                    "平面图".into()
                ])),
                decided_on: None,
            }
        );
        let answer: Answer = [("zt", "办结"), ("zzbh", "JY1"), ("zzmc", "营业执照")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let Some(Decision::Approved(docs)) = mapping.read(&answer).decision else {
            panic!("approved")
        };
        assert_eq!(docs[0].number, "JY1");
        assert_eq!(docs[0].material_code, "YYZZ");
    }

    #[test]
    fn the_decision_date_is_read_in_legacy_forms() {
        let mapping = ResultMapping {
            decided_on: Some("bjrq".into()),
            ..Default::default()
        };
        let d = chrono::NaiveDate::from_ymd_opt(2019, 6, 20);
        for v in ["2019年06月20日", "20190620", "2019年6月20日"] {
            let answer: Answer = [("bjrq".to_string(), v.to_string())].into_iter().collect();
            assert_eq!(mapping.read(&answer).decided_on, d, "{v}");
        }
        let answer: Answer = [("bjrq".to_string(), "六月二十日".to_string())]
            .into_iter()
            .collect();
        assert_eq!(mapping.read(&answer).decided_on, None);
    }
}
