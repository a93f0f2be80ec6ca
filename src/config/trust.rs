//! Who may call the gateway and how the wire is protected: the TLS material of the gRPC
//! listeners ([`TlsConfig`]), the bearer-token keys and the role → permission table
//! ([`AuthConfig`]), and the development switches that turn protections off
//! ([`DevelopmentConfig`], each logged loudly at start). Shapes and defaults only: the checks
//! live in `crate::auth`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The server's certificate and the CA its clients' certificates are checked against.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain, PEM.
    #[serde(default)]
    pub cert: PathBuf,
    /// Its private key, PEM.
    #[serde(default)]
    pub key: PathBuf,
    /// CA certificates (PEM) that sign the callers' client certificates (mTLS). Empty: no
    /// client certificates are asked for, and callers must bring a bearer token.
    #[serde(default)]
    pub client_ca: PathBuf,
}

/// Caller identity and what each role may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens (JWT) accepted besides client certificates.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Role → what it may do and over which halls.
    #[serde(default = "default_roles")]
    pub roles: BTreeMap<String, RoleConfig>,
}

/// How bearer tokens are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// Verification keys: PEM files (RS256/ES256 public keys) or HMAC secrets (HS256).
    pub keys: Vec<JwtKey>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

/// One token verification key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// `kid` in the token header this key answers to; empty: any.
    #[serde(default)]
    pub kid: String,
    /// `RS256`, `ES256` or `HS256`.
    pub algorithm: String,
    /// PEM public key file (RS256, ES256).
    #[serde(default)]
    pub public_key: Option<PathBuf>,
    /// Shared secret (HS256), usually `${VAR}`.
    #[serde(default)]
    pub secret: Option<String>,
}

/// One role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Permissions, e.g. `cases.submit` (docs/security.md lists them).
    pub permissions: Vec<String>,
    /// `hall`: only the caller's own hall (its identity must name one); `all`: every hall.
    #[serde(default = "default_scope")]
    pub scope: Scope,
}

/// Which halls a role reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Hall,
    All,
}

/// Switches that turn protections off, for development only; each is logged as a warning at
/// start, and none is on in what is shipped.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevelopmentConfig {
    /// Serve gRPC without TLS, and take every caller as the `development` identity (all
    /// permissions, every hall).
    #[serde(default)]
    pub plaintext: bool,
    /// Apply departments' results without checking the broker user that sent them.
    #[serde(default)]
    pub unchecked_results: bool,
}

fn default_leeway() -> u64 {
    30
}
fn default_scope() -> Scope {
    Scope::Hall
}

/// The shipped roles: windows (their hall), the one-network platform (reads every hall), the
/// notifier (reads every hall's cases to send the applicants' SMS notices), operators (the
/// admin calls), the 12345 hotline's system (its work orders, every hall).
pub fn default_roles() -> BTreeMap<String, RoleConfig> {
    let role = |permissions: &[&str], scope| RoleConfig {
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        scope,
    };
    BTreeMap::from([
        (
            "window".to_string(),
            role(
                &[
                    "cases.check",
                    "cases.submit",
                    "cases.read",
                    "cases.feed",
                    "cases.supplement",
                    "cases.deliver",
                    "cases.evaluate",
                ],
                Scope::Hall,
            ),
        ),
        (
            "platform".to_string(),
            role(&["cases.check", "cases.read", "cases.feed"], Scope::All),
        ),
        ("notifier".to_string(), role(&["cases.read"], Scope::All)),
        (
            "operator".to_string(),
            role(
                &["admin.read", "admin.write", "cases.read", "hotline.reply"],
                Scope::All,
            ),
        ),
        ("hotline".to_string(), role(&["hotline.orders"], Scope::All)),
    ])
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt: None,
            roles: default_roles(),
        }
    }
}
