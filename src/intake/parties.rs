//! The people a submission names and how to reach them: the applicant (and an organisation's
//! legal representative), the agent, the other parties an item requires (a seller, a buyer),
//! the contact and delivery details a result needs. Each identity number is checked with the
//! algorithms of [`super::ids`] and reported masked: a deficiency message reaches logs and
//! audit records, so it never repeats an ID or mobile number in full.
//!
//! Owns: the deficiencies about who applies and for whom. It never checks the check digits
//! itself (that is [`super::ids`]), never repairs a value (that is [`super::normalise`]), and
//! never stores or sends anything.

use std::collections::HashSet;

use super::Validator;
use super::labels::{kind_zh, kinds_zh, who};
use crate::catalog::{ApplicantKind as CatKind, Item};
use crate::ids::{
    CreditCodeError, ResidentIdError, check_credit_code, check_resident_id, is_mobile,
};
use crate::privacy::{mask_id, mask_mobile};
use crate::proto::v1::{ApplicantKind, DeficiencyCode as Code, DeliveryMethod, IdType, Submission};

/// Checks the applicant (an organisation's legal representative too) and the contact's mobile;
/// returns the applicant's kind when it is known.
pub(super) fn check_applicant(s: &Submission, v: &mut Validator) -> Option<CatKind> {
    let Some(a) = &s.applicant else {
        v.push(
            Code::ApplicantIncomplete,
            "applicant",
            "缺少申请人信息。".into(),
            |_| {},
        );
        return None;
    };
    let kind = match ApplicantKind::try_from(a.kind).unwrap_or(ApplicantKind::Unspecified) {
        ApplicantKind::Person => CatKind::Person,
        ApplicantKind::Organization => CatKind::Organization,
        ApplicantKind::Other => CatKind::Other,
        ApplicantKind::Unspecified => {
            v.push(
                Code::ApplicantIncomplete,
                "applicant.kind",
                "未注明申请人类型（个人或法人）。".into(),
                |_| {},
            );
            return None;
        }
    };
    if a.name.is_empty() {
        v.push(
            Code::ApplicantIncomplete,
            "applicant.name",
            "缺少申请人名称。".into(),
            |_| {},
        );
    }
    let organization = kind != CatKind::Person;
    check_identity(
        v,
        "applicant",
        "申请人",
        a.id_type,
        &a.id_number,
        organization,
    );
    if kind == CatKind::Organization {
        match &a.legal_representative {
            None => v.push(
                Code::ApplicantIncomplete,
                "applicant.legalRepresentative",
                "缺少法定代表人信息。".into(),
                |_| {},
            ),
            Some(p) => {
                if p.name.is_empty() {
                    v.push(
                        Code::ApplicantIncomplete,
                        "applicant.legalRepresentative.name",
                        "缺少法定代表人姓名。".into(),
                        |_| {},
                    );
                }
                check_identity(
                    v,
                    "applicant.legalRepresentative",
                    "法定代表人",
                    p.id_type,
                    &p.id_number,
                    false,
                );
                check_mobile(
                    v,
                    "applicant.legalRepresentative.mobile",
                    "法定代表人",
                    &p.mobile,
                    false,
                );
            }
        }
    }
    let mobile = a.contact.as_ref().map_or("", |c| c.mobile.as_str());
    check_mobile(v, "applicant.contact.mobile", "联系人", mobile, true);
    Some(kind)
}

