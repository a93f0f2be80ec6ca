//! A throw-away certificate authority for development: the demo and the tests issue their
//! server and client certificates here, at run time, so that no private key is ever committed.
//! Production certificates come from the province's own CA (docs/security.md); nothing here is
//! meant for them.
//!
//! A client certificate names its caller in a URI subject alternative name,
//! `urn:yichuang:<role>[:<hall>[:<window>]]` (see the gateway's `auth` module), and its common
//! name is the caller's name.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub use rcgen::Error;
use time::OffsetDateTime;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pair {
    /// Writes `<name>.pem` and `<name>-key.pem` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<()> {
        std::fs::write(dir.join(format!("{name}.pem")), &self.cert_pem)?;
        write_private(&dir.join(format!("{name}-key.pem")), &self.key_pem)
    }
}

/// The development CA.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Authority {
    /// A new CA named `name`, valid for ten years from now.
    pub fn new(name: &str) -> Result<Authority, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = named(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = unix_now();
        params.not_before = at(now - DAY);
        params.not_after = at(now + 3650 * DAY);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: what servers and clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Result<Pair, Error> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name = named(names.first().map_or("server", |s| s.as_str()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, 0)
    }

    /// A client certificate for the caller `name` with the identity URI `uri`
    /// (`urn:yichuang:window:<hall>:<window>` …), valid for a year.
    pub fn client(&self, name: &str, uri: &str) -> Result<Pair, Error> {
        self.client_valid(name, uri, 0)
    }

    /// [`Authority::client`] whose validity ended `days_ago` days ago when positive: an expired
    /// certificate, for tests that it is refused.
    pub fn client_valid(&self, name: &str, uri: &str, days_ago: i64) -> Result<Pair, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = named(name);
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, days_ago)
    }

    fn sign(&self, mut params: CertificateParams, days_ago: i64) -> Result<Pair, Error> {
        let (not_before, not_after) = validity(days_ago);
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn named(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(
        DnType::OrganizationName,
        "yichuang development CA (not for production)",
    );
    dn
}

/// From a day before now (clock skew) to a year after; or, `days_ago` > 0, a validity that
/// ended that many days ago.
fn validity(days_ago: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = unix_now();
    let (from, to) = if days_ago > 0 {
        (now - (days_ago + 30) * DAY, now - days_ago * DAY)
    } else {
        (now - DAY, now + 365 * DAY)
    };
    (at(from), at(to))
}

const DAY: i64 = 86_400;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("a time in range")
}

/// Writes a private key readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(pem.as_bytes())
}
