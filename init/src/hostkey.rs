// SPDX-License-Identifier: GPL-2.0-only
//! The support host's key, for the outbound support channel: what the
//! configuration pins (a public key or its SHA-256 fingerprint), the
//! known_hosts line dbclient checks it with, and a minimal key scan that
//! learns the whole key when only its fingerprint is pinned.
//!
//! dbclient (dropbear 2022.83) checks a server's key against
//! `$HOME/.ssh/known_hosts` (`HOST TYPE BASE64` lines): a line for the host
//! and the negotiated key type with another key ends the connection ("host
//! key mismatch"); no line for them asks on /dev/tty or standard input (and
//! `-y` accepts it unasked, which is why the tunnel no longer passes it).
//! Its known_hosts holds whole keys only, so a pinned fingerprint is turned
//! into a key first: [`scan`] runs the start of an SSH key exchange, takes
//! the key the host offers, and only a key with the pinned fingerprint is
//! written. dbclient then checks that the host holds that key (its
//! signature over the exchange), which the scan alone does not.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;
use sha2::Digest;

/// Host key algorithms in dbclient's order of preference (common-algo.c
/// `sigalgs`): a server takes the first one it has, so the scan is
/// offered the same key as dbclient is.
const HOST_KEY_ALGORITHMS: &str =
    "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-256,ssh-rsa";

/// A public key as SSH sends it: its type and the whole blob (which starts
/// with the type again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub kind: String,
    pub blob: Vec<u8>,
}

impl HostKey {
    /// Reads a key blob (`string type, ...`).
    pub fn from_blob(blob: Vec<u8>) -> Result<HostKey, String> {
        let n = blob
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("the key data is too short")?;
        let kind = blob
            .get(4..4 + n)
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or("the key data does not start with its type")?
            .to_string();
        Ok(HostKey { kind, blob })
    }

    /// `SHA256:` and the unpadded base64 of the blob's SHA-256, as
    /// `ssh-keygen -lf` and dbclient print it.
    pub fn fingerprint(&self) -> String {
        fingerprint_text(&sha2::Sha256::digest(&self.blob).into())
    }

    /// The `TYPE BASE64` of a public key line.
    pub fn public_line(&self) -> String {
        format!(
            "{} {}",
            self.kind,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }
}

fn fingerprint_text(hash: &[u8; 32]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
    )
}

/// What the configuration pins: `support.outbound.host_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    /// The whole public key (`ssh-ed25519 AAAA... [comment]`).
    Key(HostKey),
    /// The SHA-256 of the key blob.
    Fingerprint([u8; 32]),
}

impl HostKeyPin {
    /// Reads an OpenSSH public key line, or a SHA-256 fingerprint
    /// (`SHA256:...`, alone or in the line `ssh-keygen -lf` prints).
    pub fn parse(text: &str) -> Result<HostKeyPin, String> {
        let text = text.trim();
        if let Some(fp) = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("SHA256:"))
        {
            let hash = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(fp.trim_end_matches('='))
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| {
                    format!("SHA256:{fp} is not a SHA-256 fingerprint (43 base64 characters)")
                })?;
            return Ok(HostKeyPin::Fingerprint(hash));
        }
        if text.split_whitespace().any(|w| w.starts_with("MD5:")) {
            return Err(
                "an MD5 fingerprint is too weak: give the SHA-256 one (ssh-keygen -lf FILE) or the public key"
                    .into(),
            );
        }
        crate::validate::check_public_key(text).map_err(|why| {
            format!(
                "give the support host's public key or its SHA-256 fingerprint (SHA256:...): {why}"
            )
        })?;
        let blob = text
            .split_whitespace()
            .nth(1)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .expect("checked above");
        Ok(HostKeyPin::Key(HostKey::from_blob(blob)?))
    }

    pub fn matches(&self, key: &HostKey) -> bool {
        match self {
            HostKeyPin::Key(k) => k == key,
            HostKeyPin::Fingerprint(f) => *f == <[u8; 32]>::from(sha2::Sha256::digest(&key.blob)),
        }
    }

    /// The pinned fingerprint, for messages.
    pub fn fingerprint(&self) -> String {
        match self {
            HostKeyPin::Key(k) => k.fingerprint(),
            HostKeyPin::Fingerprint(f) => fingerprint_text(f),
        }
    }
}

/// The known_hosts line dbclient matches for `host` (the name as given on
/// its command line; the port is not part of it).
pub fn known_hosts_line(host: &str, key: &HostKey) -> String {
    format!("{host} {}\n", key.public_line())
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("not an SSH server: {0}")]
    Protocol(String),
    #[error("the server ended the connection: {0}")]
    Disconnected(String),
}

/// Largest packet taken during the scan (RFC 4253 asks for 35000).
const MAX_PACKET: usize = 35_000;

