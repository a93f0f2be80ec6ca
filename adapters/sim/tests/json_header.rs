//! The 卫生健康-like simulator (`yichuang_sim::json_header`) over real HTTP, as its interface
//! document describes it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, listener};
use reqwest::StatusCode;
use serde_json::{Value, json};
use yichuang_sim::core::{Behaviour, SUPPLEMENT_MATERIALS};
use yichuang_sim::json_header::{JsonHeaderSim, Settings};

const WAIT: Duration = Duration::from_secs(10);

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

async fn start(behaviour: Behaviour) -> (Arc<JsonHeaderSim>, String) {
    start_with(Settings {
        behaviour: Behaviour {
            department: "wjw".into(),
            decision_delay_ms: 300,
            ..behaviour
        },
        ..Settings::default()
    })
    .await
}

async fn start_with(settings: Settings) -> (Arc<JsonHeaderSim>, String) {
    let (listener, url) = listener().await;
    let sim = JsonHeaderSim::new(settings);
    tokio::spawn(sim.clone().serve(listener));
    (sim, url)
}

/// An answer's status and JSON body.
async fn read(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "JSON answers"
    );
    (status, r.json().await.unwrap())
}

async fn login(http: &reqwest::Client, url: &str, password: &str) -> (StatusCode, Value) {
    read(
        http.post(format!("{url}/auth/login"))
            .json(&json!({"username": "yichuang", "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

impl Client {
    async fn new(url: &str) -> Client {
        let http = reqwest::Client::new();
        let (status, body) = login(&http, url, "sim-secret").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["success"], true, "{body}");
        let token = body["result"]["accessToken"].as_str().unwrap().to_string();
        Client {
            http,
            url: url.into(),
            token,
        }
    }

    async fn submit(&self, fields: &Value) -> (StatusCode, Value) {
        read(
            self.http
                .post(format!("{}/open/apply", self.url))
                .header("X-Access-Token", &self.token)
                .json(fields)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn status(&self, case_no: &str) -> (StatusCode, Value) {
        read(
            self.http
                .get(format!("{}/open/apply/status", self.url))
                .query(&[("caseNo", case_no)])
                .header("X-Access-Token", &self.token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn supplement(&self, case_no: &str, serial: &str, round: u32) -> (StatusCode, Value) {
        read(
            self.http
                .post(format!("{}/open/apply/supplement", self.url))
                .header("X-Access-Token", &self.token)
                .json(&json!({
                    "caseNo": case_no,
                    "supplementNo": serial,
                    "round": round,
                    "materials": [{
                        "code": "PMT", "name": "经营场所平面图及设备布局图", "form": "原件",
                        "copies": 1, "fileUrl": "https://files.example/pmt.pdf",
                        "sha256": "00".repeat(32),
                    }],
                }))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Submits `serial` and gives its case number.
    async fn open(&self, serial: &str) -> String {
        let (status, body) = self.submit(&application(serial)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["success"], true, "{body}");
        assert_eq!(body["result"]["duplicated"], false, "{body}");
        body["result"]["caseNo"].as_str().unwrap().to_string()
    }

    /// The case's state once `handleStatus` is `wanted`.
    async fn until(&self, case_no: &str, wanted: &str) -> Value {
        eventually(&format!("{case_no} {wanted}"), WAIT, || async {
            let (status, body) = self.status(case_no).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["success"], true, "{body}");
            (body["result"]["handleStatus"] == wanted).then(|| body["result"].clone())
        })
        .await
    }
}

fn application(serial: &str) -> Value {
    json!({
        "bizSerialNo": serial,
        "itemCode": "WJW-001",
        "applicantName": "银川某某诊所",
        "applicantIdNo": "640104199001011234",
        "applyTime": "2019-10-22 10:30:00",
        "contactPhone": 13800000000u64,
    })
}

fn is_finish_time(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok() && s.len() == 19
    })
}

#[tokio::test]
async fn login_refuses_wrong_credentials() {
    let (_sim, url) = start(Behaviour::default()).await;
    let (status, body) = login(&reqwest::Client::new(), &url, "wrong").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": false, "errorCode": "AUTH_FAILED", "message": "用户名或密码错误"})
    );
    let (status, body) = login(&reqwest::Client::new(), &url, "sim-secret").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["expireSeconds"], 7200);
    assert_eq!(
        body["result"]["accessToken"].as_str().unwrap().len(),
        36,
        "a hyphenated uuid"
    );
}

#[tokio::test]
async fn a_serial_submitted_again_is_the_same_case() {
    let (sim, url) = start(Behaviour::default()).await;
    let c = Client::new(&url).await;
    let case_no = c.open("T-1").await;
    assert!(case_no.starts_with("WJW"), "{case_no}");
    let (status, body) = c.submit(&application("T-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": true, "result": {"caseNo": case_no, "duplicated": true}})
    );
    let stats = sim.sim.stats();
    assert_eq!((stats.cases, stats.duplicates), (1, 1));
    let served: Value = reqwest::get(format!("{url}/_sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["duplicates"], 1);
    assert_eq!(served["cases"], 1);
}

#[tokio::test]
async fn a_system_that_does_not_check_opens_a_second_case() {
    let (sim, url) = start(Behaviour {
        accept_duplicate_serials: true,
        ..Behaviour::default()
    })
    .await;
    let c = Client::new(&url).await;
    let first = c.open("T-1").await;
    let second = c.open("T-1").await;
    assert_ne!(first, second);
    let stats = sim.sim.stats();
    assert_eq!((stats.cases, stats.duplicates), (2, 1));
}

#[tokio::test]
async fn a_rejection_is_finished_with_result_0() {
    let (_sim, url) = start(Behaviour {
        reject: 1.0,
        supplement: 0.0,
        ..Behaviour::default()
    })
    .await;
    let c = Client::new(&url).await;
    let case_no = c.open("T-1").await;
    let (_, first) = c.status(&case_no).await;
    let first = &first["result"];
    if first["handleStatus"] != "已办结" {
        assert_eq!(first["handleResult"], "", "undecided: {first}");
        assert!(first["finishTime"].is_null(), "undecided: {first}");
    }
    let r = c.until(&case_no, "已办结").await;
    assert_eq!(r["caseNo"], case_no.as_str());
    assert_eq!(r["handleResult"], "0", "{r}");
    assert_eq!(r["currentNode"], "办结");
    assert_eq!(r["opinion"], "经营场所与申报不符");
    assert!(r["certNo"].is_null() && r["certName"].is_null(), "{r}");
    assert!(is_finish_time(&r["finishTime"]), "{r}");
}

#[tokio::test]
async fn an_approval_is_finished_with_result_1_and_a_licence() {
    let (_sim, url) = start(Behaviour {
        reject: 0.0,
        supplement: 0.0,
        ..Behaviour::default()
    })
    .await;
    let c = Client::new(&url).await;
    let case_no = c.open("T-1").await;
    let r = c.until(&case_no, "已办结").await;
    assert_eq!(r["handleResult"], "1", "{r}");
    assert_eq!(r["certName"], "医疗机构执业许可证");
    assert!(
        r["certNo"].as_str().is_some_and(|n| n.starts_with("ZZ")),
        "{r}"
    );
    assert_eq!(r["opinion"], "");
    assert!(is_finish_time(&r["finishTime"]), "{r}");
    // The same finish time on every query.
    let (_, again) = c.status(&case_no).await;
    assert_eq!(again["result"]["finishTime"], r["finishTime"]);
}

#[tokio::test]
async fn a_supplement_round_trip() {
    let (sim, url) = start(Behaviour {
        reject: 0.0,
        supplement: 1.0,
        ..Behaviour::default()
    })
    .await;
    let c = Client::new(&url).await;
    let case_no = c.open("T-1").await;
    // Not waiting yet.
    let (status, body) = c.supplement(&case_no, "T-1-S1", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": false, "errorCode": "STATE_INVALID", "message": "办件不在待补正状态"})
    );

    let r = c.until(&case_no, "待补正").await;
    assert_eq!(r["handleResult"], "", "{r}");
    assert_eq!(r["needMaterials"], SUPPLEMENT_MATERIALS.replace('、', "；"));
    assert!(r["finishTime"].is_null(), "{r}");

    let (status, body) = c.supplement(&case_no, "T-1-S1", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": true, "result": {"duplicated": false}})
    );
    let (_, back) = c.status(&case_no).await;
    assert_ne!(back["result"]["handleStatus"], "待补正", "{back}");

    let (status, body) = c.supplement(&case_no, "T-1-S1", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"success": true, "result": {"duplicated": true}})
    );

    let r = c.until(&case_no, "已办结").await;
    assert_eq!(r["handleResult"], "1", "{r}");
    let stats = sim.sim.stats();
    assert_eq!((stats.supplements, stats.duplicates), (1, 1));

    let (status, body) = c.supplement("WJW-NONE", "X-S1", 1).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errorCode"], "NOT_FOUND");
}

#[tokio::test]
async fn an_expired_or_missing_token_is_refused() {
    let (sim, url) = start_with(Settings {
        token_ttl_secs: 2,
        ..Settings::default()
    })
    .await;
    let c = Client::new(&url).await;
    let expired = json!({"success": false, "errorCode": "TOKEN_EXPIRED", "message": "令牌已失效，请重新登录"});
    let (status, body) = read(
        c.http
            .post(format!("{url}/open/apply"))
            .json(&application("T-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body), (StatusCode::OK, &expired));
    // Good, then refused once its two seconds are over.
    c.open("T-1").await;
    eventually("the token expires", WAIT, || async {
        let (status, body) = c.submit(&application("T-2")).await;
        assert_eq!(status, StatusCode::OK);
        (body == expired).then_some(())
    })
    .await;
    assert!(sim.refused_tokens() >= 2);
    let (status, body) = c.status("WJW-NONE").await;
    assert_eq!((status, &body), (StatusCode::OK, &expired));
}

#[tokio::test]
async fn validation_is_http_400() {
    let (sim, url) = start(Behaviour::default()).await;
    let c = Client::new(&url).await;
    let mut fields = application("T-1");
    fields["applicantIdNo"] = json!("  ");
    let (status, body) = c.submit(&fields).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"success": false, "errorCode": "PARAM_INVALID", "message": "缺少必填项 applicantIdNo"})
    );
    for wrong in ["2019-10-22", "2019/10/22 10:30:00", "2019-10-22 9:30:00"] {
        let mut fields = application("T-1");
        fields["applyTime"] = json!(wrong);
        let (status, body) = c.submit(&fields).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{wrong}");
        assert_eq!(
            body["message"], "applyTime 格式错误，应为 yyyy-MM-dd HH:mm:ss",
            "{wrong}"
        );
    }
    let (status, body) = c.status("WJW-NONE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"success": false, "errorCode": "NOT_FOUND", "message": "办件不存在"})
    );
    assert_eq!(sim.sim.stats().cases, 0);
}

#[tokio::test]
async fn faults_are_the_documented_ones() {
    let http = reqwest::Client::new();
    let (_sim, url) = start(Behaviour {
        server_error: 1.0,
        ..Behaviour::default()
    })
    .await;
    let (status, body) = login(&http, &url, "sim-secret").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        json!({"success": false, "errorCode": "SYSTEM_ERROR", "message": "系统异常"})
    );

    let (_sim, url) = start(Behaviour {
        too_many: 1.0,
        retry_after_secs: 3,
        ..Behaviour::default()
    })
    .await;
    let r = http
        .post(format!("{url}/auth/login"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[reqwest::header::RETRY_AFTER], "3");

    let (_sim, url) = start(Behaviour {
        maintenance_ms: 60_000,
        ..Behaviour::default()
    })
    .await;
    let r = http
        .post(format!("{url}/auth/login"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("系统维护中"));
}

#[tokio::test]
async fn a_submission_whose_answer_hangs_is_taken() {
    let (sim, url) = start(Behaviour {
        hang: 1.0,
        hang_ms: 1_500,
        ..Behaviour::default()
    })
    .await;
    // Login hangs too, then answers.
    let c = Client::new(&url).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let lost = impatient
        .post(format!("{url}/open/apply"))
        .header("X-Access-Token", &c.token)
        .json(&application("T-1"))
        .send()
        .await;
    assert!(lost.is_err(), "the answer is lost to the client's timeout");
    let case = sim.sim.by_serial("T-1").expect("but the case is taken");
    // Submitted again, the answer (late) names the case it has.
    let (_, body) = c.submit(&application("T-1")).await;
    assert_eq!(
        body,
        json!({"success": true, "result": {"caseNo": case.number, "duplicated": true}})
    );
}
