//! The exchange specification the simulated platform enforces: which tables exist, which fields
//! each may carry, the code tables, formats and check digits of one record on its own
//! ([`check_fields`], code 1001), and the rules that judge a record against what the platform
//! already holds for its SBLSH ([`check_against`], 1001 for times out of order, 1002 for a
//! missing or unsuitable preceding stage or a gap in the sequence). Pure functions, no I/O, no
//! state: the caller holds the store and its lock.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Map, Value};

/// One record: a flat JSON object.
pub type Record = Map<String, Value>;

/// The fields every table carries.
pub const COMMON: [&str; 4] = ["SBLSH", "SXBM", "XZQHDM", "XH"];

/// One exchange table: its name and its own fields (after [`COMMON`]), required or not.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub fields: &'static [&'static str],
}

impl Table {
    /// Every field, the common ones first: the columns of its exchange table.
    pub fn all_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        COMMON.iter().copied().chain(self.fields.iter().copied())
    }
}

pub const SB: usize = 0;
pub const SL: usize = 1;
pub const BJGZ: usize = 2;
pub const BJSL: usize = 3;
pub const TBCXSQ: usize = 4;
pub const TBCXJG: usize = 5;
pub const SPCL: usize = 6;
pub const BJ: usize = 7;
pub const LQDJ: usize = 8;
pub const PJ: usize = 9;
pub const ZGFK: usize = 10;

/// The tables, in stage order (the order the collector takes rows inserted at the same time).
pub const TABLES: [Table; 11] = [
    Table {
        name: "EX_GDBS_SB",
        fields: &[
            "SXMC", "SQRLX", "SQRMC", "SQRZJLX", "SQRZJHM", "SBSJ", "SBQD", "LXRSJ",
        ],
    },
    Table {
        name: "EX_GDBS_SL",
        fields: &["SLSJ", "SLZTDM", "SLJGDM", "BSLYY", "CNBJSJ"],
    },
    Table {
        name: "EX_GDBS_BJGZ",
        fields: &["BJGZSJ", "BJCLQD", "BJGZYY"],
    },
    Table {
        name: "EX_GDBS_BJSL",
        fields: &["BJSLSJ", "BJCLQD"],
    },
    Table {
        name: "EX_GDBS_TBCXSQ",
        fields: &["TBCXZL", "TBCXKSSJ", "TBCXSQLY"],
    },
    Table {
        name: "EX_GDBS_TBCXJG",
        fields: &["TBCXJSSJ", "TBCXJG"],
    },
    Table {
        name: "EX_GDBS_SPCL",
        fields: &["SPHJDM", "SPSJ", "SPBMDM", "SPYJ"],
    },
    Table {
        name: "EX_GDBS_BJ",
        fields: &["BJSJ", "BJJGDM", "ZFHTHYY", "BJBMDM"],
    },
    Table {
        name: "EX_GDBS_LQDJ",
        fields: &["LQSJ", "LQFS", "YJDH"],
    },
    Table {
        name: "EX_HCP_PJ",
        fields: &["PJSJ", "PJQD", "MYD", "ZBPJ", "PJNR"],
    },
    Table {
        name: "EX_HCP_ZGFK",
        fields: &["ZGWCSJ", "ZGQK", "ZGZRDW"],
    },
];

/// The index of a table by name.
pub fn table_index(name: &str) -> Option<usize> {
    TABLES.iter().position(|t| t.name == name)
}

/// The indicators (ZBPJ) an evaluation over channel PJQD must rate, each exactly once.
pub fn indicators(pjqd: &str) -> &'static [&'static str] {
    match pjqd {
        "1" => &["办事效率", "办事指南精确度", "办事便捷度", "平台操作性"],
        _ => &["服务效率", "服务水平", "服务态度"],
    }
}

/// Why a record was refused: the platform's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub msg: String,
}

/// Code of a record that breaks a field rule.
pub const INVALID: &str = "1001";
/// Code of a record whose preceding stage is missing or unsuitable, or out of sequence.
pub const ORDER: &str = "1002";
/// Code of a record whose key is held with other content.
pub const CONFLICT: &str = "1003";

fn invalid(msg: String) -> Refusal {
    Refusal { code: INVALID, msg }
}

fn order(msg: String) -> Refusal {
    Refusal { code: ORDER, msg }
}

