//! TLS for every hop this process opens itself: the platform push and the adapters' legacy HTTP
//! endpoints (reqwest), PostgreSQL (`sslmode` and `sslrootcert` in the URL, as libpq reads them)
//! and RabbitMQ (`amqps://`). One stack, rustls with ring; one settings shape, [`ClientTls`]
//! (a CA bundle and, for mTLS, a client certificate and key, all PEM files).
//!
//! It owns reading those files and turning them into each client's TLS settings, with errors
//! that name the file and what to do. It never opens a connection except in
//! [`connect_postgres`], and never decides whether a hop must be encrypted: the URL's scheme
//! (`https`, `amqps`) or `sslmode` says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;

pub use tokio_postgres_rustls::MakeRustlsConnect;

/// A TLS problem found before or while connecting; each names the file or setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {what} {path}: {source}; check the path and that this process may read it"
    )]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { what: &'static str, path: String },
    #[error("{path} holds no usable private key ({message}); write a PEM PKCS#8, RSA or EC key")]
    Key { path: String, message: String },
    #[error(
        "{setting}: a client certificate needs its key and a key its certificate; set both or neither"
    )]
    HalfIdentity { setting: String },
    #[error("{0}")]
    Settings(String),
}

/// An optional path where an empty string is none, so that a config file can write
/// `ca_file = "${YICHUANG_AMQP_CA:-}"`.
pub fn optional_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path: Option<PathBuf> = Option::deserialize(d)?;
    Ok(path.filter(|p| !p.as_os_str().is_empty()))
}

/// Where to find the certificates of one outgoing hop (a department's legacy system, the
/// platform, the broker). Every field is a PEM file path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// CA certificates the far side's certificate must chain to (government intranets run
    /// their own CAs). When set, only these are trusted, not the public roots.
    #[serde(default, deserialize_with = "optional_path")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mTLS to the far side; with `client_key`.
    #[serde(default, deserialize_with = "optional_path")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key; with `client_cert`.
    #[serde(default, deserialize_with = "optional_path")]
    pub client_key: Option<PathBuf>,
}

impl ClientTls {
    /// Whether nothing is configured (the defaults of each client apply).
    pub fn is_empty(&self) -> bool {
        self == &ClientTls::default()
    }

    /// Paths relative to a config file's directory made absolute.
    pub fn relative_to(mut self, base: &Path) -> ClientTls {
        for path in [
            &mut self.ca_file,
            &mut self.client_cert,
            &mut self.client_key,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        self
    }

    /// Reads and parses every file, so a mistake stops the process at start rather than at
    /// the first connection. `setting` names the settings in errors (`[platform]`).
    pub fn check(&self, setting: &str) -> Result<(), TlsError> {
        self.roots()?;
        self.identity(setting)?;
        Ok(())
    }

    /// The CA certificates of `ca_file`, when set.
    pub fn roots(&self) -> Result<Option<Vec<CertificateDer<'static>>>, TlsError> {
        self.ca_file
            .as_deref()
            .map(|p| certificates("CA file", p))
            .transpose()
    }

