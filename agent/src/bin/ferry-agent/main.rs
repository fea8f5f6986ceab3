// SPDX-License-Identifier: MIT
//! `ferry-agent`: the daemon that keeps locations, tasks and executions and
//! serves the JSON API on a Unix socket (see `ferry_daemon`). With
//! `--config` it reads the appliance's configuration document and runs as
//! an agent (with its activation port and its link to a hub) or as the hub.

mod cloud;
mod efs;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ferry_daemon::config::{self, Document, Role, HISTORY_DAYS};
use ferry_daemon::{self as daemon, Agent, Config};
use ferry_hub::server::Hub;
use ferry_uplink::link::{self, Link, LinkPolicy};

/// Ferry's agent: locations, tasks and executions, with history, schedules,
/// reports and metrics, behind a JSON HTTP API on a Unix socket.
#[derive(Parser, Debug)]
#[command(name = "ferry-agent", version, about)]
struct Args {
    /// The configuration document (`role:`, `daemon:`, `agent:`; see
    /// agent/README.md). Without it, the options below set everything and
    /// there is no activation port and no hub.
    /// A missing document means every default (the appliance before its
    /// first configuration).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data_dir", "socket", "history_days", "cloudwatch_emf"])]
    config: Option<PathBuf>,
    /// Where the database, the reports and the mount points live.
    #[arg(long, value_name = "DIR", default_value = ferry_model::paths::AGENT_DATA_DIR)]
    data_dir: PathBuf,
    /// The API's Unix socket.
    #[arg(long, value_name = "PATH", default_value = daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Days an ended execution (and its report) is kept.
    #[arg(long, value_name = "DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(i64::from(*HISTORY_DAYS.start())..=i64::from(*HISTORY_DAYS.end())))]
    history_days: u32,
    /// Also log CloudWatch embedded-metric-format lines at each execution's end.
    #[arg(long)]
    cloudwatch_emf: bool,
    /// Locations and tasks to declare at start, as JSON (on the appliance,
    /// ferry-init writes the configuration document's `agent:` section here).
    #[arg(long, value_name = "FILE")]
    provision: Option<PathBuf>,
    /// Also write one short line per execution state change to this
    /// terminal (the appliance's console).
    #[arg(long, value_name = "TTY")]
    console: Option<PathBuf>,
    /// Also serve the GET routes only, on this socket, to a group
    /// (`--read-only-group`): the support console reads the agent's state.
    #[arg(long, value_name = "PATH", requires = "read_only_group")]
    read_only_socket: Option<PathBuf>,
    /// The group (a name from /etc/group, or a number) that may use the
    /// read-only socket.
    #[arg(long, value_name = "GROUP")]
    read_only_group: Option<String>,
}

