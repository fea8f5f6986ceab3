//! The configuration document, `/data/config/ferry.yaml`.
//!
//! One YAML document, `version: 1` or `2`, strictly validated: unknown keys
//! are refused, and every error names the key and the line. A document that
//! is refused never replaces the last good one, which stays in force.
//! Version 2 adds the `agent:` section: locations and tasks the agent
//! declares when it starts (see [`AgentSection`]).
//!
//! ```yaml
//! version: 1
//! hostname: ferry-01
//! network:
//!   interface: eth0        # default: the first Ethernet adapter
//!   mode: static           # dhcp (default) or static
//!   address: 192.0.2.10/24
//!   gateway: 192.0.2.1
//!   dns: [192.0.2.53]
//! time:
//!   servers: [ntp.example.org]
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the document in force lives.
pub const DOCUMENT: &str = "/data/config/ferry.yaml";
/// The last document that passed validation.
pub const LAST_GOOD: &str = "/data/config/ferry.last-good.yaml";

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// YAML syntax or schema error (unknown key, wrong type...). serde_yaml's
    /// message names the key path, line and column.
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{source_name}: {key}: {why} (line {line})")]
    Invalid {
        source_name: String,
        key: String,
        why: String,
        line: usize,
    },
    #[error("{source_name}: {source}")]
    Io {
        source_name: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub version: u32,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub time: Time,
    /// Version 2: locations and tasks for ferry-agent.
    #[serde(default)]
    pub agent: Option<AgentSection>,
    /// The support channel (any version); closed unless `open_hours` or
    /// `open_minutes` is set.
    #[serde(default)]
    pub support: Option<SupportSection>,
    /// `agent` (the default) or `hub`: the hub serves HTTPS on port 443
    /// (ferry-agent reads the same document; see agent/README.md).
    #[serde(default)]
    pub role: DocRole,
    /// ferry-agent's ports and paths (`daemon:`); its keys and ranges are
    /// ferry-agent's (agent/src/daemon/config.rs), checked here too so that
    /// a misspelt key refuses the document instead of leaving a default.
    #[serde(default)]
    pub daemon: Option<DaemonSection>,
}

/// `daemon:`, as ferry-agent reads it; every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub history_days: Option<u32>,
    #[serde(default)]
    pub cloudwatch_emf: Option<bool>,
    #[serde(default)]
    pub console: Option<PathBuf>,
    #[serde(default)]
    pub activation_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub activated_marker: Option<PathBuf>,
    #[serde(default)]
    pub poll_seconds: Option<u64>,
    #[serde(default)]
    pub https_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub hub_names: Option<Vec<String>>,
    #[serde(default)]
    pub operator_token_file: Option<PathBuf>,
    #[serde(default)]
    pub operator_token: Option<String>,
    #[serde(default)]
    pub activation_key_seconds: Option<u64>,
}

/// The agent's bounds (agent/src/daemon/config.rs): each number becomes a
/// duration there.
const HISTORY_DAYS: (u64, u64) = (1, 36_500);
const POLL_SECONDS: (u64, u64) = (1, 3_600);
const ACTIVATION_KEY_SECONDS: (u64, u64) = (1, 30 * 86_400);
const MIN_TOKEN_LEN: usize = 16;

fn check_daemon(d: &DaemonSection) -> Result<(), (String, String)> {
    let key = |k: &str| format!("daemon.{k}");
    for (k, p) in [
        ("data_dir", &d.data_dir),
        ("socket", &d.socket),
        ("console", &d.console),
        ("activated_marker", &d.activated_marker),
        ("operator_token_file", &d.operator_token_file),
    ] {
        if let Some(p) = p {
            if !p.is_absolute() {
                return Err((
                    key(k),
                    format!("{:?} is not an absolute path", p.display().to_string()),
                ));
            }
        }
    }
    for (k, v, (lo, hi), unit) in [
        (
            "history_days",
            d.history_days.map(u64::from),
            HISTORY_DAYS,
            "days",
        ),
        ("poll_seconds", d.poll_seconds, POLL_SECONDS, "seconds"),
        (
            "activation_key_seconds",
            d.activation_key_seconds,
            ACTIVATION_KEY_SECONDS,
            "seconds",
        ),
    ] {
        if let Some(v) = v {
            if !(lo..=hi).contains(&v) {
                return Err((
                    key(k),
                    format!("{v} is out of range: give {lo} to {hi} {unit}"),
                ));
            }
        }
    }
    for (k, a) in [
        ("activation_listen", d.activation_listen),
        ("https_listen", d.https_listen),
    ] {
        if a.is_some_and(|a| a.port() == 0) {
            return Err((key(k), "give a port from 1 to 65535".into()));
        }
    }
    for n in d.hub_names.iter().flatten() {
        let ok = !n.is_empty()
            && n.len() <= 253
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b));
        if !ok {
            return Err((
                key("hub_names"),
                format!("{n:?} is not a host name or address"),
            ));
        }
    }
    if let Some(t) = &d.operator_token {
        if t.chars().count() < MIN_TOKEN_LEN
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err((
                key("operator_token"),
                format!("give at least {MIN_TOKEN_LEN} characters without spaces"),
            ));
        }
    }
    Ok(())
}

