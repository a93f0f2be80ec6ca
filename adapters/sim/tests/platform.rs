//! The provincial platform's case-record exchange (`yichuang_sim::platform`) over real HTTP and
//! a real PostgreSQL (a schema of each test's own, dropped at the end even when the test
//! fails): the field rules of every table, code tables, check digits, the order of stages,
//! idempotency, the caller's signature, the controls, and the exchange tables' collector.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, listener};
use reqwest::StatusCode;
use serde_json::{Value, json};
use yichuang_sim::platform::{
    ExchangeSettings, PlatformHandle, Settings, Transport, sign, signed_headers, spawn, spawn_on,
};

const WAIT: Duration = Duration::from_secs(10);

struct Platform {
    handle: PlatformHandle,
    url: String,
    http: reqwest::Client,
}

async fn start() -> Platform {
    start_with(Settings::default()).await
}

/// On a listener of the test's, as `spawn_on` takes it.
async fn start_with(settings: Settings) -> Platform {
    let (listener, url) = listener().await;
    Platform {
        handle: spawn_on(listener, settings).await.unwrap(),
        url,
        http: reqwest::Client::new(),
    }
}

impl Platform {
    async fn post_signed(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let mut req = self.http.post(format!("{}{path}", self.url));
        for (k, v) in signed_headers("yichuang", "platform-secret", &body) {
            req = req.header(k, v);
        }
        let r = req
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn send(&self, table: &str, record: &Value) -> Value {
        let (status, v) = self
            .post_signed(
                "/gdbs/api/record",
                &json!({"table": table, "record": record}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    async fn ok(&self, table: &str, record: &Value) {
        let v = self.send(table, record).await;
        assert_eq!(
            v,
            json!({"code": "0", "msg": "接收成功"}),
            "{table} {record}"
        );
    }

    /// Sends a record that must be refused with `code` and a message containing `msg`.
    async fn refused(&self, table: &str, record: &Value, code: &str, msg: &str) {
        let v = self.send(table, record).await;
        assert_eq!(v["code"], code, "{table} {record}: {v}");
        let got = v["msg"].as_str().unwrap();
        assert!(got.contains(msg), "{table}: {got:?} should say {msg:?}");
    }

    async fn query(&self, sblsh: &[&str]) -> Vec<Value> {
        let (status, v) = self
            .post_signed("/gdbs/api/query", &json!({"sblsh": sblsh}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["code"], "0", "{v}");
        v["data"].as_array().unwrap().clone()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/sim/platform/{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

/// A record of `sblsh` with the common fields and these.
fn rec(sblsh: &str, xh: u32, fields: Value) -> Value {
    let mut r = json!({"SBLSH": sblsh, "SXBM": "QY-SL", "XZQHDM": "440100", "XH": xh});
    r.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    r
}

fn sb(s: &str) -> Value {
    rec(
        s,
        1,
        json!({"SXMC": "企业设立登记", "SQRLX": "1", "SQRMC": "张三", "SQRZJLX": "111",
               "SQRZJHM": "440524188001010014", "SBSJ": "2024-03-01 09:00:00", "SBQD": "5",
               "LXRSJ": "13800138000"}),
    )
}

fn sl(s: &str) -> Value {
    rec(
        s,
        1,
        json!({"SLSJ": "2024-03-01 09:30:00", "SLZTDM": "1", "SLJGDM": "11440100MB2C1234XA",
               "CNBJSJ": "2024-03-08"}),
    )
}

fn bjgz(s: &str, n: u32) -> Value {
    rec(
        s,
        n,
        json!({"BJGZSJ": "2024-03-01 10:00:00", "BJCLQD": "住所证明", "BJGZYY": "住所证明不清晰"}),
    )
}

fn bjsl(s: &str, n: u32) -> Value {
    rec(
        s,
        n,
        json!({"BJSLSJ": "2024-03-02 10:00:00", "BJCLQD": "住所证明"}),
    )
}

fn tbcxsq(s: &str, n: u32) -> Value {
    rec(
        s,
        n,
        json!({"TBCXZL": "3", "TBCXKSSJ": "2024-03-03 09:00:00", "TBCXSQLY": "现场核查"}),
    )
}

fn tbcxjg(s: &str, n: u32) -> Value {
    rec(
        s,
        n,
        json!({"TBCXJSSJ": "2024-03-04 09:00:00", "TBCXJG": "核查通过"}),
    )
}

fn spcl(s: &str, n: u32) -> Value {
    rec(
        s,
        n,
        json!({"SPHJDM": n.to_string(), "SPSJ": "2024-03-05 09:00:00", "SPBMDM": "scjg",
               "SPYJ": "同意"}),
    )
}

fn bj(s: &str, result: &str) -> Value {
    let mut r = rec(
        s,
        1,
        json!({"BJSJ": "2024-03-06 09:00:00", "BJJGDM": result, "BJBMDM": "scjg"}),
    );
    if matches!(result, "1" | "2" | "3" | "5") {
        r["ZFHTHYY"] = json!("申请人逾期未补正");
    }
    r
}

fn lqdj(s: &str) -> Value {
    rec(s, 1, json!({"LQSJ": "2024-03-07 09:00:00", "LQFS": "0"}))
}

fn pj(s: &str, myd: &str) -> Value {
    rec(
        s,
        1,
        json!({"PJSJ": "2024-03-07 10:00:00", "PJQD": "2", "MYD": myd,
               "ZBPJ": [{"ZBMC": "服务效率", "DJ": 2}, {"ZBMC": "服务水平", "DJ": 3},
                        {"ZBMC": "服务态度", "DJ": 1}],
               "PJNR": "等候时间太长"}),
    )
}

fn zgfk(s: &str) -> Value {
    rec(
        s,
        1,
        json!({"ZGWCSJ": "2024-03-10 10:00:00", "ZGQK": "增设取号窗口", "ZGZRDW": "政务服务中心"}),
    )
}

fn without(mut r: Value, field: &str) -> Value {
    r.as_object_mut().unwrap().remove(field);
    r
}

fn with(mut r: Value, field: &str, v: Value) -> Value {
    r[field] = v;
    r
}

#[tokio::test]
async fn a_whole_case_is_taken_stage_by_stage_and_queried() {
    let p = start().await;
    let s = "GD-2024-0001";
    p.ok("EX_GDBS_SB", &sb(s)).await;
    p.ok("EX_GDBS_SL", &sl(s)).await;
    p.ok("EX_GDBS_BJGZ", &bjgz(s, 1)).await;
    p.ok("EX_GDBS_BJSL", &bjsl(s, 1)).await;
    p.ok("EX_GDBS_TBCXSQ", &tbcxsq(s, 1)).await;
    p.ok("EX_GDBS_TBCXJG", &tbcxjg(s, 1)).await;
    for n in 1..=3 {
        p.ok("EX_GDBS_SPCL", &spcl(s, n)).await;
    }
    p.ok("EX_GDBS_BJ", &bj(s, "6")).await;
    p.ok("EX_GDBS_LQDJ", &lqdj(s)).await;
    p.ok("EX_HCP_PJ", &pj(s, "2")).await;
    p.ok("EX_HCP_ZGFK", &zgfk(s)).await;

    let data = p.query(&[s, "GD-NONE"]).await;
    let tables: Vec<&str> = data.iter().map(|d| d["table"].as_str().unwrap()).collect();
    assert_eq!(
        tables,
        [
            "EX_GDBS_SB",
            "EX_GDBS_SL",
            "EX_GDBS_BJGZ",
            "EX_GDBS_BJSL",
            "EX_GDBS_TBCXSQ",
            "EX_GDBS_TBCXJG",
            "EX_GDBS_SPCL",
            "EX_GDBS_SPCL",
            "EX_GDBS_SPCL",
            "EX_GDBS_BJ",
            "EX_GDBS_LQDJ",
            "EX_HCP_PJ",
            "EX_HCP_ZGFK"
        ]
    );
    assert_eq!(data[0]["record"], sb(s), "held exactly as sent");
    let held = p.handle.records();
    assert_eq!(held.len(), 13);
    assert!(
        held.iter()
            .all(|h| h.accepted == 1 && h.repeats == 0 && h.transport == Transport::Http)
    );
    assert!(p.handle.refusals().is_empty());

    // A company applies with its credit code; a mailed licence needs its waybill number.
    let c = "GD-2024-0002";
    let company = with(
        with(with(sb(c), "SQRLX", json!("2")), "SQRZJLX", json!("001")),
        "SQRZJHM",
        json!("91350100M000100Y43"),
    );
    p.ok("EX_GDBS_SB", &without(company, "LXRSJ")).await;
    p.ok("EX_GDBS_SL", &sl(c)).await;
    p.ok("EX_GDBS_BJ", &bj(c, "0")).await;
    let mailed = with(lqdj(c), "LQFS", json!("1"));
    p.refused(
        "EX_GDBS_LQDJ",
        &mailed,
        "1001",
        "EX_GDBS_LQDJ.YJDH 不能为空",
    )
    .await;
    p.ok("EX_GDBS_LQDJ", &with(mailed, "YJDH", json!("SF1234567890")))
        .await;
    // An online evaluation rates the online indicators.
    let online = json!([{"ZBMC": "办事效率", "DJ": 5}, {"ZBMC": "办事指南精确度", "DJ": 5},
                        {"ZBMC": "办事便捷度", "DJ": 4}, {"ZBMC": "平台操作性", "DJ": 5}]);
    let e = with(with(pj(c, "5"), "PJQD", json!("1")), "ZBPJ", online);
    p.ok("EX_HCP_PJ", &without(e, "PJNR")).await;
}

/// Every table's required fields, each left out once and then blank, on a case whose earlier
/// stages are held.
#[tokio::test]
async fn every_required_field_of_every_table_is_enforced() {
    let p = start().await;
    let s = "GD-REQ-1";
    let common = ["SBLSH", "SXBM", "XZQHDM", "XH"];
    let stages: Vec<(&str, Value, &[&str])> = vec![
        (
            "EX_GDBS_SB",
            sb(s),
            &[
                "SXMC", "SQRLX", "SQRMC", "SQRZJLX", "SQRZJHM", "SBSJ", "SBQD",
            ],
        ),
        ("EX_GDBS_SL", sl(s), &["SLSJ", "SLZTDM", "SLJGDM", "CNBJSJ"]),
        ("EX_GDBS_BJGZ", bjgz(s, 1), &["BJGZSJ", "BJCLQD", "BJGZYY"]),
        ("EX_GDBS_BJSL", bjsl(s, 1), &["BJSLSJ", "BJCLQD"]),
        (
            "EX_GDBS_TBCXSQ",
            tbcxsq(s, 1),
            &["TBCXZL", "TBCXKSSJ", "TBCXSQLY"],
        ),
        ("EX_GDBS_TBCXJG", tbcxjg(s, 1), &["TBCXJSSJ", "TBCXJG"]),
        (
            "EX_GDBS_SPCL",
            spcl(s, 1),
            &["SPHJDM", "SPSJ", "SPBMDM", "SPYJ"],
        ),
        ("EX_GDBS_BJ", bj(s, "0"), &["BJSJ", "BJJGDM", "BJBMDM"]),
        ("EX_GDBS_LQDJ", lqdj(s), &["LQSJ", "LQFS"]),
        ("EX_HCP_PJ", pj(s, "1"), &["PJSJ", "PJQD", "MYD", "ZBPJ"]),
        ("EX_HCP_ZGFK", zgfk(s), &["ZGWCSJ", "ZGQK", "ZGZRDW"]),
    ];
    for (table, record, required) in stages {
        for field in common.iter().chain(required) {
            let empty = format!("{table}.{field} 不能为空");
            p.refused(table, &without(record.clone(), field), "1001", &empty)
                .await;
            if !matches!(*field, "XH" | "ZBPJ") {
                p.refused(
                    table,
                    &with(record.clone(), field, json!("  ")),
                    "1001",
                    &empty,
                )
                .await;
            }
        }
        p.ok(table, &record).await;
    }
    // Conditional fields.
    let t = "GD-REQ-2";
    p.ok("EX_GDBS_SB", &sb(t)).await;
    let not_taken = without(with(sl(t), "SLZTDM", json!("4")), "CNBJSJ");
    p.refused(
        "EX_GDBS_SL",
        &not_taken,
        "1001",
        "EX_GDBS_SL.BSLYY 不能为空",
    )
    .await;
    p.ok(
        "EX_GDBS_SL",
        &with(not_taken, "BSLYY", json!("不属于本机关职权范围")),
    )
    .await;
    let u = "GD-REQ-3";
    p.ok("EX_GDBS_SB", &sb(u)).await;
    p.ok("EX_GDBS_SL", &sl(u)).await;
    let returned = without(bj(u, "1"), "ZFHTHYY");
    p.refused(
        "EX_GDBS_BJ",
        &returned,
        "1001",
        "EX_GDBS_BJ.ZFHTHYY 不能为空",
    )
    .await;
    // Unknown fields, anywhere.
    p.refused(
        "EX_GDBS_BJ",
        &with(bj(u, "0"), "BJJG", json!("准予许可")),
        "1001",
        "EX_GDBS_BJ 字段 BJJG 不在规范中",
    )
    .await;
    p.refused("EX_GDBS_XX", &sb(u), "1001", "表 EX_GDBS_XX 不在规范中")
        .await;
    assert_eq!(
        p.handle.records().len(),
        11 + 2 + 2,
        "refused records are not held"
    );
}

#[tokio::test]
async fn code_tables_formats_and_check_digits() {
    let p = start().await;
    let s = "GD-CODE-1";
    let bad_sb: Vec<(&str, Value, &str)> = vec![
        (
            "SQRLX",
            json!("4"),
            "EX_GDBS_SB.SQRLX 代码值 4 不在代码表中",
        ),
        ("SQRZJLX", json!("999"), "EX_GDBS_SB.SQRZJLX 代码值 999"),
        ("SBQD", json!("8"), "EX_GDBS_SB.SBQD 代码值 8"),
        ("SQRLX", json!(1), "EX_GDBS_SB.SQRLX 类型错误"),
        (
            "SBSJ",
            json!("2024/03/01 09:00:00"),
            "EX_GDBS_SB.SBSJ 时间格式错误",
        ),
        (
            "SBSJ",
            json!("2024-03-01 9:00:00"),
            "EX_GDBS_SB.SBSJ 时间格式错误",
        ),
        (
            "SBSJ",
            json!("2024-02-30 09:00:00"),
            "EX_GDBS_SB.SBSJ 时间格式错误",
        ),
        (
            "LXRSJ",
            json!("0138001380"),
            "EX_GDBS_SB.LXRSJ 手机号码格式错误",
        ),
        (
            "SQRZJHM",
            json!("440524188001010015"),
            "EX_GDBS_SB.SQRZJHM 身份证号码校验位错误",
        ),
        (
            "SQRZJHM",
            json!("440524188002300014"),
            "EX_GDBS_SB.SQRZJHM 身份证号码出生日期无效",
        ),
        (
            "SQRZJHM",
            json!("44052418800101001"),
            "EX_GDBS_SB.SQRZJHM 身份证号码格式错误",
        ),
        (
            "XZQHDM",
            json!("440300"),
            "EX_GDBS_SB.XZQHDM 行政区划代码 440300 不在本平台管辖范围",
        ),
        ("XZQHDM", json!("4401"), "EX_GDBS_SB.XZQHDM 格式错误"),
        (
            "SXBM",
            json!("NO-SUCH"),
            "EX_GDBS_SB.SXBM 事项编码 NO-SUCH 不存在于事项目录",
        ),
        ("SBLSH", json!("GD 0001"), "EX_GDBS_SB.SBLSH 格式错误"),
        ("SBLSH", json!("A".repeat(65)), "EX_GDBS_SB.SBLSH 格式错误"),
        ("XH", json!(0), "EX_GDBS_SB.XH 应为不小于 1 的整数"),
        ("XH", json!("1"), "EX_GDBS_SB.XH 应为不小于 1 的整数"),
        ("XH", json!(2), "EX_GDBS_SB.XH 应为 1"),
    ];
    for (field, v, msg) in bad_sb {
        p.refused("EX_GDBS_SB", &with(sb(s), field, v), "1001", msg)
            .await;
    }
    let company = with(sb(s), "SQRLX", json!("2"));
    p.refused(
        "EX_GDBS_SB",
        &company,
        "1001",
        "EX_GDBS_SB.SQRZJLX 申请人类型为企业/法人(2)时证件类型应为 001",
    )
    .await;
    let company = with(
        with(company, "SQRZJLX", json!("001")),
        "SQRZJHM",
        json!("91350100M000100Y44"),
    );
    p.refused(
        "EX_GDBS_SB",
        &company,
        "1001",
        "EX_GDBS_SB.SQRZJHM 统一社会信用代码校验位错误",
    )
    .await;
    p.ok("EX_GDBS_SB", &sb(s)).await;
    p.refused(
        "EX_GDBS_SL",
        &with(sl(s), "SLZTDM", json!("5")),
        "1001",
        "EX_GDBS_SL.SLZTDM 代码值 5",
    )
    .await;
    p.refused(
        "EX_GDBS_SL",
        &with(sl(s), "CNBJSJ", json!("2024-02-29")),
        "1001",
        "EX_GDBS_SL.CNBJSJ 承诺办结时间早于受理时间",
    )
    .await;
    p.refused(
        "EX_GDBS_SL",
        &with(sl(s), "CNBJSJ", json!("2024-03-08 00:00:00")),
        "1001",
        "EX_GDBS_SL.CNBJSJ 日期格式错误",
    )
    .await;
    p.refused(
        "EX_GDBS_SL",
        &with(sl(s), "SLSJ", json!("2024-03-01 08:59:59")),
        "1001",
        "EX_GDBS_SL.SLSJ 早于 EX_GDBS_SB.SBSJ",
    )
    .await;
    p.ok("EX_GDBS_SL", &sl(s)).await;
    p.refused(
        "EX_GDBS_TBCXSQ",
        &with(tbcxsq(s, 1), "TBCXZL", json!("6")),
        "1001",
        "EX_GDBS_TBCXSQ.TBCXZL 代码值 6",
    )
    .await;
    p.refused(
        "EX_GDBS_SPCL",
        &with(spcl(s, 1), "SPHJDM", json!("4")),
        "1001",
        "EX_GDBS_SPCL.SPHJDM 代码值 4",
    )
    .await;
    p.refused(
        "EX_GDBS_BJ",
        &with(bj(s, "0"), "BJJGDM", json!("4")),
        "1001",
        "EX_GDBS_BJ.BJJGDM 代码值 4",
    )
    .await;
    p.ok("EX_GDBS_BJ", &bj(s, "0")).await;
    p.refused(
        "EX_GDBS_LQDJ",
        &with(lqdj(s), "LQFS", json!("2")),
        "1001",
        "EX_GDBS_LQDJ.LQFS 代码值 2",
    )
    .await;
    p.refused(
        "EX_GDBS_LQDJ",
        &with(lqdj(s), "LQSJ", json!("2024-03-06 08:00:00")),
        "1001",
        "EX_GDBS_LQDJ.LQSJ 早于 EX_GDBS_BJ.BJSJ",
    )
    .await;
    // Evaluations: channel, level, and the channel's indicators exactly once each.
    let e = pj(s, "3");
    let cases: Vec<(Value, &str)> = vec![
        (
            with(e.clone(), "PJQD", json!("4")),
            "EX_HCP_PJ.PJQD 代码值 4",
        ),
        (with(e.clone(), "MYD", json!("6")), "EX_HCP_PJ.MYD 代码值 6"),
        (
            with(e.clone(), "PJQD", json!("1")),
            "EX_HCP_PJ.ZBPJ 指标 服务效率 不适用于评价渠道 1",
        ),
        (
            with(
                e.clone(),
                "ZBPJ",
                json!([{"ZBMC": "服务效率", "DJ": 2}, {"ZBMC": "服务水平", "DJ": 3}]),
            ),
            "EX_HCP_PJ.ZBPJ 缺少指标 服务态度",
        ),
        (
            with(
                e.clone(),
                "ZBPJ",
                json!([{"ZBMC": "服务效率", "DJ": 2}, {"ZBMC": "服务效率", "DJ": 3},
                       {"ZBMC": "服务态度", "DJ": 3}]),
            ),
            "EX_HCP_PJ.ZBPJ 指标 服务效率 重复",
        ),
        (
            with(
                e.clone(),
                "ZBPJ",
                json!([{"ZBMC": "服务效率", "DJ": 6}, {"ZBMC": "服务水平", "DJ": 3},
                       {"ZBMC": "服务态度", "DJ": 3}]),
            ),
            "EX_HCP_PJ.ZBPJ 指标 服务效率 的等级 DJ 应为 1 至 5 的整数",
        ),
        (
            with(e.clone(), "ZBPJ", json!("服务效率:2")),
            "EX_HCP_PJ.ZBPJ 应为分项评价数组",
        ),
        (
            with(e.clone(), "PJNR", json!("慢".repeat(501))),
            "EX_HCP_PJ.PJNR 超过 500 字",
        ),
    ];
    for (record, msg) in cases {
        p.refused("EX_HCP_PJ", &record, "1001", msg).await;
    }
    p.ok("EX_HCP_PJ", &e).await;
    p.refused(
        "EX_HCP_ZGFK",
        &zgfk(s),
        "1002",
        "EX_HCP_ZGFK 前置环节 EX_HCP_PJ.MYD=3 不是差评",
    )
    .await;
}

#[tokio::test]
async fn stages_out_of_order_are_refused() {
    let p = start().await;
    let s = "GD-ORDER-1";
    p.refused(
        "EX_GDBS_SL",
        &sl(s),
        "1002",
        &format!("EX_GDBS_SL 前置环节 EX_GDBS_SB 不存在 (SBLSH={s})"),
    )
    .await;
    p.ok("EX_GDBS_SB", &sb(s)).await;
    p.refused(
        "EX_GDBS_BJGZ",
        &bjgz(s, 1),
        "1002",
        "EX_GDBS_BJGZ 前置环节 EX_GDBS_SL 不存在",
    )
    .await;
    p.ok("EX_GDBS_SL", &sl(s)).await;
    p.refused(
        "EX_GDBS_BJGZ",
        &bjgz(s, 2),
        "1002",
        "EX_GDBS_BJGZ.XH=2 不连续，应为 1",
    )
    .await;
    p.refused(
        "EX_GDBS_BJSL",
        &bjsl(s, 1),
        "1002",
        "EX_GDBS_BJSL 前置环节 EX_GDBS_BJGZ XH=1 不存在",
    )
    .await;
    p.ok("EX_GDBS_BJGZ", &bjgz(s, 1)).await;
    p.refused(
        "EX_GDBS_BJSL",
        &with(bjsl(s, 1), "BJSLSJ", json!("2024-03-01 09:59:59")),
        "1001",
        "EX_GDBS_BJSL.BJSLSJ 早于 EX_GDBS_BJGZ.BJGZSJ",
    )
    .await;
    p.ok("EX_GDBS_TBCXSQ", &tbcxsq(s, 1)).await;
    p.refused(
        "EX_GDBS_TBCXJG",
        &with(tbcxjg(s, 1), "TBCXJSSJ", json!("2024-03-02 09:00:00")),
        "1001",
        "EX_GDBS_TBCXJG.TBCXJSSJ 早于 EX_GDBS_TBCXSQ.TBCXKSSJ",
    )
    .await;
    p.refused(
        "EX_GDBS_SPCL",
        &spcl(s, 2),
        "1002",
        "EX_GDBS_SPCL.XH=2 不连续",
    )
    .await;
    // An open special procedure, then an open supplement request, keep the case from ending.
    p.refused(
        "EX_GDBS_BJ",
        &bj(s, "6"),
        "1002",
        "特别程序 EX_GDBS_TBCXSQ XH=1 尚无 EX_GDBS_TBCXJG",
    )
    .await;
    p.ok("EX_GDBS_TBCXJG", &tbcxjg(s, 1)).await;
    p.refused(
        "EX_GDBS_BJ",
        &bj(s, "6"),
        "1002",
        "补交告知 EX_GDBS_BJGZ XH=1 尚无 EX_GDBS_BJSL",
    )
    .await;
    p.refused(
        "EX_GDBS_BJ",
        &with(bj(s, "5"), "BJSJ", json!("2024-03-01 09:00:00")),
        "1001",
        "EX_GDBS_BJ.BJSJ 早于 EX_GDBS_SL.SLSJ",
    )
    .await;
    // 补正不来办结 ends it with the supplement still open; nothing to collect, no evaluation yet.
    p.refused(
        "EX_HCP_PJ",
        &pj(s, "1"),
        "1002",
        "EX_HCP_PJ 前置环节 EX_GDBS_BJ 不存在",
    )
    .await;
    p.ok("EX_GDBS_BJ", &bj(s, "5")).await;
    p.refused(
        "EX_GDBS_LQDJ",
        &lqdj(s),
        "1002",
        "EX_GDBS_LQDJ 前置环节 EX_GDBS_BJ.BJJGDM=5",
    )
    .await;
    p.refused(
        "EX_HCP_ZGFK",
        &zgfk(s),
        "1002",
        "EX_HCP_ZGFK 前置环节 EX_HCP_PJ 不存在",
    )
    .await;
    p.ok("EX_HCP_PJ", &pj(s, "4")).await;
    p.refused(
        "EX_HCP_ZGFK",
        &zgfk(s),
        "1002",
        "EX_HCP_ZGFK 前置环节 EX_HCP_PJ.MYD=4 不是差评",
    )
    .await;
    // One evaluation per case.
    p.refused(
        "EX_HCP_PJ",
        &with(pj(s, "4"), "XH", json!(2)),
        "1001",
        "该办件已评价，一次一评",
    )
    .await;
    p.refused("EX_HCP_PJ", &pj(s, "5"), "1003", "该办件已评价，一次一评")
        .await;

    // Not accepted: nothing may follow; not permitted (7): no licence to collect.
    let t = "GD-ORDER-2";
    p.ok("EX_GDBS_SB", &sb(t)).await;
    let refused_sl = without(
        with(
            with(sl(t), "SLZTDM", json!("2")),
            "BSLYY",
            json!("材料不全"),
        ),
        "CNBJSJ",
    );
    p.ok("EX_GDBS_SL", &refused_sl).await;
    p.refused(
        "EX_GDBS_SPCL",
        &spcl(t, 1),
        "1002",
        "EX_GDBS_SPCL 前置环节 EX_GDBS_SL.SLZTDM=2，办件未受理",
    )
    .await;
    p.refused("EX_GDBS_BJ", &bj(t, "7"), "1002", "EX_GDBS_SL.SLZTDM=2")
        .await;
    let u = "GD-ORDER-3";
    p.ok("EX_GDBS_SB", &sb(u)).await;
    p.ok("EX_GDBS_SL", &sl(u)).await;
    p.ok("EX_GDBS_BJ", &bj(u, "7")).await;
    p.refused(
        "EX_GDBS_LQDJ",
        &lqdj(u),
        "1002",
        &format!("EX_GDBS_LQDJ 前置环节 EX_GDBS_BJ.BJJGDM=7，无证照可领 (SBLSH={u})"),
    )
    .await;
    let r = p.handle.refusals();
    assert_eq!((r["1002"], r["1001"], r["1003"]), (14, 4, 1), "{r:?}");
}

#[tokio::test]
async fn a_repeat_is_taken_once_and_a_conflicting_repeat_refused() {
    let p = start().await;
    let s = "GD-IDEM-1";
    p.ok("EX_GDBS_SB", &sb(s)).await;
    let again = p.send("EX_GDBS_SB", &sb(s)).await;
    assert_eq!(again, json!({"code": "0", "msg": "数据已存在"}));
    p.refused(
        "EX_GDBS_SB",
        &with(sb(s), "SQRMC", json!("李四")),
        "1003",
        &format!("EX_GDBS_SB 记录已存在且内容不一致 (SBLSH={s}, XH=1)"),
    )
    .await;
    p.ok("EX_GDBS_SL", &sl(s)).await;
    p.ok("EX_GDBS_SPCL", &spcl(s, 1)).await;
    // A repeat of XH 1 is not a gap once XH 2 is held.
    p.ok("EX_GDBS_SPCL", &spcl(s, 2)).await;
    assert_eq!(
        p.send("EX_GDBS_SPCL", &spcl(s, 1)).await["msg"],
        "数据已存在"
    );
    let held = p.handle.records();
    let first = held.iter().find(|h| h.table == "EX_GDBS_SB").unwrap();
    assert_eq!((first.accepted, first.repeats), (1, 1));
    assert_eq!(
        first.record,
        *sb(s).as_object().unwrap(),
        "the first content kept"
    );
    assert_eq!(p.handle.refusals(), [("1003".to_string(), 1)].into());
}

#[tokio::test]
async fn a_caller_is_known_by_its_signature_timestamp_and_nonce() {
    let p = start().await;
    let body =
        serde_json::to_vec(&json!({"table": "EX_GDBS_SB", "record": sb("GD-SIG-1")})).unwrap();
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = p.http.post(format!("{}/gdbs/api/record", p.url));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.body(body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let unauthorized = |(status, v): (StatusCode, Value), msg: &str| {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
        assert_eq!(v["code"], "401");
        assert!(
            v["msg"].as_str().unwrap().contains(msg),
            "{v} should say {msg}"
        );
    };
    // Signed with another secret; signed for another body.
    let wrong = signed_headers("yichuang", "not-the-secret", &body);
    unauthorized(post(wrong, body.clone()).await, "签名验证失败");
    let other = signed_headers("yichuang", "platform-secret", b"{}");
    unauthorized(post(other, body.clone()).await, "签名验证失败");
    // A timestamp 301 s old, correctly signed.
    let stale = (chrono::Utc::now().timestamp_millis() - 301_000).to_string();
    let nonce = "n-stale".to_string();
    let signature = sign("platform-secret", "yichuang", &stale, &nonce, &body);
    let headers = vec![
        ("X-App-Id", "yichuang".to_string()),
        ("X-Timestamp", stale),
        ("X-Nonce", nonce),
        ("X-Signature", signature),
    ];
    unauthorized(post(headers, body.clone()).await, "时间戳超出允许范围");
    // Another app; a header missing.
    let mut headers = signed_headers("other-app", "platform-secret", &body);
    unauthorized(
        post(headers.clone(), body.clone()).await,
        "应用 other-app 未注册",
    );
    headers = signed_headers("yichuang", "platform-secret", &body);
    let without_nonce: Vec<_> = headers
        .iter()
        .filter(|(k, _)| *k != "X-Nonce")
        .cloned()
        .collect();
    unauthorized(
        post(without_nonce, body.clone()).await,
        "缺少请求头 X-Nonce",
    );
    // Good once; the same request again is a replay.
    let (status, v) = post(headers.clone(), body.clone()).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::OK, Some("0")));
    unauthorized(post(headers, body.clone()).await, "X-Nonce 重复");
    assert_eq!(p.handle.refusals()["401"], 6);
    assert_eq!(p.handle.records().len(), 1);
}

#[tokio::test]
async fn outage_busy_refusal_and_drop_controls() {
    let p = start().await;
    let s = "GD-CTL-1";
    // Outage over the unsigned control: 503 with an HTML page, then back.
    p.control("outage", json!({"on": true})).await;
    let body = serde_json::to_vec(&json!({"table": "EX_GDBS_SB", "record": sb(s)})).unwrap();
    let mut req = p.http.post(format!("{}/gdbs/api/record", p.url));
    for (k, v) in signed_headers("yichuang", "platform-secret", &body) {
        req = req.header(k, v);
    }
    let r = req.body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("503 Service Temporarily Unavailable")
    );
    p.control("outage", json!({"on": false})).await;
    // Busy: nothing looked at.
    p.control("busy", json!({"share": 1.0})).await;
    assert_eq!(
        p.send("EX_GDBS_SB", &sb(s)).await,
        json!({"code": "9999", "msg": "系统繁忙，请稍后重试"})
    );
    p.handle.set_busy_share(0.0);
    // Refused until cleared, whatever the record.
    p.control(
        "refuse",
        json!({"table": "EX_GDBS_SB", "sblsh": s, "msg": "EX_GDBS_SB.SQRMC 与身份证姓名不一致"}),
    )
    .await;
    p.refused(
        "EX_GDBS_SB",
        &sb(s),
        "1001",
        "EX_GDBS_SB.SQRMC 与身份证姓名不一致",
    )
    .await;
    p.ok("EX_GDBS_SB", &sb("GD-CTL-2")).await;
    let cleared = p
        .control("refuse/clear", json!({"table": "EX_GDBS_SB", "sblsh": s}))
        .await;
    assert_eq!(cleared, json!({"cleared": true}));
    p.ok("EX_GDBS_SB", &sb(s)).await;
    p.ok("EX_GDBS_SL", &sl(s)).await;
    // Dropped silently: the query no longer has it; sent again it is taken again.
    let dropped = p
        .control("drop", json!({"table": "EX_GDBS_SL", "sblsh": s, "xh": 1}))
        .await;
    assert_eq!(dropped, json!({"dropped": true}));
    assert_eq!(p.query(&[s]).await.len(), 1);
    p.ok("EX_GDBS_SL", &sl(s)).await;
    assert_eq!(p.query(&[s]).await.len(), 2);
    let held: Vec<Value> = p
        .http
        .get(format!("{}/sim/platform/records", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again = held.iter().find(|h| h["table"] == "EX_GDBS_SL").unwrap();
    assert_eq!(
        (again["accepted"].as_u64(), again["dropped"].as_u64()),
        (Some(2), Some(1))
    );
    let refusals: Value = p
        .http
        .get(format!("{}/sim/platform/refusals", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refusals, json!({"1001": 1, "503": 1, "9999": 1}));
    // At most 100 SBLSH a query.
    let many: Vec<String> = (0..101).map(|i| format!("GD-{i}")).collect();
    let (_, v) = p
        .post_signed("/gdbs/api/query", &json!({"sblsh": many}))
        .await;
    assert_eq!(v["code"], "1001");
    assert!(v["msg"].as_str().unwrap().contains("最多查询 100 个"));
}

/// A schema of the test's own in the suite's PostgreSQL, dropped when the guard goes, a
/// failing test's included.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        let url = pg_url();
        // On a thread of its own: the test's runtime may be gone or unwinding.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(Ok(c)) = tokio::time::timeout(
                    Duration::from_secs(10),
                    yichuang::tls::connect_postgres(&url),
                )
                .await
                else {
                    return;
                };
                let _ = c
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                    ))
                    .await;
            });
        })
        .join();
    }
}

