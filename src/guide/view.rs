//! The guide's markup (maud): the index of items, one item's page, the page of an unknown item,
//! and the stylesheet. Plain Chinese for the public; every word of the acceptance list comes
//! from the catalog as it is loaded. No script.

use maud::{DOCTYPE, Markup, html};

use crate::catalog::{ApplicantKind, Catalog, Form, Item, Mode};

/// The guide's stylesheet (`/guide/guide.css`), print-friendly.
pub const CSS: &str = "\
body{font-family:\"Noto Sans CJK SC\",\"Microsoft YaHei\",sans-serif;max-width:56rem;margin:1.5rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.6}\
h1{font-size:1.6rem;border-bottom:3px solid #b71c1c;padding-bottom:.4rem}\
h2{font-size:1.15rem;margin-top:1.6rem;color:#b71c1c}\
table{border-collapse:collapse;width:100%}th,td{border:1px solid #999;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.meta{color:#555}.qr{float:right;text-align:center;margin:0 0 1rem 1rem}\
.qr img{width:232px;height:232px}.qr p{font-size:.8rem;word-break:break-all;max-width:232px}\
@media print{a{color:inherit;text-decoration:none}.qr{float:none}}";

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - 办事指南" }
                link rel="stylesheet" href="/guide/guide.css";
            }
            body { (body) }
        }
    }
}

