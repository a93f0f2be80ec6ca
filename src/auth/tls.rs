//! The TLS material of the gRPC listeners and of the gateway's gRPC clients (the `yichuang`
//! command): read from PEM files once, at start, and refused with the file and what is wrong
//! before anything listens. Client certificates are asked for and checked against
//! `[server.tls] client_ca`; a caller without one may still bring a bearer token, and is
//! refused by the policy layer, with an audit record, when it brings neither.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

/// The server side of `[server.tls]`.
pub fn server(config: &TlsConfig) -> Result<ServerTlsConfig, String> {
    if config.cert.as_os_str().is_empty() || config.key.as_os_str().is_empty() {
        return Err("[server.tls] cert and key are required: the gateway serves gRPC over TLS (for a development machine only, [development] plaintext = true turns it off)".into());
    }
    let cert = read_pem(&config.cert, "[server.tls] cert", "CERTIFICATE")?;
    let key = read_pem(&config.key, "[server.tls] key", "PRIVATE KEY")?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !config.client_ca.as_os_str().is_empty() {
        let ca = read_pem(&config.client_ca, "[server.tls] client_ca", "CERTIFICATE")?;
        tls = tls
            .client_ca_root(Certificate::from_pem(ca))
            // Checked when presented; a caller without one is refused by the policy layer
            // with UNAUTHENTICATED and an audit record instead of a bare handshake failure.
            .client_auth_optional(true);
    }
    Ok(tls)
}

/// A client's TLS: the CA that signs the gateway's certificate, and the client certificate and
/// key when the caller identifies itself by certificate.
pub fn client(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    domain: &str,
) -> Result<ClientTlsConfig, String> {
    let ca = read_pem(ca, "CA file", "CERTIFICATE")?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(domain.to_string());
    if let Some((cert, key)) = identity {
        let cert = read_pem(cert, "client certificate", "CERTIFICATE")?;
        let key = read_pem(key, "client key", "PRIVATE KEY")?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

/// Reads a PEM file and checks that it holds a `what` block.
fn read_pem(path: &Path, key: &str, what: &str) -> Result<Vec<u8>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN") || !text.contains(what) {
        return Err(format!(
            "{key} {}: not a PEM file holding a {what}",
            path.display()
        ));
    }
    Ok(pem)
}
