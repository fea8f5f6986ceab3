// SPDX-License-Identifier: MIT
//! HTTPS to the hub: a pool of TLS 1.3 connections (mutual TLS once the
//! agent is activated), with retries and backoff for the remote writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;

use super::proto;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot reach the hub at {url}: {detail}")]
    Unreachable {
        url: String,
        detail: String,
        /// False when no connection was made: nothing of the request left.
        sent: bool,
    },
    #[error("the hub answered {status} to {what}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
    #[error("the hub's answer to {what} is not readable: {source}")]
    Garbled {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("bad hub address {0:?}: {1}; give HOST[:PORT]")]
    Address(String, &'static str),
}

/// What the wire cost, beyond the data itself.
#[derive(Debug, Default)]
pub struct WireStats {
    /// Data bytes after compression (only counted when compressing).
    pub bytes_compressed: AtomicU64,
    /// Data bytes sent again after a broken connection or a timeout.
    pub bytes_resent: AtomicU64,
    /// Requests sent again.
    pub retries: AtomicU64,
}

/// How long one request may take before it is abandoned and sent again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the hub may stay unreachable before an operation fails: an
/// execution survives an outage shorter than this.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(180);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

type Pool = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Clone)]
pub struct HubClient {
    client: Pool,
    base: String,
    token: Option<String>,
    /// At most this many requests (and so connections) at once.
    slots: Arc<tokio::sync::Semaphore>,
    connections: usize,
    pub stats: Arc<WireStats>,
}

/// `HOST[:PORT]` (443 by default) as a base URL: a host name, an IPv4
/// address or an IPv6 address (in brackets when a port follows), and a
/// port from 1 to 65535; `https://` before and `/` after are let through.
pub fn base_url(hub: &str) -> Result<String, HubError> {
    const NOT_HOST: &str = "not a host name or address";
    let given = hub.trim();
    let bad = |why: &'static str| HubError::Address(given.to_string(), why);
    let h = given.strip_prefix("https://").unwrap_or(given);
    let h = h.strip_suffix('/').unwrap_or(h);
    if h.is_empty() {
        return Err(bad("empty"));
    }
    if h.contains(['/', '?', '#', '@']) {
        return Err(bad("a host and a port only, no path, query or user"));
    }
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        let (v6, after) = rest.split_once(']').ok_or(bad(NOT_HOST))?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad(NOT_HOST))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(bad(NOT_HOST))?),
        };
        (format!("[{v6}]"), port)
    } else if h.matches(':').count() > 1 {
        // A bare IPv6 address (no port: that takes brackets).
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad(NOT_HOST))?;
        (format!("[{h}]"), None)
    } else {
        let (host, port) = match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        };
        if host.parse::<std::net::Ipv4Addr>().is_err() && !host_name(host) {
            return Err(bad(NOT_HOST));
        }
        (host.to_string(), port)
    };
    let port = match port {
        None => 443,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(format!("https://{host}:{port}"))
}

