//! `ferry-agent --config FILE`: the appliance's configuration document
//! (`/data/config/ferry.yaml`, see init/README.md), read on any Linux host.
//! The agent reads `role:`, the `daemon:` section (ports and paths, so a hub
//! and agents run as plain processes) and the `agent:` section (locations
//! and tasks to declare); the rest belongs to ferry-init, which checks it.
//! A key that is none of these, at any level, is refused (a misspelt one
//! must not leave the defaults in force), and so is a value out of range.
//!
//! ```yaml
//! version: 2
//! role: hub                      # or agent (the default)
//! daemon:
//!   data_dir: /data/agent
//!   socket: /run/ferry/agent.sock
//!   activation_listen: 0.0.0.0:80   # agent: the activation port until activated
//!   activated_marker: /data/ferry/activated
//!   hub_local_sources: [/srv/data]  # agent: local paths a hub's task may read
//!   require_hub_fingerprint: false  # agent: true refuses activation without it
//!   https_listen: 0.0.0.0:443       # hub: agents and operators
//!   hub_names: [hub.example.com]    # hub: names in its TLS certificate
//!   operator_token_file: /data/agent/hub/operator-token
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::provision::Provision;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration document {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the configuration document {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("the configuration document {path}: {why}")]
    Invalid { path: String, why: String },
    #[error("the configuration document: {0}")]
    Untrusted(#[from] super::secure::TrustError),
}

/// What the daemon serves as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Hub,
}

/// The parts of the document ferry-agent reads, and the names of those it
/// leaves to ferry-init.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub daemon: Daemon,
    /// Read as JSON values, then as ferry-init hands it over (its enums are
    /// single-key maps, which serde_yaml would take for tags).
    #[serde(default, rename = "agent")]
    agent_section: Option<serde_json::Value>,
    #[serde(skip)]
    pub agent: Option<Provision>,
    /// ferry-init's sections (see init/README.md), checked by it.
    #[serde(default, rename = "hostname")]
    _hostname: Option<serde_yaml::Value>,
    #[serde(default, rename = "network")]
    _network: Option<serde_yaml::Value>,
    #[serde(default, rename = "time")]
    _time: Option<serde_yaml::Value>,
    #[serde(default, rename = "support")]
    _support: Option<serde_yaml::Value>,
}

/// Bounds of the numbers in `daemon:` (each becomes a duration).
pub const HISTORY_DAYS: std::ops::RangeInclusive<u32> = 1..=36_500;
pub const POLL_SECONDS: std::ops::RangeInclusive<u64> = 1..=3_600;
pub const ACTIVATION_KEY_SECONDS: std::ops::RangeInclusive<u64> = 1..=30 * 86_400;
/// An operator token shorter than this is too easy to guess.
pub const MIN_TOKEN_LEN: usize = 16;

/// `daemon:`; every field has the appliance's value by default.
#[derive(Clone, Debug, Deserialize)]
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
    /// Agent: refuse an activation without the hub's CA fingerprint.
    pub require_hub_fingerprint: bool,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            data_dir: "/data/agent".into(),
            socket: super::DEFAULT_SOCKET.into(),
            history_days: 30,
            cloudwatch_emf: false,
            console: None,
            activation_listen: "0.0.0.0:80".parse().expect("valid"),
            activated_marker: "/data/ferry/activated".into(),
            poll_seconds: 2,
            https_listen: "0.0.0.0:443".parse().expect("valid"),
            hub_names: Vec::new(),
            operator_token_file: None,
            operator_token: None,
            activation_key_seconds: 30 * 60,
            hub_local_sources: Vec::new(),
            require_hub_fingerprint: false,
        }
    }
}

/// The longest document read.
const MAX_DOCUMENT: u64 = 1 << 20;

impl Document {
    /// Reads, parses and checks the document. It must be owned by root or
    /// the daemon's user and writable by no one else, through directories
    /// no one else can write: it says what the daemon serves and mounts.
    pub fn load(path: &Path) -> Result<Document, ConfigError> {
        let bytes = super::secure::read_trusted(path, MAX_DOCUMENT)?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
            path: path.display().to_string(),
            why: "not UTF-8 text".into(),
        })?;
        let doc = Document::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        doc.validate().map_err(|why| ConfigError::Invalid {
            path: path.display().to_string(),
            why,
        })?;
        Ok(doc)
    }

    pub fn parse(text: &str) -> Result<Document, serde_yaml::Error> {
        let mut doc: Document = serde_yaml::from_str(text)?;
        if let Some(v) = doc.agent_section.take() {
            doc.agent = Some(serde_json::from_value(v).map_err(|e| {
                <serde_yaml::Error as serde::de::Error>::custom(format!("agent: {e}"))
            })?);
        }
        Ok(doc)
    }

    /// Values out of range, empty or relative where they must not be; the
    /// message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(v) = self.version {
            if !(1..=2).contains(&v) {
                return Err(format!(
                    "version: {v} is not supported (this agent reads versions 1 and 2)"
                ));
            }
        }
        self.daemon.validate()
    }
}

