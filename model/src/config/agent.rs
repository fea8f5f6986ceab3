// SPDX-License-Identifier: MIT
//! The `agent:` section (version 2): the locations and tasks ferry-agent
//! declares when it starts. ferry-init checks it with the document and
//! hands it to the agent as JSON (`/etc/ferry/agent.json`); the agent
//! checks it again (the same [`AgentSection::check`]), then what only the
//! machine can tell (a local directory exists, two paths are not one
//! through a link), and changes nothing if any of it fails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Invalid;
use crate::{efs, nfs, options, schedule};

/// ```yaml
/// agent:
///   locations:
///     nas:    { nfs: { server: 192.0.2.20, export: /exports/data, version: "4.1" } }
///     efs:    { efs: { file_system_id: fs-0123456789abcdef0, region: eu-west-1, in_transit_encryption: TLS1_2 } }
///     nas2:   { nfs: { server: nas2.example, export: /, mount_options: "nconnect=16" } }
///     devs:   { local: { path: /mnt/devs, allow_special_files: true } }   # a hub's: devices from agents
///   tasks:
///     nightly:
///       source: nas
///       destination: efs
///       schedule: "0 2 * * *"          # five cron fields, UTC
///       options: { VerifyMode: ONLY_FILES_TRANSFERRED, PreserveDeletedFiles: REMOVE }
///       start_on_boot: false
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    #[serde(default)]
    pub locations: BTreeMap<String, AgentLocation>,
    #[serde(default)]
    pub tasks: BTreeMap<String, AgentTask>,
}

/// Exactly one of `nfs`, `efs` or `local`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentLocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efs: Option<EfsLocation>,
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
    /// automatic (default), 3, 4.0 or 4.1 ([`nfs::VERSIONS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Added to the agent's options, and overriding them ([`nfs::mount_options`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<String>,
    /// On a hub: agents may make device nodes, FIFOs, sockets and set-id
    /// files here (ferry-agent's `AllowSpecialFiles`; false by default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_special_files: bool,
}

/// An Amazon EFS file system ([`efs`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EfsLocation {
    pub file_system_id: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_point_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdirectory: Option<String>,
    /// NONE (default) or TLS1_2.
    #[serde(default)]
    pub in_transit_encryption: efs::InTransitEncryption,
    /// The mount target's IP address, when its name does not resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_target_address: Option<String>,
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
    /// Names of locations of the same section.
    pub source: String,
    pub destination: String,
    /// DataSync's option names and values, e.g. `VerifyMode: ONLY_FILES_TRANSFERRED`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, OptionValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Queue an execution each time the agent starts (e.g. at each boot).
    #[serde(default)]
    pub start_on_boot: bool,
}

/// A task option's value as the document gives it: a DataSync name, a
/// number, or a list of patterns ([`options::Options`] says which option
/// takes which).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OptionValue {
    Number(i64),
    Text(String),
    List(Vec<String>),
}

impl AgentTask {
    /// The task's options: DataSync's defaults with the task's, checked.
    pub fn options(&self) -> Result<options::Options, String> {
        let changes = match serde_json::to_value(&self.options) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => unreachable!("a map of strings, numbers and lists is a JSON object"),
        };
        options::Options::new().with(&changes)
    }
}

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
    match (&l.nfs, &l.efs, &l.local) {
        (Some(n), _, _) => (
            n.server.trim_end_matches('.').to_ascii_lowercase(),
            parts(&[&n.export, n.subdirectory.as_deref().unwrap_or("")]),
        ),
        (None, Some(e), _) => (
            efs::mount_target_name(&e.file_system_id, &e.region),
            parts(&[e.subdirectory.as_deref().unwrap_or("")]),
        ),
        (None, None, Some(p)) => (String::new(), parts(&[&p.path])),
        (None, None, None) => (String::new(), Vec::new()),
    }
}

impl AgentLocation {
    /// Checks one location; `key` is its own (`agent.locations.nas`).
    pub fn check(&self, key: &str) -> Result<(), Invalid> {
        match (&self.nfs, &self.efs, &self.local) {
            (Some(n), None, None) => {
                nfs::check(
                    &n.server,
                    &n.export,
                    n.subdirectory.as_deref(),
                    n.mount_options.as_deref(),
                )
                .map_err(|(field, why)| Invalid::new(format!("{key}.nfs.{field}"), why))?;
                if let Some(v) = &n.version {
                    if !nfs::VERSIONS.contains(&v.as_str()) {
                        return Err(Invalid::new(
                            format!("{key}.nfs.version"),
                            format!("{v:?}: give automatic, 3, 4.0 or 4.1"),
                        ));
                    }
                }
                Ok(())
            }
            (None, Some(e), None) => efs::check(
                &e.file_system_id,
                &e.region,
                e.access_point_id.as_deref(),
                e.subdirectory.as_deref(),
                e.in_transit_encryption,
                e.mount_target_address.as_deref(),
            )
            .map_err(|(field, why)| Invalid::new(format!("{key}.efs.{field}"), why)),
            (None, None, Some(local)) => {
                let p = &local.path;
                if !p.starts_with('/')
                    || p.split('/').any(|c| c == "..")
                    || p.contains(|c: char| c.is_control())
                {
                    return Err(Invalid::new(
                        format!("{key}.local.path"),
                        format!(
                            "{p:?} must be an absolute path without '..' or control characters"
                        ),
                    ));
                }
                Ok(())
            }
            _ => Err(Invalid::new(key, "give exactly one of nfs, efs or local")),
        }
    }
}

