//! Real servers on port 0: a listener on a free local port, an HTTPS one with development
//! certificates (mTLS optional), or a free port for a child process to listen on.

/// A listener on a free local port and its `http://` address.
pub async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free local port");
    let endpoint = format!("http://{}", l.local_addr().expect("a local address"));
    (l, endpoint)
}

/// A local port free now, for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TLS listener for `axum::serve`: it accepts TCP, completes the handshake, and hands over
/// the encrypted stream. A handshake that fails (a client that does not trust the server's CA,
/// or brings no certificate when one is required) is counted in `failed_handshakes` and
/// skipped, as a real server does.
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    /// Handshakes that failed so far.
    pub failed_handshakes: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.failed_handshakes
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS listener on a free local port with the certificate `server` (for `127.0.0.1`), and
/// its `https://` address. With `client_ca` (PEM), clients must present a certificate it
/// signed (mTLS).
pub async fn https(
    server: &yichuang_devcerts::Pair,
    client_ca: Option<&str>,
) -> (TlsListener, String) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("the server certificate");
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("the server key");
    let builder = rustls::ServerConfig::builder_with_provider(yichuang::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.expect("the client CA"))
                    .expect("the client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                yichuang::tls::provider(),
            )
            .build()
            .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .expect("the server certificate and key");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free local port");
    let endpoint = format!("https://{}", tcp.local_addr().expect("a local address"));
    (
        TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
            failed_handshakes: Default::default(),
        },
        endpoint,
    )
}
