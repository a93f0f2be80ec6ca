//! The 交通运输-like open-platform gateway (`yichuang_sim::sm4_gateway`) over real HTTP, as its
//! interface document describes it. The client side here does its own SM4-CBC, Base64 and SM3
//! with the RustCrypto crates — nothing from the simulator — so the payloads are shown to be
//! what the document says.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{
    BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit,
};
use common::{eventually, listener};
use serde_json::{Value, json};
use sm3::Digest;
use yichuang_sim::core::{Behaviour, SUPPLEMENT_MATERIALS};
use yichuang_sim::sm4_gateway::{Settings, Sm4GatewaySim};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "0123456789abcdeffedcba9876543210";
const IV: &str = "fedcba98765432100123456789abcdef";

fn hex16(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn seal(key: &str, iv: &str, plain: &[u8]) -> String {
    let sealed = cbc::Encryptor::<sm4::Sm4>::new(&hex16(key).into(), &hex16(iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(plain);
    BASE64.encode(sealed)
}

fn unseal(data: &str) -> Vec<u8> {
    let sealed = BASE64.decode(data).expect("Base64");
    cbc::Decryptor::<sm4::Sm4>::new(&hex16(KEY).into(), &hex16(IV).into())
        .decrypt_padded_vec_mut::<Pkcs7>(&sealed)
        .expect("SM4-CBC with PKCS#7")
}

fn sm3_upper(s: &str) -> String {
    sm3::Sm3::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Hall time (UTC+8) `offset_secs` from now, `yyyyMMddHHmmss`.
fn hall_time(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(8 * 3600 + offset_secs))
        .format("%Y%m%d%H%M%S")
        .to_string()
}

async fn start(behaviour: Behaviour) -> (Arc<Sm4GatewaySim>, String) {
    start_with(Settings {
        behaviour: Behaviour {
            department: "jt".into(),
            decision_delay_ms: 300,
            ..behaviour
        },
        ..Settings::default()
    })
    .await
}

async fn start_with(settings: Settings) -> (Arc<Sm4GatewaySim>, String) {
    let (listener, url) = listener().await;
    let sim = Sm4GatewaySim::new(settings);
    tokio::spawn(sim.clone().serve(listener));
    (sim, url)
}

async fn get_token(url: &str, secret: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{url}/gateway/token"))
        .query(&[("appKey", "yichuang"), ("appSecret", secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    r.json().await.unwrap()
}

/// What a business call sends, each part open to being got wrong on purpose.
struct Call<'a> {
    method: &'a str,
    request: Value,
    timestamp: String,
    key: &'a str,
    sign: Option<String>,
}

impl<'a> Call<'a> {
    fn new(method: &'a str, request: Value) -> Call<'a> {
        Call {
            method,
            request,
            timestamp: hall_time(0),
            key: KEY,
            sign: None,
        }
    }
}

struct Gateway {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Gateway {
    async fn new(url: &str) -> Gateway {
        let answer = get_token(url, "sim-secret").await;
        assert_eq!(answer["code"], "200", "{answer}");
        Gateway {
            http: reqwest::Client::new(),
            url: url.into(),
            token: answer["data"]["token"].as_str().unwrap().into(),
        }
    }

    /// The answer's envelope as it came.
    async fn send(&self, call: Call<'_>) -> Value {
        let data = seal(call.key, IV, call.request.to_string().as_bytes());
        let sign = call.sign.unwrap_or_else(|| {
            sm3_upper(&format!(
                "yichuang{}{}{data}sim-sign-secret",
                call.method, call.timestamp
            ))
        });
        let r = self
            .http
            .post(format!("{}/gateway/api", self.url))
            .query(&[("method", call.method), ("token", self.token.as_str())])
            .form(&[
                ("appKey", "yichuang"),
                ("timestamp", call.timestamp.as_str()),
                ("data", data.as_str()),
                ("sign", sign.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        r.json().await.unwrap()
    }

    /// Code, message and decrypted data of a call.
    async fn call(&self, method: &str, request: Value) -> (String, String, Option<Value>) {
        let envelope = self.send(Call::new(method, request)).await;
        let data = envelope
            .get("data")
            .map(|d| serde_json::from_slice(&unseal(d.as_str().expect("text"))).unwrap());
        (
            envelope["code"].as_str().unwrap().into(),
            envelope["msg"].as_str().unwrap().into(),
            data,
        )
    }

    async fn open(&self, serial: &str) -> String {
        let (code, msg, data) = self.call("case.submit", application(serial)).await;
        assert_eq!((code.as_str(), msg.as_str()), ("200", "成功"));
        data.unwrap()["ajbh"].as_str().unwrap().into()
    }

    /// The case once `blzt` is `wanted`.
    async fn until(&self, ajbh: &str, wanted: &str) -> Value {
        eventually(&format!("{ajbh} {wanted}"), WAIT, || async {
            let (code, _, data) = self.call("case.query", json!({"ajbh": ajbh})).await;
            assert_eq!(code, "200");
            let data = data.unwrap();
            (data["blzt"] == wanted).then_some(data)
        })
        .await
    }

    async fn supplement(&self, ajbh: &str, serial: &str, round: u32) -> (String, String) {
        let (code, msg, _) = self
            .call(
                "case.supplement",
                json!({
                    "ajbh": ajbh, "bzlsh": serial, "bzcs": round,
                    "clqd": [{"clbm": "PMT", "clmc": "经营场所平面图及设备布局图", "clxs": "原件",
                              "fs": 1, "wjdz": "https://files.example/pmt.pdf", "wjzy": "00"}],
                }),
            )
            .await;
        (code, msg)
    }
}

fn application(serial: &str) -> Value {
    json!({
        "lsh": serial,
        "sxbm": "JT-YS-001",
        "sqr": "银川某某运输有限公司",
        "sqrzjh": "91640100MA76XXXXXX",
        "sqsj": "2019年10月22日 10时30分",
        "cls": 3,
    })
}

fn is_bjsj(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y年%m月%d日 %H时%M分")
            .is_ok_and(|t| t.format("%Y年%m月%d日 %H时%M分").to_string() == s)
    })
}

#[test]
fn the_crates_are_the_standard_algorithms() {
    // GB/T 32907-2016 appendix A: one block.
    let key = hex16(KEY);
    let mut block = key.into();
    sm4::Sm4::new(&key.into()).encrypt_block(&mut block);
    assert_eq!(hex(&block), "681edf34d206965e86b3e94f536e4246");
    // GB/T 32905-2016 appendix A: "abc".
    assert_eq!(
        sm3_upper("abc"),
        "66C7F0F462EEEDD9D1F2D46BDC10E4E24167C4875CF2F7A2297DA02B8F4BA8E0"
    );
}

#[tokio::test]
async fn tokens_are_given_in_minutes() {
    let (_sim, url) = start(Behaviour::default()).await;
    let answer = get_token(&url, "wrong").await;
    assert_eq!(
        answer,
        json!({"code": "401", "msg": "appKey或appSecret错误"})
    );
    let answer = get_token(&url, "sim-secret").await;
    assert_eq!(
        (&answer["code"], &answer["msg"]),
        (&json!("200"), &json!("成功"))
    );
    assert_eq!(answer["data"]["expireMinutes"], 120, "7200 s");
    assert_eq!(answer["data"]["token"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn answers_are_sm4_cbc_with_the_configured_iv() {
    let (_sim, url) = start(Behaviour::default()).await;
    let gw = Gateway::new(&url).await;
    let envelope = gw.send(Call::new("case.submit", application("T-1"))).await;
    assert_eq!(envelope["code"], "200");
    let data = envelope["data"].as_str().unwrap();
    assert!(!data.contains("ajbh"), "not plain text: {data}");
    let sealed = BASE64.decode(data).unwrap();
    assert_eq!(sealed.len() % 16, 0, "whole SM4 blocks");
    let plain = unseal(data);
    let answer: Value = serde_json::from_slice(&plain).unwrap();
    assert!(
        answer["ajbh"].as_str().unwrap().starts_with("JT"),
        "{answer}"
    );
    // CBC by hand for the first block: SM4-decrypt it and XOR the IV.
    let mut block = <[u8; 16]>::try_from(&sealed[..16]).unwrap().into();
    sm4::Sm4::new(&hex16(KEY).into()).decrypt_block(&mut block);
    let first: Vec<u8> = block.iter().zip(hex16(IV)).map(|(b, v)| b ^ v).collect();
    assert_eq!(first, plain[..16]);
    // The padding is PKCS#7: the last byte says how many, each the same.
    let mut whole = sealed.clone();
    let cipher = sm4::Sm4::new(&hex16(KEY).into());
    let mut previous = hex16(IV);
    for chunk in whole.chunks_mut(16) {
        let sealed_block: [u8; 16] = chunk.try_into().unwrap();
        let mut b = sealed_block.into();
        cipher.decrypt_block(&mut b);
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = b[i] ^ previous[i];
        }
        previous = sealed_block;
    }
    let pad = *whole.last().unwrap() as usize;
    assert!((1..=16).contains(&pad));
    assert!(
        whole[whole.len() - pad..]
            .iter()
            .all(|b| *b as usize == pad)
    );
    assert_eq!(whole[..whole.len() - pad], plain[..]);
}

#[tokio::test]
async fn a_serial_submitted_again_is_409_and_found_by_serial() {
    let (sim, url) = start(Behaviour::default()).await;
    let gw = Gateway::new(&url).await;
    let ajbh = gw.open("T-1").await;
    let envelope = gw.send(Call::new("case.submit", application("T-1"))).await;
    assert_eq!(envelope, json!({"code": "409", "msg": "业务流水号已存在"}));
    let stats = sim.sim.stats();
    assert_eq!((stats.cases, stats.duplicates), (1, 1));

    let (code, _, found) = gw.call("case.find", json!({"lsh": "T-1"})).await;
    assert_eq!(code, "200");
    assert_eq!(found.unwrap()["ajbh"], ajbh.as_str());
    let (code, msg, data) = gw.call("case.find", json!({"lsh": "T-NONE"})).await;
    assert_eq!(
        (code.as_str(), msg.as_str(), data),
        ("404", "记录不存在", None)
    );
    let (code, msg, _) = gw.call("case.query", json!({"ajbh": "JT-NONE"})).await;
    assert_eq!((code.as_str(), msg.as_str()), ("404", "记录不存在"));
}

#[tokio::test]
async fn a_system_that_does_not_check_opens_a_second_case() {
    let (sim, url) = start(Behaviour {
        accept_duplicate_serials: true,
        ..Behaviour::default()
    })
    .await;
    let gw = Gateway::new(&url).await;
    assert_ne!(gw.open("T-1").await, gw.open("T-1").await);
    assert_eq!(sim.sim.stats().cases, 2);
}

#[tokio::test]
async fn a_rejection_is_banjie_with_buyu_xuke() {
    let (_sim, url) = start(Behaviour {
        reject: 1.0,
        supplement: 0.0,
        ..Behaviour::default()
    })
    .await;
    let gw = Gateway::new(&url).await;
    let ajbh = gw.open("T-1").await;
    let (_, _, first) = gw.call("case.query", json!({"ajbh": ajbh})).await;
    let first = first.unwrap();
    if first["blzt"] != "办结" {
        assert_eq!((&first["spjg"], &first["bjsj"]), (&json!(""), &json!("")));
    }
    let d = gw.until(&ajbh, "办结").await;
    assert_eq!(d["ajbh"], ajbh.as_str());
    assert_eq!(d["spjg"], "不予许可", "{d}");
    assert_eq!(d["jdmc"], "办结");
    assert_eq!(d["yj"], "经营场所与申报不符");
    assert_eq!((&d["zzbh"], &d["zzmc"]), (&json!(""), &json!("")));
    assert!(is_bjsj(&d["bjsj"]), "{d}");
}

#[tokio::test]
async fn an_approval_is_banjie_with_zhunyu_xuke() {
    let (_sim, url) = start(Behaviour {
        reject: 0.0,
        supplement: 0.0,
        clock_skew_secs: -120,
        ..Behaviour::default()
    })
    .await;
    let gw = Gateway::new(&url).await;
    let ajbh = gw.open("T-1").await;
    let d = gw.until(&ajbh, "办结").await;
    assert_eq!(d["spjg"], "准予许可", "{d}");
    assert_eq!(d["zzmc"], "道路运输经营许可证");
    assert!(d["zzbh"].as_str().unwrap().starts_with("ZZ"), "{d}");
    assert_eq!(d["yj"], "");
    assert!(is_bjsj(&d["bjsj"]), "{d}");
    // From the system's clock, two minutes slow (allowing for a minute boundary on the way).
    let bjsj =
        chrono::NaiveDateTime::parse_from_str(d["bjsj"].as_str().unwrap(), "%Y年%m月%d日 %H时%M分")
            .unwrap();
    let hall = (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc();
    let behind = (hall - bjsj).num_seconds();
    assert!((60..=240).contains(&behind), "{behind} s behind");
}

#[tokio::test]
async fn a_supplement_round_trip() {
    let (sim, url) = start(Behaviour {
        reject: 0.0,
        supplement: 1.0,
        ..Behaviour::default()
    })
    .await;
    let gw = Gateway::new(&url).await;
    let ajbh = gw.open("T-1").await;
    assert_eq!(
        gw.supplement(&ajbh, "T-1-S1", 1).await,
        ("400".into(), "办件不在补正状态".into()),
        "not waiting yet"
    );
    let d = gw.until(&ajbh, "补正").await;
    assert_eq!(d["bclx"], SUPPLEMENT_MATERIALS);
    assert_eq!((&d["spjg"], &d["bjsj"]), (&json!(""), &json!("")));

    let (code, msg, data) = gw
        .call(
            "case.supplement",
            json!({"ajbh": ajbh, "bzlsh": "T-1-S1", "bzcs": "1",
                   "clqd": [{"clbm": "PMT", "clmc": "经营场所平面图及设备布局图"}]}),
        )
        .await;
    assert_eq!((code.as_str(), msg.as_str()), ("200", "成功"));
    assert_eq!(data, Some(json!({})));
    assert_eq!(
        gw.supplement(&ajbh, "T-1-S1", 1).await,
        ("409".into(), "业务流水号已存在".into()),
        "the same round again"
    );
    let d = gw.until(&ajbh, "办结").await;
    assert_eq!(d["spjg"], "准予许可", "{d}");
    let stats = sim.sim.stats();
    assert_eq!((stats.supplements, stats.duplicates), (1, 1));
    assert_eq!(
        gw.supplement("JT-NONE", "X-S1", 1).await,
        ("404".into(), "记录不存在".into())
    );
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let (sim, url) = start_with(Settings {
        token_ttl_secs: 2,
        ..Settings::default()
    })
    .await;
    let answer = get_token(&url, "sim-secret").await;
    assert_eq!(
        answer["data"]["expireMinutes"], 1,
        "under a minute still says 1"
    );
    let gw = Gateway::new(&url).await;
    gw.open("T-1").await;
    eventually("the token expires", WAIT, || async {
        let envelope = gw.send(Call::new("case.find", json!({"lsh": "T-1"}))).await;
        (envelope == json!({"code": "401", "msg": "token已过期"})).then_some(())
    })
    .await;
    assert!(sim.refused_tokens() >= 1);
}

#[tokio::test]
async fn wrong_signatures_and_timestamps_are_403() {
    let (sim, url) = start(Behaviour::default()).await;
    let gw = Gateway::new(&url).await;
    let signature = json!({"code": "403", "msg": "签名错误"});
    let wrong = Call {
        sign: Some(sm3_upper("something else")),
        ..Call::new("case.submit", application("T-1"))
    };
    assert_eq!(gw.send(wrong).await, signature);
    // Right, but lowercase.
    let call = Call::new("case.submit", application("T-1"));
    let data = seal(KEY, IV, call.request.to_string().as_bytes());
    let lower = sm3_upper(&format!(
        "yichuangcase.submit{}{data}sim-sign-secret",
        call.timestamp
    ))
    .to_lowercase();
    let lowercase = Call {
        sign: Some(lower),
        ..call
    };
    assert_eq!(gw.send(lowercase).await, signature);
    assert_eq!(sim.refused_signatures(), 2);

    let stale = Call {
        timestamp: hall_time(-306),
        ..Call::new("case.submit", application("T-1"))
    };
    assert_eq!(
        gw.send(stale).await,
        json!({"code": "403", "msg": "时间戳无效"})
    );
    let utc = Call {
        timestamp: hall_time(-8 * 3600),
        ..Call::new("case.submit", application("T-1"))
    };
    assert_eq!(
        gw.send(utc).await["msg"],
        "时间戳无效",
        "UTC is not hall time"
    );
    assert_eq!(sim.sim.stats().cases, 0);
}

#[tokio::test]
async fn the_timestamp_is_checked_against_the_systems_own_clock() {
    let (_sim, url) = start(Behaviour {
        clock_skew_secs: 600,
        ..Behaviour::default()
    })
    .await;
    let gw = Gateway::new(&url).await;
    let envelope = gw.send(Call::new("case.submit", application("T-1"))).await;
    assert_eq!(envelope, json!({"code": "403", "msg": "时间戳无效"}));
    let by_its_clock = Call {
        timestamp: hall_time(600),
        ..Call::new("case.submit", application("T-1"))
    };
    assert_eq!(gw.send(by_its_clock).await["code"], "200");
}

#[tokio::test]
async fn validation_and_decryption_failures_are_400() {
    let (sim, url) = start(Behaviour::default()).await;
    let gw = Gateway::new(&url).await;
    for wrong in [
        "2019-10-22 10:30",
        "2019年10月22日",
        "2019年10月22日 10时30分00秒",
        "2019年10月22日 9时30分",
    ] {
        let mut request = application("T-1");
        request["sqsj"] = json!(wrong);
        let envelope = gw.send(Call::new("case.submit", request)).await;
        assert_eq!(
            envelope,
            json!({"code": "400", "msg": "sqsj格式错误"}),
            "{wrong}"
        );
    }
    let mut request = application("T-1");
    request.as_object_mut().unwrap().remove("sqrzjh");
    let envelope = gw.send(Call::new("case.submit", request)).await;
    assert_eq!(envelope, json!({"code": "400", "msg": "缺少必填项 sqrzjh"}));

    let other_key = Call {
        key: "00112233445566778899aabbccddeeff",
        ..Call::new("case.submit", application("T-1"))
    };
    assert_eq!(
        gw.send(other_key).await,
        json!({"code": "400", "msg": "报文解密失败"})
    );
    let envelope = gw.send(Call::new("case.close", json!({}))).await;
    assert_eq!(
        envelope,
        json!({"code": "400", "msg": "不支持的方法 case.close"})
    );
    assert_eq!(sim.sim.stats().cases, 0);
}

#[tokio::test]
async fn faults_are_http_level() {
    let http = reqwest::Client::new();
    let (_sim, url) = start(Behaviour {
        too_many: 1.0,
        retry_after_secs: 2,
        ..Behaviour::default()
    })
    .await;
    let r = http
        .get(format!(
            "{url}/gateway/token?appKey=yichuang&appSecret=sim-secret"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[reqwest::header::RETRY_AFTER], "2");

    let (_sim, url) = start(Behaviour {
        server_error: 1.0,
        ..Behaviour::default()
    })
    .await;
    let (mut pages, mut busy) = (0, 0);
    for _ in 0..40 {
        let r = http
            .get(format!(
                "{url}/gateway/token?appKey=yichuang&appSecret=sim-secret"
            ))
            .send()
            .await
            .unwrap();
        match r.status() {
            reqwest::StatusCode::BAD_GATEWAY => {
                assert!(r.text().await.unwrap().contains("502 Bad Gateway"));
                pages += 1;
            }
            reqwest::StatusCode::OK => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body, json!({"code": "503", "msg": "系统繁忙"}));
                busy += 1;
            }
            other => panic!("{other}"),
        }
    }
    assert!(
        pages > 0 && busy > 0,
        "both kinds: {pages} pages, {busy} busy"
    );

    let (_sim, url) = start(Behaviour {
        maintenance_ms: 60_000,
        ..Behaviour::default()
    })
    .await;
    let r = http
        .get(format!(
            "{url}/gateway/token?appKey=yichuang&appSecret=sim-secret"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("系统维护中"));
}
