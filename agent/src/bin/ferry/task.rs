//! `ferry task`: a source, a destination, options and a schedule; started
//! by hand or by the schedule, each start an execution.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

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
        /// Start on a schedule: five cron fields in UTC, e.g. "0 2 * * *" (every minute at most).
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
            client.call("POST", "/v1/tasks", Some(&body)).map(|v| {
                if json {
                    print_json(&v)
                } else {
                    println!("{}", text(&v, "TaskId"))
                }
            })
        }
        TaskCommand::List => client.call("GET", "/v1/tasks", None).map(|v| {
            if json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = v["Tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        text(t, "TaskId"),
                        text(t, "Name"),
                        text(t, "Status"),
                        text(t, "SourceLocationId"),
                        text(t, "DestinationLocationId"),
                        text(t, "Schedule"),
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
        TaskCommand::Describe { task } => client.call("GET", &task_path(&task), None).map(|v| {
            if json {
                return print_json(&v);
            }
            for key in [
                "TaskId",
                "Name",
                "Status",
                "CurrentTaskExecutionId",
                "SourceLocationId",
                "DestinationLocationId",
                "Schedule",
                "CreationTime",
            ] {
                println!("{key:<24} {}", text(&v, key));
            }
            if let Some(opts) = v["Options"].as_object() {
                println!("Options:");
                for (k, val) in opts {
                    let shown = match val {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("  {k:<22} {shown}");
                }
            }
        }),
        TaskCommand::Update {
            task,
            name,
            options,
            schedule,
        } => {
            let mut body = json!({});
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
            client
                .call("PATCH", &task_path(&task), Some(&body))
                .map(|v| {
                    if json {
                        print_json(&v)
                    } else {
                        println!("updated {}", text(&v, "TaskId"))
                    }
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
            match client.call("POST", &format!("{}/start", task_path(&task)), Some(&body)) {
                Ok(v) => {
                    let id = text(&v, "TaskExecutionId");
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

/// Polls the execution until it ends, then describes it.
fn wait_for(client: &Client, id: &str, json: bool) -> ExitCode {
    let path = format!("/v1/executions/{}", segment(id));
    let mut last_status = String::new();
    loop {
        let v = match client.call("GET", &path, None) {
            Ok(v) => v,
            Err(e) => return fail("task", e),
        };
        let status = text(&v, "Status");
        if status != last_status && !json {
            eprintln!("{id}: {status}");
            last_status = status.clone();
        }
        if status == "SUCCESS" || status == "ERROR" {
            if json {
                print_json(&v);
            } else {
                crate::execution::describe(&v);
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
