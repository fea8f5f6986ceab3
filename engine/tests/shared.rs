// SPDX-License-Identifier: MIT
//! Several agents on one execution (`ferry_engine::share`): three
//! executions on threads share one tree through the coordinator's
//! `Units`, as the hub's board does, and the destination ends equal to the
//! source, each entry counted once.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ferry_engine::location::local::LocalLocation;
use ferry_engine::options::PreserveDeletedFiles;
use ferry_engine::report::{Observer, Phase};
use ferry_engine::share::{Lease, SharedPhase, Unit, Units, WorkShare};
use ferry_engine::{Execution, Options};

struct Coordinator {
    units: Mutex<Units>,
    changed: Condvar,
}

struct Agent {
    name: String,
    coordinator: Arc<Coordinator>,
}

impl WorkShare for Agent {
    fn lease(&self, phase: SharedPhase, max: usize) -> Lease {
        let mut units = self.coordinator.units.lock().unwrap();
        loop {
            match units.lease(&self.name, phase, max) {
                Lease::Wait => {
                    let (u, waited) = self
                        .coordinator
                        .changed
                        .wait_timeout(units, Duration::from_millis(200))
                        .unwrap();
                    units = u;
                    if waited.timed_out() {
                        return Lease::Wait;
                    }
                }
                other => return other,
            }
        }
    }

    fn found(&self, from: &Unit, unit: Unit) {
        let mut units = self.coordinator.units.lock().unwrap();
        units.found(&self.name, &from.path, unit).unwrap();
    }

    fn done(&self, phase: SharedPhase, unit: &Unit) {
        let mut units = self.coordinator.units.lock().unwrap();
        units.done(&self.name, phase, &unit.path);
        self.coordinator.changed.notify_all();
    }
}

struct Quiet;
impl Observer for Quiet {}

/// Path → (kind, mode, size, mtime, content) of everything below `root`.
fn tree(root: &Path) -> BTreeMap<String, (u32, u64, i64, Vec<u8>)> {
    let mut all = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let m = fs::symlink_metadata(&path).unwrap();
            let content = if m.is_file() {
                fs::read(&path).unwrap()
            } else if m.file_type().is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                stack.push(path.clone());
                Vec::new()
            };
            let mtime = if m.is_dir() {
                m.mtime()
            } else {
                m.mtime_nsec()
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            all.insert(
                rel,
                (m.mode(), m.len() * m.is_file() as u64, mtime, content),
            );
        }
    }
    all
}

#[test]
fn three_agents_share_one_tree_and_a_lost_ones_unit_is_leased_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for d in 0..12 {
        for s in 0..3 {
            let dir = src.join(format!("d{d}/s{s}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..10 {
                fs::write(
                    dir.join(format!("f{f}")),
                    format!("{d}/{s}/{f}").repeat(f + 1),
                )
                .unwrap();
            }
        }
        fs::write(src.join(format!("d{d}/top")), b"top").unwrap();
    }
    std::os::unix::fs::symlink("d0/top", src.join("link")).unwrap();
    // Large files: units of their own.
    for big in ["big0", "d2/big1"] {
        let data: Vec<u8> = (0..32u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        fs::write(src.join(big), data).unwrap();
    }
    fs::set_permissions(src.join("d3"), fs::Permissions::from_mode(0o750)).unwrap();
    // At the destination already: a file to keep (same size and times),
    // a tree to remove.
    fs::create_dir_all(dst.join("d1/s1")).unwrap();
    fs::copy(src.join("d1/s1/f0"), dst.join("d1/s1/f0")).unwrap();
    let times = fs::metadata(src.join("d1/s1/f0"))
        .unwrap()
        .modified()
        .unwrap();
    let kept = fs::File::options()
        .write(true)
        .open(dst.join("d1/s1/f0"))
        .unwrap();
    kept.set_modified(times).unwrap();
    fs::create_dir_all(dst.join("gone/deep")).unwrap();
    fs::write(dst.join("gone/deep/x"), b"x").unwrap();

    let mut options = Options::new();
    options.preserve_deleted_files = PreserveDeletedFiles::Remove;
    let coordinator = Arc::new(Coordinator {
        units: Mutex::new(Units::new(Unit::root(true), true)),
        changed: Condvar::new(),
    });
    // An agent leases the root and is lost before it does anything.
    {
        let mut units = coordinator.units.lock().unwrap();
        assert!(matches!(
            units.lease("lost", SharedPhase::Transferring, 4),
            Lease::Units(_)
        ));
        assert_eq!(units.release("lost"), 1);
    }
    let summaries: Vec<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                let share = Arc::new(Agent {
                    name: name.into(),
                    coordinator: coordinator.clone(),
                });
                let (src, dst, options) = (&src, &dst, options.clone());
                scope.spawn(move || {
                    let execution = Execution::new(
                        LocalLocation::open(src).unwrap(),
                        LocalLocation::open(dst).unwrap(),
                        options,
                        Arc::new(Quiet),
                        Arc::new(AtomicBool::new(false)),
                    )
                    .unwrap()
                    .with_share(share);
                    execution.run().unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for s in &summaries {
        assert_eq!(s.status, Phase::Success, "{s:?}");
    }
    assert_eq!(tree(&src), tree(&dst));

    // One set of counters, summed: each entry once.
    let sum = |f: fn(&ferry_engine::counters::CounterSnapshot) -> u64| {
        summaries.iter().map(|s| f(&s.counters)).sum::<u64>()
    };
    let entries = tree(&src).len() as u64;
    assert_eq!(sum(|c| c.files_listed_source), entries);
    // All but the file that was there already, and the root's times.
    assert_eq!(
        sum(|c| c.files_transferred),
        entries - 1 + 1,
        "{summaries:#?}"
    );
    assert_eq!(sum(|c| c.files_unchanged), 1);
    assert_eq!(sum(|c| c.files_deleted), 3);
    // Every entry and the root checked once, by someone.
    assert_eq!(sum(|c| c.files_verified), entries + 1);

    let units = coordinator.units.lock().unwrap();
    assert!(units.is_over());
    // The root, 12 directories and their 36.
    assert_eq!(units.count(), 1 + 12 + 36);
    let (agents, released) = units.agents();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].path, "/");
    // Each directory transferred and verified, each large file transferred.
    let done: u64 = agents.values().map(|a| a.units_done).sum();
    assert_eq!(done, 2 * 49 + 2);
    for name in ["a", "b", "c"] {
        assert!(
            agents[name].units_done > 0,
            "{name} took no work: {agents:?}"
        );
    }
}
