// SPDX-License-Identifier: MIT
//! Ferry's TLS tunnel to Amazon EFS, for encryption in transit: NFS carried over TLS, as the EFS mount
//! helper carries it through stunnel. The kernel mounts `127.0.0.1:PORT`;
//! each of its connections (one per `nconnect`) becomes a TLS connection to
//! the mount target, whose certificate must chain to the trusted roots and
//! name `FS.efs.REGION.amazonaws.com`. An access point and the file system
//! are named in a client certificate made for the mount, in the extensions
//! EFS reads (the mount helper's).
//!
//! The tunnel makes one connection before the mount: a certificate that is
//! refused is named then, instead of the kernel retrying a mount that can
//! never connect.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
pub use rustls::RootCertStore;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A mount target that does not answer in this time is down or filtered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Threads serving the kernel's connections (nconnect of them per mount).
const TUNNEL_THREADS: usize = 2;
/// Each direction's buffer: NFS moves 1 MiB per READ or WRITE, and larger
/// writes make full 16 KiB TLS records (tokio's default is 8 KiB).
const COPY_BUFFER: usize = 256 << 10;

/// The mount helper's object identifiers: the access point and the file
/// system a client certificate is for.
const OID_ACCESS_POINT: &[u64] = &[1, 3, 6, 1, 4, 1, 4843, 7, 1];
const OID_FILE_SYSTEM: &[u64] = &[1, 3, 6, 1, 4, 1, 4843, 7, 3];

#[derive(Debug, thiserror::Error)]
pub enum EfsError {
    #[error("the EFS trust roots (daemon.efs_ca_certificates): {0}")]
    Roots(String),
    #[error("TLS setup for EFS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the client certificate for EFS: {0}")]
    ClientCertificate(#[from] rcgen::Error),
    #[error("{0} is not a name a certificate can be checked against")]
    Name(String),
    #[error("the EFS tunnel: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot reach the mount target {name} at {addr}: {why}")]
    Unreachable {
        name: String,
        addr: SocketAddr,
        why: String,
    },
    #[error("the TLS handshake with the mount target {name} at {addr} failed: {why}")]
    Handshake {
        name: String,
        addr: SocketAddr,
        why: String,
    },
}

/// The certificates an EFS mount target's must chain to: the PEM given in
/// the configuration, or Mozilla's roots built in (which hold Amazon's).
pub fn roots(pem: Option<&str>) -> Result<Arc<RootCertStore>, EfsError> {
    let Some(pem) = pem else {
        return Ok(Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }));
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| EfsError::Roots(e.to_string()))?;
        store
            .add(cert)
            .map_err(|e| EfsError::Roots(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(EfsError::Roots("no certificate in the PEM".into()));
    }
    Ok(Arc::new(store))
}

/// Where the tunnel connects, and the name the certificate must carry.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub file_system_id: String,
    pub access_point_id: Option<String>,
}

