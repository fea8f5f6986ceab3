//! `ferry`: the command-line tool.
//!
//! `ferry sync SOURCE DEST` runs the sync engine between two directories
//! (local, or NFS mounts) without an appliance.

mod progress;
mod sync;

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
    }
}
