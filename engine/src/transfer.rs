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

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::counters::Counters;
use super::filter::Verdict;
use super::options::{OverwriteMode, PreserveDeletedFiles, VerifyMode};
use super::plan::{self, Decision, DirDecision};
use super::report::{Outcome, Phase, Record};
use super::sched::{Scheduler, Slot};
use super::{child_path, is_temp_name, list_pair, Ctx, KnownHash, Pair};
use crate::location::{Kind, Location, Meta, Reader, Writer};

/// Files at least this large are copied as ranges by several workers.
const SPLIT_THRESHOLD: u64 = 32 << 20;
/// The size of one range of a large file.
const RANGE_SIZE: u64 = 8 << 20;
/// The copy buffer of each worker.
const BUFFER_SIZE: usize = 1 << 20;
/// When verifying, every range of every file that is not sparse is copied
/// through user space, hashed and read back from the destination as soon
/// as it is written, so the verification phase reads neither side again;
/// otherwise data is copied inside the kernel. Files up to this size, copied
/// as one range, also keep that range's hash as the source's: a destination
/// that cannot be read back (the hub) then hashes only its own copy.
const HASH_WHILE_COPYING_MAX: u64 = 1 << 20;
/// One in-kernel copy call at most: a cancel is noticed between calls.
const KERNEL_COPY_CHUNK: usize = 8 << 20;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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

