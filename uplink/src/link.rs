// SPDX-License-Identifier: MIT
//! The agent's side of activation and of its link to the hub.
//!
//! Until the agent is activated it serves the activation port (80 on the
//! appliance): `GET /?hub=HOST[:PORT][&hubFingerprint=sha256:HEX]` makes a
//! key pair, sends its certificate request to the hub over TLS (checking
//! the hub's CA fingerprint when given, trusting it on first use when not),
//! and answers with a redirect to the hub's activation page carrying the
//! key. The agent then asks the hub for its certificate until an operator
//! confirms the key; with it, the agent writes the activation marker, closes
//! the activation port and reports to the hub every minute.
//!
//! Anyone who reaches the activation port may ask this, naming any hub: the
//! newest request's hub is the one asked for the certificate. The key pair
//! stays the same until activated, and a hub answers a public key it has a
//! key for with that key, so a stranger's requests cannot use up the hub's
//! limits on the agent's address; the operator's request right after gets
//! its key, and picks the certificate up at once when already confirmed.
//!
//! What the agent trusts its hub with: the hub hands it executions whose
//! source is an NFS export, or a local path the agent's own configuration
//! lists (`daemon: hub_local_sources`); anything else is refused and
//! reported to the hub, so a hub cannot make the agent read its own disk.
//! An activation without the hub's fingerprint trusts whichever hub
//! answered first: it is warned about (log, API answer, activation page,
//! `ferry activation show`), and `daemon: require_hub_fingerprint: true`
//! forbids it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::remote::RemoteLocation;
use super::share::HubShare;
use ferry_daemon::dispatch::{Job, JobList, Report, ReportAnswer, JOBS_WAIT_MAX};
use ferry_daemon::Agent;
use ferry_daemon::{api, runner};
use ferry_engine::share::WorkShare;
use ferry_model::api::{self as records, ActivationStarted, ActivationStatus, LocationSpec, Task};
use ferry_wire::activation::{Issued, Register, Registered};
use ferry_wire::ca::{self, write_file};
use ferry_wire::client::{base_url, HubClient, HubError};
use ferry_wire::tls;

/// How often, at least, an agent reports on the executions it runs for its
/// hub.
const RUNNING_REPORT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("this agent is already activated with the hub {0}")]
    AlreadyActivated(String),
    #[error("this agent is not activated with a hub (open its activation port: GET /?hub=HOST)")]
    NotActivated,
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the hub did not present a CA certificate")]
    NoCa,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A directory of the link's failed `ferry_secure`'s checks.
    #[error(transparent)]
    Trust(#[from] ferry_secure::TrustError),
    /// The agent's key file holds no private key.
    #[error("{path}: no private key in the file ({source})")]
    Key {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The hub's address as given is not one (a 400, like [`Invalid`](Self::Invalid)).
    #[error(transparent)]
    HubAddress(HubError),
    #[error("the hub's answer lacks {0}")]
    Answer(&'static str),
    #[error("cannot start the hub client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("this agent activates only with the hub's CA fingerprint (hubFingerprint=sha256:HEX; require_hub_fingerprint is set)")]
    FingerprintRequired,
    /// The request itself is wrong (a 400, not the hub's fault).
    #[error("{0}")]
    Invalid(String),
}

/// A hub CA fingerprint as given: `sha256:` and 64 hex digits, or nothing
/// (absent or blank); lower case.
fn check_fingerprint(given: Option<&str>) -> Result<Option<String>, LinkError> {
    let Some(f) = given.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let hex = f
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("sha256:"))
        .map(|_| &f[7..]);
    match hex {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(format!("sha256:{}", h.to_ascii_lowercase())))
        }
        _ => Err(LinkError::Invalid(format!(
            "bad hub fingerprint {f:?}: give sha256: followed by 64 hex digits (the hub logs its CA fingerprint at start)"
        ))),
    }
}

