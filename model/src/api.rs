// SPDX-License-Identifier: MIT
//! What the agent keeps: locations, tasks and executions, in the JSON shape
//! of the API (DataSync's PascalCase names and SCREAMING_SNAKE_CASE values).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::counters::CounterSnapshot;
pub use crate::efs::InTransitEncryption;
use crate::options::Options;

/// Which NFS protocol version to mount with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NfsVersion {
    /// 4.1, then 4.0, then 3: the first the server accepts.
    #[default]
    Automatic,
    Nfs3,
    #[serde(rename = "NFS4_0")]
    Nfs4_0,
    #[serde(rename = "NFS4_1")]
    Nfs4_1,
}

impl std::str::FromStr for NfsVersion {
    type Err = String;

    /// As an operator writes it: one of [`crate::nfs::VERSIONS`].
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "automatic" => Ok(NfsVersion::Automatic),
            "3" => Ok(NfsVersion::Nfs3),
            "4.0" => Ok(NfsVersion::Nfs4_0),
            "4.1" => Ok(NfsVersion::Nfs4_1),
            _ => Err(format!(
                "{s:?} is not an NFS version: one of {}",
                crate::nfs::VERSIONS.join(", ")
            )),
        }
    }
}

/// Where a task reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "Type",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "PascalCase",
    deny_unknown_fields
)]
pub enum LocationSpec {
    /// An NFS export the agent mounts for each execution.
    Nfs {
        server: String,
        export: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdirectory: Option<String>,
        #[serde(default)]
        version: NfsVersion,
        /// Extra mount options (`key=value,flag`), added to and overriding
        /// the agent's defaults.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mount_options: Option<String>,
        /// On the hub: agents may create device nodes, FIFOs, sockets and
        /// set-id files here (for tasks with `PreserveDevices: PRESERVE`).
        #[serde(default, skip_serializing_if = "is_false")]
        allow_special_files: bool,
    },
    /// An Amazon EFS file system (DataSync's EFS location): NFS 4.1 at its
    /// mount target, through TLS when `InTransitEncryption` is `TLS1_2`.
    Efs {
        /// `fs-…`.
        file_system_id: String,
        region: String,
        /// `fsap-…`: named in the TLS tunnel's client certificate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_point_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdirectory: Option<String>,
        #[serde(default)]
        in_transit_encryption: InTransitEncryption,
        /// The mount target's IP address, when its name does not resolve
        /// where the agent runs (the mount helper's `mounttargetip`); the
        /// certificate is still checked against the name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mount_target_address: Option<String>,
    },
    /// A directory that is already there (a local disk, or a file system
    /// mounted another way).
    Local {
        path: String,
        /// As for NFS: special files from agents only when allowed here.
        #[serde(default, skip_serializing_if = "is_false")]
        allow_special_files: bool,
    },
    /// A location of the hub this agent is activated with (its id there):
    /// the data goes to the hub over mutual TLS. A destination only.
    Hub {
        /// Not `LocationId`: the location's own id has that name.
        hub_location_id: String,
        /// zstd on the wire (counted as BytesCompressed).
        #[serde(default)]
        compress: bool,
        /// Parallel TLS connections to the hub (64 by default, one per
        /// worker: on a long link each request waits a round trip, so
        /// concurrency is speed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<u32>,
    },
    /// On the hub: a location of an activated agent (NFS or local, as the
    /// agent reaches it). A source only: the hub's task runs on that agent,
    /// which sends the data to the hub's destination.
    Agent {
        agent_id: String,
        /// More agents that reach the same source (DataSync's further
        /// `AgentArns`): an execution is then shared by all of them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        additional_agent_ids: Vec<String>,
        location: Box<LocationSpec>,
        #[serde(default)]
        compress: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<u32>,
    },
}

fn is_false(b: &bool) -> bool {
    !b
}

impl LocationSpec {
    /// A plain local location (special files not allowed).
    pub fn local(path: impl Into<String>) -> LocationSpec {
        LocationSpec::Local {
            path: path.into(),
            allow_special_files: false,
        }
    }

    /// Whether the location is a file system the agent mounts (NFS, EFS).
    pub fn is_mounted(&self) -> bool {
        matches!(self, LocationSpec::Nfs { .. } | LocationSpec::Efs { .. })
    }

    /// The largest file the location's file system takes, when its kind
    /// says (EFS's).
    pub fn file_size_max(&self) -> Option<u64> {
        matches!(self, LocationSpec::Efs { .. }).then_some(crate::efs::FILE_SIZE_MAX)
    }

    /// Whether the hub lets agents make special files in this location.
    pub fn allows_special_files(&self) -> bool {
        matches!(
            self,
            LocationSpec::Local {
                allow_special_files: true,
                ..
            } | LocationSpec::Nfs {
                allow_special_files: true,
                ..
            }
        )
    }