/// Checks the applicant's kind against each item (the items in bundle order, `depends` their
/// submitted prerequisites).
pub(super) fn check_applicant_kind(
    kind: CatKind,
    items: &[&Item],
    depends: &[Vec<usize>],
    v: &mut Validator,
) {
    // Applicant kind per item: an organisation-only item accepts the person founding the
    // organisation when an earlier item of the bundle establishes it.
    for (i, it) in items.iter().enumerate() {
        let founded = depends[i]
            .iter()
            .any(|&p| items[p].establishes_organization);
        let allowed = it.applicant_kinds.contains(&kind)
            || (founded
                && kind == CatKind::Person
                && it.applicant_kinds.contains(&CatKind::Organization));
        if !allowed {
            v.push(
                Code::ApplicantKind,
                "applicant.kind",
                format!(
                    "事项「{}」的申请人须为{}，本次申请人为{}。",
                    it.name,
                    kinds_zh(&it.applicant_kinds),
                    kind_zh(kind)
                ),
                |d| d.item_code = it.code.get_ref().clone(),
            );
        }
    }
}

/// Checks the agent and every other party.
pub(super) fn check_parties(s: &Submission, v: &mut Validator) {
    if let Some(agent) = &s.agent {
        if agent.name.is_empty() {
            v.push(
                Code::ApplicantIncomplete,
                "agent.name",
                "缺少代理人姓名。".into(),
                |_| {},
            );
        }
        check_identity(
            v,
            "agent",
            &who("agent", None),
            agent.id_type,
            &agent.id_number,
            false,
        );
        check_mobile(v, "agent.mobile", "代理人", &agent.mobile, false);
    }
    for (i, p) in s.other_parties.iter().enumerate() {
        let base = format!("otherParties[{i}]");
        let label = who(&base, Some(&p.role));
        if p.role.is_empty() {
            v.push(
                Code::ApplicantIncomplete,
                &format!("{base}.role"),
                "未注明关系人的身份（如 seller）。".into(),
                |_| {},
            );
        }
        if p.name.is_empty() {
            v.push(
                Code::ApplicantIncomplete,
                &format!("{base}.name"),
                format!("缺少{label}的姓名或名称。"),
                |_| {},
            );
        }
        let organization = p.id_type == IdType::Uscc as i32;
        check_identity(v, &base, &label, p.id_type, &p.id_number, organization);
        check_mobile(v, &format!("{base}.mobile"), &label, &p.mobile, false);
    }
}

/// Reports each party role an item requires and no other party has, once per role.
pub(super) fn required_parties(s: &Submission, items: &[&Item], v: &mut Validator) {
    let mut reported = HashSet::new();
    for it in items {
        for role in &it.required_parties {
            if !s.other_parties.iter().any(|p| &p.role == role) && reported.insert(role.as_str()) {
                v.push(
                    Code::PartyMissing,
                    "otherParties",
                    format!("事项「{}」须填写{}的信息。", it.name, who("", Some(role))),
                    |d| d.item_code = it.code.get_ref().clone(),
                );
            }
        }
    }
}

/// Checks how the result reaches the applicant: pickup, or mail with a recipient, an address
/// and a mobile.
pub(super) fn check_delivery(s: &Submission, v: &mut Validator) {
    let Some(d) = &s.delivery else {
        v.push(
            Code::Delivery,
            "delivery",
            "未选择取件方式（窗口自取或邮寄）。".into(),
            |_| {},
        );
        return;
    };
    match DeliveryMethod::try_from(d.method).unwrap_or(DeliveryMethod::Unspecified) {
        DeliveryMethod::Unspecified => v.push(
            Code::Delivery,
            "delivery.method",
            "未选择取件方式（窗口自取或邮寄）。".into(),
            |_| {},
        ),
        DeliveryMethod::Pickup => {}
        DeliveryMethod::Mail => {
            if d.recipient.is_empty() {
                v.push(
                    Code::Delivery,
                    "delivery.recipient",
                    "邮寄送达须填写收件人。".into(),
                    |_| {},
                );
            }
            if d.address.is_empty() {
                v.push(
                    Code::Delivery,
                    "delivery.address",
                    "邮寄送达须填写收件地址。".into(),
                    |_| {},
                );
            }
            check_mobile(v, "delivery.mobile", "收件人", &d.mobile, true);
        }
    }
}

