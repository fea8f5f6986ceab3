//! `ferry-ami publish`: the Ferry image as a (community) EC2 AMI.

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
    /// it as an AMI and prints the AMI ID as the last line.
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
    },
}

fn main() -> ExitCode {
    let Command::Publish {
        image,
        name,
        region,
        endpoint_url,
        public,
        parallel,
        description,
    } = Cli::parse().command;
    let opts = ferry_ami::publish::Options {
        image,
        name,
        description,
        region,
        endpoint: endpoint_url,
        public,
        parallel,
    };
    match ferry_ami::publish::publish(&opts, &|line| eprintln!("ferry-ami: {line}")) {
        Ok(id) => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry-ami: error: {e}");
            ExitCode::FAILURE
        }
    }
}
