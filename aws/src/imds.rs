// SPDX-License-Identifier: MIT
//! EC2's instance metadata service, version 2: a session token first
//! (`PUT /latest/api/token`), then every read carries it. Read for the
//! instance role's credentials and the instance's region.

use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::credentials::Credentials;
use crate::AwsError;

/// The metadata service, as EC2 offers it.
pub const ENDPOINT: &str = "http://169.254.169.254";
/// A session token's lifetime asked for (seconds; only a few reads follow).
const TOKEN_TTL_SECONDS: &str = "300";
/// Answers larger than this are refused (the documents read are small).
const MAX_ANSWER: u64 = 64 * 1024;

pub struct Imds {
    base: String,
    agent: ureq::Agent,
}

/// The role's credentials as IMDS gives them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

impl Imds {
    /// The service at `base` (`http://169.254.169.254` on EC2).
    pub fn new(base: &str) -> Imds {
        Imds {
            base: base.trim_end_matches('/').to_string(),
            // Link-local and answered by the hypervisor: it is there or not.
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .build(),
        }
    }

    fn answer(
        &self,
        action: &'static str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<String, AwsError> {
        let url = || format!("{}/latest/…", self.base);
        match r {
            Ok(resp) => {
                let mut text = String::new();
                resp.into_reader()
                    .take(MAX_ANSWER)
                    .read_to_string(&mut text)
                    .map_err(|e| AwsError::BadAnswer {
                        action,
                        why: e.to_string(),
                    })?;
                Ok(text)
            }
            Err(ureq::Error::Status(status, _)) => Err(AwsError::Api {
                action,
                status,
                message: format!("the instance metadata service at {} refused", self.base),
            }),
            Err(ureq::Error::Transport(t)) => Err(AwsError::Unreachable {
                action,
                url: url(),
                why: t.to_string(),
            }),
        }
    }

    /// One read of `path` under `/latest/meta-data/`, with a new token.
    fn get(&self, action: &'static str, path: &str) -> Result<String, AwsError> {
        let token = self.answer(
            action,
            self.agent
                .put(&format!("{}/latest/api/token", self.base))
                .set("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
                .call(),
        )?;
        self.answer(
            action,
            self.agent
                .get(&format!("{}/latest/meta-data/{path}", self.base))
                .set("X-aws-ec2-metadata-token", token.trim())
                .call(),
        )
    }

    /// The instance role's credentials and when they expire.
    pub fn role_credentials(&self) -> Result<(Credentials, DateTime<Utc>), AwsError> {
        const ACTION: &str = "IMDS instance role credentials";
        let roles = self.get(ACTION, "iam/security-credentials/")?;
        let role =
            roles
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .ok_or(AwsError::BadAnswer {
                    action: ACTION,
                    why: "the instance has no role: attach an instance profile, or configure keys"
                        .into(),
                })?;
        if !role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(AwsError::BadAnswer {
                action: ACTION,
                why: format!("{role:?} is not a role name"),
            });
        }
        let text = self.get(ACTION, &format!("iam/security-credentials/{role}"))?;
        let bad = |why: String| AwsError::BadAnswer {
            action: ACTION,
            why,
        };
        let c: RoleCredentials = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let expires = DateTime::parse_from_rfc3339(&c.expiration)
            .map_err(|e| bad(format!("Expiration {:?}: {e}", c.expiration)))?
            .to_utc();
        Ok((
            Credentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: Some(c.token),
            },
            expires,
        ))
    }

    /// The instance's region.
    pub fn region(&self) -> Result<String, AwsError> {
        Ok(self
            .get("IMDS region", "placement/region")?
            .trim()
            .to_string())
    }
}
