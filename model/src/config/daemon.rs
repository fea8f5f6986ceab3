// SPDX-License-Identifier: MIT
//! The `daemon:` section: ferry-agent's ports and paths, so a hub and agents
//! also run as plain processes on any Linux host. Every key is optional and
//! has the appliance's value by default.
//!
//! ```yaml
//! daemon:
//!   data_dir: /data/agent
//!   socket: /run/ferry/agent.sock
//!   activation_listen: 0.0.0.0:80   # agent: the activation port until activated
//!   activated_marker: /data/ferry/activated
//!   hub_local_sources: [/srv/data]  # agent: local paths a hub's task may read
//!   hub_local_destinations: []      # agent: local paths a hub's task may write
//!   require_hub_fingerprint: false  # agent: true refuses activation without it
//!   https_listen: 0.0.0.0:443       # hub: agents and operators
//!   hub_names: [hub.example.com]    # hub: names in its TLS certificate
//!   operator_token_file: /data/agent/hub/operator-token
//!   aws: { region: eu-west-1, cloudwatch_metrics: true }  # see aws
//!   efs_ca_certificates: |          # EFS's TLS: trust these instead of the built-in roots
//!     -----BEGIN CERTIFICATE-----
//!     …
//! ```

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::aws::Aws;
use super::Invalid;
use crate::paths;

/// Bounds of the numbers in `daemon:` (each becomes a duration).
pub const HISTORY_DAYS: RangeInclusive<u32> = 1..=36_500;
pub const POLL_SECONDS: RangeInclusive<u64> = 1..=3_600;
pub const ACTIVATION_KEY_SECONDS: RangeInclusive<u64> = 1..=30 * 86_400;
/// An operator token shorter than this is too easy to guess.
pub const MIN_TOKEN_LEN: usize = 16;

/// `daemon:`; every field has the appliance's value by default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub history_days: u32,
    pub cloudwatch_emf: bool,
    pub console: Option<PathBuf>,
    /// Agent: where the activation page listens until the agent is activated.
    pub activation_listen: SocketAddr,
    /// Agent: written once activated (ferry-init's firewall then closes port 80).
    pub activated_marker: PathBuf,
    /// Agent: how often a pending activation asks the hub for its certificate,
    /// and how often an activated agent reports to the hub (seconds).
    pub poll_seconds: u64,
    /// Hub: where agents and operators reach the hub's HTTPS API.
    pub https_listen: SocketAddr,
    /// Hub: host names and addresses its certificate names.
    pub hub_names: Vec<String>,
    /// Hub: the operators' bearer token (made at first start when absent).
    pub operator_token_file: Option<PathBuf>,
    /// Hub: the operators' token itself (instead of the file), for a hub
    /// set up by automation.
    pub operator_token: Option<String>,
    /// Hub: how long an activation key works.
    pub activation_key_seconds: u64,
    /// Agent: local directories an execution handed over by the hub may
    /// read (NFS sources are always allowed; nothing local by default).
    pub hub_local_sources: Vec<PathBuf>,
    /// Agent: local directories an execution handed over by the hub may
    /// write, when its destination is a location the agent reaches itself
    /// (NFS and EFS always; nothing local by default).
    pub hub_local_destinations: Vec<PathBuf>,
    /// Agent: refuse an activation without the hub's CA fingerprint.
    pub require_hub_fingerprint: bool,
    /// CloudWatch metrics and logs, task reports to S3 (none without it).
    pub aws: Option<Aws>,
    /// PEM certificates an EFS mount target's must chain to, instead of
    /// Mozilla's roots built into the agent (which hold Amazon's): for an
    /// EFS-compatible server with a private CA, and for tests.
    pub efs_ca_certificates: Option<String>,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            data_dir: paths::AGENT_DATA_DIR.into(),
            socket: paths::AGENT_SOCKET.into(),
            history_days: 30,
            cloudwatch_emf: false,
            console: None,
            activation_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            activated_marker: paths::ACTIVATED_MARKER.into(),
            poll_seconds: 2,
            https_listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            hub_names: Vec::new(),
            operator_token_file: None,
            operator_token: None,
            activation_key_seconds: 30 * 60,
            hub_local_sources: Vec::new(),
            hub_local_destinations: Vec::new(),
            require_hub_fingerprint: false,
            aws: None,
            efs_ca_certificates: None,
        }
    }
}

