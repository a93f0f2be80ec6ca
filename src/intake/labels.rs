//! The Chinese words intake's deficiency messages use for catalog terms: material forms,
//! applicant kinds, acceptance modes, and who a path of the submission names. A clerk reads
//! these to the applicant, so they follow the wording of the acceptance list.
//!
//! Owns: words only. It never decides anything (no rule lives here: a label changes what the
//! clerk reads, never what is accepted), and it never reads the catalog, the calendar or a
//! store.

use crate::catalog::{ApplicantKind as CatKind, Form, Mode};

/// The forms a material may take, joined by 或 (`原件或复印件`).
pub(super) fn forms_zh(forms: &[Form]) -> String {
    forms
        .iter()
        .map(|f| match f {
            Form::Original => "原件",
            Form::Copy => "复印件",
            Form::Electronic => "电子件",
        })
        .collect::<Vec<_>>()
        .join("或")
}

/// An applicant kind as the acceptance list names it.
pub(super) fn kind_zh(k: CatKind) -> &'static str {
    match k {
        CatKind::Person => "个人",
        CatKind::Organization => "企业/法人",
        CatKind::Other => "其他组织",
    }
}

/// The applicant kinds an item accepts, joined by 或.
pub(super) fn kinds_zh(kinds: &[CatKind]) -> String {
    kinds
        .iter()
        .map(|k| kind_zh(*k))
        .collect::<Vec<_>>()
        .join("或")
}

/// An acceptance mode as the acceptance list names it.
pub(super) fn mode_zh(m: Mode) -> &'static str {
    match m {
        Mode::Standard => "一般受理",
        Mode::Commitment => "告知承诺制",
        Mode::Tolerant => "容缺受理",
    }
}

/// Who a path names, in words a clerk reads to the applicant.
pub(super) fn who(path: &str, role: Option<&str>) -> String {
    match path {
        "applicant" => "申请人".into(),
        "applicant.legalRepresentative" => "法定代表人".into(),
        "agent" => "代理人".into(),
        _ => match role {
            Some("seller") => "卖方".into(),
            Some("buyer") => "买方".into(),
            Some(r) if !r.is_empty() => format!("关系人（{r}）"),
            _ => "关系人".into(),
        },
    }
}
