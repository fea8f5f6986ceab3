// SPDX-License-Identifier: MIT
//! `ferry-ami publish`: the Ferry image as a (community) EC2 AMI;
//! `ferry-ami cleanup`: deletes the snapshot of an interrupted upload.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Publishes the Ferry image as an EC2 AMI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Uploads the raw image as an EBS snapshot (EBS direct APIs), registers
    /// it as an AMI and prints the AMI ID as the last line. An interrupted
    /// upload of the same image and name is resumed.
    Publish {
        /// The raw disk image (out/ferry.raw).
        #[arg(long)]
        image: PathBuf,
        /// The AMI name (unique in the account and region).
        #[arg(long)]
        name: String,
        /// AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, ~/.aws/config).
        #[arg(long)]
        region: Option<String>,
        /// Send every request to this URL instead of AWS (e.g. a local emulator).
        #[arg(long)]
        endpoint_url: Option<String>,
        /// Make the AMI public (a community AMI: launch permission for all).
        #[arg(long)]
        public: bool,
        /// Blocks uploaded at once.
        #[arg(long, default_value_t = 16)]
        parallel: usize,
        #[arg(long, default_value = "Ferry file-sync appliance")]
        description: String,
        /// The upload state file (default: IMAGE.ferry-ami next to the image).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Delete the snapshot of an interrupted upload and start over.
        #[arg(long)]
        abandon: bool,
    },
    /// Deletes the pending snapshot of an interrupted upload and its state.
    Cleanup {
        /// The raw disk image whose upload was interrupted.
        #[arg(long)]
        image: PathBuf,
        /// The upload state file (default: IMAGE.ferry-ami next to the image).
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        endpoint_url: Option<String>,
    },
}

fn main() -> ExitCode {
    let log = |line: &str| eprintln!("ferry-ami: {line}");
    let result = match Cli::parse().command {
        Command::Publish {
            image,
            name,
            region,
            endpoint_url,
            public,
            parallel,
            description,
            state,
            abandon,
        } => ferry_ami::publish::publish(
            &ferry_ami::publish::Options {
                image,
                name,
                description,
                region,
                endpoint: endpoint_url,
                public,
                parallel,
                state,
                abandon,
            },
            &log,
        ),
        Command::Cleanup {
            image,
            state,
            region,
            endpoint_url,
        } => ferry_ami::publish::cleanup_interrupted(
            &ferry_ami::publish::Options {
                image,
                name: String::new(),
                description: String::new(),
                region,
                endpoint: endpoint_url,
                public: false,
                parallel: 1,
                state,
                abandon: true,
            },
            &log,
        ),
    };
    match result {
        Ok(last) => {
            println!("{last}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry-ami: error: {e}");
            ExitCode::FAILURE
        }
    }
}
