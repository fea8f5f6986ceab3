// SPDX-License-Identifier: MIT
//! VERIFYING: compare the destination with the source, content included.
//!
//! POINT_IN_TIME_CONSISTENT rescans both trees in parallel and compares every
//! entry's type, attributes and SHA-256; ONLY_FILES_TRANSFERRED checks the
//! entries this execution wrote. A difference on an entry that changed at
//! the source after the execution started is reported as such (the next run
//! copies it), not as a failure of the copy.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::counters::Counters;
use super::filter::Verdict;
use super::options::{
    IdMode, Mtime, OverwriteMode, PosixPermissions, PreserveDeletedFiles, PreserveDevices,
};
use super::plan;
use super::report::{Outcome, Phase, Record};
use super::sched::{Scheduler, Slot};
use super::share::{Feeder, SharedPhase, Unit, WorkShare};
use super::{child_path, is_temp_name, list_pair, open_below, open_both, Ctx, KnownHash, Pair};
use crate::location::{Kind, Location, Meta, MetaUpdate, Reader};

/// Why an entry failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Difference {
    Checksum,
    Metadata(String),
    /// At the source, not at the destination.
    Missing,
    /// At the destination although the source removed it (PreserveDeletedFiles REMOVE).
    NotRemoved,
}

impl Difference {
    fn text(&self) -> String {
        match self {
            Difference::Checksum => "checksum: content differs".into(),
            Difference::Metadata(what) => format!("metadata: {what}"),
            Difference::Missing => "missing at destination".into(),
            Difference::NotRemoved => "removed at source but still at destination".into(),
        }
    }
}

enum Job<S: Location, D: Location> {
    Dir {
        src: Arc<S::Dir>,
        dst: Arc<D::Dir>,
        rel: Vec<u8>,
        src_meta: Meta,
        included: bool,
    },
    Open {
        src_parent: Arc<S::Dir>,
        dst_parent: Arc<D::Dir>,
        name: OsString,
        rel: Vec<u8>,
        src_meta: Meta,
        included: bool,
    },
    Hash {
        src_dir: Arc<S::Dir>,
        dst_dir: Arc<D::Dir>,
        name: OsString,
        rel: Vec<u8>,
        src_meta: Meta,
        /// The unit the file is in, done when its last check is.
        ticket: Option<Arc<Ticket>>,
    },
    /// A unit leased from the coordinator: one directory to check.
    Unit(Unit),
    /// ONLY_FILES_TRANSFERRED: the rest of the transfer log, read a part
    /// at a time (memory stays bounded whatever its length).
    Log {
        log: BufReader<File>,
        src: Arc<S::Dir>,
        dst: Arc<D::Dir>,
    },
    /// Entries of one directory (`/a/b`, `` for the root) this execution
    /// wrote.
    Written {
        src: Arc<S::Dir>,
        dst: Arc<D::Dir>,
        parent: Vec<u8>,
        names: Vec<OsString>,
    },
}

/// Paths of the transfer log read at once, then checked a directory at a
/// time.
const LOG_PART: usize = 4096;

/// Content checks queued at most while more directories are opened: a
/// remote destination answers a directory's digests in one round trip, so
/// many directories' requests must be on the way at once to hide it.
const HASHES_AHEAD: usize = 4096;

struct Verify<'a, S: Location, D: Location> {
    ctx: &'a Ctx<S, D>,
    sched: Scheduler<Job<S, D>>,
    /// Keys of the directories whose content checks are queued.
    dirs: AtomicUsize,
    feeder: Arc<Feeder>,
}

/// A unit being checked: reported done to the coordinator when the last
/// of its jobs is over and drops it.
struct Ticket {
    unit: Unit,
    share: Arc<dyn WorkShare>,
    feeder: Arc<Feeder>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.share.done(SharedPhase::Verifying, &self.unit);
        self.feeder.finished_one();
    }
}

