//! The tests' certificates: one development CA per test process ([`yichuang_devcerts`]), its
//! server certificate for `localhost`/`127.0.0.1`, and client certificates naming callers,
//! written to a directory that lives as long as the process. Every gateway the kit starts
//! serves over TLS with client certificates checked against this CA, as a deployed one does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use yichuang_devcerts::{Authority, Pair};

/// The hall every example submission is accepted in.
pub const HALL: &str = "640100-DT01";

/// A caller as the tests name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// The comprehensive window system of a hall (every window of it).
    Hall(String),
    /// One window of a hall.
    Window(String, String),
    /// The one-network platform: reads every hall.
    Platform,
    /// An operator: the admin calls.
    Operator,
    /// Any identity URI (`urn:yichuang:…`), under the name given.
    Named(String, String),
}

impl Who {
    /// The window system of the examples' hall.
    pub fn examples_hall() -> Who {
        Who::Hall(HALL.into())
    }

    fn name_and_uri(&self) -> (String, String) {
        match self {
            Who::Hall(h) => (format!("hall-{h}"), format!("urn:yichuang:window:{h}")),
            Who::Window(h, w) => (
                format!("window-{h}-{w}"),
                format!("urn:yichuang:window:{h}:{w}"),
            ),
            Who::Platform => ("platform".into(), "urn:yichuang:platform".into()),
            Who::Operator => ("operator".into(), "urn:yichuang:operator".into()),
            Who::Named(name, uri) => (name.clone(), uri.clone()),
        }
    }
}

struct Pki {
    authority: Authority,
    dir: PathBuf,
    clients: Mutex<HashMap<Who, Pair>>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let authority = Authority::new("yichuang test CA").expect("a test CA");
        let dir = tempfile::Builder::new()
            .prefix("yichuang-pki-")
            .tempdir()
            .expect("a directory for the test certificates")
            // Kept for the process: servers read the files when they start.
            .keep();
        std::fs::write(dir.join("ca.pem"), authority.cert_pem()).expect("ca.pem");
        authority
            .server(&["localhost", "127.0.0.1"])
            .expect("a server certificate")
            .write(&dir, "server")
            .expect("server.pem");
        Pki {
            authority,
            dir,
            clients: Mutex::default(),
        }
    })
}

/// The CA certificate file.
pub fn ca_file() -> PathBuf {
    pki().dir.join("ca.pem")
}

/// The CA certificate, PEM.
pub fn ca_pem() -> String {
    pki().authority.cert_pem().to_string()
}

/// The server certificate and key files (for `localhost` and `127.0.0.1`).
pub fn server_files() -> (PathBuf, PathBuf) {
    let dir = &pki().dir;
    (dir.join("server.pem"), dir.join("server-key.pem"))
}

/// The directory holding the files (for processes the tests start).
pub fn dir() -> &'static Path {
    &pki().dir
}

/// A client certificate for `who` (issued once per process).
pub fn client(who: &Who) -> Pair {
    let mut clients = pki().clients.lock().expect("client certificates");
    clients
        .entry(who.clone())
        .or_insert_with(|| {
            let (name, uri) = who.name_and_uri();
            pki()
                .authority
                .client(&name, &uri)
                .expect("a client certificate")
        })
        .clone()
}

/// `who`'s certificate and key written as files `<stem>.pem` and `<stem>-key.pem` in
/// [`dir`], for a process the test starts (the `yichuang` command).
pub fn client_files(who: &Who, stem: &str) -> (PathBuf, PathBuf) {
    let pair = client(who);
    pair.write(dir(), stem).expect("client certificate files");
    (
        dir().join(format!("{stem}.pem")),
        dir().join(format!("{stem}-key.pem")),
    )
}

/// A client certificate for `who` that expired `days_ago` days ago.
pub fn expired_client(who: &Who, days_ago: i64) -> Pair {
    let (name, uri) = who.name_and_uri();
    pki()
        .authority
        .client_valid(&name, &uri, days_ago)
        .expect("an expired client certificate")
}

/// A client's TLS to a gateway of the kit, as `who` (`None`: no client certificate).
pub fn client_tls(who: Option<&Who>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem()))
        .domain_name("localhost");
    match who {
        Some(who) => {
            let pair = client(who);
            tls.identity(Identity::from_pem(pair.cert_pem, pair.key_pem))
        }
        None => tls,
    }
}
