// SPDX-License-Identifier: MIT
//! Signed requests to the two AWS APIs used: EBS direct (REST + JSON) and
//! EC2 (Query API, XML answers).

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use crate::credentials::Credentials;
use crate::Error;

const EC2_VERSION: &str = "2016-11-15";

pub struct Client {
    agent: ureq::Agent,
    credentials: Credentials,
    pub region: String,
    endpoint: Option<String>,
}

/// An answer with a 2xx status.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(credentials: Credentials, region: String, endpoint: Option<String>) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build();
        Client {
            agent,
            credentials,
            region,
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
        }
    }

    fn base(&self, service: &str) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{service}.{}.amazonaws.com", self.region))
    }

    /// Sends one signed request. Non-2xx answers become [`Error::Api`] with
    /// AWS's message; connection failures [`Error::Unreachable`].
    pub fn send(
        &self,
        action: &'static str,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Answer, Error> {
        let url = format!("{}{path}", self.base(service));
        let identity = aws_credential_types::Credentials::new(
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            self.credentials.session_token.clone(),
            None,
            "ferry-ami",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Signing(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method,
            &url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Error::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| Error::Signing(e.to_string()))?
            .into_parts();
        let mut req = self.agent.request(method, &url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        for (k, v) in instructions.headers() {
            req = req.set(k, v);
        }
        match req.send_bytes(body) {
            Ok(resp) => {
                let status = resp.status();
                let mut body = Vec::new();
                resp.into_reader()
                    .read_to_end(&mut body)
                    .map_err(|e| Error::Unreachable {
                        action,
                        url: url.clone(),
                        why: e.to_string(),
                    })?;
                Ok(Answer { status, body })
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                Err(Error::Api {
                    action,
                    status,
                    message: aws_message(&text),
                })
            }
            Err(ureq::Error::Transport(t)) => Err(Error::Unreachable {
                action,
                url,
                why: t.to_string(),
            }),
        }
    }

    /// An EC2 Query API call; returns the XML answer.
    pub fn ec2(&self, action: &'static str, params: &[(String, String)]) -> Result<String, Error> {
        let mut form = format!("Action={action}&Version={EC2_VERSION}");
        for (k, v) in params {
            form.push('&');
            form.push_str(&encode(k));
            form.push('=');
            form.push_str(&encode(v));
        }
        let answer = self.send(
            action,
            "ec2",
            "POST",
            "/",
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            form.as_bytes(),
        )?;
        String::from_utf8(answer.body).map_err(|e| Error::BadAnswer {
            action,
            why: e.to_string(),
        })
    }
}

use std::io::Read;

/// Percent-encoding of the Query API (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The message of an AWS error answer (XML `<Code>`/`<Message>` or JSON
/// `message`), else the start of the body.
pub fn aws_message(text: &str) -> String {
    let code = xml_text(text, "Code");
    let message = xml_text(text, "Message").or_else(|| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("Message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
    });
    match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (None, Some(m)) => m,
        (Some(c), None) => c,
        (None, None) => text.chars().take(300).collect(),
    }
}

/// The text of the first `<tag>` element (enough for the few fields read).
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].trim().to_string())
}
