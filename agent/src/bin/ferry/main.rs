// SPDX-License-Identifier: MIT
//! `ferry`: the command-line tool.
//!
//! `ferry sync SOURCE DEST` runs the sync engine between two directories
//! (local, or NFS mounts) without an appliance; `ferry plan SOURCE DEST`
//! says what it would do and how long it would take. `ferry location`, `ferry
//! task` and `ferry execution` drive a `ferry-agent` through its API.

mod client;
mod execution;
mod hub;
mod location;
mod options;
mod plan;
mod progress;
mod sync;
mod task;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fast, parallel, incremental file sync with AWS DataSync's task options.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Sync(sync::SyncArgs),
    Plan(plan::PlanArgs),
    /// Locations of the agent: NFS exports and local directories.
    Location(location::LocationArgs),
    /// Tasks of the agent: create, list, describe, update, delete, start.
    Task(task::TaskArgs),
    /// Executions of the agent's tasks: list, describe, cancel, report.
    Execution(execution::ExecutionArgs),
    /// Agents of a hub: activate (confirm a key), list.
    Agent(hub::AgentCmdArgs),
    /// This agent's activation with a hub: show, start.
    Activation(hub::ActivationArgs),
}

/// Exit codes: 0 SUCCESS, 1 ERROR, 2 usage or setup error.
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(hint) = sync::rsync_habit(&args) {
        eprintln!("{hint}");
        return ExitCode::from(EXIT_USAGE);
    }
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Sync(args) => sync::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Location(args) => location::run(args),
        Command::Task(args) => task::run(args),
        Command::Execution(args) => execution::run(args),
        Command::Agent(args) => hub::run(args),
        Command::Activation(args) => hub::run_activation(args),
    }
}
