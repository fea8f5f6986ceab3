// SPDX-License-Identifier: GPL-2.0-only
//! Error types. Every error carries what was being done when it happened.

use std::io;

/// An error of one unit of work. The text says what failed and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A tool ferry-init runs failed; its own words are in `stderr`.
    #[error("{what} (exit {code}): {stderr}")]
    Tool {
        what: String,
        code: i32,
        stderr: String,
    },
    /// A partition table could not be read or written.
    #[error("{what}: {source}")]
    Gpt {
        what: String,
        #[source]
        source: ferry_gpt::Error,
    },
    /// The kernel command line lacks or mangles a parameter.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// A partition the appliance needs was not found.
    #[error("partition {label:?} not found after {waited_ms} ms")]
    PartitionMissing { label: String, waited_ms: u64 },
    /// The root file system failed dm-verity; the system must not run it.
    #[error("root file system failed verification: {0}")]
    RootTampered(String),
    /// The configuration document was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A service could not be started.
    #[error("service {name}: {why}")]
    Service { name: String, why: String },
    /// The network controller failed.
    #[error("network: {0}")]
    Network(String),
}

/// Adds a description of the operation to an `io::Result`.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, nix::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::Io {
            what: what(),
            source: io::Error::from(e),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
