// SPDX-License-Identifier: MIT
//! Checks on locations and on a task's pair of locations, shared by the API,
//! provisioning and the runner (which checks again when an execution
//! starts: a provisioned location may have changed under a task since).

use std::io;
use std::path::Path;

use ferry_model::api::LocationSpec;

/// Connections to the hub a location may ask for.
pub const CONNECTIONS: std::ops::RangeInclusive<u32> = 1..=64;

/// What can be checked of one location on this machine.
pub fn location(spec: &LocationSpec) -> Result<(), String> {
    match spec {
        LocationSpec::Local { path, .. } => {
            local_shape(path)?;
            if !Path::new(path).is_dir() {
                return Err(format!(
                    "{path} is not a directory on the agent: a local location must already exist"
                ));
            }
            Ok(())
        }
        LocationSpec::Nfs {
            server,
            export,
            subdirectory,
            mount_options,
            ..
        } => {
            // as the configuration document's are checked (ferry-model)
            ferry_model::nfs::check(
                server,
                export,
                subdirectory.as_deref(),
                mount_options.as_deref(),
            )
            .map_err(|(_, why)| why)
        }
        LocationSpec::Efs {
            file_system_id,
            region,
            access_point_id,
            subdirectory,
            in_transit_encryption,
            mount_target_address,
        } => ferry_model::efs::check(
            file_system_id,
            region,
            access_point_id.as_deref(),
            subdirectory.as_deref(),
            *in_transit_encryption,
            mount_target_address.as_deref(),
        )
        .map_err(|(_, why)| why),
        LocationSpec::Hub {
            hub_location_id,
            connections,
            ..
        } => {
            if hub_location_id.is_empty()
                || !hub_location_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(format!(
                    "{hub_location_id:?} is not a location id of the hub (loc-...)"
                ));
            }
            check_connections(*connections)
        }
        LocationSpec::Agent {
            agent_id,
            additional_agent_ids,
            location: inner,
            connections,
            ..
        } => {
            if additional_agent_ids.len() >= AGENTS_MAX {
                return Err(format!(
                    "an agent's location names at most {AGENTS_MAX} agents"
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for id in std::iter::once(agent_id).chain(additional_agent_ids) {
                let rest = id.strip_prefix("agent-").unwrap_or("");
                if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(format!(
                        "{id:?} is not an agent id (agent-...; see ferry agent list)"
                    ));
                }
                if !seen.insert(id) {
                    return Err(format!("the agent {id} is named twice"));
                }
            }
            check_connections(*connections)?;
            match inner.as_ref() {
                // The path is on the agent: only its shape can be checked here.
                LocationSpec::Local { path, .. } => local_shape(path),
                l @ (LocationSpec::Nfs { .. } | LocationSpec::Efs { .. }) => location(l),
                _ => Err("an agent's location is NFS, EFS or LOCAL".into()),
            }
        }
    }
}

/// Agents on one location at most (DataSync takes four).
pub const AGENTS_MAX: usize = 16;

fn local_shape(path: &str) -> Result<(), String> {
    if !Path::new(path).is_absolute() || path.contains('\0') {
        return Err(format!("the path {path:?} must be absolute"));
    }
    Ok(())
}

fn check_connections(n: Option<u32>) -> Result<(), String> {
    match n {
        Some(n) if !CONNECTIONS.contains(&n) => Err(format!(
            "{n} connections: give {} to {}",
            CONNECTIONS.start(),
            CONNECTIONS.end()
        )),
        _ => Ok(()),
    }
}

/// The source and the destination must not be the same directory, nor one
/// inside the other: the sync would copy into itself, or overwrite or
/// delete its own source. Local directories are compared by what they are
/// (device and inode up the tree: links and `..` cannot hide it), NFS
/// locations by server, export and subdirectory.
pub fn task(source: &LocationSpec, destination: &LocationSpec) -> Result<(), String> {
    let inner = |l: &'_ LocationSpec| match l {
        LocationSpec::Agent { location, .. } => location.clone(),
        l => Box::new(l.clone()),
    };
    let (source_inner, destination_inner) = (inner(source), inner(destination));
    if let LocationSpec::Agent { location, .. } = destination {
        // The agents write it themselves: the same agents as the source's.
        fn agents(l: &LocationSpec) -> Option<Vec<&String>> {
            let LocationSpec::Agent {
                agent_id,
                additional_agent_ids,
                ..
            } = l
            else {
                return None;
            };
            let mut all: Vec<&String> = additional_agent_ids.iter().collect();
            all.push(agent_id);
            all.sort();
            Some(all)
        }
        if agents(source).is_none() || agents(source) != agents(destination) {
            return Err(format!(
                "the destination {} is an agent's location: the source must be one of the same agents' locations",
                destination.uri()
            ));
        }
        if !matches!(
            location.as_ref(),
            LocationSpec::Nfs { .. } | LocationSpec::Efs { .. } | LocationSpec::Local { .. }
        ) {
            return Err("an agent's location is NFS, EFS or LOCAL".into());
        }
    }
    let both_on_agents = matches!(
        (source, destination),
        (LocationSpec::Agent { .. }, LocationSpec::Agent { .. })
    );
    let relation = match (source_inner.as_ref(), destination_inner.as_ref()) {
        // On the hub, an agent's local path is on that agent: comparable
        // only with another of the agents' own.
        (LocationSpec::Local { path: s, .. }, LocationSpec::Local { path: d, .. })
            if both_on_agents =>
        {
            lexical_relation(s, d)
        }
        (LocationSpec::Local { path: s, .. }, LocationSpec::Local { path: d, .. })
            if !matches!(source, LocationSpec::Agent { .. }) =>
        {
            local_relation(Path::new(s), Path::new(d))
        }
        (s, d) if s.is_mounted() && d.is_mounted() => nfs_relation(s, d),
        _ => None,
    };
    let (s, d) = (source.uri(), destination.uri());
    match relation {
        Some(Relation::Same) => Err(format!(
            "the source {s} and the destination {d} are the same directory"
        )),
        Some(Relation::DestinationInside) => Err(format!(
            "the destination {d} is inside the source {s}: the task would copy into itself"
        )),
        Some(Relation::SourceInside) => Err(format!(
            "the source {s} is inside the destination {d}: the task would overwrite or delete its own source"
        )),
        None => Ok(()),
    }
}

