// SPDX-License-Identifier: MIT
//! The hub's HTTPS API, on one port:
//!
//! | who | routes |
//! | --- | --- |
//! | anyone (the activation flow) | `POST /activation/v1/register`, `GET /activation/v1/certificate`, `GET`/`POST /activate` (the page) |
//! | operators (bearer token or operator certificate) | `/v1/agents`, `/v1/agents/activate`, and the daemon's API (`/v1/locations`, `/v1/tasks`, `/v1/executions`, `/metrics`) |
//! | activated agents (their certificate) | `POST /agent/v1/heartbeat`, `GET /agent/v1/tasks`, `POST /agent/v1/executions/{id}/report`, `POST /agent/v1/fs/{location}/batch` |
//!
//! An agent's file-system requests reach only the location an execution
//! handed to it writes to, while that execution runs ([`ferry_daemon::dispatch`]).
//! Every request has a body size limit and a time budget; the blocking
//! file-system work is bounded per agent and in all, below the runtime's
//! blocking threads, so no agent's slow or stuck operations hold up the
//! others, the operators or the activation flow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::state::{ActivationError, HubState};
use ferry_daemon::dispatch::JobList;
use ferry_daemon::mount::Mounted;
use ferry_daemon::Agent;
use ferry_engine::location::local::LocalLocation;
use ferry_engine::options::PreserveDevices;
use ferry_model::api::{AgentRecord, LocationSpec, Refusal};
use ferry_secure as secure;
use ferry_wire::activation::{Issued, Register, Registered};
use ferry_wire::ca::{self, Ca};
use ferry_wire::proto;
use ferry_wire::tls::{self, Peer};

/// Request bodies: an fs operation carries at most a 1 MiB chunk (plus its
/// names); the activation flow and JSON routes carry a few KiB.
pub const FS_BODY_MAX: usize = 2 << 20;
pub const PUBLIC_BODY_MAX: usize = 16 << 10;
pub const AGENT_JSON_BODY_MAX: usize = 256 << 10;
pub const OPERATOR_BODY_MAX: usize = 1 << 20;
/// How long a request may take, body included, before it is answered 503
/// (an agent sends an fs operation again; its first answer is kept).
pub const FS_BUDGET: Duration = Duration::from_secs(60);
pub const REQUEST_BUDGET: Duration = Duration::from_secs(30);
/// Blocking file-system operations in flight, in all and per agent (an
/// agent uses up to 64 connections). Both stay well under tokio's 512
/// blocking threads, so operations stuck on a slow disk never leave the
/// rest of the hub without threads.
pub const FS_IN_FLIGHT: usize = 192;
pub const FS_IN_FLIGHT_PER_AGENT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HubStartError {
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    State(#[from] ActivationError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A file or directory of the hub's failed `ferry_secure`'s checks.
    #[error("{what}: {source}")]
    Trust {
        what: String,
        #[source]
        source: secure::TrustError,
    },
}

/// Answers to batches that change something, by (agent, batch id): a
/// batch sent again after a lost answer waits for, and gets, the first
/// answer.
#[derive(Default)]
struct Answers {
    by_batch: HashMap<(String, u64), (Instant, Answer)>,
    pruned: Option<Instant>,
}

/// An answer to come (`None` while the batch runs).
type Answer = watch::Receiver<Option<Bytes>>;

/// Answers are kept longer than an agent keeps sending a request again.
const ANSWERS_KEPT: Duration = Duration::from_secs(240);

pub struct Hub {
    pub ca: Ca,
    pub state: Mutex<HubState>,
    token_hash: [u8; 32],
    pub agent: Arc<Agent>,
    /// The daemon's API as the binary composed it, served to operators.
    api: Router,
    answers: Mutex<Answers>,
    /// NFS and EFS locations of the hub, mounted at first use.
    mounts: Mutex<HashMap<String, Mounted>>,
    fs_slots: FsSlots,
}

/// Permits for blocking file-system work: one from the agent's own
/// semaphore, then one from the shared one, held until the work ends
/// (even after its request gave up waiting).
struct FsSlots {
    all: Arc<Semaphore>,
    per_agent: usize,
    by_agent: Mutex<HashMap<String, Arc<Semaphore>>>,
}

struct FsPermit {
    _agent: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl FsSlots {
    fn new(all: usize, per_agent: usize) -> FsSlots {
        FsSlots {
            all: Arc::new(Semaphore::new(all)),
            per_agent,
            by_agent: Mutex::default(),
        }
    }

    async fn acquire(&self, agent: &str) -> FsPermit {
        let mine = self
            .by_agent
            .lock()
            .unwrap()
            .entry(agent.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_agent)))
            .clone();
        let agent = mine.acquire_owned().await.expect("never closed");
        let all = self
            .all
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        FsPermit {
            _agent: agent,
            _all: all,
        }
    }
}

