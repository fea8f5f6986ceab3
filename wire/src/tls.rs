// SPDX-License-Identifier: MIT
//! TLS for the hub and its agents, with rustls: TLS 1.3 only, the ring
//! provider's modern suites. The hub asks every client for a certificate
//! from its CA but also takes clients without one (the activation flow and
//! token-authenticated operators); each request then checks who it is from.
//!
//! The listeners here (the hub's HTTPS, the agent's activation port) cap
//! connections in all and per address under the open-file limit, and close
//! those that do not finish their handshake or headers in time, or sit idle.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower_service::Service;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::ca::fingerprint;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(roots)
}

/// The hub's server side: its certificate chain, clients optionally
/// authenticated by the hub's CA (a certificate from any other CA fails the
/// handshake).
pub fn server_config(
    ca: &CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .allow_unauthenticated()
        .build()?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, ca.clone()], key)?;
    Ok(Arc::new(config))
}

/// A client of the hub that trusts only the hub's CA, with an optional
/// client certificate (an activated agent's, or an operator's).
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsError> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        provider(),
    )
    .build()?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(inner)));
    Ok(match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    })
}

/// A first contact: trusts whatever CA the hub presents, provided its
/// fingerprint is `pin` when one is given, and remembers that CA.
pub fn first_contact_config(
    pin: Option<String>,
    seen: Arc<std::sync::Mutex<Option<CertificateDer<'static>>>>,
) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FirstContact { pin, seen }))
        .with_no_client_auth())
}

/// The hub's CA is the identity checked; the name the agent used to reach
/// the hub (an address that may change) is not.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(NotValidForName))
            | Err(rustls::Error::InvalidCertificate(NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct FirstContact {
    pin: Option<String>,
    seen: Arc<std::sync::Mutex<Option<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for FirstContact {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The hub sends its certificate and then its CA.
        let ca = intermediates
            .last()
            .ok_or_else(|| rustls::Error::General("the hub sent no CA certificate".into()))?;
        if let Some(pin) = &self.pin {
            let got = fingerprint(ca);
            if !got.eq_ignore_ascii_case(pin) {
                return Err(rustls::Error::General(format!(
                    "the hub's CA fingerprint is {got}, not {pin}"
                )));
            }
        }
        // The chain must hold together under the CA it presents.
        let ca = ca.clone().into_owned();
        let check = roots(&ca)
            .map_err(|e| rustls::Error::Other(rustls::OtherError(Arc::new(e))))
            .and_then(|r| {
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(r), provider())
                    .build()
                    .map_err(|e| rustls::Error::Other(rustls::OtherError(Arc::new(e))))
            })?;
        AnyName(check).verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        *self.seen.lock().unwrap() = Some(ca);
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Who is at the other end of a hub connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `sha256:HEX` of the client certificate, verified against the hub's CA.
    pub cert: Option<String>,
    /// The certificate's common name (`agent-...` or `operator:...`).
    pub name: Option<String>,
}

/// What one listener lets clients hold: every limit closes or refuses a
/// connection, so no number of idle, slow or half-open clients keeps
/// others out.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// The TLS handshake (a connection that does not finish it is closed).
    pub handshake: Duration,
    /// A request's headers, from when the connection is ready for one: a
    /// connection idle between requests is closed after this too.
    pub headers: Duration,
    /// How long a write may wait for the client to read (one that stops
    /// reading its answers would hold its connection forever).
    pub write_stall: Duration,
    /// Connections open at once; more are closed as soon as accepted (a
    /// client waiting in the listen backlog would wait for nothing).
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: from one /64).
    pub max_per_address: usize,
}

/// File descriptors kept for everything but connections (the store,
/// locations' files, mounts, logs).
const FD_RESERVE: usize = 128;

impl ConnLimits {
    /// The defaults, with the connection caps under the process's
    /// open-file limit, so accepting never fails for lack of descriptors.
    pub fn for_this_process() -> ConnLimits {
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let usable = usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(FD_RESERVE);
        let max_connections = usable.clamp(16, 16_384);
        ConnLimits {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(30),
            write_stall: Duration::from_secs(60),
            max_connections,
            // An address may be a NAT for several agents (64 connections each).
            max_per_address: (max_connections / 4).max(8),
        }
    }
}

