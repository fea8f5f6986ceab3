// SPDX-License-Identifier: MIT
//! What the daemon hands to a cloud besides its journal and its store:
//! each log line, each execution's metrics at its end, and its report when
//! the task names a bucket. The `ferry-agent` binary injects the one it
//! builds from `daemon.aws` (CloudWatch, CloudWatch Logs and S3, through
//! `ferry-aws`) into [`Events::cloud`](super::events::Events): the daemon
//! knows no AWS client, and a cloud must never make its callers wait.

use std::path::PathBuf;

use ferry_model::options::ReportDestinationS3;

/// A cloud's sink. Every method returns at once; what cannot be sent is
/// dropped and counted.
pub trait Cloud: Send + Sync {
    /// A log line (one JSON object), as the journal gets it.
    fn log(&self, line: &str);
    /// An execution ended on this machine, or on an agent this hub
    /// handed it to.
    fn ended(&self, ended: Ended);
    /// What was sent and dropped so far, for `/metrics`.
    fn counts(&self) -> CloudCounts;
}

/// One execution's end.
pub struct Ended {
    pub task_id: String,
    pub execution_id: String,
    /// The agent that ran it, when it is not this machine.
    pub agent_id: Option<String>,
    /// Name, value and CloudWatch unit of each metric
    /// ([`execution_metrics`](super::events::execution_metrics)).
    pub metrics: Vec<(&'static str, u64, &'static str)>,
    /// The report and where to upload it.
    pub report: Option<(PathBuf, ReportDestinationS3)>,
    /// Told where the report went (`s3://BUCKET/KEY`), or why it did not.
    pub uploaded: Box<dyn FnOnce(Result<String, String>) + Send>,
}

/// Totals since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloudCounts {
    pub log_lines_sent: u64,
    pub log_lines_dropped: u64,
    pub metrics_sent: u64,
    pub metrics_dropped: u64,
}
