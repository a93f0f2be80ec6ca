//! `[hotline]`: the 12345 hotline's work orders — how many wrong verification digits one case
//! number may get in a day before progress queries about it are refused until the next, and the
//! working days a complaint's reply is due in, where its replies go, and the file of its
//! classification table (read by `crate::hotline_classes`). The rules that use them are in
//! `crate::hotline`.

use std::path::PathBuf;

use serde::Deserialize;

/// The 12345 hotline settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotlineConfig {
    /// Progress queries refused for wrong verification digits that one case number may get in
    /// one day (the hall's date); after them every query about it is refused until the next day
    /// (default 5; at least 1). Four digits are 10^4 guesses: this bounds them.
    #[serde(default = "default_max_failed_verifications")]
    pub max_failed_verifications: u32,
    /// Working days a complaint's reply (督办答复) is due in, from the day it came, in the
    /// hall's working-day calendar (default 5; at least 1). The yellow warning comes at
    /// `[evaluation] warn_share` of that time, as a rectification's.
    #[serde(default = "default_reply_working_days")]
    pub reply_working_days: u32,
    /// The hotline's reply interface: a complaint's reply is POSTed here once an operator
    /// closes it (JSON, signed like the platform push). Empty: replies are queued, not sent.
    #[serde(default)]
    pub reply_url: String,
    /// The shared secret of the replies' HMAC-SHA256 signature (required with `reply_url`).
    #[serde(default)]
    pub secret: String,
    /// Seconds one POST of a reply may take (default 10).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// The classification table (GB/T 39666 codes) every work order's `classificationCode` is
    /// checked against: a TOML file, read at start (relative paths from the working directory,
    /// as `catalog_dir`). Default `config/hotline/classification.toml`, whose entries are
    /// examples only: a deployment gives the standard's table.
    #[serde(default = "default_classification")]
    pub classification: PathBuf,
}

fn default_classification() -> PathBuf {
    "config/hotline/classification.toml".into()
}

fn default_timeout_secs() -> u64 {
    10
}

fn default_reply_working_days() -> u32 {
    5
}

fn default_max_failed_verifications() -> u32 {
    5
}

impl Default for HotlineConfig {
    fn default() -> Self {
        HotlineConfig {
            max_failed_verifications: default_max_failed_verifications(),
            reply_working_days: default_reply_working_days(),
            reply_url: String::new(),
            secret: String::new(),
            timeout_secs: default_timeout_secs(),
            classification: default_classification(),
        }
    }
}

impl HotlineConfig {
    /// Refuses settings that cannot work, naming the key and what to give.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_failed_verifications == 0 {
            return Err((
                "max_failed_verifications",
                "[hotline] max_failed_verifications = 0 would refuse every progress query; give at least 1 (default 5)"
                    .into(),
            ));
        }
        if self.reply_working_days == 0 {
            return Err((
                "reply_working_days",
                "[hotline] reply_working_days = 0: give at least 1 working day (default 5)".into(),
            ));
        }
        if self.classification.as_os_str().is_empty() {
            return Err((
                "classification",
                "[hotline] classification is empty: give the file of the hotline's classification table (GB/T 39666 codes), e.g. config/hotline/classification.toml".into(),
            ));
        }
        if !self.reply_url.is_empty() {
            if !(self.reply_url.starts_with("https://") || self.reply_url.starts_with("http://")) {
                return Err((
                    "reply_url",
                    format!(
                        "[hotline] reply_url {:?} is not an http(s) URL; give the hotline's reply interface, e.g. https://12345.example/api/reply",
                        self.reply_url
                    ),
                ));
            }
            if self.reply_url.starts_with("http://")
                && !crate::tls::plain_http_to_this_machine(&self.reply_url)
            {
                return Err((
                    "reply_url",
                    format!(
                        "[hotline] reply_url {:?}: plain http:// only to this machine (localhost, 127.0.0.1, [::1]); the replies carry the citizens' complaints, give the hotline's https:// reply interface",
                        self.reply_url
                    ),
                ));
            }
            if self.secret.is_empty() {
                return Err((
                    "secret",
                    "[hotline] secret is empty: replies to reply_url are signed; set the secret shared with the hotline (e.g. secret = \"${YICHUANG_HOTLINE_SECRET}\")".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_failed_verifications_is_refused_naming_the_key() {
        let (key, m) = HotlineConfig {
            max_failed_verifications: 0,
            ..HotlineConfig::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(key, "max_failed_verifications");
        assert!(m.contains("[hotline]") && m.contains("at least 1"), "{m}");
        assert!(HotlineConfig::default().check().is_ok());
    }

    #[test]
    fn a_plain_http_reply_url_is_refused_unless_to_this_machine() {
        let with = |url: &str| HotlineConfig {
            reply_url: url.into(),
            secret: "s".into(),
            ..HotlineConfig::default()
        };
        let (key, m) = with("http://12345.example/api/reply").check().unwrap_err();
        assert_eq!(key, "reply_url");
        assert!(
            m.contains("[hotline] reply_url") && m.contains("https://"),
            "{m}"
        );
        assert!(with("http://10.1.2.3:8080/reply").check().is_err());
        assert!(with("http://127.0.0.1:8080/reply").check().is_ok());
        assert!(with("http://localhost/reply").check().is_ok());
        assert!(with("https://12345.example/api/reply").check().is_ok());
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let e = toml::from_str::<HotlineConfig>("max_failed = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
