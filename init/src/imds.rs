// SPDX-License-Identifier: GPL-2.0-only
//! EC2's instance metadata service, version 2 (IMDSv2): a session token
//! first (`PUT /latest/api/token`), then every read carries it. The AMI is
//! registered with `ImdsSupport v2.0`, so EC2 refuses token-less reads.
//!
//! Read at boot once the network is up: the instance ID and local address
//! (logged), the key pair's public key, and the user data, which is a
//! configuration document offered like any other (see [`document`]).
//!
//! The HTTP client is a few lines over `std::net::TcpStream`: the endpoint
//! is plain HTTP on a link-local address, answers with small bodies, and
//! PID 1 is better off without an HTTP crate's dependency tree (URL and IDNA
//! tables, a TLS stack it would never use) in its static binary.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The metadata service.
pub const ENDPOINT: &str = "169.254.169.254:80";
/// Session token lifetime asked for (the maximum, six hours).
pub const TOKEN_TTL_SECONDS: u32 = 21600;
/// The document last offered from IMDS (offered again only when it changes,
/// so changes made another way are not undone at every boot).
pub const LAST_APPLIED: &str = "/data/config/imds.last.yaml";
/// How long boot waits for the service (the network may come up late).
pub const BOOT_WAIT: Duration = Duration::from_secs(30);

/// Answers larger than this are refused (user data is at most 16 KiB).
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{method} http://{addr}{path}: HTTP {status}")]
    Status {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        status: u16,
    },
    #[error("{method} http://{addr}{path}: malformed answer: {why}")]
    Malformed {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        why: String,
    },
    #[error("the metadata service did not answer within {secs} s; last error: {last}")]
    GaveUp { secs: u64, last: Box<ImdsError> },
    #[error("the metadata service gave an empty session token")]
    EmptyToken,
}