impl AgentSection {
    /// Checks names, locations, references, tasks into themselves, option
    /// values and schedules; the first problem, its key named.
    pub fn check(&self) -> Result<(), Invalid> {
        for (name, loc) in &self.locations {
            let key = format!("agent.locations.{name}");
            if !valid_name(name) {
                return Err(Invalid::new(
                    key,
                    format!("{name:?} is not a name (letters, digits, '-', '_', at most 64)"),
                ));
            }
            loc.check(&key)?;
        }
        for (name, task) in &self.tasks {
            let key = format!("agent.tasks.{name}");
            if !valid_name(name) {
                return Err(Invalid::new(
                    key,
                    format!("{name:?} is not a name (letters, digits, '-', '_', at most 64)"),
                ));
            }
            for (field, loc) in [("source", &task.source), ("destination", &task.destination)] {
                if !self.locations.contains_key(loc) {
                    let declared: Vec<&str> = self.locations.keys().map(String::as_str).collect();
                    return Err(Invalid::new(
                        format!("{key}.{field}"),
                        format!(
                            "{loc:?} is not a location of agent.locations (declared: {})",
                            if declared.is_empty() {
                                "none".into()
                            } else {
                                declared.join(", ")
                            }
                        ),
                    ));
                }
            }
            if task.source == task.destination {
                return Err(Invalid::new(
                    format!("{key}.destination"),
                    "the source and the destination are the same location",
                ));
            }
            let (s, d) = (
                place(&self.locations[&task.source]),
                place(&self.locations[&task.destination]),
            );
            if s.0 == d.0 {
                if d.1.starts_with(&s.1) {
                    return Err(Invalid::new(
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
                    return Err(Invalid::new(
                        format!("{key}.destination"),
                        format!("the source {:?} is inside {:?}: the task would overwrite or delete its own source", task.source, task.destination),
                    ));
                }
            }
            task.options()
                .map_err(|why| Invalid::new(format!("{key}.options"), why))?;
            if let Some(s) = &task.schedule {
                schedule::parse(s).map_err(|why| Invalid::new(format!("{key}.schedule"), why))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: serde_json::Value) -> Result<(), String> {
        let a: AgentSection = serde_json::from_value(json).map_err(|e| e.to_string())?;
        a.check().map_err(|e| e.to_string())
    }

    fn task(options: serde_json::Value, schedule: &str) -> serde_json::Value {
        serde_json::json!({
            "locations": {"a": {"local": {"path": "/a"}}, "b": {"nfs": {"server": "nas", "export": "/e"}}},
            "tasks": {"t": {"source": "a", "destination": "b", "options": options, "schedule": schedule}},
        })
    }

    #[test]
    fn option_values_and_schedules_are_checked_as_the_agent_checks_them() {
        check(task(
            serde_json::json!({"VerifyMode": "NONE", "BytesPerSecond": -1}),
            "0 2 * * *",
        ))
        .unwrap();
        let e = check(task(
            serde_json::json!({"VerifyMode": "SOMETIMES"}),
            "0 2 * * *",
        ))
        .unwrap_err();
        assert!(
            e.starts_with("agent.tasks.t.options: options: unknown variant `SOMETIMES`"),
            "{e}"
        );
        let e = check(task(serde_json::json!({"Mtime": "NONE"}), "0 2 * * *")).unwrap_err();
        assert!(e.contains("Atime BEST_EFFORT needs Mtime PRESERVE"), "{e}");
        let e = check(task(serde_json::json!({}), "0 0 L * *")).unwrap_err();
        assert!(
            e.starts_with("agent.tasks.t.schedule: ") && e.contains("is not standard cron"),
            "{e}"
        );
    }

    #[test]
    fn locations_are_checked_as_the_agent_checks_them() {
        let loc = |l: serde_json::Value| check(serde_json::json!({"locations": {"x": l}}));
        let e = loc(serde_json::json!({"nfs": {"server": "nas", "export": "/e", "mount_options": "vers=3"}})).unwrap_err();
        assert!(
            e.starts_with(
                "agent.locations.x.nfs.mount_options: the mount option vers is set by the agent"
            ),
            "{e}"
        );
        let e = loc(serde_json::json!({"nfs": {"server": "nas", "export": "/e", "version": "5"}}))
            .unwrap_err();
        assert_eq!(
            e,
            "agent.locations.x.nfs.version: \"5\": give automatic, 3, 4.0 or 4.1"
        );
        let e = loc(serde_json::json!({"local": {"path": "/a/../b"}})).unwrap_err();
        assert!(
            e.starts_with("agent.locations.x.local.path: ") && e.contains("without '..'"),
            "{e}"
        );
        let e = loc(serde_json::json!({})).unwrap_err();
        assert_eq!(
            e,
            "agent.locations.x: give exactly one of nfs, efs or local"
        );
        let e = check(serde_json::json!({"tasks": {"t": {"source": "a", "destination": "b"}}}))
            .unwrap_err();
        assert_eq!(
            e,
            "agent.tasks.t.source: \"a\" is not a location of agent.locations (declared: none)"
        );
    }
}