/// The document's `role:`.
/// Standard cron in one field. croner's extensions (`L`, `W`, `#`, `?`) are
/// refused: with some of them its search for the next firing runs for
/// hours, which in PID 1 would hold the boot.
fn standard_cron_field(field: &str) -> bool {
    const NAMES: [&str; 19] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "sun",
        "mon", "tue", "wed", "thu", "fri", "sat",
    ];
    field.split([',', '-', '/']).all(|t| {
        t == "*"
            || (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            || NAMES.iter().any(|n| n.eq_ignore_ascii_case(t))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DocRole {
    #[default]
    Agent,
    Hub,
}

/// ```yaml
/// support:
///   public_key: "ssh-ed25519 AAAA... engineer@example"  # the engineer's key
///   open_hours: 4            # or open_minutes: 30; opened when applied
///   allow_from: 198.51.100.0/24                  # inbound 22 from here only
///   outbound:                # instead of allow_from: the appliance connects out
///     host: support.example.org
///     host_key: "ssh-ed25519 AAAA..."   # or SHA256:... (ssh-keygen -lf)
///     port: 22
///     user: ferry
///     tunnel_port: 2222
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SupportSection {
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub open_hours: Option<u32>,
    #[serde(default)]
    pub open_minutes: Option<u32>,
    #[serde(default)]
    pub allow_from: Option<String>,
    #[serde(default)]
    pub outbound: Option<SupportOutbound>,
}

/// The reverse-tunnel mode: the appliance connects to `user@host:port` and
/// asks the support host to forward its `tunnel_port` (on its loopback) to
/// the appliance's restricted console.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupportOutbound {
    pub host: String,
    /// The support host's public key line, or its SHA-256 fingerprint
    /// (`SHA256:...`, as `ssh-keygen -lf` prints it): the tunnel goes to
    /// that host only. Required (an `Option` so that its absence gets a
    /// message naming it).
    #[serde(default)]
    pub host_key: Option<String>,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    #[serde(default = "default_support_user")]
    pub user: String,
    #[serde(default = "default_tunnel_port")]
    pub tunnel_port: u16,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_support_user() -> String {
    "ferry".into()
}
fn default_tunnel_port() -> u16 {
    2222
}

/// Longest time the support channel stays open: a week.
pub const SUPPORT_MAX_MINUTES: u32 = 7 * 24 * 60;

impl SupportSection {
    /// How long the channel opens for when the document is applied.
    pub fn open_for(&self) -> Option<std::time::Duration> {
        let minutes = self.open_minutes.or(self.open_hours.map(|h| h * 60))?;
        Some(std::time::Duration::from_secs(u64::from(minutes) * 60))
    }
}

/// The outbound mode's pin of the support host's key: required, a public
/// key line or a SHA-256 fingerprint.
pub fn check_host_key(k: Option<&str>) -> Result<crate::hostkey::HostKeyPin, String> {
    let k = k.ok_or(
        "the outbound mode needs the support host's key: its public key line (the host's /etc/ssh/ssh_host_ed25519_key.pub) or its SHA-256 fingerprint (ssh-keygen -lf)",
    )?;
    crate::hostkey::HostKeyPin::parse(k)
}

fn check_support(s: &SupportSection) -> Result<(), (String, String)> {
    if let Some(k) = &s.public_key {
        crate::validate::check_public_key(k)
            .map_err(|why| ("support.public_key".to_string(), why))?;
    }
    if s.open_hours.is_some() && s.open_minutes.is_some() {
        return Err((
            "support.open_minutes".into(),
            "give open_hours or open_minutes, not both".into(),
        ));
    }
    for (key, v, unit) in [
        (
            "support.open_hours",
            s.open_hours.map(|h| h.saturating_mul(60)),
            60,
        ),
        ("support.open_minutes", s.open_minutes, 1),
    ] {
        if let Some(m) = v {
            if m == 0 || m > SUPPORT_MAX_MINUTES {
                return Err((
                    key.into(),
                    format!("give 1 to {} (at most a week)", SUPPORT_MAX_MINUTES / unit),
                ));
            }
            if s.public_key.is_none() {
                return Err((
                    key.into(),
                    "opening the channel needs support.public_key".into(),
                ));
            }
        }
    }
    if let Some(a) = &s.allow_from {
        if parse_cidr(a).is_none() {
            return Err((
                "support.allow_from".into(),
                format!("{a:?} is not an IPv4 network (a.b.c.d/n)"),
            ));
        }
        if s.outbound.is_some() {
            return Err((
                "support.allow_from".into(),
                "allow_from is for inbound connections; the outbound mode opens no port".into(),
            ));
        }
    }
    if let Some(o) = &s.outbound {
        // dbclient reads `user@host/port,user@host2...`
        if o.host.is_empty()
            || o.host.starts_with('-')
            || o.host
                .contains(|c: char| c.is_whitespace() || c == '@' || c == '/' || c == ',')
        {
            return Err((
                "support.outbound.host".into(),
                format!("{:?} is not a host name or address", o.host),
            ));
        }
        check_host_key(o.host_key.as_deref())
            .map_err(|why| ("support.outbound.host_key".to_string(), why))?;
        if o.port == 0 {
            return Err((
                "support.outbound.port".into(),
                "give a port from 1 to 65535".into(),
            ));
        }
        if o.tunnel_port == 0 {
            return Err((
                "support.outbound.tunnel_port".into(),
                "give a port from 1 to 65535".into(),
            ));
        }
        if o.user.is_empty()
            || !o
                .user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err((
                "support.outbound.user".into(),
                format!("{:?} is not a user name", o.user),
            ));
        }
    }
    Ok(())
}

/// Newest document version this system reads.
pub const VERSION: u32 = 2;

/// ```yaml
/// agent:
///   locations:
///     nas:    { nfs: { server: 192.0.2.20, export: /exports/data, version: "4.1" } }
///     efs:    { nfs: { server: fs-1.efs.example, export: /, mount_options: "nconnect=16" } }
///     devs:   { local: { path: /mnt/devs, allow_special_files: true } }   # a hub's: devices from agents
///   tasks:
///     nightly:
///       source: nas
///       destination: efs
///       schedule: "0 2 * * *"          # five cron fields, UTC
///       options: { VerifyMode: ONLY_FILES_TRANSFERRED, PreserveDeletedFiles: REMOVE }
///       start_on_boot: false
/// ```
///
/// ferry-init checks names, references and shapes, and hands the section to
/// the agent as JSON (`/etc/ferry/agent.json`); option values are checked by
/// the agent, which logs a refusal and then changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    #[serde(default)]
    pub locations: BTreeMap<String, AgentLocation>,
    #[serde(default)]
    pub tasks: BTreeMap<String, AgentTask>,
}

/// Exactly one of `nfs` or `local`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentLocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalLocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NfsLocation {
    pub server: String,
    pub export: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdirectory: Option<String>,
    /// automatic (default), 3, 4.0 or 4.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<String>,
    /// On a hub: agents may make device nodes, FIFOs, sockets and set-id
    /// files here (ferry-agent's `AllowSpecialFiles`; false by default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_special_files: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LocalLocation {
    pub path: String,
    /// As for NFS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_special_files: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentTask {
    pub source: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, OptionValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default)]
    pub start_on_boot: bool,
}