/// What the platform knows of the province: item codes and region codes.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub items: BTreeSet<String>,
    pub regions: BTreeSet<String>,
}

/// One record's fields, read with messages naming its table.
struct Fields<'a> {
    table: &'static str,
    rec: &'a Record,
}

impl<'a> Fields<'a> {
    fn name(&self, field: &str) -> String {
        format!("{}.{field}", self.table)
    }

    /// A string field, when present.
    fn opt(&self, field: &str) -> Result<Option<&'a str>, Refusal> {
        match self.rec.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid(format!(
                "{} 类型错误，应为字符串",
                self.name(field)
            ))),
        }
    }

    /// A string field that must be there and not blank.
    fn req(&self, field: &str) -> Result<&'a str, Refusal> {
        match self.opt(field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(invalid(format!("{} 不能为空", self.name(field)))),
        }
    }

    /// A field that must be present and non-blank when `needed`; when not needed it may be
    /// absent, but a present one must still be a string.
    fn req_if(&self, needed: bool, field: &str, why: &str) -> Result<Option<&'a str>, Refusal> {
        if !needed {
            return self.opt(field);
        }
        match self.opt(field)? {
            Some(s) if !s.trim().is_empty() => Ok(Some(s)),
            _ => Err(invalid(format!("{} 不能为空（{why}）", self.name(field)))),
        }
    }

    /// A field whose value comes from a code table.
    fn code(&self, field: &str, allowed: &[&str]) -> Result<&'a str, Refusal> {
        let v = self.req(field)?;
        if !allowed.contains(&v) {
            return Err(invalid(format!(
                "{} 代码值 {v} 不在代码表中（允许：{}）",
                self.name(field),
                allowed.join("、")
            )));
        }
        Ok(v)
    }

    fn time(&self, field: &str) -> Result<NaiveDateTime, Refusal> {
        let v = self.req(field)?;
        parse_time(v).ok_or_else(|| {
            invalid(format!(
                "{} 时间格式错误：{v}，应为 yyyy-MM-dd HH:mm:ss",
                self.name(field)
            ))
        })
    }

    fn date(&self, field: &str) -> Result<NaiveDate, Refusal> {
        let v = self.req(field)?;
        parse_date(v).ok_or_else(|| {
            invalid(format!(
                "{} 日期格式错误：{v}，应为 yyyy-MM-dd",
                self.name(field)
            ))
        })
    }
}