/// How two absolute paths on another machine nest, by their names alone.
fn lexical_relation(source: &str, destination: &str) -> Option<Relation> {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    let (s, d) = (parts(source), parts(destination));
    if s == d {
        Some(Relation::Same)
    } else if d.starts_with(&s) {
        Some(Relation::DestinationInside)
    } else if s.starts_with(&d) {
        Some(Relation::SourceInside)
    } else {
        None
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Relation {
    Same,
    DestinationInside,
    SourceInside,
}

/// (device, inode) of `dir` and of each directory above it, to the root.
fn lineage(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(dir, flags, Mode::empty())?;
    let mut out = Vec::new();
    loop {
        let st = rustix::fs::fstat(&fd)?;
        let id = (st.st_dev, st.st_ino);
        if out.last() == Some(&id) || out.len() > 4096 {
            return Ok(out);
        }
        out.push(id);
        fd = rustix::fs::openat(&fd, "..", flags, Mode::empty())?;
    }
}

fn local_relation(source: &Path, destination: &Path) -> Option<Relation> {
    let (s, d) = (lineage(source).ok()?, lineage(destination).ok()?);
    if s[0] == d[0] {
        Some(Relation::Same)
    } else if d.contains(&s[0]) {
        Some(Relation::DestinationInside)
    } else if s.contains(&d[0]) {
        Some(Relation::SourceInside)
    } else {
        None
    }
}

/// Server and path components of an NFS location (an EFS file system's
/// server is its mount target's name, its export `/`).
fn nfs_place(spec: &LocationSpec) -> Option<(String, Vec<String>)> {
    let (server, export, subdirectory) = match spec {
        LocationSpec::Nfs {
            server,
            export,
            subdirectory,
            ..
        } => (server.clone(), export.as_str(), subdirectory),
        LocationSpec::Efs {
            file_system_id,
            region,
            subdirectory,
            ..
        } => (
            ferry_model::efs::mount_target_name(file_system_id, region),
            "/",
            subdirectory,
        ),
        _ => return None,
    };
    let parts = export
        .split('/')
        .chain(subdirectory.as_deref().unwrap_or("").split('/'))
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    Some((server.trim_end_matches('.').to_ascii_lowercase(), parts))
}

fn nfs_relation(source: &LocationSpec, destination: &LocationSpec) -> Option<Relation> {
    let (ss, sp) = nfs_place(source)?;
    let (ds, dp) = nfs_place(destination)?;
    if ss != ds {
        return None;
    }
    if sp == dp {
        Some(Relation::Same)
    } else if dp.starts_with(&sp) {
        Some(Relation::DestinationInside)
    } else if sp.starts_with(&dp) {
        Some(Relation::SourceInside)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(p: &Path) -> LocationSpec {
        LocationSpec::local(p.display().to_string())
    }

    fn nfs(server: &str, export: &str, sub: Option<&str>) -> LocationSpec {
        LocationSpec::Nfs {
            server: server.into(),
            export: export.into(),
            subdirectory: sub.map(str::to_string),
            version: Default::default(),
            mount_options: None,
            allow_special_files: false,
        }
    }

    #[test]
    fn nested_local_directories_are_refused_even_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = a.join("b");
        let c = tmp.path().join("c");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::create_dir_all(&c).unwrap();
        let e = task(&local(&a), &local(&b)).unwrap_err();
        assert!(e.contains("inside the source"), "{e}");
        let e = task(&local(&b), &local(&a)).unwrap_err();
        assert!(e.contains("inside the destination"), "{e}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&b, &link).unwrap();
        let e = task(&local(&a), &local(&link)).unwrap_err();
        assert!(e.contains("inside the source"), "{e}");
        let e = task(&local(&b), &local(&link)).unwrap_err();
        assert!(e.contains("same directory"), "{e}");
        task(&local(&b), &local(&c)).unwrap();
    }

    #[test]
    fn nested_places_of_one_export_are_refused() {
        let e = task(
            &nfs("NAS", "/exports", Some("data")),
            &nfs("nas", "/exports/data/copy", None),
        )
        .unwrap_err();
        assert!(e.contains("inside the source"), "{e}");
        let e = task(
            &nfs("nas", "/exports/data/", None),
            &nfs("nas", "/exports", None),
        )
        .unwrap_err();
        assert!(e.contains("inside the destination"), "{e}");
        task(
            &nfs("nas", "/exports/a", None),
            &nfs("nas", "/exports/ab", None),
        )
        .unwrap();
        task(
            &nfs("nas", "/exports", None),
            &nfs("other", "/exports/a", None),
        )
        .unwrap();
    }

    #[test]
    fn bad_locations_say_why() {
        let e = location(&LocationSpec::local("/nonexistent/dir")).unwrap_err();
        assert!(e.contains("must already exist"), "{e}");
        let e = location(&nfs("nas", "/e", Some("../../etc"))).unwrap_err();
        assert!(e.contains("'..'"), "{e}");
        let hub = |n| LocationSpec::Hub {
            hub_location_id: "loc-1".into(),
            compress: false,
            connections: Some(n),
        };
        assert!(location(&hub(0)).unwrap_err().contains("give 1 to 64"));
        assert!(location(&hub(1000)).is_err());
        location(&hub(8)).unwrap();
    }
}
