// SPDX-License-Identifier: MIT
//! `ferry agent`: agents of a hub, through the hub's HTTPS API (operator
//! token or operator certificate).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferry_model::api::{ActivationStarted, ActivationStatus, AgentList, AgentRecord};
use ferry_wire::{ca, client, tls};
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{print_json, table, text};
use crate::EXIT_USAGE;

#[derive(Args, Debug, Clone)]
pub struct HubArgs {
    /// The hub, HOST[:PORT] (443 by default).
    #[arg(long, env = "FERRY_HUB", global = true)]
    pub hub: Option<String>,
    /// The operator token (the hub keeps it in its data directory, hub/operator-token).
    #[arg(long, env = "FERRY_HUB_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The hub's CA certificate (hub/ca/ca.pem on the hub).
    #[arg(long, env = "FERRY_HUB_CA", value_name = "FILE", global = true)]
    pub hub_ca: Option<PathBuf>,
    /// Instead of --hub-ca: the CA's fingerprint, sha256:HEX (the hub logs it).
    #[arg(long, value_name = "sha256:HEX", global = true)]
    pub hub_fingerprint: Option<String>,
    /// Print the hub's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AgentCmdArgs {
    #[command(flatten)]
    hub: HubArgs,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Confirms an activation key (from the agent's redirect) and names the agent.
    Activate {
        key: String,
        #[arg(long)]
        name: String,
    },
    /// The hub's agents, ONLINE or OFFLINE.
    List,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("give the hub with --hub HOST[:PORT] (or FERRY_HUB)")]
    NoHub,
    #[error("give the hub's CA with --hub-ca FILE or --hub-fingerprint sha256:HEX")]
    NoTrust,
    #[error("give the operator token with --token (or FERRY_HUB_TOKEN)")]
    NoToken,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Hub(#[from] client::HubError),
    #[error("the hub's answer is not the record expected: {0}")]
    Answer(#[from] serde_json::Error),
}

/// The hub's JSON with `--json`; else read as a `T` for `human` to print.
fn show<T: serde::de::DeserializeOwned>(
    v: Value,
    json: bool,
    human: impl FnOnce(T),
) -> Result<(), CliError> {
    if json {
        print_json(&v);
    } else {
        human(serde_json::from_value(v)?);
    }
    Ok(())
}

async fn call(
    args: &HubArgs,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, CliError> {
    let hub = args.hub.as_deref().ok_or(CliError::NoHub)?;
    let base = client::base_url(hub)?;
    let token = args.token.clone().ok_or(CliError::NoToken)?;
    let config = match (&args.hub_ca, &args.hub_fingerprint) {
        (Some(file), _) => {
            let pem = std::fs::read_to_string(file).map_err(|source| CliError::Io {
                what: format!("read the hub's CA certificate {}", file.display()),
                source,
            })?;
            tls::client_config(&ca::cert_from_pem(&pem, &file.display().to_string())?, None)?
        }
        (None, Some(pin)) => tls::first_contact_config(
            Some(pin.clone()),
            std::sync::Arc::new(std::sync::Mutex::new(None)),
        )?,
        (None, None) => return Err(CliError::NoTrust),
    };
    let client = client::HubClient::new(base, config, 1, Some(token));
    Ok(client.json(method, path, body).await?)
}

pub fn run(args: AgentCmdArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry agent: cannot start a runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let json = args.hub.json;
    let result = runtime.block_on(async {
        match &args.command {
            AgentCommand::Activate { key, name } => {
                let body = json!({"ActivationKey": key, "AgentName": name});
                call(&args.hub, Method::POST, "/v1/agents/activate", Some(&body))
                    .await
                    .and_then(|v| {
                        show(v, json, |a: AgentRecord| {
                            println!("{} activated as {}", a.agent_id, a.name)
                        })
                    })
            }
            AgentCommand::List => call(&args.hub, Method::GET, "/v1/agents", None)
                .await
                .and_then(|v| {
                    show(v, json, |l: AgentList| {
                        let rows: Vec<Vec<String>> = l
                            .agents
                            .into_iter()
                            .map(|a| {
                                vec![a.agent.agent_id, a.agent.name, a.status, a.agent.hostname]
                            })
                            .collect();
                        table(&["AGENT", "NAME", "STATUS", "HOST"], &rows);
                    })
                }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry agent: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `ferry activation`: this agent's activation, through its own API socket.
#[derive(Args, Debug)]
pub struct ActivationArgs {
    #[command(flatten)]
    agent: crate::client::AgentArgs,
    #[command(subcommand)]
    command: ActivationCommand,
}

#[derive(Subcommand, Debug)]
enum ActivationCommand {
    /// Activated or not, with which hub.
    Show,
    /// Registers with a hub and prints the key to confirm there.
    Start {
        /// The hub, HOST[:PORT] (443 by default).
        #[arg(long)]
        hub: String,
        /// The hub CA's fingerprint, sha256:HEX (the hub logs it at start).
        #[arg(long, value_name = "sha256:HEX")]
        hub_fingerprint: Option<String>,
    },
}

pub fn run_activation(args: ActivationArgs) -> ExitCode {
    let client = crate::client::Client::new(&args.agent);
    let json = args.agent.json;
    let result = match args.command {
        ActivationCommand::Show => client.show(
            "GET",
            "/v1/activation",
            None,
            json,
            |a: ActivationStatus| {
                if a.activated {
                    println!("activated with {} as {}", text(&a.hub), text(&a.agent_id));
                } else if let Some(key) = &a.activation_key {
                    println!(
                        "waiting for the key {key} to be confirmed on {}",
                        text(&a.hub)
                    );
                } else {
                    println!("not activated");
                }
                if let Some(w) = &a.warning {
                    println!("warning: {w}");
                }
            },
        ),
        ActivationCommand::Start {
            hub,
            hub_fingerprint,
        } => {
            let mut body = json!({ "Hub": hub });
            if let Some(f) = hub_fingerprint {
                body["HubFingerprint"] = f.into();
            }
            client.show(
                "POST",
                "/v1/activation",
                Some(&body),
                json,
                |a: ActivationStarted| {
                    println!("{}", a.activation_key);
                    if let Some(w) = &a.warning {
                        eprintln!("warning: {w}");
                    }
                    eprintln!(
                        "confirm it on the hub: {} or ferry agent activate KEY --name NAME",
                        a.activation_url
                    );
                },
            )
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::client::fail("activation", e),
    }
}