/// `yyyy-MM-dd HH:mm:ss`, zero-padded, nothing else.
pub fn parse_time(v: &str) -> Option<NaiveDateTime> {
    let shape = v.len() == 19
        && v.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    shape
        .then(|| NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S").ok())
        .flatten()
}

/// `yyyy-MM-dd`, zero-padded.
pub fn parse_date(v: &str) -> Option<NaiveDate> {
    let shape = v.len() == 10
        && v.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    shape
        .then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
        .flatten()
}

/// The record's XH, once [`check_fields`] passed.
pub fn xh(rec: &Record) -> u32 {
    rec.get("XH").and_then(Value::as_u64).unwrap_or(0) as u32
}

/// The record's SBLSH, once [`check_fields`] passed.
pub fn sblsh(rec: &Record) -> &str {
    rec.get("SBLSH").and_then(Value::as_str).unwrap_or("")
}

/// Checks one record on its own: known fields only, the common fields, and the table's own.
pub fn check_fields(table: usize, rec: &Record, known: &Known) -> Result<(), Refusal> {
    let spec = &TABLES[table];
    if let Some(unknown) = rec
        .keys()
        .find(|k| !spec.all_fields().any(|f| f == k.as_str()))
    {
        return Err(invalid(format!("{} 字段 {unknown} 不在规范中", spec.name)));
    }
    let f = Fields {
        table: spec.name,
        rec,
    };
    let sblsh = f.req("SBLSH")?;
    if sblsh.len() > 64
        || !sblsh
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(format!(
            "{} 格式错误：应为 1 至 64 位字母、数字或 -",
            f.name("SBLSH")
        )));
    }
    let sxbm = f.req("SXBM")?;
    if !known.items.contains(sxbm) {
        return Err(invalid(format!(
            "{} 事项编码 {sxbm} 不存在于事项目录",
            f.name("SXBM")
        )));
    }
    let region = f.req("XZQHDM")?;
    if region.len() != 6 || !region.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "{} 格式错误：{region}，应为 6 位数字",
            f.name("XZQHDM")
        )));
    }
    if !known.regions.contains(region) {
        return Err(invalid(format!(
            "{} 行政区划代码 {region} 不在本平台管辖范围",
            f.name("XZQHDM")
        )));
    }
    match rec.get("XH") {
        None => return Err(invalid(format!("{} 不能为空", f.name("XH")))),
        Some(v)
            if v.as_u64()
                .is_some_and(|n| (1..=u64::from(u32::MAX)).contains(&n)) => {}
        Some(_) => {
            return Err(invalid(format!("{} 应为不小于 1 的整数", f.name("XH"))));
        }
    }
    match table {
        SB => sb(&f),
        SL => sl(&f),
        BJGZ => {
            f.time("BJGZSJ")?;
            f.req("BJCLQD")?;
            f.req("BJGZYY").map(drop)
        }
        BJSL => {
            f.time("BJSLSJ")?;
            f.req("BJCLQD").map(drop)
        }
        TBCXSQ => {
            f.code("TBCXZL", &["1", "2", "3", "4", "5", "9"])?;
            f.time("TBCXKSSJ")?;
            f.req("TBCXSQLY").map(drop)
        }
        TBCXJG => {
            f.time("TBCXJSSJ")?;
            f.req("TBCXJG").map(drop)
        }
        SPCL => {
            f.code("SPHJDM", &["1", "2", "3"])?;
            f.time("SPSJ")?;
            f.req("SPBMDM")?;
            f.req("SPYJ").map(drop)
        }
        BJ => {
            f.time("BJSJ")?;
            let result = f.code("BJJGDM", &["0", "1", "2", "3", "5", "6", "7"])?;
            let why = format!("办结结果代码为 {result} 时必填");
            f.req_if(matches!(result, "1" | "2" | "3" | "5"), "ZFHTHYY", &why)?;
            f.req("BJBMDM").map(drop)
        }
        LQDJ => {
            f.time("LQSJ")?;
            let way = f.code("LQFS", &["0", "1"])?;
            f.req_if(way == "1", "YJDH", "邮寄领证时必填").map(drop)
        }
        PJ => pj(&f),
        ZGFK => {
            f.time("ZGWCSJ")?;
            f.req("ZGQK")?;
            f.req("ZGZRDW").map(drop)
        }
        _ => unreachable!("a table index from TABLES"),
    }
}

fn sb(f: &Fields) -> Result<(), Refusal> {
    f.req("SXMC")?;
    let kind = f.code("SQRLX", &["1", "2", "3"])?;
    f.req("SQRMC")?;
    let id_kind = f.code("SQRZJLX", &["111", "112", "113", "414", "990", "001"])?;
    if kind == "2" && id_kind != "001" {
        return Err(invalid(format!(
            "{} 申请人类型为企业/法人(2)时证件类型应为 001 统一社会信用代码",
            f.name("SQRZJLX")
        )));
    }
    let id = f.req("SQRZJHM")?;
    let problem = match id_kind {
        "111" => yichuang::ids::check_resident_id(id).err().map(|e| match e {
            yichuang::ids::ResidentIdError::Format => "身份证号码格式错误",
            yichuang::ids::ResidentIdError::Date => "身份证号码出生日期无效",
            yichuang::ids::ResidentIdError::CheckDigit { .. } => "身份证号码校验位错误",
        }),
        "001" => yichuang::ids::check_credit_code(id).err().map(|e| match e {
            yichuang::ids::CreditCodeError::Format => "统一社会信用代码格式错误",
            yichuang::ids::CreditCodeError::Check { .. } => "统一社会信用代码校验位错误",
        }),
        _ => None,
    };
    if let Some(problem) = problem {
        return Err(invalid(format!("{} {problem}", f.name("SQRZJHM"))));
    }
    f.time("SBSJ")?;
    f.code("SBQD", &["0", "1", "2", "3", "4", "5", "6", "7", "9"])?;
    // Optional: absent, or blank as a text column left empty.
    if let Some(phone) = f.opt("LXRSJ")?.filter(|p| !p.is_empty())
        && (phone.len() != 11
            || !phone.starts_with('1')
            || !phone.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(format!(
            "{} 手机号码格式错误，应为 1 开头的 11 位数字",
            f.name("LXRSJ")
        )));
    }
    Ok(())
}

