// SPDX-License-Identifier: GPL-2.0-only
//! The configuration document, `/data/config/ferry.yaml`.
//!
//! One YAML document, `version: 1` or `2`, strictly validated: unknown keys
//! are refused, and every error names the key and the line. A document that
//! is refused never replaces the last good one, which stays in force.
//! Version 2 adds the `agent:` section: locations and tasks the agent
//! declares when it starts (see [`AgentSection`]).
//!
//! ```yaml
//! version: 1
//! hostname: ferry-01
//! network:
//!   interface: eth0        # default: the first Ethernet adapter
//!   mode: static           # dhcp (default) or static
//!   address: 192.0.2.10/24
//!   gateway: 192.0.2.1
//!   dns: [192.0.2.53]
//! time:
//!   servers: [ntp.example.org]
//! ```
//!
//! The schema and its checks, by section: [`document`] (the version and the
//! top-level keys), [`network`], [`support`], [`agent`], [`daemon`]; the
//! text read into it, errors naming key and line: [`parse()`]; the document
//! in force and the last good one: [`store`].

pub mod agent;
pub mod daemon;
pub mod document;
pub mod network;
mod parse;
pub mod store;
pub mod support;

pub use parse::{parse, ConfigError};

use document::Document;

/// The configuration in force, with what it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub doc: Document,
    /// "default" (first boot), or the path of the document.
    pub origin: String,
}

impl Config {
    /// First boot, no document: DHCP on the first adapter, hostname "ferry".
    pub fn first_boot() -> Config {
        Config {
            doc: Document {
                version: 1,
                ..Document::default()
            },
            origin: "default (no document yet)".into(),
        }
    }

    pub fn hostname(&self) -> &str {
        self.doc.hostname.as_deref().unwrap_or("ferry")
    }
}

/// A document of `test_data/config`.
#[cfg(test)]
fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("test_data/config")
            .join(name),
    )
    .unwrap()
}
