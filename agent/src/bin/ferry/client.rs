//! Talking to `ferry-agent`: HTTP/1.1 requests over its Unix socket, one
//! connection per request, and the helpers the subcommands share (tables,
//! `--json`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
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
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent's answer is not HTTP: {0}")]
    Protocol(String),
    #[error("the agent's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The agent refused the request; its message says why.
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
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

    /// One request; returns the status and the body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                path: self.socket.display().to_string(),
                source,
            })?;
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: ferry-agent\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        parse_response(&answer)
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
            let v: Value = serde_json::from_slice(&data).unwrap_or_default();
            return Err(ClientError::Refused {
                code: v["Error"].as_str().unwrap_or("HTTP error").to_string(),
                message: v["Message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&data))
                    }),
            });
        }
        if data.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&data)?)
    }
}

/// Status and body of an HTTP/1.1 response read to the end of the connection.
fn parse_response(answer: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let rest = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bad status line in {head:?}")))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, rest.to_vec()));
    }
    let mut body = Vec::new();
    let mut at = rest;
    loop {
        let eol = at
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::Protocol("truncated chunk".into()))?;
        let size_text = String::from_utf8_lossy(&at[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
        at = &at[eol + 2..];
        if size == 0 {
            return Ok((status, body));
        }
        if at.len() < size + 2 {
            return Err(ClientError::Protocol("truncated chunk".into()));
        }
        body.extend_from_slice(&at[..size]);
        at = &at[size + 2..];
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
pub fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Milliseconds as seconds with two decimals.
pub fn seconds(ms: &Value) -> String {
    format!("{:.2} s", ms.as_u64().unwrap_or(0) as f64 / 1000.0)
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

    #[test]
    fn reads_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (404, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, b"abcde".to_vec()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("nightly backup/1"), "nightly%20backup%2F1");
    }
}
