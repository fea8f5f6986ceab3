// SPDX-License-Identifier: MIT
//! Talking to `ferry-agent`: HTTP/1.1 requests (hyper) over its Unix
//! socket, one connection per request, and the helpers the subcommands share (tables,
//! `--json`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ferry_model::api::Refusal;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::EXIT_USAGE;

/// How to reach the agent, and how to print.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The agent's API socket.
    #[arg(long, env = "FERRY_AGENT", value_name = "PATH", default_value = ferry_daemon::DEFAULT_SOCKET, global = true)]
    pub agent: PathBuf,
    /// Print the agent's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path}: {source} (is ferry-agent running? --agent or FERRY_AGENT choose the socket)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The request could not be made (a path or header hyper refuses).
    #[error("the request to the agent is not valid HTTP: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP with the agent: {0}")]
    Http(#[from] hyper::Error),
    #[error("the agent's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The agent refused the request; its message says why.
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
    /// The command's arguments do not fit together.
    #[error("{0}")]
    Usage(String),
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `fs::write(&p, text).ctx(|| format!("write {}", p.display()))?`.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, ClientError>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, ClientError> {
        self.map_err(|source| ClientError::Io {
            what: what(),
            source,
        })
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(args: &AgentArgs) -> Client {
        Client {
            socket: args.agent.clone(),
        }
    }

    /// One request on a connection of its own; returns the status and
    /// the body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "ferry-agent")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .ctx(|| format!("start the runtime to send {method} {path} to the agent"))?;
        runtime.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.display().to_string(),
                    source,
                })?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let answer = sender.send_request(request).await?;
            let status = answer.status().as_u16();
            let body = answer.into_body().collect().await?.to_bytes();
            Ok((status, body.to_vec()))
        })
    }

    /// A request whose answer is JSON; refusals become [`ClientError::Refused`].
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, data) = self.raw(method, path, body)?;
        if status >= 400 {
            return Err(match serde_json::from_slice::<Refusal>(&data) {
                Ok(r) => ClientError::Refused {
                    code: r.error,
                    message: r.message,
                },
                Err(_) => ClientError::Refused {
                    code: "HTTP error".into(),
                    message: format!("HTTP {status}: {}", String::from_utf8_lossy(&data)),
                },
            });
        }
        if data.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&data)?)
    }
}

impl Client {
    /// A request whose answer is a `T`: printed as the agent's JSON with
    /// `--json`, else read as a `T` and given to `human` to print.
    pub fn show<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        json: bool,
        human: impl FnOnce(T),
    ) -> Result<(), ClientError> {
        let v = self.call(method, path, body)?;
        if json {
            print_json(&v);
        } else {
            human(serde_json::from_value(v)?);
        }
        Ok(())
    }
}

/// The exit status for a failed call, with the message on stderr.
pub fn fail(what: &str, e: ClientError) -> ExitCode {
    eprintln!("ferry {what}: {e}");
    ExitCode::from(EXIT_USAGE)
}

/// Prints JSON, pretty.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints rows under a header, columns aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A string field, or "-".
pub fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Milliseconds as seconds with two decimals.
pub fn seconds(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// Encodes a path segment.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that answers each connection with the next canned bytes.
    fn canned(answers: &'static [&'static [u8]]) -> (tempfile::TempDir, Client) {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer);
            }
        });
        (dir, Client { socket: path })
    }

    #[test]
    fn reads_plain_chunked_and_refused_answers() {
        let (_dir, client) = canned(&[
            b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"A\": 1}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 44\r\n\r\n{\"Error\": \"TaskNotFound\", \"Message\": \"no t\"}",
            b"garbage",
        ]);
        assert_eq!(client.call("GET", "/a", None).unwrap()["A"], 1);
        assert_eq!(
            client.call("GET", "/b", None).unwrap(),
            serde_json::json!([1, 2])
        );
        match client.call("GET", "/c", None) {
            Err(ClientError::Refused { code, message }) => {
                assert_eq!((code.as_str(), message.as_str()), ("TaskNotFound", "no t"))
            }
            other => panic!("{other:?}"),
        }
        assert!(client.call("GET", "/d", None).is_err());
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("nightly backup/1"), "nightly%20backup%2F1");
    }
}
