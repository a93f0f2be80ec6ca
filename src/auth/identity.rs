//! A caller's identity, from what the transport proves and never from a request body:
//!
//! - a client certificate (mTLS), already verified against `[server.tls] client_ca` by the TLS
//!   handshake: its common name is the caller's name, and its URI subject alternative name
//!   `urn:yichuang:<role>[:<hall>[:<window>]]` its role, hall and window;
//! - a bearer token (`authorization: Bearer <JWT>`), checked against the keys of `[auth.jwt]`
//!   with its issuer, audience, expiry and not-before: claims `sub`, `role`, and `hall` and
//!   `window` when it has them.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::Caller;
use crate::config::{JwtConfig, JwtKey};

/// The prefix of the identity URI in a client certificate.
pub const URI_PREFIX: &str = "urn:yichuang:";

/// Why an identity could not be established. The text names what is wrong and what to do; it
/// never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "no client certificate and no bearer token: present a client certificate signed by the gateway's client CA, or an `authorization: Bearer <token>` header"
    )]
    Missing,
    #[error("client certificate: {0}")]
    Certificate(String),
    #[error("bearer token: {0}")]
    Token(String),
}

/// Turns certificates and tokens into callers.
pub struct Authenticator {
    jwt: Option<Jwt>,
}

struct Jwt {
    issuer: String,
    audience: String,
    leeway: u64,
    keys: Vec<(String, Algorithm, DecodingKey)>,
}

/// The claims a token must carry.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    #[serde(default)]
    hall: Option<String>,
    #[serde(default)]
    window: Option<String>,
}

impl Authenticator {
    /// From `[auth.jwt]` (none: tokens are refused). Key files are read here; a key that cannot
    /// be read or parsed is refused, naming it.
    pub fn new(jwt: Option<&JwtConfig>) -> Result<Authenticator, String> {
        let Some(config) = jwt else {
            return Ok(Authenticator { jwt: None });
        };
        if config.keys.is_empty() {
            return Err("[auth.jwt] keys: at least one verification key is needed".into());
        }
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| key(k).map_err(|e| format!("[auth.jwt] keys[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if config.issuer.trim().is_empty() || config.audience.trim().is_empty() {
            return Err("[auth.jwt]: issuer and audience are required".into());
        }
        Ok(Authenticator {
            jwt: Some(Jwt {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway_secs,
                keys,
            }),
        })
    }

    /// Whether bearer tokens are accepted.
    pub fn takes_tokens(&self) -> bool {
        self.jwt.is_some()
    }

    /// The caller a verified client certificate (DER) names.
    pub fn from_certificate(&self, der: &[u8]) -> Result<Caller, IdentityError> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let bad = |m: &str| IdentityError::Certificate(m.to_string());
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| bad("cannot be parsed"))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| bad("its subject has no common name (the caller's name)"))?;
        let uri = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|g| match g {
                    GeneralName::URI(u) if u.starts_with(URI_PREFIX) => Some(u.to_string()),
                    _ => None,
                })
            })
            .ok_or_else(|| {
                IdentityError::Certificate(format!(
                    "{name}: no subject alternative name {URI_PREFIX}<role>[:<hall>[:<window>]] names its role"
                ))
            })?;
        parse_uri(&name, &uri).map_err(IdentityError::Certificate)
    }

    /// The caller a bearer token names, after checking its signature, issuer, audience and
    /// times.
    pub fn from_token(&self, token: &str) -> Result<Caller, IdentityError> {
        let bad = |m: String| IdentityError::Token(m);
        let jwt = self.jwt.as_ref().ok_or_else(|| {
            bad("this gateway takes no bearer tokens ([auth.jwt] is not set); use a client certificate".into())
        })?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| bad("not a JWT (header unreadable)".into()))?;
        let kid = header.kid.unwrap_or_default();
        let candidates: Vec<_> = jwt
            .keys
            .iter()
            .filter(|(k, alg, _)| *alg == header.alg && (k.is_empty() || *k == kid))
            .collect();
        if candidates.is_empty() {
            return Err(bad(format!(
                "no configured key for algorithm {:?} and kid {kid:?}",
                header.alg
            )));
        }
        let mut last = String::new();
        for (_, alg, key) in candidates {
            let mut validation = Validation::new(*alg);
            validation.set_issuer(&[&jwt.issuer]);
            validation.set_audience(&[&jwt.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            validation.leeway = jwt.leeway;
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    let c = data.claims;
                    let opt = |v: Option<String>| {
                        v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
                    };
                    return Ok(Caller {
                        name: c.sub,
                        role: c.role,
                        hall: opt(c.hall),
                        window: opt(c.window),
                    });
                }
                Err(e) => last = token_error(&e, &jwt.issuer, &jwt.audience),
            }
        }
        Err(bad(last))
    }
}

