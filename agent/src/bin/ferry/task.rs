// SPDX-License-Identifier: MIT
//! `ferry task`: a source, a destination, options and a schedule; started
//! by hand or by the schedule, each start an execution.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use ferry_model::api::{Execution, ExecutionStarted, Task, TaskList};

use crate::client::{fail, print_json, segment, table, text, AgentArgs, Client};
use crate::options::OptionArgs;
use crate::EXIT_ERROR;

#[derive(Args, Debug)]
pub struct TaskArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Subcommand, Debug)]
enum TaskCommand {
    /// A new task; options not given take DataSync's defaults.
    Create {
        #[arg(long)]
        name: String,
        /// The source location id.
        #[arg(long, value_name = "LOCATION")]
        source: String,
        /// The destination location id.
        #[arg(long, value_name = "LOCATION")]
        destination: String,
        #[command(flatten)]
        options: OptionArgs,
        /// Start on a schedule: five cron fields in UTC, e.g. "0 2 * * *", or a rate, e.g. "rate(12 hours)" (every minute at most).
        #[arg(long, value_name = "CRON")]
        schedule: Option<String>,
    },
    List,
    /// A task by id or name.
    Describe {
        task: String,
    },
    /// Change the name, options (only those given) or schedule ("" removes it).
    Update {
        task: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        options: OptionArgs,
        #[arg(long, value_name = "CRON")]
        schedule: Option<String>,
        /// Enable the schedule again (from now), or disable it.
        #[arg(long, value_parser = ["enabled", "disabled"])]
        schedule_status: Option<String>,
    },
    /// Delete a task and its execution history.
    Delete {
        task: String,
    },
    /// Queue an execution; prints its id. Options given override the task's for this execution.
    Start {
        task: String,
        #[command(flatten)]
        options: OptionArgs,
        /// Wait for the execution to end and describe it (exit 1 if it ends ERROR).
        #[arg(long)]
        wait: bool,
    },
}

pub fn run(args: TaskArgs) -> ExitCode {
    let client = Client::new(&args.agent);
    let json = args.agent.json;
    let task_path = |t: &str| format!("/v1/tasks/{}", segment(t));
    let result = match args.command {
        TaskCommand::Create {
            name,
            source,
            destination,
            options,
            schedule,
        } => {
            let mut body = json!({
                "Name": name,
                "SourceLocationId": source,
                "DestinationLocationId": destination,
                "Options": options.changes(),
            });
            if let Some(s) = schedule {
                body["Schedule"] = s.into();
            }
            client.show("POST", "/v1/tasks", Some(&body), json, |t: Task| {
                println!("{}", t.task_id)
            })
        }
        TaskCommand::List => client.show("GET", "/v1/tasks", None, json, |l: TaskList| {
            let rows: Vec<Vec<String>> = l
                .tasks
                .into_iter()
                .map(|t| {
                    vec![
                        t.task_id,
                        t.name,
                        t.status,
                        t.source_location_id,
                        t.destination_location_id,
                        match &t.schedule_details {
                            Some(d) if d.status != "ENABLED" => {
                                format!("{} ({})", text(&t.schedule), d.status)
                            }
                            _ => text(&t.schedule).into(),
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "TASK",
                    "NAME",
                    "STATUS",
                    "SOURCE",
                    "DESTINATION",
                    "SCHEDULE",
                ],
                &rows,
            );
        }),
        TaskCommand::Describe { task } => {
            client.show("GET", &task_path(&task), None, json, |t: Task| describe(&t))
        }
        TaskCommand::Update {
            task,
            name,
            options,
            schedule,
            schedule_status,
        } => {
            let mut body = json!({});
            if let Some(s) = schedule_status {
                body["ScheduleStatus"] = s.to_ascii_uppercase().into();
            }
            if let Some(n) = name {
                body["Name"] = n.into();
            }
            let changes = options.changes();
            if !changes.is_empty() {
                body["Options"] = changes.into();
            }
            if let Some(s) = schedule {
                body["Schedule"] = s.into();
            }
            client.show("PATCH", &task_path(&task), Some(&body), json, |t: Task| {
                println!("updated {}", t.task_id)
            })
        }
        TaskCommand::Delete { task } => client
            .call("DELETE", &task_path(&task), None)
            .map(|_| println!("deleted {task}")),
        TaskCommand::Start {
            task,
            options,
            wait,
        } => {
            let body = json!({"OverrideOptions": options.changes()});
            let started = client
                .call("POST", &format!("{}/start", task_path(&task)), Some(&body))
                .and_then(|v| Ok((serde_json::from_value::<ExecutionStarted>(v.clone())?, v)));
            match started {
                Ok((started, v)) => {
                    let id = started.task_execution_id;
                    if !wait {
                        if json {
                            print_json(&v)
                        } else {
                            println!("{id}")
                        }
                        return ExitCode::SUCCESS;
                    }
                    return wait_for(&client, &id, json);
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("task", e),
    }
}

fn describe(t: &Task) {
    for (key, value) in [
        ("TaskId", t.task_id.as_str()),
        ("Name", &t.name),
        ("Status", &t.status),
        ("CurrentTaskExecutionId", text(&t.current_task_execution_id)),
        ("SourceLocationId", &t.source_location_id),
        ("DestinationLocationId", &t.destination_location_id),
        ("Schedule", text(&t.schedule)),
        ("CreationTime", &t.creation_time),
    ] {
        println!("{key:<24} {value}");
    }
    if let Some(d) = &t.schedule_details {
        let by = match (&d.disabled_by, &d.disabled_reason) {
            (Some(by), Some(why)) => format!(" by {by}: {why}"),
            _ => String::new(),
        };
        println!(
            "{:<24} {} since {}{by}",
            "ScheduleStatus", d.status, d.status_update_time
        );
    }
    // Every option under its API name.
    if let Ok(Value::Object(opts)) = serde_json::to_value(&t.options) {
        println!("Options:");
        for (k, val) in opts {
            let shown = match val {
                Value::String(s) => s,
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("  {k:<22} {shown}");
        }
    }
}

/// Polls the execution until it ends, then describes it.
fn wait_for(client: &Client, id: &str, json: bool) -> ExitCode {
    let path = format!("/v1/executions/{}", segment(id));
    let mut last_status = String::new();
    loop {
        let read = client.call("GET", &path, None).and_then(|v| {
            let e: Execution = serde_json::from_value(v.clone())?;
            Ok((e, v))
        });
        let (e, v) = match read {
            Ok(read) => read,
            Err(e) => return fail("task", e),
        };
        let status = e.status.clone();
        if status != last_status && !json {
            eprintln!("{id}: {status}");
            last_status = status.clone();
        }
        if status == "SUCCESS" || status == "ERROR" {
            if json {
                print_json(&v);
            } else {
                crate::execution::describe(&e);
            }
            return if status == "SUCCESS" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_ERROR)
            };
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