fn pg_url() -> String {
    std::env::var("YICHUANG_TEST_PG_URL").expect(
        "YICHUANG_TEST_PG_URL is not set: run with `make test` (or source target/services.env)",
    )
}

/// Inserts a record as our reporter would: one text column per field.
async fn insert(c: &tokio_postgres::Client, schema: &str, table: &str, record: &Value) {
    let obj = record.as_object().unwrap();
    let columns: Vec<String> = obj.keys().map(|k| k.to_ascii_lowercase()).collect();
    let values: Vec<String> = obj
        .iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("XH", v) => v.to_string(),
            (_, Value::String(s)) => format!("'{}'", s.replace('\'', "''")),
            (_, v) => format!("'{}'", v.to_string().replace('\'', "''")),
        })
        .collect();
    c.batch_execute(&format!(
        "INSERT INTO {schema}.{} ({}) VALUES ({})",
        table.to_ascii_lowercase(),
        columns.join(", "),
        values.join(", ")
    ))
    .await
    .unwrap();
}

/// A row's handshake flag and message, once it left '0'.
async fn settled(
    c: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    sblsh: &str,
    xh: i32,
) -> (String, String) {
    let sql = format!(
        "SELECT sync_sign::text, coalesce(sync_msg, ''), sync_time IS NOT NULL FROM {schema}.{} \
         WHERE sblsh = $1 AND xh = $2",
        table.to_ascii_lowercase()
    );
    eventually(&format!("{table} {sblsh} settled"), WAIT, || async {
        let row = c.query_one(&sql, &[&sblsh, &xh]).await.unwrap();
        let sign: String = row.get(0);
        (sign != "0").then(|| {
            assert!(row.get::<_, bool>(2), "sync_time is written");
            (sign, row.get(1))
        })
    })
    .await
}