pub(crate) fn run<S: Location, D: Location>(ctx: &Ctx<S, D>) {
    let v = Verify {
        ctx,
        sched: Scheduler::new(ctx.workers, ctx.workers).with_lookahead(HASHES_AHEAD),
        dirs: AtomicUsize::new(0),
        // Checking a unit is mostly hashing its files: a few at once
        // keep every worker busy.
        feeder: Arc::new(Feeder::new(ctx.workers.div_ceil(8))),
    };
    ctx.dst.list_with_digests();
    let roots = (|| -> io::Result<_> {
        let src = ctx.src.root()?;
        let dst = ctx.dst.root()?;
        let src_meta = ctx.src.stat_dir(&src)?;
        let dst_meta = ctx.dst.stat_dir(&dst)?;
        Ok((Arc::new(src), Arc::new(dst), src_meta, dst_meta))
    })();
    let (src, dst, src_meta, dst_meta) = match roots {
        Ok(r) => r,
        Err(e) => return ctx.fail(Phase::Verifying, b"/", Kind::Dir, "open the roots", &e),
    };
    match (&ctx.share, &ctx.transferred_log) {
        (Some(share), _) => {
            // Units are checked whole, as POINT_IN_TIME_CONSISTENT does
            // (an agent knows only what it wrote itself).
            let hold = v.sched.hold();
            let v = &v;
            return std::thread::scope(|scope| {
                scope.spawn(move || {
                    let cancelled = || ctx.cancelled();
                    v.feeder
                        .run(share.as_ref(), SharedPhase::Verifying, cancelled, |unit| {
                            v.sched.push(Slot::Scan, Job::Unit(unit))
                        });
                    drop(hold);
                });
                v.work(&src, &dst);
            });
        }
        (None, Some(log)) => {
            let mut log = log.lock().unwrap();
            let file = match log
                .get_mut()
                .rewind()
                .and_then(|_| log.get_ref().try_clone())
            {
                Ok(f) => f,
                Err(e) => {
                    return ctx.fail(
                        Phase::Verifying,
                        b"/",
                        Kind::Dir,
                        "read the transfer log",
                        &e,
                    )
                }
            };
            drop(log);
            v.sched.push(
                Slot::Scan,
                Job::Log {
                    log: BufReader::new(file),
                    src: src.clone(),
                    dst: dst.clone(),
                },
            );
        }
        (None, None) => {
            if v.compare(b"/", &src_meta, Some(&dst_meta), None) {
                v.verified(b"/", Kind::Dir, 0);
            }
            v.sched.push(
                Slot::Scan,
                Job::Dir {
                    src: src.clone(),
                    dst: dst.clone(),
                    rel: b"/".to_vec(),
                    src_meta,
                    included: ctx.filters.root_included(),
                },
            );
        }
    }
    v.work(&src, &dst);
}