/// Checks an ID type and number at `<base>.idType` / `<base>.idNumber`; `organization`: the
/// holder must carry a unified social credit code, otherwise must not.
fn check_identity(
    v: &mut Validator,
    base: &str,
    label: &str,
    id_type: i32,
    number: &str,
    organization: bool,
) {
    let path = format!("{base}.idNumber");
    let t = IdType::try_from(id_type).unwrap_or(IdType::Unspecified);
    if number.is_empty() {
        v.push(
            Code::ApplicantIncomplete,
            &path,
            format!("缺少{label}的证件号码。"),
            |_| {},
        );
        return;
    }
    match t {
        IdType::Unspecified => v.push(
            Code::IdType,
            &format!("{base}.idType"),
            format!("未注明{label}的证件类型。"),
            |_| {},
        ),
        IdType::Uscc if !organization => v.push(
            Code::IdType,
            &format!("{base}.idType"),
            format!("{label}为自然人，证件类型不能是统一社会信用代码。"),
            |_| {},
        ),
        t if organization && t != IdType::Uscc => v.push(
            Code::IdType,
            &format!("{base}.idType"),
            format!("{label}为组织，证件类型应为统一社会信用代码。"),
            |_| {},
        ),
        IdType::ResidentId | IdType::TemporaryResidentId => match check_resident_id(number) {
            Ok(()) => {}
            Err(e) => {
                let (code, what) = match e {
                    ResidentIdError::Format => (Code::IdNumberFormat, "格式不正确（应为 18 位）"),
                    ResidentIdError::Date => (Code::IdNumberDate, "中的出生日期不存在"),
                    ResidentIdError::CheckDigit { .. } => {
                        (Code::IdNumberCheckDigit, "校验位不正确")
                    }
                };
                v.push(
                    code,
                    &path,
                    format!(
                        "{label}的居民身份证号码 {} {what}，请核对证件。",
                        mask_id(number)
                    ),
                    |_| {},
                );
            }
        },
        IdType::Uscc => match check_credit_code(number) {
            Ok(()) => {}
            Err(CreditCodeError::Format) => v.push(
                Code::CreditCodeFormat,
                &path,
                format!(
                    "{label}的统一社会信用代码 {} 格式不正确（应为 18 位，不含 I、O、S、V、Z）。",
                    mask_id(number)
                ),
                |_| {},
            ),
            Err(CreditCodeError::Check { .. }) => v.push(
                Code::CreditCodeCheck,
                &path,
                format!(
                    "{label}的统一社会信用代码 {} 校验码不正确，请核对营业执照。",
                    mask_id(number)
                ),
                |_| {},
            ),
        },
        _ => {}
    }
}

/// Checks a mobile number; `required`: an empty one is a deficiency too.
fn check_mobile(v: &mut Validator, path: &str, label: &str, mobile: &str, required: bool) {
    if mobile.is_empty() {
        if required {
            v.push(
                Code::Mobile,
                path,
                format!("缺少{label}的手机号码，办理结果需通知申请人。"),
                |_| {},
            );
        }
    } else if !is_mobile(mobile) {
        v.push(
            Code::Mobile,
            path,
            format!(
                "{label}的手机号码 {} 不是有效的 11 位手机号。",
                mask_mobile(mobile)
            ),
            |_| {},
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::intake::Outcome;
    use crate::intake::fixtures::{example, intake, now};
    use crate::proto::v1::DeficiencyCode as Code;

    #[test]
    fn a_credit_code_error_is_masked_in_the_message() {
        let mut s = example("kai-canguan");
        s.applicant.as_mut().unwrap().id_number = "91640104MA76L8Q23J".into();
        let Outcome::Deficient { deficiencies, .. } = intake().evaluate(s, now()).unwrap() else {
            panic!()
        };
        assert_eq!(deficiencies[0].code, Code::CreditCodeCheck as i32);
        assert!(
            deficiencies[0].message.contains("9164**********Q23J"),
            "{}",
            deficiencies[0].message
        );
    }
}