#[tokio::test]
async fn the_collector_takes_rows_in_order_refuses_out_of_order_and_takes_corrections() {
    let schema = Schema(format!("xplat_{}", uuid::Uuid::new_v4().simple()));
    let s = &schema.0;
    let (addr, handle): (SocketAddr, PlatformHandle) = spawn(Settings {
        exchange: Some(ExchangeSettings {
            url: pg_url(),
            schema: s.clone(),
            poll_ms: 50,
        }),
        ..Settings::default()
    })
    .await
    .unwrap();
    let p = Platform {
        handle,
        url: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };
    let c = yichuang::tls::connect_postgres(&pg_url()).await.unwrap();

    // SB and SL written in one transaction (the same insert_time): taken in stage order.
    let a = "GD-TAB-1";
    c.batch_execute("BEGIN").await.unwrap();
    insert(&c, s, "EX_GDBS_SL", &sl(a)).await;
    insert(&c, s, "EX_GDBS_SB", &sb(a)).await;
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        settled(&c, s, "EX_GDBS_SB", a, 1).await,
        ("1".into(), "接收成功".into())
    );
    assert_eq!(settled(&c, s, "EX_GDBS_SL", a, 1).await.0, "1");

    // Out of order: refused with the reason, then corrected and set back to '0'.
    let b = "GD-TAB-2";
    insert(&c, s, "EX_GDBS_SL", &sl(b)).await;
    let (sign, msg) = settled(&c, s, "EX_GDBS_SL", b, 1).await;
    assert_eq!(sign, "2");
    assert_eq!(
        msg,
        format!("EX_GDBS_SL 前置环节 EX_GDBS_SB 不存在 (SBLSH={b})")
    );
    let bad_id = with(sb(b), "SQRZJHM", json!("440524188001010015"));
    insert(&c, s, "EX_GDBS_SB", &bad_id).await;
    let (sign, msg) = settled(&c, s, "EX_GDBS_SB", b, 1).await;
    assert_eq!(
        (sign.as_str(), msg.as_str()),
        ("2", "EX_GDBS_SB.SQRZJHM 身份证号码校验位错误")
    );
    c.execute(
        &format!("UPDATE {s}.ex_gdbs_sb SET sqrzjhm = '440524188001010014', sync_sign = '0' WHERE sblsh = $1"),
        &[&b],
    )
    .await
    .unwrap();
    assert_eq!(settled(&c, s, "EX_GDBS_SB", b, 1).await.0, "1");
    c.execute(
        &format!("UPDATE {s}.ex_gdbs_sl SET sync_sign = '0' WHERE sblsh = $1"),
        &[&b],
    )
    .await
    .unwrap();
    assert_eq!(settled(&c, s, "EX_GDBS_SL", b, 1).await.0, "1");

    // A sequence gap; an evaluation with its indicators as JSON text.
    insert(&c, s, "EX_GDBS_SPCL", &spcl(a, 2)).await;
    let (sign, msg) = settled(&c, s, "EX_GDBS_SPCL", a, 2).await;
    assert_eq!(sign, "2");
    assert!(msg.contains("EX_GDBS_SPCL.XH=2 不连续，应为 1"), "{msg}");
    insert(&c, s, "EX_GDBS_BJ", &bj(a, "6")).await;
    insert(&c, s, "EX_HCP_PJ", &pj(a, "1")).await;
    assert_eq!(settled(&c, s, "EX_HCP_PJ", a, 1).await.0, "1");

    // Both transports share one store: HTTP sees the table's records, and the other way.
    let data = p.query(&[a]).await;
    assert_eq!(data.len(), 4);
    assert_eq!(
        data[3]["record"],
        pj(a, "1"),
        "ZBPJ read back as the JSON array"
    );
    p.ok("EX_HCP_ZGFK", &zgfk(a)).await;
    let held = p.handle.records();
    assert!(
        held.iter()
            .any(|h| h.table == "EX_HCP_PJ" && h.transport == Transport::Table)
    );

    // A control refusal shows as '2'; during an outage nothing is collected.
    p.handle
        .refuse("EX_GDBS_SB", "GD-TAB-3", "EX_GDBS_SB 申请人信息核验不通过")
        .unwrap();
    insert(&c, s, "EX_GDBS_SB", &sb("GD-TAB-3")).await;
    assert_eq!(
        settled(&c, s, "EX_GDBS_SB", "GD-TAB-3", 1).await,
        ("2".into(), "EX_GDBS_SB 申请人信息核验不通过".into())
    );
    p.handle.set_outage(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    insert(&c, s, "EX_GDBS_SB", &sb("GD-TAB-4")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sign: String = c
        .query_one(
            &format!("SELECT sync_sign::text FROM {s}.ex_gdbs_sb WHERE sblsh = 'GD-TAB-4'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sign, "0", "not collected during the outage");
    p.handle.set_outage(false);
    assert_eq!(settled(&c, s, "EX_GDBS_SB", "GD-TAB-4", 1).await.0, "1");

    // Dropped: the row is gone and so is the record.
    assert!(p.handle.drop_record("EX_HCP_PJ", a, 1).await.unwrap());
    let rows = c
        .query(
            &format!("SELECT 1 FROM {s}.ex_hcp_pj WHERE sblsh = $1"),
            &[&a],
        )
        .await
        .unwrap();
    assert!(rows.is_empty());
    assert_eq!(p.query(&[a]).await.len(), 4, "SB, SL, BJ and the HTTP ZGFK");
    drop(p);
}