/// Connections open now, in all and by address.
#[derive(Debug)]
pub struct Connections {
    limits: ConnLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; counted until dropped.
pub struct Admitted {
    conns: Arc<Connections>,
    key: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

/// Addresses counted together: an IPv6 client usually holds a whole /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(seg))
            }
        },
        v4 => v4,
    }
}

impl Connections {
    pub fn new(limits: ConnLimits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            open: Mutex::default(),
        })
    }

    /// Counts a new connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap();
        let from = open.1.get(&key).copied().unwrap_or(0);
        if open.0 >= self.limits.max_connections || from >= self.limits.max_per_address {
            return None;
        }
        open.0 += 1;
        *open.1.entry(key).or_default() += 1;
        Some(Admitted {
            conns: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap().0
    }
}

/// A connection's I/O whose writes fail once they have waited `limit` for
/// the client to take data.
struct WriteStall<I> {
    io: I,
    limit: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteStall<I> {
    fn new(io: I, limit: Duration) -> Self {
        WriteStall {
            io,
            limit,
            waiting: None,
        }
    }

    /// After a write's answer: `Pending` starts (or checks) the stall clock,
    /// anything else stops it.
    fn progress<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.waiting = None;
            return r;
        }
        let limit = self.limit;
        let sleep = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no data for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteStall<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteStall<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(r, cx)
    }
}

/// Serves `router` over HTTP/1.1 on one accepted connection, with the
/// header (and idle) timeout; `info` is what `ConnectInfo<T>` extracts.
async fn serve_connection<I, T>(io: I, router: Router, info: T, limits: &ConnLimits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(info.clone()));
        let mut router = router.clone();
        async move { router.call(req.map(axum::body::Body::new)).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(WriteStall::new(io, limits.write_stall)),
            service,
        )
        .await;
}

/// Accepts the next connection within the caps; those over a cap are
/// closed at once. Accept errors (out of descriptors) are waited out.
async fn accept_admitted(
    tcp: &TcpListener,
    conns: &Arc<Connections>,
) -> (TcpStream, SocketAddr, Admitted) {
    loop {
        match tcp.accept().await {
            Ok((stream, addr)) => {
                if let Some(admitted) = conns.admit(addr.ip()) {
                    let _ = stream.set_nodelay(true);
                    return (stream, addr, admitted);
                }
                drop(stream);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The hub's HTTPS: TLS handshakes on their own tasks, under the
/// handshake timeout, so a slow or hostile client holds up no one else;
/// then HTTP/1.1 with [`Peer`] as the connection's `ConnectInfo`.
pub async fn serve_tls(
    tcp: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    conns: Arc<Connections>,
) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (stream, addr, admitted) = accept_admitted(&tcp, &conns).await;
        let acceptor = acceptor.clone();
        let router = router.clone();
        let limits = conns.limits.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let handshake = tokio::time::timeout(limits.handshake, acceptor.accept(stream));
            // Plain TCP, a foreign certificate, an old protocol, too slow: closed here.
            let Ok(Ok(tls)) = handshake.await else {
                return;
            };
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let peer = Peer {
                addr,
                cert: cert.map(|c| fingerprint(c)),
                name: cert.and_then(|c| common_name(c)),
            };
            serve_connection(tls, router, peer, &limits).await;
        });
    }
}