/// The TLS client of one mount: TLS 1.2 or 1.3, the server checked against
/// `roots`, and a client certificate naming the access point when there is
/// one.
fn client_config(roots: Arc<RootCertStore>, target: &Target) -> Result<ClientConfig, EfsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match &target.access_point_id {
        Some(ap) => {
            let (cert, key) = client_certificate(&target.name, &target.file_system_id, ap)?;
            builder.with_client_auth_cert(vec![cert], key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// A self-signed certificate with a key made for this mount, naming the
/// access point and the file system as the EFS mount helper's does.
fn client_certificate(
    name: &str,
    file_system_id: &str,
    access_point_id: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.custom_extensions = vec![
        rcgen::CustomExtension::from_oid_content(OID_ACCESS_POINT, utf8_string(access_point_id)),
        rcgen::CustomExtension::from_oid_content(OID_FILE_SYSTEM, utf8_string(file_system_id)),
    ];
    let cert = params.self_signed(&key)?;
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    Ok((cert.der().clone(), key))
}

/// DER of an ASN.1 UTF8String, its length in the short form: the ids are
/// checked ([`ferry_model::efs::check`]), 45 bytes at most.
fn utf8_string(s: &str) -> Vec<u8> {
    debug_assert!(s.len() < 0x80);
    let mut der = vec![0x0c, s.len() as u8];
    der.extend_from_slice(s.as_bytes());
    der
}

/// A listener on `127.0.0.1` whose connections go to the mount target over
/// TLS; stopped (its connections closed) when dropped, after the unmount.
pub struct Tunnel {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Tunnel {
    /// Connects once (the certificate is checked against `roots`), then
    /// listens. `warn` hears of later connections that fail.
    pub fn open(
        target: Target,
        roots: Arc<RootCertStore>,
        warn: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<Tunnel, EfsError> {
        let connector = TlsConnector::from(Arc::new(client_config(roots, &target)?));
        let name = ServerName::try_from(target.name.clone())
            .map_err(|_| EfsError::Name(target.name.clone()))?;
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // A runtime of its own: the caller may be on a thread of another
        // runtime, or on none.
        let thread = std::thread::Builder::new()
            .name("efs-tunnel".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(TUNNEL_THREADS)
                    .thread_name("efs-tunnel")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready.send(Err(EfsError::Io(e)))),
                };
                rt.block_on(async move {
                    let listener = match connect(&target, &connector, name.clone()).await {
                        Ok(_checked) => TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await,
                        Err(e) => return drop(ready.send(Err(e))),
                    };
                    let listener = match listener.and_then(|l| Ok((l.local_addr()?.port(), l))) {
                        Ok((port, l)) => {
                            let _ = ready.send(Ok(port));
                            l
                        }
                        Err(e) => return drop(ready.send(Err(EfsError::Io(e)))),
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = serve(listener, target, connector, name, warn) => {}
                    }
                });
            })?;
        let port = started
            .recv()
            .map_err(|_| EfsError::Io(std::io::Error::other("the tunnel's thread ended")))??;
        Ok(Tunnel {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The port the kernel mounts `127.0.0.1` at.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn connect(
    target: &Target,
    connector: &TlsConnector,
    name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, EfsError> {
    let unreachable = |why: String| EfsError::Unreachable {
        name: target.name.clone(),
        addr: target.addr,
        why,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr))
        .await
        .map_err(|_| unreachable(format!("no answer in {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    tcp.set_nodelay(true)?;
    let handshake = |why: String| EfsError::Handshake {
        name: target.name.clone(),
        addr: target.addr,
        why,
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| handshake(format!("no answer in {HANDSHAKE_TIMEOUT:?}")))?
        .map_err(|e| handshake(e.to_string()))
}

async fn serve(
    listener: TcpListener,
    target: Target,
    connector: TlsConnector,
    name: ServerName<'static>,
    warn: Arc<dyn Fn(String) + Send + Sync>,
) {
    let target = Arc::new(target);
    loop {
        let mut local = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn(format!("EFS tunnel: accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (target, connector, name, warn) = (
            target.clone(),
            connector.clone(),
            name.clone(),
            warn.clone(),
        );
        tokio::spawn(async move {
            let _ = local.set_nodelay(true);
            match connect(&target, &connector, name).await {
                Ok(mut remote) => {
                    // Either side closing ends both: the kernel reconnects.
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut local,
                        &mut remote,
                        COPY_BUFFER,
                        COPY_BUFFER,
                    )
                    .await;
                }
                Err(e) => warn(e.to_string()),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_certificate_names_the_access_point_and_the_file_system() {
        let (cert, _) = client_certificate(
            "fs-12345678.efs.us-east-1.amazonaws.com",
            "fs-12345678",
            "fsap-0123456789abcdef0",
        )
        .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
        let value = |oid: &str| {
            let ext = parsed
                .extensions()
                .iter()
                .find(|e| e.oid.to_id_string() == oid)
                .unwrap_or_else(|| panic!("no extension {oid}"));
            let (_, any) = x509_parser::der_parser::parse_der(ext.value).unwrap();
            any.as_str().unwrap().to_string()
        };
        assert_eq!(value("1.3.6.1.4.1.4843.7.1"), "fsap-0123456789abcdef0");
        assert_eq!(value("1.3.6.1.4.1.4843.7.3"), "fs-12345678");
    }

    /// A CA, and a TLS server with a certificate from it for `name`, that
    /// echoes what it reads; its port.
    fn echo_server(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, name: &str) -> SocketAddr {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, ca)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let (mut r, mut w) = tokio::io::split(tls);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                }
            });
        });
        addr
    }

    fn new_ca(cn: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, Arc<RootCertStore>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let roots = roots(Some(&cert.pem())).unwrap();
        (rcgen::Issuer::new(params, key), roots)
    }

    fn target(name: &str, addr: SocketAddr) -> Target {
        Target {
            name: name.into(),
            addr,
            file_system_id: "fs-12345678".into(),
            access_point_id: Some("fsap-12345678".into()),
        }
    }

    #[test]
    fn the_tunnel_carries_bytes_to_a_server_with_the_right_certificate_only() {
        use std::io::{Read, Write};
        let name = "fs-12345678.efs.us-east-1.amazonaws.com";
        let (ca, trusted) = new_ca("test EFS CA");
        let server = echo_server(&ca, name);
        let warn: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|_| {});
        let tunnel = Tunnel::open(target(name, server), trusted.clone(), warn.clone()).unwrap();
        // Two connections, as the kernel's nconnect makes.
        for i in 0..2 {
            let mut c = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, tunnel.port())).unwrap();
            let msg = format!("NFS call {i}");
            c.write_all(msg.as_bytes()).unwrap();
            let mut back = vec![0; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg.as_bytes());
        }
        drop(tunnel);

        // A certificate for another name, then one from a CA not trusted.
        let other = echo_server(&ca, "fs-87654321.efs.us-east-1.amazonaws.com");
        let e = Tunnel::open(target(name, other), trusted.clone(), warn.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("TLS handshake with the mount target") && e.contains("not valid for name"),
            "{e}"
        );
        let (stranger, _) = new_ca("another CA");
        let impostor = echo_server(&stranger, name);
        let e = Tunnel::open(target(name, impostor), trusted, warn)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");
    }

    #[test]
    fn roots_are_the_configured_pem_or_the_built_in_ones() {
        assert!(roots(None).unwrap().len() > 100);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(roots(Some(&ca.pem())).unwrap().len(), 1);
        let e = roots(Some("no certificate")).unwrap_err().to_string();
        assert!(e.contains("no certificate in the PEM"), "{e}");
    }
}
