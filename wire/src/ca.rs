// SPDX-License-Identifier: MIT
//! The hub's certificate authority: made at first start, kept in the hub's
//! data directory, and used to sign the hub's server certificate and each
//! activated agent's client certificate.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Trust(#[from] ferry_secure::TrustError),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0} holds no PEM certificate")]
    NoCert(String),
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `fs::read(p).ctx(|| format!("read {}", p.display()))?`.
trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, CaError>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, CaError> {
        self.map_err(|source| CaError::Io {
            what: what(),
            source,
        })
    }
}

/// Writes `text` to `path` atomically: mode 0600, or 0644 for what is
/// public (a certificate) when not `secret`, whatever the umask. The
/// temporary file has a name of its own, made with `O_EXCL` (never opened
/// through a link, never shared by two writers).
pub fn write_file(path: &Path, text: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut f = tempfile::Builder::new()
        .prefix(".ferry-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    if !secret {
        f.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    f.write_all(text)?;
    f.as_file().sync_all()?;
    f.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `sha256:HEX` of a certificate, as `hubFingerprint` takes it.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(der)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first certificate of a PEM text.
pub fn cert_from_pem(pem: &str, what: &str) -> Result<CertificateDer<'static>, CaError> {
    rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map_err(|_| CaError::NoCert(what.to_string()))
}

pub fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

pub struct Ca {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// The hub's own TLS certificate, signed by the CA.
    pub server_cert: CertificateDer<'static>,
    pub server_key: KeyPair,
}

impl Ca {
    /// Loads the CA from `dir`, making it at first start. The server
    /// certificate names `names` (host names or addresses) and is remade at
    /// every start, so changing the names needs only a restart.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Ca, CaError> {
        ferry_secure::private_dir(dir)?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let (cert_pem, key) = if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path)
                .ctx(|| format!("read {}", key_path.display()))?;
            let cert_pem = std::fs::read_to_string(&cert_path)
                .ctx(|| format!("read {}", cert_path.display()))?;
            (cert_pem, KeyPair::from_pem(&key_pem)?)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(
                DnType::CommonName,
                format!("Ferry hub CA {}", random_hex(4)),
            );
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            ten_years(&mut params);
            let cert = params.self_signed(&key)?;
            write_file(&key_path, key.serialize_pem().as_bytes(), true)
                .ctx(|| format!("write {}", key_path.display()))?;
            write_file(&cert_path, cert.pem().as_bytes(), false)
                .ctx(|| format!("write {}", cert_path.display()))?;
            (cert.pem(), key)
        };
        let cert_der = cert_from_pem(&cert_pem, &cert_path.display().to_string())?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "Ferry hub");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        ten_years(&mut params);
        let server_cert = params.signed_by(&server_key, &issuer)?.der().clone();
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
            server_cert,
            server_key,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Signs an agent's certificate request. Only the request's public key
    /// is used: the subject and the extensions are the hub's choice.
    pub fn sign_agent(&self, csr_pem: &str, agent_id: &str) -> Result<String, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        ten_years(&mut params);
        csr.params = params;
        Ok(csr.signed_by(&self.issuer)?.pem())
    }

    /// A client certificate for an operator (`ferry` against the hub API).
    pub fn operator_identity(&self, name: &str) -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("operator:{name}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        ten_years(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Certificates live ten years: the CA is the hub's identity, and agents
/// are removed on the hub rather than by expiry.
fn ten_years(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
}

/// A new key pair and a certificate request for it (the agent side).
pub fn new_request(hostname: &str) -> Result<(String, String), CaError> {
    request_for(KeyPair::generate()?, hostname)
}

/// A certificate request for the key pair in `key_pem` (PEM, PKCS#8),
/// or for a new one when that is not a key; with the key pair's PEM.
pub fn request_with(key_pem: Option<&str>, hostname: &str) -> Result<(String, String), CaError> {
    match key_pem.and_then(|pem| KeyPair::from_pem(pem).ok()) {
        Some(key) => request_for(key, hostname),
        None => new_request(hostname),
    }
}

fn request_for(key: KeyPair, hostname: &str) -> Result<(String, String), CaError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("ferry-agent {hostname}"));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// `n` random bytes as hex, from the kernel.
pub fn random_hex(n: usize) -> String {
    hex(&random_bytes(n))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("getrandom: {e}"),
        }
    }
    buf
}

/// Paths of the files an agent keeps once it has a key.
pub struct AgentFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
}

impl AgentFiles {
    pub fn in_dir(dir: &Path) -> AgentFiles {
        AgentFiles {
            key: dir.join("agent.key"),
            cert: dir.join("agent.pem"),
            ca: dir.join("hub-ca.pem"),
        }
    }
}

/// A DER certificate as PEM text.
pub fn cert_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