/// Why an execution the hub handed over is not run here.
#[derive(Debug, thiserror::Error)]
pub enum SourceRefused {
    #[error("the hub asked this agent to {verb} its local path {path:?}; the agent {verb}s for its hub only NFS or EFS locations and the local paths its configuration lists under daemon: {key} ({allowed})")]
    LocalNotAllowed {
        verb: &'static str,
        key: &'static str,
        path: String,
        allowed: String,
    },
    #[error(
        "the hub asked this agent to {verb} {path:?}, which is not there or not reachable: {source}"
    )]
    Unreadable {
        verb: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the {role} of a hub's task on this agent is one of its NFS, EFS or local locations, not {uri}")]
    Kind { role: &'static str, uri: String },
}

/// What the agent's own configuration lets its hub do.
#[derive(Clone, Debug, Default)]
pub struct LinkPolicy {
    /// Local directories a hub's execution may read (with what is under them).
    pub hub_local_sources: Vec<PathBuf>,
    /// Local directories a hub's execution may write, when the agent
    /// reaches its destination itself.
    pub hub_local_destinations: Vec<PathBuf>,
    /// No activation without the hub's CA fingerprint.
    pub require_hub_fingerprint: bool,
}

impl LinkPolicy {
    /// The source to use for a job's `source`: NFS and EFS as given, a local path
    /// only inside an allowed directory (compared once every symlink in
    /// both is resolved, and used resolved).
    pub fn check_source(&self, source: &LocationSpec) -> Result<LocationSpec, SourceRefused> {
        match source {
            LocationSpec::Nfs { .. } | LocationSpec::Efs { .. } => Ok(source.clone()),
            LocationSpec::Local { path, .. } => {
                local_inside(path, &self.hub_local_sources, "read", "hub_local_sources")
            }
            other => Err(SourceRefused::Kind {
                role: "source",
                uri: other.uri(),
            }),
        }
    }

    /// The same for a destination the agent reaches itself: NFS and EFS
    /// as given, a local path only inside `hub_local_destinations`.
    pub fn check_destination(&self, dst: &LocationSpec) -> Result<LocationSpec, SourceRefused> {
        match dst {
            LocationSpec::Nfs { .. } | LocationSpec::Efs { .. } => Ok(dst.clone()),
            LocationSpec::Local { path, .. } => local_inside(
                path,
                &self.hub_local_destinations,
                "write",
                "hub_local_destinations",
            ),
            other => Err(SourceRefused::Kind {
                role: "destination",
                uri: other.uri(),
            }),
        }
    }
}

/// `path` resolved, if inside one of `allowed` (both resolved).
fn local_inside(
    path: &str,
    allowed: &[PathBuf],
    verb: &'static str,
    key: &'static str,
) -> Result<LocationSpec, SourceRefused> {
    let real = std::fs::canonicalize(path).map_err(|source| SourceRefused::Unreadable {
        verb,
        path: path.to_string(),
        source,
    })?;
    let inside = allowed
        .iter()
        .any(|a| std::fs::canonicalize(a).is_ok_and(|a| real.starts_with(a)));
    if !inside {
        let allowed = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(SourceRefused::LocalNotAllowed {
            verb,
            key,
            path: path.to_string(),
            allowed,
        });
    }
    Ok(LocationSpec::local(real.to_string_lossy().into_owned()))
}

/// The warning for an activation that trusted the hub on first contact.
fn unverified(ca_fingerprint: &str) -> String {
    format!(
        "no hub fingerprint was given: this agent trusts the hub CA {ca_fingerprint} because it answered first; \
         check that the hub logs this fingerprint before confirming the key \
         (or start again with the hub's fingerprint)"
    )
}

/// What the agent keeps about its hub (`link.json` in its data directory).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LinkState {
    /// `https://HOST:PORT`
    hub: Option<String>,
    /// The hub's CA certificate (PEM), as first seen.
    ca: Option<String>,
    activation_key: Option<String>,
    agent_id: Option<String>,
    activated: bool,
    /// Whether the hub's CA was checked against a fingerprint given with
    /// the activation (`false`: trusted on first contact).
    #[serde(default)]
    pinned: bool,
}

type Log = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Link {
    dir: PathBuf,
    marker: PathBuf,
    poll: Duration,
    state: Mutex<LinkState>,
    activated: watch::Sender<bool>,
    log: Log,
    /// Executions the hub handed over: the hub's id to the local one.
    jobs: Mutex<HashMap<String, String>>,
    /// The hub's ids of executions that ended here (never started again).
    done: Mutex<HashSet<String>>,
    /// Executions the hub shares among several agents: the local id to
    /// the hub's ([`runner::Destinations::share`]).
    shared: Mutex<HashMap<String, String>>,
    policy: LinkPolicy,
    data_plane: Mutex<Option<DataPlane>>,
}

/// The data plane's runtime and connections, kept from one execution to
/// the next: a new connection costs two round trips (TCP, then TLS) and a
/// handshake before its first request.
struct DataPlane {
    /// What it was made for: the hub, the agent's certificate, the
    /// connections.
    made_for: (Option<String>, Vec<u8>, usize),
    client: HubClient,
    rt: Option<Arc<tokio::runtime::Runtime>>,
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // Maybe inside the daemon's runtime (at exit), where a runtime may
        // not be dropped: shut down in the background instead.
        if let Some(rt) = self.rt.take().and_then(|rt| Arc::try_unwrap(rt).ok()) {
            rt.shutdown_background();
        }
    }
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `write_file(&p, text, true).ctx(|| format!("write {}", p.display()))?`.
trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, LinkError>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, LinkError> {
        self.map_err(|source| LinkError::Io {
            what: what(),
            source,
        })
    }
}

/// A hub's JSON answer as the record it must be; `what` names what was
/// missing or wrong.
fn answer_as<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    what: &'static str,
) -> Result<T, LinkError> {
    serde_json::from_value(v).map_err(|_| LinkError::Answer(what))
}

