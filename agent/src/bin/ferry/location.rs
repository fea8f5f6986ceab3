// SPDX-License-Identifier: MIT
//! `ferry location`: where tasks read and write.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferry_model::api::{Location, LocationList, LocationSpec, NfsVersion};
use serde_json::Value;

use crate::client::{fail, print_json, segment, table, AgentArgs, Client, ClientError};

#[derive(Args, Debug)]
pub struct LocationArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: LocationCommand,
}

#[derive(Subcommand, Debug)]
enum LocationCommand {
    /// An NFS export; the agent mounts it for each execution.
    // --version is the NFS version here, not the program's.
    #[command(disable_version_flag = true)]
    CreateNfs {
        /// Host name or address of the NFS server.
        #[arg(long)]
        server: String,
        /// The exported path, e.g. /exports/data.
        #[arg(long)]
        export: String,
        /// A directory inside the export to use as the root.
        #[arg(long, value_name = "PATH")]
        subdirectory: Option<String>,
        /// The NFS version: automatic (tries 4.1, 4.0, then 3), 3, 4.0 or 4.1.
        #[arg(long, default_value = "automatic")]
        version: NfsVersion,
        /// Mount options added to the agent's defaults (nconnect=8, 1 MiB rsize/wsize, hard), e.g. nconnect=16.
        #[arg(long, value_name = "OPTIONS")]
        mount_options: Option<String>,
    },
    /// A directory that is already there (a local disk, or mounted another way).
    CreateLocal {
        #[arg(long)]
        path: PathBuf,
    },
    /// A location of the hub this agent is activated with (a destination):
    /// the data goes to the hub over mutual TLS.
    CreateHub {
        /// The location's id on the hub (`ferry location list` against the hub).
        #[arg(long, value_name = "ID")]
        location_id: String,
        /// Compress data on the wire with zstd (counted as BytesCompressed).
        #[arg(long)]
        compress: bool,
        /// Parallel TLS connections to the hub.
        #[arg(long, value_name = "N")]
        connections: Option<u32>,
    },
    List,
    Describe {
        location: String,
    },
    Delete {
        location: String,
    },
}

pub fn run(args: LocationArgs) -> ExitCode {
    let client = Client::new(&args.agent);
    let json = args.agent.json;
    let result = match args.command {
        LocationCommand::CreateNfs {
            server,
            export,
            subdirectory,
            version,
            mount_options,
        } => create(
            &client,
            json,
            LocationSpec::Nfs {
                server,
                export,
                subdirectory,
                version,
                mount_options,
                allow_special_files: false,
            },
        ),
        LocationCommand::CreateLocal { path } => {
            let path = if path.is_absolute() {
                path
            } else {
                std::env::current_dir().unwrap_or_default().join(path)
            };
            create(&client, json, LocationSpec::local(path.to_string_lossy()))
        }
        LocationCommand::CreateHub {
            location_id,
            compress,
            connections,
        } => create(
            &client,
            json,
            LocationSpec::Hub {
                hub_location_id: location_id,
                compress,
                connections,
            },
        ),
        LocationCommand::List => {
            client.show("GET", "/v1/locations", None, json, |l: LocationList| {
                let rows: Vec<Vec<String>> = l
                    .locations
                    .into_iter()
                    .map(|l| {
                        vec![
                            l.location_id,
                            l.spec.type_name().into(),
                            l.location_uri,
                            l.creation_time,
                        ]
                    })
                    .collect();
                table(&["LOCATION", "TYPE", "URI", "CREATED"], &rows);
            })
        }
        LocationCommand::Describe { location } => client
            .call(
                "GET",
                &format!("/v1/locations/{}", segment(&location)),
                None,
            )
            .map(|v| {
                if json {
                    return print_json(&v);
                }
                describe(&v);
            }),
        LocationCommand::Delete { location } => client
            .call(
                "DELETE",
                &format!("/v1/locations/{}", segment(&location)),
                None,
            )
            .map(|_| println!("deleted {location}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("location", e),
    }
}

fn create(client: &Client, json: bool, spec: LocationSpec) -> Result<(), ClientError> {
    let body = serde_json::to_value(&spec)?;
    client.show("POST", "/v1/locations", Some(&body), json, |l: Location| {
        println!("{}", l.location_id)
    })
}

fn describe(v: &Value) {
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            let val = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<15} {val}");
        }
    }
}
