//! 补正: what a supplement handed in at the window does to a case. The materials are checked
//! as at intake (known kind, form, copies, file reference); then each must answer something
//! the case waits for — materials a department asked for (its task is in
//! `SUPPLEMENT_REQUIRED`) or a 容缺 obligation. A task the supplement touches must get every
//! material its department asked for; it then resumes (READY again, its supplement round
//! counted up, so the relay hands the materials to the department). Every problem is reported
//! at once and nothing changes; the supplement id makes the call idempotent. Pure, like the
//! rest of intake: the store runs it inside the transaction that writes the case.
//!
//! Owns: a supplement's three phases (check what was handed in, match it to what the case waits
//! for, apply it) and its answer. It changes the case only in the apply phase, once nothing is
//! deficient, and it never touches the store or the bus itself: it returns the change for the
//! store to write, and the relay hands the resumed tasks to their departments.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};

use super::labels::forms_zh;
use super::materials::{Handed, in_accepted_form};
use super::{Intake, Validator};
use crate::event::EventKind;
use crate::lifecycle::CaseChange;
use crate::proto::v1::{
    Case, CaseEvent, Deficiency, DeficiencyCode as Code, SupplementRecord, SupplementRequest, Task,
    TaskStatus,
};

/// What a `Supplement` call comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum SupplementAnswer {
    /// Recorded: tasks resumed, obligations fulfilled.
    Recorded(SupplementRecord),
    /// The same supplement id with the same content was recorded before.
    Replayed(SupplementRecord),
    /// Every problem found; nothing changed.
    Deficient(Vec<Deficiency>),
    /// The supplement id was used before for other materials.
    Conflict(String),
}

/// What the check phase found.
struct Checked<'r> {
    /// The supplement id, trimmed.
    id: &'r str,
    /// Fingerprint of what matters in the request, recorded for replays.
    hash: String,
    /// What was handed in without a defect, by kind.
    handed: Handed<'r>,
}

/// What the match phase found: what the supplement answers.
struct Matched {
    /// Indexes into the case's tasks of the tasks that resume.
    targets: Vec<usize>,
    /// Indexes into the case's obligations of the obligations fulfilled.
    owed: Vec<usize>,
}

impl Intake {
    /// Applies the supplement `request` to `case` (whose last history entry is `last_seq`), at
    /// `now`. Returns the change for the store (none unless recorded) and the answer.
    /// In three phases: check what was handed in, match it to what the case waits for, apply it.
    pub fn supplement(
        &self,
        case: &mut Case,
        request: &SupplementRequest,
        last_seq: i64,
        now: DateTime<Utc>,
    ) -> (Option<CaseChange>, SupplementAnswer) {
        let mut v = Validator { d: Vec::new() };
        let checked = match self.check_supplement(case, request, &mut v) {
            ControlFlow::Continue(checked) => checked,
            ControlFlow::Break(answer) => return (None, answer),
        };
        let matched = self.match_supplement(case, request, &checked.handed, &mut v);
        if !v.d.is_empty() {
            return (None, SupplementAnswer::Deficient(v.d));
        }
        if matched.targets.is_empty() && matched.owed.is_empty() {
            // Only possible when every material was defective: reported above.
            return (None, SupplementAnswer::Deficient(v.d));
        }

        let (change, record) =
            self.apply_supplement(case, request, checked, &matched, last_seq, now);
        (Some(change), SupplementAnswer::Recorded(record))
    }

