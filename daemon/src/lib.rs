// SPDX-License-Identifier: MIT
//! `ferry-daemon`, the core of `ferry-agent`: the daemon that keeps locations, tasks and executions, runs
//! executions one at a time with the sync engine, and serves a JSON HTTP API
//! on a Unix socket.
//!
//! | module | does |
//! | --- | --- |
//! | [`agent`] | the shared state ([`Agent`]): queue, cancel, the execution running; how the runner reaches a hub ([`runner::Destinations`], injected) |
//! | [`store`] | SQLite persistence with versioned migrations |
//! | [`runner`] | the queue: one execution at a time, oldest first |
//! | [`schedule`] | cron schedules |
//! | [`nfs`] | mounting NFS locations |
//! | [`provision`] | locations and tasks declared in the configuration document |
//! | [`api`] | the HTTP routes (described in `agent/openapi.yaml`) |
//! | [`metrics`] | Prometheus text at `/metrics` |
//! | [`events`] | structured log lines and CloudWatch EMF |
//! | [`cloud`] | where log lines, metrics and reports also go (CloudWatch and S3, injected) |
//! | [`dispatch`] | on the hub: executions handed to the agents that own their sources; what they may write |
//! | [`config`] | `--config`: the appliance's configuration document |
//! | [`check`] | what a location or a task's pair of locations must be |

pub mod agent;
pub mod api;
pub mod check;
pub mod cloud;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod metrics;
pub mod mount;
pub mod nfs;
pub mod provision;
pub mod runner;
pub mod schedule;
pub mod store;

#[cfg(test)]
mod import_cycles;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

pub use self::agent::{Agent, Running};
use ferry_secure as secure;

use self::events::Events;
use self::store::{Store, StoreError};

/// Where the appliance's agent listens.
pub const DEFAULT_SOCKET: &str = ferry_model::paths::AGENT_SOCKET;

/// How the daemon is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Executions that ended longer ago than this are forgotten.
    pub history: Duration,
    /// CloudWatch embedded-metric-format lines in the log.
    pub emf: bool,
    /// Locations and tasks to declare at start (JSON; see [`provision`]).
    pub provision: Option<PathBuf>,
    /// A terminal for one line per execution state change.
    pub console: Option<PathBuf>,
    /// Locations and tasks declared by the configuration document itself.
    pub declared: Option<Arc<provision::Provision>>,
    /// How EFS is reached over TLS: the `ferry-agent` binary's (ferry-efs);
    /// the daemon has no TLS of its own. Without it, TLS1_2 is refused.
    pub efs_tunnels: Option<Arc<dyn mount::EfsTunnels>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent's state directory: {0}")]
    State(#[from] secure::TrustError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Agent {
    /// Opens the store, recovers from an unclean stop, and starts the runner,
    /// the scheduler and the history cleaner.
    pub fn start(config: &Config) -> Result<Arc<Agent>, AgentError> {
        let console = config
            .console
            .as_ref()
            .and_then(|p| std::fs::OpenOptions::new().append(true).open(p).ok());
        let events = Arc::new(Events {
            emf: config.emf,
            console: console.map(Mutex::new),
            cloud: OnceLock::new(),
        });
        // Private, whatever the umask (0: see secure): checked, repaired or
        // refused before anything in it is read.
        let mut repaired = Vec::new();
        let mut dir = |p: &Path| -> Result<PathBuf, AgentError> {
            let (p, r) = secure::private_dir(p)?;
            repaired.extend(r);
            Ok(p)
        };
        let data_dir = dir(&config.data_dir)?;
        let reports_dir = dir(&data_dir.join("reports"))?;
        let mounts_dir = dir(&data_dir.join("mnt"))?;
        repaired.extend(secure::check_tree(&data_dir, &["mnt"])?);
        for line in &repaired {
            events.warn(&format!("state: {line}"));
        }
        for line in runner::clean_mounts(&mounts_dir) {
            events.warn(&line);
        }
        // SQLite gives its -wal and -shm files the database's mode.
        let db = data_dir.join("agent.db");
        secure::private_file(&db)?;
        let store = Store::open(&db)?;
        // What an agent runs for the hub goes on there without the hub.
        let of_an_agent = |e: &ferry_model::api::Execution| {
            matches!(
                store.task_with_locations(&e.task_id),
                Ok(Some((_, source, _))) if matches!(source.spec, ferry_model::api::LocationSpec::Agent { .. })
            )
        };
        let (ended, resumed) = store.mark_interrupted(of_an_agent)?;
        for id in ended {
            events.state(
                "",
                &id,
                ferry_model::api::ERROR,
                Some("interrupted: the agent stopped during the execution"),
            );
        }
        let (wake, woken) = mpsc::channel();
        let agent = Arc::new(Agent {
            store: Mutex::new(store),
            running: Mutex::new(None),
            reports_dir,
            mounts_dir,
            events,
            history: config.history,
            destinations: OnceLock::new(),
            board: Default::default(),
            digests: Default::default(),
            ended: tokio::sync::Notify::new(),
            wake: Mutex::new(wake),
            efs_tunnels: config.efs_tunnels.clone(),
        });
        agent.expire_history();
        if let Some(path) = &config.provision {
            agent.provision(path);
        }
        if let Some(doc) = &config.declared {
            agent.apply_provision(doc, "the configuration document");
        }
        // On the board before the hub serves its agents: their reports and
        // operations find their execution.
        for exec in &resumed {
            let found = agent
                .store
                .lock()
                .unwrap()
                .task_with_locations(&exec.task_id);
            let job = match found {
                Ok(Some((_, source, destination))) => {
                    runner::agent_job(exec, &source, &destination)
                        .ok()
                        .flatten()
                }
                _ => None,
            };
            if let Some((job, agents)) = job {
                agent.board.post_resumed(job, &agents);
            }
        }
        let a = agent.clone();
        std::thread::Builder::new()
            .name("runner".into())
            .spawn(move || runner::run(a, woken, resumed))
            .expect("spawn the runner");
        let a = agent.clone();
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || schedule::run(a))
            .expect("spawn the scheduler");
        let a = agent.clone();
        std::thread::Builder::new()
            .name("history".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(3600));
                a.expire_history();
            })
            .expect("spawn the history cleaner");
        Ok(agent)
    }

    /// Applies a provisioning document; a bad one is logged and changes nothing.
    fn provision(&self, path: &Path) {
        // What it declares is mounted and copied: only from a file nobody
        // else could have written.
        let text = match secure::read_trusted(path, 1 << 20) {
            Ok(t) => t,
            Err(e) => match std::io::Error::from(e) {
                e if e.kind() == std::io::ErrorKind::NotFound => return,
                e => {
                    let line = format!("provisioning: cannot use {}: {e}", path.display());
                    self.events.warn(&line);
                    return self.events.console(&line);
                }
            },
        };
        let doc: provision::Provision = match serde_json::from_slice(&text) {
            Ok(d) => d,
            Err(e) => {
                return self
                    .events
                    .warn(&format!("provisioning: {}: {e}", path.display()))
            }
        };
        self.apply_provision(&doc, &path.display().to_string());
    }

    fn apply_provision(&self, doc: &provision::Provision, _origin: &str) {
        match provision::apply(self, doc) {
            // also on the console: the operator declared these in the document
            Ok(lines) => lines.iter().for_each(|l| {
                self.events.info(&format!("provisioning: {l}"));
                self.events.console(&format!("provisioning: {l}"));
            }),
            Err(e) => {
                self.events.warn(&e.to_string());
                self.events.console(&e.to_string());
            }
        }
    }
}

