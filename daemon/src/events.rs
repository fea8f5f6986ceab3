// SPDX-License-Identifier: MIT
//! Structured log lines: one JSON object per execution state change and per
//! file as the execution's LogLevel asks (OFF: none; BASIC: failed ones;
//! TRANSFER: those transferred, verified, deleted or failed too), on
//! standard error (ferry-init puts a service's output into the journal),
//! and to the [`Cloud`] when one is set. With CloudWatch embedded metric
//! format enabled, each execution's end also gives one EMF line a
//! CloudWatch agent picks up.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use ferry_engine::counters::CounterSnapshot;
use ferry_engine::report::{Outcome, Record};

use super::cloud::Cloud;

#[derive(Default)]
pub struct Events {
    /// Emit CloudWatch embedded-metric-format lines.
    pub emf: bool,
    /// A terminal (the appliance's console) that also gets one short line
    /// per execution state change: the operator's view of the tasks.
    pub console: Option<Mutex<std::fs::File>>,
    /// CloudWatch and S3 (set by the binary from `daemon.aws`).
    pub cloud: OnceLock<Arc<dyn Cloud>>,
}

/// An execution's metrics, by DataSync's CloudWatch names (and two of
/// Ferry's: FilesFailed, TotalDuration): name, value, unit. Verification
/// compares both sides, so its source and destination counts are one.
pub fn execution_metrics(
    c: &CounterSnapshot,
    total_ms: u64,
) -> Vec<(&'static str, u64, &'static str)> {
    vec![
        ("FilesPreparedSource", c.files_listed_source, "Count"),
        ("BytesPreparedSource", c.bytes_prepared_source, "Bytes"),
        (
            "FilesPreparedDestination",
            c.files_listed_destination,
            "Count",
        ),
        (
            "BytesPreparedDestination",
            c.bytes_prepared_destination,
            "Bytes",
        ),
        ("FilesTransferred", c.files_transferred, "Count"),
        ("BytesTransferred", c.bytes_transferred, "Bytes"),
        ("BytesWritten", c.bytes_written, "Bytes"),
        ("BytesCompressed", c.bytes_compressed, "Bytes"),
        ("FilesVerifiedSource", c.files_verified, "Count"),
        ("FilesVerifiedDestination", c.files_verified, "Count"),
        ("BytesVerifiedSource", c.bytes_verified, "Bytes"),
        ("BytesVerifiedDestination", c.bytes_verified, "Bytes"),
        ("FilesDeleted", c.files_deleted, "Count"),
        ("FilesSkipped", c.files_skipped, "Count"),
        ("FilesFailed", c.files_failed(), "Count"),
        ("TotalDuration", total_ms, "Milliseconds"),
    ]
}

impl Events {
    fn line(&self, value: &Value) {
        let text = value.to_string();
        if let Some(cloud) = self.cloud.get() {
            cloud.log(&text);
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.write_all(b"\n");
    }

    pub fn info(&self, message: &str) {
        self.line(&json!({"level": "info", "message": message}));
    }

    pub fn warn(&self, message: &str) {
        self.line(&json!({"level": "warn", "message": message}));
    }

    /// A human line on the console, if there is one.
    pub fn console(&self, text: &str) {
        if let Some(c) = &self.console {
            let mut c = c.lock().unwrap();
            let _ = writeln!(c, "ferry-agent: {text}\r");
        }
    }

    pub fn state(&self, task_id: &str, execution_id: &str, status: &str, detail: Option<&str>) {
        self.console(&format!(
            "{execution_id} ({task_id}): {status}{}",
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        ));
        let mut line = json!({
            "level": if status == "ERROR" { "error" } else { "info" },
            "event": "execution-state",
            "task": task_id,
            "execution": execution_id,
            "status": status,
        });
        if let Some(d) = detail {
            line["detail"] = d.into();
        }
        self.line(&line);
    }

    /// A file's outcome (`file-failed`, `file-transferred`, …), as the
    /// execution's LogLevel asks.
    pub fn file(&self, task_id: &str, execution_id: &str, record: &Record) {
        let failed = record.outcome == Outcome::Failed;
        let outcome = serde_json::to_value(record.outcome).unwrap_or_default();
        self.line(&json!({
            "level": if failed { "warn" } else { "info" },
            "event": format!("file-{}", outcome.as_str().unwrap_or("other")),
            "task": task_id,
            "execution": execution_id,
            "path": record.path,
            "phase": record.phase,
            "bytes": record.bytes,
            "reason": record.reason,
            "errno": record.errno,
        }));
    }

    /// The end of an execution, as a CloudWatch EMF document.
    pub fn finished(
        &self,
        task_id: &str,
        execution_id: &str,
        status: &str,
        c: &CounterSnapshot,
        total_ms: u64,
    ) {
        if !self.emf {
            return;
        }
        let metrics = execution_metrics(c, total_ms);
        let mut doc = json!({
            "_aws": {
                "Timestamp": ferry_model::api::now_ms(),
                "CloudWatchMetrics": [{
                    "Namespace": "Ferry",
                    "Dimensions": [["TaskId"]],
                    "Metrics": metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
                }],
            },
            "TaskId": task_id,
            "TaskExecutionId": execution_id,
            "Status": status,
        });
        for (name, value, _) in metrics {
            doc[name] = value.into();
        }
        self.line(&doc);
    }
}
