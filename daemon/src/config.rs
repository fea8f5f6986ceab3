// SPDX-License-Identifier: MIT
//! `ferry-agent --config FILE`: the appliance's configuration document
//! (`/data/config/ferry.yaml`, see init/README.md), read on any Linux host.
//! The document, its `role:`, `daemon:` (ports and paths, so a hub and
//! agents run as plain processes) and `agent:` (locations and tasks to
//! declare) sections and their checks are ferry-model's, which ferry-init
//! checks the document with too; the rest belongs to ferry-init. A key that
//! is none of these, at any level, is refused (a misspelt one must not
//! leave the defaults in force), and so is a value out of range.
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
//!   hub_local_destinations: []      # agent: local paths a hub's task may write
//!   require_hub_fingerprint: false  # agent: true refuses activation without it
//!   https_listen: 0.0.0.0:443       # hub: agents and operators
//!   hub_names: [hub.example.com]    # hub: names in its TLS certificate
//!   operator_token_file: /data/agent/hub/operator-token
//! ```

use std::path::Path;

pub use ferry_model::config::daemon::{
    Daemon, ACTIVATION_KEY_SECONDS, HISTORY_DAYS, MIN_TOKEN_LEN, POLL_SECONDS,
};
pub use ferry_model::config::Role;

/// The document as the agent reads it: ferry-init's sections are left alone
/// (ferry-init checks them).
pub type Document = ferry_model::config::Document;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration document {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("the configuration document {path}: {why}")]
    Invalid { path: String, why: String },
    /// A value fails ferry-model's checks (the key and why).
    #[error("the configuration document {path}: {source}")]
    Check {
        path: String,
        #[source]
        source: ferry_model::config::Invalid,
    },
    #[error("the configuration document: {0}")]
    Untrusted(#[from] ferry_secure::TrustError),
}

/// The longest document read.
const MAX_DOCUMENT: u64 = 1 << 20;

/// Reads, parses and checks the document. It must be owned by root or the
/// daemon's user and writable by no one else, through directories no one
/// else can write: it says what the daemon serves and mounts.
pub fn load(path: &Path) -> Result<Document, ConfigError> {
    let bytes = ferry_secure::read_trusted(path, MAX_DOCUMENT)?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
        path: path.display().to_string(),
        why: "not UTF-8 text".into(),
    })?;
    let doc = parse(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    doc.check().map_err(|source| ConfigError::Check {
        path: path.display().to_string(),
        source,
    })?;
    Ok(doc)
}

/// The document's text to a [`Document`] (the schema: unknown keys and
/// wrong types refused); [`Document::check`] checks the values.
pub fn parse(text: &str) -> Result<Document, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn reads_the_appliance_document_and_ignores_init_sections() {
        let doc = parse(
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
        assert!(parse("role: gateway\n").is_err());
        assert!(parse("daemon: { data_dri: /x }\n").is_err());
        assert_eq!(parse("version: 2\n").unwrap().role, Role::Agent);
    }

    #[test]
    fn refuses_unknown_keys_at_every_level() {
        // misspelt: the defaults (0.0.0.0:80) must not apply in silence
        let e = parse("version: 2\ndeamon:\n  activation_listen: 127.0.0.1:8080\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `deamon`"), "{e}");
        let e = parse("version: 2\nagent:\n  tasks: {}\n  locatons: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("locatons"), "{e}");
        let e =
            parse("version: 2\nagent:\n  locations:\n    a: { local: { path: /a, mode: x } }\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("mode"), "{e}");
    }

    #[test]
    fn refuses_values_out_of_range() {
        let bad = |daemon: &str| {
            parse(&format!("version: 2\ndaemon: {{ {daemon} }}\n"))
                .unwrap()
                .check()
                .unwrap_err()
                .to_string()
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
        let e = parse("version: 3\n")
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("version"), "{e}");
        parse("version: 2\ndaemon: { activation_key_seconds: 2, operator_token: e2e-operator-token-0001 }\n")
            .unwrap()
            .check()
            .unwrap();
        Document::default().check().unwrap();
    }
}
