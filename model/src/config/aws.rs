// SPDX-License-Identifier: MIT
//! `daemon.aws:`: where ferry-agent publishes to AWS. With it, each
//! execution's metrics go to CloudWatch (DataSync's names, with `TaskId`
//! and `AgentId` dimensions), its log lines to CloudWatch Logs, and a task
//! report whose TaskReportConfig names an S3 bucket is uploaded there.
//! Without keys, the credentials are the EC2 instance role's (IMDSv2).
//!
//! ```yaml
//! daemon:
//!   aws:
//!     region: eu-west-1                  # default: the instance's (IMDS)
//!     cloudwatch_metrics: true           # PutMetricData at each execution's end
//!     cloudwatch_namespace: Ferry
//!     cloudwatch_log_group: /ferry/agents  # execution logs; none by default
//!     # access_key_id: AKIA…             # default: the instance role
//!     # secret_access_key: …
//!     # endpoint_url: https://…          # one endpoint for every service (a VPC endpoint, an emulator)
//!     # imds_endpoint: http://169.254.169.254
//! ```

use serde::Deserialize;

use super::Invalid;

/// `daemon.aws`; see the module's documentation.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aws {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub imds_endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub cloudwatch_metrics: bool,
    pub cloudwatch_namespace: String,
    pub cloudwatch_log_group: Option<String>,
}

impl Default for Aws {
    fn default() -> Self {
        Aws {
            region: None,
            endpoint_url: None,
            imds_endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            cloudwatch_metrics: false,
            cloudwatch_namespace: "Ferry".into(),
            cloudwatch_log_group: None,
        }
    }
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and the token are never printed.
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("Aws")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("imds_endpoint", &self.imds_endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("cloudwatch_metrics", &self.cloudwatch_metrics)
            .field("cloudwatch_namespace", &self.cloudwatch_namespace)
            .field("cloudwatch_log_group", &self.cloudwatch_log_group)
            .finish()
    }
}

impl Aws {
    /// Values AWS would refuse, or a half-given key pair; the key is named
    /// (`daemon.aws.region`).
    pub fn check(&self) -> Result<(), Invalid> {
        let bad = |k: &str, why: String| Err(Invalid::new(format!("daemon.aws.{k}"), why));
        if let Some(r) = &self.region {
            let ok = (1..=32).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return bad(
                    "region",
                    format!("{r:?} is not a region name, such as eu-west-1"),
                );
            }
        }
        for (k, url) in [
            ("endpoint_url", &self.endpoint_url),
            ("imds_endpoint", &self.imds_endpoint),
        ] {
            if let Some(u) = url {
                let ok = (u.starts_with("https://") || u.starts_with("http://"))
                    && u.len() <= 2048
                    && !u.chars().any(|c| c.is_whitespace() || c.is_control());
                if !ok {
                    return bad(k, format!("{u:?} is not an http:// or https:// URL"));
                }
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return bad(
                    "secret_access_key",
                    "an access_key_id needs its secret_access_key".into(),
                )
            }
            (None, Some(_)) => {
                return bad(
                    "access_key_id",
                    "a secret_access_key needs its access_key_id".into(),
                )
            }
            (None, None) if self.session_token.is_some() => {
                return bad(
                    "session_token",
                    "a session_token goes with access_key_id and secret_access_key".into(),
                )
            }
            _ => {}
        }
        let ns = &self.cloudwatch_namespace;
        let ok = (1..=255).contains(&ns.len())
            && !ns.starts_with("AWS/")
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" ._-/#:".contains(&b));
        if !ok {
            return bad(
                "cloudwatch_namespace",
                format!("{ns:?} is not a namespace CloudWatch takes: 1 to 255 letters, digits and . _ - / # : or spaces, not starting with AWS/"),
            );
        }
        if let Some(g) = &self.cloudwatch_log_group {
            let ok = (1..=512).contains(&g.len())
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
            if !ok {
                return bad(
                    "cloudwatch_log_group",
                    format!(
                        "{g:?} is not a log group name: 1 to 512 letters, digits and . _ - / #"
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(json: &str) -> Result<Aws, String> {
        let a: Aws = serde_json::from_str(json).map_err(|e| e.to_string())?;
        a.check().map_err(|e| e.to_string())?;
        Ok(a)
    }

    #[test]
    fn checks_each_key_and_names_it() {
        assert!(aws(r#"{"regoin": "x"}"#)
            .unwrap_err()
            .contains("unknown field `regoin`"));
        assert!(aws(r#"{"region": "EU West"}"#)
            .unwrap_err()
            .starts_with("daemon.aws.region:"));
        assert!(aws(r#"{"endpoint_url": "ftp://x"}"#)
            .unwrap_err()
            .starts_with("daemon.aws.endpoint_url:"));
        assert!(aws(r#"{"access_key_id": "A"}"#)
            .unwrap_err()
            .starts_with("daemon.aws.secret_access_key:"));
        assert!(aws(r#"{"session_token": "T"}"#)
            .unwrap_err()
            .starts_with("daemon.aws.session_token:"));
        assert!(aws(r#"{"cloudwatch_namespace": "AWS/DataSync"}"#)
            .unwrap_err()
            .contains("not starting with AWS/"));
        assert!(aws(r#"{"cloudwatch_log_group": "a b"}"#)
            .unwrap_err()
            .starts_with("daemon.aws.cloudwatch_log_group:"));
        let a = aws(r#"{"region": "eu-west-1", "cloudwatch_metrics": true, "cloudwatch_log_group": "/ferry/agents", "access_key_id": "AKID", "secret_access_key": "s3cr3t"}"#).unwrap();
        assert_eq!(a.cloudwatch_namespace, "Ferry");
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("<hidden>"),
            "{shown}"
        );
    }
}