impl Daemon {
    /// Values out of range, empty or relative where they must not be; the
    /// key is named (`daemon.poll_seconds`).
    pub fn check(&self) -> Result<(), Invalid> {
        let key = |k: &str| format!("daemon.{k}");
        let path = |k: &str, p: &Path| -> Result<(), Invalid> {
            if p.as_os_str().is_empty() || !p.is_absolute() {
                return Err(Invalid::new(
                    key(k),
                    format!("{:?} is not an absolute path", p.display().to_string()),
                ));
            }
            Ok(())
        };
        path("data_dir", &self.data_dir)?;
        path("socket", &self.socket)?;
        path("activated_marker", &self.activated_marker)?;
        if let Some(c) = &self.console {
            path("console", c)?;
        }
        if let Some(t) = &self.operator_token_file {
            path("operator_token_file", t)?;
        }
        for p in &self.hub_local_sources {
            path("hub_local_sources", p)?;
        }
        for p in &self.hub_local_destinations {
            path("hub_local_destinations", p)?;
        }
        let range = |k: &str, v: u64, r: RangeInclusive<u64>, unit: &str| {
            if r.contains(&v) {
                Ok(())
            } else {
                Err(Invalid::new(
                    key(k),
                    format!(
                        "{v} is out of range: give {} to {} {unit}",
                        r.start(),
                        r.end()
                    ),
                ))
            }
        };
        range(
            "history_days",
            self.history_days.into(),
            u64::from(*HISTORY_DAYS.start())..=u64::from(*HISTORY_DAYS.end()),
            "days",
        )?;
        range("poll_seconds", self.poll_seconds, POLL_SECONDS, "seconds")?;
        range(
            "activation_key_seconds",
            self.activation_key_seconds,
            ACTIVATION_KEY_SECONDS,
            "seconds",
        )?;
        for (k, addr) in [
            ("activation_listen", self.activation_listen),
            ("https_listen", self.https_listen),
        ] {
            if addr.port() == 0 {
                return Err(Invalid::new(
                    key(k),
                    format!("{addr} has no port: give a port from 1 to 65535, such as :443"),
                ));
            }
        }
        if let Some(aws) = &self.aws {
            aws.check()?;
        }
        if let Some(pem) = &self.efs_ca_certificates {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(Invalid::new(
                    key("efs_ca_certificates"),
                    "give PEM certificates (-----BEGIN CERTIFICATE----- …)",
                ));
            }
        }
        for name in &self.hub_names {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b));
            if !ok {
                return Err(Invalid::new(
                    key("hub_names"),
                    format!("{name:?} is not a host name or address"),
                ));
            }
        }
        if let Some(t) = &self.operator_token {
            if t.chars().count() < MIN_TOKEN_LEN
                || t.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Invalid::new(
                    key("operator_token"),
                    format!("give at least {MIN_TOKEN_LEN} characters without spaces (or leave it out: the hub makes one in operator_token_file)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(json: &str) -> Result<Daemon, String> {
        let d: Daemon = serde_json::from_str(json).map_err(|e| e.to_string())?;
        d.check().map_err(|e| e.to_string())?;
        Ok(d)
    }

    #[test]
    fn refuses_unknown_keys() {
        let e = daemon(r#"{"data_dri": "/x"}"#).unwrap_err();
        assert!(e.contains("unknown field `data_dri`"), "{e}");
    }

    #[test]
    fn refuses_values_out_of_range() {
        let bad = |kv: &str| daemon(&format!("{{{kv}}}")).unwrap_err();
        let e = bad(r#""activation_key_seconds": 18446744073709551615"#);
        assert_eq!(
            e,
            "daemon.activation_key_seconds: 18446744073709551615 is out of range: give 1 to 2592000 seconds"
        );
        assert!(bad(r#""activation_key_seconds": 0"#).contains("out of range"));
        assert!(bad(r#""poll_seconds": 0"#).contains("daemon.poll_seconds"));
        assert!(bad(r#""poll_seconds": 99999999999"#).contains("daemon.poll_seconds"));
        assert!(bad(r#""history_days": 0"#).contains("daemon.history_days"));
        assert!(bad(r#""data_dir": """#).contains("daemon.data_dir"));
        assert!(bad(r#""data_dir": "data""#).contains("daemon.data_dir"));
        assert!(bad(r#""socket": "run/agent.sock""#).contains("daemon.socket"));
        assert!(bad(r#""hub_local_sources": ["srv"]"#).contains("daemon.hub_local_sources"));
        let e = bad(r#""https_listen": "0.0.0.0:0""#);
        assert!(
            e.starts_with("daemon.https_listen: 0.0.0.0:0 has no port"),
            "{e}"
        );
        assert!(bad(r#""hub_names": [""]"#).contains("daemon.hub_names"));
        assert!(bad(r#""hub_names": ["a b"]"#).contains("daemon.hub_names"));
        assert!(bad(r#""operator_token": "short""#).contains("daemon.operator_token"));
        assert!(bad(r#""operator_token": """#).contains("daemon.operator_token"));
        let d = daemon(
            r#"{"activation_key_seconds": 2, "operator_token": "e2e-operator-token-0001", "hub_local_sources": ["/srv/data"], "require_hub_fingerprint": true}"#,
        )
        .unwrap();
        assert_eq!(d.activation_key_seconds, 2);
        assert!(d.require_hub_fingerprint);
        Daemon::default().check().unwrap();
    }
}
