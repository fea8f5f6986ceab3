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
    #[error("{context}: {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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

pub(crate) fn io_err(
    context: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        context,
        path,
        source,
    }
}