fn sl(f: &Fields) -> Result<(), Refusal> {
    let at = f.time("SLSJ")?;
    let state = f.code("SLZTDM", &["1", "2", "3", "4"])?;
    f.req("SLJGDM")?;
    let why = format!("受理状态代码为 {state} 时必填");
    f.req_if(matches!(state, "2" | "4"), "BSLYY", &why)?;
    if state == "1" {
        let promised = f.date("CNBJSJ")?;
        if promised < at.date() {
            return Err(invalid(format!(
                "{} 承诺办结时间早于受理时间 {}",
                f.name("CNBJSJ"),
                f.req("SLSJ")?
            )));
        }
    } else if f.opt("CNBJSJ")?.is_some_and(|v| !v.is_empty()) {
        f.date("CNBJSJ")?;
    }
    Ok(())
}

fn pj(f: &Fields) -> Result<(), Refusal> {
    f.time("PJSJ")?;
    let channel = f.code("PJQD", &["1", "2", "3"])?;
    f.code("MYD", &["1", "2", "3", "4", "5"])?;
    let name = f.name("ZBPJ");
    let ratings = match f.rec.get("ZBPJ") {
        None => return Err(invalid(format!("{name} 不能为空"))),
        Some(Value::Array(ratings)) => ratings,
        Some(_) => {
            return Err(invalid(format!(
                "{name} 应为分项评价数组 [{{\"ZBMC\":…,\"DJ\":…}}]"
            )));
        }
    };
    let expected = indicators(channel);
    let mut seen = BTreeMap::new();
    for rating in ratings {
        let Some(obj) = rating.as_object() else {
            return Err(invalid(format!(
                "{name} 每一项应为 {{\"ZBMC\",\"DJ\"}} 对象"
            )));
        };
        if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "ZBMC" | "DJ")) {
            return Err(invalid(format!("{name} 字段 {k} 不在规范中")));
        }
        let Some(indicator) = obj.get("ZBMC").and_then(Value::as_str) else {
            return Err(invalid(format!("{name}.ZBMC 不能为空")));
        };
        if !expected.contains(&indicator) {
            return Err(invalid(format!(
                "{name} 指标 {indicator} 不适用于评价渠道 {channel}（应为：{}）",
                expected.join("、")
            )));
        }
        if !obj
            .get("DJ")
            .and_then(Value::as_u64)
            .is_some_and(|d| (1..=5).contains(&d))
        {
            return Err(invalid(format!(
                "{name} 指标 {indicator} 的等级 DJ 应为 1 至 5 的整数"
            )));
        }
        if seen.insert(indicator, ()).is_some() {
            return Err(invalid(format!("{name} 指标 {indicator} 重复")));
        }
    }
    if let Some(missing) = expected.iter().find(|i| !seen.contains_key(*i)) {
        return Err(invalid(format!("{name} 缺少指标 {missing}")));
    }
    if let Some(text) = f.opt("PJNR")?
        && text.chars().count() > 500
    {
        return Err(invalid(format!("{} 超过 500 字", f.name("PJNR"))));
    }
    Ok(())
}

/// What the platform holds for one SBLSH: (table, XH) → record.
pub type Case<'a> = BTreeMap<(usize, u32), &'a Record>;

fn held_count(case: &Case, table: usize) -> u32 {
    case.keys().filter(|(t, _)| *t == table).count() as u32
}

fn field<'a>(rec: &'a Record, name: &str) -> &'a str {
    rec.get(name).and_then(Value::as_str).unwrap_or("")
}

/// A time field of a held (so valid) record.
fn held_time(rec: &Record, name: &str) -> NaiveDateTime {
    parse_time(field(rec, name)).unwrap_or_default()
}

