// SPDX-License-Identifier: MIT
//! PREPARING: a directory is opened (made, or adopted from an interrupted
//! run) as soon as its parent's listing names it, both sides are listed at
//! once and compared, and the work found is queued while other workers
//! already copy.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{DirNode, EntryJob, Failure, Job, ScanJob, Transfer, UnitRoot};
use crate::counters::Counters;
use crate::filter::Verdict;
use crate::location::{Kind, Location, Meta};
use crate::options::PreserveDeletedFiles;
use crate::plan::{self, Decision, DirDecision};
use crate::report::Phase;
use crate::sched::Slot;
use crate::share::{SharedPhase, Unit};
use crate::{child_path, is_temp_name, list_pair, open_both, symlink_targets, Pair};

impl<S: Location, D: Location> Transfer<'_, S, D> {
    pub(super) fn scan_finished(&self) {
        if self.scans_outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut prepared = self.prepared_at.lock().unwrap();
            // With units, the scans run out once per unit: the first is
            // the phase's change.
            if prepared.is_none() {
                *prepared = Some(Instant::now());
                drop(prepared);
                self.ctx.set_phase(Phase::Transferring);
            }
        }
    }

    /// Opens a unit leased from the coordinator on both sides and lists it.
    pub(super) fn open_unit(&self, unit: Unit) {
        let ctx = self.ctx;
        let (src_root, dst_root) = self.roots.get().expect("set before units come");
        let opened = (|| -> Result<DirNode<S, D>, Failure> {
            let names = unit.names().map_err(|e| {
                (
                    "take the unit",
                    io::Error::new(io::ErrorKind::InvalidInput, e),
                )
            })?;
            // A file's unit opens its directory.
            let dirs = match (unit.entry, names.split_last()) {
                (true, Some((_, dirs))) => dirs,
                (true, None) => {
                    let e =
                        io::Error::new(io::ErrorKind::InvalidInput, "a file unit names no file");
                    return Err(("take the unit", e));
                }
                (false, _) => names.as_slice(),
            };
            let (src, dst) = open_both((&ctx.src, &ctx.dst), (src_root, dst_root), dirs)?;
            let src_meta = ctx
                .src
                .stat_dir(&src)
                .map_err(|e| ("stat source directory", e))?;
            let dst_meta = ctx
                .dst
                .stat_dir(&dst)
                .map_err(|e| ("stat destination directory", e))?;
            Ok(DirNode {
                rel: match unit.entry {
                    true => parent_path(&unit.path),
                    false => unit.path.clone(),
                },
                name: dirs.last().map_or_else(OsString::new, |n| n.to_os_string()),
                staged: None,
                hidden: false,
                src,
                dst,
                setgid: dst_meta.mode & 0o2000 != 0,
                src_meta,
                dst_meta: Some(dst_meta),
                parent: None,
                pending: AtomicUsize::new(1),
                modified: AtomicBool::new(false),
                included: unit.included,
                keep_meta: unit.keep_meta,
                unit: Some(UnitRoot {
                    unit: unit.clone(),
                    found: Mutex::new(Vec::new()),
                }),
            })
        })();
        match opened {
            Ok(node) if unit.entry => self.entry_unit(Arc::new(node), &unit),
            Ok(node) => {
                self.scans_outstanding.fetch_add(1, Ordering::AcqRel);
                self.list(Arc::new(node));
            }
            Err((what, e)) => {
                ctx.fail(Phase::Preparing, &unit.path, Kind::Dir, what, &e);
                self.unit_over(&unit);
            }
        }
    }

    /// A file's unit: the file compared again (it may have changed, or be
    /// done already by an agent lost since) and carried out in its
    /// directory, whose times are set again after it.
    fn entry_unit(&self, node: Arc<DirNode<S, D>>, unit: &Unit) {
        let ctx = self.ctx;
        let name = OsStr::from_bytes(unit.path.rsplit(|&b| b == b'/').next().unwrap_or_default());
        let dst = match ctx.dst.stat(&node.dst, name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(("stat destination", e)),
        };
        let src = ctx
            .src
            .stat(&node.src, name)
            .map_err(|e| ("stat source", e));
        match src.and_then(|s| Ok((s, dst?))) {
            Ok((src, dst)) => {
                let decision = plan::decide(&src, dst.as_ref(), None, &ctx.opts);
                let entry = EntryJob {
                    dir: node.clone(),
                    name: name.to_os_string(),
                    src,
                    dst,
                    decision,
                };
                // The node's own count stands for the file.
                self.sched.push(Slot::Dir(node.key()), Job::Entry(entry));
            }
            // Removed from the source since its directory was listed.
            Err((_, e)) if e.kind() == io::ErrorKind::NotFound => self.release(node),
            Err((what, e)) => {
                ctx.fail(Phase::Transferring, &unit.path, Kind::File, what, &e);
                self.release(node);
            }
        }
    }

    /// A unit's directory is done: once its changes are done at the
    /// destination, the subdirectories it made go to the coordinator, and
    /// the unit is done.
    pub(super) fn unit_done(&self, node: &DirNode<S, D>) {
        let (Some(share), Some(root)) = (&self.ctx.share, &node.unit) else {
            return;
        };
        self.ctx.dst.wait_settled(&node.dst);
        for found in std::mem::take(&mut *root.found.lock().unwrap()) {
            share.found(&root.unit, found);
        }
        self.unit_over(&root.unit);
    }

    fn unit_over(&self, unit: &Unit) {
        if let Some(share) = &self.ctx.share {
            share.done(SharedPhase::Transferring, unit);
        }
        self.feeder.finished_one();
    }

    /// Opens (creating if needed) a directory found by its parent's scan.
    pub(super) fn scan(&self, job: ScanJob<S, D>) {
        let ctx = self.ctx;
        let ScanJob {
            parent,
            name,
            src,
            dst,
            create,
            staged,
            clear,
            keep_meta,
            included,
            give_away,
        } = job;
        let rel = child_path(&parent.rel, &name);
        let at = staged.clone().unwrap_or_else(|| name.clone());
        if give_away {
            return self.give_away(parent, name, rel, create, clear, included, keep_meta);
        }
        let opened = (|| -> Result<DirNode<S, D>, Failure> {
            if ctx.cancelled() {
                return Err(("cancelled", io::Error::from(io::ErrorKind::Interrupted)));
            }
            if let Some(kind) = clear {
                self.remove_tree(&parent.dst, &name, kind, &rel, false);
            }
            if create {
                ctx.dst
                    .make_dir(&parent.dst, &at, 0o700)
                    .map_err(|e| ("create directory", e))?;
                parent.modified.store(true, Ordering::Relaxed);
            }
            let src_dir = ctx
                .src
                .open_dir(&parent.src, &name)
                .map_err(|e| ("open source directory", e))?;
            let dst_dir = ctx
                .dst
                .open_dir(&parent.dst, &at)
                .map_err(|e| ("open destination directory", e))?;
            Ok(DirNode {
                hidden: parent.hidden || staged.is_some(),
                staged,
                name: name.clone(),
                setgid: match &dst {
                    Some(d) if !create => d.mode & 0o2000 != 0,
                    _ => parent.setgid,
                },
                rel: rel.clone(),
                src: src_dir,
                dst: dst_dir,
                src_meta: src,
                dst_meta: if create { None } else { dst },
                parent: Some(parent.clone()),
                pending: AtomicUsize::new(1),
                modified: AtomicBool::new(false),
                included,
                keep_meta,
                unit: None,
            })
        })();
        match opened {
            Ok(node) => self.list(Arc::new(node)),
            Err((what, e)) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    ctx.fail(Phase::Preparing, &rel, Kind::Dir, what, &e);
                }
                self.scan_finished();
                self.release(parent);
            }
        }
    }

    /// A subdirectory of a unit: made at its final name if new (another
    /// agent may fill it), and kept for the coordinator as a unit.
    #[allow(clippy::too_many_arguments)]
    fn give_away(
        &self,
        parent: Arc<DirNode<S, D>>,
        name: OsString,
        rel: Vec<u8>,
        create: bool,
        clear: Option<Kind>,
        included: bool,
        keep_meta: bool,
    ) {
        let ctx = self.ctx;
        if !ctx.cancelled() {
            if let Some(kind) = clear {
                self.remove_tree(&parent.dst, &name, kind, &rel, false);
            }
            let made = match create {
                // Made meanwhile by another agent doing this unit again
                // (its first agent was taken for lost): it is the unit's.
                true => match ctx.dst.make_dir(&parent.dst, &name, 0o700) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    made => made,
                },
                false => Ok(()),
            };
            match made {
                Ok(()) => {
                    parent.modified.fetch_or(create, Ordering::Relaxed);
                    let unit = Unit {
                        path: rel,
                        included,
                        keep_meta,
                        entry: false,
                    };
                    match (&parent.unit, &ctx.share) {
                        // There already: another agent may take it at once.
                        (Some(root), Some(share)) if !create => share.found(&root.unit, unit),
                        // Made now: once the making is done, with the unit's end.
                        (Some(root), _) => root.found.lock().unwrap().push(unit),
                        (None, _) => {}
                    }
                }
                Err(e) => ctx.fail(Phase::Preparing, &rel, Kind::Dir, "create directory", &e),
            }
        }
        self.scan_finished();
        self.release(parent);
    }

    /// Lists both sides of a directory, compares them and queues the work.
    pub(super) fn list(&self, node: Arc<DirNode<S, D>>) {
        let ctx = self.ctx;
        let listed = if ctx.cancelled() {
            Err(("cancelled", io::Error::from(io::ErrorKind::Interrupted)))
        } else {
            let dst_dir = node.dst_meta.as_ref().map(|_| &node.dst);
            list_pair(&ctx.src, &node.src, &ctx.dst, dst_dir)
        };
        match listed {
            Ok(pairs) => self.compare(&node, pairs),
            Err((what, e)) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    ctx.fail(Phase::Preparing, &node.rel, Kind::Dir, what, &e);
                }
            }
        }
        self.scan_finished();
        self.release(node);
    }

    pub(super) fn compare(&self, node: &Arc<DirNode<S, D>>, pairs: Vec<Pair>) {
        let ctx = self.ctx;
        let c = &ctx.counters;
        let mut entries = Vec::new();
        let mut scans = Vec::new();
        // Temporary names of interrupted runs: staged directories to adopt,
        // or leftovers to remove.
        let mut leftovers: HashMap<OsString, Meta> = HashMap::new();
        // Temporary names sort first (`.`): collect them before the merge.
        for p in &pairs {
            if let (true, Some(d)) = (is_temp_name(&p.name), &p.dst) {
                leftovers.insert(p.name.clone(), d.clone());
            }
        }
        for Pair {
            name,
            src: s,
            dst: d_meta,
        } in pairs
        {
            if is_temp_name(&name) {
                continue;
            }
            let path = child_path(&node.rel, &name);
            if let Some(d) = &d_meta {
                if ctx.filters.judge(&path, d.kind == Kind::Dir, node.included) != Verdict::Excluded
                {
                    Counters::inc(&c.files_listed_destination);
                    if d.kind == Kind::File {
                        Counters::add(&c.bytes_prepared_destination, d.size);
                    }
                }
            }
            let Some(s) = s else {
                let d = d_meta.expect("one side");
                let excluded = ctx.filters.judge(&path, d.kind == Kind::Dir, node.included)
                    == Verdict::Excluded;
                if !excluded && ctx.opts.preserve_deleted_files == PreserveDeletedFiles::Remove {
                    Counters::inc(&c.estimated_files_to_delete);
                    entries.push(Job::Delete {
                        dir: node.clone(),
                        name,
                        kind: d.kind,
                    });
                }
                continue;
            };
            let verdict = ctx.filters.judge(&path, s.kind == Kind::Dir, node.included);
            if verdict == Verdict::Excluded {
                continue;
            }
            ctx.found_at_source(&path);
            Counters::inc(&c.files_listed_source);
            if s.kind == Kind::File {
                Counters::add(&c.bytes_prepared_source, s.size);
            }
            if s.kind == Kind::Dir {
                match plan::decide_dir(d_meta.as_ref(), &ctx.opts) {
                    DirDecision::Walk {
                        create,
                        clear,
                        keep_meta,
                    } => {
                        let meta_differs = d_meta
                            .as_ref()
                            .is_some_and(|d| !plan::meta_update(&s, d, &ctx.opts).is_empty());
                        if create || (meta_differs && !keep_meta) {
                            Counters::inc(&c.estimated_files_to_transfer);
                        }
                        // A new directory in a visible one is staged; one
                        // staged by an interrupted run is adopted. Not a
                        // unit's: another agent may fill it.
                        let give_away = ctx.share.is_some();
                        let (mut create, mut d_meta, mut staged) = (create, d_meta, None);
                        if create && !node.hidden && !give_away {
                            let tmp = staging_name(&name);
                            if let Some(m) = leftovers.remove(&tmp).filter(|m| m.kind == Kind::Dir)
                            {
                                (create, d_meta) = (false, Some(m));
                            }
                            staged = Some(tmp);
                        }
                        scans.push(Job::Scan(ScanJob {
                            parent: node.clone(),
                            name,
                            src: s,
                            dst: d_meta,
                            create,
                            staged,
                            clear,
                            keep_meta,
                            included: verdict == Verdict::Included,
                            give_away,
                        }));
                    }
                    DirDecision::Skip(reason) => ctx.skip(&path, s.kind, reason),
                }
                continue;
            }
            let both = (&ctx.src, &node.src, &ctx.dst, Some(&node.dst));
            let targets = symlink_targets(both, &s, d_meta.as_ref(), &name);
            let links = targets
                .as_ref()
                .map(|(a, b)| (a.as_os_str(), b.as_os_str()));
            let decision = plan::decide(&s, d_meta.as_ref(), links, &ctx.opts);
            match &decision {
                Decision::Skip(reason) => {
                    ctx.skip(&path, s.kind, *reason);
                    continue;
                }
                Decision::Unchanged if s.nlink < 2 => {
                    Counters::inc(&c.files_unchanged);
                    continue;
                }
                Decision::Unchanged => {}
                Decision::Copy(_) => {
                    Counters::inc(&c.estimated_files_to_transfer);
                    if s.kind == Kind::File {
                        Counters::add(&c.estimated_bytes_to_transfer, s.size);
                    }
                }
                Decision::UpdateMeta(_) => Counters::inc(&c.estimated_files_to_transfer),
            }
            // With several agents, a large file is a unit of its own (not a
            // hard link: its group stays with one agent).
            let own_unit = matches!(decision, Decision::Copy(_))
                && s.kind == Kind::File
                && s.size >= FILE_UNIT_MIN
                && s.nlink < 2;
            if let (true, Some(root)) = (own_unit, &node.unit) {
                // Its directory's attributes are kept as the directory's
                // own unit keeps them.
                root.found.lock().unwrap().push(Unit {
                    path: child_path(&node.rel, &name),
                    included: true,
                    keep_meta: node.keep_meta,
                    entry: true,
                });
                continue;
            }
            entries.push(Job::Entry(EntryJob {
                dir: node.clone(),
                name,
                src: s,
                dst: d_meta,
                decision,
            }));
        }
        // With several agents, a temporary name may be another agent's
        // file being written (a unit done twice at once): leftovers go in
        // VERIFYING, once every unit is transferred.
        for (name, meta) in leftovers.into_iter().filter(|_| ctx.share.is_none()) {
            let path = child_path(&node.rel, &name);
            self.remove_tree(&node.dst, &name, meta.kind, &path, false);
        }
        // The destination's listings of the directories scanned next, asked
        // for together (scans are taken from a stack: the last first).
        let ahead: Vec<&OsStr> = scans
            .iter()
            .rev()
            .filter_map(|job| match job {
                Job::Scan(s)
                    if !s.create
                        && !s.give_away
                        && s.dst.as_ref().is_some_and(|m| m.kind == Kind::Dir) =>
                {
                    Some(s.staged.as_deref().unwrap_or(&s.name))
                }
                _ => None,
            })
            .collect();
        ctx.dst.prefetch_listings(&node.dst, &ahead);
        node.pending
            .fetch_add(entries.len() + scans.len(), Ordering::AcqRel);
        self.scans_outstanding
            .fetch_add(scans.len(), Ordering::AcqRel);
        self.sched.push_dir(node.key(), entries);
        for scan in scans {
            self.sched.push(Slot::Scan, scan);
        }
    }
}

/// Files from this size on are units of their own with several agents
/// (the size from which one agent copies a file in ranges).
const FILE_UNIT_MIN: u64 = super::copy::SPLIT_THRESHOLD;

/// The directory of the `/`-rooted `path` (`/` for a name at the root).
fn parent_path(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/".to_vec(),
        Some(i) => path[..i].to_vec(),
    }
}

/// The temporary name a new directory is built under: derived from its
/// name, so that a later run finds and adopts it.
fn staging_name(name: &OsStr) -> OsString {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_encoded_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    format!(".ferry~{:016x}~tmp", u64::from_be_bytes(n)).into()
}
