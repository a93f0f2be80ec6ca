//! The SMS platform's interface, described in the notifier's settings (`[sms]`) instead of
//! written in code, as provincial SMS platforms differ only in names: the URL, the body (a form
//! or JSON, each field a MiniJinja template), the signature (MD5, SHA-256 or HMAC-SHA256 over a
//! templated string of account, timestamp and secret), and how its answer says sent, throttled,
//! busy or refused. The mobile number goes in the body and nowhere else: whatever the platform
//! answers is masked before it is kept or logged.
//!
//! This module owns the wire; which notice and when is the notifier's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{Limits, SecretRef};
use crate::mapping::Template;

/// `[sms]`: the SMS platform's HTTP interface.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// Where messages are POSTed (`https://`; `http://` only to this machine).
    pub url: String,
    /// `form` (application/x-www-form-urlencoded) or `json`.
    #[serde(default)]
    pub format: BodyFormat,
    /// The account the platform gave us (`{{ account }}` in templates).
    pub account: String,
    /// The account's secret: `{ env = "VAR" }` or `{ file = "PATH" }`.
    pub secret: SecretRef,
    /// How `{{ timestamp }}` is written: `unix` (seconds), `unix_ms`, or a strftime format in
    /// the hall's time (`%Y%m%d%H%M%S`).
    #[serde(default = "default_timestamp")]
    pub timestamp: String,
    pub signature: SignatureConfig,
    /// The body's fields, each a template over `account`, `timestamp`, `sign`, `mobile`,
    /// `text` and `message_id`.
    pub fields: BTreeMap<String, Template>,
    pub answer: AnswerConfig,
    /// The same limits as a department's: calls a second, at once, and a call's bound.
    #[serde(default)]
    pub limits: Limits,
    /// The CA that signs the platform's certificate (PEM), when it is not a public one.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_timestamp() -> String {
    "unix".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Form,
    Json,
}

/// `[sms.signature]`: `{{ sign }}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// `md5`, `sha256` (digests of `input`, which then names `{{ secret }}`) or `hmac-sha256`
    /// (keyed with the secret).
    pub algorithm: Algorithm,
    /// What is signed: a template over `account`, `timestamp`, `secret`, `mobile`, `text`,
    /// `message_id`.
    pub input: Template,
    /// Upper-case hex (some platforms compare case-sensitively).
    #[serde(default)]
    pub uppercase: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Algorithm {
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "sha256")]
    Sha256,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

/// `[sms.answer]`: how the platform's JSON answer is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerConfig {
    /// The answer's code (a JSON pointer, `/code`).
    pub code: String,
    /// Its words (a JSON pointer, `/msg`).
    #[serde(default)]
    pub message: String,
    /// Codes that mean sent (or already sent: the platform deduplicates on the message id).
    pub success: Vec<String>,
    /// Codes that mean too fast: tried again after a backoff.
    #[serde(default)]
    pub throttle: Vec<String>,
    /// Codes that mean busy: tried again after a backoff. Any other code is a refusal.
    #[serde(default)]
    pub retry: Vec<String>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Too fast (the platform's throttle or 429): tried again later.
    Throttled(String),
    /// Not answered, 5xx, a busy code: tried again later.
    Retry(String),
    /// Refused for good, in the platform's words (masked).
    Refused(String),
}

/// The interface, ready to send.
pub struct Sms {
    config: SmsConfig,
    secret: String,
    offset: chrono::FixedOffset,
    client: reqwest::Client,
}

/// The wire form of one message (its mobile number in clear: never logged).
pub struct Message<'a> {
    pub mobile: &'a str,
    pub text: &'a str,
    pub message_id: &'a str,
}