/// A stop request (SIGTERM, SIGINT) ends the agent at once: the store is
/// consistent at every instant, and the next start marks a running execution
/// interrupted. The disposition and mask are reset because both are
/// inherited across exec, whatever started us.
fn default_stop_signals() {
    // SAFETY: plain signal-mask and disposition calls on a valid, local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// A group's number: given, or looked up in /etc/group.
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&group))
        .and_then(|f| f.get(2)?.parse().ok())
        .ok_or_else(|| format!("no group {group:?} in /etc/group"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    default_stop_signals();
    // Files are created with their final modes: no umask in the way.
    rustix::process::umask(rustix::fs::Mode::empty());
    let doc = match &args.config {
        Some(path) if !path.exists() => {
            eprintln!(
                "ferry-agent: no configuration document at {}: the defaults apply",
                path.display()
            );
            Some(Document::default())
        }
        Some(path) => match config::load(path) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("ferry-agent: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let efs_pem = doc
        .as_ref()
        .and_then(|d| d.daemon.efs_ca_certificates.as_deref());
    let efs_tunnels = match ferry_efs::roots(efs_pem) {
        Ok(roots) => Some(efs::tunnels(roots)),
        Err(e) => {
            eprintln!("ferry-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let (config, socket) = match &doc {
        Some(doc) => {
            let d = &doc.daemon;
            let config = Config {
                data_dir: d.data_dir.clone(),
                history: Duration::from_secs(u64::from(d.history_days) * 86_400),
                emf: d.cloudwatch_emf,
                provision: args.provision.clone(),
                console: args.console.clone().or_else(|| d.console.clone()),
                declared: None,
                efs_tunnels,
            };
            (config, d.socket.clone())
        }
        None => (
            Config {
                data_dir: args.data_dir.clone(),
                history: Duration::from_secs(u64::from(args.history_days) * 86_400),
                emf: args.cloudwatch_emf,
                provision: args.provision.clone(),
                console: args.console.clone(),
                declared: None,
                efs_tunnels,
            },
            args.socket.clone(),
        ),
    };
    let mut config = config;
    let mut doc = doc;
    // On the appliance ferry-init hands over the checked `agent:` section
    // with --provision; elsewhere the document's own section is declared.
    if let (Some(d), None) = (doc.as_mut(), &args.provision) {
        config.declared = d.agent.take().map(std::sync::Arc::new);
    }
    let agent = match Agent::start(&config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferry-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry-agent: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let gid = match args.read_only_group.as_deref().map(group_id).transpose() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("ferry-agent: --read-only-group: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        // The daemon's API with the link's activation routes (which answer
        // NoHubLink without a link), on its sockets and on the hub's HTTPS.
        let api = match &doc {
            Some(doc) => match start_role(&agent, doc) {
                Ok(api) => api,
                Err(e) => {
                    eprintln!("ferry-agent: {e}");
                    return ExitCode::from(2);
                }
            },
            None => api(&agent, None),
        };
        // The read-only socket's directory first: when both share one the
        // daemon makes, its group must be able to pass through it.
        let ro = match (&args.read_only_socket, gid) {
            (Some(ro), Some(gid)) => match daemon::listen_read_only(ro, gid) {
                Ok(l) => Some((ro, l)),
                Err(e) => {
                    eprintln!("ferry-agent: the read-only API on {}: {e}", ro.display());
                    return ExitCode::from(2);
                }
            },
            _ => None,
        };
        let listener = match daemon::listen_main(&socket) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ferry-agent: the API on {}: {e}", socket.display());
                return ExitCode::from(2);
            }
        };
        let main = daemon::serve(agent.clone(), api.clone(), listener, &socket);
        let served = match ro {
            Some((path, l)) => {
                tokio::try_join!(main, daemon::serve_read_only(agent, api, l, path)).map(|_| ())
            }
            _ => main.await,
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry-agent: the API on {}: {e}", socket.display());
                ExitCode::from(2)
            }
        }
    })
}

/// The daemon's API with the activation routes of `link` merged in.
fn api(agent: &std::sync::Arc<Agent>, link: Option<std::sync::Arc<Link>>) -> axum::Router {
    daemon::api::router(agent.clone()).merge(link::routes(link))
}

/// The agent's link to a hub and its activation port, or the hub's HTTPS
/// API; answers the daemon's API as the role serves it.
fn start_role(agent: &std::sync::Arc<Agent>, doc: &Document) -> Result<axum::Router, String> {
    let d = &doc.daemon;
    let events = agent.clone();
    let log = std::sync::Arc::new(move |line: &str| events.events.info(line));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferry".into());
    match doc.role {
        Role::Agent => {
            let link = Link::open(
                &d.data_dir.join("hub-link"),
                &d.activated_marker,
                Duration::from_secs(d.poll_seconds.max(1)),
                log,
                LinkPolicy {
                    hub_local_sources: d.hub_local_sources.clone(),
                    hub_local_destinations: d.hub_local_destinations.clone(),
                    require_hub_fingerprint: d.require_hub_fingerprint,
                },
            )
            .map_err(|e| e.to_string())?;
            // The runner reaches the hub's locations through the link.
            let _ = agent.destinations.set(link.clone());
            let (l, h) = (link.clone(), host.clone());
            start_cloud(
                agent,
                d,
                &host,
                Box::new(move || l.status().agent_id.unwrap_or_else(|| h.clone())),
            );
            let api = api(agent, Some(link.clone()));
            tokio::spawn(link.clone().run(agent.clone()));
            let addr = d.activation_listen;
            let a = agent.clone();
            tokio::spawn(async move {
                if let Err(e) = link.serve_activation(addr).await {
                    a.events
                        .warn(&format!("activation: cannot serve on {addr}: {e}"));
                }
            });
            Ok(api)
        }
        Role::Hub => {
            let h = host.clone();
            start_cloud(agent, d, &host, Box::new(move || h.clone()));
            let dir = d.data_dir.join("hub");
            let token = d
                .operator_token_file
                .clone()
                .unwrap_or_else(|| dir.join("operator-token"));
            let api = api(agent, None);
            let hub = Hub::open(
                agent.clone(),
                api.clone(),
                &dir,
                &d.hub_names,
                &token,
                d.operator_token.as_deref(),
                Duration::from_secs(d.activation_key_seconds),
            )
            .map_err(|e| e.to_string())?;
            let addr = d.https_listen;
            tokio::spawn(async move {
                if let Err(e) = hub.serve(addr).await {
                    eprintln!("ferry-agent: hub: {e}");
                    std::process::exit(2);
                }
            });
            Ok(api)
        }
    }
}

/// CloudWatch and S3 as `daemon.aws` asks, the log stream named `host`;
/// a cloud that cannot start is logged and left off (the transfers go on).
fn start_cloud(
    agent: &std::sync::Arc<Agent>,
    d: &ferry_model::config::Daemon,
    host: &str,
    agent_id: Box<dyn Fn() -> String + Send + Sync>,
) {
    let Some(aws) = &d.aws else { return };
    match cloud::start(aws, host, agent_id) {
        Ok(c) => {
            let _ = agent.events.cloud.set(std::sync::Arc::new(c));
            agent.events.info(&format!(
                "daemon.aws: metrics to CloudWatch {}, logs {}, task reports to S3 when a task names a bucket",
                if aws.cloudwatch_metrics { aws.cloudwatch_namespace.as_str() } else { "off" },
                aws.cloudwatch_log_group.as_deref().unwrap_or("off"),
            ));
        }
        Err(e) => agent
            .events
            .warn(&format!("daemon.aws: {e}; CloudWatch and S3 are off")),
    }
}

#[cfg(test)]
mod tests {
    use ferry_daemon::api;
    use ferry_uplink::link;

    /// What the binary serves: the daemon's routes and the link's.
    fn served() -> Vec<(&'static str, &'static str)> {
        api::ROUTES.iter().chain(link::ROUTES).copied().collect()
    }

    /// (method, path) pairs under `paths:` of the OpenAPI description: paths
    /// are the keys indented by two spaces, methods those indented by four.
    fn documented() -> Vec<(String, String)> {
        let text = include_str!("../../../openapi.yaml");
        let mut out = Vec::new();
        let mut in_paths = false;
        let mut path = None;
        for line in text.lines() {
            if !line.starts_with(' ') {
                in_paths = line == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /") {
                path = Some(format!("/{}", p.trim_end_matches(':')));
            } else if let (Some(m), Some(p)) = (line.strip_prefix("    "), &path) {
                let m = m.trim_end_matches(':');
                if ["get", "post", "put", "patch", "delete"].contains(&m) {
                    out.push((m.to_string(), p.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_in_the_openapi_description_and_nothing_else() {
        let documented = documented();
        for (method, path) in &served() {
            assert!(
                documented.iter().any(|(m, p)| m == method && p == path),
                "{method} {path} is served but not in agent/openapi.yaml"
            );
        }
        for (m, p) in &documented {
            assert!(
                served()
                    .iter()
                    .any(|(method, path)| m == method && p == path),
                "{m} {p} is in agent/openapi.yaml but not served"
            );
        }
        assert_eq!(documented.len(), served().len());
    }
}
