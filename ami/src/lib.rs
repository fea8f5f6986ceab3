// SPDX-License-Identifier: MIT
//! Publishes a raw disk image as an EC2 AMI without S3 or a vmimport role:
//! the EBS direct APIs write the snapshot block by block, EC2 registers it.
//!
//! Requests are signed with `aws-sigv4` (AWS's own signing crate); the two
//! APIs are small enough that the full SDKs (minutes of compile time on two
//! cores) are not worth it.

pub mod aws;
pub mod credentials;
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
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials")]
    NoCredentials,
    #[error("no AWS region: pass --region, or set AWS_REGION or a region in ~/.aws/config")]
    NoRegion,
    #[error("{action} at {url}: cannot connect: {why}")]
    Unreachable {
        action: &'static str,
        url: String,
        why: String,
    },
    #[error("{action}: AWS answered HTTP {status}: {message}")]
    Api {
        action: &'static str,
        status: u16,
        message: String,
    },
    #[error("{action}: unexpected answer: {why}")]
    BadAnswer { action: &'static str, why: String },
    #[error("request signing: {0}")]
    Signing(String),
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