/// What is wrong with a token, in words a client's developer can act on.
fn token_error(e: &jsonwebtoken::errors::Error, issuer: &str, audience: &str) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "expired; get a new token".into(),
        ImmatureSignature => "not valid yet (nbf in the future)".into(),
        InvalidAudience => format!("wrong audience; this gateway takes tokens for {audience:?}"),
        InvalidIssuer => format!("wrong issuer; this gateway takes tokens issued by {issuer:?}"),
        InvalidSignature => "signature does not verify with the configured keys".into(),
        MissingRequiredClaim(c) => format!("claim {c:?} is missing"),
        Json(_) => "claims unreadable: sub and role (strings) are required".into(),
        _ => format!("refused ({e})"),
    }
}

/// `urn:yichuang:<role>[:<hall>[:<window>]]` → the caller named `name`.
fn parse_uri(name: &str, uri: &str) -> Result<Caller, String> {
    let rest = &uri[URI_PREFIX.len()..];
    let mut parts = rest.split(':');
    let role = parts.next().unwrap_or_default().to_string();
    if role.is_empty() {
        return Err(format!("{name}: {uri} names no role"));
    }
    let hall = parts.next().map(str::to_string).filter(|s| !s.is_empty());
    let window = parts.next().map(str::to_string).filter(|s| !s.is_empty());
    if parts.next().is_some() {
        return Err(format!(
            "{name}: {uri} has more parts than {URI_PREFIX}<role>:<hall>:<window>"
        ));
    }
    Ok(Caller {
        name: name.to_string(),
        role,
        hall,
        window,
    })
}

fn key(k: &JwtKey) -> Result<(String, Algorithm, DecodingKey), String> {
    let pem = || -> Result<Vec<u8>, String> {
        let path = k
            .public_key
            .as_ref()
            .ok_or_else(|| format!("{} needs public_key (a PEM file)", k.algorithm))?;
        std::fs::read(path).map_err(|e| format!("public_key {}: {e}", path.display()))
    };
    let (algorithm, key) = match k.algorithm.as_str() {
        "HS256" => {
            let secret = k
                .secret
                .as_deref()
                .filter(|s| s.len() >= 32)
                .ok_or("HS256 needs secret, at least 32 bytes")?;
            (
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            )
        }
        "RS256" => (
            Algorithm::RS256,
            DecodingKey::from_rsa_pem(&pem()?)
                .map_err(|e| format!("public_key: not an RSA public key PEM ({e})"))?,
        ),
        "ES256" => (
            Algorithm::ES256,
            DecodingKey::from_ec_pem(&pem()?)
                .map_err(|e| format!("public_key: not an EC public key PEM ({e})"))?,
        ),
        other => {
            return Err(format!(
                "algorithm {other:?} is not supported; use RS256, ES256 or HS256"
            ));
        }
    };
    Ok((k.kid.clone(), algorithm, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_give_role_hall_and_window() {
        let c = parse_uri("w", "urn:yichuang:window:640100-DT01:W03").unwrap();
        assert_eq!(
            (c.role.as_str(), c.hall.as_deref(), c.window.as_deref()),
            ("window", Some("640100-DT01"), Some("W03"))
        );
        let p = parse_uri("p", "urn:yichuang:platform").unwrap();
        assert_eq!((p.role.as_str(), p.hall), ("platform", None));
        assert!(parse_uri("x", "urn:yichuang:").is_err());
        assert!(parse_uri("x", "urn:yichuang:a:b:c:d").is_err());
    }
}
