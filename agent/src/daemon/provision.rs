//! Provisioning: locations and tasks declared in the appliance's
//! configuration document (its `agent:` section, which ferry-init hands over
//! as JSON), applied when the agent starts.
//!
//! Declared items are keyed by name: a location or task already provisioned
//! under that name is updated to match the document, a new name is created.
//! Nothing is deleted when it leaves the document (a task's history is
//! worth more than tidiness; `ferry task delete` removes it). The whole
//! document is checked before anything is stored: one bad entry and nothing
//! changes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::agent::Agent;
use super::model::{self, LocationSpec, NfsVersion, Task};
use super::{api, nfs, schedule};
use ferry_engine::Options;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    #[serde(default)]
    pub locations: BTreeMap<String, DeclaredLocation>,
    #[serde(default)]
    pub tasks: BTreeMap<String, DeclaredTask>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DeclaredLocation {
    Nfs {
        server: String,
        export: String,
        #[serde(default)]
        subdirectory: Option<String>,
        /// automatic (default), 3, 4.0 or 4.1.
        #[serde(default)]
        version: Option<String>,
        #[serde(default)]
        mount_options: Option<String>,
        /// On a hub: agents may make device nodes, FIFOs, sockets and
        /// set-id files here (`AllowSpecialFiles`; false by default).
        #[serde(default)]
        allow_special_files: bool,
    },
    Local {
        path: String,
        /// As for NFS.
        #[serde(default)]
        allow_special_files: bool,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredTask {
    /// Names of locations declared in the same document.
    pub source: String,
    pub destination: String,
    /// DataSync's option names and values, e.g. `VerifyMode: ONLY_FILES_TRANSFERRED`.
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub schedule: Option<String>,
    /// Queue an execution each time the agent starts (e.g. at each boot).
    #[serde(default)]
    pub start_on_boot: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("provisioning: {0}")]
    Invalid(String),
    #[error("provisioning: {0}")]
    Store(#[from] super::store::StoreError),
}

fn version(v: Option<&str>) -> Result<NfsVersion, String> {
    Ok(match v.unwrap_or("automatic") {
        "automatic" => NfsVersion::Automatic,
        "3" => NfsVersion::Nfs3,
        "4.0" => NfsVersion::Nfs4_0,
        "4.1" => NfsVersion::Nfs4_1,
        other => return Err(format!("version {other:?}: give automatic, 3, 4.0 or 4.1")),
    })
}

impl DeclaredLocation {
    fn spec(&self) -> Result<LocationSpec, String> {
        Ok(match self {
            DeclaredLocation::Nfs {
                server,
                export,
                subdirectory,
                version: v,
                mount_options,
                allow_special_files,
            } => {
                nfs::validate(server, export, mount_options.as_deref())?;
                LocationSpec::Nfs {
                    server: server.clone(),
                    export: export.clone(),
                    subdirectory: subdirectory.clone(),
                    version: version(v.as_deref())?,
                    mount_options: mount_options.clone(),
                    allow_special_files: *allow_special_files,
                }
            }
            DeclaredLocation::Local {
                path,
                allow_special_files,
            } => LocationSpec::Local {
                path: path.clone(),
                allow_special_files: *allow_special_files,
            },
        })
        .and_then(|spec| super::check::location(&spec).map(|()| spec))
    }
}

/// As ferry-init checks names in the document (init/src/config/agent.rs).
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Applies a provisioning document; returns what it did, one line each.
pub fn apply(agent: &Agent, doc: &Provision) -> Result<Vec<String>, ProvisionError> {
    // Check everything first.
    let mut specs = BTreeMap::new();
    for (what, name) in doc
        .locations
        .keys()
        .map(|n| ("location", n))
        .chain(doc.tasks.keys().map(|n| ("task", n)))
    {
        if !valid_name(name) {
            return Err(ProvisionError::Invalid(format!(
                "{what} {name:?}: a name is 1 to 64 letters, digits, '-' or '_'"
            )));
        }
    }
    for (name, loc) in &doc.locations {
        let spec = loc
            .spec()
            .map_err(|m| ProvisionError::Invalid(format!("location {name}: {m}")))?;
        specs.insert(name.clone(), spec);
    }
    let mut tasks = Vec::new();
    for (name, t) in &doc.tasks {
        let invalid = |m: String| ProvisionError::Invalid(format!("task {name}: {m}"));
        for (role, loc) in [("source", &t.source), ("destination", &t.destination)] {
            if !specs.contains_key(loc) {
                return Err(invalid(format!(
                    "the {role} {loc:?} is not a location of the document (declared: {})",
                    specs.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if t.source == t.destination {
            return Err(invalid(
                "the source and the destination are the same location".into(),
            ));
        }
        super::check::task(&specs[&t.source], &specs[&t.destination]).map_err(invalid)?;
        let options = api::apply_options(&Options::new(), &t.options)
            .map_err(|e| invalid(e.message().to_string()))?;
        if let Some(s) = &t.schedule {
            schedule::parse(s).map_err(invalid)?;
        }
        tasks.push((name, t, options));
    }

    // Then store it.
    let mut done = Vec::new();
    let mut ids = BTreeMap::new();
    let mut start = Vec::new();
    {
        let store = agent.store.lock().unwrap();
        for (name, spec) in &specs {
            let id = match store.provisioned_location(name)? {
                Some(loc) if &loc.spec == spec => loc.location_id,
                Some(loc) => {
                    store.update_location(&loc.location_id, spec)?;
                    done.push(format!(
                        "location {name} ({}) updated: {}",
                        loc.location_id,
                        spec.uri()
                    ));
                    loc.location_id
                }
                None => {
                    let loc = store.insert_location(spec)?;
                    store.name_location(name, &loc.location_id)?;
                    done.push(format!(
                        "location {name} created as {}: {}",
                        loc.location_id,
                        spec.uri()
                    ));
                    loc.location_id
                }
            };
            ids.insert(name.clone(), id);
        }
        for (name, t, options) in tasks {
            let source = ids[&t.source].clone();
            let destination = ids[&t.destination].clone();
            let task_id = match store.task_by_name(name)? {
                Some(existing) => {
                    if existing.options != options
                        || existing.schedule != t.schedule
                        || existing.source_location_id != source
                        || existing.destination_location_id != destination
                    {
                        store.update_task(
                            &existing.task_id,
                            name,
                            &options,
                            t.schedule.as_deref(),
                        )?;
                        store.set_task_locations(&existing.task_id, &source, &destination)?;
                        done.push(format!("task {name} ({}) updated", existing.task_id));
                    }
                    existing.task_id
                }
                None => {
                    let task = Task {
                        task_id: model::new_id("task"),
                        name: name.clone(),
                        source_location_id: source,
                        destination_location_id: destination,
                        options,
                        schedule: t.schedule.clone(),
                        status: String::new(),
                        current_task_execution_id: None,
                        creation_time: String::new(),
                    };
                    store.insert_task(&task)?;
                    done.push(format!("task {name} created as {}", task.task_id));
                    task.task_id
                }
            };
            if t.start_on_boot {
                start.push((name.clone(), task_id));
            }
        }
    }
    for (name, task_id) in start {
        if let Some(id) = agent.start_scheduled(&task_id)? {
            done.push(format!("task {name} started at boot as {id}"));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<LocationSpec, String> {
        serde_json::from_value::<DeclaredLocation>(v)
            .map_err(|e| e.to_string())?
            .spec()
    }

    #[test]
    fn special_files_are_allowed_only_where_the_document_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().to_string_lossy().into_owned();
        let nfs = json!({"server": "nas.example", "export": "/exports/data"});
        let with = |mut v: Value, allow: Value| {
            v["allow_special_files"] = allow;
            v
        };

        // Not said: not allowed.
        assert!(!spec(json!({"local": {"path": path}}))
            .unwrap()
            .allows_special_files());
        assert!(!spec(json!({"nfs": nfs})).unwrap().allows_special_files());
        // Said, either way.
        for allow in [true, false] {
            let local = spec(json!({"local": {"path": path, "allow_special_files": allow}}));
            assert_eq!(local.unwrap().allows_special_files(), allow);
            let remote = spec(json!({"nfs": with(nfs.clone(), allow.into())}));
            assert_eq!(remote.unwrap().allows_special_files(), allow);
        }
        // Only a boolean.
        let e = spec(json!({"local": {"path": path, "allow_special_files": "yes"}})).unwrap_err();
        assert!(e.contains("expected a boolean"), "{e}");
    }
}