impl Daemon {
    /// See [`Document::validate`].
    pub fn validate(&self) -> Result<(), String> {
        let path = |key: &str, p: &Path| -> Result<(), String> {
            if p.as_os_str().is_empty() || !p.is_absolute() {
                return Err(format!(
                    "daemon.{key}: {:?} is not an absolute path",
                    p.display().to_string()
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
        let range = |key: &str, v: u64, r: std::ops::RangeInclusive<u64>, unit: &str| {
            if r.contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "daemon.{key}: {v} is out of range: give {} to {} {unit}",
                    r.start(),
                    r.end()
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
        for (key, addr) in [
            ("activation_listen", self.activation_listen),
            ("https_listen", self.https_listen),
        ] {
            if addr.port() == 0 {
                return Err(format!(
                    "daemon.{key}: {addr} has no port: give one, such as :443"
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
                return Err(format!(
                    "daemon.hub_names: {name:?} is not a host name or address"
                ));
            }
        }
        if let Some(t) = &self.operator_token {
            if t.chars().count() < MIN_TOKEN_LEN
                || t.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "daemon.operator_token: give at least {MIN_TOKEN_LEN} characters without spaces (or leave it out: the hub makes one in operator_token_file)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_appliance_document_and_ignores_init_sections() {
        let doc = Document::parse(
            "version: 2\nhostname: h\nnetwork: { mode: dhcp }\nrole: hub\ndaemon:\n  https_listen: 127.0.0.1:8443\n  data_dir: /tmp/x\nagent:\n  locations:\n    a: { local: { path: /srv/a } }\n",
        )
        .unwrap();
        assert_eq!(doc.role, Role::Hub);
        assert_eq!(doc.daemon.https_listen.port(), 8443);
        assert_eq!(doc.daemon.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(doc.daemon.activation_listen.port(), 80);
        assert!(doc.agent.is_some());
    }

    #[test]
    fn refuses_unknown_daemon_keys_and_roles() {
        assert!(Document::parse("role: gateway\n").is_err());
        assert!(Document::parse("daemon: { data_dri: /x }\n").is_err());
        assert_eq!(Document::parse("version: 2\n").unwrap().role, Role::Agent);
    }

    #[test]
    fn refuses_unknown_keys_at_every_level() {
        // misspelt: the defaults (0.0.0.0:80) must not apply in silence
        let e = Document::parse("version: 2\ndeamon:\n  activation_listen: 127.0.0.1:8080\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `deamon`"), "{e}");
        let e = Document::parse("version: 2\nagent:\n  tasks: {}\n  locatons: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("locatons"), "{e}");
        let e = Document::parse(
            "version: 2\nagent:\n  locations:\n    a: { local: { path: /a, mode: x } }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("mode"), "{e}");
    }

    #[test]
    fn refuses_values_out_of_range() {
        let bad = |daemon: &str| {
            Document::parse(&format!("version: 2\ndaemon: {{ {daemon} }}\n"))
                .unwrap()
                .validate()
                .unwrap_err()
        };
        let e = bad("activation_key_seconds: 18446744073709551615");
        assert!(
            e.contains("daemon.activation_key_seconds") && e.contains("out of range"),
            "{e}"
        );
        assert!(bad("activation_key_seconds: 0").contains("out of range"));
        assert!(bad("poll_seconds: 0").contains("daemon.poll_seconds"));
        assert!(bad("poll_seconds: 99999999999").contains("daemon.poll_seconds"));
        assert!(bad("history_days: 0").contains("daemon.history_days"));
        assert!(bad("data_dir: \"\"").contains("daemon.data_dir"));
        assert!(bad("socket: run/agent.sock").contains("daemon.socket"));
        assert!(bad("https_listen: 0.0.0.0:0").contains("daemon.https_listen"));
        assert!(bad("hub_names: [\"\"]").contains("daemon.hub_names"));
        assert!(bad("operator_token: short").contains("daemon.operator_token"));
        assert!(bad("operator_token: \"\"").contains("daemon.operator_token"));
        let e = Document::parse("version: 3\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("version"), "{e}");
        Document::parse("version: 2\ndaemon: { activation_key_seconds: 2, operator_token: e2e-operator-token-0001 }\n")
            .unwrap()
            .validate()
            .unwrap();
        Document::default().validate().unwrap();
    }
}