/// A task option's value: a DataSync name, a number, or a list of patterns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OptionValue {
    Number(i64),
    Text(String),
    List(Vec<String>),
}

/// DataSync's option names, as the agent takes them.
const TASK_OPTIONS: &[&str] = &[
    "VerifyMode",
    "OverwriteMode",
    "TransferMode",
    "PreserveDeletedFiles",
    "PreserveDevices",
    "PosixPermissions",
    "Uid",
    "Gid",
    "Atime",
    "Mtime",
    "BytesPerSecond",
    "Includes",
    "Excludes",
    "Parallel",
];

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a location is, to tell whether one is inside another: ("" and
/// the path's components) for a local path, (server and the export's and
/// subdirectory's components) for NFS. Links on the appliance's disks are
/// the agent's to see (it checks again).
fn place(l: &AgentLocation) -> (String, Vec<String>) {
    let parts = |paths: &[&str]| -> Vec<String> {
        paths
            .iter()
            .flat_map(|p| p.split('/'))
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    match (&l.nfs, &l.local) {
        (Some(n), _) => (
            n.server.trim_end_matches('.').to_ascii_lowercase(),
            parts(&[&n.export, n.subdirectory.as_deref().unwrap_or("")]),
        ),
        (None, Some(p)) => (String::new(), parts(&[&p.path])),
        (None, None) => (String::new(), Vec::new()),
    }
}

/// Checks the agent section; `Err((key, why))`.
fn check_agent(a: &AgentSection) -> Result<(), (String, String)> {
    for (name, loc) in &a.locations {
        let key = format!("agent.locations.{name}");
        if !valid_name(name) {
            return Err((
                key,
                format!("{name:?} is not a name (letters, digits, '-', '_', at most 64)"),
            ));
        }
        match (&loc.nfs, &loc.local) {
            (Some(nfs), None) => {
                if nfs.server.is_empty() || nfs.server.contains(['/', ',', ' ']) {
                    return Err((
                        format!("{key}.nfs.server"),
                        format!("{:?} is not a host name or address", nfs.server),
                    ));
                }
                if let Some(sub) = &nfs.subdirectory {
                    if sub.split('/').any(|c| c == "..") {
                        return Err((
                            format!("{key}.nfs.subdirectory"),
                            format!("{sub:?} has '..': give a plain path inside the export"),
                        ));
                    }
                }
                if !nfs.export.starts_with('/') || nfs.export.split('/').any(|c| c == "..") {
                    return Err((
                        format!("{key}.nfs.export"),
                        format!("{:?} must be an absolute path without '..'", nfs.export),
                    ));
                }
                if let Some(v) = &nfs.version {
                    if !["automatic", "3", "4.0", "4.1"].contains(&v.as_str()) {
                        return Err((
                            format!("{key}.nfs.version"),
                            format!("{v:?}: give automatic, 3, 4.0 or 4.1"),
                        ));
                    }
                }
            }
            (None, Some(local)) => {
                if !local.path.starts_with('/') || local.path.split('/').any(|c| c == "..") {
                    return Err((
                        format!("{key}.local.path"),
                        format!("{:?} must be an absolute path without '..'", local.path),
                    ));
                }
            }
            _ => return Err((key, "give exactly one of nfs or local".into())),
        }
    }
    for (name, task) in &a.tasks {
        let key = format!("agent.tasks.{name}");
        if !valid_name(name) {
            return Err((
                key,
                format!("{name:?} is not a name (letters, digits, '-', '_', at most 64)"),
            ));
        }
        for (field, loc) in [("source", &task.source), ("destination", &task.destination)] {
            if !a.locations.contains_key(loc) {
                return Err((
                    format!("{key}.{field}"),
                    format!("{loc:?} is not a location of agent.locations"),
                ));
            }
        }
        if task.source == task.destination {
            return Err((
                format!("{key}.destination"),
                "the source and the destination are the same location".into(),
            ));
        }
        let (s, d) = (
            place(&a.locations[&task.source]),
            place(&a.locations[&task.destination]),
        );
        if s.0 == d.0 {
            if d.1.starts_with(&s.1) {
                return Err((
                    format!("{key}.destination"),
                    if s.1 == d.1 {
                        "the source and the destination are the same directory".into()
                    } else {
                        format!(
                            "{:?} is inside the source {:?}: the task would copy into itself",
                            task.destination, task.source
                        )
                    },
                ));
            }
            if s.1.starts_with(&d.1) {
                return Err((
                    format!("{key}.destination"),
                    format!("the source {:?} is inside {:?}: the task would overwrite or delete its own source", task.source, task.destination),
                ));
            }
        }
        if let Some(option) = task
            .options
            .keys()
            .find(|k| !TASK_OPTIONS.contains(&k.as_str()))
        {
            return Err((
                format!("{key}.options"),
                format!(
                    "unknown option {option}: the options are {}",
                    TASK_OPTIONS.join(", ")
                ),
            ));
        }
        if let Some(s) = &task.schedule {
            if s.split_whitespace().count() != 5 {
                return Err((
                    format!("{key}.schedule"),
                    format!(
                        "{s:?}: give five cron fields (minute hour day-of-month month day-of-week)"
                    ),
                ));
            }
            // as the agent checks it (agent/src/daemon/schedule.rs; one
            // definition for both once the model crate exists, issue #15)
            if let Some(field) = s.split_whitespace().find(|f| !standard_cron_field(f)) {
                return Err((
                    format!("{key}.schedule"),
                    format!("{s:?} is not standard cron: the field {field:?} may hold numbers, *, lists (1,15), ranges (1-5), steps (*/15) and month or weekday names"),
                ));
            }
            let cron = croner::Cron::new(s).parse().map_err(|e| {
                (
                    format!("{key}.schedule"),
                    format!("{s:?} is not a valid cron expression: {e}"),
                )
            })?;
            if cron
                .find_next_occurrence(&chrono::Utc::now(), false)
                .is_err()
            {
                return Err((
                    format!("{key}.schedule"),
                    format!("{s:?} never occurs: no date matches its day and month"),
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Dhcp,
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Search domains for /etc/resolv.conf.
    #[serde(default)]
    pub search: Vec<String>,
    /// Further adapters, by name: addresses only (the default adapter above
    /// carries the default route and DNS).
    #[serde(default)]
    pub adapters: BTreeMap<String, Adapter>,
}

/// An adapter besides the default one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Adapter {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Time {
    #[serde(default)]
    pub servers: Vec<String>,
}

/// The configuration in force, with what it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub doc: Document,
    /// "default" (first boot), or the path of the document.
    pub origin: String,
}

impl Config {
    /// First boot, no document: DHCP on the first adapter, hostname "ferry".
    pub fn first_boot() -> Config {
        Config {
            doc: Document {
                version: 1,
                ..Document::default()
            },
            origin: "default (no document yet)".into(),
        }
    }

    pub fn hostname(&self) -> &str {
        self.doc.hostname.as_deref().unwrap_or("ferry")
    }
}

/// Line (1-based) of the first line mentioning `key:`, for error messages.
fn line_of(text: &str, key: &str) -> usize {
    // a key that is missing: the line of its parent
    let mut key = key;
    loop {
        if let Some(n) = line_of_leaf(text, key) {
            return n;
        }
        match key.rsplit_once('.') {
            Some((parent, _)) => key = parent,
            None => return 0,
        }
    }
}

fn line_of_leaf(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let pat = format!("{leaf}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&pat)
        })
        // inside a flow mapping: `outbound: { host: ... }`
        .or_else(|| {
            text.lines()
                .position(|l| l.contains(&format!(" {pat}")) || l.contains(&format!("{{{pat}")))
        })
        .map(|i| i + 1)
}

fn valid_interface(i: &str) -> bool {
    !(i.is_empty() || i.len() > 15 || i.contains('/') || i.contains(char::is_whitespace))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

/// Parses an IPv4 address with its prefix length, `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (1..=32).contains(&len).then_some(())?;
    Some((ip.parse().ok()?, len))
}

/// Parses and validates a document. `source_name` goes into error messages.
pub fn parse(text: &str, source_name: &str) -> Result<Document, ConfigError> {
    let doc: Document = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    let invalid = |key: &str, why: String| ConfigError::Invalid {
        source_name: source_name.to_string(),
        key: key.to_string(),
        why,
        line: line_of(text, key),
    };
    if doc.version == 0 || doc.version > VERSION {
        return Err(invalid(
            "version",
            format!(
                "version {} is not supported (this system reads versions 1 to {VERSION})",
                doc.version
            ),
        ));
    }
    if let Some(agent) = &doc.agent {
        if doc.version < 2 {
            return Err(invalid(
                "agent",
                "the agent section needs version: 2".into(),
            ));
        }
        check_agent(agent).map_err(|(key, why)| invalid(&key, why))?;
    }
    if let Some(support) = &doc.support {
        check_support(support).map_err(|(key, why)| invalid(&key, why))?;
    }
    if let Some(daemon) = &doc.daemon {
        check_daemon(daemon).map_err(|(key, why)| invalid(&key, why))?;
    }
    if let Some(h) = &doc.hostname {
        if !valid_hostname(h) {
            return Err(invalid(
                "hostname",
                format!("{h:?} is not a host name (letters, digits and '-', at most 63)"),
            ));
        }
    }
    let n = &doc.network;
    match n.mode {
        Mode::Static => {
            let Some(addr) = &n.address else {
                return Err(invalid(
                    "network.mode",
                    "static needs network.address".into(),
                ));
            };
            // the console's checks: what it refuses, a document cannot bring in
            let net = crate::validate::address_prefix(addr)
                .map_err(|why| invalid("network.address", why))?;
            if let Some(g) = n.gateway {
                crate::validate::gateway(&g.to_string(), net)
                    .map_err(|why| invalid("network.gateway", why))?;
            }
        }
        Mode::Dhcp => {
            if n.address.is_some() || n.gateway.is_some() {
                return Err(invalid(
                    "network.mode",
                    "address and gateway are only for mode: static".into(),
                ));
            }
        }
    }
    if let Some(i) = &n.interface {
        if !valid_interface(i) {
            return Err(invalid(
                "network.interface",
                format!("{i:?} is not an interface name"),
            ));
        }
    }
    for (name, a) in &n.adapters {
        let key = format!("network.adapters.{name}");
        if !valid_interface(name) {
            return Err(invalid(&key, format!("{name:?} is not an interface name")));
        }
        if n.interface.as_deref() == Some(name.as_str()) {
            return Err(invalid(
                &key,
                format!("{name} is the default adapter (network.interface); configure it there"),
            ));
        }
        match (a.mode, &a.address) {
            (Mode::Static, None) => {
                return Err(invalid(&key, "static needs an address".into()));
            }
            (Mode::Static, Some(addr)) => {
                crate::validate::address_prefix(addr)
                    .map_err(|why| invalid(&format!("{key}.address"), why))?;
            }
            (Mode::Dhcp, Some(_)) => {
                return Err(invalid(&key, "an address is only for mode: static".into()));
            }
            (Mode::Dhcp, None) => {}
        }
    }
    for d in &n.search {
        crate::validate::dns_name(d).map_err(|why| invalid("network.search", why))?;
    }
    for s in &doc.time.servers {
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(invalid(
                "time.servers",
                format!("{s:?} is not a server name"),
            ));
        }
    }
    Ok(doc)
}

/// Where documents are kept; a directory so tests can use a scratch one.
pub struct Store {
    pub document: PathBuf,
    pub last_good: PathBuf,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            document: DOCUMENT.into(),
            last_good: LAST_GOOD.into(),
        }
    }
}

/// What loading found: the configuration in force, and the refusals to show.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub refused: Vec<ConfigError>,
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(&tmp, text)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)
}

