//! `ferry location`: where tasks read and write.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::client::{fail, print_json, segment, table, text, AgentArgs, Client};

#[derive(Args, Debug)]
pub struct LocationArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: LocationCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Version {
    Automatic,
    #[value(name = "3")]
    V3,
    #[value(name = "4.0")]
    V4_0,
    #[value(name = "4.1")]
    V4_1,
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
        /// The NFS version; automatic tries 4.1, 4.0, then 3.
        #[arg(long, value_enum, default_value_t = Version::Automatic)]
        version: Version,
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
        } => {
            let version = match version {
                Version::Automatic => "AUTOMATIC",
                Version::V3 => "NFS3",
                Version::V4_0 => "NFS4_0",
                Version::V4_1 => "NFS4_1",
            };
            let mut body =
                json!({"Type": "NFS", "Server": server, "Export": export, "Version": version});
            if let Some(s) = subdirectory {
                body["Subdirectory"] = s.into();
            }
            if let Some(o) = mount_options {
                body["MountOptions"] = o.into();
            }
            client.call("POST", "/v1/locations", Some(&body)).map(|v| {
                show_created(&v, json);
            })
        }
        LocationCommand::CreateLocal { path } => {
            let path = if path.is_absolute() {
                path
            } else {
                std::env::current_dir().unwrap_or_default().join(path)
            };
            let body = json!({"Type": "LOCAL", "Path": path.to_string_lossy()});
            client
                .call("POST", "/v1/locations", Some(&body))
                .map(|v| show_created(&v, json))
        }
        LocationCommand::CreateHub {
            location_id,
            compress,
            connections,
        } => {
            let mut body =
                json!({"Type": "HUB", "HubLocationId": location_id, "Compress": compress});
            if let Some(n) = connections {
                body["Connections"] = n.into();
            }
            client
                .call("POST", "/v1/locations", Some(&body))
                .map(|v| show_created(&v, json))
        }
        LocationCommand::List => client.call("GET", "/v1/locations", None).map(|v| {
            if json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = v["Locations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    vec![
                        text(l, "LocationId"),
                        text(l, "Type"),
                        text(l, "LocationUri"),
                        text(l, "CreationTime"),
                    ]
                })
                .collect();
            table(&["LOCATION", "TYPE", "URI", "CREATED"], &rows);
        }),
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

fn show_created(v: &Value, json: bool) {
    if json {
        print_json(v);
    } else {
        println!("{}", text(v, "LocationId"));
    }
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
