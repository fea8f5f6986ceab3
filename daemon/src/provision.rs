// SPDX-License-Identifier: MIT
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

use super::agent::Agent;
use ferry_model::api::{self as records, LocationSpec, NfsVersion, Task};

/// The document's `agent:` section (ferry-model's, as ferry-init checks it).
pub use ferry_model::config::agent::{AgentLocation, AgentSection as Provision};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("provisioning: {0}")]
    Invalid(String),
    /// The section fails ferry-model's checks (the key and why).
    #[error("provisioning: {0}")]
    Checked(#[from] ferry_model::config::Invalid),
    #[error("provisioning: {0}")]
    Store(#[from] super::store::StoreError),
    #[error("provisioning: {0}")]
    Queue(#[from] super::agent::QueueError),
}

fn version(v: Option<&str>) -> NfsVersion {
    // Checked before (ferry_model::nfs::VERSIONS).
    v.and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// A checked location's record, and what this machine can tell of it (a
/// local directory exists).
fn spec(loc: &AgentLocation) -> Result<LocationSpec, String> {
    let spec = match (&loc.nfs, &loc.efs, &loc.local) {
        (Some(n), _, _) => LocationSpec::Nfs {
            server: n.server.clone(),
            export: n.export.clone(),
            subdirectory: n.subdirectory.clone(),
            version: version(n.version.as_deref()),
            mount_options: n.mount_options.clone(),
            allow_special_files: n.allow_special_files,
        },
        (None, Some(e), _) => LocationSpec::Efs {
            file_system_id: e.file_system_id.clone(),
            region: e.region.clone(),
            access_point_id: e.access_point_id.clone(),
            subdirectory: e.subdirectory.clone(),
            in_transit_encryption: e.in_transit_encryption,
            mount_target_address: e.mount_target_address.clone(),
        },
        (None, None, Some(l)) => LocationSpec::Local {
            path: l.path.clone(),
            allow_special_files: l.allow_special_files,
        },
        (None, None, None) => return Err("give exactly one of nfs, efs or local".into()),
    };
    super::check::location(&spec)?;
    Ok(spec)
}

/// Applies a provisioning document; returns what it did, one line each.
pub fn apply(agent: &Agent, doc: &Provision) -> Result<Vec<String>, ProvisionError> {
    // Check everything first: as ferry-init checks the document, then what
    // only this machine can tell.
    doc.check()?;
    let mut specs = BTreeMap::new();
    for (name, loc) in &doc.locations {
        let spec = spec(loc)
            .map_err(|m| ProvisionError::Invalid(format!("agent.locations.{name}: {m}")))?;
        specs.insert(name.clone(), spec);
    }
    let mut tasks = Vec::new();
    for (name, t) in &doc.tasks {
        let invalid = |m: String| ProvisionError::Invalid(format!("agent.tasks.{name}: {m}"));
        super::check::task(&specs[&t.source], &specs[&t.destination]).map_err(invalid)?;
        let options = t.options().map_err(invalid)?;
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
                        task_id: records::new_id("task"),
                        name: name.clone(),
                        source_location_id: source,
                        destination_location_id: destination,
                        options,
                        schedule: t.schedule.clone(),
                        schedule_details: None,
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
    use serde_json::{json, Value};

    fn spec(v: Value) -> Result<LocationSpec, String> {
        super::spec(&serde_json::from_value::<AgentLocation>(v).map_err(|e| e.to_string())?)
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
