// SPDX-License-Identifier: MIT
//! Ferry's AWS clients. Requests are signed with `aws-sigv4` (AWS's own
//! signing crate) and sent with a small blocking HTTPS client: the few calls
//! Ferry makes are not worth the full SDKs (minutes of compile time on two
//! cores, an async runtime of their own).
//!
//! | module | does |
//! | --- | --- |
//! | [`client`] | one signed request; the Query protocol (EC2, STS, CloudWatch) |
//! | [`credentials`] | keys from the environment, the shared files, a configuration, or the instance role |
//! | [`imds`] | EC2's instance metadata service, version 2 (the role's keys, the region) |
//! | [`s3`] | PutObject of a file, streamed |
//! | [`sts`] | AssumeRole (the role a task report's bucket names) |
//! | [`cloudwatch`] | PutMetricData |
//! | [`logs`] | CloudWatch Logs: a group, a stream, PutLogEvents |
//! | `moto` | (feature `moto`, for tests) moto's server started and read back with boto3 |
//! | [`publisher`] | a thread that sends metrics, logs and uploads, batched and retried, and drops (and counts) rather than block its caller |

pub mod client;
pub mod cloudwatch;
pub mod credentials;
pub mod imds;
pub mod logs;
#[cfg(feature = "moto")]
pub mod moto;
pub mod publisher;
pub mod s3;
pub mod sts;

pub use client::Client;
pub use credentials::{Credentials, Provider};

/// Why an AWS call failed.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
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
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials")]
    NoCredentials,
    #[error("no AWS region: pass --region, or set AWS_REGION or a region in ~/.aws/config")]
    NoRegion,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl AwsError {
    /// Worth another try: the network, throttling, or AWS's side.
    pub fn transient(&self) -> bool {
        match self {
            AwsError::Unreachable { .. } => true,
            AwsError::Api {
                status, message, ..
            } => *status == 429 || *status >= 500 || message.contains("Throttl"),
            _ => false,
        }
    }

    /// An API error whose code or message contains `code`
    /// (`ResourceAlreadyExistsException`, `NotFound`).
    pub fn is_api(&self, code: &str) -> bool {
        matches!(self, AwsError::Api { message, .. } if message.contains(code))
    }
}
