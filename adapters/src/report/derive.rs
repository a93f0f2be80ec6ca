//! The stage records a specification makes of a case: for each task, each fact, each rule on
//! that fact whose `when` holds, one record with its fields rendered, its table's sequence
//! number, and its place in the order of reporting. Deriving is pure and repeatable: the same
//! case always gives the same records, which is what makes them idempotent on (申办流水号,
//! table, sequence) and lets reconciliation derive them again from the gateway's own record.

use serde_json::{Map, Value, json};
use yichuang::proto::v1::{GetCaseResponse, NotAccepted};

use super::facts;
use super::spec::{ListField, Rule, Spec};

/// One stage record, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub case_number: String,
    /// 申办流水号.
    pub sblsh: String,
    /// The platform's table.
    pub table: String,
    /// Sequence number for the table and 申办流水号, from 1.
    pub seq: i64,
    /// When the gateway learnt the fact (ms), then the record's position among the task's
    /// records: the order they are reported in.
    pub learnt_ms: i64,
    pub position: i64,
    pub fields: Map<String, Value>,
}

impl Record {
    /// The body as sent: the fields, in order, as JSON.
    pub fn body(&self) -> String {
        Value::Object(self.fields.clone()).to_string()
    }
}

/// How the ledger names the records of a submission not accepted (it has no case number).
pub const NOTICE_PREFIX: &str = "submission:";

/// A submission id can be given a notice more than once (corrected, still deficient): each
/// notice is its own 申办, named by its position too.
pub fn notice_key(n: &NotAccepted) -> String {
    format!("{NOTICE_PREFIX}{}", notice_serial(n))
}

/// `<submission id>-<position in hex>`: the stem of a notice's 申办流水号.
fn notice_serial(n: &NotAccepted) -> String {
    format!("{}-{:x}", n.submission_id, n.id)
}

/// Every record of `case`; the error names the rule and template that failed.
pub fn records(spec: &Spec, case: &GetCaseResponse) -> Result<Vec<Record>, String> {
    let Some(c) = case.case.as_ref() else {
        return Ok(Vec::new());
    };
    let case_json = serde_json::to_value(c).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for task in &c.tasks {
        let task_json = serde_json::to_value(task).map_err(|e| e.to_string())?;
        let facts = facts::of_task(c, &case.events, task);
        of_facts(spec, &c.case_number, &case_json, task_json, facts, &mut out)?;
    }
    Ok(out)
}

/// The records of a submission the window did not accept: seen by templates as a case
/// (`case.submission`, `case.acceptedAt` = when the notice was given) with one task per item it
/// applied for (`task.taskId` = `<submission id>-<position, hex>-<nn>`, `itemCode`, `itemName`,
/// `implementationCode`, `department`), and the one fact `not_accepted`.
pub fn notice_records(spec: &Spec, n: &NotAccepted) -> Result<Vec<Record>, String> {
    let Some(fact) = facts::of_notice(n) else {
        return Ok(Vec::new());
    };
    let case_json = json!({
        "caseNumber": "",
        "submissionId": n.submission_id,
        "acceptedAt": fact.value["at"],
        "submission": serde_json::to_value(&n.submission).map_err(|e| e.to_string())?,
    });
    let mut out = Vec::new();
    for (i, item) in n.items.iter().enumerate() {
        let task_json = json!({
            "taskId": format!("{}-{:02}", notice_serial(n), i + 1),
            "itemCode": item.item_code,
            "itemName": item.item_name,
            "implementationCode": item.implementation_code,
            "department": item.department,
        });
        let key = notice_key(n);
        of_facts(
            spec,
            &key,
            &case_json,
            task_json,
            vec![fact.clone()],
            &mut out,
        )?;
    }
    Ok(out)
}

/// The records one task's facts make.
fn of_facts(
    spec: &Spec,
    case_number: &str,
    case_json: &Value,
    task_json: Value,
    facts: Vec<facts::Fact>,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let codes = serde_json::to_value(&spec.codes).map_err(|e| e.to_string())?;
    {
        let base = json!({ "case": case_json, "task": task_json, "codes": codes });
        let context = minijinja::Value::from_serialize(&base);
        let sblsh = spec.sblsh.render(&context)?;
        let mut counts: std::collections::BTreeMap<&str, i64> = Default::default();
        let mut position = 0;
        for fact in facts {
            let mut with_fact = base.clone();
            with_fact["fact"] = fact.value.clone();
            let context = minijinja::Value::from_serialize(&with_fact);
            for rule in spec.records.iter().filter(|r| r.on.contains(fact.kind)) {
                if let Some(when) = &rule.when
                    && !when.test(&context)?
                {
                    continue;
                }
                let seq = counts.entry(rule.table.as_str()).or_insert(0);
                *seq += 1;
                position += 1;
                let mut fields = Map::new();
                for (name, t) in spec.common.iter() {
                    fields.insert(name.clone(), Value::String(t.render(&context)?));
                }
                fields.insert(spec.sequence_field.clone(), json!(*seq));
                render_rule(rule, &context, &mut fields)
                    .map_err(|e| format!("{} ({}): {e}", rule.table, fact.kind))?;
                out.push(Record {
                    case_number: case_number.to_string(),
                    sblsh: sblsh.clone(),
                    table: rule.table.clone(),
                    seq: *seq,
                    learnt_ms: fact.learnt_ms,
                    position,
                    fields,
                });
            }
        }
    }
    Ok(())
}

fn render_rule(
    rule: &Rule,
    context: &minijinja::Value,
    fields: &mut Map<String, Value>,
) -> Result<(), String> {
    for (name, t) in rule.fields.iter() {
        let text = t.render(context)?;
        if text.is_empty() && rule.omit_empty.contains(name) {
            continue;
        }
        fields.insert(
            name.clone(),
            typed(&text, rule.integers.contains(name), name)?,
        );
    }
    for (name, list) in &rule.lists {
        fields.insert(name.clone(), Value::Array(render_list(list, context)?));
    }
    Ok(())
}

fn render_list(list: &ListField, context: &minijinja::Value) -> Result<Vec<Value>, String> {
    let items = list.each.eval(context)?;
    let mut out = Vec::new();
    if let Ok(iter) = items.try_iter() {
        for item in iter {
            let ctx = minijinja::context! { item => item, ..context.clone() };
            let mut obj = Map::new();
            for (name, t) in list.fields.iter() {
                let text = t.render(&ctx)?;
                obj.insert(
                    name.clone(),
                    typed(&text, list.integers.contains(name), name)?,
                );
            }
            out.push(Value::Object(obj));
        }
    }
    Ok(out)
}

fn typed(text: &str, integer: bool, name: &str) -> Result<Value, String> {
    if integer {
        text.trim()
            .parse::<i64>()
            .map(|n| json!(n))
            .map_err(|_| format!("{name}: {text:?} is not an integer"))
    } else {
        Ok(Value::String(text.to_string()))
    }
}
