//! `ferry-agent --config FILE`: the appliance's configuration document
//! (`/data/config/ferry.yaml`, see init/README.md), read on any Linux host.
//! The agent reads `role:`, the `daemon:` section (ports and paths, so a hub
//! and agents run as plain processes) and the `agent:` section (locations
//! and tasks to declare); the rest belongs to ferry-init and is ignored.
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
}

/// What the daemon serves as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Hub,
}

/// The parts of the document ferry-agent reads.
#[derive(Debug, Default, Deserialize)]
pub struct Document {
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
}

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

impl Document {
    pub fn load(path: &Path) -> Result<Document, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Document::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
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
}
