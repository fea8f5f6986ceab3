// SPDX-License-Identifier: MIT
//! ferry-image: builds the Ferry appliance image offline from one manifest.
//!
//! The reusable part — Debian packages to a root directory holding binaries
//! and their shared libraries, then to a cpio or erofs image — is the
//! library: [`debian`] (apt-get download + dpkg-deb into a cache), [`tree`]
//! (a staging root with automatic shared-library collection, [`elf`]),
//! [`cpio`] (deterministic newc archives), [`kmod`] (module dependency
//! order) and [`fsimage`] (erofs, dm-verity). Tests that boot a *test
//! guest* (Debian kernel + busybox + tools + a binary in an initramfs) use
//! the same calls. [`appliance`] assembles the appliance disk itself.

pub mod appliance;
pub mod buildroot;
pub mod cpio;
pub mod debian;
pub mod elf;
pub mod fsimage;
pub mod guest;
pub mod kmod;
pub mod manifest;
pub mod tree;

use std::io;
use std::process::Command;

/// Errors of the image build; each says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Policy(String),
    #[error("GPT: {0}")]
    Gpt(#[from] ferry_gpt::Error),
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `fs::read(p).ctx(|| format!("read {}", p.display()))?`.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T, io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs a tool; returns its stdout. The error carries its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let tool = format!("{cmd:?}");
    let out = cmd
        .output()
        .ctx(|| format!("run {tool} (is it installed? see scripts/setup)"))?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
