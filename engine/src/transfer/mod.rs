// SPDX-License-Identifier: MIT
//! PREPARING and TRANSFERRING, overlapped: a parallel walk of both trees
//! that compares each directory as soon as both listings are in and queues
//! the work it finds, while other workers already copy.
//!
//! Rules that keep the destination correct at every instant:
//! - nothing partial ever stands under its final path: a file in an existing
//!   directory is written under a temporary name and renamed into place once
//!   its content and attributes are complete; a new directory is built under
//!   a temporary name (files inside it written directly under their own
//!   names) and renamed into place when all of it is done. On NFS this saves
//!   a LOOKUP and a RENAME per file, both serialized by the directory's lock;
//! - an interrupted run leaves staged directories behind: the next run
//!   adopts them (what is complete is kept) and renames them when done;
//! - a directory's attributes are applied after all its children are done
//!   (a per-directory counter of pending work), so its times stick;
//! - leftover temporary names from an interrupted run are removed when the
//!   next run lists the directory.
//!
//! | file | what it does |
//! | --- | --- |
//! | `mod.rs` | the state of a run, its jobs, a directory's end (its attributes, a staged directory renamed into place), one entry's decision carried out |
//! | `walk.rs` | PREPARING: a directory opened (or made, or adopted), both sides listed, compared, the work queued |
//! | `links.rs` | hard links: the state machine of a link group, the later occurrences made links to the first copy |
//! | `copy.rs` | data: regular files (whole or as ranges, in the kernel or read back while written), symlinks and special files |
//! | `remove.rs` | deletion: an entry, a directory with everything below it |

mod copy;
mod links;
mod remove;
mod walk;

use std::ffi::OsString;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use self::copy::FileCopy;
use self::links::{Claim, LinkTarget, Links};
use super::counters::Counters;
use super::options::OverwriteMode;
use super::plan::{self, Decision};
use super::report::Phase;
use super::sched::{Scheduler, Slot};
use super::share::{Feeder, SharedPhase, Unit, WorkShare};
use super::{child_path, Ctx};
use crate::location::{Kind, Location, Meta};

/// A destination directory being filled.
pub(crate) struct DirNode<S: Location, D: Location> {
    rel: Vec<u8>,
    /// The name in the parent (empty for the root).
    name: OsString,
    /// The temporary name this new directory is built under, until renamed.
    staged: Option<OsString>,
    /// This directory or an ancestor is staged: entries are written directly.
    hidden: bool,
    src: S::Dir,
    dst: D::Dir,
    src_meta: Meta,
    /// The destination directory as the scan found it; `None` if created now.
    dst_meta: Option<Meta>,
    parent: Option<Arc<DirNode<S, D>>>,
    /// Work not yet done below this directory, plus one for its own listing.
    pending: AtomicUsize,
    /// Set when an entry was added, replaced or removed: times need setting.
    modified: AtomicBool,
    included: bool,
    keep_meta: bool,
    setgid: bool,
    /// Set on the directory of a unit leased from the coordinator.
    unit: Option<UnitRoot>,
}

/// The directory of a unit, and the subdirectories it found, handed to
/// the coordinator once the unit's changes are done (they exist then).
pub(crate) struct UnitRoot {
    unit: Unit,
    found: Mutex<Vec<Unit>>,
}

impl<S: Location, D: Location> DirNode<S, D> {
    fn key(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }
}

struct ScanJob<S: Location, D: Location> {
    parent: Arc<DirNode<S, D>>,
    name: OsString,
    src: Meta,
    dst: Option<Meta>,
    create: bool,
    /// Build it under this temporary name (its parent is visible).
    staged: Option<OsString>,
    clear: Option<Kind>,
    keep_meta: bool,
    included: bool,
    /// A unit for the coordinator: made (if new), not walked here.
    give_away: bool,
}

struct EntryJob<S: Location, D: Location> {
    dir: Arc<DirNode<S, D>>,
    name: OsString,
    src: Meta,
    dst: Option<Meta>,
    decision: Decision,
}

impl<S: Location, D: Location> EntryJob<S, D> {
    /// The destination entry as the scan found it, as a hard-link target.
    fn existing_target(&self) -> Option<LinkTarget<S, D>> {
        self.dst.as_ref().map(|d| LinkTarget {
            dir: self.dir.clone(),
            name: self.name.clone(),
            dev: d.dev,
            ino: d.ino,
        })
    }
}