impl Sms {
    pub fn new(config: &SmsConfig, offset: chrono::FixedOffset) -> Result<Sms, String> {
        crate::report::transport::plain_http_only_locally("url", &config.url)
            .map_err(|e| e.replace("[transport]", "[sms]"))?;
        if config.limits.requests_per_second == 0 || config.limits.concurrency == 0 {
            return Err(
                "[sms.limits] requests_per_second and concurrency must be at least 1".into(),
            );
        }
        if config.answer.success.is_empty() {
            return Err("[sms.answer] success: name the code(s) that mean sent".into());
        }
        let timeout = Duration::from_secs(config.limits.timeout_secs.max(1));
        let tls = yichuang::tls::ClientTls {
            ca_file: config.ca_file.clone(),
            ..Default::default()
        };
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        let client = tls
            .reqwest(builder, "[sms]")
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Sms {
            config: config.clone(),
            secret: config
                .secret
                .resolve()
                .map_err(|e| format!("[sms] secret: {e}"))?,
            offset,
            client,
        })
    }

    pub fn config(&self) -> &SmsConfig {
        &self.config
    }

    fn timestamp(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        match self.config.timestamp.as_str() {
            "unix" => now.timestamp().to_string(),
            "unix_ms" => now.timestamp_millis().to_string(),
            f => now.with_timezone(&self.offset).format(f).to_string(),
        }
    }

    /// The body's fields for `m` at `now`.
    pub fn fields(
        &self,
        m: &Message<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut vars = json!({
            "account": self.config.account,
            "timestamp": self.timestamp(now),
            "mobile": m.mobile,
            "text": m.text,
            "message_id": m.message_id,
        });
        let mut with_secret = vars.clone();
        with_secret["secret"] = json!(self.secret);
        let input = self
            .config
            .signature
            .input
            .render(&with_secret)
            .map_err(|e| format!("[sms.signature] input: {e}"))?;
        vars["sign"] = json!(sign(
            self.config.signature.algorithm,
            &self.secret,
            &input,
            self.config.signature.uppercase
        ));
        self.config
            .fields
            .iter()
            .map(|(k, t)| {
                t.render(&vars)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| format!("[sms.fields] {k}: {e}"))
            })
            .collect()
    }

    /// Sends one message; what the platform said, masked.
    pub async fn send(&self, m: &Message<'_>) -> Outcome {
        let fields = match self.fields(m, chrono::Utc::now()) {
            Ok(f) => f,
            Err(e) => return Outcome::Refused(e),
        };
        let request = self.client.post(&self.config.url);
        let request = match self.config.format {
            BodyFormat::Form => request.form(&fields),
            BodyFormat::Json => request.json(&fields),
        };
        let answer = match request.send().await {
            Ok(a) => a,
            Err(e) if e.is_timeout() => {
                return Outcome::Retry("the SMS platform did not answer in time".into());
            }
            Err(e) => {
                return Outcome::Retry(yichuang::privacy::mask_free_text(&format!(
                    "the SMS platform: {e}"
                )));
            }
        };
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        // The platform may echo the number in any form (with 86 or +86 before it, which the
        // free-text masker does not take for a mobile): the number itself is masked first.
        let text = if m.mobile.is_empty() {
            text
        } else {
            text.replace(m.mobile, &yichuang::privacy::mask_mobile(m.mobile))
        };
        let text = yichuang::privacy::mask_free_text(&text);
        if status.as_u16() == 429 {
            return Outcome::Throttled(format!("HTTP 429 {}", clip(&text)));
        }
        if status.is_server_error() || status.as_u16() == 408 {
            return Outcome::Retry(format!("HTTP {} {}", status.as_u16(), clip(&text)));
        }
        read_answer(&self.config.answer, status.as_u16(), &text)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Reads the platform's answer (`text`, already masked) by `[sms.answer]`.
pub fn read_answer(a: &AnswerConfig, status: u16, text: &str) -> Outcome {
    let Ok(body) = serde_json::from_str::<Value>(text) else {
        return Outcome::Retry(format!("HTTP {status}: not JSON: {}", clip(text)));
    };
    let as_text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let code = as_text(body.pointer(&a.code));
    let words = if a.message.is_empty() {
        String::new()
    } else {
        as_text(body.pointer(&a.message))
    };
    let said = format!("{code} {words}").trim().to_string();
    if a.success.contains(&code) {
        Outcome::Sent
    } else if a.throttle.contains(&code) {
        Outcome::Throttled(said)
    } else if a.retry.contains(&code) {
        Outcome::Retry(said)
    } else if code.is_empty() {
        Outcome::Retry(format!(
            "HTTP {status}: no code at {}: {}",
            a.code,
            clip(text)
        ))
    } else {
        Outcome::Refused(said)
    }
}

/// The signature of `input`, in hex.
pub fn sign(algorithm: Algorithm, secret: &str, input: &str, uppercase: bool) -> String {
    let bytes: Vec<u8> = match algorithm {
        Algorithm::Md5 => {
            use md5::Digest;
            md5::Md5::digest(input.as_bytes()).to_vec()
        }
        Algorithm::Sha256 => {
            use sha2::Digest;
            sha2::Sha256::digest(input.as_bytes()).to_vec()
        }
        Algorithm::HmacSha256 => {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
                .expect("any key length");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if uppercase { hex.to_uppercase() } else { hex }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_and_hmac_signatures_match_known_values() {
        // RFC 1321's test suite: MD5("abc").
        assert_eq!(
            sign(Algorithm::Md5, "", "abc", false),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            sign(Algorithm::Md5, "", "abc", true),
            "900150983CD24FB0D6963F7D28E17F72"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            sign(
                Algorithm::HmacSha256,
                "Jefe",
                "what do ya want for nothing?",
                false
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn config() -> SmsConfig {
        toml::from_str(
            r#"
            url = "http://127.0.0.1:1/sms/send"
            account = "yc"
            secret = { env = "YICHUANG_TEST_SMS_SECRET_UNIT" }
            [signature]
            algorithm = "md5"
            input = "{{ account }}{{ timestamp }}{{ secret }}"
            [fields]
            account = "{{ account }}"
            ts = "{{ timestamp }}"
            sign = "{{ sign }}"
            mobile = "{{ mobile }}"
            content = "{{ text }}"
            msgid = "{{ message_id }}"
            [answer]
            code = "/code"
            message = "/msg"
            success = ["0"]
            throttle = ["107"]
            retry = ["9999"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn the_body_is_made_by_the_description_and_signed_over_account_timestamp_and_secret() {
        let sms = Sms {
            config: config(),
            secret: "s3cret".into(),
            offset: chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
            client: reqwest::Client::new(),
        };
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let f = sms
            .fields(
                &Message {
                    mobile: "13812345678",
                    text: "【政务服务中心】您的申请已受理",
                    message_id: "m1",
                },
                now,
            )
            .unwrap();
        assert_eq!(f["ts"], "1800000000");
        assert_eq!(
            f["sign"],
            sign(Algorithm::Md5, "", "yc1800000000s3cret", false)
        );
        assert_eq!(f["mobile"], "13812345678");
        assert_eq!(f["content"], "【政务服务中心】您的申请已受理");
        assert!(
            !f.values().any(|v| v.contains("s3cret")),
            "the secret is never sent"
        );
    }

    #[test]
    fn answers_are_read_as_sent_throttled_busy_or_refused() {
        let a = config().answer;
        assert_eq!(
            read_answer(&a, 200, r#"{"code":"0","msg":"成功"}"#),
            Outcome::Sent
        );
        assert!(matches!(
            read_answer(&a, 200, r#"{"code":"107","msg":"提交过快"}"#),
            Outcome::Throttled(_)
        ));
        assert!(matches!(
            read_answer(&a, 200, r#"{"code":9999}"#),
            Outcome::Retry(_)
        ));
        assert_eq!(
            read_answer(&a, 200, r#"{"code":"104","msg":"号码格式错误"}"#),
            Outcome::Refused("104 号码格式错误".into())
        );
        assert!(matches!(read_answer(&a, 502, "<html>"), Outcome::Retry(_)));
    }
}
