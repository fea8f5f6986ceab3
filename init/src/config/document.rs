//! The document: its version, the top-level keys (`hostname`, `time`,
//! `role`) and the sections, each checked by its module.

use serde::Deserialize;

use super::agent::{self, AgentSection};
use super::daemon::{self, DaemonSection};
use super::network::{self, Network};
use super::support::{self, SupportSection};

/// Newest document version this system reads.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub version: u32,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub time: Time,
    /// Version 2: locations and tasks for ferry-agent.
    #[serde(default)]
    pub agent: Option<AgentSection>,
    /// The support channel (any version); closed unless `open_hours` or
    /// `open_minutes` is set.
    #[serde(default)]
    pub support: Option<SupportSection>,
    /// `agent` (the default) or `hub`: the hub serves HTTPS on port 443
    /// (ferry-agent reads the same document; see agent/README.md).
    #[serde(default)]
    pub role: DocRole,
    /// ferry-agent's ports and paths (`daemon:`); its keys and ranges are
    /// ferry-agent's (agent/src/daemon/config.rs), checked here too so that
    /// a misspelt key refuses the document instead of leaving a default.
    #[serde(default)]
    pub daemon: Option<DaemonSection>,
}

/// The document's `role:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DocRole {
    #[default]
    Agent,
    Hub,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Time {
    #[serde(default)]
    pub servers: Vec<String>,
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

impl Document {
    /// Checks what the schema cannot say, section by section; `Err((key,
    /// why))`, the key as a dotted path (`network.address`).
    pub fn check(&self) -> Result<(), (String, String)> {
        let doc = self;
        let invalid = |key: &str, why: String| (key.to_string(), why);
        if doc.version == 0 || doc.version > VERSION {
            return Err(invalid(
                "version",
                format!(
                    "version {} is not supported (this system reads versions 1 to {VERSION})",
                    doc.version
                ),
            ));
        }
        if let Some(agent) = &doc.agent {
            if doc.version < 2 {
                return Err(invalid(
                    "agent",
                    "the agent section needs version: 2".into(),
                ));
            }
            agent::check(agent)?;
        }
        if let Some(support) = &doc.support {
            support::check(support)?;
        }
        if let Some(daemon) = &doc.daemon {
            daemon::check(daemon)?;
        }
        if let Some(h) = &doc.hostname {
            if !valid_hostname(h) {
                return Err(invalid(
                    "hostname",
                    format!("{h:?} is not a host name (letters, digits and '-', at most 63)"),
                ));
            }
        }
        network::check(&doc.network)?;
        for s in &doc.time.servers {
            if s.is_empty() || s.contains(char::is_whitespace) {
                return Err(invalid(
                    "time.servers",
                    format!("{s:?} is not a server name"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::network::{parse_cidr, Mode};
    use crate::config::{fixture, parse};

    #[test]
    fn good_fixtures_parse() {
        let d = parse(&fixture("v1-static.yaml"), "t").unwrap();
        assert_eq!(d.hostname.as_deref(), Some("ferry-01"));
        assert_eq!(d.network.mode, Mode::Static);
        assert_eq!(
            parse_cidr(d.network.address.as_deref().unwrap()),
            Some(("192.0.2.10".parse().unwrap(), 24))
        );
        assert_eq!(d.time.servers, vec!["ntp.example.org".to_string()]);
        let d = parse(&fixture("v1-dhcp.yaml"), "t").unwrap();
        assert_eq!(d.network.mode, Mode::Dhcp);
        assert_eq!(
            parse("version: 1\n", "t").unwrap(),
            Document {
                version: 1,
                ..Document::default()
            }
        );
    }
}