impl Store {
    pub fn in_dir(dir: &Path) -> Store {
        Store {
            document: dir.join("ferry.yaml"),
            last_good: dir.join("ferry.last-good.yaml"),
        }
    }

    /// Offers a new document (from a provider: the console, QEMU fw_cfg,
    /// VMware guestinfo, EC2 user data). A good one becomes the document in
    /// force; a bad one is refused and changes nothing.
    pub fn offer(&self, text: &str, source_name: &str) -> Result<Document, ConfigError> {
        let doc = parse(text, source_name)?;
        let io_err = |source| ConfigError::Io {
            source_name: self.document.display().to_string(),
            source,
        };
        write_atomic(&self.document, text).map_err(io_err)?;
        write_atomic(&self.last_good, text).map_err(io_err)?;
        Ok(doc)
    }

    /// Loads the document in force: the document if it is good, else the
    /// last good one, else the first-boot default.
    pub fn load(&self) -> Loaded {
        let mut refused = Vec::new();
        let name = self.document.display().to_string();
        match fs::read_to_string(&self.document) {
            Ok(text) => match parse(&text, &name) {
                Ok(doc) => {
                    let _ = write_atomic(&self.last_good, &text);
                    return Loaded {
                        config: Config { doc, origin: name },
                        refused,
                    };
                }
                Err(e) => refused.push(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => refused.push(ConfigError::Io {
                source_name: name,
                source,
            }),
        }
        let good_name = self.last_good.display().to_string();
        if let Ok(text) = fs::read_to_string(&self.last_good) {
            if let Ok(doc) = parse(&text, &good_name) {
                return Loaded {
                    config: Config {
                        doc,
                        origin: good_name,
                    },
                    refused,
                };
            }
        }
        Loaded {
            config: Config::first_boot(),
            refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("test_data/config")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn good_fixtures_parse() {
        let d = parse(&fixture("v1-static.yaml"), "t").unwrap();
        assert_eq!(d.hostname.as_deref(), Some("ferry-01"));
        assert_eq!(d.network.mode, Mode::Static);
        assert_eq!(
            parse_cidr(d.network.address.as_deref().unwrap()),
            Some(("192.0.2.10".parse().unwrap(), 24))
        );
        assert_eq!(d.time.servers, vec!["ntp.example.org".to_string()]);
        let d = parse(&fixture("v1-dhcp.yaml"), "t").unwrap();
        assert_eq!(d.network.mode, Mode::Dhcp);
        assert_eq!(
            parse("version: 1\n", "t").unwrap(),
            Document {
                version: 1,
                ..Document::default()
            }
        );
    }

    #[test]
    fn role_and_daemon_are_ferry_agents() {
        let d = parse(
            "version: 2\nrole: hub\ndaemon:\n  https_listen: 0.0.0.0:8443\n",
            "t",
        )
        .unwrap();
        assert_eq!(d.role, DocRole::Hub);
        assert!(d.daemon.is_some());
        assert_eq!(parse("version: 2\n", "t").unwrap().role, DocRole::Agent);
        assert!(parse("version: 2\nrole: gateway\n", "t").is_err());
    }

    #[test]
    fn the_daemon_section_is_checked_as_the_agent_checks_it() {
        let bad = |daemon: &str| {
            parse(&format!("version: 2\ndaemon:\n{daemon}"), "f")
                .unwrap_err()
                .to_string()
        };
        let e = bad("  activation_lisen: 127.0.0.1:8080\n");
        assert!(e.contains("unknown field `activation_lisen`"), "{e}");
        let e = bad("  activation_key_seconds: 18446744073709551615\n");
        assert!(
            e.contains("daemon.activation_key_seconds")
                && e.contains("out of range")
                && e.contains("line 3"),
            "{e}"
        );
        assert!(bad("  poll_seconds: 0\n").contains("daemon.poll_seconds"));
        assert!(bad("  history_days: 0\n").contains("daemon.history_days"));
        assert!(bad("  data_dir: data\n").contains("daemon.data_dir"));
        assert!(bad("  https_listen: 0.0.0.0:0\n").contains("daemon.https_listen"));
        assert!(bad("  operator_token: short\n").contains("daemon.operator_token"));
        assert!(bad("  hub_names: [\"a b\"]\n").contains("daemon.hub_names"));
        let d = parse(
            "version: 2\ndaemon:\n  https_listen: 0.0.0.0:8443\n  activation_key_seconds: 2\n",
            "t",
        )
        .unwrap();
        assert_eq!(d.daemon.unwrap().activation_key_seconds, Some(2));
        // a misspelt top-level key: refused, not left to the defaults
        let e = parse("version: 2\ndeamon:\n  https_listen: 0.0.0.0:8443\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `deamon`"), "{e}");
    }

    #[test]
    fn a_task_into_itself_or_a_schedule_that_never_occurs_is_refused() {
        let doc = |a: &str, b: &str, schedule: &str| {
            parse(
                &format!("version: 2\nagent:\n  locations:\n    a: {a}\n    b: {b}\n  tasks:\n    t:\n      source: a\n      destination: b\n{schedule}"),
                "f",
            )
        };
        let e = doc(
            "{ local: { path: /srv/a } }",
            "{ local: { path: /srv/a/b/ } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("agent.tasks.t.destination") && e.contains("copy into itself"),
            "{e}"
        );
        let e = doc(
            "{ local: { path: /srv/a/b } }",
            "{ local: { path: /srv/a } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("its own source"), "{e}");
        let e = doc(
            "{ nfs: { server: NAS, export: /e, subdirectory: x } }",
            "{ nfs: { server: nas, export: /e/x } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("same directory"), "{e}");
        doc(
            "{ local: { path: /srv/a } }",
            "{ local: { path: /srv/ab } }",
            "",
        )
        .unwrap();
        doc(
            "{ nfs: { server: n1, export: /e } }",
            "{ nfs: { server: n2, export: /e } }",
            "",
        )
        .unwrap();
        let e = doc(
            "{ local: { path: /a } }",
            "{ local: { path: /b } }",
            "      schedule: \"0 0 31 2 *\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("agent.tasks.t.schedule") && e.contains("never occurs"),
            "{e}"
        );
        let e = doc(
            "{ local: { path: /a } }",
            "{ local: { path: /b } }",
            "      schedule: \"61 * * * *\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a valid cron expression"), "{e}");
        // croner's extensions: `L` made its search run for hours (in PID 1).
        for schedule in ["L * * * *", "0 0 L * *", "0 0 ? * 1#2", "0 0 1W * *"] {
            let e = doc(
                "{ local: { path: /a } }",
                "{ local: { path: /b } }",
                &format!("      schedule: \"{schedule}\"\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("is not standard cron"), "{e}");
        }
        let e = doc(
            "{ local: { path: /a/../etc } }",
            "{ local: { path: /b } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("without '..'"), "{e}");
        let e = doc(
            "{ nfs: { server: n, export: /e, subdirectory: ../x } }",
            "{ local: { path: /b } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent.locations.a.nfs.subdirectory"), "{e}");
    }

    #[test]
    fn unknown_key_is_refused_naming_key_and_line() {
        let e = parse(&fixture("v1-unknown-key.yaml"), "ferry.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("adress"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.starts_with("ferry.yaml: network"), "{e}");
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let e = parse("version: 3\n", "f").unwrap_err().to_string();
        assert_eq!(
            e,
            "f: version: version 3 is not supported (this system reads versions 1 to 2) (line 1)"
        );
        let e = parse("version: 1\nhostname: bad_name\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hostname") && e.contains("line 2"), "{e}");
        let e = parse(
            "version: 1\nnetwork:\n  mode: static\n  address: 10.0.0.1\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("network.address") && e.contains("line 4"), "{e}");
        let e = parse("version: 1\nnetwork:\n  mode: bogus\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(parse("hostname: x\n", "f")
            .unwrap_err()
            .to_string()
            .contains("version"));
    }

    #[test]
    fn further_adapters_get_addresses_only_and_are_checked() {
        let d = parse(
            "version: 1\nnetwork:\n  interface: eth0\n  adapters:\n    eth1: { mode: static, address: 198.51.100.5/24 }\n    eth2: { mode: dhcp }\n",
            "f",
        )
        .unwrap();
        assert_eq!(d.network.adapters.len(), 2);
        assert_eq!(d.network.adapters["eth1"].mode, Mode::Static);
        let bad = |text: &str| parse(text, "f").unwrap_err().to_string();
        let e =
            bad("version: 1\nnetwork:\n  interface: eth0\n  adapters:\n    eth0: { mode: dhcp }\n");
        assert!(
            e.contains("network.adapters.eth0") && e.contains("the default adapter"),
            "{e}"
        );
        let e = bad("version: 1\nnetwork:\n  adapters:\n    eth1: { mode: static }\n");
        assert!(e.contains("static needs an address"), "{e}");
        let e = bad("version: 1\nnetwork:\n  adapters:\n    eth1: { mode: static, address: 198.51.100.5/33 }\n");
        assert!(
            e.contains("network.adapters.eth1.address") && e.contains("between 1 and 32"),
            "{e}"
        );
        let e =
            bad("version: 1\nnetwork:\n  adapters:\n    eth1: { mode: dhcp, gateway: 10.0.0.1 }\n");
        assert!(e.contains("unknown field `gateway`"), "{e}");
        let e = bad(
            "version: 1\nnetwork:\n  mode: static\n  address: 10.0.0.5/24\n  gateway: 10.1.0.1\n",
        );
        assert!(
            e.contains("network.gateway") && e.contains("outside the subnet"),
            "{e}"
        );
    }

    #[test]
    fn version_2_declares_agent_locations_and_tasks() {
        let d = parse(&fixture("v2-agent.yaml"), "t").unwrap();
        let a = d.agent.unwrap();
        assert_eq!(a.locations.len(), 3);
        let nas = a.locations["nas"].nfs.as_ref().unwrap();
        assert_eq!(nas.version.as_deref(), Some("4.1"));
        assert!(!nas.allow_special_files);
        assert!(
            a.locations["scratch"]
                .local
                .as_ref()
                .unwrap()
                .allow_special_files
        );
        let t = &a.tasks["nightly"];
        assert_eq!((t.source.as_str(), t.destination.as_str()), ("nas", "efs"));
        assert_eq!(
            t.options["VerifyMode"],
            OptionValue::Text("ONLY_FILES_TRANSFERRED".into())
        );
        assert_eq!(t.options["BytesPerSecond"], OptionValue::Number(-1));
        assert_eq!(
            t.options["Excludes"],
            OptionValue::List(vec!["*.tmp".into()])
        );
        assert!(t.start_on_boot);
        // v1 documents still parse, without the section.
        assert_eq!(parse(&fixture("v1-dhcp.yaml"), "t").unwrap().agent, None);
    }

    #[test]
    fn agent_section_errors_name_key_and_line() {
        let e = parse(&fixture("v2-agent-unknown-location.yaml"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.tasks.copy.destination")
                && e.contains("\"backup\" is not a location"),
            "{e}"
        );
        assert!(e.contains("line 9"), "{e}");
        let e = parse("version: 1\nagent: {}\n", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs version: 2") && e.contains("line 2"),
            "{e}"
        );
        let base = "version: 2\nagent:\n  locations:\n    a: { local: { path: /a } }\n    b: { local: { path: /b } }\n  tasks:\n    t:\n      source: a\n      destination: b\n";
        let e = parse(
            &format!("{base}      options: {{ VerifyMod: NONE }}\n"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown option VerifyMod"), "{e}");
        let e = parse(&format!("{base}      schedule: \"0 0 * * * *\"\n"), "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("five cron fields"), "{e}");
        let e = parse("version: 2\nagent:\n  locations:\n    a: { nfs: { server: s, export: /e }, local: { path: /a } }\n", "f").unwrap_err().to_string();
        assert!(e.contains("exactly one of nfs or local"), "{e}");
        let e = parse("version: 2\nagent:\n  locations:\n    a: { nfs: { server: s, export: /e, verson: \"3\" } }\n", "f").unwrap_err().to_string();
        assert!(e.contains("verson"), "{e}");
        let e = parse("version: 2\nagent:\n  locations:\n    a: { local: { path: /a, allow_special_files: yes please } }\n", "f").unwrap_err().to_string();
        assert!(
            e.contains("agent.locations.a.local.allow_special_files")
                && e.contains("expected a boolean"),
            "{e}"
        );
    }

    #[test]
    fn support_section_parses_and_validates() {
        let d = parse(&fixture("v1-support.yaml"), "t").unwrap();
        let s = d.support.unwrap();
        assert!(s.public_key.unwrap().starts_with("ssh-ed25519 AAAA"));
        assert_eq!(s.open_hours, Some(4));
        assert_eq!(s.allow_from.as_deref(), Some("198.51.100.0/24"));
        let d = parse(&fixture("v1-support-outbound.yaml"), "t").unwrap();
        let s = d.support.unwrap();
        assert_eq!(s.open_for(), Some(std::time::Duration::from_secs(30 * 60)));
        assert_eq!(
            s.outbound.unwrap(),
            SupportOutbound {
                host: "support.example.org".into(),
                host_key: Some("SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII".into()),
                port: 22,
                user: "ferry".into(),
                tunnel_port: 2222
            }
        );
        // closed by default
        assert_eq!(parse("version: 1\n", "t").unwrap().support, None);
    }

    #[test]
    fn support_errors_name_key_and_line() {
        let e = parse(&fixture("v1-support-bad-key.yaml"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("support.public_key")
                && e.contains("not a ssh-ed25519 key")
                && e.contains("line 4"),
            "{e}"
        );
        let key = fixture("v1-support.yaml")
            .lines()
            .find(|l| l.contains("public_key"))
            .unwrap()
            .to_string();
        let doc = |rest: &str| format!("version: 1\nsupport:\n{key}\n{rest}");
        let cases = [
            ("  open_hours: 0\n", "support.open_hours: give 1 to 168", 4),
            (
                "  open_minutes: 20000\n",
                "support.open_minutes: give 1 to 10080",
                4,
            ),
            ("  open_hours: 1\n  open_minutes: 5\n", "not both", 5),
            (
                "  allow_from: 198.51.100.0\n",
                "support.allow_from: \"198.51.100.0\" is not an IPv4 network",
                4,
            ),
            (
                "  outbound: { host: \"a b\", host_key: \"SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII\" }\n",
                "support.outbound.host",
                4,
            ),
            (
                "  outbound: { host: \"h,evil\", host_key: \"SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII\" }\n",
                "support.outbound.host",
                4,
            ),
            (
                "  outbound: { host: h, host_key: \"SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII\", user: \"x y\" }\n",
                "support.outbound.user",
                4,
            ),
            // the support host's key: required, and a key or a SHA-256 fingerprint
            (
                "  outbound: { host: h }\n",
                "support.outbound.host_key: the outbound mode needs the support host's key",
                4,
            ),
            (
                "  outbound:\n    host: h\n    host_key: \"MD5:21:0e:43:d3:10:1e:3b:cd:e8:5b:aa:89:cd:68:2d:10\"\n",
                "support.outbound.host_key: an MD5 fingerprint is too weak",
                6,
            ),
            (
                "  outbound:\n    host: h\n    host_key: \"ssh-ed25519 AAAA\"\n",
                "support.outbound.host_key: give the support host's public key or its SHA-256 fingerprint",
                6,
            ),
            (
                "  outbound: { host: h, prot: 22 }\n",
                "unknown field `prot`",
                4,
            ),
            ("  opne_hours: 1\n", "unknown field `opne_hours`", 4),
        ];
        for (rest, want, line) in cases {
            let e = parse(&doc(rest), "f").unwrap_err().to_string();
            assert!(e.contains(want), "{rest:?}: {e}");
            assert!(e.contains(&format!("line {line}")), "{rest:?}: {e}");
        }
        let e = parse("version: 1\nsupport:\n  open_hours: 2\n", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs support.public_key") && e.contains("line 3"),
            "{e}"
        );
        let e = parse(
            "version: 1\nsupport:\n  public_key: \"ssh-dss AAAA\"\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a key type"), "{e}");
    }

    #[test]
    fn bad_document_keeps_last_good_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_dir(dir.path());
        let first = store.load();
        assert_eq!(first.config, Config::first_boot());
        assert!(first.refused.is_empty());

        store
            .offer("version: 1\nhostname: alpha\n", "fw_cfg")
            .unwrap();
        assert_eq!(store.load().config.hostname(), "alpha");

        // a bad offer changes nothing
        let e = store
            .offer("version: 1\nhostnme: beta\n", "fw_cfg")
            .unwrap_err();
        assert!(e.to_string().contains("hostnme"), "{e}");
        assert_eq!(store.load().config.hostname(), "alpha");

        // someone edits the document badly: the last good stays in force
        fs::write(&store.document, "version: 1\nhostname: [\n").unwrap();
        let l = store.load();
        assert_eq!(l.config.hostname(), "alpha");
        assert!(l.config.origin.ends_with("ferry.last-good.yaml"));
        assert_eq!(l.refused.len(), 1);
    }
}
