//! The hub's HTTPS API, on one port:
//!
//! | who | routes |
//! | --- | --- |
//! | anyone (the activation flow) | `POST /activation/v1/register`, `GET /activation/v1/certificate`, `GET`/`POST /activate` (the page) |
//! | operators (bearer token or operator certificate) | `/v1/agents`, `/v1/agents/activate`, and the daemon's API (`/v1/locations`, `/v1/tasks`, `/v1/executions`, `/metrics`) |
//! | activated agents (their certificate) | `POST /agent/v1/heartbeat`, `GET /agent/v1/tasks`, `POST /agent/v1/executions/{id}/report`, `POST /agent/v1/fs/{location}` |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::ca::{self, Ca};
use super::proto;
use super::state::{ActivationError, HubState};
use super::tls::{self, Peer};
use crate::daemon::model::LocationSpec;
use crate::daemon::{api, nfs, secure, Agent};
use crate::location::local::LocalLocation;

#[derive(Debug, thiserror::Error)]
pub enum HubStartError {
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    State(#[from] ActivationError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the operator token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Answers to file-system operations that change something, by (agent,
/// operation id): a request sent again after a lost answer waits for, and
/// gets, the first answer.
#[derive(Default)]
struct Answers {
    by_op: HashMap<(String, u64), (Instant, Answer)>,
    pruned: Option<Instant>,
}

/// An answer to come (`None` while the operation runs).
type Answer = watch::Receiver<Option<Bytes>>;

/// Answers are kept longer than an agent keeps sending a request again.
const ANSWERS_KEPT: Duration = Duration::from_secs(240);

pub struct Hub {
    pub ca: Ca,
    pub state: Mutex<HubState>,
    token_hash: [u8; 32],
    pub agent: Arc<Agent>,
    answers: Mutex<Answers>,
    /// NFS locations of the hub, mounted at first use.
    mounts: Mutex<HashMap<String, PathBuf>>,
}

/// Who a request is from, once authenticated.
#[derive(Clone, Debug)]
pub struct AgentId(pub String);

fn hash(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The operator token: read from `file`, or made there at first start.
fn operator_token(file: &Path) -> Result<String, HubStartError> {
    let err = |source| HubStartError::Token {
        path: file.display().to_string(),
        source,
    };
    let make = || {
        if let Some(dir) = file.parent() {
            secure::trusted_dir(dir).map_err(|e| err(e.into()))?;
        }
        let token = ca::random_hex(24);
        ca::write_file(file, format!("{token}\n").as_bytes(), true).map_err(err)?;
        Ok(token)
    };
    // Ours, not a link, nobody else's to read or write: whoever could
    // replace it would own the hub's API.
    match secure::read_secret(file, 4096) {
        Ok(t) => match String::from_utf8_lossy(&t).trim() {
            "" => make(),
            t => Ok(t.to_string()),
        },
        Err(e) => match std::io::Error::from(e) {
            e if e.kind() == std::io::ErrorKind::NotFound => make(),
            e => Err(err(e)),
        },
    }
}

impl Hub {
    /// Loads (or makes) the CA, the agents' records and the operator token.
    pub fn open(
        agent: Arc<Agent>,
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
            answers: Mutex::new(Answers::default()),
            mounts: Mutex::default(),
        }))
    }

