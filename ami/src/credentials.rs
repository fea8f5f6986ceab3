// SPDX-License-Identifier: MIT
//! Credentials and region from the usual places: environment variables,
//! then the shared files (`~/.aws/credentials`, `~/.aws/config`) for
//! `AWS_PROFILE` (default `default`).

use std::collections::HashMap;
use std::env;
use std::fs;
use std::path::PathBuf;

use crate::Error;

#[derive(Clone)]
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

pub fn credentials() -> Result<Credentials, Error> {
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
        _ => Err(Error::NoCredentials),
    }
}

pub fn region(explicit: Option<&str>) -> Result<String, Error> {
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
        .ok_or(Error::NoRegion)
}