impl<S: Location, D: Location> Verify<'_, S, D> {
    /// Runs the queued jobs on every worker until all are done; `src` and
    /// `dst` are the roots units are opened below.
    fn work(&self, src: &Arc<S::Dir>, dst: &Arc<D::Dir>) {
        let ctx = self.ctx;
        ctx.run_workers(|| {
            while let Some((slot, job)) = self.sched.next() {
                if !ctx.cancelled() {
                    self.run_job(job, src, dst);
                }
                self.sched.done(slot);
            }
        });
    }

    /// Checks a unit's directory: its own attributes and its entries but
    /// the subdirectories (units of their own).
    fn unit(&self, unit: Unit, src_root: &S::Dir, dst_root: &D::Dir) {
        let ctx = self.ctx;
        let share = ctx.share.clone().expect("units come from a coordinator");
        let ticket = Arc::new(Ticket {
            unit: unit.clone(),
            share,
            feeder: self.feeder.clone(),
        });
        let opened = (|| -> io::Result<_> {
            let names = unit
                .names()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let (src, dst) = open_both((&ctx.src, &ctx.dst), (src_root, dst_root), &names)
                .map_err(|(_, e)| e)?;
            let (src_meta, dst_meta) = (ctx.src.stat_dir(&src)?, ctx.dst.stat_dir(&dst)?);
            Ok((src, dst, src_meta, dst_meta))
        })();
        match opened {
            Ok((src, dst, src_meta, dst_meta)) => {
                if self.compare(&unit.path, &src_meta, Some(&dst_meta), None) {
                    self.verified(&unit.path, Kind::Dir, 0);
                }
                let (src, dst) = (Arc::new(src), Arc::new(dst));
                self.dir(src, dst, &unit.path, &src_meta, unit.included, Some(ticket));
            }
            Err(e) => ctx.fail(
                Phase::Verifying,
                &unit.path,
                Kind::Dir,
                "open directory",
                &e,
            ),
        }
    }

    fn run_job(&self, job: Job<S, D>, src_root: &S::Dir, dst_root: &D::Dir) {
        let ctx = self.ctx;
        match job {
            Job::Unit(unit) => self.unit(unit, src_root, dst_root),
            Job::Dir {
                src,
                dst,
                rel,
                src_meta,
                included,
            } => self.dir(src, dst, &rel, &src_meta, included, None),
            Job::Open {
                src_parent,
                dst_parent,
                name,
                rel,
                src_meta,
                included,
            } => {
                let opened = ctx
                    .src
                    .open_dir(&src_parent, &name)
                    .and_then(|s| Ok((s, ctx.dst.open_dir(&dst_parent, &name)?)));
                match opened {
                    Ok((s, d)) => {
                        self.dir(Arc::new(s), Arc::new(d), &rel, &src_meta, included, None)
                    }
                    Err(e) => ctx.fail(Phase::Verifying, &rel, Kind::Dir, "open directory", &e),
                }
            }
            Job::Hash {
                src_dir,
                dst_dir,
                name,
                rel,
                src_meta,
                ticket: _ticket,
            } => self.hash(&src_dir, &dst_dir, &name, &rel, &src_meta),
            Job::Log { log, src, dst } => self.log_part(log, src, dst),
            Job::Written {
                src,
                dst,
                parent,
                names,
            } => self.written(src, dst, &parent, names),
        }
    }

    /// Checks the entries of a directory; with a `ticket`, a unit's: its
    /// subdirectories are units of their own, not walked.
    fn dir(
        &self,
        src: Arc<S::Dir>,
        dst: Arc<D::Dir>,
        rel: &[u8],
        src_meta: &Meta,
        included: bool,
        ticket: Option<Arc<Ticket>>,
    ) {
        let ctx = self.ctx;
        let pairs = match list_pair(&ctx.src, &src, &ctx.dst, Some(&*dst)) {
            Ok(p) => p,
            Err((what, e)) => return ctx.fail(Phase::Verifying, rel, Kind::Dir, what, &e),
        };
        let mut hashes = Vec::new();
        let mut subdirs = Vec::new();
        let mut removed_leftovers = false;
        for Pair {
            name,
            src: s,
            dst: d,
        } in pairs
        {
            if is_temp_name(&name) {
                // A unit's leftovers, kept while agents were transferring.
                if let (Some(_), Some(d)) = (&ticket, &d) {
                    self.remove_leftover(&dst, &name, d.kind, &child_path(rel, &name));
                    removed_leftovers = true;
                }
                continue;
            }
            let path = child_path(rel, &name);
            let is_dir = s
                .as_ref()
                .or(d.as_ref())
                .is_some_and(|m| m.kind == Kind::Dir);
            let verdict = ctx.filters.judge(&path, is_dir, included);
            if verdict == Verdict::Excluded {
                continue;
            }
            match (s, d) {
                (Some(s), d) => {
                    if s.kind.is_special() && ctx.opts.preserve_devices == PreserveDevices::None {
                        continue;
                    }
                    // Its own unit checks it (one missing is reported here).
                    if ticket.is_some() && s.kind == Kind::Dir && d.is_some() {
                        continue;
                    }
                    let links = (s.kind == Kind::Symlink).then_some((&*src, &*dst, &*name));
                    let same = self.compare(&path, &s, d.as_ref(), links);
                    if !same {
                        continue;
                    }
                    match s.kind {
                        Kind::Dir => {
                            self.verified(&path, Kind::Dir, 0);
                            subdirs.push(name.clone());
                            self.sched.push(
                                Slot::Scan,
                                Job::Open {
                                    src_parent: src.clone(),
                                    dst_parent: dst.clone(),
                                    name,
                                    rel: path,
                                    src_meta: s,
                                    included: verdict == Verdict::Included,
                                },
                            )
                        }
                        Kind::File => hashes.push(Job::Hash {
                            src_dir: src.clone(),
                            dst_dir: dst.clone(),
                            name,
                            rel: path,
                            src_meta: s,
                            ticket: ticket.clone(),
                        }),
                        kind => self.verified(&path, kind, 0),
                    }
                }
                (None, Some(d)) => {
                    if ctx.opts.preserve_deleted_files == PreserveDeletedFiles::Remove {
                        // Removed from the source after its directory was listed?
                        if src_meta.mtime >= ctx.started || src_meta.ctime >= ctx.started {
                            self.changed_at_source(
                                &path,
                                d.kind,
                                "removed at source during the run",
                            );
                        } else {
                            self.differs(&path, d.kind, Difference::NotRemoved);
                        }
                    }
                }
                (None, None) => unreachable!(),
            }
        }
        // Removing leftovers moved the directory's times: put them back
        // (unless they are kept as the destination has them).
        if removed_leftovers && ticket.as_ref().is_some_and(|t| !t.unit.keep_meta) {
            let times = plan::creation_update(src_meta, &ctx.opts, ctx.creator, false);
            let update = MetaUpdate {
                mtime: times.mtime,
                atime: times.atime,
                ..MetaUpdate::default()
            };
            if let Err(e) = ctx.dst.update_dir(&dst, &update) {
                ctx.fail(Phase::Verifying, rel, Kind::Dir, "set directory times", &e);
            }
        }
        // The listings of the directories opened next, asked for together
        // (scans are taken from a stack: the last first).
        let ahead: Vec<&OsStr> = subdirs.iter().rev().map(OsString::as_os_str).collect();
        ctx.dst.prefetch_listings(&dst, &ahead);
        // One request for the directory's digests, not one per file.
        let names: Vec<&OsStr> = hashes
            .iter()
            .filter_map(|j| match j {
                Job::Hash { name, src_meta, .. }
                    if !matches!(ctx.source_hash(src_meta), Some(KnownHash::Verified)) =>
                {
                    Some(name.as_os_str())
                }
                _ => None,
            })
            .collect();
        ctx.dst.prefetch_digests(&dst, &names);
        let key = self.dirs.fetch_add(1, Ordering::Relaxed);
        self.sched.push_dir(key, hashes);
    }

    /// Compares attributes; true when equal so far (content still to check).
    fn compare(
        &self,
        path: &[u8],
        src: &Meta,
        dst: Option<&Meta>,
        links: Option<(&S::Dir, &D::Dir, &OsStr)>,
    ) -> bool {
        let ctx = self.ctx;
        let Some(dst) = dst else {
            if src.ctime >= ctx.started {
                self.changed_at_source(path, src.kind, "added at source during the run");
            } else {
                self.differs(path, src.kind, Difference::Missing);
            }
            return false;
        };
        let mut difference = meta_difference(src, dst, ctx).map(Difference::Metadata);
        if difference.is_none() {
            if let Some((s, d, name)) = links {
                let targets = ctx
                    .src
                    .read_link(s, name)
                    .and_then(|a| Ok((a, ctx.dst.read_link(d, name)?)));
                match targets {
                    Ok((a, b)) if a == b => {}
                    Ok(_) => {
                        difference = Some(Difference::Metadata("symlink target differs".into()))
                    }
                    Err(e) => {
                        ctx.fail(Phase::Verifying, path, Kind::Symlink, "read symlink", &e);
                        return false;
                    }
                }
            }
        }
        match difference {
            None => true,
            Some(d) => {
                if src.ctime >= ctx.started {
                    self.changed_at_source(path, src.kind, "changed at source during the run");
                } else {
                    self.differs(path, src.kind, d);
                }
                false
            }
        }
    }

    fn hash(&self, src_dir: &S::Dir, dst_dir: &D::Dir, name: &OsStr, path: &[u8], src_meta: &Meta) {
        let ctx = self.ctx;
        // Taken while copying, and the file has not changed since: only the
        // destination needs reading.
        // A remote destination hashes its own file: the data does not travel again.
        let dst_digest = || {
            ctx.dst
                .digest(dst_dir, name)
                .unwrap_or_else(|| ctx.dst.open_file(dst_dir, name).and_then(|r| digest(&r)))
        };
        let (s, d) = match ctx.source_hash(src_meta) {
            // Read back and compared right after it was written, and neither
            // side's size or modification time has moved since (compared
            // before this job was queued).
            Some(KnownHash::Verified) => return self.verified(path, Kind::File, src_meta.size),
            Some(KnownHash::Source(digest)) => (Ok((digest, src_meta.clone())), dst_digest()),
            None => std::thread::scope(|scope| {
                let d = scope.spawn(dst_digest);
                let s = ctx.src.open_file(src_dir, name).and_then(|r| {
                    let (digest, now) = (digest(&r)?, r.meta()?);
                    ctx.remember_source_digest(src_meta, &now, digest);
                    Ok((digest, now))
                });
                let d = d
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("hashing panicked")));
                (s, d)
            }),
        };
        match (s, d) {
            (Ok((a, now)), Ok(b)) => {
                if a == b {
                    self.verified(path, Kind::File, src_meta.size);
                } else if now.ctime >= ctx.started || plan::changed(src_meta, &now) {
                    self.changed_at_source(path, Kind::File, "changed at source during the run");
                } else {
                    self.differs(path, Kind::File, Difference::Checksum);
                }
            }
            (Err(e), _) => ctx.fail(Phase::Verifying, path, Kind::File, "read source file", &e),
            (_, Err(e)) => ctx.fail(
                Phase::Verifying,
                path,
                Kind::File,
                "read destination file",
                &e,
            ),
        }
    }

    /// ONLY_FILES_TRANSFERRED: reads up to [`LOG_PART`] paths of the
    /// transfer log and queues them by directory, then the rest of the log.
    fn log_part(&self, mut log: BufReader<File>, src: Arc<S::Dir>, dst: Arc<D::Dir>) {
        let mut by_dir: BTreeMap<Vec<u8>, Vec<OsString>> = BTreeMap::new();
        let mut more = true;
        for _ in 0..LOG_PART {
            let mut path = Vec::new();
            match log.read_until(0, &mut path) {
                Ok(0) => {
                    more = false;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    return self.ctx.fail(
                        Phase::Verifying,
                        b"/",
                        Kind::Dir,
                        "read the transfer log",
                        &e,
                    )
                }
            }
            if path.last() == Some(&0) {
                path.pop();
            }
            if let Some(i) = path.iter().rposition(|&b| b == b'/') {
                let name = OsStr::from_bytes(&path[i + 1..]).to_os_string();
                path.truncate(i);
                by_dir.entry(path).or_default().push(name);
            }
        }
        for (parent, names) in by_dir {
            let (src, dst) = (src.clone(), dst.clone());
            self.sched.push(
                Slot::Global,
                Job::Written {
                    src,
                    dst,
                    parent,
                    names,
                },
            );
        }
        if more {
            self.sched.push(Slot::Scan, Job::Log { log, src, dst });
        }
    }

    /// Checks entries of one directory this execution wrote: their
    /// attributes asked for together, then their content.
    fn written(
        &self,
        src_root: Arc<S::Dir>,
        dst_root: Arc<D::Dir>,
        parent: &[u8],
        mut names: Vec<OsString>,
    ) {
        let ctx = self.ctx;
        let below: Vec<&OsStr> = parent
            .split(|&b| b == b'/')
            .filter(|n| !n.is_empty())
            .map(OsStr::from_bytes)
            .collect();
        let dirs = if below.is_empty() {
            Ok((src_root, dst_root))
        } else {
            open_below(&ctx.src, &src_root, &below).and_then(|s| {
                Ok((
                    Arc::new(s),
                    Arc::new(open_below(&ctx.dst, &dst_root, &below)?),
                ))
            })
        };
        let (s_dir, d_dir) = match dirs {
            Ok(d) => d,
            Err(e) => {
                for name in &names {
                    let path = child_path(parent, name);
                    ctx.fail(
                        Phase::Verifying,
                        &path,
                        Kind::File,
                        "open parent directory",
                        &e,
                    );
                }
                return;
            }
        };
        // `/` itself is logged as the empty name in the empty parent.
        if let Some(i) = names.iter().position(|n| n.is_empty()) {
            names.swap_remove(i);
            match (ctx.src.stat_dir(&s_dir), ctx.dst.stat_dir(&d_dir)) {
                (Ok(s), Ok(d)) => {
                    if self.compare(b"/", &s, Some(&d), None) {
                        self.verified(b"/", Kind::Dir, 0);
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    ctx.fail(Phase::Verifying, b"/", Kind::Dir, "stat", &e)
                }
            }
        }
        let refs: Vec<&OsStr> = names.iter().map(OsString::as_os_str).collect();
        let src_metas = ctx.src.stat_many(&s_dir, &refs);
        let dst_metas = ctx.dst.stat_many(&d_dir, &refs);
        for ((name, src_meta), dst_meta) in names.into_iter().zip(src_metas).zip(dst_metas) {
            let path = child_path(parent, &name);
            let src_meta = match src_meta {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.changed_at_source(&path, Kind::File, "removed at source during the run");
                    continue;
                }
                Err(e) => {
                    ctx.fail(Phase::Verifying, &path, Kind::File, "stat source", &e);
                    continue;
                }
            };
            let links = (src_meta.kind == Kind::Symlink).then_some((&*s_dir, &*d_dir, &*name));
            if !self.compare(&path, &src_meta, dst_meta.ok().as_ref(), links) {
                continue;
            }
            if src_meta.kind == Kind::File {
                self.sched.push(
                    Slot::Global,
                    Job::Hash {
                        src_dir: s_dir.clone(),
                        dst_dir: d_dir.clone(),
                        name,
                        rel: path,
                        src_meta,
                        ticket: None,
                    },
                );
            } else {
                self.verified(&path, src_meta.kind, 0);
            }
        }
    }

    /// Removes a temporary name left by an interrupted transfer (with what
    /// is below it, for a directory). A failure is reported, not fatal.
    fn remove_leftover(&self, dir: &D::Dir, name: &OsStr, kind: Kind, path: &[u8]) {
        let ctx = self.ctx;
        let removed = (|| {
            if kind == Kind::Dir {
                let sub = ctx.dst.open_dir(dir, name)?;
                for e in ctx.dst.list(&sub)? {
                    let below = child_path(path, &e.name);
                    self.remove_leftover(&sub, &e.name, e.meta.kind, &below);
                }
            }
            ctx.dst.remove(dir, name, kind)
        })();
        if let Err(e) = removed.or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }) {
            ctx.fail(Phase::Verifying, path, kind, "remove a leftover", &e);
        }
    }

    /// `path` is equal on both sides; `bytes` of data were compared.
    fn verified(&self, path: &[u8], kind: Kind, bytes: u64) {
        Counters::inc(&self.ctx.counters.files_verified);
        Counters::add(&self.ctx.counters.bytes_verified, bytes);
        self.ctx
            .record(|| Record::new(path, kind, Outcome::Verified, Phase::Verifying));
    }

    fn changed_at_source(&self, path: &[u8], kind: Kind, why: &str) {
        Counters::inc(&self.ctx.counters.files_changed_at_source);
        self.ctx.record(|| {
            Record::new(path, kind, Outcome::ChangedAtSource, Phase::Verifying)
                .reason(format!("{why}; the next execution copies it"))
        });
    }

    fn differs(&self, path: &[u8], kind: Kind, difference: Difference) {
        let ctx = self.ctx;
        if ctx.opts.overwrite_mode == OverwriteMode::Never && difference != Difference::Missing {
            // The destination's own version was kept on purpose.
            Counters::inc(&ctx.counters.files_skipped);
            return ctx.record(|| {
                Record::new(path, kind, Outcome::Skipped, Phase::Verifying)
                    .reason(format!("{} (OverwriteMode NEVER)", difference.text()))
            });
        }
        Counters::inc(&ctx.counters.files_failed_verify);
        ctx.record(|| {
            Record::new(path, kind, Outcome::Failed, Phase::Verifying).reason(difference.text())
        });
    }
}

