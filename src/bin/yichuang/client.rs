//! How the `yichuang` command reaches a gateway: the address, and the caller's credentials
//! (the CA that signs the gateway's certificate, a client certificate and key, or a bearer
//! token). One set of options for every command that calls the gateway; `https://` unless the
//! gateway runs with `[development] plaintext`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::Failure;

/// The windows' listener (`CaseService`).
#[derive(Args, Debug)]
pub struct CaseServer {
    /// Gateway address (the windows' listener).
    #[arg(
        long,
        default_value = "https://localhost:50051",
        env = "YICHUANG_SERVER",
        global = true
    )]
    pub server: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// The internal listener (`AdminService`).
#[derive(Args, Debug)]
pub struct AdminServer {
    /// Gateway address (its internal listener, `[server] admin_listen`).
    #[arg(
        long,
        default_value = "https://localhost:50052",
        env = "YICHUANG_ADMIN_SERVER",
        global = true
    )]
    pub server: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// Who calls, and how the gateway is recognised.
#[derive(Args, Debug)]
pub struct Credentials {
    /// CA certificate (PEM) that signs the gateway's certificate.
    #[arg(long, env = "YICHUANG_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) naming the caller (mTLS).
    #[arg(long, env = "YICHUANG_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "YICHUANG_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token (JWT) naming the caller, instead of a client certificate.
    #[arg(long, env = "YICHUANG_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A channel to a gateway, with the caller's credentials.
pub type Authed = InterceptedService<Channel, Token>;

impl Credentials {
    /// Connects to `server` as this caller.
    pub async fn connect(&self, server: &str) -> Result<Authed, Failure> {
        let mut endpoint = Endpoint::from_shared(server.to_string())
            .with_context(|| format!("--server {server}: not a URL"))?;
        if server.starts_with("https://") {
            let ca = self.ca.as_deref().ok_or_else(|| {
                Failure(
                    2,
                    anyhow::anyhow!(
                        "--ca (or YICHUANG_CA) is required for {server}: the CA certificate that signs the gateway's certificate"
                    ),
                )
            })?;
            let identity = self.cert.as_deref().zip(self.key.as_deref());
            let host = endpoint.uri().host().unwrap_or("localhost").to_string();
            let tls = yichuang::auth::tls::client(ca, identity, &host)
                .map_err(|e| Failure(2, anyhow::anyhow!(e)))?;
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("TLS settings for {server}"))?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {server}"))?;
        let token =
            match &self.token {
                Some(t) => Some(format!("Bearer {}", t.trim()).parse().map_err(|_| {
                    Failure(2, anyhow::anyhow!("--token: not a valid header value"))
                })?),
                None => None,
            };
        Ok(InterceptedService::new(channel, Token(token)))
    }
}
