// SPDX-License-Identifier: MIT
//! Credentials: from the environment variables, then the shared files
//! (`~/.aws/credentials`, `~/.aws/config`) for `AWS_PROFILE` (default
//! `default`), as AWS's command-line tools read them; or given in a
//! configuration; or the instance role's, read from IMDSv2 and renewed
//! before they expire.

use std::collections::HashMap;
use std::env;
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

use crate::imds::Imds;
use crate::AwsError;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the secret
        write!(f, "Credentials({})", self.access_key_id)
    }
}

/// Where a client's credentials come from.
pub enum Provider {
    /// Given once (the environment, a file, a configuration, an assumed role).
    Static(Credentials),
    /// The EC2 instance role's, kept until five minutes before they expire.
    InstanceRole {
        imds: Imds,
        cached: Mutex<Option<(Credentials, DateTime<Utc>)>>,
    },
}

/// Instance-role credentials are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::minutes(5);

impl Provider {
    pub fn instance_role(imds: Imds) -> Provider {
        Provider::InstanceRole {
            imds,
            cached: Mutex::new(None),
        }
    }

    /// The credentials to sign with now.
    pub fn get(&self) -> Result<Credentials, AwsError> {
        match self {
            Provider::Static(c) => Ok(c.clone()),
            Provider::InstanceRole { imds, cached } => {
                let mut cached = cached.lock().unwrap();
                match &*cached {
                    Some((c, expires)) if Utc::now() + RENEW_BEFORE < *expires => Ok(c.clone()),
                    _ => {
                        let (c, expires) = imds.role_credentials()?;
                        *cached = Some((c.clone(), expires));
                        Ok(c)
                    }
                }
            }
        }
    }
}

fn aws_dir() -> Option<PathBuf> {
    env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws"))
}

/// `[section]` → key → value of an INI file.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

fn profile() -> String {
    env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into())
}

fn shared(file: &str, section: &str) -> HashMap<String, String> {
    let path = env::var_os(if file == "credentials" {
        "AWS_SHARED_CREDENTIALS_FILE"
    } else {
        "AWS_CONFIG_FILE"
    })
    .map(PathBuf::from)
    .or_else(|| aws_dir().map(|d| d.join(file)));
    path.and_then(|p| fs::read_to_string(p).ok())
        .map(|t| parse_ini(&t).remove(section).unwrap_or_default())
        .unwrap_or_default()
}

/// The credentials of the environment or the shared files.
pub fn from_environment() -> Result<Credentials, AwsError> {
    let var = |k: &str| env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: var("AWS_SESSION_TOKEN"),
        });
    }
    let mut s = shared("credentials", &profile());
    match (
        s.remove("aws_access_key_id"),
        s.remove("aws_secret_access_key"),
    ) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: s.remove("aws_session_token"),
        }),
        _ => Err(AwsError::NoCredentials),
    }
}

/// The region given, else the environment's or the shared config's.
pub fn region(explicit: Option<&str>) -> Result<String, AwsError> {
    if let Some(r) = explicit {
        return Ok(r.to_string());
    }
    for k in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(r) = env::var(k) {
            if !r.is_empty() {
                return Ok(r);
            }
        }
    }
    let p = profile();
    let section = if p == "default" {
        p
    } else {
        format!("profile {p}")
    };
    shared("config", &section)
        .remove("region")
        .ok_or(AwsError::NoRegion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_never_printed() {
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("token".into()),
        };
        let shown = format!("{c:?}");
        assert_eq!(shown, "Credentials(AKIDEXAMPLE)");
    }

    #[test]
    fn reads_sections_of_an_ini_file() {
        let ini =
            parse_ini("# c\n[default]\naws_access_key_id = A\n[profile x]\nregion=eu-west-1\n");
        assert_eq!(ini["default"]["aws_access_key_id"], "A");
        assert_eq!(ini["profile x"]["region"], "eu-west-1");
    }
}