impl ImdsError {
    /// Worth another try: the network or the service is not there yet.
    fn transient(&self) -> bool {
        match self {
            ImdsError::Io { .. } | ImdsError::Malformed { .. } => true,
            ImdsError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// A status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 request with `Connection: close`; the whole answer is read.
pub fn request(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, ImdsError> {
    let io = |source| ImdsError::Io {
        what: format!("{method} http://{addr}{path}"),
        source,
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferry-init/{}\r\nAccept: */*\r\nConnection: close\r\n",
        addr.ip(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    let malformed = |why: String| ImdsError::Malformed {
        method,
        addr,
        path: path.to_string(),
        why,
    };
    if raw.len() > MAX_ANSWER {
        return Err(malformed(format!("larger than {MAX_ANSWER} bytes")));
    }
    parse_response(&raw).map_err(malformed)
}

/// Parses a whole HTTP/1.x answer (Content-Length, chunked, or to EOF).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not text")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(format!("status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| format!("Content-Length {v:?}"))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(format!("body cut short: {} of {n} bytes", rest.len()));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line cut short")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        // the size is the sender's: no arithmetic on it before it is checked
        if size > rest.len() {
            return Err("chunk cut short".into());
        }
        let (chunk, after) = rest.split_at(size);
        rest = after
            .strip_prefix(b"\r\n")
            .ok_or("chunk not followed by CRLF")?;
        out.extend_from_slice(chunk);
    }
}

/// What the instance learns about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub instance_id: String,
    pub local_ipv4: Option<String>,
    /// `public-keys/0/openssh-key`: the key pair given at launch.
    pub public_key: Option<String>,
    /// Raw user data (EC2 answers 404 when there is none).
    pub user_data: Option<Vec<u8>>,
}

/// A session with the metadata service.
pub struct Session {
    addr: SocketAddr,
    token: String,
    timeout: Duration,
}

impl Session {
    /// Asks for a session token, retrying with backoff (0.25 s doubling to
    /// 2 s) for up to `wait` while the network or the service is not there.
    pub fn open(addr: SocketAddr, wait: Duration) -> Result<Session, ImdsError> {
        let start = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut pause = Duration::from_millis(250);
        let ttl = TOKEN_TTL_SECONDS.to_string();
        loop {
            let r = request(
                addr,
                "PUT",
                "/latest/api/token",
                &[("X-aws-ec2-metadata-token-ttl-seconds", &ttl)],
                timeout,
            )
            .and_then(|r| match r.status {
                200 => Ok(r.body),
                status => Err(ImdsError::Status {
                    method: "PUT",
                    addr,
                    path: "/latest/api/token".into(),
                    status,
                }),
            });
            match r {
                Ok(body) => {
                    let token = String::from_utf8_lossy(&body).trim().to_string();
                    if token.is_empty() {
                        return Err(ImdsError::EmptyToken);
                    }
                    return Ok(Session {
                        addr,
                        token,
                        timeout,
                    });
                }
                Err(e) if !e.transient() => return Err(e),
                Err(e) if start.elapsed() + pause > wait => {
                    return Err(ImdsError::GaveUp {
                        secs: wait.as_secs(),
                        last: Box::new(e),
                    })
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Reads a path with the token; `None` for 404 (not set). Transient
    /// failures are tried three times.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ImdsError> {
        let mut attempt = 0;
        loop {
            let r = request(
                self.addr,
                "GET",
                path,
                &[("X-aws-ec2-metadata-token", &self.token)],
                self.timeout,
            )
            .and_then(|r| match r.status {
                200 => Ok(Some(r.body)),
                404 => Ok(None),
                status => Err(ImdsError::Status {
                    method: "GET",
                    addr: self.addr,
                    path: path.into(),
                    status,
                }),
            });
            match r {
                Err(e) if e.transient() && attempt < 2 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(250 << attempt));
                }
                r => return r,
            }
        }
    }

    fn text(&self, path: &str) -> Result<Option<String>, ImdsError> {
        Ok(self
            .get(path)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// Instance ID, local address, the key pair's key and the user data.
    pub fn metadata(&self) -> Result<Metadata, ImdsError> {
        Ok(Metadata {
            instance_id: self
                .text("/latest/meta-data/instance-id")?
                .unwrap_or_default(),
            local_ipv4: self.text("/latest/meta-data/local-ipv4")?,
            public_key: self
                .text("/latest/meta-data/public-keys/0/openssh-key")?
                .and_then(|k| k.lines().next().map(|l| l.trim().to_string())),
            user_data: self.get("/latest/user-data")?,
        })
    }
}

/// Double-quoted YAML scalar (backslash and quote escaped: one value, it
/// cannot open another key).
fn quoted(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// The configuration document to offer, if any.
///
/// The user data *is* the document (YAML, `version: 1` or `2`), checked
/// like any other: a bad one is refused by [`crate::config::store::Store::offer`]
/// and the last good one stays in force. The key pair's public key becomes
/// `support.public_key`, unless the user data sets `support.public_key`
/// itself (the user data wins). Without user data, a key pair alone gives
/// `version: 1` with just that key. Text that is not UTF-8 (gzip-compressed
/// user data, for instance) is an error naming the problem.
pub fn document(meta: &Metadata) -> Result<Option<String>, String> {
    let user = match &meta.user_data {
        None => None,
        Some(b) => {
            let text = std::str::from_utf8(b).map_err(|_| {
                format!(
                    "the user data ({} bytes) is not UTF-8 text; give a Ferry configuration document (YAML), not compressed or binary data",
                    b.len()
                )
            })?;
            Some(text).filter(|t| !t.trim().is_empty())
        }
    };
    let key = meta.public_key.as_deref().filter(|k| !k.is_empty());
    Ok(match (user, key) {
        (None, None) => None,
        (None, Some(k)) => Some(format!(
            "version: 1\nsupport:\n  public_key: {}\n",
            quoted(k)
        )),
        (Some(u), None) => Some(u.to_string()),
        (Some(u), Some(k)) => Some(with_support_key(u, k)),
    })
}

/// `text` with `support.public_key: key` added unless it sets one. The
/// text is kept as written (so error lines stay right) except when a
/// `support:` section without a key has to be rewritten.
fn with_support_key(text: &str, key: &str) -> String {
    use serde_yaml::{Mapping, Value};
    let Ok(Value::Mapping(mut doc)) = serde_yaml::from_str::<Value>(text) else {
        // not a mapping: the document checks refuse it with their message
        return text.to_string();
    };
    let section = Value::from("support");
    let field = Value::from("public_key");
    match doc.get_mut(&section) {
        None => {
            let sep = if text.ends_with('\n') { "" } else { "\n" };
            format!("{text}{sep}support:\n  public_key: {}\n", quoted(key))
        }
        Some(Value::Mapping(s)) if s.contains_key(&field) => text.to_string(),
        Some(slot @ (Value::Mapping(_) | Value::Null)) => {
            if let Value::Null = slot {
                *slot = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(s) = slot {
                s.insert(field, Value::from(key));
            }
            serde_yaml::to_string(&doc).unwrap_or_else(|_| text.to_string())
        }
        // `support: 5`: left for the document checks to refuse
        Some(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A metadata service on 127.0.0.1 in a thread: real sockets, real
    /// HTTP. Requests without a valid token get 401, as IMDSv2-only EC2
    /// answers. Records every request line with its token header.
    struct Server {
        addr: SocketAddr,
        log: Arc<Mutex<Vec<String>>>,
    }

    const TOKEN: &str = "AQAEAFerryTestToken==";

    fn serve(
        user_data: Option<&'static [u8]>,
        key: Option<&'static str>,
        fail_first: usize,
    ) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                let mut buf = Vec::new();
                let mut b = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => buf.extend_from_slice(&b[..k]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                let header = |name: &str| {
                    text.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let token = header("x-aws-ec2-metadata-token");
                log2.lock()
                    .unwrap()
                    .push(format!("{line} token={}", token.as_deref().unwrap_or("-")));
                if n < fail_first {
                    let _ = s.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                    );
                    continue;
                }
                let (status, body): (&str, Vec<u8>) = if line.starts_with("PUT /latest/api/token ")
                {
                    if header("x-aws-ec2-metadata-token-ttl-seconds").is_some() {
                        ("200 OK", TOKEN.into())
                    } else {
                        ("400 Bad Request", vec![])
                    }
                } else if token.as_deref() != Some(TOKEN) {
                    ("401 Unauthorized", vec![])
                } else if line.starts_with("GET /latest/meta-data/instance-id ") {
                    ("200 OK", b"i-0123456789abcdef0".to_vec())
                } else if line.starts_with("GET /latest/meta-data/local-ipv4 ") {
                    ("200 OK", b"172.31.5.6".to_vec())
                } else if let (true, Some(k)) = (
                    line.starts_with("GET /latest/meta-data/public-keys/0/openssh-key "),
                    key,
                ) {
                    ("200 OK", format!("{k}\n").into_bytes())
                } else if let (true, Some(u)) =
                    (line.starts_with("GET /latest/user-data "), user_data)
                {
                    ("200 OK", u.to_vec())
                } else {
                    ("404 Not Found", b"<html>not found</html>".to_vec())
                };
                // chunked for the user data, Content-Length otherwise
                let answer = if line.starts_with("GET /latest/user-data ")
                    && status.starts_with("200")
                {
                    let mut a = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .into_bytes();
                    for c in body.chunks(7) {
                        a.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        a.extend_from_slice(c);
                        a.extend_from_slice(b"\r\n");
                    }
                    a.extend_from_slice(b"0\r\n\r\n");
                    a
                } else {
                    let mut a = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nServer: EC2ws\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    a.extend_from_slice(&body);
                    a
                };
                let _ = s.write_all(&answer);
            }
        });
        Server { addr, log }
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFerryTestKey ferry-test";

    #[test]
    fn reads_metadata_with_a_token_after_transient_failures() {
        let user = b"version: 1\nhostname: from-user-data\n";
        let srv = serve(Some(user), Some(KEY), 2);
        let s = Session::open(srv.addr, Duration::from_secs(10)).unwrap();
        let m = s.metadata().unwrap();
        assert_eq!(m.instance_id, "i-0123456789abcdef0");
        assert_eq!(m.local_ipv4.as_deref(), Some("172.31.5.6"));
        assert_eq!(m.public_key.as_deref(), Some(KEY));
        assert_eq!(m.user_data.as_deref(), Some(&user[..]), "chunked body");
        let log = srv.log.lock().unwrap().clone();
        // two 503s, then the token, then every read with it
        assert_eq!(log.len(), 3 + 4, "{log:#?}");
        assert!(log[..3]
            .iter()
            .all(|l| l.starts_with("PUT /latest/api/token ")));
        assert!(
            log[3..]
                .iter()
                .all(|l| l.ends_with(&format!("token={TOKEN}"))),
            "{log:#?}"
        );
        let doc = document(&m).unwrap().unwrap();
        assert_eq!(
            doc,
            format!("version: 1\nhostname: from-user-data\nsupport:\n  public_key: \"{KEY}\"\n")
        );
    }

    #[test]
    fn the_server_refuses_reads_without_the_token() {
        let srv = serve(None, None, 0);
        let r = request(
            srv.addr,
            "GET",
            "/latest/meta-data/instance-id",
            &[],
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(r.status, 401);
    }

    #[test]
    fn no_user_data_and_no_key_offer_nothing_and_404_is_none() {
        let srv = serve(None, None, 0);
        let m = Session::open(srv.addr, Duration::from_secs(5))
            .unwrap()
            .metadata()
            .unwrap();
        assert_eq!((m.public_key.as_ref(), m.user_data.as_ref()), (None, None));
        assert_eq!(document(&m).unwrap(), None);
        // a key alone: a document with only the key
        let m = Metadata {
            public_key: Some(KEY.into()),
            ..Metadata::default()
        };
        assert_eq!(
            document(&m).unwrap().unwrap(),
            format!("version: 1\nsupport:\n  public_key: \"{KEY}\"\n")
        );
    }

    #[test]
    fn gives_up_after_the_wait_when_nothing_listens() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t = Instant::now();
        let e = Session::open(addr, Duration::from_secs(2)).err().unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(700),
            "retried with backoff"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        let msg = e.to_string();
        assert!(
            msg.contains("did not answer within 2 s") && msg.contains("/latest/api/token"),
            "{msg}"
        );
    }

    #[test]
    fn user_data_key_wins_and_sections_are_merged() {
        let meta = |u: &str| Metadata {
            public_key: Some(KEY.into()),
            user_data: Some(u.as_bytes().to_vec()),
            ..Metadata::default()
        };
        // the user data sets its own key: kept as written
        let own = "version: 1\nsupport:\n  public_key: \"ssh-ed25519 AAAAOwn own\"\n";
        assert_eq!(document(&meta(own)).unwrap().unwrap(), own);
        // a support section without a key gets the key pair's
        let doc = document(&meta("version: 1\nsupport: {}\nhostname: a\n"))
            .unwrap()
            .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap();
        assert_eq!(v["support"]["public_key"].as_str(), Some(KEY));
        assert_eq!(v["hostname"].as_str(), Some("a"));
        // no final newline
        let doc = document(&meta("version: 1")).unwrap().unwrap();
        assert_eq!(
            doc,
            format!("version: 1\nsupport:\n  public_key: \"{KEY}\"\n")
        );
        // not a mapping: left as it is, for the checks to refuse
        assert_eq!(
            document(&meta("- a\n- b\n")).unwrap().unwrap(),
            "- a\n- b\n"
        );
    }

    #[test]
    fn bad_user_data_is_refused_by_the_document_checks_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::config::store::Store::in_dir(dir.path());
        store
            .offer("version: 1\nhostname: good\n", "before")
            .unwrap();
        let m = Metadata {
            user_data: Some(b"version: 1\nhostnme: typo\n".to_vec()),
            ..Metadata::default()
        };
        let e = store
            .offer(&document(&m).unwrap().unwrap(), "EC2 user data")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("EC2 user data:") && e.contains("hostnme"),
            "{e}"
        );
        assert_eq!(store.load().config.hostname(), "good", "last good stays");
        // gzip-compressed user data (magic 1f 8b) is not text
        let m = Metadata {
            user_data: Some(vec![0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe]),
            ..Metadata::default()
        };
        let e = document(&m).unwrap_err();
        assert!(e.contains("not UTF-8 text"), "{e}");
    }

    #[test]
    fn parses_answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nx").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"x"[..]));
        let r = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abcd");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
                .unwrap_err()
                .contains("cut short")
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    /// Found writing the `imds` fuzz target: a chunk size near `usize::MAX`
    /// overflowed the length check (a panic in PID 1).
    #[test]
    fn a_huge_chunk_size_is_refused_not_a_panic() {
        for size in [
            "ffffffffffffffff",
            "fffffffffffffffe",
            "10000000000000000",
            "4",
        ] {
            let raw = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
            );
            let e = parse_response(raw.as_bytes()).unwrap_err();
            assert!(e.contains("chunk"), "{size}: {e}");
        }
    }
}