    /// Check: the supplement's fingerprint and id (a replay or a conflict answers at once), then
    /// what was handed in, checked as at intake. Deficiencies go to `v`.
    fn check_supplement<'r>(
        &self,
        case: &Case,
        request: &'r SupplementRequest,
        v: &mut Validator,
    ) -> ControlFlow<SupplementAnswer, Checked<'r>> {
        // The fingerprint of what matters: the id (trimmed), the case, the materials and the
        // tasks named (in any order); a retry from another clerk is the same supplement.
        let mut normalised = request.clone();
        normalised.supplement_id = normalised.supplement_id.trim().to_string();
        normalised.staff_no.clear();
        normalised.task_ids.sort();
        normalised.task_ids.dedup();
        let hash = hex(&Sha256::digest(normalised.encode_to_vec()));
        let id = request.supplement_id.trim();
        if let Some(earlier) = case.supplements.iter().find(|s| s.supplement_id == id) {
            let answer = if earlier.content_hash == hash {
                SupplementAnswer::Replayed(earlier.clone())
            } else {
                SupplementAnswer::Conflict(format!(
                    "supplement id {id:?} was used for other materials on case {}; use a new id",
                    case.case_number
                ))
            };
            return ControlFlow::Break(answer);
        }
        if id.is_empty() {
            v.push(
                Code::FieldMissing,
                "supplementId",
                "缺少补正编号（supplementId），窗口系统须为每次补正生成唯一编号。".into(),
                |_| {},
            );
        }
        if request.materials.is_empty() {
            v.push(
                Code::MaterialMissing,
                "materials",
                "未提交任何补正材料。".into(),
                |_| {},
            );
        }
        let (handed, _defective) = self.check_handed(&request.materials, "materials", v);
        ControlFlow::Continue(Checked { id, hash, handed })
    }

    /// Match: the tasks the supplement is for and the 容缺 obligations it fulfils; each must get
    /// what it waits for, and nothing may be handed in that nobody asked for. Deficiencies go to
    /// `v`.
    fn match_supplement(
        &self,
        case: &Case,
        request: &SupplementRequest,
        handed: &Handed<'_>,
        v: &mut Validator,
    ) -> Matched {
        let catalog = &*self.catalog;
        let targets = self.supplement_targets(case, request, handed, v);
        let (mut answered, vouched) = self.answer_targets(case, request, handed, &targets, v);

        // 容缺 obligations the materials fulfil.
        let owed: Vec<usize> = (0..case.obligations.len())
            .filter(|&o| {
                let ob = &case.obligations[o];
                !ob.fulfilled && handed.contains_key(ob.material_code.as_str())
            })
            .collect();
        for &o in &owed {
            let ob = &case.obligations[o];
            answered.insert(ob.material_code.as_str());
            let required = catalog.items.get(&ob.item_code).and_then(|it| {
                it.materials
                    .iter()
                    .find(|m| m.code.get_ref() == &ob.material_code)
            });
            let forms = &handed[ob.material_code.as_str()].0;
            if let Some(req) = required
                && !in_accepted_form(forms, &req.forms)
            {
                v.push(
                    Code::MaterialForm,
                    "materials",
                    format!(
                        "容缺材料「{}」须以{}形式提交。",
                        ob.material_name,
                        forms_zh(&req.forms)
                    ),
                    |d| {
                        d.material_code = ob.material_code.clone();
                        d.material_name = ob.material_name.clone();
                        d.item_code = ob.item_code.clone();
                    },
                );
            }
        }

        // Anything else was asked for by nobody.
        if !vouched {
            for (i, m) in request.materials.iter().enumerate() {
                if handed.contains_key(m.material_code.as_str())
                    && !answered.contains(m.material_code.as_str())
                {
                    v.push(
                        Code::NotRequested,
                        &format!("materials[{i}].materialCode"),
                        format!(
                            "材料「{}」不是部门要求补正的材料，也不是容缺待补的材料。",
                            catalog.material_name(&m.material_code)
                        ),
                        |d| d.material_code = m.material_code.clone(),
                    );
                }
            }
        }
        let open = case.tasks.iter().any(waiting) || case.obligations.iter().any(|o| !o.fulfilled);
        if !open {
            v.d.retain(|d| d.code != Code::NotRequested as i32);
            v.push(
                Code::NotRequested,
                "caseNumber",
                format!(
                    "办件 {} 没有待补正的材料，也没有容缺待补的材料。",
                    case.case_number
                ),
                |_| {},
            );
        }
        Matched { targets, owed }
    }

    /// The tasks the supplement is for: named by the window, or touched by a material their
    /// department asked for. A named task that does not wait for materials is reported.
    fn supplement_targets(
        &self,
        case: &Case,
        request: &SupplementRequest,
        handed: &Handed<'_>,
        v: &mut Validator,
    ) -> Vec<usize> {
        let mut targets: Vec<usize> = Vec::new();
        for (i, task_id) in request.task_ids.iter().enumerate() {
            match case.tasks.iter().position(|t| &t.task_id == task_id) {
                Some(p) if targets.contains(&p) => {}
                Some(p) if waiting(&case.tasks[p]) => targets.push(p),
                Some(p) => {
                    let t = &case.tasks[p];
                    let why = if t.status == TaskStatus::Refused as i32 {
                        "该事项被部门系统拒收，补正不能使其继续；请核对后重新申报"
                    } else {
                        "该事项的部门没有要求补正材料"
                    };
                    v.push(
                        Code::NotRequested,
                        &format!("taskIds[{i}]"),
                        format!("{}（{}）：{why}。", t.item_name, t.task_id),
                        |d| d.item_code = t.item_code.clone(),
                    );
                }
                None => v.push(
                    Code::NotRequested,
                    &format!("taskIds[{i}]"),
                    format!("本件没有事项 {task_id}。"),
                    |_| {},
                ),
            }
        }
        if request.task_ids.is_empty() {
            targets = (0..case.tasks.len())
                .filter(|&p| waiting(&case.tasks[p]))
                .filter(|&p| {
                    self.asked(&case.tasks[p])
                        .iter()
                        .any(|(_, code)| code.as_deref().is_some_and(|c| handed.contains_key(c)))
                })
                .collect();
        }
        targets
    }

    /// Each target gets everything its department asked for, in a form its item accepts.
    /// Returns the kinds handed in that answer a request, and whether the clerk vouches for
    /// what was handed in.
    fn answer_targets<'h>(
        &self,
        case: &Case,
        request: &SupplementRequest,
        handed: &Handed<'h>,
        targets: &[usize],
        v: &mut Validator,
    ) -> (BTreeSet<&'h str>, bool) {
        let mut answered: BTreeSet<&'h str> = BTreeSet::new();
        let mut vouched = false;
        for &p in targets {
            let t = &case.tasks[p];
            let item = self.catalog.items.get(&t.item_code);
            for (name, code) in self.asked(t) {
                let Some(code) = code else {
                    if request.task_ids.contains(&t.task_id) {
                        // Asked in the department's own words: the clerk named the task and
                        // vouches for what was handed in.
                        vouched = true;
                    } else {
                        v.push(
                            Code::MaterialMissing,
                            "taskIds",
                            format!(
                                "{} 要求补正「{name}」，该材料不在受理清单中：请核对后在 taskIds 中写明事项 {}（窗口确认所交材料）。",
                                t.department, t.task_id
                            ),
                            |d| {
                                d.material_name = name.clone();
                                d.item_code = t.item_code.clone();
                            },
                        );
                    }
                    continue;
                };
                match handed.get_key_value(code.as_str()) {
                    Some((&key, (forms, _))) => {
                        answered.insert(key);
                        let required = item
                            .and_then(|it| it.materials.iter().find(|m| m.code.get_ref() == &code));
                        if let Some(req) = required
                            && !in_accepted_form(forms, &req.forms)
                        {
                            v.push(
                                Code::MaterialForm,
                                "materials",
                                format!(
                                    "补正材料「{name}」须以{}形式提交（事项：{}）。",
                                    forms_zh(&req.forms),
                                    t.item_name
                                ),
                                |d| {
                                    d.material_code = code.clone();
                                    d.material_name = name.clone();
                                    d.item_code = t.item_code.clone();
                                },
                            );
                        }
                    }
                    None => v.push(
                        Code::MaterialMissing,
                        "materials",
                        format!(
                            "缺少补正材料「{name}」（事项：{}；{} 要求补正）。",
                            t.item_name, t.department
                        ),
                        |d| {
                            d.material_code = code.clone();
                            d.material_name = name.clone();
                            d.item_code = t.item_code.clone();
                        },
                    ),
                }
            }
        }
        (answered, vouched)
    }

    /// Apply: records the supplement on the case, each change with its history entry after
    /// `last_seq`. Runs only on a supplement without deficiencies.
    fn apply_supplement(
        &self,
        case: &mut Case,
        request: &SupplementRequest,
        checked: Checked<'_>,
        matched: &Matched,
        last_seq: i64,
        now: DateTime<Utc>,
    ) -> (CaseChange, SupplementRecord) {
        let catalog = &*self.catalog;
        let id = checked.id;
        // Recorded: the case keeps the materials (the latest of each kind), the targets
        // resume, the obligations are fulfilled.
        let at = pbjson_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        };
        let codes: Vec<String> = checked.handed.keys().map(|c| c.to_string()).collect();
        let names: Vec<&str> = codes.iter().map(|c| catalog.material_name(c)).collect();
        let mut events: Vec<CaseEvent> = Vec::new();
        let push = |events: &mut Vec<CaseEvent>, kind: EventKind, task_id: &str, detail: String| {
            kind.push(events, last_seq, at, task_id, detail)
        };
        let staff = request.staff_no.trim();
        push(
            &mut events,
            EventKind::SupplementReceived,
            "",
            format!(
                "supplement {id}: {}{}",
                names.join("、"),
                if staff.is_empty() {
                    String::new()
                } else {
                    format!(" (staff {staff})")
                }
            ),
        );
        if let Some(s) = case.submission.as_mut() {
            s.materials.retain(|m| !codes.contains(&m.material_code));
            s.materials.extend(
                request
                    .materials
                    .iter()
                    .filter(|m| codes.contains(&m.material_code))
                    .cloned(),
            );
        }
        let mut change = CaseChange::default();
        let mut resumed = Vec::new();
        for &p in &matched.targets {
            let t = &mut case.tasks[p];
            t.status = TaskStatus::Ready as i32;
            t.supplement_round += 1;
            t.step.clear();
            t.approval_stage_code.clear();
            t.reasons.clear();
            crate::lifecycle::close_pauses(t, Some(crate::lifecycle::SUPPLEMENT), at);
            change.tasks.push((t.task_id.clone(), TaskStatus::Ready));
            resumed.push(t.task_id.clone());
            let detail = format!(
                "{} ({}) resumes with the materials it asked for (supplement round {})",
                t.item_code, t.department, t.supplement_round
            );
            push(
                &mut events,
                EventKind::TaskResumed,
                &t.task_id.clone(),
                detail,
            );
        }
        let today = now.with_timezone(&self.offset).date_naive().to_string();
        let mut fulfilled = Vec::new();
        for &o in &matched.owed {
            let ob = &mut case.obligations[o];
            ob.fulfilled = true;
            ob.fulfilled_by = id.to_string();
            fulfilled.push(ob.material_code.clone());
            let late = if ob.due_date.as_str() < today.as_str() {
                format!(", late: it was due {}", ob.due_date)
            } else {
                String::new()
            };
            let detail = format!(
                "{} owed under 容缺 for {} brought{late}",
                ob.material_name, ob.item_code
            );
            push(&mut events, EventKind::ObligationFulfilled, "", detail);
        }
        let record = SupplementRecord {
            supplement_id: id.to_string(),
            at: Some(at),
            material_codes: codes,
            resumed_task_ids: resumed,
            fulfilled_obligations: fulfilled,
            staff_no: staff.to_string(),
            content_hash: checked.hash,
        };
        case.supplements.push(record.clone());
        crate::lifecycle::follow_tasks(case, &mut events, last_seq, at);
        change.events = events;
        (change, record)
    }

    /// What each waiting task's department asked for, as material kinds of the catalog;
    /// `None` for a request in words the catalog does not know.
    fn asked(&self, t: &Task) -> Vec<(String, Option<String>)> {
        let catalog = &*self.catalog;
        t.materials_requested
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    catalog.material_code_of(name).map(String::from),
                )
            })
            .collect()
    }
}

