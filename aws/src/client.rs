// SPDX-License-Identifier: MIT
//! One signed request to an AWS API, and the Query protocol (form-encoded
//! parameters, XML answers) that EC2, STS and CloudWatch speak.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;

use crate::credentials::{Credentials, Provider};
use crate::AwsError;

/// Error answers are read up to this size (their message is what is kept).
const MAX_ERROR_ANSWER: u64 = 64 * 1024;

pub struct Client {
    agent: ureq::Agent,
    credentials: Arc<Provider>,
    pub region: String,
    endpoint: Option<String>,
}

/// An answer with a 2xx status.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What a request carries.
pub enum Body<'a> {
    Bytes(&'a [u8]),
    /// A file sent as it is read: its length and SHA-256 (lowercase hex)
    /// are known beforehand, so it is signed without being held in memory.
    File {
        file: std::fs::File,
        len: u64,
        sha256: String,
    },
}

impl Client {
    /// A client for `region`; every service at `endpoint` when given (an
    /// emulator, a VPC endpoint), else at AWS's own names.
    pub fn new(credentials: Credentials, region: String, endpoint: Option<String>) -> Client {
        Client::with_provider(
            Arc::new(Provider::Static(credentials)),
            region,
            endpoint,
            Duration::from_secs(120),
        )
    }

    /// As [`Client::new`], with credentials from `credentials` and each
    /// request given at most `budget`.
    pub fn with_provider(
        credentials: Arc<Provider>,
        region: String,
        endpoint: Option<String>,
        budget: Duration,
    ) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(budget)
            .build();
        Client {
            agent,
            credentials,
            region,
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
        }
    }

    /// A client like this one with other credentials (an assumed role's).
    pub fn as_other(&self, credentials: Credentials) -> Client {
        Client {
            agent: self.agent.clone(),
            credentials: Arc::new(Provider::Static(credentials)),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    /// The endpoint given, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    fn base(&self, service: &str) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{service}.{}.amazonaws.com", self.region))
    }

    /// Sends one signed request to `service` at its endpoint and `path`
    /// (already percent-encoded).
    pub fn send(
        &self,
        action: &'static str,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Answer, AwsError> {
        let url = format!("{}{path}", self.base(service));
        self.send_to(action, service, method, &url, headers, Body::Bytes(body))
    }

    /// Sends one signed request to `url`. Non-2xx answers become
    /// [`AwsError::Api`] with AWS's message; connection failures
    /// [`AwsError::Unreachable`].
    pub fn send_to(
        &self,
        action: &'static str,
        service: &str,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Answer, AwsError> {
        let credentials = self.credentials.get()?;
        let identity = aws_credential_types::Credentials::new(
            &credentials.access_key_id,
            &credentials.secret_access_key,
            credentials.session_token.clone(),
            None,
            "ferry",
        )
        .into();
        let mut settings = SigningSettings::default();
        if service == "s3" {
            // S3 signs the path as sent and wants the payload's hash.
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| AwsError::Signing(e.to_string()))?
            .into();
        let signable_body = match &body {
            Body::Bytes(b) => SignableBody::Bytes(b),
            Body::File { sha256, .. } => SignableBody::Precomputed(sha256.clone()),
        };
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            signable_body,
        )
        .map_err(|e| AwsError::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| AwsError::Signing(e.to_string()))?
            .into_parts();
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        for (k, v) in instructions.headers() {
            req = req.set(k, v);
        }
        let sent = match body {
            Body::Bytes(b) => req.send_bytes(b),
            Body::File { file, len, .. } => req
                .set("content-length", &len.to_string())
                .send(file.take(len)),
        };
        let unreachable = |why: String| AwsError::Unreachable {
            action,
            url: url.to_string(),
            why,
        };
        match sent {
            Ok(resp) => {
                let status = resp.status();
                let mut body = Vec::new();
                resp.into_reader()
                    .read_to_end(&mut body)
                    .map_err(|e| unreachable(e.to_string()))?;
                Ok(Answer { status, body })
            }
            Err(ureq::Error::Status(status, resp)) => {
                let mut text = String::new();
                let _ = resp
                    .into_reader()
                    .take(MAX_ERROR_ANSWER)
                    .read_to_string(&mut text);
                Err(AwsError::Api {
                    action,
                    status,
                    message: aws_message(&text),
                })
            }
            Err(ureq::Error::Transport(t)) => Err(unreachable(t.to_string())),
        }
    }

    /// A Query API call (`Action`, `Version` and `params`, form-encoded);
    /// returns the XML answer.
    pub fn query(
        &self,
        service: &str,
        action: &'static str,
        version: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let mut form = format!("Action={action}&Version={version}");
        for (k, v) in params {
            form.push('&');
            form.push_str(&encode(k));
            form.push('=');
            form.push_str(&encode(v));
        }
        let answer = self.send(
            action,
            service,
            "POST",
            "/",
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            form.as_bytes(),
        )?;
        String::from_utf8(answer.body).map_err(|e| AwsError::BadAnswer {
            action,
            why: e.to_string(),
        })
    }

    /// A JSON 1.1 API call (`X-Amz-Target: {prefix}.{action}`), as
    /// CloudWatch Logs speaks; returns the JSON answer.
    pub fn json(
        &self,
        service: &str,
        target_prefix: &str,
        action: &'static str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, AwsError> {
        let answer = self.send(
            action,
            service,
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1".into()),
                ("x-amz-target", format!("{target_prefix}.{action}")),
            ],
            body.to_string().as_bytes(),
        )?;
        if answer.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&answer.body).map_err(|e| AwsError::BadAnswer {
            action,
            why: e.to_string(),
        })
    }
}

/// Percent-encoding of AWS's canonical form (RFC 3986 unreserved kept).
pub fn encode(s: &str) -> String {
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
/// `__type`/`message`), else the start of the body.
pub fn aws_message(text: &str) -> String {
    let json = serde_json::from_str::<serde_json::Value>(text).ok();
    let json_field = |names: &[&str]| {
        let v = json.as_ref()?;
        names
            .iter()
            .find_map(|n| v.get(*n).and_then(|m| m.as_str()))
            .map(str::to_string)
    };
    // JSON protocols name the code `com.amazonaws.logs#ResourceNotFoundException`.
    let code = xml_text(text, "Code").or_else(|| {
        json_field(&["__type", "code"]).map(|c| c.rsplit('#').next().unwrap_or(&c).to_string())
    });
    let message = xml_text(text, "Message").or_else(|| json_field(&["message", "Message"]));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_of_both_protocols() {
        assert_eq!(
            aws_message("<Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>"),
            "NoSuchBucket: gone"
        );
        assert_eq!(
            aws_message(
                r#"{"__type":"com.amazonaws.logs#ResourceNotFoundException","message":"no group"}"#
            ),
            "ResourceNotFoundException: no group"
        );
        assert_eq!(aws_message("plain"), "plain");
    }

    #[test]
    fn encodes_as_aws_canonicalizes() {
        assert_eq!(encode("a b/c~_.-"), "a%20b%2Fc~_.-");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