/// Who a request is from, once authenticated.
#[derive(Clone, Debug)]
pub struct AgentId(pub String);

fn hash(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The operator token: read from `file`, or made there at first start.
fn operator_token(file: &Path) -> Result<String, HubStartError> {
    let what = |verb: &str| format!("{verb} the operator token file {}", file.display());
    let make = || {
        if let Some(dir) = file.parent() {
            secure::trusted_dir(dir).map_err(|source| HubStartError::Trust {
                what: what("make the directory of"),
                source,
            })?;
        }
        let token = ca::random_hex(24);
        ca::write_file(file, format!("{token}\n").as_bytes(), true).map_err(|source| {
            HubStartError::Io {
                what: what("write"),
                source,
            }
        })?;
        Ok(token)
    };
    // Ours, not a link, nobody else's to read or write: whoever could
    // replace it would own the hub's API.
    match secure::read_secret(file, 4096) {
        Ok(t) => match String::from_utf8_lossy(&t).trim() {
            "" => make(),
            t => Ok(t.to_string()),
        },
        Err(secure::TrustError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            make()
        }
        Err(source) => Err(HubStartError::Trust {
            what: what("read"),
            source,
        }),
    }
}

impl Hub {
    /// Loads (or makes) the CA, the agents' records and the operator token.
    /// `api` is the daemon's API (its [`ferry_daemon::api::router`] and
    /// the routes the binary merges into it), which operators reach
    /// through the hub.
    pub fn open(
        agent: Arc<Agent>,
        api: Router,
        dir: &Path,
        names: &[String],
        token_file: &Path,
        token: Option<&str>,
        key_lifetime: Duration,
    ) -> Result<Arc<Hub>, HubStartError> {
        let mut names = names.to_vec();
        for n in ["localhost", "127.0.0.1", "::1"] {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
        let ca = Ca::load_or_create(&dir.join("ca"), &names)?;
        let state = HubState::open(dir, key_lifetime)?;
        let token = match token {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => operator_token(token_file)?,
        };
        Ok(Arc::new(Hub {
            ca,
            state: Mutex::new(state),
            token_hash: hash(&token),
            agent,
            api,
            answers: Mutex::new(Answers::default()),
            mounts: Mutex::default(),
            fs_slots: FsSlots::new(FS_IN_FLIGHT, FS_IN_FLIGHT_PER_AGENT),
        }))
    }

    /// Where a location of the hub is: its path, or where its NFS export or
    /// EFS file system is mounted (once, at first use, until the hub stops).
    fn location_root(&self, id: &str, spec: &LocationSpec) -> std::io::Result<PathBuf> {
        match spec {
            LocationSpec::Local { path, .. } => return Ok(PathBuf::from(path)),
            s if s.is_mounted() => {}
            _ => return Err(std::io::ErrorKind::Unsupported.into()),
        }
        let mut mounts = self.mounts.lock().unwrap();
        if let Some(m) = mounts.get(id) {
            return Ok(m.path.clone());
        }
        let point = self.agent.mounts_dir.join(format!("hub-{id}"));
        let mounted = self
            .agent
            .mount(spec, point)
            .map_err(std::io::Error::other)?;
        let path = mounted.path.clone();
        mounts.insert(id.to_string(), mounted);
        Ok(path)
    }

    /// Serves the hub's API on `addr` until the process ends.
    pub async fn serve(self: Arc<Hub>, addr: std::net::SocketAddr) -> Result<(), HubStartError> {
        let config = tls::server_config(
            &self.ca.cert_der,
            self.ca.server_cert.clone(),
            ca::key_der(&self.ca.server_key),
        )?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HubStartError::Io {
                what: format!("listen on {addr}"),
                source,
            })?;
        let limits = tls::ConnLimits::for_this_process();
        self.agent.events.info(&format!(
            "hub: HTTPS on {addr}; CA fingerprint {}; at most {} connections ({} per address)",
            self.ca.fingerprint(),
            limits.max_connections,
            limits.max_per_address
        ));
        tls::serve_tls(tcp, config, router(self), tls::Connections::new(limits)).await;
        Ok(())
    }
}

pub fn router(hub: Arc<Hub>) -> Router {
    let public = Router::new()
        .route("/activation/v1/register", post(register))
        .route("/activation/v1/certificate", get(certificate))
        .route("/activate", get(page).post(page_confirm))
        .with_state(hub.clone())
        .layer(DefaultBodyLimit::max(PUBLIC_BODY_MAX))
        .layer(middleware::from_fn_with_state(REQUEST_BUDGET, budget));
    let operator = hub
        .api
        .clone()
        .merge(
            Router::new()
                .route("/v1/agents", get(list_agents))
                .route("/v1/agents/activate", post(activate))
                .with_state(hub.clone()),
        )
        .layer(middleware::from_fn_with_state(hub.clone(), operator_auth))
        .layer(DefaultBodyLimit::max(OPERATOR_BODY_MAX))
        .layer(middleware::from_fn_with_state(REQUEST_BUDGET, budget));
    let agents = Router::new()
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/tasks", get(agent_tasks))
        .route(
            "/agent/v1/executions/{execution}/report",
            post(agent_report),
        )
        .route("/agent/v1/executions/{execution}/units", post(agent_units))
        .layer(middleware::from_fn_with_state(hub.clone(), agent_auth))
        .layer(DefaultBodyLimit::max(AGENT_JSON_BODY_MAX))
        .layer(middleware::from_fn_with_state(REQUEST_BUDGET, budget))
        .with_state(hub.clone());
    // The fs route reads its body itself, after the authorization.
    let fs = Router::new()
        .route("/agent/v1/fs/{location}/batch", post(fs_batch))
        .layer(middleware::from_fn_with_state(hub.clone(), agent_auth))
        .layer(middleware::from_fn_with_state(FS_BUDGET, budget))
        .with_state(hub);
    public.merge(operator).merge(agents).merge(fs)
}

/// A request not answered within `limit` (its body read included) is
/// answered 503, and its handler dropped.
async fn budget(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Timeout",
            format!("the hub did not answer within {limit:?}; send the request again later"),
        ),
    }
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(Refusal {
            error: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// Operators: `Authorization: Bearer TOKEN`, or a client certificate the
/// hub made for an operator.
async fn operator_auth(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let by_cert = peer
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("operator:"));
    let by_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| hash(t.trim()) == hub.token_hash);
    if by_cert || by_token {
        next.run(req).await
    } else {
        refuse(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "the hub's API needs the operator token (Authorization: Bearer ...) or an operator certificate",
        )
    }
}

