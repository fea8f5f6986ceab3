// SPDX-License-Identifier: MIT
//! `ferry location`: where tasks read and write.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferry_model::api::{InTransitEncryption, Location, LocationList, LocationSpec, NfsVersion};
use ferry_model::efs;
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
    /// An Amazon EFS file system: NFS 4.1 at its mount target
    /// (FS.efs.REGION.amazonaws.com), over TLS with TLS1_2.
    CreateEfs(EfsArgs),
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

#[derive(Args, Debug)]
struct EfsArgs {
    /// fs-…, or the file system's ARN (which gives the region too).
    #[arg(long, value_name = "ID|ARN")]
    file_system_id: String,
    /// The file system's region (not needed with an ARN).
    #[arg(long)]
    region: Option<String>,
    /// fsap-…, or its ARN: mount through this access point (needs TLS1_2).
    #[arg(long, value_name = "ID|ARN")]
    access_point: Option<String>,
    /// A directory inside the file system to use as the root.
    #[arg(long, value_name = "PATH")]
    subdirectory: Option<String>,
    /// TLS1_2 carries NFS over TLS and checks the mount target's certificate; NONE does not.
    #[arg(long, value_name = "TLS1_2|NONE", default_value = "NONE")]
    in_transit_encryption: InTransitEncryption,
    /// The mount target's IP address, when its name does not resolve where the agent runs
    /// (the certificate is still checked against the name).
    #[arg(long, value_name = "IP")]
    mount_target_address: Option<String>,
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
        LocationCommand::CreateEfs(efs) => {
            efs_spec(efs).and_then(|spec| create(&client, json, spec))
        }
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

/// The EFS location the options describe: an ARN gives the id and the
/// region (a --region that differs is refused).
fn efs_spec(args: EfsArgs) -> Result<LocationSpec, ClientError> {
    let EfsArgs {
        file_system_id: file_system,
        region,
        access_point,
        subdirectory,
        in_transit_encryption,
        mount_target_address,
    } = args;
    let (file_system_id, region) = match (efs::parse_arn(&file_system), region) {
        (Some((_, r)), Some(given)) if r != given => {
            return Err(ClientError::Usage(format!(
                "the ARN {file_system} is in {r}, not --region {given}"
            )))
        }
        (Some(arn), _) => arn,
        (None, Some(r)) => (file_system, r),
        (None, None) => {
            return Err(ClientError::Usage(
                "give --region with a file system id (or the file system's ARN)".into(),
            ))
        }
    };
    Ok(LocationSpec::Efs {
        file_system_id,
        region,
        access_point_id: access_point.map(|a| efs::access_point_id(&a).to_string()),
        subdirectory,
        in_transit_encryption,
        mount_target_address,
    })
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