    /// The client certificate chain and key, when set.
    pub fn identity(
        &self,
        setting: &str,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        match (&self.client_cert, &self.client_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some((
                certificates("client certificate", cert)?,
                private_key(key)?,
            ))),
            _ => Err(TlsError::HalfIdentity {
                setting: setting.to_string(),
            }),
        }
    }

    /// `builder` trusting `ca_file` only (when set) and presenting the client certificate
    /// (when set). `https://` with no `ca_file` trusts the public (webpki) roots.
    pub fn reqwest(
        &self,
        mut builder: reqwest::ClientBuilder,
        setting: &str,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        builder = builder.use_rustls_tls();
        if let Some(path) = &self.ca_file {
            let pem = read("CA file", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| no_certificate("CA file", path))?;
            if certs.is_empty() {
                return Err(no_certificate("CA file", path));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if self.identity(setting)?.is_some() {
            let (cert, key) = (
                self.client_cert.as_deref().expect("checked"),
                self.client_key.as_deref().expect("checked"),
            );
            let mut pem = read("client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("client key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::Key {
                path: key.display().to_string(),
                message: e.to_string(),
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }

    /// The broker connection's TLS settings (used by `amqps://` URLs only): `ca_file` as the
    /// trusted chain, the client certificate as a PKCS#8 identity.
    pub fn amqp(&self, setting: &str) -> Result<lapin::tcp::OwnedTLSConfig, TlsError> {
        let cert_chain = match &self.ca_file {
            Some(path) => {
                self.roots()?;
                Some(String::from_utf8_lossy(&read("CA file", path)?).into_owned())
            }
            None => None,
        };
        let identity = match self.identity(setting)? {
            Some(_) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: read(
                    "client certificate",
                    self.client_cert.as_deref().expect("checked"),
                )?,
                key: read("client key", self.client_key.as_deref().expect("checked"))?,
            }),
            None => None,
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn no_certificate(what: &'static str, path: &Path) -> TlsError {
    TlsError::NoCertificate {
        what,
        path: path.display().to_string(),
    }
}

/// Every certificate of a PEM file; at least one.
pub fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| no_certificate(what, path))?;
    if certs.is_empty() {
        return Err(no_certificate(what, path));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("client key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The one crypto provider of the process: ring (the project's choice: no aws-lc, no
/// OpenSSL). rustls deprecates it for lacking post-quantum key exchange; aws-lc-rs would bring
/// a C toolchain dependency the deployments here do not want.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
}

/// How a PostgreSQL URL asks for TLS, as libpq reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Never.
    Disable,
    /// When the server offers it (`allow` and `prefer`; tokio-postgres's default): the
    /// certificate is not checked, as libpq does not either.
    Prefer,
    /// Always; the certificate is checked against `sslrootcert` when one is given (libpq:
    /// "`require` with a root certificate behaves as `verify-ca`"), otherwise not at all.
    Require,
    /// Always, with the chain checked against `sslrootcert` (required), not the host name.
    VerifyCa,
    /// Always, with the chain checked against `sslrootcert` (required) and the host name.
    VerifyFull,
}

/// A PostgreSQL URL taken apart: what tokio-postgres parses, and the TLS settings it does not
/// know (`sslrootcert`, `sslcert`, `sslkey`, the `verify-*` modes), taken out of the URL.
pub struct PgTarget {
    /// The connection settings, with `sslmode` set to what tokio-postgres knows.
    pub config: tokio_postgres::Config,
    /// The mode as written (default `prefer`).
    pub mode: PgSslMode,
    /// The connector for `config`.
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for PgTarget {
    // The config's Debug would show the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Parses a PostgreSQL URL (`postgres://…?sslmode=require&sslrootcert=/etc/ca.pem`) or a
/// key=value string, and builds its TLS connector. The error never repeats the URL (it may hold
/// a password).
pub fn postgres(url: &str) -> Result<PgTarget, TlsError> {
    let mut mode = PgSslMode::Prefer;
    let mut root = None;
    let (mut cert, mut key) = (None, None);
    let mut take = |k: &str, v: &str| -> Result<bool, TlsError> {
        match k {
            "sslmode" => {
                mode = match v {
                    "disable" => PgSslMode::Disable,
                    "allow" | "prefer" => PgSslMode::Prefer,
                    "require" => PgSslMode::Require,
                    "verify-ca" => PgSslMode::VerifyCa,
                    "verify-full" => PgSslMode::VerifyFull,
                    other => {
                        return Err(TlsError::Settings(format!(
                            "PostgreSQL URL: sslmode={other} is not a mode; write disable, prefer, require, verify-ca or verify-full"
                        )));
                    }
                };
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(PathBuf::from(v));
                Ok(true)
            }
            "sslcert" => {
                cert = Some(PathBuf::from(v));
                Ok(true)
            }
            "sslkey" => {
                key = Some(PathBuf::from(v));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = strip_params(url, &mut take)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        TlsError::Settings(format!(
            "not a PostgreSQL URL ({e}); write postgres://user:password@host:port/database?sslmode=require"
        ))
    })?;
    config.ssl_mode(match mode {
        PgSslMode::Disable => tokio_postgres::config::SslMode::Disable,
        PgSslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let tls = ClientTls {
        ca_file: root,
        client_cert: cert,
        client_key: key,
    };
    let roots = tls.roots()?;
    let builder = client_builder();
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (PgSslMode::VerifyCa | PgSslMode::VerifyFull, None) => {
            return Err(TlsError::Settings(
                "PostgreSQL URL: sslmode=verify-ca and verify-full need sslrootcert=<CA file> (PEM)"
                    .into(),
            ));
        }
        (PgSslMode::Disable | PgSslMode::Prefer, _) | (PgSslMode::Require, None) => {
            Arc::new(AnyCertificate(provider().signature_verification_algorithms))
        }
        (mode, Some(certs)) => {
            let mut store = RootCertStore::empty();
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| TlsError::Settings(format!("PostgreSQL URL: sslrootcert: {e}")))?;
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                store.into(),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Settings(format!("PostgreSQL URL: sslrootcert: {e}")))?;
            Arc::new(ChainOnly {
                inner: webpki,
                check_name: mode == PgSslMode::VerifyFull,
            })
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client = match tls.identity("PostgreSQL URL sslcert/sslkey")? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Settings(format!("PostgreSQL URL: sslcert/sslkey: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(PgTarget {
        config,
        mode,
        tls: tokio_postgres_rustls::MakeRustlsConnect::new(client),
    })
}

/// `url` without the parameters `take` claims (it returns true for them). URLs keep their
/// other query parameters; key=value strings their other pairs.
fn strip_params(
    url: &str,
    take: &mut dyn FnMut(&str, &str) -> Result<bool, TlsError>,
) -> Result<String, TlsError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok(url.to_string());
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(k, &percent_decode(v))? {
                kept.push(pair);
            }
        }
        return Ok(if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        });
    }
    let mut kept = Vec::new();
    for token in url.split_whitespace() {
        let (k, v) = token.split_once('=').unwrap_or((token, ""));
        if !take(k.trim(), v.trim_matches('\''))? {
            kept.push(token);
        }
    }
    Ok(kept.join(" "))
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects to PostgreSQL with the URL's TLS settings; the connection's task runs on the
/// current runtime until the client is dropped.
pub async fn connect_postgres(url: &str) -> Result<tokio_postgres::Client, PgConnectError> {
    let target = postgres(url)?;
    let (client, connection) = target
        .config
        .connect(target.tls)
        .await
        .map_err(|e| PgConnectError::Connect(with_causes(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Why [`connect_postgres`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
}

/// An error and its causes, `: `-joined: tokio-postgres says "error performing TLS handshake"
/// and keeps the why (an unknown issuer, a name mismatch) in its source. A TLS failure gets a
/// hint at what to check.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.contains("certificate") {
        text.push_str(
            " (check that sslrootcert / ca_file is the CA that signed the server's certificate, and that the host name is in it)",
        );
    }
    text
}

/// libpq's `require` without a root certificate: the connection is encrypted but the server's
/// certificate is not checked (anyone on the path can pose as the server). The handshake's
/// signatures are still verified. Checking the server needs `sslrootcert`.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca` (the chain, not the name) and `verify-full` (both), over the webpki verifier.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `url` is a plain `http://` URL to this machine (`localhost` or a loopback address,
/// `127.0.0.0/8` or `[::1]`): the one place plain http may carry personal data (a simulator, a
/// local relay); anything else must be `https://`. The rule of every outbound URL (the adapters'
/// transports, `[hotline] reply_url`).
pub fn plain_http_to_this_machine(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']').map_or("", |(h, _)| h)
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::plain_http_to_this_machine;

    #[test]
    fn plain_http_only_to_this_machine() {
        for local in [
            "http://127.0.0.1:8080/reply",
            "http://localhost/reply",
            "http://[::1]/reply",
            "http://[::1]:9/reply",
            "http://127.0.0.2:1",
            "http://u:p@localhost:1/x",
        ] {
            assert!(plain_http_to_this_machine(local), "{local}");
        }
        for remote in [
            "http://12345.example/reply",
            "http://10.0.0.5:80/reply",
            "http://localhost.example.com/",
            "http://127.0.0.1.example/",
            "http://localhost@evil.example/",
            "https://127.0.0.1/",
            "ftp://localhost/",
        ] {
            assert!(!plain_http_to_this_machine(remote), "{remote}");
        }
    }

    use super::*;

    #[test]
    fn libpq_settings_are_taken_out_of_the_url() {
        let mut seen = Vec::new();
        let rest = strip_params(
            "postgres://u:p@h:5432/d?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
            &mut |k, v| {
                let ours = k.starts_with("ssl");
                if ours {
                    seen.push(format!("{k}={v}"));
                }
                Ok(ours)
            },
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5432/d?application_name=x");
        assert_eq!(seen, ["sslmode=verify-full", "sslrootcert=/etc/ca.pem"]);
        let rest = strip_params("host=h sslmode=require user=u", &mut |k, _| {
            Ok(k == "sslmode")
        })
        .unwrap();
        assert_eq!(rest, "host=h user=u");
    }

    #[test]
    fn modes_map_to_what_tokio_postgres_knows() {
        use tokio_postgres::config::SslMode;
        let t = postgres("postgres://u:p@h/d?sslmode=require").unwrap();
        assert_eq!(
            (t.mode, t.config.get_ssl_mode()),
            (PgSslMode::Require, SslMode::Require)
        );
        let t = postgres("postgres://u:p@h/d").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
        let t = postgres("postgres://u:p@h/d?sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        let e = postgres("postgres://u:secret@h/d?sslmode=verify-full").unwrap_err();
        assert!(e.to_string().contains("need sslrootcert"), "{e}");
        let e = postgres("postgres://u:secret@h/d?sslmode=sometimes").unwrap_err();
        assert!(e.to_string().contains("sslmode=sometimes"), "{e}");
        let e = postgres("postgres://u:secret@h/d?sslmode=require&sslrootcert=/nonexistent/ca.pem")
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let tls = ClientTls {
            client_cert: Some("c.pem".into()),
            ..Default::default()
        };
        let e = tls.check("[platform]").unwrap_err();
        assert!(e.to_string().contains("[platform]"), "{e}");
    }
}