/// Checks a record that passed [`check_fields`] against what the platform holds for its
/// SBLSH (its own key not among them).
pub fn check_against(table: usize, rec: &Record, case: &Case) -> Result<(), Refusal> {
    let name = TABLES[table].name;
    let sblsh = sblsh(rec);
    let xh = xh(rec);
    let missing = |pre: usize| {
        order(format!(
            "{name} 前置环节 {} 不存在 (SBLSH={sblsh})",
            TABLES[pre].name
        ))
    };
    let one = |t: usize| case.get(&(t, 1)).copied();
    let time = |field: &str| parse_time(self::field(rec, field)).unwrap_or_default();
    let not_before = |field: &str, earlier: &Record, their_table: usize, their: &str| {
        if time(field) < held_time(earlier, their) {
            Err(invalid(format!(
                "{name}.{field} 早于 {}.{their} ({})",
                TABLES[their_table].name,
                self::field(earlier, their)
            )))
        } else {
            Ok(())
        }
    };
    // An accepted SL (SLZTDM 1), which most stages need.
    let accepted = || -> Result<&Record, Refusal> {
        let sl = one(SL).ok_or_else(|| missing(SL))?;
        let state = field(sl, "SLZTDM");
        if state != "1" {
            return Err(order(format!(
                "{name} 前置环节 EX_GDBS_SL.SLZTDM={state}，办件未受理 (SBLSH={sblsh})"
            )));
        }
        Ok(sl)
    };
    let next_in_sequence = |t: usize| {
        let expected = held_count(case, t) + 1;
        if xh != expected {
            return Err(order(format!(
                "{name}.XH={xh} 不连续，应为 {expected} (SBLSH={sblsh})"
            )));
        }
        Ok(())
    };
    let single = matches!(table, SB | SL | BJ | LQDJ | PJ | ZGFK);
    if single && xh != 1 {
        if table == PJ && one(PJ).is_some() {
            return Err(invalid(format!(
                "{name} 该办件已评价，一次一评 (SBLSH={sblsh})"
            )));
        }
        return Err(invalid(format!("{name}.XH 应为 1")));
    }
    match table {
        SB => Ok(()),
        SL => {
            let sb = one(SB).ok_or_else(|| missing(SB))?;
            not_before("SLSJ", sb, SB, "SBSJ")
        }
        BJGZ | TBCXSQ | SPCL => {
            accepted()?;
            next_in_sequence(table)
        }
        BJSL | TBCXJG => {
            let (pre, at, pre_at) = if table == BJSL {
                (BJGZ, "BJSLSJ", "BJGZSJ")
            } else {
                (TBCXSQ, "TBCXJSSJ", "TBCXKSSJ")
            };
            let Some(p) = case.get(&(pre, xh)) else {
                return Err(order(format!(
                    "{name} 前置环节 {} XH={xh} 不存在 (SBLSH={sblsh})",
                    TABLES[pre].name
                )));
            };
            not_before(at, p, pre, pre_at)
        }
        BJ => {
            let sl = accepted()?;
            not_before("BJSJ", sl, SL, "SLSJ")?;
            for &(t, n) in case.keys() {
                if t == TBCXSQ && !case.contains_key(&(TBCXJG, n)) {
                    return Err(order(format!(
                        "{name} 特别程序 EX_GDBS_TBCXSQ XH={n} 尚无 EX_GDBS_TBCXJG，不能办结 (SBLSH={sblsh})"
                    )));
                }
            }
            let result = field(rec, "BJJGDM");
            if !matches!(result, "1" | "2" | "3" | "5") {
                for &(t, n) in case.keys() {
                    if t == BJGZ && !case.contains_key(&(BJSL, n)) {
                        return Err(order(format!(
                            "{name} 补交告知 EX_GDBS_BJGZ XH={n} 尚无 EX_GDBS_BJSL，办结结果 {result} 不能办结 (SBLSH={sblsh})"
                        )));
                    }
                }
            }
            Ok(())
        }
        LQDJ => {
            let bj = one(BJ).ok_or_else(|| missing(BJ))?;
            let result = field(bj, "BJJGDM");
            if !matches!(result, "0" | "6") {
                return Err(order(format!(
                    "{name} 前置环节 EX_GDBS_BJ.BJJGDM={result}，无证照可领 (SBLSH={sblsh})"
                )));
            }
            not_before("LQSJ", bj, BJ, "BJSJ")
        }
        PJ => one(BJ).map(drop).ok_or_else(|| missing(BJ)),
        ZGFK => {
            let pj = one(PJ).ok_or_else(|| missing(PJ))?;
            let satisfaction = field(pj, "MYD");
            if !matches!(satisfaction, "1" | "2") {
                return Err(order(format!(
                    "{name} 前置环节 EX_HCP_PJ.MYD={satisfaction} 不是差评，无需整改 (SBLSH={sblsh})"
                )));
            }
            not_before("ZGWCSJ", pj, PJ, "PJSJ")
        }
        _ => unreachable!("a table index from TABLES"),
    }
}