/// True for a task waiting for materials its department asked for.
fn waiting(t: &Task) -> bool {
    t.status == TaskStatus::SupplementRequired as i32
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::fixtures::intake;
    use crate::proto::v1::{Material, MaterialForm, Task};

    /// A case whose SP-JY task waits for `asked`.
    fn case(asked: &[&str]) -> Case {
        Case {
            case_number: "C".into(),
            tasks: vec![Task {
                task_id: "C-01".into(),
                item_code: "SP-JY".into(),
                item_name: "食品经营许可".into(),
                department: "scjg".into(),
                status: TaskStatus::SupplementRequired as i32,
                materials_requested: asked.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }],
            submission: Some(Default::default()),
            ..Default::default()
        }
    }

    fn paper(code: &str) -> Material {
        Material {
            material_code: code.into(),
            form: MaterialForm::Original as i32,
            copies: 1,
            file: None,
        }
    }

    fn request(materials: Vec<Material>, task_ids: &[&str]) -> SupplementRequest {
        SupplementRequest {
            case_number: "C".into(),
            supplement_id: " S-1 ".into(),
            materials,
            task_ids: task_ids.iter().map(|t| t.to_string()).collect(),
            staff_no: "0342".into(),
        }
    }

    #[test]
    fn a_task_named_twice_resumes_once() {
        let mut c = case(&["经营场所平面图及设备布局图"]);
        let (change, answer) = intake().supplement(
            &mut c,
            &request(vec![paper("PMT")], &["C-01", "C-01"]),
            0,
            Utc::now(),
        );
        let SupplementAnswer::Recorded(record) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(record.resumed_task_ids, ["C-01"]);
        assert_eq!(c.tasks[0].supplement_round, 1);
        assert_eq!(change.unwrap().tasks.len(), 1);
    }

    #[test]
    fn words_the_list_does_not_know_need_the_task_named() {
        let asked = ["经营场所平面图及设备布局图", "卫生许可证明"];
        // Not named: the clerk is told to name the task; nothing changes.
        let mut c = case(&asked);
        let (change, answer) =
            intake().supplement(&mut c, &request(vec![paper("PMT")], &[]), 0, Utc::now());
        assert!(change.is_none());
        let SupplementAnswer::Deficient(d) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "taskIds");
        assert!(d[0].message.contains("卫生许可证明"), "{}", d[0].message);
        assert_eq!(c.tasks[0].status, TaskStatus::SupplementRequired as i32);
        // Named: the clerk vouches, and the task resumes.
        let (_, answer) = intake().supplement(
            &mut c,
            &request(vec![paper("PMT"), paper("ZSZM")], &["C-01"]),
            0,
            Utc::now(),
        );
        assert!(
            matches!(answer, SupplementAnswer::Recorded(_)),
            "{answer:?}"
        );
    }

    #[test]
    fn a_retry_from_another_clerk_is_a_replay() {
        let mut c = case(&["经营场所平面图及设备布局图"]);
        let mut first = request(vec![paper("PMT")], &[]);
        intake().supplement(&mut c, &first, 0, Utc::now());
        first.staff_no = "0815".into();
        first.supplement_id = "S-1".into();
        let (change, answer) = intake().supplement(&mut c, &first, 3, Utc::now());
        assert!(change.is_none());
        assert!(
            matches!(answer, SupplementAnswer::Replayed(_)),
            "{answer:?}"
        );
        first.materials = vec![paper("ZSZM")];
        let (_, answer) = intake().supplement(&mut c, &first, 3, Utc::now());
        assert!(
            matches!(answer, SupplementAnswer::Conflict(_)),
            "{answer:?}"
        );
    }
}
