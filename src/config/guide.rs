//! The item guide's settings (`[guide]`): whether the windows' listener serves the public
//! 办事指南 pages, and the base URL the public reaches them at (printed in their QR codes).
//! Shapes and defaults only: the pages themselves are `crate::guide`.

use serde::Deserialize;

/// The item guide (docs/guide.md), served under `/guide` on the windows' (public) listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuideConfig {
    /// Serve the guide (default true). Off, `/guide` is not served and `PreCheck` links none.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The base URL as the public reaches the windows' listener, e.g.
    /// `https://zwfw.example.gov.cn`: QR codes and `PreCheck` links are `<public_url>/guide/<item>`.
    /// Empty (the default): `https://<the listener's address>`, fine on one machine only.
    #[serde(default)]
    pub public_url: String,
}

fn default_enabled() -> bool {
    true
}

impl Default for GuideConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            public_url: String::new(),
        }
    }
}

impl GuideConfig {
    /// The rules serde cannot express: a public URL is an http(s) URL without a path's trailing
    /// slash, query or fragment. Errors name the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let url = &self.public_url;
        if url.is_empty() {
            return Ok(());
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let bad = match rest {
            None => Some("is not an http(s) URL"),
            Some("") => Some("has no host"),
            Some(_) if url.ends_with('/') => Some("ends with `/`"),
            Some(r) if r.contains(['?', '#', ' ']) => Some("has a query, fragment or space"),
            Some(_) => None,
        };
        match bad {
            Some(why) => Err((
                "public_url",
                format!(
                    "[guide] public_url {url:?} {why}: give the base URL the public reaches the windows' listener at, e.g. https://zwfw.example.gov.cn"
                ),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GuideConfig;

    fn with(url: &str) -> GuideConfig {
        GuideConfig {
            public_url: url.into(),
            ..GuideConfig::default()
        }
    }

    #[test]
    fn a_public_url_must_be_a_bare_http_base() {
        assert!(with("").check().is_ok());
        assert!(with("https://zwfw.example.gov.cn").check().is_ok());
        assert!(with("http://10.0.0.5:50051/hall").check().is_ok());
        for bad in [
            "zwfw.example.gov.cn",
            "https://",
            "https://zwfw.example.gov.cn/",
            "https://zwfw.example.gov.cn/?a=1",
        ] {
            let (key, message) = with(bad).check().unwrap_err();
            assert_eq!(key, "public_url");
            assert!(message.contains(bad), "{message}");
        }
    }
}
