//! The `agent:` section (version 2): the locations and tasks ferry-agent
//! declares when it starts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// Checks the `agent:` section; `Err((key, why))`.
pub fn check(a: &AgentSection) -> Result<(), (String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{fixture, parse};

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
}