fn to_json(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).expect("records serialize")
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl Link {
    /// `dir` holds the link's files; `marker` is written once activated.
    pub fn open(
        dir: &Path,
        marker: &Path,
        poll: Duration,
        log: Log,
        policy: LinkPolicy,
    ) -> Result<Arc<Link>, LinkError> {
        ferry_secure::private_dir(dir)?;
        let state: LinkState = std::fs::read(dir.join("link.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let link = Arc::new(Link {
            dir: dir.to_path_buf(),
            marker: marker.to_path_buf(),
            poll,
            activated: watch::Sender::new(state.activated),
            state: Mutex::new(state),
            log,
            jobs: Mutex::default(),
            done: Mutex::default(),
            shared: Mutex::default(),
            policy,
            data_plane: Mutex::default(),
        });
        if link.is_activated() {
            link.write_marker()?;
        }
        Ok(link)
    }

    pub fn is_activated(&self) -> bool {
        self.state.lock().unwrap().activated
    }

    /// The hub and this agent's id there, once activated.
    pub fn status(&self) -> ActivationStatus {
        let s = self.state.lock().unwrap();
        let fingerprint = ca_fingerprint(&s);
        ActivationStatus {
            activated: s.activated,
            hub: s.hub.clone(),
            agent_id: s.agent_id.clone(),
            activation_key: if s.activated {
                None
            } else {
                s.activation_key.clone()
            },
            hub_fingerprint_checked: fingerprint.as_ref().map(|_| s.pinned),
            warning: fingerprint
                .as_ref()
                .filter(|_| !s.pinned)
                .map(|fp| unverified(fp)),
            hub_ca_fingerprint: fingerprint,
        }
    }

    /// The warning to show when the hub was trusted on first contact.
    pub fn warning(&self) -> Option<String> {
        let s = self.state.lock().unwrap();
        ca_fingerprint(&s)
            .filter(|_| !s.pinned)
            .map(|fp| unverified(&fp))
    }

    fn save(&self, state: &LinkState) -> Result<(), LinkError> {
        let path = self.dir.join("link.json");
        let text = serde_json::to_vec_pretty(state).expect("serializable");
        write_file(&path, &text, true).ctx(|| format!("save {}", path.display()))
    }

    fn write_marker(&self) -> Result<(), LinkError> {
        if let Some(parent) = self.marker.parent() {
            ferry_secure::trusted_dir(parent)?;
        }
        let id = self
            .state
            .lock()
            .unwrap()
            .agent_id
            .clone()
            .unwrap_or_default();
        write_file(&self.marker, format!("{id}\n").as_bytes(), true)
            .ctx(|| format!("write the activation marker {}", self.marker.display()))
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("agent.key")
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("agent.pem")
    }

    /// Registers with the hub; returns where to send the operator.
    pub async fn begin(&self, hub: &str, fingerprint: Option<&str>) -> Result<String, LinkError> {
        let (activated, hub_now) = {
            let state = self.state.lock().unwrap();
            (state.activated, state.hub.clone())
        };
        if activated {
            return Err(LinkError::AlreadyActivated(hub_now.unwrap_or_default()));
        }
        // What cannot be right is refused before anything is tried.
        let base = base_url(hub).map_err(LinkError::HubAddress)?;
        let fingerprint = check_fingerprint(fingerprint)?;
        let fingerprint = fingerprint.as_deref();
        if fingerprint.is_none() && self.policy.require_hub_fingerprint {
            return Err(LinkError::FingerprintRequired);
        }
        let seen = Arc::new(Mutex::new(None));
        let config = tls::first_contact_config(fingerprint.map(str::to_string), seen.clone())?;
        let client = HubClient::new(base.clone(), config, 1, None);
        // One key pair until activated, whichever hub is named and however
        // often: the hub answers a request for a public key it already has
        // a key for with that key, so repeated requests (anyone may send
        // them to the activation port) use up none of its limits.
        let key_path = self.key_path();
        let kept = std::fs::read_to_string(&key_path).ok();
        let (key_pem, csr) = ca::request_with(kept.as_deref(), &hostname())?;
        let answer = client
            .json(
                Method::POST,
                "/activation/v1/register",
                Some(&to_json(&Register {
                    csr,
                    hostname: hostname(),
                })),
            )
            .await?;
        let key = answer_as::<Registered>(answer, "ActivationKey")?.activation_key;
        let ca_der: CertificateDer<'static> = seen.lock().unwrap().take().ok_or(LinkError::NoCa)?;
        if kept.as_deref() != Some(key_pem.as_str()) {
            write_file(&key_path, key_pem.as_bytes(), true)
                .ctx(|| format!("write the agent's key {}", key_path.display()))?;
        }
        let state = LinkState {
            hub: Some(base.clone()),
            ca: Some(ca::cert_pem(&ca_der)),
            activation_key: Some(key.clone()),
            agent_id: None,
            activated: false,
            pinned: fingerprint.is_some(),
        };
        self.save(&state)?;
        *self.state.lock().unwrap() = state;
        (self.log)(&format!(
            "activation: registered with {base} (CA {}), key {key}",
            ca::fingerprint(&ca_der)
        ));
        if fingerprint.is_none() {
            (self.log)(&format!(
                "activation: warning: {}",
                unverified(&ca::fingerprint(&ca_der))
            ));
        }
        // The key may be confirmed already (asked for again after the
        // pending registration went elsewhere): then activated now.
        if let Err(e) = self.pick_up().await {
            (self.log)(&format!("activation: {e}"));
        }
        Ok(format!("{base}/activate?activationKey={key}"))
    }

    /// The hub's CA and (once activated) this agent's certificate and key.
    fn tls_config(&self, with_identity: bool) -> Result<(String, rustls::ClientConfig), LinkError> {
        let state = self.state.lock().unwrap().clone();
        let (Some(hub), Some(ca_pem)) = (state.hub, state.ca) else {
            return Err(LinkError::NotActivated);
        };
        let ca_der = ca::cert_from_pem(&ca_pem, "the hub's CA")?;
        let identity = if with_identity {
            if !state.activated {
                return Err(LinkError::NotActivated);
            }
            let cert_path = self.cert_path();
            let key_path = self.key_path();
            let cert_pem = std::fs::read_to_string(&cert_path)
                .ctx(|| format!("read the agent's certificate {}", cert_path.display()))?;
            let key_pem = std::fs::read_to_string(&key_path)
                .ctx(|| format!("read the agent's key {}", key_path.display()))?;
            let cert = ca::cert_from_pem(&cert_pem, &cert_path.display().to_string())?;
            let key: PrivateKeyDer<'static> = rustls::pki_types::pem::PemObject::from_pem_slice(
                key_pem.as_bytes(),
            )
            .map_err(|source| LinkError::Key {
                path: key_path.display().to_string(),
                source,
            })?;
            Some((vec![cert], key))
        } else {
            None
        };
        Ok((hub, tls::client_config(&ca_der, identity)?))
    }

    /// A mutual-TLS client of the hub (inside a tokio runtime).
    pub fn client(&self, connections: usize) -> Result<HubClient, LinkError> {
        let (hub, config) = self.tls_config(true)?;
        Ok(HubClient::new(hub, config, connections, None))
    }

    /// A location of the hub, as an execution's destination (the daemon's
    /// runner opens it through [`runner::Destinations`]).
    pub fn remote_location(
        &self,
        location_id: &str,
        compress: bool,
        connections: usize,
    ) -> Result<RemoteLocation, LinkError> {
        let (client, rt) = self.data_plane(Some(connections))?;
        Ok(RemoteLocation::new(
            client,
            rt,
            location_id.to_string(),
            compress,
        ))
    }

    /// The data plane's client (sharing its connections) and runtime: the
    /// one kept if it was made for this hub, certificate and `connections`
    /// (any number with `None`), else a new one, kept for the next.
    fn data_plane(
        &self,
        connections: Option<usize>,
    ) -> Result<(HubClient, Arc<tokio::runtime::Runtime>), LinkError> {
        let hub = self.state.lock().unwrap().hub.clone();
        let cert = std::fs::read(self.cert_path()).unwrap_or_default();
        let mut kept = self.data_plane.lock().unwrap();
        let plane = match kept.take() {
            Some(plane)
                if (&plane.made_for.0, &plane.made_for.1) == (&hub, &cert)
                    && connections.is_none_or(|n| n == plane.made_for.2) =>
            {
                plane
            }
            _ => {
                let connections = connections.unwrap_or(1);
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ferry-hub-io")
                    .enable_all()
                    .build()
                    .map_err(LinkError::Runtime)?;
                let client = {
                    let _inside = rt.enter();
                    self.client(connections)?
                };
                DataPlane {
                    made_for: (hub, cert, connections),
                    client,
                    rt: Some(Arc::new(rt)),
                }
            }
        };
        let both = (
            plane.client.sharing_connections(),
            plane.rt.clone().expect("kept"),
        );
        *kept = Some(plane);
        Ok(both)
    }

    /// One step of a pending activation: asks the hub for the certificate.
    async fn pick_up(&self) -> Result<bool, LinkError> {
        let key = match self.state.lock().unwrap().activation_key.clone() {
            Some(k) => k,
            None => return Ok(false),
        };
        let (hub, config) = self.tls_config(false)?;
        let client = HubClient::new(hub.clone(), config, 1, None);
        let path = format!("/activation/v1/certificate?activationKey={key}");
        let (status, body) = client
            .send(Method::GET, &path, "application/json", Vec::new())
            .await?;
        match status {
            StatusCode::OK => {}
            StatusCode::ACCEPTED => return Ok(false),
            other => {
                // Unknown or expired: this attempt is over; a new GET / starts another.
                (self.log)(&format!(
                    "activation: the hub answered {other} for key {key}: {}",
                    String::from_utf8_lossy(&body)
                ));
                let mut state = self.state.lock().unwrap();
                state.activation_key = None;
                let s = state.clone();
                drop(state);
                self.save(&s)?;
                return Ok(false);
            }
        }
        let Issued {
            agent_id,
            certificate: cert,
        } = serde_json::from_slice(&body)
            .map_err(|_| LinkError::Answer("AgentId and Certificate"))?;
        let cert_path = self.cert_path();
        write_file(&cert_path, cert.as_bytes(), false)
            .ctx(|| format!("write the agent's certificate {}", cert_path.display()))?;
        let s = {
            let mut state = self.state.lock().unwrap();
            state.agent_id = Some(agent_id.to_string());
            state.activated = true;
            state.clone()
        };
        self.save(&s)?;
        self.write_marker()?;
        self.activated.send_replace(true);
        (self.log)(&format!("activation: activated with {hub} as {agent_id}"));
        Ok(true)
    }

    /// Reports on the executions running here, then asks the hub for
    /// executions to run (which also tells the hub the agent is there) and
    /// starts new ones. Reports go first: an execution's end reaches the
    /// hub one round trip sooner.
    async fn sync_jobs(
        &self,
        client: &mut Option<HubClient>,
        agent: &Arc<Agent>,
    ) -> Result<(), LinkError> {
        if client.is_none() {
            *client = Some(self.client(1)?);
        }
        let c = client.as_ref().expect("just made");
        let running: Vec<(String, String)> = self
            .jobs
            .lock()
            .unwrap()
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect();
        for (hub_id, local_id) in running {
            let exec = agent
                .store
                .lock()
                .unwrap()
                .execution(&local_id)
                .ok()
                .flatten();
            let Some(exec) = exec else {
                self.jobs.lock().unwrap().remove(&hub_id);
                continue;
            };
            let rate = exec.options.bytes_per_second;
            let report = Report {
                status: exec.status,
                result: exec.result,
                counters: exec.counters,
            };
            let end = match self.report(c, &hub_id, &report).await {
                Ok(answer) => {
                    if answer.cancel && !report.finished() {
                        let _ = agent.cancel(&local_id);
                    }
                    // Changed on the hub while it runs (UpdateTaskExecution).
                    match answer.bytes_per_second {
                        Some(r) if r != rate && !report.finished() => {
                            let _ = agent.set_bytes_per_second(&local_id, r);
                        }
                        _ => {}
                    }
                    report.finished()
                }
                // The hub forgot it (it restarted): stop it here too.
                Err(HubError::Refused { status: 404, .. }) => {
                    let _ = agent.cancel(&local_id);
                    true
                }
                Err(e) => return Err(e.into()),
            };
            if end {
                self.jobs.lock().unwrap().remove(&hub_id);
                self.shared.lock().unwrap().remove(&local_id);
                self.done.lock().unwrap().insert(hub_id);
            }
        }
        // With nothing to run here, the hub answers when it has something
        // (or after a while): a new execution starts at once.
        let idle = self.jobs.lock().unwrap().is_empty();
        let path = if idle {
            format!("/agent/v1/tasks?wait={}", JOBS_WAIT_MAX.as_secs())
        } else {
            "/agent/v1/tasks".to_string()
        };
        let v = c.json(Method::GET, &path, None).await?;
        for job in answer_as::<JobList>(v, "Executions")?.executions {
            let known = self.jobs.lock().unwrap().contains_key(&job.execution_id)
                || self.done.lock().unwrap().contains(&job.execution_id);
            if known || job.cancel {
                continue;
            }
            let started = self
                .policy
                .check_source(&job.source)
                .map_err(|e| ("SourceNotAllowed", e.to_string()))
                .and_then(|source| {
                    let destination = match &job.destination {
                        // A location the agent reaches itself.
                        Some(d) => self
                            .policy
                            .check_destination(d)
                            .map_err(|e| ("DestinationNotAllowed", e.to_string()))?,
                        None => LocationSpec::Hub {
                            hub_location_id: job.destination_location_id.clone(),
                            compress: job.compress,
                            connections: job.connections,
                        },
                    };
                    start_local(agent, &job, &source, &destination)
                        .map_err(|e| ("AgentCannotStart", e))
                });
            match started {
                Ok(local) => {
                    (self.log)(&format!(
                        "hub: running its execution {} as {local}{}",
                        job.execution_id,
                        if job.shared {
                            ", shared with other agents"
                        } else {
                            ""
                        }
                    ));
                    if job.shared {
                        let hub_id = job.execution_id.clone();
                        self.shared.lock().unwrap().insert(local.clone(), hub_id);
                    }
                    self.jobs.lock().unwrap().insert(job.execution_id, local);
                }
                Err((code, why)) => {
                    (self.log)(&format!(
                        "hub: its execution {} is not run here: {why}",
                        job.execution_id
                    ));
                    let mut result = ferry_daemon::store::pending_result();
                    result.prepare_status = records::ERROR.into();
                    result.transfer_status = records::ERROR.into();
                    result.verify_status = records::ERROR.into();
                    result.error_code = Some(code.into());
                    result.error_detail = Some(why);
                    let report = Report {
                        status: records::ERROR.into(),
                        result,
                        counters: Default::default(),
                    };
                    self.report(c, &job.execution_id, &report).await?;
                    self.done.lock().unwrap().insert(job.execution_id);
                }
            }
        }
        Ok(())
    }

    /// Reports on a job; the hub answers whether it cancelled it, and
    /// its bandwidth limit.
    async fn report(
        &self,
        c: &HubClient,
        hub_id: &str,
        report: &Report,
    ) -> Result<ReportAnswer, HubError> {
        let path = format!("/agent/v1/executions/{hub_id}/report");
        let body = serde_json::to_value(report).expect("serializable");
        let v = c.json(Method::POST, &path, Some(&body)).await?;
        Ok(serde_json::from_value(v).unwrap_or(ReportAnswer {
            cancel: false,
            bytes_per_second: None,
        }))
    }

    /// Picks up the certificate while pending; then asks the hub for work
    /// (which is also how the hub knows it is ONLINE): when idle, an ask
    /// the hub holds until it has work; while executions run here, every
    /// `poll_seconds` with their progress, and at once when one ends.
    pub async fn run(self: Arc<Link>, agent: Arc<Agent>) {
        let mut client = None;
        let mut last_error = String::new();
        loop {
            let asked = tokio::time::Instant::now();
            let was_idle = self.jobs.lock().unwrap().is_empty();
            let result = if self.is_activated() {
                self.sync_jobs(&mut client, &agent).await
            } else {
                self.pick_up().await.map(|_| ())
            };
            let ok = result.is_ok();
            match result {
                Err(e) if e.to_string() != last_error => {
                    last_error = e.to_string();
                    (self.log)(&format!("hub link: {e}"));
                }
                Err(_) => {}
                Ok(()) => last_error.clear(),
            }
            // Idle now, asked again at once (the hub holds the ask) after a
            // held ask or the last execution's end; otherwise not before
            // `poll_seconds` (nor in a loop against a hub that holds none).
            let held = asked.elapsed() >= self.poll;
            let idle = self.jobs.lock().unwrap().is_empty();
            if ok && self.is_activated() && idle && (held || !was_idle) {
                continue;
            }
            let mut activated = self.activated.subscribe();
            // While executions run, a cancel or a new BytesPerSecond on the
            // hub comes with the answer to a report: one a second at least.
            let wait = if idle {
                self.poll
            } else {
                self.poll.min(RUNNING_REPORT_EVERY)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = activated.changed() => {}
                _ = agent.ended.notified() => {}
            }
        }
    }

    /// Serves the activation port until the agent is activated.
    pub async fn serve_activation(
        self: Arc<Link>,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<()> {
        if self.is_activated() {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        (self.log)(&format!("activation: listening on {addr} until activated"));
        let mut done = self.activated.subscribe();
        let app = axum::Router::new()
            .route("/", axum::routing::get(activation_page))
            .with_state(self.clone())
            // A query string is all it takes; the registration is one
            // round trip to the hub.
            .layer(DefaultBodyLimit::max(4 << 10))
            .layer(axum::middleware::from_fn(activation_budget));
        let conns = tls::Connections::new(tls::ConnLimits::for_this_process());
        tls::serve_plain(listener, app, conns, async move {
            let _ = done.wait_for(|a| *a).await;
        })
        .await;
        (self.log)("activation: port closed");
        Ok(())
    }
}

/// A location of the agent with this spec, made when there is none.
fn location_for(store: &ferry_daemon::store::Store, spec: &LocationSpec) -> Result<String, String> {
    let all = store.locations().map_err(|e| e.to_string())?;
    if let Some(l) = all.into_iter().find(|l| &l.spec == spec) {
        return Ok(l.location_id);
    }
    store
        .insert_location(spec)
        .map(|l| l.location_id)
        .map_err(|e| e.to_string())
}

/// Queues a job of the hub here, as the task `hub-TASKID` from `source`
/// (the job's, as [`LinkPolicy::check_source`] allowed it) to
/// `destination` (the hub's location, or one the agent reaches itself).
fn start_local(
    agent: &Arc<Agent>,
    job: &Job,
    source: &LocationSpec,
    destination: &LocationSpec,
) -> Result<String, String> {
    let err = |e: ferry_daemon::store::StoreError| e.to_string();
    let task = {
        let store = agent.store.lock().unwrap();
        let src = location_for(&store, source)?;
        let dst = location_for(&store, destination)?;
        let name = format!("hub-{}", job.task_id);
        match store.task_by_name(&name).map_err(err)? {
            Some(t) => {
                store
                    .set_task_locations(&t.task_id, &src, &dst)
                    .map_err(err)?;
                store
                    .update_task(&t.task_id, &name, &job.options, None)
                    .map_err(err)?;
                store.task(&t.task_id).map_err(err)?.unwrap_or(t)
            }
            None => {
                let t = Task {
                    task_id: records::new_id("task"),
                    name,
                    source_location_id: src,
                    destination_location_id: dst,
                    options: job.options.clone(),
                    schedule: None,
                    schedule_details: None,
                    status: "AVAILABLE".into(),
                    current_task_execution_id: None,
                    creation_time: String::new(),
                };
                store.insert_task(&t).map_err(err)?;
                t
            }
        }
    };
    agent.queue(&task, &job.options).map_err(|e| e.to_string())
}

/// The activation port's budget per request (a registration with the hub
/// takes one TLS connection and a request, retried at most a few times).
const ACTIVATION_BUDGET: Duration = Duration::from_secs(60);

async fn activation_budget(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(ACTIVATION_BUDGET, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "activation: no answer in time; try again\n",
        )
            .into_response(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ca_fingerprint(s: &LinkState) -> Option<String> {
    let pem = s.ca.as_deref()?;
    ca::cert_from_pem(pem, "the hub's CA")
        .ok()
        .map(|der| ca::fingerprint(&der))
}

async fn activation_page(
    State(link): State<Arc<Link>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(hub) = q.get("hub") else {
        return (
            StatusCode::OK,
            "This Ferry agent is not activated.\nGET /?hub=HOST[:PORT][&hubFingerprint=sha256:HEX] registers it with a hub and redirects to the hub's activation page (with &no_redirect: answers the activation key).\n",
        )
            .into_response();
    };
    // DataSync's `no_redirect`: the key in the body, as scripts read it.
    let no_redirect = q.contains_key("no_redirect");
    match link
        .begin(hub, q.get("hubFingerprint").map(String::as_str))
        .await
    {
        Ok(_) if no_redirect => {
            let key = link.state.lock().unwrap().activation_key.clone();
            (StatusCode::OK, format!("{}\n", key.unwrap_or_default())).into_response()
        }
        Ok(location) => match link.warning() {
            None => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            // Trusted on first contact: the operator is told before going on.
            Some(warning) => {
                let url = html_escape(&location);
                axum::response::Html(format!(
                    "<!doctype html><title>Ferry agent: activation</title>\
                     <h1>Warning: the hub was not verified</h1><p>{}\
                     <p>Continue to the hub's activation page: <a href=\"{url}\">{url}</a>",
                    html_escape(&warning)
                ))
                .into_response()
            }
        },
        Err(e) => {
            let (status, error_type) = activation_failure(&e);
            let body = format!("activation failed: errorType={error_type}: {e}\n");
            // A registration that failed (not a request refused as it
            // stands): to the hub's page, which shows why.
            match base_url(hub) {
                Ok(base) if !no_redirect && status == StatusCode::BAD_GATEWAY => {
                    let query = form_urlencoded::Serializer::new(String::new())
                        .append_pair("errorType", error_type)
                        .append_pair("errorMessage", &e.to_string())
                        .finish();
                    let location = format!("{base}/activate?{query}");
                    (StatusCode::FOUND, [(header::LOCATION, location)], body).into_response()
                }
                _ => (status, body).into_response(),
            }
        }
    }
}

/// The status and the `errorType` of a failed activation.
fn activation_failure(e: &LinkError) -> (StatusCode, &'static str) {
    match e {
        LinkError::AlreadyActivated(_) => (StatusCode::CONFLICT, "AlreadyActivated"),
        LinkError::FingerprintRequired => (StatusCode::BAD_REQUEST, "FingerprintRequired"),
        LinkError::Invalid(_) => (StatusCode::BAD_REQUEST, "InvalidRequest"),
        LinkError::HubAddress(_) => (StatusCode::BAD_REQUEST, "InvalidHubAddress"),
        LinkError::Hub(HubError::Unreachable { .. }) | LinkError::NoCa => {
            (StatusCode::BAD_GATEWAY, "HubUnreachable")
        }
        LinkError::Hub(HubError::Refused { .. }) => {
            (StatusCode::BAD_GATEWAY, "RegistrationRefused")
        }
        _ => (StatusCode::BAD_GATEWAY, "ActivationFailed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_sha256_and_64_hex_digits_or_nothing() {
        let hex = "0123456789abcdef".repeat(4);
        for none in [None, Some(""), Some("  ")] {
            assert_eq!(check_fingerprint(none).unwrap(), None);
        }
        let want = Some(format!("sha256:{hex}"));
        assert_eq!(
            check_fingerprint(Some(&format!("sha256:{hex}"))).unwrap(),
            want
        );
        assert_eq!(
            check_fingerprint(Some(&format!(" SHA256:{} ", hex.to_uppercase()))).unwrap(),
            want
        );
        for bad in [
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}g", &hex[1..]),
            format!("sha1:{hex}"),
            hex.clone(),
            "sha256:".into(),
            "sha256:é".into(),
        ] {
            let e = check_fingerprint(Some(&bad)).unwrap_err().to_string();
            assert!(
                e.contains("sha256: followed by 64 hex digits"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_hub_reads_only_nfs_and_the_local_paths_the_agent_allows() {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = tmp.path().join("data");
        let secret = tmp.path().join("secret");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::os::unix::fs::symlink(&secret, allowed.join("escape")).unwrap();
        let local = |p: &Path| LocationSpec::local(p.to_string_lossy().into_owned());
        let nfs = LocationSpec::Nfs {
            server: "nas".into(),
            export: "/e".into(),
            subdirectory: None,
            version: Default::default(),
            mount_options: None,
            allow_special_files: false,
        };

        let none = LinkPolicy::default();
        assert_eq!(none.check_source(&nfs).unwrap(), nfs);
        let e = none.check_source(&local(&allowed)).unwrap_err();
        assert!(matches!(e, SourceRefused::LocalNotAllowed { .. }), "{e}");
        assert!(e.to_string().contains("hub_local_sources (none)"), "{e}");

        let some = LinkPolicy {
            hub_local_sources: vec![allowed.clone()],
            ..LinkPolicy::default()
        };
        let real = std::fs::canonicalize(&allowed).unwrap();
        assert_eq!(some.check_source(&local(&allowed)).unwrap(), local(&real));
        assert_eq!(
            some.check_source(&local(&allowed.join("sub"))).unwrap(),
            local(&real.join("sub"))
        );
        for outside in [
            secret.clone(),
            allowed.join("escape"),
            allowed.join("../secret"),
            tmp.path().join("data-and-more"),
            PathBuf::from("/"),
        ] {
            assert!(
                some.check_source(&local(&outside)).is_err(),
                "{} was allowed",
                outside.display()
            );
        }
        let hub = LocationSpec::Hub {
            hub_location_id: "loc-1".into(),
            compress: false,
            connections: None,
        };
        assert!(matches!(
            some.check_source(&hub),
            Err(SourceRefused::Kind { .. })
        ));
        // Writing is allowed apart: a local path to read is not one to write.
        let e = some.check_destination(&local(&allowed)).unwrap_err();
        assert!(
            e.to_string().contains("hub_local_destinations (none)"),
            "{e}"
        );
        assert_eq!(some.check_destination(&nfs).unwrap(), nfs);
        let writer = LinkPolicy {
            hub_local_destinations: vec![allowed.join("sub")],
            ..LinkPolicy::default()
        };
        let sub = local(&real.join("sub"));
        assert_eq!(
            writer
                .check_destination(&local(&allowed.join("sub")))
                .unwrap(),
            sub
        );
        assert!(writer.check_destination(&local(&allowed)).is_err());
        assert!(writer.check_source(&local(&allowed.join("sub"))).is_err());
    }
}

impl runner::Destinations for Link {
    fn open(
        &self,
        location_id: &str,
        compress: bool,
        connections: usize,
    ) -> Result<Box<dyn runner::Destination>, String> {
        self.remote_location(location_id, compress, connections)
            .map(|l| Box::new(l) as Box<dyn runner::Destination>)
            .map_err(|e| e.to_string())
    }

    /// The hub's units, over the data plane (the one the execution's
    /// destination opened, when it is the hub).
    fn share(&self, execution_id: &str) -> Result<Option<Arc<dyn WorkShare>>, String> {
        let Some(hub_id) = self.shared.lock().unwrap().get(execution_id).cloned() else {
            return Ok(None);
        };
        let (client, rt) = self.data_plane(None).map_err(|e| e.to_string())?;
        let share = HubShare::new(client, rt, &hub_id, self.log.clone());
        Ok(Some(Arc::new(share)))
    }
}

impl runner::Destination for RemoteLocation {
    fn run(self: Box<Self>, pending: runner::Pending<'_>) {
        pending.run(*self)
    }
}

// ---- the activation routes of the daemon's API

/// (method, path) of the routes of [`routes`], which the `ferry-agent`
/// binary merges into the daemon's API (`agent/openapi.yaml` describes
/// both).
pub const ROUTES: &[(&str, &str)] = &[("get", "/v1/activation"), ("post", "/v1/activation")];

/// The daemon API's activation routes, answered by `link`; without one
/// (a daemon without `--config`, or the hub) they answer `NoHubLink`.
pub fn routes(link: Option<Arc<Link>>) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/activation",
            axum::routing::get(activation_status).post(activation_start),
        )
        .with_state(link)
}

type Linked = State<Option<Arc<Link>>>;

fn linked(link: &Option<Arc<Link>>) -> Result<&Arc<Link>, api::ApiError> {
    link.as_ref().ok_or_else(|| {
        api::conflict(
            "NoHubLink",
            "this daemon has no activation (run ferry-agent --config with role: agent)",
        )
    })
}

async fn activation_status(State(link): Linked) -> api::Reply {
    api::ok(linked(&link)?.status())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StartActivation {
    hub: String,
    #[serde(default)]
    hub_fingerprint: Option<String>,
}

/// What `GET /?hub=` on the activation port does, for the console and the
/// CLI: registers with the hub and answers the key and the hub's page.
async fn activation_start(State(link): Linked, bytes: axum::body::Bytes) -> api::Reply {
    let req: StartActivation = api::body(&bytes)?;
    let link = linked(&link)?.clone();
    match link.begin(&req.hub, req.hub_fingerprint.as_deref()).await {
        Ok(url) => {
            let key = url.rsplit('=').next().unwrap_or_default().to_string();
            api::ok(ActivationStarted {
                activation_key: key,
                activation_url: url,
                warning: link.warning(),
            })
        }
        Err(e @ LinkError::AlreadyActivated(_)) => {
            Err(api::conflict("AlreadyActivated", e.to_string()))
        }
        Err(e @ LinkError::FingerprintRequired) => {
            Err(api::bad_request("FingerprintRequired", e.to_string()))
        }
        Err(e @ (LinkError::Invalid(_) | LinkError::HubAddress(_))) => {
            Err(api::bad_request("InvalidRequest", e.to_string()))
        }
        Err(e) => Err(api::ApiError::new(
            StatusCode::BAD_GATEWAY,
            "HubUnreachable",
            e.to_string(),
        )),
    }
}