/// Agents: the certificate of an activated agent.
async fn agent_auth(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = peer.cert.as_deref().and_then(|fp| {
        let mut state = hub.state.lock().unwrap();
        let id = state.agent_by_cert(fp)?.to_string();
        state.touch(&id);
        Some(id)
    });
    match id {
        Some(id) => {
            req.extensions_mut().insert(AgentId(id));
            next.run(req).await
        }
        None => refuse(
            StatusCode::FORBIDDEN,
            "NotActivated",
            "only an activated agent (with the certificate the hub signed) may do this",
        ),
    }
}

fn activation_status(e: &ActivationError) -> StatusCode {
    match e {
        ActivationError::UnknownKey(_) => StatusCode::NOT_FOUND,
        ActivationError::Used(_) => StatusCode::CONFLICT,
        ActivationError::Expired(_) => StatusCode::GONE,
        ActivationError::BadRequest(_) | ActivationError::BadName => StatusCode::BAD_REQUEST,
        ActivationError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ActivationError::TooManyPending(_)
        | ActivationError::TooManyFromAddress(_)
        | ActivationError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn activation_refusal(e: ActivationError) -> Response {
    let code = match e {
        ActivationError::UnknownKey(_) => "UnknownActivationKey",
        ActivationError::Used(_) => "ActivationKeyUsed",
        ActivationError::Expired(_) => "ActivationKeyExpired",
        ActivationError::BadRequest(_) | ActivationError::BadName => "InvalidRequest",
        ActivationError::TooLarge(_) => "RequestTooLarge",
        ActivationError::TooManyPending(_)
        | ActivationError::TooManyFromAddress(_)
        | ActivationError::RateLimited => "TooManyRequests",
        _ => "InternalError",
    };
    refuse(activation_status(&e), code, e.to_string())
}

async fn register(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    bytes: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Register>(&bytes) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "give Csr and Hostname as JSON",
        );
    };
    let key = hub
        .state
        .lock()
        .unwrap()
        .register(&body.csr, &body.hostname, peer.addr.ip());
    match key {
        Ok(key) => {
            hub.agent.events.info(&format!(
                "hub: activation requested by {:?}, key {key}",
                body.hostname
            ));
            Json(Registered {
                activation_key: key,
            })
            .into_response()
        }
        Err(e) => activation_refusal(e),
    }
}