enum Job<S: Location, D: Location> {
    /// A unit leased from the coordinator, to open and list.
    Unit(Unit),
    List(Arc<DirNode<S, D>>),
    Scan(ScanJob<S, D>),
    Entry(EntryJob<S, D>),
    Delete {
        dir: Arc<DirNode<S, D>>,
        name: OsString,
        kind: Kind,
    },
    Range {
        copy: Arc<FileCopy<S, D>>,
        range: Range<u64>,
    },
}
/// The state of the overlapped PREPARING and TRANSFERRING phases.
pub(crate) struct Transfer<'a, S: Location, D: Location> {
    ctx: &'a Ctx<S, D>,
    sched: Scheduler<Job<S, D>>,
    links: Links<EntryJob<S, D>, LinkTarget<S, D>>,
    scans_outstanding: AtomicUsize,
    /// When the last directory was listed: the end of PREPARING.
    pub prepared_at: Mutex<Option<Instant>>,
    /// Whether data is copied inside the kernel: not between two network
    /// file systems; cleared when the kernel refuses to copy between the two.
    kernel_copy: AtomicBool,
    /// With a coordinator: the roots units are opened below, and the
    /// units in work.
    roots: OnceLock<(S::Dir, D::Dir)>,
    feeder: Feeder,
}

pub(super) use crate::Failure;

impl<'a, S: Location, D: Location> Transfer<'a, S, D> {
    pub fn new(ctx: &'a Ctx<S, D>) -> Self {
        let per_dir = if ctx.dst.is_remote() {
            ctx.per_dir_limit
        } else {
            ctx.workers
        };
        Transfer {
            ctx,
            sched: Scheduler::new(per_dir, ctx.workers),
            links: Links::new(),
            scans_outstanding: AtomicUsize::new(0),
            prepared_at: Mutex::new(None),
            // Between two network file systems the kernel's copy goes through
            // the page cache in readahead-sized reads (128 KiB on NFS) where
            // the copy buffer asks for 1 MiB at a time: measured over NFS 4.1
            // at 20 ms, a fifth of the READs for the same time.
            kernel_copy: AtomicBool::new(!(ctx.src.is_remote() && ctx.dst.is_remote())),
            roots: OnceLock::new(),
            // A unit is one directory, at most `per_dir` of its entries in
            // flight: twice as many units as that keeps the workers busy.
            feeder: Feeder::new(2 * ctx.workers.div_ceil(per_dir)),
        }
    }

    /// Runs both phases to the end with `ctx.workers` threads.
    pub fn run(&self, src_root: S::Dir, dst_root: D::Dir) -> io::Result<()> {
        if let Some(share) = &self.ctx.share {
            self.run_shared(share.as_ref(), src_root, dst_root);
            return Ok(());
        }
        let src_meta = self.ctx.src.stat_dir(&src_root)?;
        let dst_meta = self.ctx.dst.stat_dir(&dst_root)?;
        let keep_meta = self.ctx.opts.overwrite_mode == OverwriteMode::Never;
        if !keep_meta && !plan::meta_update(&src_meta, &dst_meta, &self.ctx.opts).is_empty() {
            Counters::inc(&self.ctx.counters.estimated_files_to_transfer);
        }
        let root = Arc::new(DirNode {
            rel: b"/".to_vec(),
            name: OsString::new(),
            staged: None,
            hidden: false,
            src: src_root,
            dst: dst_root,
            setgid: dst_meta.mode & 0o2000 != 0,
            src_meta,
            dst_meta: Some(dst_meta),
            parent: None,
            pending: AtomicUsize::new(1),
            modified: AtomicBool::new(false),
            included: self.ctx.filters.root_included(),
            keep_meta,
            unit: None,
        });
        self.scans_outstanding.store(1, Ordering::SeqCst);
        self.sched.push(Slot::Scan, Job::List(root));
        self.ctx.run_workers(|| {
            while let Some((slot, job)) = self.sched.next() {
                self.run_job(job);
                self.sched.done(slot);
            }
        });
        Ok(())
    }