/// The first attribute that differs, per the options.
fn meta_difference<S: Location, D: Location>(
    src: &Meta,
    dst: &Meta,
    ctx: &Ctx<S, D>,
) -> Option<String> {
    let opts = &ctx.opts;
    if src.kind != dst.kind {
        return Some(format!(
            "type ({:?} at source, {:?} at destination)",
            src.kind, dst.kind
        ));
    }
    if src.kind == Kind::File && src.size != dst.size {
        return Some(format!(
            "size ({} at source, {} at destination)",
            src.size, dst.size
        ));
    }
    if matches!(src.kind, Kind::CharDevice | Kind::BlockDevice) && src.rdev != dst.rdev {
        return Some("device numbers".into());
    }
    if opts.posix_permissions == PosixPermissions::Preserve
        && src.kind != Kind::Symlink
        && src.mode != dst.mode
    {
        return Some(format!(
            "mode ({:04o} at source, {:04o} at destination)",
            src.mode, dst.mode
        ));
    }
    if opts.uid == IdMode::IntValue && src.uid != dst.uid {
        return Some(format!(
            "owner ({} at source, {} at destination)",
            src.uid, dst.uid
        ));
    }
    if opts.gid == IdMode::IntValue && src.gid != dst.gid {
        return Some(format!(
            "group ({} at source, {} at destination)",
            src.gid, dst.gid
        ));
    }
    if opts.mtime == Mtime::Preserve && src.kind != Kind::Symlink && !plan::same_mtime(src, dst) {
        return Some("modification time".into());
    }
    None
}

fn digest<R: Reader>(reader: &R) -> io::Result<[u8; 32]> {
    crate::digests::sha256_of(reader, reader.meta()?.size, || Ok(()))
}
