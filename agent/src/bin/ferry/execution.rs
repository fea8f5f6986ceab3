// SPDX-License-Identifier: MIT
//! `ferry execution`: runs of tasks, their state, counters and reports.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use ferry_model::api::{Execution, ExecutionList};

use crate::client::{fail, seconds, segment, table, text, AgentArgs, Client, Context};

#[derive(Args, Debug)]
pub struct ExecutionArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: ExecutionCommand,
}

#[derive(Subcommand, Debug)]
enum ExecutionCommand {
    /// Executions, newest first.
    List {
        /// Only this task's (id or name).
        #[arg(long)]
        task: Option<String>,
    },
    /// State, per-phase status and duration, and every counter.
    Describe { execution: String },
    /// Stop a running execution, or take a queued one off the queue.
    Cancel { execution: String },
    /// Change a queued or running execution's bandwidth limit (in effect within a second).
    Update {
        execution: String,
        /// Bytes per second for the rest of the execution; -1 is unlimited.
        #[arg(long, allow_negative_numbers = true, value_name = "N")]
        bytes_per_second: i64,
    },
    /// The JSON task report of an ended execution.
    Report {
        execution: String,
        /// Write it here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

pub fn run(args: ExecutionArgs) -> ExitCode {
    let client = Client::new(&args.agent);
    let json = args.agent.json;
    let result = match args.command {
        ExecutionCommand::List { task } => {
            let path = match task {
                Some(t) => format!("/v1/executions?task={}", segment(&t)),
                None => "/v1/executions".into(),
            };
            client.show("GET", &path, None, json, |l: ExecutionList| list(&l))
        }
        ExecutionCommand::Describe { execution } => client.show(
            "GET",
            &format!("/v1/executions/{}", segment(&execution)),
            None,
            json,
            |e: Execution| describe(&e),
        ),
        ExecutionCommand::Cancel { execution } => client
            .call(
                "POST",
                &format!("/v1/executions/{}/cancel", segment(&execution)),
                None,
            )
            .map(|_| println!("cancelling {execution}")),
        ExecutionCommand::Update {
            execution,
            bytes_per_second,
        } => {
            let body = serde_json::json!({ "Options": { "BytesPerSecond": bytes_per_second } });
            client.show(
                "PATCH",
                &format!("/v1/executions/{}", segment(&execution)),
                Some(&body),
                json,
                |e: Execution| {
                    println!(
                        "{}: BytesPerSecond {}",
                        e.task_execution_id, e.options.bytes_per_second
                    )
                },
            )
        }
        ExecutionCommand::Report { execution, output } => client
            .call(
                "GET",
                &format!("/v1/executions/{}/report", segment(&execution)),
                None,
            )
            .and_then(|v| {
                let text = serde_json::to_string_pretty(&v)? + "\n";
                match output {
                    Some(path) => std::fs::write(&path, text)
                        .ctx(|| format!("write the report to {}", path.display()))?,
                    None => print!("{text}"),
                }
                Ok(())
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("execution", e),
    }
}

pub fn list(l: &ExecutionList) {
    let rows: Vec<Vec<String>> = l
        .executions
        .iter()
        .map(|e| {
            let c = &e.counters;
            vec![
                e.task_execution_id.clone(),
                e.task_id.clone(),
                e.status.clone(),
                text(&e.start_time).to_string(),
                seconds(e.result.total_duration),
                c.files_transferred.to_string(),
                c.bytes_transferred.to_string(),
                c.files_verified.to_string(),
                c.files_failed().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "EXECUTION",
            "TASK",
            "STATUS",
            "STARTED",
            "DURATION",
            "FILES",
            "BYTES",
            "VERIFIED",
            "FAILED",
        ],
        &rows,
    );
}

pub fn describe(e: &Execution) {
    let r = &e.result;
    println!("Execution  {}", e.task_execution_id);
    println!("Task       {}", e.task_id);
    println!("Status     {}", e.status);
    println!("Queued     {}", e.queue_time);
    println!("Started    {}", text(&e.start_time));
    println!("Ended      {}", text(&e.end_time));
    println!();
    let phase = |name: &str, status: &str, ms: u64| vec![name.into(), status.into(), seconds(ms)];
    table(
        &["PHASE", "STATUS", "DURATION"],
        &[
            phase("PREPARING", &r.prepare_status, r.prepare_duration),
            phase("TRANSFERRING", &r.transfer_status, r.transfer_duration),
            phase("VERIFYING", &r.verify_status, r.verify_duration),
            phase("TOTAL", &e.status, r.total_duration),
        ],
    );
    if let Some(code) = &r.error_code {
        println!("\nError      {code}: {}", text(&r.error_detail));
    }
    println!();
    // Every counter under its API name, in the record's order.
    if let Ok(Value::Object(c)) = serde_json::to_value(&e.counters) {
        let rows: Vec<Vec<String>> = c
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect();
        table(&["COUNTER", "VALUE"], &rows);
    }
    if e.report_available {
        println!("\nReport: ferry execution report {}", e.task_execution_id);
    }
}