/// Every item of the acceptance list, by department, and the 一件事 bundles.
pub fn index(catalog: &Catalog) -> Markup {
    page(
        "事项目录",
        html! {
            h1 { "办事指南 · 事项目录" }
            p.meta { "以下事项均可在综合窗口一窗受理。点击事项名称查看申请条件、所需材料、办理时限和收费标准。" }
            @for dept in catalog.departments.values() {
                @let items: Vec<&Item> = catalog.items.values()
                    .filter(|i| i.department.get_ref() == dept.code.get_ref()).collect();
                @if !items.is_empty() {
                    h2 { (dept.name) }
                    ul {
                        @for item in items {
                            li { a href=(super::path_of(item.code.get_ref())) { (item.name) } " （" (item.code.get_ref()) "）" }
                        }
                    }
                }
            }
            @if !catalog.bundles.is_empty() {
                h2 { "一件事（多个事项一次办）" }
                ul {
                    @for bundle in catalog.bundles.values() {
                        li {
                            (bundle.name) "："
                            @for (i, code) in bundle.items.iter().enumerate() {
                                @if i > 0 { "、" }
                                @let name = catalog.items.get(code.get_ref()).map_or(code.get_ref().as_str(), |it| it.name.as_str());
                                a href=(super::path_of(code.get_ref())) { (name) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn applicant(kind: ApplicantKind) -> &'static str {
    match kind {
        ApplicantKind::Person => "自然人",
        ApplicantKind::Organization => "法人",
        ApplicantKind::Other => "非法人组织",
    }
}

fn mode(m: Mode) -> (&'static str, &'static str) {
    match m {
        Mode::Standard => ("一般受理", "申请材料齐全、符合法定形式的，当场受理。"),
        Mode::Commitment => (
            "告知承诺",
            "申请人书面承诺符合条件的，可先行办理，事后核查。",
        ),
        Mode::Tolerant => (
            "容缺受理",
            "主要材料齐全、次要材料暂缺的，可先行受理，暂缺材料在规定期限内补齐。",
        ),
    }
}

fn form(f: Form) -> &'static str {
    match f {
        Form::Original => "原件",
        Form::Copy => "复印件",
        Form::Electronic => "电子件",
    }
}

/// One item's guide; `url` is the page's public address, which its QR code encodes.
pub fn item(catalog: &Catalog, item: &Item, url: &str) -> Markup {
    let code = item.code.get_ref();
    let department = catalog
        .departments
        .get(item.department.get_ref())
        .map_or(item.department.get_ref().as_str(), |d| d.name.as_str());
    let bundles: Vec<_> = catalog
        .bundles
        .values()
        .filter(|b| b.items.iter().any(|i| i.get_ref() == code))
        .collect();
    page(
        &item.name,
        html! {
            div.qr {
                img src=(format!("{}/qr.svg", super::path_of(code))) alt="本页二维码" width="232" height="232";
                p { "扫码查看本指南" br; (url) }
            }
            h1 { (item.name) }
            p.meta {
                "事项编码：" span #item-code { (code) } br;
                "实施编码：" (catalog.implementation_code(item)) br;
                "实施部门：" (department)
            }
            h2 { "申请对象" }
            p {
                @for (i, k) in item.applicant_kinds.iter().enumerate() {
                    @if i > 0 { "、" }
                    (applicant(*k))
                }
            }
            h2 { "受理条件" }
            @if item.conditions.is_empty() {
                p { "属于上述申请对象，并按下列要求提交申请材料、填写申请信息的，即予受理。" }
            } @else {
                ol #conditions {
                    @for c in &item.conditions { li { (c) } }
                }
            }
            h2 { "申请材料" }
            table #materials {
                thead { tr { th { "序号" } th { "材料名称" } th { "材料形式" } th { "份数" } th { "要求" } th { "设定依据" } } }
                tbody {
                    @for (n, m) in item.materials.iter().enumerate() {
                        tr data-material=(m.code.get_ref()) {
                            td { (n + 1) }
                            td.name { (catalog.material_name(m.code.get_ref())) }
                            td.forms {
                                @for (i, f) in m.forms.iter().enumerate() {
                                    @if i > 0 { "或" }
                                    (form(*f))
                                }
                            }
                            td.copies { (m.copies) }
                            td.need {
                                @if m.tolerable {
                                    "必需；可容缺受理，于受理后" (item.tolerance_working_days) "个工作日内补齐"
                                } @else {
                                    "必需"
                                }
                                @if let Some(from) = &m.from_item {
                                    @let producer = catalog.items.get(from.get_ref()).map_or(from.get_ref().as_str(), |p| p.name.as_str());
                                    "；与「" (producer) "」同一件事办理的，由其办结后产生，无需另行提交"
                                }
                                @if !m.note.is_empty() { "（" (m.note) "）" }
                            }
                            td.basis { (m.legal_basis) }
                        }
                    }
                }
            }
            @if !item.required_parties.is_empty() || item.fields.iter().any(|f| f.required) {
                h2 { "需填写的信息" }
                ul {
                    @for f in item.fields.iter().filter(|f| f.required) {
                        li { (f.label) @if !f.legal_basis.is_empty() { "（依据：" (f.legal_basis) "）" } }
                    }
                    @for p in &item.required_parties {
                        li { (party(p)) "的身份信息" }
                    }
                }
            }
            h2 { "办理时限" }
            table #limits {
                tr { th { "法定办结时限" } td { (item.legal_working_days) "个工作日" } }
                tr { th { "承诺办结时限" } td { (item.promised_working_days) "个工作日" } }
            }
            p.meta { "时限自受理之日起按工作日计算，法定节假日不计。" }
            h2 { "受理方式" }
            ul #modes {
                @for m in &item.modes {
                    @let (name, what) = mode(*m);
                    li { strong { (name) } "：" (what) }
                }
            }
            h2 { "收费标准" }
            @if item.fees.is_empty() {
                p #fees { "本事项不收费。" }
            } @else {
                table #fees {
                    thead { tr { th { "收费项目" } th { "收费标准" } th { "收费依据" } } }
                    tbody {
                        @for fee in &item.fees {
                            tr { td { (fee.name) } td { (fee.amount) } td { (fee.legal_basis) } }
                        }
                    }
                }
            }
            @if !bundles.is_empty() {
                h2 { "可一件事办理" }
                ul {
                    @for b in bundles {
                        li {
                            (b.name) "："
                            @for (i, c) in b.items.iter().enumerate() {
                                @if i > 0 { "、" }
                                @let name = catalog.items.get(c.get_ref()).map_or(c.get_ref().as_str(), |it| it.name.as_str());
                                a href=(super::path_of(c.get_ref())) { (name) }
                            }
                        }
                    }
                }
            }
            h2 { "办理地点" }
            p { "政务服务大厅综合受理窗口（一窗受理）。材料齐全的，最多跑一次。" }
            p.meta { a href="/guide" { "返回事项目录" } }
        },
    )
}

fn party(role: &str) -> &str {
    match role {
        "seller" => "卖方",
        "buyer" => "买方",
        other => other,
    }
}

/// The page of an item the acceptance list does not hold.
pub fn not_found(item: &str) -> Markup {
    page(
        "未找到事项",
        html! {
            h1 { "未找到该事项" }
            p { "受理清单中没有编码为「" (item) "」的事项，可能已调整或编码有误。" }
            p { a href="/guide" { "查看全部事项目录" } }
        },
    )
}
