//! What the operations console's tests share: a gateway configuration that also takes HS256
//! bearer tokens (a browser signs in with one), tokens of a role, the console's address on the
//! internal listener, and where screenshots go (`target/console/`, shown in docs/console.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use yichuang::config::GatewayConfig;

/// The HS256 secret of the tests' token issuer.
pub const SECRET: &str = "a console test secret of thirty-two bytes or more";
/// The tests' token issuer.
pub const ISSUER: &str = "https://idp.hall.example";

/// Makes `config` take tokens of [`ISSUER`] besides client certificates, and adds a
/// `supervisor` role that may also unmask personal data in the console, and a `hall-operator`
/// role that reads the admin calls of one hall.
pub fn with_tokens(config: &mut GatewayConfig) {
    config.auth.jwt = Some(yichuang::config::JwtConfig {
        issuer: ISSUER.into(),
        audience: "yichuang".into(),
        keys: vec![yichuang::config::JwtKey {
            kid: String::new(),
            algorithm: "HS256".into(),
            public_key: None,
            secret: Some(SECRET.into()),
        }],
        leeway_secs: 0,
    });
    config.auth.roles.insert(
        "hall-operator".into(),
        yichuang::config::RoleConfig {
            permissions: vec!["admin.read".into()],
            scope: yichuang::config::Scope::Hall,
        },
    );
    config.auth.roles.insert(
        "supervisor".into(),
        yichuang::config::RoleConfig {
            permissions: vec![
                "admin.read".into(),
                "cases.read".into(),
                "cases.unmask".into(),
            ],
            scope: yichuang::config::Scope::All,
        },
    );
}

/// A token of `role` for `<role>-zhang`, valid for ten minutes; a `window` or `hall-…` token
/// is of the examples' hall.
pub fn token(role: &str) -> String {
    token_valid_for(role, 600)
}

/// A token of `role` that expires `secs` from now (a negative number: expired already).
pub fn token_valid_for(role: &str, secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let mut claims = serde_json::json!({
        "sub": format!("{role}-zhang"), "role": role, "iss": ISSUER, "aud": "yichuang", "exp": now + secs,
    });
    if role == "window" || role.starts_with("hall-") {
        claims["hall"] = crate::pki::HALL.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a token encodes")
}

/// `https://localhost:<port><path>` on the internal listener `admin`.
pub fn url(admin: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", admin.port())
}

/// Where the browser tests save their screenshots.
pub fn shots() -> PathBuf {
    crate::repo().join("target/console")
}