    /// Both phases as one of several agents: units leased from `share`
    /// and carried out until the coordinator says all are done.
    fn run_shared(&self, share: &dyn WorkShare, src_root: S::Dir, dst_root: D::Dir) {
        let _ = self.roots.set((src_root, dst_root));
        let hold = self.sched.hold();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let cancelled = || self.ctx.cancelled();
                self.feeder
                    .run(share, SharedPhase::Transferring, cancelled, |unit| {
                        self.sched.push(Slot::Scan, Job::Unit(unit))
                    });
                drop(hold);
            });
            self.ctx.run_workers(|| {
                while let Some((slot, job)) = self.sched.next() {
                    self.run_job(job);
                    self.sched.done(slot);
                }
            });
        });
        *self.prepared_at.lock().unwrap() = Some(Instant::now());
    }

    fn run_job(&self, job: Job<S, D>) {
        match job {
            Job::Unit(unit) => self.open_unit(unit),
            Job::List(node) => self.list(node),
            Job::Scan(scan) => self.scan(scan),
            Job::Entry(entry) => self.entry(entry),
            Job::Delete { dir, name, kind } => self.delete(dir, name, kind),
            Job::Range { copy, range } => self.range(copy, range),
        }
    }

    /// One unit of work below `node` is done; finishes directories whose
    /// work is all done, walking up.
    fn release(&self, node: Arc<DirNode<S, D>>) {
        let mut node = node;
        loop {
            if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            self.finish_dir(&node);
            match &node.parent {
                Some(parent) => node = parent.clone(),
                None => return self.unit_done(&node),
            }
        }
    }

    /// Applies a directory's attributes once everything inside it is done.
    fn finish_dir(&self, node: &DirNode<S, D>) {
        let ctx = self.ctx;
        if node.keep_meta || ctx.cancelled() {
            return;
        }
        self.apply_dir_meta(node);
        if let (Some(tmp), Some(parent)) = (&node.staged, &node.parent) {
            if let Err(e) = ctx.dst.rename(&parent.dst, tmp, &node.name) {
                ctx.fail(
                    Phase::Transferring,
                    &node.rel,
                    Kind::Dir,
                    "rename directory into place",
                    &e,
                );
            }
        }
    }

    fn apply_dir_meta(&self, node: &DirNode<S, D>) {
        let ctx = self.ctx;
        let parent_setgid = node.parent.as_ref().is_some_and(|p| p.setgid);
        // Created, or attributes differed at the scan: that counts as a transfer.
        let (mut update, counts) = match &node.dst_meta {
            None => (
                plan::creation_update(&node.src_meta, &ctx.opts, ctx.creator, parent_setgid),
                true,
            ),
            Some(d) => {
                let update = plan::meta_update(&node.src_meta, d, &ctx.opts);
                // A file's unit sets its directory's times again; the
                // directory's own unit counts it.
                let entry = node.unit.as_ref().is_some_and(|u| u.unit.entry);
                let counts = !update.is_empty() && !entry;
                (update, counts)
            }
        };
        if node.modified.load(Ordering::Relaxed) && update.mtime.is_none() {
            // Adding entries moved the times: put them back.
            let times = plan::creation_update(&node.src_meta, &ctx.opts, ctx.creator, false);
            update.mtime = times.mtime;
            update.atime = times.atime;
        }
        if update.is_empty() {
            return;
        }
        match ctx.dst.update_dir(&node.dst, &update) {
            Ok(()) if counts => ctx.transferred(&node.rel, Kind::Dir, 0),
            Ok(()) => {}
            Err(e) => ctx.fail(
                Phase::Transferring,
                &node.rel,
                Kind::Dir,
                "set directory attributes",
                &e,
            ),
        }
    }

    fn entry(&self, job: EntryJob<S, D>) {
        let ctx = self.ctx;
        if ctx.cancelled() {
            return self.release(job.dir);
        }
        if job.src.nlink > 1 {
            match self.claim(job) {
                Claim::Copy(job) => self.primary_or_alone(job),
                Claim::Parked => {}
                Claim::LinkTo(job, target) => self.link(job, target),
            }
        } else {
            self.primary_or_alone(job);
        }
    }

    fn primary_or_alone(&self, job: EntryJob<S, D>) {
        let ctx = self.ctx;
        let path = child_path(&job.dir.rel, &job.name);
        match &job.decision {
            Decision::Unchanged | Decision::Skip(_) => {
                if job.decision == Decision::Unchanged {
                    Counters::inc(&ctx.counters.files_unchanged);
                }
                self.settle_group(&job.src, job.existing_target());
                self.release(job.dir);
            }
            Decision::UpdateMeta(update) => {
                let result = ctx.dst.update(&job.dir.dst, &job.name, update);
                let target = match result {
                    Ok(()) => {
                        ctx.transferred(&path, job.src.kind, 0);
                        job.existing_target()
                    }
                    Err(e) => {
                        ctx.fail(
                            Phase::Transferring,
                            &path,
                            job.src.kind,
                            "set attributes",
                            &e,
                        );
                        None
                    }
                };
                self.settle_group(&job.src, target);
                self.release(job.dir);
            }
            Decision::Copy(_) => {
                if let Some(d) = &job.dst {
                    if d.kind == Kind::Dir {
                        self.remove_tree(&job.dir.dst, &job.name, Kind::Dir, &path, false);
                    }
                }
                match job.src.kind {
                    Kind::File => self.start_file(job),
                    _ => self.make_other(job),
                }
            }
        }
    }
}