/// Learns the host key `host:port` offers to dbclient: version exchange,
/// KEXINIT, and a curve25519 key exchange started only to read the key in
/// the server's reply; then the connection is dropped. Nothing is
/// authenticated here (see the module comment).
pub fn scan(host: &str, port: u16, timeout: Duration) -> Result<HostKey, ScanError> {
    let addrs: Vec<_> = (host, port).to_socket_addrs()?.collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(e.into()),
        (None, None) => {
            return Err(ScanError::NoAddress {
                host: host.to_string(),
            })
        }
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    exchange(stream)
}

/// The scan's side of the protocol, over any stream.
fn exchange<S: Read + Write>(stream: S) -> Result<HostKey, ScanError> {
    let mut s = BufReader::new(stream);
    s.get_mut().write_all(b"SSH-2.0-ferry_init_keyscan\r\n")?;
    // the server may send other lines before its version (RFC 4253 4.2)
    let mut line = Vec::new();
    for _ in 0..32 {
        line.clear();
        (&mut s).take(256).read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(ScanError::Protocol("no version line".into()));
        }
        if line.starts_with(b"SSH-") {
            break;
        }
    }
    if !(line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-")) {
        return Err(ScanError::Protocol(format!(
            "version line {:?}",
            String::from_utf8_lossy(&line).trim_end()
        )));
    }
    let mut kexinit = vec![20u8];
    kexinit.extend_from_slice(&[0; 16]); // cookie
    for list in [
        "curve25519-sha256,curve25519-sha256@libssh.org",
        HOST_KEY_ALGORITHMS,
        CIPHERS,
        CIPHERS,
        MACS,
        MACS,
        "none,zlib@openssh.com,zlib",
        "none,zlib@openssh.com,zlib",
        "",
        "",
    ] {
        put_string(&mut kexinit, list.as_bytes());
    }
    kexinit.extend_from_slice(&[0, 0, 0, 0, 0]); // no guess, reserved
    write_packet(s.get_mut(), &kexinit)?;
    let mut sent_init = false;
    for _ in 0..64 {
        let p = read_packet(&mut s)?;
        match p.first() {
            // DISCONNECT: reason code, description
            Some(1) => {
                let why = p
                    .get(5..)
                    .and_then(|r| get_string(r).map(|(d, _)| d))
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .unwrap_or_default();
                return Err(ScanError::Disconnected(why));
            }
            // IGNORE, DEBUG
            Some(2 | 4) => {}
            // the server's KEXINIT: now our half of the exchange. Any X25519
            // point will do; the base point (9) is one.
            Some(20) if !sent_init => {
                let mut q = [0u8; 32];
                q[0] = 9;
                let mut init = vec![30u8];
                put_string(&mut init, &q);
                write_packet(s.get_mut(), &init)?;
                sent_init = true;
            }
            // KEX_ECDH_REPLY: string K_S (the host key), Q_S, signature
            Some(31) if sent_init => {
                let (blob, _) = get_string(&p[1..])
                    .ok_or_else(|| ScanError::Protocol("short key exchange reply".into()))?;
                return HostKey::from_blob(blob.to_vec()).map_err(ScanError::Protocol);
            }
            other => {
                return Err(ScanError::Protocol(format!(
                    "unexpected message {other:?} in the key exchange"
                )))
            }
        }
    }
    Err(ScanError::Protocol("no key exchange reply".into()))
}

const CIPHERS: &str = "chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com";
const MACS: &str = "hmac-sha2-256,hmac-sha2-512,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1";

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A `string` at the start of `b`, and what follows it.
fn get_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let s = b.get(4..4usize.checked_add(n)?)?;
    Some((s, &b[4 + n..]))
}

/// An unencrypted binary packet (RFC 4253 6): length, padding length,
/// payload, at least 4 bytes of padding to a multiple of 8.
fn write_packet(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let mut pad = 8 - (5 + payload.len()) % 8;
    if pad < 4 {
        pad += 8;
    }
    let mut p = Vec::with_capacity(5 + payload.len() + pad);
    p.extend_from_slice(&((1 + payload.len() + pad) as u32).to_be_bytes());
    p.push(pad as u8);
    p.extend_from_slice(payload);
    p.resize(p.len() + pad, 0);
    w.write_all(&p)
}

