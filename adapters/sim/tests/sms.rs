//! The simulated SMS platform over HTTP: it takes a well-signed message once (a message sent
//! again with its msgid is answered `0` and not delivered twice), refuses a wrong account,
//! signature or stale timestamp and a malformed number with its own codes, throttles above its
//! rate, and lists what it took with each number masked.

use std::collections::BTreeMap;

use yichuang_sim::sms::{self, Settings};

fn form(
    ts: i64,
    account: &str,
    secret: &str,
    mobile: &str,
    msgid: &str,
) -> BTreeMap<String, String> {
    let ts = ts.to_string();
    BTreeMap::from([
        ("account".to_string(), account.to_string()),
        ("ts".to_string(), ts.clone()),
        ("sign".to_string(), sms::sign(account, &ts, secret)),
        ("mobile".to_string(), mobile.to_string()),
        (
            "content".to_string(),
            "【政务服务中心】您的申请已受理。".to_string(),
        ),
        ("msgid".to_string(), msgid.to_string()),
    ])
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    f: &BTreeMap<String, String>,
) -> (u16, serde_json::Value) {
    let r = client.post(url).form(f).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_signed_message_is_taken_once_and_bad_ones_are_refused_with_the_platforms_codes() {
    let (addr, sim) = sms::spawn(Settings {
        per_second: 1000,
        ..Settings::default()
    })
    .await
    .unwrap();
    let url = format!("http://{addr}/sms/send");
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let ok = form(now, "yichuang", "sms-secret", "13812345678", "m1");
    let (status, body) = post(&client, &url, &ok).await;
    assert_eq!((status, body["code"].as_str()), (200, Some("0")), "{body}");
    let (_, again) = post(&client, &url, &ok).await;
    assert_eq!(again["code"], "0", "a repeat is answered as taken");
    assert_eq!(sim.messages().len(), 1, "and not delivered twice");
    assert_eq!(sim.duplicates(), 1);

    for (f, code) in [
        (
            form(now, "nobody", "sms-secret", "13812345678", "m2"),
            "101",
        ),
        (form(now, "yichuang", "wrong", "13812345678", "m3"), "102"),
        (
            form(now - 3600, "yichuang", "sms-secret", "13812345678", "m4"),
            "103",
        ),
        (form(now, "yichuang", "sms-secret", "1381234", "m5"), "104"),
    ] {
        let (_, body) = post(&client, &url, &f).await;
        assert_eq!(body["code"], code, "{body}");
    }
    assert_eq!(sim.messages().len(), 1);

    let listed: Vec<sms::Received> = client
        .get(format!("http://{addr}/control/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mobile, "138****5678");
    assert_eq!(listed[0].msgid, "m1");
}

#[tokio::test]
async fn above_its_rate_it_throttles_and_when_down_it_answers_503() {
    let (addr, sim) = sms::spawn(Settings {
        per_second: 2,
        ..Settings::default()
    })
    .await
    .unwrap();
    let url = format!("http://{addr}/sms/send");
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let mut codes = Vec::new();
    for i in 0..6 {
        let (_, body) = post(
            &client,
            &url,
            &form(
                now,
                "yichuang",
                "sms-secret",
                "13812345678",
                &format!("t{i}"),
            ),
        )
        .await;
        codes.push(body["code"].as_str().unwrap().to_string());
    }
    assert!(codes.contains(&"107".to_string()), "{codes:?}");
    sim.set_outage(true);
    let (status, _) = post(
        &client,
        &url,
        &form(now, "yichuang", "sms-secret", "13812345678", "down"),
    )
    .await;
    assert_eq!(status, 503);
}