/// Plain HTTP (the agent's activation port) under the same caps and
/// timeouts, until `stop` resolves (then no new connection is accepted;
/// those open end within their timeouts).
pub async fn serve_plain(
    tcp: TcpListener,
    router: Router,
    conns: Arc<Connections>,
    stop: impl std::future::Future<Output = ()>,
) {
    let accept = async {
        loop {
            let (stream, addr, admitted) = accept_admitted(&tcp, &conns).await;
            let router = router.clone();
            let limits = conns.limits.clone();
            tokio::spawn(async move {
                let _admitted = admitted;
                serve_connection(stream, router, addr, &limits).await;
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = stop => {}
    }
}

/// The subject's common name of a certificate the handshake verified.
fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn limits(handshake: Duration, headers: Duration) -> ConnLimits {
        ConnLimits {
            handshake,
            headers,
            write_stall: Duration::from_secs(600),
            max_connections: 4,
            max_per_address: 2,
        }
    }

    #[test]
    fn connections_are_capped_per_address_and_in_all() {
        let conns = Connections::new(limits(Duration::from_secs(1), Duration::from_secs(1)));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = conns.admit(a).unwrap();
        let _a2 = conns.admit(a).unwrap();
        assert!(conns.admit(a).is_none(), "a third from one address");
        // An IPv6 /64 is one address; an IPv4-mapped one is its IPv4 address.
        let _v6 = conns.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(conns.admit("::ffff:192.0.2.1".parse().unwrap()).is_none());
        let _b1 = conns.admit(b).unwrap();
        assert_eq!(conns.open(), 4);
        assert!(
            conns.admit("192.0.2.3".parse().unwrap()).is_none(),
            "over the total"
        );
        drop(a1);
        assert!(conns.admit(a).is_some());
    }

    #[test]
    fn the_defaults_stay_under_the_open_file_limit() {
        let l = ConnLimits::for_this_process();
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        assert!((l.max_connections as u64) < nofile.max(FD_RESERVE as u64 + 16));
        assert!(l.max_per_address <= l.max_connections);
    }

    /// A connection that sends nothing more is closed: `read` ends (EOF
    /// or reset) instead of timing out.
    fn closed_by_the_server(s: &mut std::net::TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Every connection ended (within a generous bound).
    fn wait_until_closed(conns: &Connections) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while conns.open() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a connection is still held"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn router() -> Router {
        Router::new().route("/", axum::routing::get(|| async { "ok" }))
    }

    #[test]
    fn a_handshake_that_does_not_come_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::Ca::load_or_create(dir.path(), &["localhost".into()]).unwrap();
        let config = server_config(
            &ca.cert_der,
            ca.server_cert.clone(),
            crate::ca::key_der(&ca.server_key),
        )
        .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tcp = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = tcp.local_addr().unwrap();
        let conns = Connections::new(limits(Duration::from_millis(300), Duration::from_secs(600)));
        rt.spawn(serve_tls(tcp, config, router(), conns.clone()));
        let mut idle = std::net::TcpStream::connect(addr).unwrap();
        assert!(closed_by_the_server(&mut idle));
        // Half a ClientHello is no better.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();
        assert!(closed_by_the_server(&mut slow));
    }

    #[test]
    fn slow_headers_and_idle_connections_are_closed() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tcp = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = tcp.local_addr().unwrap();
        let conns = Connections::new(limits(Duration::from_secs(600), Duration::from_millis(300)));
        rt.spawn(serve_plain(tcp, router(), conns, std::future::pending()));
        // Headers that never end.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
        assert!(closed_by_the_server(&mut slow));
        // A connection kept open after its answer.
        let mut idle = std::net::TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert!(closed_by_the_server(&mut idle));
    }

    #[test]
    fn a_client_that_does_not_read_its_answer_is_let_go() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tcp = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = tcp.local_addr().unwrap();
        let conns = Connections::new(ConnLimits {
            write_stall: Duration::from_millis(300),
            ..limits(Duration::from_secs(600), Duration::from_secs(600))
        });
        // An answer larger than what the sockets' buffers hold.
        let big = Router::new().route("/", axum::routing::get(|| async { vec![0u8; 64 << 20] }));
        rt.spawn(serve_plain(tcp, big, conns.clone(), std::future::pending()));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        // Its answer is being written (the client's buffer is full)...
        let mut first = [0u8; 12];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        assert_eq!(conns.open(), 1);
        // ...and the connection ends although the client never reads on.
        wait_until_closed(&conns);
        drop(s);
    }
}