/// Binds a Unix socket with `mode` (and group `gid`), replacing one left by
/// a killed agent. The file takes the socket's own mode at bind (Linux), set
/// to 0600 first: it is never open to others, not even for an instant. Its
/// directory is made when missing (`dir_mode`) and must be trusted.
pub fn listen(
    socket: &Path,
    mode: u32,
    gid: Option<u32>,
    dir_mode: u32,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let parent = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    secure::trusted_dir_with_mode(parent, dir_mode)?;
    match std::fs::symlink_metadata(socket) {
        Ok(md) if md.file_type().is_socket() => std::fs::remove_file(socket)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: not removing it",
                    socket.display()
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600))?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(socket)?)?;
    rustix::net::listen(&fd, 1024)?;
    if let Some(gid) = gid {
        rustix::fs::chown(socket, None, Some(rustix::fs::Gid::from_raw(gid)))?;
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    Ok(std::os::unix::net::UnixListener::from(fd))
}

/// The main socket: the owner's only; its directory, when made, too.
pub fn listen_main(socket: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    listen(socket, 0o600, None, secure::DIR_MODE)
}

/// The read-only socket: its group may connect (and so pass through its
/// directory, when the daemon makes it).
pub fn listen_read_only(
    socket: &Path,
    gid: u32,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    listen(socket, 0o660, Some(gid), 0o711)
}

/// Serves `api` (the daemon's [`api::router`], with the routes the binary
/// merges into it) on `listener` (from [`listen_main`]) until the process
/// ends.
pub async fn serve(
    agent: Arc<Agent>,
    api: axum::Router,
    listener: std::os::unix::net::UnixListener,
    socket: &Path,
) -> std::io::Result<()> {
    let listener = tokio::net::UnixListener::from_std(listener)?;
    agent
        .events
        .info(&format!("listening on {}", socket.display()));
    axum::serve(listener, api).await
}

/// Serves `api`'s GET routes only (on `listener`, from [`listen_read_only`]), for
/// members of its group (the support channel's diagnostic console reads the
/// agent's state there).
pub async fn serve_read_only(
    agent: Arc<Agent>,
    api: axum::Router,
    listener: std::os::unix::net::UnixListener,
    socket: &Path,
) -> std::io::Result<()> {
    let listener = tokio::net::UnixListener::from_std(listener)?;
    agent
        .events
        .info(&format!("listening on {} (read-only)", socket.display()));
    axum::serve(listener, api::read_only(api)).await
}