#[derive(Deserialize)]
struct KeyQuery {
    #[serde(rename = "activationKey")]
    activation_key: String,
}

async fn certificate(State(hub): State<Arc<Hub>>, Query(q): Query<KeyQuery>) -> Response {
    match hub.state.lock().unwrap().certificate(&q.activation_key) {
        Ok(Some((agent_id, certificate))) => Json(Issued {
            agent_id,
            certificate,
        })
        .into_response(),
        Ok(None) => (
            StatusCode::ACCEPTED,
            Json(json!({"Message": "waiting for an operator to confirm the key"})),
        )
            .into_response(),
        Err(e) => activation_refusal(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ActivateBody {
    activation_key: String,
    agent_name: String,
}

fn confirm(hub: &Hub, key: &str, name: &str) -> Result<AgentRecord, ActivationError> {
    let record = hub.state.lock().unwrap().activate(&hub.ca, key, name)?;
    hub.agent.events.info(&format!(
        "hub: agent {} activated as {:?}",
        record.agent_id, record.name
    ));
    Ok(record)
}

async fn activate(State(hub): State<Arc<Hub>>, bytes: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<ActivateBody>(&bytes) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "give ActivationKey and AgentName as JSON",
        );
    };
    match confirm(&hub, &body.activation_key, &body.agent_name) {
        Ok(r) => Json(r).into_response(),
        Err(e) => activation_refusal(e),
    }
}

async fn list_agents(State(hub): State<Arc<Hub>>) -> Response {
    Json(hub.state.lock().unwrap().agents()).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The activation page a browser lands on from the agent's redirect.
async fn page(Query(q): Query<HashMap<String, String>>) -> Html<String> {
    let key = escape(q.get("activationKey").map(String::as_str).unwrap_or(""));
    // An agent that could not register sends the operator here with why.
    let failed = match q.get("errorType") {
        Some(t) => format!(
            "<p role=alert>The agent could not register: {} ({})</p>",
            escape(q.get("errorMessage").map(String::as_str).unwrap_or("")),
            escape(t)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><title>Ferry hub: activate an agent</title>\
         <h1>Activate an agent</h1>{failed}\
         <form method=post action=/activate>\
         <p>Activation key <input name=activationKey value=\"{key}\" size=30>\
         <p>Agent name <input name=name required>\
         <p>Operator token <input name=token type=password required>\
         <p><button>Activate</button></form>\
         <p>Or: <code>ferry agent activate {key} --name NAME</code>"
    ))
}

#[derive(Deserialize)]
struct PageForm {
    #[serde(rename = "activationKey")]
    activation_key: String,
    name: String,
    token: String,
}

async fn page_confirm(State(hub): State<Arc<Hub>>, Form(f): Form<PageForm>) -> Response {
    if hash(f.token.trim()) != hub.token_hash {
        return (
            StatusCode::UNAUTHORIZED,
            Html("<!doctype html><p>The operator token is not right.".to_string()),
        )
            .into_response();
    }
    match confirm(&hub, &f.activation_key, &f.name) {
        Ok(r) => Html(format!(
            "<!doctype html><p>Agent {} ({}) is activated.",
            escape(&r.name),
            escape(&r.agent_id)
        ))
        .into_response(),
        Err(e) => (
            activation_status(&e),
            Html(format!("<!doctype html><p>{}", escape(&e.to_string()))),
        )
            .into_response(),
    }
}

async fn heartbeat(Extension(id): Extension<AgentId>) -> Response {
    Json(json!({"AgentId": id.0})).into_response()
}

/// `GET /agent/v1/tasks?wait=SECONDS`: an agent with nothing to run asks
/// the hub to answer once there is something, or after `wait` seconds (at
/// most [`ferry_daemon::dispatch::JOBS_WAIT_MAX`]).
#[derive(Deserialize)]
struct TasksAsk {
    wait: Option<u64>,
}

/// Executions the hub gives this agent to run (see [`ferry_daemon::dispatch`]).
async fn agent_tasks(
    State(hub): State<Arc<Hub>>,
    Extension(id): Extension<AgentId>,
    Query(ask): Query<TasksAsk>,
) -> Response {
    let wait = Duration::from_secs(ask.wait.unwrap_or(0));
    let jobs = hub.agent.board.wait_for_jobs(&id.0, wait).await;
    Json(JobList {
        agent_id: id.0,
        executions: jobs,
    })
    .into_response()
}

async fn agent_report(
    State(hub): State<Arc<Hub>>,
    Extension(id): Extension<AgentId>,
    UrlPath(execution): UrlPath<String>,
    body: Bytes,
) -> Response {
    let report: ferry_daemon::dispatch::Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
    match hub.agent.board.report(&id.0, &execution, report) {
        Some(answer) => Json(answer).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            "ExecutionNotFound",
            format!("the hub gave {} no execution {execution}", id.0),
        ),
    }
}

/// Work units of an execution several agents share: what the agent found
/// and did, and units leased to it (`ferry_daemon::dispatch::Board::units`).
async fn agent_units(
    State(hub): State<Arc<Hub>>,
    Extension(id): Extension<AgentId>,
    UrlPath(execution): UrlPath<String>,
    body: Bytes,
) -> Response {
    use ferry_daemon::dispatch::UnitsRefused;
    let request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
    match hub
        .agent
        .board
        .wait_for_units(&id.0, &execution, request)
        .await
    {
        Ok(answer) => Json(answer).into_response(),
        Err(e @ UnitsRefused::NoSuchJob(..)) => {
            refuse(StatusCode::NOT_FOUND, "ExecutionNotFound", e.to_string())
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, "InvalidUnit", e.to_string()),
    }
}

/// Whether an agent may make special files (devices, FIFOs, sockets,
/// set-id files) with this job on this location: the task asked for them
/// and the hub's location allows them.
fn special_files_allowed(job: &ferry_daemon::dispatch::Job, spec: &LocationSpec) -> bool {
    job.options.preserve_devices == PreserveDevices::Preserve && spec.allows_special_files()
}

/// How long the hub spends on one batch; what is left is answered as not
/// done (the agent sends it again), well before [`FS_BUDGET`] ends.
pub const BATCH_BUDGET: Duration = Duration::from_secs(20);

/// A batch of one lane's operations (`POST /agent/v1/fs/{location}/batch`),
/// done in order on one blocking thread; a batch that changes the location
/// is done once per batch id, and its answer kept for a retry.
async fn fs_batch(
    State(hub): State<Arc<Hub>>,
    Extension(id): Extension<AgentId>,
    UrlPath(location): UrlPath<String>,
    req: Request,
) -> Response {
    let resent = req.headers().contains_key(proto::RESENT_HEADER);
    // Before anything else (the body, the store, a mount): is this agent
    // running an execution the hub gave it, writing to this location?
    let Some(job) = hub.agent.board.grant(&id.0, &location) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "LocationNotGranted",
            format!(
                "the agent {} runs no execution of the hub that writes to {location}; \
                 an agent reaches a location of the hub only while the hub has it run such an execution",
                id.0
            ),
        );
    };
    let body = match axum::body::to_bytes(req.into_body(), FS_BODY_MAX).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "InvalidRequest",
                format!("the request body: {e} (at most {FS_BODY_MAX} bytes)"),
            )
        }
    };
    let batch: proto::Batch = match postcard::from_bytes(&body) {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
    // All of it is checked before any of it is done.
    if let Err(e) = batch.validate() {
        return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string());
    }
    let spec = match hub.agent.store.lock().unwrap().location(&location) {
        Ok(Some(l)) => l.spec,
        _ => {
            return refuse(
                StatusCode::NOT_FOUND,
                "LocationNotFound",
                format!("the hub has no location {location}"),
            )
        }
    };
    if !(spec.is_mounted() || matches!(spec, LocationSpec::Local { .. })) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidLocation",
            format!("{location} is not a local, NFS or EFS location of the hub"),
        );
    }
    let policy = super::fs::Policy {
        special_files: special_files_allowed(&job, &spec),
    };
    let h = hub.clone();
    let (batch_id, changes) = (batch.batch_id, batch.changes());
    let run = move |_permit: FsPermit| {
        let loc = h
            .location_root(&location, &spec)
            .and_then(|root| LocalLocation::open(&root))
            .map_err(|e| proto::WireError::from(&e));
        let answers: proto::BatchResponse = match loc {
            Ok(loc) => super::fs::execute_batch(&loc, batch.ops, &policy, BATCH_BUDGET, resent),
            Err(e) => batch.ops.iter().map(|_| Err(e.clone())).collect(),
        };
        Bytes::from(postcard::to_stdvec(&answers).expect("encodable"))
    };
    if !changes {
        let permit = hub.fs_slots.acquire(&id.0).await;
        return match tokio::task::spawn_blocking(move || run(permit)).await {
            Ok(answer) => {
                ([(header::CONTENT_TYPE, "application/x-postcard")], answer).into_response()
            }
            Err(e) => refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            ),
        };
    }
    let key = (id.0.clone(), batch_id);
    let existing = |hub: &Hub| -> Option<Answer> {
        let mut answers = hub.answers.lock().unwrap();
        if answers
            .pruned
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            answers
                .by_batch
                .retain(|_, (t, _)| t.elapsed() < ANSWERS_KEPT);
            answers.pruned = Some(Instant::now());
        }
        answers.by_batch.get(&key).map(|(_, rx)| rx.clone())
    };
    let mut rx = match existing(&hub) {
        Some(rx) => rx,
        None => {
            // Waiting for a slot starts nothing: a request that gives up
            // here leaves no answer behind, and its retry starts afresh.
            let permit = hub.fs_slots.acquire(&id.0).await;
            let mut answers = hub.answers.lock().unwrap();
            match answers.by_batch.get(&key) {
                Some((_, rx)) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    answers.by_batch.insert(key, (Instant::now(), rx.clone()));
                    // Done to the end even if this connection breaks meanwhile.
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(Some(run(permit)));
                    });
                    rx
                }
            }
        }
    };
    let answer = match rx.wait_for(Option::is_some).await {
        Ok(a) => a.clone().expect("some"),
        Err(_) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the operation ended without an answer",
            )
        }
    };
    ([(header::CONTENT_TYPE, "application/x-postcard")], answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_engine::Options;
    use std::future::Future;

    #[test]
    fn the_activation_page_shows_why_a_registration_failed_escaped() {
        let q: HashMap<String, String> = [
            ("activationKey", "K\"><script>x()</script>"),
            ("errorType", "HubUnreachable<b>"),
            (
                "errorMessage",
                "cannot reach <img src=x onerror=alert(1)> & more",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let Html(html) = rt.block_on(page(Query(q)));
        assert!(
            html.contains("cannot reach &lt;img src=x onerror=alert(1)&gt; &amp; more (HubUnreachable&lt;b&gt;)"),
            "{html}"
        );
        assert!(html.contains("value=\"K&quot;&gt;&lt;script&gt;"), "{html}");
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
    }

    #[test]
    fn special_files_need_the_task_to_ask_and_the_location_to_allow() {
        let job = |preserve: PreserveDevices| ferry_daemon::dispatch::Job {
            execution_id: "exec-1".into(),
            task_id: "task-1".into(),
            agent_id: "agent-1".into(),
            source: LocationSpec::local("/src"),
            destination_location_id: "loc-1".into(),
            destination: None,
            compress: false,
            connections: None,
            options: Options {
                preserve_devices: preserve,
                ..Options::default()
            },
            cancel: false,
            shared: false,
        };
        let allowing = LocationSpec::Local {
            path: "/dst".into(),
            allow_special_files: true,
        };
        let plain = LocationSpec::local("/dst");
        assert!(special_files_allowed(
            &job(PreserveDevices::Preserve),
            &allowing
        ));
        assert!(!special_files_allowed(
            &job(PreserveDevices::None),
            &allowing
        ));
        assert!(!special_files_allowed(
            &job(PreserveDevices::Preserve),
            &plain
        ));
    }

    #[test]
    fn a_request_over_its_budget_is_answered_503() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A handler that would take ten minutes (a body that never
            // comes is the same to the budget).
            let mut app = Router::new()
                .route(
                    "/",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        "late"
                    }),
                )
                .layer(middleware::from_fn_with_state(
                    Duration::from_millis(50),
                    budget,
                ));
            let req = axum::http::Request::new(axum::body::Body::empty());
            let resp = tower_service::Service::call(&mut app, req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        });
    }

    /// The slot, if it is free now (a free semaphore answers at first poll).
    fn now(slots: &FsSlots, agent: &str) -> Option<FsPermit> {
        let mut f = std::pin::pin!(slots.acquire(agent));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(p) => Some(p),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn one_agent_cannot_take_every_file_system_slot() {
        let slots = FsSlots::new(3, 2);
        let held = [now(&slots, "a").unwrap(), now(&slots, "a").unwrap()];
        // "a" is at its cap; "b" still gets in.
        assert!(now(&slots, "a").is_none(), "a third slot for one agent");
        let b = now(&slots, "b").unwrap();
        // The total is reached: "c" waits until one is given back.
        assert!(now(&slots, "c").is_none(), "over the total");
        drop(b);
        assert!(now(&slots, "c").is_some());
        drop(held);
        assert!(now(&slots, "a").is_some());
    }
}
