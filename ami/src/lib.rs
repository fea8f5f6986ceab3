// SPDX-License-Identifier: MIT
//! Publishes a raw disk image as an EC2 AMI without S3 or a vmimport role:
//! the EBS direct APIs write the snapshot block by block, EC2 registers it.
//!
//! Requests go through `ferry-aws` (signed with AWS's own `aws-sigv4`).

pub mod image;
pub mod publish;
pub mod state;

use std::path::PathBuf;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image {path}: {why}")]
    BadImage { path: PathBuf, why: String },
    #[error(transparent)]
    Aws(#[from] ferry_aws::AwsError),
    #[error("{action}: unexpected answer: {why}")]
    BadAnswer { action: &'static str, why: String },
    #[error("{0}; cleaned up: {1}")]
    CleanedUp(Box<Error>, String),
    #[error("upload state {path}: {why}")]
    State { path: PathBuf, why: String },
    /// An earlier upload cannot be resumed as asked.
    #[error("{0}")]
    Resume(String),
    /// The upload stopped part-way; the snapshot and the state are kept.
    #[error("upload interrupted after {written} of {total} blocks: {source}; snapshot {snapshot} is kept (EBS cancels it after 60 minutes without writes): run the same command again to resume, or `ferry-ami cleanup --image {image}` to delete it")]
    Interrupted {
        #[source]
        source: Box<Error>,
        written: usize,
        total: usize,
        snapshot: String,
        image: PathBuf,
    },
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `File::open(p).ctx(|| format!("open image {}", p.display()))?`.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}
