// SPDX-License-Identifier: MIT
//! The Ferry OVA, written without VMware's tools: a streamOptimized VMDK
//! ([`vmdk`]), the OVF 1.0 descriptor ([`descriptor`]), and the manifest and
//! tar that hold them ([`ova`]).

pub mod descriptor;
pub mod ova;
pub mod sparse;
pub mod vmdk;

use std::io;
use std::path::PathBuf;

/// Why an OVA could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: changed while being archived")]
    Changed(PathBuf),
    #[error(
        "{path}: size {size} is not a multiple of 512 bytes (a disk image is made of sectors)"
    )]
    NotSectorAligned { path: PathBuf, size: u64 },
    #[error(
        "disk capacity {0} bytes is not a whole number of GiB (the descriptor states it in GiB)"
    )]
    CapacityNotWholeGib(u64),
    #[error("tar member name {0:?} is longer than 100 bytes")]
    TarNameTooLong(String),
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `File::open(p).ctx(|| format!("open image {}", p.display()))?`.
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
