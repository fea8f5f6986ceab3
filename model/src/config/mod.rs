// SPDX-License-Identifier: MIT
//! The configuration document (`/data/config/ferry.yaml`): its version, its
//! top-level keys, and the sections both ferry-init and ferry-agent read:
//! `role:`, `daemon:` ([`daemon`]) and `agent:` ([`agent`]), with their
//! checks. ferry-init's own sections (`network:`, `time:`, `support:`) are
//! its type parameters: ferry-init reads them with its types and checks
//! them; ferry-agent leaves them [`Ignored`]. Either way a key that is none
//! of these, at any level, refuses the document (a misspelt one must not
//! leave the defaults in force).
//!
//! ```yaml
//! version: 2
//! role: hub                      # or agent (the default)
//! daemon:                        # ferry-agent's ports and paths
//!   https_listen: 0.0.0.0:443
//! agent:                         # locations and tasks it declares at start
//!   locations: { … }
//!   tasks: { … }
//! ```

pub mod agent;
pub mod aws;
pub mod daemon;

use serde::{Deserialize, Deserializer};

pub use agent::AgentSection;
pub use daemon::Daemon;

/// Newest document version this system reads.
pub const VERSION: u32 = 2;

/// What the document says that cannot be: the key as a dotted path
/// (`daemon.poll_seconds`, `agent.tasks.nightly.schedule`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct Invalid {
    pub key: String,
    pub why: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, why: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            why: why.into(),
        }
    }
}

/// A section read by someone else: any value, not kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ignored, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}

/// The document. `Network`, `Time` and `Support` are ferry-init's sections
/// (its types; [`Ignored`] for the agent).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document<Network = Ignored, Time = Ignored, Support = Ignored> {
    pub version: u32,
    /// ferry-init's.
    #[serde(default)]
    pub hostname: Option<String>,
    /// ferry-init's.
    #[serde(default)]
    pub network: Network,
    /// ferry-init's.
    #[serde(default)]
    pub time: Time,
    /// The support channel (any version), ferry-init's.
    #[serde(default)]
    pub support: Option<Support>,
    /// `agent` (the default) or `hub`: the hub serves HTTPS on port 443.
    #[serde(default)]
    pub role: Role,
    /// ferry-agent's ports and paths; every key has the appliance's value
    /// by default.
    #[serde(default)]
    pub daemon: Daemon,
    /// Version 2: locations and tasks ferry-agent declares when it starts.
    #[serde(default)]
    pub agent: Option<AgentSection>,
}

impl<N: Default, T: Default, S> Default for Document<N, T, S> {
    /// `version: 1` and nothing else: every default.
    fn default() -> Self {
        Document {
            version: 1,
            hostname: None,
            network: N::default(),
            time: T::default(),
            support: None,
            role: Role::default(),
            daemon: Daemon::default(),
            agent: None,
        }
    }
}

/// The document's `role:`: what ferry-agent serves as (ferry-init opens the
/// firewall for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Hub,
}

impl<N, T, S> Document<N, T, S> {
    /// Checks the version and the sections ferry-agent reads (`daemon:`,
    /// `agent:`); ferry-init checks its own sections after these.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.version == 0 || self.version > VERSION {
            return Err(Invalid::new(
                "version",
                format!(
                    "version {} is not supported (this system reads versions 1 to {VERSION})",
                    self.version
                ),
            ));
        }
        if let Some(agent) = &self.agent {
            if self.version < 2 {
                return Err(Invalid::new("agent", "the agent section needs version: 2"));
            }
            agent.check()?;
        }
        self.daemon.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Document, String> {
        let doc: Document = from_json(text)?;
        doc.check().map_err(|e| e.to_string())?;
        Ok(doc)
    }

    /// The tests read JSON (the model has no YAML parser; its users do).
    fn from_json(text: &str) -> Result<Document, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn role_and_daemon_are_ferry_agents_and_the_rest_is_ignored() {
        let d = parse(
            r#"{"version": 2, "hostname": "h", "network": {"mode": "dhcp"}, "role": "hub", "daemon": {"https_listen": "127.0.0.1:8443"}}"#,
        )
        .unwrap();
        assert_eq!(d.role, Role::Hub);
        assert_eq!(d.daemon.https_listen.port(), 8443);
        assert_eq!(d.daemon.activation_listen.port(), 80);
        assert_eq!(parse(r#"{"version": 2}"#).unwrap().role, Role::Agent);
        assert!(parse(r#"{"version": 2, "role": "gateway"}"#).is_err());
        let e = parse(r#"{"version": 2, "deamon": {}}"#).unwrap_err();
        assert!(e.contains("unknown field `deamon`"), "{e}");
    }

    #[test]
    fn versions_and_the_agent_section() {
        let e = parse(r#"{"version": 3}"#).unwrap_err();
        assert_eq!(
            e,
            "version: version 3 is not supported (this system reads versions 1 to 2)"
        );
        let e = parse(r#"{"version": 1, "agent": {}}"#).unwrap_err();
        assert_eq!(e, "agent: the agent section needs version: 2");
        assert!(parse(r#"{"hostname": "x"}"#)
            .unwrap_err()
            .contains("version"));
        Document::<Ignored>::default().check().unwrap();
    }
}