/// A regular file being copied, by one worker or as ranges by several.
struct FileCopy<S: Location, D: Location> {
    dir: Arc<DirNode<S, D>>,
    name: OsString,
    tmp: OsString,
    src: Meta,
    reader: S::Reader,
    writer: RwLock<Option<D::Writer>>,
    ranges_left: AtomicUsize,
    failure: Mutex<Option<(&'static str, io::Error)>>,
    /// Whether the data ends in a hole, so the length must be set.
    ends_in_hole: bool,
    /// Written under its final name (inside a staged directory).
    direct: bool,
    /// SHA-256 of the whole source, from its one range (files up to
    /// `HASH_WHILE_COPYING_MAX`): verification then reads only the destination.
    source_digest: Mutex<Option<[u8; 32]>>,
    /// Each range is read back from the destination once written, and
    /// compared with the source bytes it was written from.
    read_back: bool,
    /// Ranges to copy, and those read back equal.
    ranges: usize,
    ranges_read_back: AtomicUsize,
}

enum Job<S: Location, D: Location> {
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

/// Where the first copy of a hard-link group landed.
struct LinkTarget<S: Location, D: Location> {
    dir: Arc<DirNode<S, D>>,
    name: OsString,
    dev: u64,
    ino: u64,
}

impl<S: Location, D: Location> Clone for LinkTarget<S, D> {
    fn clone(&self) -> Self {
        LinkTarget {
            dir: self.dir.clone(),
            name: self.name.clone(),
            dev: self.dev,
            ino: self.ino,
        }
    }
}

enum LinkState<S: Location, D: Location> {
    /// The first occurrence is being copied; later ones wait for it.
    Pending(Vec<EntryJob<S, D>>),
    Done(LinkTarget<S, D>),
    /// The first occurrence was not copied: the others are copied on their own.
    Broken,
}

struct LinkGroup<S: Location, D: Location> {
    state: LinkState<S, D>,
    seen: u64,
}

/// What to do with one occurrence of a hard-linked entry.
enum Claim<S: Location, D: Location> {
    /// Copy it: the first occurrence, or the group is broken.
    Copy(EntryJob<S, D>),
    /// Parked until the first occurrence is copied.
    Parked,
    /// Link it to the first copy.
    LinkTo(EntryJob<S, D>, LinkTarget<S, D>),
}

/// The state of the overlapped PREPARING and TRANSFERRING phases.
pub(crate) struct Transfer<'a, S: Location, D: Location> {
    ctx: &'a Ctx<S, D>,
    sched: Scheduler<Job<S, D>>,
    links: Mutex<HashMap<(u64, u64), LinkGroup<S, D>>>,
    scans_outstanding: AtomicUsize,
    /// When the last directory was listed: the end of PREPARING.
    pub prepared_at: Mutex<Option<Instant>>,
    /// Whether data is copied inside the kernel: not between two network
    /// file systems; cleared when the kernel refuses to copy between the two.
    kernel_copy: AtomicBool,
}

type Failure = (&'static str, io::Error);

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
            links: Mutex::new(HashMap::new()),
            scans_outstanding: AtomicUsize::new(0),
            prepared_at: Mutex::new(None),
            // Between two network file systems the kernel's copy goes through
            // the page cache in readahead-sized reads (128 KiB on NFS) where
            // the copy buffer asks for 1 MiB at a time: measured over NFS 4.1
            // at 20 ms, a fifth of the READs for the same time.
            kernel_copy: AtomicBool::new(!(ctx.src.is_remote() && ctx.dst.is_remote())),
        }
    }

    /// Runs both phases to the end with `ctx.workers` threads.
    pub fn run(&self, src_root: S::Dir, dst_root: D::Dir) -> io::Result<()> {
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

    fn run_job(&self, job: Job<S, D>) {
        match job {
            Job::List(node) => self.list(node),
            Job::Scan(scan) => self.scan(scan),
            Job::Entry(entry) => self.entry(entry),
            Job::Delete { dir, name, kind } => {
                let path = child_path(&dir.rel, &name);
                if !self.ctx.cancelled() {
                    self.remove_tree(&dir.dst, &name, kind, &path, true);
                    dir.modified.store(true, Ordering::Relaxed);
                }
                self.release(dir);
            }
            Job::Range { copy, range } => {
                if !self.ctx.cancelled() && copy.failure.lock().unwrap().is_none() {
                    if let Err(f) = self.copy_range(&copy, range) {
                        copy.failure.lock().unwrap().get_or_insert(f);
                    }
                }
                if copy.ranges_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.finish_file(copy);
                }
            }
        }
    }

    fn scan_finished(&self) {
        if self.scans_outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.prepared_at.lock().unwrap() = Some(Instant::now());
            self.ctx.set_phase(Phase::Transferring);
        }
    }

    /// Opens (creating if needed) a directory found by its parent's scan.
    fn scan(&self, job: ScanJob<S, D>) {
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
        } = job;
        let rel = child_path(&parent.rel, &name);
        let at = staged.clone().unwrap_or_else(|| name.clone());
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

    /// Lists both sides of a directory, compares them and queues the work.
    fn list(&self, node: Arc<DirNode<S, D>>) {
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

    fn compare(&self, node: &Arc<DirNode<S, D>>, pairs: Vec<Pair>) {
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
                        // staged by an interrupted run is adopted.
                        let (mut create, mut d_meta, mut staged) = (create, d_meta, None);
                        if create && !node.hidden {
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
                        }));
                    }
                    DirDecision::Skip(reason) => ctx.skip(&path, s.kind, reason),
                }
                continue;
            }
            let targets = match (&s.kind, d_meta.as_ref().map(|d| d.kind)) {
                (Kind::Symlink, Some(Kind::Symlink)) => {
                    match (
                        ctx.src.read_link(&node.src, &name),
                        ctx.dst.read_link(&node.dst, &name),
                    ) {
                        (Ok(a), Ok(b)) => Some((a, b)),
                        _ => None,
                    }
                }
                _ => None,
            };
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
            entries.push(Job::Entry(EntryJob {
                dir: node.clone(),
                name,
                src: s,
                dst: d_meta,
                decision,
            }));
        }
        for (name, meta) in leftovers {
            let path = child_path(&node.rel, &name);
            self.remove_tree(&node.dst, &name, meta.kind, &path, false);
        }
        node.pending
            .fetch_add(entries.len() + scans.len(), Ordering::AcqRel);
        self.scans_outstanding
            .fetch_add(scans.len(), Ordering::AcqRel);
        self.sched.push_dir(node.key(), entries);
        for scan in scans {
            self.sched.push(Slot::Scan, scan);
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
                None => return,
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
                let counts = !update.is_empty();
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

    /// Registers an occurrence of a hard-linked entry.
    fn claim(&self, job: EntryJob<S, D>) -> Claim<S, D> {
        let key = (job.src.dev, job.src.ino);
        let mut links = self.links.lock().unwrap();
        let group = links.entry(key).or_insert_with(|| LinkGroup {
            state: LinkState::Pending(Vec::new()),
            seen: 0,
        });
        group.seen += 1;
        let claim = match &mut group.state {
            LinkState::Pending(_) if group.seen == 1 => return Claim::Copy(job),
            LinkState::Pending(waiters) => {
                // Counted again when it comes back.
                group.seen -= 1;
                waiters.push(job);
                return Claim::Parked;
            }
            LinkState::Done(target) => Claim::LinkTo(job, target.clone()),
            LinkState::Broken => Claim::Copy(job),
        };
        if group.seen >= nlink_of(&claim) {
            links.remove(&key);
        }
        claim
    }

    /// The first occurrence of a hard-link group is settled: release the others.
    fn settle_group(&self, src: &Meta, target: Option<LinkTarget<S, D>>) {
        if src.nlink < 2 {
            return;
        }
        let key = (src.dev, src.ino);
        let mut links = self.links.lock().unwrap();
        let Some(group) = links.get_mut(&key) else {
            return;
        };
        let new_state = match target {
            Some(t) => LinkState::Done(t),
            None => LinkState::Broken,
        };
        let old = std::mem::replace(&mut group.state, new_state);
        if let LinkState::Pending(waiters) = old {
            if group.seen >= src.nlink {
                links.remove(&key);
            }
            drop(links);
            for job in waiters {
                let key = job.dir.key();
                self.sched.push(Slot::Dir(key), Job::Entry(job));
            }
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

    /// Makes a symlink or special file under a temporary name, then renames it.
    fn make_other(&self, job: EntryJob<S, D>) {
        let ctx = self.ctx;
        let path = child_path(&job.dir.rel, &job.name);
        let direct = self.clear_for_direct(&job);
        let tmp = if direct {
            job.name.clone()
        } else {
            ctx.temp_name()
        };
        let result = (|| -> Result<(), Failure> {
            match job.src.kind {
                Kind::Symlink => {
                    let target = ctx
                        .src
                        .read_link(&job.dir.src, &job.name)
                        .map_err(|e| ("read symlink", e))?;
                    ctx.dst
                        .make_symlink(&job.dir.dst, &tmp, &target)
                        .map_err(|e| ("create symlink", e))?;
                }
                kind => ctx
                    .dst
                    .make_node(
                        &job.dir.dst,
                        &tmp,
                        kind,
                        plan::create_mode(&job.src, &ctx.opts),
                        job.src.rdev,
                    )
                    .map_err(|e| ("create special file", e))?,
            }
            let update = plan::creation_update(&job.src, &ctx.opts, ctx.creator, job.dir.setgid);
            let renamed = ctx
                .dst
                .update(&job.dir.dst, &tmp, &update)
                .map_err(|e| ("set attributes", e))
                .and_then(|_| match direct {
                    true => Ok(()),
                    false => ctx
                        .dst
                        .rename(&job.dir.dst, &tmp, &job.name)
                        .map_err(|e| ("rename into place", e)),
                });
            if renamed.is_err() {
                let _ = ctx.dst.remove(&job.dir.dst, &tmp, job.src.kind);
            }
            renamed
        })();
        let target = match result {
            Ok(()) => {
                job.dir.modified.store(true, Ordering::Relaxed);
                ctx.transferred(&path, job.src.kind, 0);
                self.link_target(&job.dir, &job.name, &job.src)
            }
            Err((what, e)) => {
                ctx.fail(Phase::Transferring, &path, job.src.kind, what, &e);
                None
            }
        };
        self.settle_group(&job.src, target);
        self.release(job.dir);
    }

    /// Whether `job` is written under its final name (inside a staged
    /// directory); if so, clears what an interrupted run left at that name
    /// unless it is a regular file, which the create truncates.
    fn clear_for_direct(&self, job: &EntryJob<S, D>) -> bool {
        if !job.dir.hidden {
            return false;
        }
        if let Some(d) = &job.dst {
            if d.kind != Kind::Dir && (d.kind != Kind::File || job.src.kind != Kind::File) {
                let _ = self.ctx.dst.remove(&job.dir.dst, &job.name, d.kind);
            } else if d.kind == Kind::File && job.src.nlink > 1 {
                // Do not truncate through a hard link.
                let _ = self.ctx.dst.remove(&job.dir.dst, &job.name, d.kind);
            }
        }
        true
    }

    /// For hard-linked entries only: where the first copy landed.
    fn link_target(
        &self,
        dir: &Arc<DirNode<S, D>>,
        name: &OsStr,
        src: &Meta,
    ) -> Option<LinkTarget<S, D>> {
        if src.nlink < 2 {
            return None;
        }
        let meta = self.ctx.dst.stat(&dir.dst, name).ok()?;
        Some(LinkTarget {
            dir: dir.clone(),
            name: name.to_os_string(),
            dev: meta.dev,
            ino: meta.ino,
        })
    }

    /// Makes a later occurrence of a hard-link group a link to the first copy.
    fn link(&self, job: EntryJob<S, D>, target: LinkTarget<S, D>) {
        let ctx = self.ctx;
        let path = child_path(&job.dir.rel, &job.name);
        if let Some(d) = &job.dst {
            if d.dev == target.dev && d.ino == target.ino {
                Counters::inc(&ctx.counters.files_unchanged);
                return self.release(job.dir);
            }
            if ctx.opts.overwrite_mode == OverwriteMode::Never {
                ctx.skip(&path, job.src.kind, plan::SkipReason::OverwriteNever);
                return self.release(job.dir);
            }
            if d.kind == Kind::Dir {
                self.remove_tree(&job.dir.dst, &job.name, Kind::Dir, &path, false);
            }
        }
        if !matches!(job.decision, Decision::Copy(_)) {
            Counters::inc(&ctx.counters.estimated_files_to_transfer);
        }
        let direct = self.clear_for_direct(&job);
        let tmp = if direct {
            job.name.clone()
        } else {
            ctx.temp_name()
        };
        let result = ctx
            .dst
            .hard_link(&target.dir.dst, &target.name, &job.dir.dst, &tmp)
            .map_err(|e| ("create hard link", e))
            .and_then(|_| match direct {
                true => Ok(()),
                false => ctx.dst.rename(&job.dir.dst, &tmp, &job.name).map_err(|e| {
                    let _ = ctx.dst.remove(&job.dir.dst, &tmp, job.src.kind);
                    ("rename into place", e)
                }),
            });
        match result {
            Ok(()) => {
                job.dir.modified.store(true, Ordering::Relaxed);
                ctx.transferred(&path, job.src.kind, 0);
            }
            Err((what, e)) => ctx.fail(Phase::Transferring, &path, job.src.kind, what, &e),
        }
        self.release(job.dir);
    }

    /// Opens both ends of a file copy and copies it, or queues its ranges.
    fn start_file(&self, job: EntryJob<S, D>) {
        let ctx = self.ctx;
        let path = child_path(&job.dir.rel, &job.name);
        let opened = (|| -> Result<FileCopy<S, D>, Failure> {
            let reader = ctx
                .src
                .open_file(&job.dir.src, &job.name)
                .map_err(|e| ("open source file", e))?;
            let mode = plan::create_mode(&job.src, &ctx.opts);
            let direct = self.clear_for_direct(&job);
            let tmp = if direct {
                job.name.clone()
            } else {
                ctx.temp_name()
            };
            let writer = ctx
                .dst
                .create_file(&job.dir.dst, &tmp, mode)
                .map_err(|e| ("create destination file", e))?;
            Ok(FileCopy {
                dir: job.dir.clone(),
                name: job.name.clone(),
                tmp,
                src: job.src.clone(),
                reader,
                writer: RwLock::new(Some(writer)),
                ranges_left: AtomicUsize::new(0),
                failure: Mutex::new(None),
                ends_in_hole: false,
                direct,
                source_digest: Mutex::new(None),
                read_back: ctx.opts.verify_mode != VerifyMode::None && !job.src.looks_sparse(),
                ranges: 0,
                ranges_read_back: AtomicUsize::new(0),
            })
        })();
        let mut copy = match opened {
            Ok(copy) => copy,
            Err((what, e)) => {
                ctx.fail(Phase::Transferring, &path, Kind::File, what, &e);
                self.settle_group(&job.src, None);
                return self.release(job.dir);
            }
        };
        let segments = if job.src.looks_sparse() {
            match copy.reader.data_segments(job.src.size) {
                Ok(s) => s,
                Err(e) => {
                    copy.failure
                        .lock()
                        .unwrap()
                        .get_or_insert(("find holes", e));
                    Vec::new()
                }
            }
        } else if job.src.size > 0 {
            let all = 0..job.src.size;
            vec![all]
        } else {
            Vec::new()
        };
        copy.ends_in_hole = segments.last().is_none_or(|s| s.end < job.src.size);
        let ranges: Vec<Range<u64>> = if job.src.size >= SPLIT_THRESHOLD {
            segments
                .iter()
                .flat_map(|s| split(s.clone(), RANGE_SIZE))
                .collect()
        } else {
            Vec::new()
        };
        copy.ranges = if ranges.len() > 1 {
            ranges.len()
        } else {
            segments.len()
        };
        if ranges.len() > 1 {
            copy.ranges_left.store(ranges.len(), Ordering::Release);
            let copy = Arc::new(copy);
            for range in ranges {
                self.sched.push(
                    Slot::Global,
                    Job::Range {
                        copy: copy.clone(),
                        range,
                    },
                );
            }
            return;
        }
        for segment in segments {
            if copy.failure.lock().unwrap().is_some() {
                break;
            }
            if let Err(f) = self.copy_range(&copy, segment) {
                copy.failure.lock().unwrap().get_or_insert(f);
            }
        }
        self.finish_file(Arc::new(copy));
    }

    fn copy_range(&self, copy: &FileCopy<S, D>, range: Range<u64>) -> Result<(), Failure> {
        let ctx = self.ctx;
        let writer = copy.writer.read().unwrap();
        let writer = writer.as_ref().expect("writer is taken only at the end");
        // Bytes to hash pass through user space.
        if let (false, true, Some(fd)) = (
            copy.read_back,
            self.kernel_copy.load(Ordering::Relaxed),
            copy.reader.fd(),
        ) {
            match self.kernel_copy(writer, fd, range.clone()) {
                Ok(()) => return Ok(()),
                // Not between these two: copy through user space from now on.
                Err(None) => self.kernel_copy.store(false, Ordering::Relaxed),
                Err(Some(f)) => return Err(f),
            }
        }
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let want = (range.end - range.start).min(BUFFER_SIZE as u64) as usize;
            if buffer.len() < want {
                buffer.resize(want, 0);
            }
            let mut range_hasher = copy.read_back.then(Sha256::new);
            let mut offset = range.start;
            while offset < range.end {
                if ctx.cancelled() {
                    return Err(("cancelled", io::Error::from(io::ErrorKind::Interrupted)));
                }
                let n = (range.end - offset).min(buffer.len() as u64) as usize;
                let got = copy
                    .reader
                    .read_at(&mut buffer[..n], offset)
                    .map_err(|e| ("read source file", e))?;
                if got == 0 {
                    // The file shrank while we copied: noticed at the end.
                    break;
                }
                if let Some(t) = &ctx.throttle {
                    t.take(got as u64);
                }
                if let Some(h) = range_hasher.as_mut() {
                    h.update(&buffer[..got]);
                }
                write_all_at(writer, &buffer[..got], offset)
                    .map_err(|e| ("write destination file", e))?;
                Counters::add(&ctx.counters.bytes_transferred, got as u64);
                Counters::add(&ctx.counters.bytes_written, got as u64);
                offset += got as u64;
            }
            match range_hasher {
                // The whole range was written: read it back.
                Some(h) if offset == range.end => self.read_back(copy, writer, range, h),
                _ => Ok(()),
            }
        })
    }

    /// Verification's read of the destination, done as soon as a range is
    /// written and while the file is open: one read where the verification
    /// phase would open, read and close the file again (and for a large
    /// file, while other ranges still travel).
    fn read_back(
        &self,
        copy: &FileCopy<S, D>,
        writer: &D::Writer,
        range: Range<u64>,
        source: Sha256,
    ) -> Result<(), Failure> {
        let written: [u8; 32] = source.finalize().into();
        if range == (0..copy.src.size) && copy.src.size <= HASH_WHILE_COPYING_MAX {
            *copy.source_digest.lock().unwrap() = Some(written);
        }
        match writer.read_back_digest(range.clone()) {
            Some(Ok(stored)) if stored == written => {
                copy.ranges_read_back.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Some(Ok(_)) => Err((
                "verify written data",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the destination returned other data than was written at bytes {}..{}",
                        range.start, range.end
                    ),
                ),
            )),
            Some(Err(e)) => Err(("read back destination file", e)),
            // The verification phase reads it.
            None => Ok(()),
        }
    }

    /// Copies a range inside the kernel. `Err(None)`: the kernel cannot copy
    /// between these files and nothing was copied.
    fn kernel_copy(
        &self,
        writer: &D::Writer,
        src: std::os::fd::BorrowedFd<'_>,
        range: Range<u64>,
    ) -> Result<(), Option<Failure>> {
        let ctx = self.ctx;
        let mut offset = range.start;
        while offset < range.end {
            if ctx.cancelled() {
                return Err(Some((
                    "cancelled",
                    io::Error::from(io::ErrorKind::Interrupted),
                )));
            }
            let n = (range.end - offset).min(KERNEL_COPY_CHUNK as u64) as usize;
            if let Some(t) = &ctx.throttle {
                t.take(n as u64);
            }
            let got = match writer.copy_from(src, offset, n) {
                Ok(0) => break, // The file shrank: noticed at the end.
                Ok(got) => got,
                Err(e) if offset == range.start && kernel_cannot(&e) => return Err(None),
                Err(e) => return Err(Some(("copy data", e))),
            };
            Counters::add(&ctx.counters.bytes_transferred, got as u64);
            Counters::add(&ctx.counters.bytes_written, got as u64);
            offset += got as u64;
        }
        Ok(())
    }

    /// Completes a file copy: attributes, close, rename into place.
    fn finish_file(&self, copy: Arc<FileCopy<S, D>>) {
        let ctx = self.ctx;
        let path = child_path(&copy.dir.rel, &copy.name);
        let writer = copy.writer.write().unwrap().take().expect("finished once");
        let failure = copy.failure.lock().unwrap().take();
        let digest = copy.source_digest.lock().unwrap().take();
        let read_back =
            copy.read_back && copy.ranges_read_back.load(Ordering::Relaxed) == copy.ranges;
        let result = match failure {
            Some(f) => {
                drop(writer);
                Err(f)
            }
            None => (|| -> Result<(), Failure> {
                if copy.ends_in_hole {
                    writer
                        .set_len(copy.src.size)
                        .map_err(|e| ("set file length", e))?;
                }
                let update =
                    plan::creation_update(&copy.src, &ctx.opts, ctx.creator, copy.dir.setgid);
                if !update.is_empty() {
                    writer.update(&update).map_err(|e| ("set attributes", e))?;
                }
                writer.finish().map_err(|e| ("close destination file", e))?;
                if copy.direct {
                    return Ok(());
                }
                ctx.dst
                    .rename(&copy.dir.dst, &copy.tmp, &copy.name)
                    .map_err(|e| ("rename into place", e))
            })(),
        };
        let target = match result {
            Ok(()) => {
                copy.dir.modified.store(true, Ordering::Relaxed);
                let now = copy.reader.meta();
                let known = match digest {
                    _ if read_back => Some(KnownHash::Verified),
                    Some(digest) => Some(KnownHash::Source(digest)),
                    None => None,
                };
                if let (Ok(now), Some(known)) = (&now, known) {
                    if !changed(&copy.src, now) {
                        ctx.remember_source_hash(now, known);
                    }
                }
                match now {
                    Ok(now) if changed(&copy.src, &now) => {
                        // Verification, when on, finds it again and counts it.
                        if ctx.opts.verify_mode == VerifyMode::None {
                            Counters::inc(&ctx.counters.files_changed_at_source);
                        }
                        ctx.record(|| {
                            Record::new(&path, Kind::File, Outcome::ChangedAtSource, Phase::Transferring)
                                .reason("changed at source during the copy; the next execution copies it again")
                        });
                    }
                    _ => {}
                }
                ctx.transferred(&path, Kind::File, copy.src.size);
                self.link_target(&copy.dir, &copy.name, &copy.src)
            }
            Err((what, e)) => {
                let _ = ctx.dst.remove(&copy.dir.dst, &copy.tmp, Kind::File);
                if e.kind() != io::ErrorKind::Interrupted {
                    ctx.fail(Phase::Transferring, &path, Kind::File, what, &e);
                }
                None
            }
        };
        self.settle_group(&copy.src, target);
        let dir = copy.dir.clone();
        drop(copy);
        self.release(dir);
    }

    /// Removes an entry and, for a directory, everything below it.
    /// `count`: whether removals count as FilesDeleted (not for replacements).
    fn remove_tree(&self, dir: &D::Dir, name: &OsStr, kind: Kind, path: &[u8], count: bool) {
        let ctx = self.ctx;
        if kind == Kind::Dir {
            match ctx.dst.open_dir(dir, name).and_then(|sub| {
                let entries = ctx.dst.list(&sub)?;
                Ok((sub, entries))
            }) {
                Ok((sub, entries)) => {
                    for e in entries {
                        let child = child_path(path, &e.name);
                        self.remove_tree(&sub, &e.name, e.meta.kind, &child, count);
                    }
                }
                Err(e) => {
                    return ctx.fail(
                        Phase::Transferring,
                        path,
                        kind,
                        "open directory to delete",
                        &e,
                    );
                }
            }
        }
        match ctx.dst.remove(dir, name, kind) {
            Ok(()) if count => {
                Counters::inc(&ctx.counters.files_deleted);
                ctx.record(|| Record::new(path, kind, Outcome::Deleted, Phase::Transferring));
            }
            Ok(()) => {}
            Err(e) => {
                Counters::inc(&ctx.counters.files_failed_delete);
                ctx.record(|| {
                    Record::new(path, kind, Outcome::Failed, Phase::Transferring)
                        .error("delete", &e)
                });
            }
        }
    }
}

fn nlink_of<S: Location, D: Location>(claim: &Claim<S, D>) -> u64 {
    match claim {
        Claim::Copy(job) | Claim::LinkTo(job, _) => job.src.nlink,
        Claim::Parked => u64::MAX,
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

/// Errors of copy_file_range that mean "not between these two files".
fn kernel_cannot(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)
        )
}

/// Whether a file changed between two looks at it.
pub(crate) fn changed(before: &Meta, after: &Meta) -> bool {
    before.size != after.size || before.mtime != after.mtime || before.ctime != after.ctime
}

fn split(range: Range<u64>, size: u64) -> impl Iterator<Item = Range<u64>> {
    (range.start..range.end)
        .step_by(size as usize)
        .map(move |start| start..(start + size).min(range.end))
}

fn write_all_at<W: Writer>(writer: &W, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match writer.write_at(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
