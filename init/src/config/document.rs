// SPDX-License-Identifier: GPL-2.0-only
//! The document: its version and top-level keys (ferry-model's), the
//! sections that are ferry-init's alone (`hostname`, `time`, and the
//! `network` and `support` modules), and its checks in order.

use serde::Deserialize;

use super::network::{self, Network};
use super::support::{self, SupportSection};

/// Newest document version this system reads.
pub use ferry_model::config::VERSION;

/// The document: its version, its top-level keys, `role:`, `daemon:` and
/// `agent:` are ferry-model's, which ferry-agent reads the document with
/// too (one schema, one set of checks); `network:`, `time:` and `support:`
/// are ferry-init's alone, its types here.
pub type Document = ferry_model::config::Document<Network, Time, SupportSection>;

/// The document's `role:`: `agent` (the default) or `hub` (the hub serves
/// HTTPS on port 443).
pub use ferry_model::config::Role as DocRole;

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

/// Checks what the schema cannot say: the version and ferry-agent's
/// sections as ferry-model checks them (as the agent does), then
/// ferry-init's own; `Err((key, why))`, the key as a dotted path
/// (`network.address`).
pub fn check(doc: &Document) -> Result<(), (String, String)> {
    doc.check().map_err(|e| (e.key, e.why))?;
    let invalid = |key: &str, why: String| (key.to_string(), why);
    if let Some(support) = &doc.support {
        support::check(support)?;
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
