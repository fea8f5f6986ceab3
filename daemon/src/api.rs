// SPDX-License-Identifier: MIT
//! The HTTP API (JSON; described in `agent/openapi.yaml`). Requests that
//! cannot be honoured are refused with a status, a DataSync-style error code
//! and a message that says what to change, and nothing is stored.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::agent::{Agent, QueueError};
use super::schedule;
use super::store::StoreError;
use ferry_engine::Options;
use ferry_model::api::{self as records, LocationSpec, Task};

/// One line per route: the router is built from it, and the OpenAPI test
/// (in the `ferry-agent` binary, which also serves the link's activation
/// routes, `ferry_uplink::link::ROUTES`) checks every line against
/// `agent/openapi.yaml`.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:ident),+ $(,)?) => {
        /// (method, path) of every route.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),+];

        pub fn router(agent: Arc<Agent>) -> Router {
            Router::new()
                $(.route($path, axum::routing::$method($handler)))+
                .with_state(agent)
        }
    };
}

routes! {
    get "/v1/locations" => list_locations,
    post "/v1/locations" => create_location,
    get "/v1/locations/{location_id}" => describe_location,
    delete "/v1/locations/{location_id}" => delete_location,
    get "/v1/tasks" => list_tasks,
    post "/v1/tasks" => create_task,
    get "/v1/tasks/{task}" => describe_task,
    patch "/v1/tasks/{task}" => update_task,
    delete "/v1/tasks/{task}" => delete_task,
    post "/v1/tasks/{task}/start" => start_task,
    get "/v1/executions" => list_executions,
    get "/v1/executions/{execution_id}" => describe_execution,
    patch "/v1/executions/{execution_id}" => update_execution,
    post "/v1/executions/{execution_id}/cancel" => cancel_execution,
    get "/v1/executions/{execution_id}/report" => execution_report,
    get "/metrics" => metrics,
}

type Shared = State<Arc<Agent>>;

/// A refused request: HTTP status, error code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code,
        message: message.into(),
    }
}

pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code,
        message: message.into(),
    }
}

pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        code,
        message: message.into(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError",
            message: e.to_string(),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Store(e) => e.into(),
            busy @ QueueError::Busy(_) => conflict("TaskQueueingDisabled", busy.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(records::Refusal {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

pub type Reply = Result<Response, ApiError>;

pub fn ok(value: impl serde::Serialize) -> Reply {
    Ok(Json(value).into_response())
}

/// Parses a JSON body with serde's message (which names the field) on error.
pub fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| bad_request("InvalidRequest", format!("the request body: {e}")))
}

// ---- locations

async fn list_locations(State(agent): Shared) -> Reply {
    ok(records::LocationList {
        locations: agent.store.lock().unwrap().locations()?,
    })
}

fn check_location(spec: &LocationSpec) -> Result<(), ApiError> {
    super::check::location(spec).map_err(|m| bad_request("InvalidLocation", m))
}

async fn create_location(State(agent): Shared, bytes: Bytes) -> Reply {
    let spec: LocationSpec = body(&bytes)?;
    check_location(&spec)?;
    let loc = agent.store.lock().unwrap().insert_location(&spec)?;
    Ok((StatusCode::CREATED, Json(loc)).into_response())
}

async fn describe_location(State(agent): Shared, Path(id): Path<String>) -> Reply {
    match agent.store.lock().unwrap().location(&id)? {
        Some(l) => ok(l),
        None => Err(unknown_location(&id)),
    }
}

fn unknown_location(id: &str) -> ApiError {
    not_found(
        "LocationNotFound",
        format!("there is no location {id} (see `ferry location list`)"),
    )
}

async fn delete_location(State(agent): Shared, Path(id): Path<String>) -> Reply {
    let mut store = agent.store.lock().unwrap();
    if store.location(&id)?.is_none() {
        return Err(unknown_location(&id));
    }
    let users = store.tasks_using(&id)?;
    if !users.is_empty() {
        return Err(conflict(
            "LocationInUse",
            format!(
                "location {id} is used by task(s) {}: delete or change them first",
                users.join(", ")
            ),
        ));
    }
    store.delete_location(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- tasks

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateTask {
    name: String,
    source_location_id: String,
    destination_location_id: String,
    #[serde(default)]
    options: Map<String, Value>,
    #[serde(default)]
    schedule: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UpdateTask {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    /// An empty string removes the schedule.
    #[serde(default)]
    schedule: Option<String>,
    /// ENABLED or DISABLED (by USER).
    #[serde(default)]
    schedule_status: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StartTask {
    #[serde(default)]
    override_options: Map<String, Value>,
}

/// `base` with the options named in `changes` replaced, validated.
pub fn apply_options(base: &Options, changes: &Map<String, Value>) -> Result<Options, ApiError> {
    // as the configuration document's are checked (ferry-model)
    base.with(changes)
        .map_err(|m| bad_request("InvalidOption", m))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(bad_request(
            "InvalidName",
            "a task name is 1 to 256 printable characters",
        ));
    }
    Ok(())
}

fn check_schedule(expr: Option<&str>) -> Result<(), ApiError> {
    if let Some(expr) = expr {
        schedule::parse(expr).map_err(|m| bad_request("InvalidSchedule", m))?;
    }
    Ok(())
}

/// A task by id, or else by name.
fn find_task(agent: &Agent, key: &str) -> Result<Task, ApiError> {
    let store = agent.store.lock().unwrap();
    if let Some(t) = store.task(key)? {
        return Ok(t);
    }
    store.task_by_name(key)?.ok_or_else(|| {
        not_found(
            "TaskNotFound",
            format!("there is no task {key} (see `ferry task list`)"),
        )
    })
}

async fn list_tasks(State(agent): Shared) -> Reply {
    ok(records::TaskList {
        tasks: agent.store.lock().unwrap().tasks()?,
    })
}

async fn create_task(State(agent): Shared, bytes: Bytes) -> Reply {
    let req: CreateTask = body(&bytes)?;
    check_name(&req.name)?;
    let options = apply_options(&Options::new(), &req.options)?;
    let schedule = req.schedule.filter(|s| !s.trim().is_empty());
    check_schedule(schedule.as_deref())?;
    let store = agent.store.lock().unwrap();
    for (role, id) in [
        ("source", &req.source_location_id),
        ("destination", &req.destination_location_id),
    ] {
        match store.location(id)? {
            None => {
                return Err(bad_request(
                    "LocationNotFound",
                    format!("the {role} location {id} does not exist (see `ferry location list`)"),
                ))
            }
            Some(l) if role == "source" && matches!(l.spec, LocationSpec::Hub { .. }) => {
                return Err(bad_request(
                    "InvalidTask",
                    format!("the hub location {id} can only be a destination"),
                ))
            }
            Some(_) => {}
        }
    }
    let source_on_agent = matches!(
        store.location(&req.source_location_id)?.map(|l| l.spec),
        Some(LocationSpec::Agent { .. })
    );
    let destination_here = matches!(
        store
            .location(&req.destination_location_id)?
            .map(|l| l.spec),
        Some(LocationSpec::Local { .. } | LocationSpec::Nfs { .. } | LocationSpec::Efs { .. })
    );
    let destination_on_agent = matches!(
        store
            .location(&req.destination_location_id)?
            .map(|l| l.spec),
        Some(LocationSpec::Agent { .. })
    );
    if destination_on_agent && !source_on_agent {
        return Err(bad_request(
            "InvalidTask",
            format!(
                "the agent location {} is a destination only for a task whose source its agents reach too",
                req.destination_location_id
            ),
        ));
    }
    if source_on_agent && !destination_here && !destination_on_agent {
        return Err(bad_request(
            "InvalidTask",
            "a task from an agent's location writes to a LOCAL, NFS or EFS location of the hub, or to one its agents reach",
        ));
    }
    if req.source_location_id == req.destination_location_id {
        return Err(bad_request(
            "InvalidTask",
            "the source and the destination are the same location",
        ));
    }
    if let (Some(s), Some(d)) = (
        store.location(&req.source_location_id)?,
        store.location(&req.destination_location_id)?,
    ) {
        super::check::task(&s.spec, &d.spec).map_err(|m| bad_request("InvalidTask", m))?;
    }
    if store.task_by_name(&req.name)?.is_some() {
        return Err(conflict(
            "TaskNameTaken",
            format!("a task named {:?} already exists", req.name),
        ));
    }
    let task = Task {
        task_id: records::new_id("task"),
        name: req.name,
        source_location_id: req.source_location_id,
        destination_location_id: req.destination_location_id,
        options,
        schedule,
        schedule_details: None,
        status: "AVAILABLE".into(),
        current_task_execution_id: None,
        creation_time: String::new(),
    };
    store.insert_task(&task)?;
    let created = store.task(&task.task_id)?.unwrap_or(task);
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn describe_task(State(agent): Shared, Path(key): Path<String>) -> Reply {
    ok(find_task(&agent, &key)?)
}

async fn update_task(State(agent): Shared, Path(key): Path<String>, bytes: Bytes) -> Reply {
    let req: UpdateTask = body(&bytes)?;
    let task = find_task(&agent, &key)?;
    let name = req.name.unwrap_or(task.name.clone());
    check_name(&name)?;
    let options = match &req.options {
        Some(changes) => apply_options(&task.options, changes)?,
        None => task.options.clone(),
    };
    let schedule = match req.schedule {
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(s),
        None => task.schedule.clone(),
    };
    check_schedule(schedule.as_deref())?;
    let disable = match req.schedule_status.as_deref() {
        None => None,
        Some(records::ENABLED) => Some(false),
        Some(records::DISABLED) => Some(true),
        Some(other) => {
            return Err(bad_request(
                "InvalidScheduleStatus",
                format!("ScheduleStatus {other:?} is neither ENABLED nor DISABLED"),
            ))
        }
    };
    if disable.is_some() && schedule.is_none() {
        return Err(bad_request(
            "InvalidScheduleStatus",
            "the task has no schedule to enable or disable",
        ));
    }
    let store = agent.store.lock().unwrap();
    if name != task.name && store.task_by_name(&name)?.is_some() {
        return Err(conflict(
            "TaskNameTaken",
            format!("a task named {name:?} already exists"),
        ));
    }
    store.update_task(&task.task_id, &name, &options, schedule.as_deref())?;
    match disable {
        // DataSync's words for a schedule an operator disabled.
        Some(true) => store
            .set_schedule_status(&task.task_id, Some(("USER", "Manually disabled by user.")))?,
        Some(false) => store.set_schedule_status(&task.task_id, None)?,
        None => {}
    }
    ok(store.task(&task.task_id)?)
}

async fn delete_task(State(agent): Shared, Path(key): Path<String>) -> Reply {
    let task = find_task(&agent, &key)?;
    let mut store = agent.store.lock().unwrap();
    if !store.active_executions(Some(&task.task_id))?.is_empty() {
        return Err(conflict(
            "TaskBusy",
            format!(
                "task {} has an execution queued or running: cancel it first",
                task.task_id
            ),
        ));
    }
    let reports = store.delete_task(&task.task_id)?;
    super::agent::remove_reports(&reports);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn start_task(State(agent): Shared, Path(key): Path<String>, bytes: Bytes) -> Reply {
    let req: StartTask = body(&bytes)?;
    let task = find_task(&agent, &key)?;
    let options = apply_options(&task.options, &req.override_options)?;
    let id = agent.queue(&task, &options)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(records::ExecutionStarted {
            task_execution_id: id,
        }),
    )
        .into_response())
}

// ---- executions

async fn list_executions(
    State(agent): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let task_id = match query.get("task") {
        Some(key) => Some(find_task(&agent, key)?.task_id),
        None => None,
    };
    ok(records::ExecutionList {
        executions: agent.store.lock().unwrap().executions(task_id.as_deref())?,
    })
}

fn unknown_execution(id: &str) -> ApiError {
    not_found(
        "ExecutionNotFound",
        format!("there is no execution {id} (see `ferry execution list`)"),
    )
}

async fn describe_execution(State(agent): Shared, Path(id): Path<String>) -> Reply {
    match agent.store.lock().unwrap().execution(&id)? {
        Some(e) => ok(e),
        None => Err(unknown_execution(&id)),
    }
}

/// `PATCH /v1/executions/{id}`: DataSync's UpdateTaskExecution, whose only
/// option is BytesPerSecond.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UpdateExecution {
    options: Map<String, Value>,
}

async fn update_execution(State(agent): Shared, Path(id): Path<String>, bytes: Bytes) -> Reply {
    let req: UpdateExecution = body(&bytes)?;
    let Some(exec) = agent.store.lock().unwrap().execution(&id)? else {
        return Err(unknown_execution(&id));
    };
    if let Some(other) = req.options.keys().find(|k| *k != "BytesPerSecond") {
        return Err(bad_request(
            "InvalidRequest",
            format!("{other} cannot change while an execution runs: only BytesPerSecond can (change the task for its next executions)"),
        ));
    }
    // Checked as a task's options are: -1 or a positive number.
    let options = exec
        .options
        .with(&req.options)
        .map_err(|m| bad_request("InvalidOptions", m))?;
    match agent.set_bytes_per_second(&id, options.bytes_per_second)? {
        Some(exec) => ok(exec),
        None => Err(conflict(
            "ExecutionEnded",
            format!("execution {id} has already ended"),
        )),
    }
}

async fn cancel_execution(State(agent): Shared, Path(id): Path<String>) -> Reply {
    if agent.store.lock().unwrap().execution(&id)?.is_none() {
        return Err(unknown_execution(&id));
    }
    if agent.cancel(&id)? {
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(conflict(
            "ExecutionEnded",
            format!("execution {id} has already ended"),
        ))
    }
}

async fn execution_report(State(agent): Shared, Path(id): Path<String>) -> Reply {
    let (exec, path) = {
        let store = agent.store.lock().unwrap();
        (store.execution(&id)?, store.report_path(&id)?)
    };
    let Some(exec) = exec else {
        return Err(unknown_execution(&id));
    };
    let Some(path) = path else {
        return Err(not_found(
            "ReportNotAvailable",
            if records::is_terminal(&exec.status) {
                format!("execution {id} ended {} without a report", exec.status)
            } else {
                format!(
                    "execution {id} is {}: its report is written when it ends",
                    exec.status
                )
            },
        ));
    };
    // Never through a link, though the reports' directory is private.
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            let mut data = Vec::new();
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
                .and_then(|f| {
                    if !f.metadata()?.is_file() {
                        return Err(std::io::Error::other("not a regular file"));
                    }
                    Ok(f)
                })?
                .read_to_end(&mut data)
                .map(|_| data)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    let data = read.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "InternalError",
        message: format!("cannot read the report {path}: {e}"),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], data).into_response())
}

async fn metrics(State(agent): Shared) -> Reply {
    let (tasks, all) = {
        let store = agent.store.lock().unwrap();
        (store.tasks()?, store.executions(None)?)
    };
    let mut latest = Vec::new();
    for t in &tasks {
        if let Some(e) = all.iter().find(|e| e.task_id == t.task_id) {
            latest.push(e.clone());
        }
    }
    let cloud = agent.events.cloud.get().map(|c| c.counts());
    let text = super::metrics::render(&tasks, &latest, &all, cloud);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// How much of a refused request's body the read-only socket reads.
const REFUSED_BODY_LIMIT: usize = 1 << 20;

/// `api` (the daemon's router, with what the binary merged into it) with
/// every method but GET refused: a read-only view.
pub fn read_only(api: Router) -> Router {
    api.layer(axum::middleware::from_fn(get_only))
}

async fn get_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.method() == axum::http::Method::GET {
        next.run(request).await
    } else {
        // Read what the client sends (up to a bound) before refusing: a
        // connection closed under a client still writing its body gives it
        // a broken pipe instead of the answer.
        let _ = axum::body::to_bytes(request.into_body(), REFUSED_BODY_LIMIT).await;
        (
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            Json(records::Refusal {
                error: "ReadOnly".into(),
                message: "this socket only answers GET; use the agent's main socket".into(),
            }),
        )
            .into_response()
    }
}