fn read_packet(r: &mut impl Read) -> Result<Vec<u8>, ScanError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if !(5..=MAX_PACKET).contains(&len) {
        return Err(ScanError::Protocol(format!("packet length {len}")));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p)?;
    let pad = p[0] as usize;
    if pad + 1 >= len {
        return Err(ScanError::Protocol(format!(
            "padding {pad} in a packet of {len}"
        )));
    }
    p.truncate(len - pad);
    p.remove(0);
    Ok(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Command, Stdio};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAj9j9ewgHr33Af0NDvb6O2gdcak/0lKbrkSnE5YqbHj engineer@example";
    /// `ssh-keygen -lf` of KEY.
    const KEY_FP: &str = "SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII";

    #[test]
    fn a_pin_is_a_public_key_or_its_sha256_fingerprint() {
        let HostKeyPin::Key(k) = HostKeyPin::parse(KEY).unwrap() else {
            panic!("not a key")
        };
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.fingerprint(), KEY_FP);
        assert_eq!(
            k.public_line(),
            KEY.rsplit_once(' ').unwrap().0,
            "the comment is not part of the key"
        );
        // the fingerprint alone, or the line ssh-keygen -lf prints
        for text in [
            KEY_FP.to_string(),
            format!("256 {KEY_FP} engineer@example (ED25519)"),
        ] {
            let pin = HostKeyPin::parse(&text).unwrap();
            assert!(pin.matches(&k), "{text}");
            assert_eq!(pin.fingerprint(), KEY_FP);
        }
        let other = HostKey::from_blob(k.blob[..k.blob.len() - 1].to_vec()).unwrap();
        assert!(!HostKeyPin::parse(KEY_FP).unwrap().matches(&other));
        assert!(!HostKeyPin::parse(KEY).unwrap().matches(&other));
        for (bad, why) in [
            ("SHA256:abc", "is not a SHA-256 fingerprint"),
            (
                "MD5:6f:2a:0c:3e:4b:22:d1:5f:77:e5:91:a6:0b:2d:11:4c",
                "MD5 fingerprint is too weak",
            ),
            ("ssh-ed25519 AAAA", "public key or its SHA-256 fingerprint"),
            (
                "support.example.org",
                "public key or its SHA-256 fingerprint",
            ),
            ("", "public key or its SHA-256 fingerprint"),
        ] {
            let e = HostKeyPin::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_known_hosts_line_is_what_dbclient_matches() {
        let HostKeyPin::Key(k) = HostKeyPin::parse(KEY).unwrap() else {
            panic!()
        };
        assert_eq!(
            known_hosts_line("10.0.2.100", &k),
            "10.0.2.100 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAj9j9ewgHr33Af0NDvb6O2gdcak/0lKbrkSnE5YqbHj\n"
        );
    }

    #[test]
    fn packets_are_framed_and_padded() {
        let mut out = Vec::new();
        write_packet(&mut out, b"abc").unwrap();
        assert_eq!(out.len() % 8, 0);
        assert!(out[4] >= 4);
        assert_eq!(read_packet(&mut out.as_slice()).unwrap(), b"abc");
        // a length past the limit is refused before anything is allocated
        let mut huge = (u32::MAX).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        assert!(matches!(
            read_packet(&mut huge.as_slice()),
            Err(ScanError::Protocol(_))
        ));
        assert_eq!(get_string(&[0, 0, 0, 9, 1]), None);
    }

    /// A real dropbear server (package dropbear-bin) on a loopback port,
    /// with a new host key of `kind`; killed on drop. The caller holds
    /// [`crate::reaper::TEST_CHILDREN`].
    pub struct Server {
        child: std::process::Child,
        pub port: u16,
        pub key: HostKey,
        pub dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub fn dropbear_installed() -> bool {
        Path::new("/usr/sbin/dropbear").exists() && Path::new("/usr/bin/dbclient").exists()
    }

    pub fn server(kind: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("host_key");
        let out = Command::new("dropbearkey")
            .args(["-t", kind, "-f"])
            .arg(&key)
            .output()
            .expect("dropbearkey");
        assert!(out.status.success(), "{out:?}");
        let public = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
            .unwrap()
            .to_string();
        let HostKeyPin::Key(key_pub) = HostKeyPin::parse(&public).unwrap() else {
            panic!()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/sbin/dropbear")
            .args(["-F", "-E", "-s", "-p", &format!("127.0.0.1:{port}"), "-r"])
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // up once it accepts a connection (bounded: a server that never
        // comes up fails the test here, not later)
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            port,
            key: key_pub,
            dir,
        }
    }

    #[test]
    fn the_scan_reads_the_key_dropbear_offers() {
        if !dropbear_installed() {
            eprintln!("skipped: needs dropbear-bin");
            return;
        }
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let s = server(kind);
            let got = scan("127.0.0.1", s.port, Duration::from_secs(20)).unwrap();
            assert_eq!(got, s.key, "{kind}");
            assert!(HostKeyPin::parse(&s.key.fingerprint())
                .unwrap()
                .matches(&got));
        }
    }

    #[test]
    fn the_scan_refuses_what_is_not_ssh() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            // read the scan's version line, so closing sends no reset
            let mut c = BufReader::new(c);
            let mut line = Vec::new();
            c.read_until(b'\n', &mut line).unwrap();
            let _ = c.get_mut().write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        });
        let e = scan("127.0.0.1", port, Duration::from_secs(20)).unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, ScanError::Protocol(_)), "{e}");
    }
}