    /// Where a location of the hub is: its path, or where its NFS export
    /// is mounted (once, at first use, until the hub stops).
    fn location_root(&self, id: &str, spec: &LocationSpec) -> std::io::Result<PathBuf> {
        let (server, export, subdirectory, version, mount_options) = match spec {
            LocationSpec::Local { path } => return Ok(PathBuf::from(path)),
            LocationSpec::Nfs {
                server,
                export,
                subdirectory,
                version,
                mount_options,
            } => (server, export, subdirectory, version, mount_options),
            _ => return Err(std::io::ErrorKind::Unsupported.into()),
        };
        let mut mounts = self.mounts.lock().unwrap();
        if let Some(p) = mounts.get(id) {
            return Ok(p.clone());
        }
        let point = self.agent.mounts_dir.join(format!("hub-{id}"));
        let vers = nfs::mount(
            server,
            export,
            subdirectory.as_deref(),
            *version,
            mount_options.as_deref(),
            &point,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.agent.events.info(&format!(
            "hub: mounted {} (NFS {vers}) on {}",
            spec.uri(),
            point.display()
        ));
        mounts.insert(id.to_string(), point.clone());
        Ok(point)
    }

    /// Serves the hub's API on `addr` until the process ends.
    pub async fn serve(self: Arc<Hub>, addr: std::net::SocketAddr) -> Result<(), HubStartError> {
        let listen_err = |source| HubStartError::Listen {
            addr: addr.to_string(),
            source,
        };
        let config = tls::server_config(
            &self.ca.cert_der,
            self.ca.server_cert.clone(),
            ca::key_der(&self.ca.server_key),
        )?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(listen_err)?;
        let listener = tls::TlsListener::new(tcp, config).map_err(listen_err)?;
        self.agent.events.info(&format!(
            "hub: HTTPS on {addr}; CA fingerprint {}",
            self.ca.fingerprint()
        ));
        axum::serve(
            listener,
            router(self).into_make_service_with_connect_info::<Peer>(),
        )
        .await
        .map_err(listen_err)
    }
}

pub fn router(hub: Arc<Hub>) -> Router {
    let public = Router::new()
        .route("/activation/v1/register", post(register))
        .route("/activation/v1/certificate", get(certificate))
        .route("/activate", get(page).post(page_confirm))
        .with_state(hub.clone());
    let operator = api::router(hub.agent.clone())
        .merge(
            Router::new()
                .route("/v1/agents", get(list_agents))
                .route("/v1/agents/activate", post(activate))
                .with_state(hub.clone()),
        )
        .layer(middleware::from_fn_with_state(hub.clone(), operator_auth));
    let agents = Router::new()
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/tasks", get(agent_tasks))
        .route(
            "/agent/v1/executions/{execution}/report",
            post(agent_report),
        )
        .route("/agent/v1/fs/{location}", post(fs_op))
        .layer(middleware::from_fn_with_state(hub.clone(), agent_auth))
        .with_state(hub);
    public.merge(operator).merge(agents)
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"Error": code, "Message": message.into()})),
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
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn activation_refusal(e: ActivationError) -> Response {
    let code = match e {
        ActivationError::UnknownKey(_) => "UnknownActivationKey",
        ActivationError::Used(_) => "ActivationKeyUsed",
        ActivationError::Expired(_) => "ActivationKeyExpired",
        ActivationError::BadRequest(_) | ActivationError::BadName => "InvalidRequest",
        _ => "InternalError",
    };
    refuse(activation_status(&e), code, e.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterBody {
    csr: String,
    #[serde(default)]
    hostname: String,
}

async fn register(State(hub): State<Arc<Hub>>, bytes: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<RegisterBody>(&bytes) else {
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
        .register(&body.csr, &body.hostname);
    match key {
        Ok(key) => {
            hub.agent.events.info(&format!(
                "hub: activation requested by {:?}, key {key}",
                body.hostname
            ));
            Json(json!({"ActivationKey": key})).into_response()
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
        Ok(Some((agent_id, cert))) => {
            Json(json!({"AgentId": agent_id, "Certificate": cert})).into_response()
        }
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

fn confirm(hub: &Hub, key: &str, name: &str) -> Result<super::state::AgentRecord, ActivationError> {
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
    Json(json!({"Agents": hub.state.lock().unwrap().agents()})).into_response()
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
    Html(format!(
        "<!doctype html><title>Ferry hub: activate an agent</title>\
         <h1>Activate an agent</h1>\
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

/// Executions the hub gives this agent to run (see [`super::dispatch`]).
async fn agent_tasks(State(hub): State<Arc<Hub>>, Extension(id): Extension<AgentId>) -> Response {
    let jobs = hub.agent.board.jobs_for(&id.0);
    Json(json!({"AgentId": id.0, "Executions": jobs})).into_response()
}

async fn agent_report(
    State(hub): State<Arc<Hub>>,
    Extension(id): Extension<AgentId>,
    UrlPath(execution): UrlPath<String>,
    body: Bytes,
) -> Response {
    let report: super::dispatch::Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
    match hub.agent.board.report(&id.0, &execution, report) {
        Some(cancel) => Json(json!({"Cancel": cancel})).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            "ExecutionNotFound",
            format!("the hub gave {} no execution {execution}", id.0),
        ),
    }
}

async fn fs_op(
    State(hub): State<Arc<Hub>>,
    Extension(id): Extension<AgentId>,
    UrlPath(location): UrlPath<String>,
    body: Bytes,
) -> Response {
    let req: proto::Request = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
    };
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
    if !matches!(spec, LocationSpec::Local { .. } | LocationSpec::Nfs { .. }) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidLocation",
            format!("{location} is not a local or NFS location of the hub"),
        );
    }
    let h = hub.clone();
    let run = move |op: proto::Op| {
        let resp = match h
            .location_root(&location, &spec)
            .and_then(|root| LocalLocation::open(&root))
        {
            Ok(loc) => super::fs::execute(&loc, op, &super::fs::Policy::default()),
            Err(e) => Err(proto::WireError::from(&e)),
        };
        Bytes::from(postcard::to_stdvec(&resp).expect("encodable"))
    };
    if !req.op.changes() {
        return match tokio::task::spawn_blocking(move || run(req.op)).await {
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
    let key = (id.0, req.op_id);
    let mut rx = {
        let mut answers = hub.answers.lock().unwrap();
        if answers
            .pruned
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            answers.by_op.retain(|_, (t, _)| t.elapsed() < ANSWERS_KEPT);
            answers.pruned = Some(Instant::now());
        }
        match answers.by_op.get(&key) {
            Some((_, rx)) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                answers.by_op.insert(key, (Instant::now(), rx.clone()));
                // Done to the end even if this connection breaks meanwhile.
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send(Some(run(req.op)));
                });
                rx
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