    /// The API's `Type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            LocationSpec::Nfs { .. } => "NFS",
            LocationSpec::Efs { .. } => "EFS",
            LocationSpec::Local { .. } => "LOCAL",
            LocationSpec::Hub { .. } => "HUB",
            LocationSpec::Agent { .. } => "AGENT",
        }
    }

    pub fn uri(&self) -> String {
        match self {
            LocationSpec::Nfs {
                server,
                export,
                subdirectory,
                ..
            } => {
                let sub = subdirectory.as_deref().unwrap_or("");
                format!(
                    "nfs://{server}/{}{}{}",
                    export.trim_matches('/'),
                    if sub.trim_matches('/').is_empty() {
                        ""
                    } else {
                        "/"
                    },
                    sub.trim_matches('/')
                )
            }
            // DataSync's form: efs://REGION.FS/SUBDIRECTORY
            LocationSpec::Efs {
                file_system_id,
                region,
                subdirectory,
                ..
            } => format!(
                "efs://{region}.{file_system_id}/{}",
                subdirectory.as_deref().unwrap_or("").trim_matches('/')
            ),
            LocationSpec::Local { path, .. } => format!("file://{path}"),
            LocationSpec::Hub {
                hub_location_id, ..
            } => format!("hub://{hub_location_id}"),
            LocationSpec::Agent {
                agent_id, location, ..
            } => format!("agent://{agent_id}/{}", location.uri()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Location {
    pub location_id: String,
    pub location_uri: String,
    #[serde(flatten)]
    pub spec: LocationSpec,
    pub creation_time: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    pub task_id: String,
    pub name: String,
    pub source_location_id: String,
    pub destination_location_id: String,
    pub options: Options,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's state, when there is one (DataSync's
    /// `TaskScheduleDetails`, with its status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_details: Option<ScheduleDetails>,
    /// AVAILABLE, QUEUED (an execution waits) or RUNNING.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_task_execution_id: Option<String>,
    pub creation_time: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleDetails {
    /// ENABLED or DISABLED.
    pub status: String,
    /// When it was set, enabled or disabled (a rate counts from there).
    pub status_update_time: String,
    /// USER (by an update) or SERVICE (the task failed the same way
    /// several times in a row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

/// The states of a task's schedule.
pub const ENABLED: &str = "ENABLED";
pub const DISABLED: &str = "DISABLED";

/// The states of an execution. The engine's phases, plus CANCELLING.
pub const QUEUED: &str = "QUEUED";
pub const LAUNCHING: &str = "LAUNCHING";
pub const CANCELLING: &str = "CANCELLING";
pub const SUCCESS: &str = "SUCCESS";
pub const ERROR: &str = "ERROR";

pub fn is_terminal(status: &str) -> bool {
    status == SUCCESS || status == ERROR
}

/// Per-phase status and duration (DataSync's TaskExecutionResultDetail).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultDetail {
    /// PENDING, SUCCESS or ERROR for each phase.
    pub prepare_status: String,
    pub prepare_duration: u64,
    pub transfer_status: String,
    pub transfer_duration: u64,
    pub verify_status: String,
    pub verify_duration: u64,
    pub total_duration: u64,
    /// Milliseconds the task's last plan estimated for this execution (of a
    /// dry run: its own estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    /// With several agents on the execution: what each did, by agent id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentShare>,
    /// Units leased again because their agent was lost (the first
    /// thousand; `AgentShare::units_released` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_units: Vec<ReleasedUnit>,
}

/// What one agent did of an execution shared by several: its work units
/// (one directory each, transferred and then verified).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentShare {
    /// Units it leased, in both phases.
    pub units_leased: u64,
    /// Units it did, in both phases.
    pub units_done: u64,
    /// Units it held when it was lost, leased again to others.
    pub units_released: u64,
    /// Its own counters, as it last reported them.
    #[serde(default)]
    pub files_transferred: u64,
    #[serde(default)]
    pub bytes_transferred: u64,
    #[serde(default)]
    pub files_verified: u64,
}

/// A unit leased again because its agent was lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReleasedUnit {
    /// The directory's path (not valid UTF-8 shown with U+FFFD).
    pub path: String,
    pub agent_id: String,
    /// TRANSFERRING or VERIFYING.
    pub phase: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Execution {
    pub task_execution_id: String,
    pub task_id: String,
    pub status: String,
    pub options: Options,
    pub queue_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub result: ResultDetail,
    pub counters: CounterSnapshot,
    /// Whether `GET /v1/executions/{id}/report` has a report to give.
    pub report_available: bool,
}

/// Milliseconds since the epoch as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms.max(0))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `prefix-` and 17 hex digits, as DataSync's ids look.
pub fn new_id(prefix: &str) -> String {
    use std::io::Read;
    let mut bytes = [0u8; 9];
    // /dev/urandom is always there on Linux; the clock is a fallback only.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        bytes[..8]
            .copy_from_slice(&(now_ms() as u64 ^ u64::from(std::process::id())).to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{}", &hex[..17])
}

/// `GET /v1/locations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LocationList {
    pub locations: Vec<Location>,
}

/// `GET /v1/tasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// `GET /v1/executions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecutionList {
    pub executions: Vec<Execution>,
}

/// `POST /v1/tasks/{id}/start`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecutionStarted {
    pub task_execution_id: String,
}

/// The body of every refusal: a code to match on and a sentence to show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Refusal {
    pub error: String,
    pub message: String,
}

/// `GET /v1/activation`: whether this agent is activated, and with which hub.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivationStatus {
    pub activated: bool,
    pub hub: Option<String>,
    pub agent_id: Option<String>,
    /// While an operator has yet to confirm it on the hub.
    pub activation_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_ca_fingerprint: Option<String>,
    /// Whether the operator gave that fingerprint (or it was trusted on
    /// first contact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_fingerprint_checked: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST /v1/activation`: the key to confirm on the hub, and its page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivationStarted {
    pub activation_key: String,
    pub activation_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// On the hub: an activated agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentRecord {
    pub agent_id: String,
    pub name: String,
    #[serde(default)]
    pub hostname: String,
    pub certificate_fingerprint: String,
    pub activated_ms: i64,
    #[serde(default)]
    pub last_seen_ms: i64,
}

/// `GET /v1/agents` on the hub: each agent, ONLINE or OFFLINE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentList {
    pub agents: Vec<AgentStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentStatus {
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// ONLINE: heard from within the last minutes; OFFLINE otherwise.
    pub status: String,
}