/// A DNS name: labels of letters, digits, '-' (not first or last) and '_',
/// at most 63 bytes each and 253 in all; one final dot allowed.
fn host_name(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl HubClient {
    /// A client of the hub at `base` (from [`base_url`]); must be made
    /// inside a tokio runtime, whose tasks then carry its connections.
    pub fn new(
        base: String,
        tls: ClientConfig,
        connections: usize,
        token: Option<String>,
    ) -> HubClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let connections = connections.max(1);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        HubClient {
            client,
            base,
            token,
            slots: Arc::new(tokio::sync::Semaphore::new(connections)),
            connections,
            stats: Arc::default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A client on the same connections, with request slots and counters
    /// of its own (one execution's).
    pub fn sharing_connections(&self) -> HubClient {
        HubClient {
            slots: Arc::new(tokio::sync::Semaphore::new(self.connections)),
            stats: Arc::default(),
            ..self.clone()
        }
    }

    /// One request, once.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Bytes), HubError> {
        self.send_again(method, path, content_type, body, false)
            .await
    }

    /// [`HubClient::send`]; `again`: the same request may have reached the
    /// hub before (header [`proto::RESENT_HEADER`]).
    async fn send_again(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
        again: bool,
    ) -> Result<(StatusCode, Bytes), HubError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", content_type);
        if again {
            req = req.header(proto::RESENT_HEADER, "1");
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body.into()))
            .map_err(|e| HubError::Address(format!("{url}: {e}"), "not a URL"))?;
        let unreachable = |detail: String, sent: bool| HubError::Unreachable {
            url: url.clone(),
            detail,
            sent,
        };
        let _slot = self.slots.acquire().await.expect("never closed");
        let answer = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(error_chain(&e), !e.is_connect()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(error_chain(&e), true))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(
                format!("no answer in {REQUEST_TIMEOUT:?}"),
                true,
            )),
        }
    }

    /// A JSON request; an answer other than 2xx is a refusal.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HubError> {
        let what = format!("{method} {path}");
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, data) = self.send(method, path, "application/json", body).await?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
            return Err(HubError::Refused {
                what,
                status: status.as_u16(),
                message: v["Message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&data).into_owned()),
            });
        }
        if data.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&data).map_err(|e| HubError::Garbled {
            what,
            source: e.into(),
        })
    }

    /// Requests (and connections) at once at most.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// A batch of operations of one lane, sent again (after a backoff)
    /// while the hub cannot be reached or answers 5xx: its id makes a
    /// second arrival get the first answers. One answer per operation done.
    pub async fn fs_batch(
        &self,
        location: &str,
        batch: &proto::Batch,
    ) -> Result<proto::BatchResponse, HubError> {
        let path = format!("/agent/v1/fs/{location}/batch");
        self.exchange(&path, batch, batch.payload()).await
    }

    /// POSTs `message` in postcard and decodes the answer, with retries;
    /// `payload` is the data it carries (counted when sent again).
    async fn exchange<M: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        message: &M,
        payload: usize,
    ) -> Result<A, HubError> {
        // Shared, not copied, by every attempt.
        let body = Bytes::from(postcard::to_stdvec(message).expect("encodable"));
        let start = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut again = false;
        loop {
            let r = self
                .send_again(
                    Method::POST,
                    path,
                    "application/x-postcard",
                    body.clone(),
                    again,
                )
                .await;
            match r {
                Ok((StatusCode::OK, data)) => {
                    return postcard::from_bytes(&data).map_err(|e| HubError::Garbled {
                        what: path.to_string(),
                        source: e.into(),
                    })
                }
                Ok((status, data)) if !status.is_server_error() => {
                    return Err(HubError::Refused {
                        what: path.to_string(),
                        status: status.as_u16(),
                        message: String::from_utf8_lossy(&data).into_owned(),
                    })
                }
                Ok(_) | Err(HubError::Unreachable { .. }) if start.elapsed() < GIVE_UP_AFTER => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    // What reached the wire is sent again; a refused
                    // connection sent nothing.
                    let sent = !matches!(r, Err(HubError::Unreachable { sent: false, .. }));
                    if sent {
                        again = true;
                        self.stats
                            .bytes_resent
                            .fetch_add(payload as u64, Ordering::Relaxed);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Ok((status, data)) => {
                    return Err(HubError::Refused {
                        what: path.to_string(),
                        status: status.as_u16(),
                        message: String::from_utf8_lossy(&data).into_owned(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An error and its causes, on one line (hyper's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_addresses() {
        assert_eq!(base_url("hub.example").unwrap(), "https://hub.example:443");
        assert_eq!(
            base_url("127.0.0.1:8443").unwrap(),
            "https://127.0.0.1:8443"
        );
        assert_eq!(base_url("[::1]:8443").unwrap(), "https://[::1]:8443");
        assert_eq!(base_url("::1").unwrap(), "https://[::1]:443");
        assert_eq!(
            base_url("https://hub.example:8443/").unwrap(),
            "https://hub.example:8443"
        );
        assert_eq!(
            base_url(" hub.example. ").unwrap(),
            "https://hub.example.:443"
        );
        for (bad, why) in [
            ("", "empty"),
            ("evil.example/x", "no path"),
            ("evil.example?x", "no path"),
            ("me@evil.example", "no path"),
            ("hub example", "not a host"),
            ("-hub.example", "not a host"),
            ("hub..example", "not a host"),
            ("[::1", "not a host"),
            ("[::1]8443", "not a host"),
            ("[hub.example]:8443", "not a host"),
            ("1:2:3", "not a host"),
            ("hub.example:0", "port"),
            ("hub.example:65536", "port"),
            ("hub.example:", "port"),
            ("hub.example:https", "port"),
        ] {
            let e = base_url(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("HOST[:PORT]"), "{bad:?}: {e}");
        }
    }
}
