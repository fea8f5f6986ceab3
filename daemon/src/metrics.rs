// SPDX-License-Identifier: MIT
//! Prometheus metrics: DataSync's CloudWatch metric names in snake case, for
//! each task's latest execution (live while it runs), plus execution status.

use std::fmt::Write;

use ferry_model::api::{Execution, Task};

use super::cloud::CloudCounts;

/// The metric families: name, help, and how to read the value.
type Read = fn(&Execution) -> u64;
const COUNTERS: &[(&str, &str, Read)] = &[
    (
        "files_prepared_source",
        "Entries found at the source",
        |e| e.counters.files_listed_source,
    ),
    ("bytes_prepared_source", "Bytes found at the source", |e| {
        e.counters.bytes_prepared_source
    }),
    (
        "files_prepared_destination",
        "Entries found at the destination",
        |e| e.counters.files_listed_destination,
    ),
    (
        "bytes_prepared_destination",
        "Bytes found at the destination",
        |e| e.counters.bytes_prepared_destination,
    ),
    (
        "files_transferred",
        "Entries created or updated at the destination",
        |e| e.counters.files_transferred,
    ),
    (
        "bytes_transferred",
        "Bytes read from the source and sent",
        |e| e.counters.bytes_transferred,
    ),
    ("bytes_written", "Bytes written at the destination", |e| {
        e.counters.bytes_written
    }),
    (
        "files_verified_source",
        "Entries verified at the source",
        |e| e.counters.files_verified,
    ),
    (
        "files_verified_destination",
        "Entries verified at the destination",
        |e| e.counters.files_verified,
    ),
    (
        "files_deleted",
        "Entries removed from the destination",
        |e| e.counters.files_deleted,
    ),
    ("files_skipped", "Entries left alone by a rule", |e| {
        e.counters.files_skipped
    }),
    ("files_failed", "Entries that failed in any phase", |e| {
        e.counters.files_failed()
    }),
];

const STATUSES: &[&str] = &[
    "QUEUED",
    "LAUNCHING",
    "PREPARING",
    "TRANSFERRING",
    "VERIFYING",
    "CANCELLING",
    "SUCCESS",
    "ERROR",
];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text exposition format. `latest` holds each task's newest execution;
/// `all` every execution kept (for the per-status count); `cloud` what went
/// to CloudWatch and what was dropped, when `daemon.aws` is set.
pub fn render(
    tasks: &[Task],
    latest: &[Execution],
    all: &[Execution],
    cloud: Option<CloudCounts>,
) -> String {
    let mut out = String::new();
    let labels = |e: &Execution| {
        let name = tasks
            .iter()
            .find(|t| t.task_id == e.task_id)
            .map_or("", |t| t.name.as_str());
        format!(
            "task_id=\"{}\",task_name=\"{}\",execution_id=\"{}\"",
            escape(&e.task_id),
            escape(name),
            escape(&e.task_execution_id)
        )
    };
    for (name, help, read) in COUNTERS {
        let _ = writeln!(
            out,
            "# HELP ferry_{name} {help} (latest execution of each task)."
        );
        let _ = writeln!(out, "# TYPE ferry_{name} gauge");
        for e in latest {
            let _ = writeln!(out, "ferry_{name}{{{}}} {}", labels(e), read(e));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_execution_status 1 for the status of each task's latest execution."
    );
    let _ = writeln!(out, "# TYPE ferry_execution_status gauge");
    for e in latest {
        for s in STATUSES {
            let _ = writeln!(
                out,
                "ferry_execution_status{{{},status=\"{s}\"}} {}",
                labels(e),
                u8::from(e.status == *s)
            );
        }
    }
    let _ = writeln!(out, "# HELP ferry_execution_duration_milliseconds Total duration of each task's latest execution.");
    let _ = writeln!(out, "# TYPE ferry_execution_duration_milliseconds gauge");
    for e in latest {
        let _ = writeln!(
            out,
            "ferry_execution_duration_milliseconds{{{}}} {}",
            labels(e),
            e.result.total_duration
        );
    }
    // Several agents on an execution: each agent's part.
    type AgentRead = fn(&ferry_model::api::AgentShare) -> u64;
    const AGENT_PARTS: &[(&str, &str, AgentRead)] = &[
        ("units_leased", "Work units leased to the agent", |a| {
            a.units_leased
        }),
        ("units_done", "Work units the agent did", |a| a.units_done),
        (
            "units_released",
            "Work units the agent held when it was lost, leased again to others",
            |a| a.units_released,
        ),
        ("files_transferred", "Entries the agent transferred", |a| {
            a.files_transferred
        }),
        ("bytes_transferred", "Bytes the agent transferred", |a| {
            a.bytes_transferred
        }),
        ("files_verified", "Entries the agent verified", |a| {
            a.files_verified
        }),
    ];
    for (name, help, read) in AGENT_PARTS {
        let _ = writeln!(out, "# HELP ferry_agent_{name} {help} (latest execution of each task shared by several agents).");
        let _ = writeln!(out, "# TYPE ferry_agent_{name} gauge");
        for e in latest {
            for (agent, part) in &e.result.agents {
                let _ = writeln!(
                    out,
                    "ferry_agent_{name}{{{},agent_id=\"{}\"}} {}",
                    labels(e),
                    escape(agent),
                    read(part)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_executions Executions kept in the history, by status."
    );
    let _ = writeln!(out, "# TYPE ferry_executions gauge");
    for s in STATUSES {
        let n = all.iter().filter(|e| e.status == *s).count();
        let _ = writeln!(out, "ferry_executions{{status=\"{s}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP ferry_tasks Tasks defined on this agent.");
    let _ = writeln!(out, "# TYPE ferry_tasks gauge");
    let _ = writeln!(out, "ferry_tasks {}", tasks.len());
    if let Some(c) = cloud {
        for (name, help, sent, dropped) in [
            (
                "log_lines",
                "Log lines",
                c.log_lines_sent,
                c.log_lines_dropped,
            ),
            (
                "metrics",
                "Metric values",
                c.metrics_sent,
                c.metrics_dropped,
            ),
        ] {
            let _ = writeln!(out, "# HELP ferry_cloudwatch_{name}_total {help} sent to CloudWatch, or dropped (its queue full, or CloudWatch unreachable through the retries).");
            let _ = writeln!(out, "# TYPE ferry_cloudwatch_{name}_total counter");
            let _ = writeln!(
                out,
                "ferry_cloudwatch_{name}_total{{outcome=\"sent\"}} {sent}"
            );
            let _ = writeln!(
                out,
                "ferry_cloudwatch_{name}_total{{outcome=\"dropped\"}} {dropped}"
            );
        }
    }
    out
}
