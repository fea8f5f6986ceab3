//! `ferry execution`: runs of tasks, their state, counters and reports.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{fail, print_json, seconds, segment, table, text, AgentArgs, Client};

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
            client.call("GET", &path, None).map(|v| {
                if json {
                    return print_json(&v);
                }
                list(&v);
            })
        }
        ExecutionCommand::Describe { execution } => client
            .call(
                "GET",
                &format!("/v1/executions/{}", segment(&execution)),
                None,
            )
            .map(|v| {
                if json {
                    return print_json(&v);
                }
                describe(&v);
            }),
        ExecutionCommand::Cancel { execution } => client
            .call(
                "POST",
                &format!("/v1/executions/{}/cancel", segment(&execution)),
                None,
            )
            .map(|_| println!("cancelling {execution}")),
        ExecutionCommand::Report { execution, output } => client
            .call(
                "GET",
                &format!("/v1/executions/{}/report", segment(&execution)),
                None,
            )
            .and_then(|v| {
                let text = serde_json::to_string_pretty(&v)? + "\n";
                match output {
                    Some(path) => std::fs::write(&path, text)?,
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

pub fn list(v: &Value) {
    let rows: Vec<Vec<String>> = v["Executions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let c = &e["Counters"];
            vec![
                text(e, "TaskExecutionId"),
                text(e, "TaskId"),
                text(e, "Status"),
                text(e, "StartTime"),
                seconds(&e["Result"]["TotalDuration"]),
                c["FilesTransferred"].to_string(),
                c["BytesTransferred"].to_string(),
                c["FilesVerified"].to_string(),
                (failed(c)).to_string(),
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

fn failed(c: &Value) -> u64 {
    [
        "FilesFailedPrepare",
        "FilesFailedTransfer",
        "FilesFailedVerify",
        "FilesFailedDelete",
    ]
    .iter()
    .map(|k| c[*k].as_u64().unwrap_or(0))
    .sum()
}

pub fn describe(e: &Value) {
    let r = &e["Result"];
    println!("Execution  {}", text(e, "TaskExecutionId"));
    println!("Task       {}", text(e, "TaskId"));
    println!("Status     {}", text(e, "Status"));
    println!("Queued     {}", text(e, "QueueTime"));
    println!("Started    {}", text(e, "StartTime"));
    println!("Ended      {}", text(e, "EndTime"));
    println!();
    table(
        &["PHASE", "STATUS", "DURATION"],
        &[
            vec![
                "PREPARING".into(),
                text(r, "PrepareStatus"),
                seconds(&r["PrepareDuration"]),
            ],
            vec![
                "TRANSFERRING".into(),
                text(r, "TransferStatus"),
                seconds(&r["TransferDuration"]),
            ],
            vec![
                "VERIFYING".into(),
                text(r, "VerifyStatus"),
                seconds(&r["VerifyDuration"]),
            ],
            vec![
                "TOTAL".into(),
                text(e, "Status"),
                seconds(&r["TotalDuration"]),
            ],
        ],
    );
    if let Some(code) = r["ErrorCode"].as_str() {
        println!("\nError      {code}: {}", text(r, "ErrorDetail"));
    }
    println!();
    if let Some(c) = e["Counters"].as_object() {
        let rows: Vec<Vec<String>> = c
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect();
        table(&["COUNTER", "VALUE"], &rows);
    }
    if e["ReportAvailable"].as_bool() == Some(true) {
        println!(
            "\nReport: ferry execution report {}",
            text(e, "TaskExecutionId")
        );
    }
}
