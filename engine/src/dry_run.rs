// SPDX-License-Identifier: MIT
//! A migration plan before the first byte: PREPARING alone, read-only. Both
//! trees are listed and compared with the execution's own decisions
//! ([`plan`](crate::plan)), and the plan says what a run would do (files and
//! bytes to transfer, metadata-only updates, deletions, by top-level
//! directory), what the destination cannot hold as it is (the fidelity
//! check), and how long the run should take: from round trips and
//! throughput measured on both locations while planning, or from the rates
//! of the task's last execution when there is one.
//!
//! Nothing is changed at the destination but two probes at its top, under
//! the engine's temporary names (an interrupted plan's are cleaned up by
//! the next run), then removed: a file, for the write rate, and a
//! directory of small files written as a run writes them, for the rate of
//! new files.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::filter::{Filters, Verdict};
use crate::location::{Kind, Limits, Location, Meta, Reader, Writer};
use crate::options::{IdMode, Options, PreserveDeletedFiles, VerifyMode};
use crate::plan::{self, Creator, Decision, DirDecision, SkipReason};
use crate::{
    child_path, is_temp_name, list_pair, manifest, symlink_targets, Context, EngineError,
    REMOTE_WORKERS,
};

/// Source bytes read to measure its read rate, at most, from large files.
const READ_PROBE: u64 = 64 << 20;
/// A file this large costs its data's time; a smaller one its round trips'.
const LARGE: u64 = 1 << 20;
/// Bytes written at the destination to measure its write rate, at most
/// (and an eighth of it first: the extra bytes over the extra time is the
/// rate, whatever the first write's latency).
const WRITE_PROBE: u64 = 32 << 20;
/// Small files written at the destination to measure its rate of new
/// files: two rounds (the second's extra files over its extra time is the
/// rate, whatever the first file's latency), and the most bytes each.
const FILES_PROBE: [u64; 2] = [512, 4096];
/// Bytes the second round writes, at most.
const FILES_PROBE_BYTES: u64 = 32 << 20;
/// Probe files in one directory (trees spread their files, and a remote
/// destination its directories over its connections).
const PROBE_DIR_FILES: u64 = 32;
const FILES_PROBE_SIZE: u64 = 64 << 10;
/// Round trips timed on each side (the median is kept).
const ROUND_TRIPS: usize = 7;
/// Fidelity issues listed one by one; beyond, they are only counted.
const MAX_ISSUES: usize = 10_000;
/// Hard-linked inodes followed, at most.
const MAX_LINKED: usize = 1 << 20;

/// What a run would do, in one part of the tree or in all of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tally {
    /// Entries found at the source (after filters).
    pub files_listed: u64,
    /// Entries to write anew (new, or their content differs).
    pub files_to_transfer: u64,
    pub bytes_to_transfer: u64,
    /// Entries whose attributes alone differ.
    pub metadata_only: u64,
    /// Destination entries to remove (with PreserveDeletedFiles REMOVE).
    pub files_to_delete: u64,
    pub unchanged: u64,
    /// Left alone by a rule (OverwriteMode NEVER, special files not kept).
    pub skipped: u64,
    /// Of those to transfer, files of at least 1 MiB and their bytes: their
    /// time is their data's, a small file's its round trips'.
    #[serde(skip)]
    pub large_files: u64,
    #[serde(skip)]
    pub large_bytes: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.files_listed += o.files_listed;
        self.files_to_transfer += o.files_to_transfer;
        self.bytes_to_transfer += o.bytes_to_transfer;
        self.metadata_only += o.metadata_only;
        self.files_to_delete += o.files_to_delete;
        self.unchanged += o.unchanged;
        self.skipped += o.skipped;
        self.large_files += o.large_files;
        self.large_bytes += o.large_bytes;
    }
}

/// Why the destination cannot hold an entry as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Problem {
    NameTooLong,
    PathTooLong,
    OwnerNotKept,
    SpecialFileNotCopied,
    HardLinkOutsideRoot,
    FileTooLarge,
}

/// One entry the destination cannot hold as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Issue {
    pub path: String,
    pub problem: Problem,
    pub detail: String,
}

/// What planning measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Measured {
    /// The scan of both trees, in seconds.
    pub scan_seconds: f64,
    /// Median of a few metadata round trips, in milliseconds.
    pub source_round_trip_ms: f64,
    pub destination_round_trip_ms: f64,
    /// Bytes per second read from source files of 1 MiB or more to be
    /// transferred (none when there are none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_read_bytes_per_second: Option<f64>,
    /// Bytes per second written to a temporary file at the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_write_bytes_per_second: Option<f64>,
    /// New files per second the destination took, written as a run writes
    /// them (in a temporary directory, removed), once under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_files_per_second: Option<f64>,
    /// What the first of them waited before the rate held, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_files_latency_seconds: Option<f64>,
}

/// The rates of a task's last execution that transferred something.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct History {
    pub files_per_second: f64,
    pub bytes_per_second: f64,
    /// Its verification's seconds per entry verified.
    pub verify_seconds_per_file: f64,
}

/// What planning is told besides the options.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Hints {
    /// The rates of the task's last execution that transferred something.
    pub history: Option<History>,
    /// The destination's largest file, when its location cannot tell
    /// (EFS: 47.9 TiB).
    pub file_size_max: Option<u64>,
}

/// How long a run should take.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Estimate {
    pub seconds: f64,
    /// What it rests on: `MEASURED` while planning, or `LAST_EXECUTION`.
    pub basis: &'static str,
    /// What bounds it: `SCAN`, `FILES` (round trips per file) or `DATA`.
    pub bound: &'static str,
    /// Of which verifying.
    pub verify_seconds: f64,
}

/// The plan.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MigrationPlan {
    pub source: String,
    pub destination: String,
    pub total: Tally,
    /// By the first component of the path (`/` for entries at the top).
    pub by_top_level: BTreeMap<String, Tally>,
    /// Entries the destination cannot hold as they are (the first 10,000).
    pub issues: Vec<Issue>,
    /// How many of each problem, all of them.
    pub issue_counts: BTreeMap<Problem, u64>,
    /// Directories that could not be read (their part of the plan is missing).
    pub unreadable: Vec<String>,
    pub measured: Measured,
    pub estimate: Estimate,
}

/// A directory of both trees to list.
struct DirJob<S: Location, D: Location> {
    at: Place<S, D>,
    /// Whether the destination has it (if not, all of it is new).
    at_destination: bool,
    rel: Vec<u8>,
    included: bool,
}

/// Where a job's directory is: opened (the roots), or a name in an opened
/// parent, opened by the worker that lists it (on NFS or the hub an open
/// is a round trip: one parent's children are opened in parallel).
enum Place<S: Location, D: Location> {
    Open(Arc<Opened<S, D>>),
    In(Arc<Opened<S, D>>, std::ffi::OsString),
}

/// A directory opened on both sides (the destination's if it has it).
struct Opened<S: Location, D: Location> {
    src: S::Dir,
    dst: Option<D::Dir>,
}

/// A hard-linked inode: the names it has, those found, one path.
type Linked = (u64, u64, Vec<u8>);

/// What the workers share.
struct Planner<'a, S: Location, D: Location> {
    src: &'a S,
    dst: &'a D,
    opts: &'a Options,
    filters: Filters,
    limits: Limits,
    creator: Creator,
    cancel: &'a AtomicBool,
    queue: Mutex<(Vec<DirJob<S, D>>, usize)>,
    more: Condvar,
    tallies: Mutex<BTreeMap<String, Tally>>,
    issues: Mutex<(Vec<Issue>, BTreeMap<Problem, u64>)>,
    unreadable: Mutex<Vec<String>>,
    /// Hard-linked inodes by (dev, ino).
    linked: Mutex<HashMap<(u64, u64), Linked>>,
    /// Source bytes read for the probe, and how long that took.
    read_probe: Mutex<(u64, Duration)>,
}

fn text(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// The top-level part of the tree `path` belongs to: its first component,
/// `/` for what is not a directory at the top.
fn top_of(path: &[u8], is_dir: bool) -> String {
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    match rest.iter().position(|b| *b == b'/') {
        Some(i) => text(&rest[..i]),
        None if is_dir => text(rest),
        None => "/".into(),
    }
}

impl<S: Location, D: Location> Planner<'_, S, D> {
    fn issue(&self, path: &[u8], problem: Problem, detail: String) {
        let mut issues = self.issues.lock().unwrap();
        *issues.1.entry(problem).or_default() += 1;
        if issues.0.len() < MAX_ISSUES {
            issues.0.push(Issue {
                path: text(path),
                problem,
                detail,
            });
        }
    }

    /// What the destination cannot hold of the source entry `s`.
    fn check(&self, path: &[u8], name: &OsStr, s: &Meta) {
        let l = &self.limits;
        if name.len() > l.name_max {
            self.issue(
                path,
                Problem::NameTooLong,
                format!(
                    "a name of {} bytes; the destination takes {}",
                    name.len(),
                    l.name_max
                ),
            );
        }
        if path.len() > l.path_max {
            self.issue(
                path,
                Problem::PathTooLong,
                format!(
                    "a path of {} bytes; programs that open it by its full path fail beyond {}",
                    path.len(),
                    l.path_max
                ),
            );
        }
        let keep_uid = self.opts.uid == IdMode::IntValue && s.uid != self.creator.uid;
        let keep_gid = self.opts.gid == IdMode::IntValue && s.gid != self.creator.gid;
        if !l.can_chown && (keep_uid || keep_gid) {
            self.issue(
                path,
                Problem::OwnerNotKept,
                format!(
                    "owned by {}:{}; the destination is written by {}:{}, which cannot give entries to others",
                    s.uid, s.gid, self.creator.uid, self.creator.gid
                ),
            );
        }
        if let Some(max) = l
            .file_size_max
            .filter(|m| s.kind == Kind::File && s.size > *m)
        {
            self.issue(
                path,
                Problem::FileTooLarge,
                format!(
                    "{} bytes; the destination takes files of {max} at most",
                    s.size
                ),
            );
        }
        if s.kind != Kind::Dir && s.nlink > 1 {
            let mut linked = self.linked.lock().unwrap();
            let room = linked.len() < MAX_LINKED;
            match linked.get_mut(&(s.dev, s.ino)) {
                Some(e) => e.1 += 1,
                None if room => {
                    linked.insert((s.dev, s.ino), (s.nlink, 1, path.to_vec()));
                }
                None => {}
            }
        }
    }

    /// Reads a file to be transferred, while the read probe wants bytes.
    /// Only large ones: a small file's cost is its round trips (counted
    /// apart), not its bytes.
    fn probe_read(&self, dir: &S::Dir, name: &OsStr, size: u64) {
        let want = {
            let p = self.read_probe.lock().unwrap();
            READ_PROBE.saturating_sub(p.0).min(size).min(8 << 20)
        };
        if want == 0 {
            return;
        }
        let started = Instant::now();
        let Ok(reader) = self.src.open_file(dir, name) else {
            return;
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        while read < want {
            match reader.read_at(&mut buf, read) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n as u64,
            }
        }
        let mut p = self.read_probe.lock().unwrap();
        p.0 += read;
        p.1 += started.elapsed();
    }

    /// Counts what lies under a destination directory that would go.
    fn count_doomed(&self, parent: &D::Dir, name: &OsStr) -> u64 {
        let Ok(dir) = self.dst.open_dir(parent, name) else {
            return 0;
        };
        let Ok(entries) = self.dst.list(&dir) else {
            return 0;
        };
        entries
            .iter()
            .map(|e| {
                1 + if e.meta.kind == Kind::Dir {
                    self.count_doomed(&dir, &e.name)
                } else {
                    0
                }
            })
            .sum()
    }

    fn dir(&self, job: DirJob<S, D>) -> Vec<DirJob<S, D>> {
        let mut found = Vec::new();
        let unreadable = |what: &str, e: std::io::Error| {
            self.unreadable
                .lock()
                .unwrap()
                .push(format!("{}: {what}: {e}", text(&job.rel)))
        };
        let here = match job.at {
            Place::Open(o) => o,
            Place::In(parent, name) => {
                let src = match self.src.open_dir(&parent.src, &name) {
                    Ok(d) => d,
                    Err(e) => {
                        unreadable("open source directory", e);
                        return found;
                    }
                };
                let dst = match (&parent.dst, job.at_destination) {
                    (Some(p), true) => match self.dst.open_dir(p, &name) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            unreadable("open destination directory", e);
                            return found;
                        }
                    },
                    _ => None,
                };
                Arc::new(Opened { src, dst })
            }
        };
        let pairs = match list_pair(self.src, &here.src, self.dst, here.dst.as_ref()) {
            Ok(p) => p,
            Err((what, e)) => {
                unreadable(what, e);
                return found;
            }
        };
        let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
        for p in pairs {
            if is_temp_name(&p.name) {
                continue;
            }
            let path = child_path(&job.rel, &p.name);
            let is_dir = p
                .src
                .as_ref()
                .or(p.dst.as_ref())
                .is_some_and(|m| m.kind == Kind::Dir);
            let t = tallies.entry(top_of(&path, is_dir)).or_default();
            let Some(s) = p.src else {
                let d = p.dst.expect("one side");
                let excluded = self.filters.judge(&path, d.kind == Kind::Dir, job.included)
                    == Verdict::Excluded;
                if !excluded && self.opts.preserve_deleted_files == PreserveDeletedFiles::Remove {
                    t.files_to_delete += 1;
                    if d.kind == Kind::Dir {
                        if let Some(dst) = &here.dst {
                            t.files_to_delete += self.count_doomed(dst, &p.name);
                        }
                    }
                }
                continue;
            };
            let verdict = self.filters.judge(&path, s.kind == Kind::Dir, job.included);
            if verdict == Verdict::Excluded {
                continue;
            }
            t.files_listed += 1;
            self.check(&path, &p.name, &s);
            if s.kind == Kind::Dir {
                match plan::decide_dir(p.dst.as_ref(), self.opts) {
                    DirDecision::Walk {
                        create, keep_meta, ..
                    } => {
                        let dst = p.dst.as_ref().filter(|d| d.kind == Kind::Dir);
                        if dst.is_none() {
                            t.files_to_transfer += 1;
                        } else if !keep_meta
                            && dst.is_some_and(|d| !plan::meta_update(&s, d, self.opts).is_empty())
                        {
                            t.metadata_only += 1;
                        } else {
                            t.unchanged += 1;
                        }
                        found.push(DirJob {
                            at: Place::In(here.clone(), p.name.clone()),
                            at_destination: !create && dst.is_some() && here.dst.is_some(),
                            rel: path,
                            included: verdict == Verdict::Included,
                        });
                    }
                    DirDecision::Skip(_) => t.skipped += 1,
                }
                continue;
            }
            let both = (self.src, &here.src, self.dst, here.dst.as_ref());
            let targets = symlink_targets(both, &s, p.dst.as_ref(), &p.name);
            let links = targets
                .as_ref()
                .map(|(a, b)| (a.as_os_str(), b.as_os_str()));
            match plan::decide(&s, p.dst.as_ref(), links, self.opts) {
                Decision::Skip(reason) => {
                    t.skipped += 1;
                    if reason == SkipReason::DeviceNotPreserved {
                        self.issue(
                            &path,
                            Problem::SpecialFileNotCopied,
                            format!("a {}, and PreserveDevices is NONE", s.kind.noun()),
                        );
                    }
                }
                Decision::Unchanged => t.unchanged += 1,
                Decision::UpdateMeta(_) => t.metadata_only += 1,
                Decision::Copy(_) => {
                    t.files_to_transfer += 1;
                    if s.kind == Kind::File {
                        t.bytes_to_transfer += s.size;
                        if s.size >= LARGE {
                            t.large_files += 1;
                            t.large_bytes += s.size;
                            self.probe_read(&here.src, &p.name, s.size);
                        }
                    }
                }
            }
        }
        let mut all = self.tallies.lock().unwrap();
        for (top, t) in tallies {
            all.entry(top).or_default().add(&t);
        }
        drop(all);
        // The destination's listings of the directories listed next, asked
        // for together (a remote destination sends them in one batch).
        if let Some(dst) = &here.dst {
            let ahead: Vec<&OsStr> = found
                .iter()
                .rev()
                .filter(|j| j.at_destination)
                .filter_map(|j| match &j.at {
                    Place::In(_, name) => Some(name.as_os_str()),
                    Place::Open(_) => None,
                })
                .collect();
            self.dst.prefetch_listings(dst, &ahead);
        }
        found
    }

    /// Lists directories on `workers` threads until none is left.
    fn run(&self, workers: usize) {
        let work = || loop {
            let job = {
                let mut q = self.queue.lock().unwrap();
                loop {
                    if self.cancel.load(Ordering::Relaxed) {
                        // Dropped jobs are no longer outstanding.
                        q.1 -= q.0.len();
                        q.0.clear();
                    }
                    if let Some(j) = q.0.pop() {
                        break Some(j);
                    }
                    if q.1 == 0 {
                        break None;
                    }
                    q = self.more.wait(q).unwrap();
                }
            };
            let Some(job) = job else {
                self.more.notify_all();
                return;
            };
            let found = self.dir(job);
            let mut q = self.queue.lock().unwrap();
            q.1 += found.len();
            q.1 -= 1;
            q.0.extend(found);
            drop(q);
            self.more.notify_all();
        };
        std::thread::scope(|scope| {
            for i in 0..workers {
                std::thread::Builder::new()
                    .name(format!("ferry-plan-{i}"))
                    .spawn_scoped(scope, work)
                    .expect("spawn a planning thread");
            }
        });
    }
}

/// The median of `ROUND_TRIPS` timings of `op`, in milliseconds.
fn round_trip(mut op: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..ROUND_TRIPS)
        .map(|_| {
            let started = Instant::now();
            op();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[ROUND_TRIPS / 2]
}

/// The destination's write rate in bytes per second, from two files of up
/// to [`WRITE_PROBE`] bytes (no more than a run writes, but 4 MiB at least).
fn write_rate<D: Location>(dst: &D, root: &D::Dir, bytes: u64) -> Option<f64> {
    let b = bytes.clamp(4 << 20, WRITE_PROBE);
    let a = b / 8;
    let ta = probe_write(dst, root, a)?;
    let tb = probe_write(dst, root, b)?;
    Some(if tb > ta {
        (b - a) as f64 / (tb - ta)
    } else {
        b as f64 / tb
    })
}

/// Writes `len` bytes to a temporary file at the top of `dst` and removes
/// it; the seconds it took.
fn probe_write<D: Location>(dst: &D, root: &D::Dir, len: u64) -> Option<f64> {
    let name = probe_name(0);
    let block = vec![0x5a_u8; 1 << 20];
    let started = Instant::now();
    let written = (|| {
        let w = dst.create_file(root, &name, 0o600)?;
        let mut at = 0u64;
        while at < len {
            at += w.write_at(&block, at)? as u64;
        }
        w.finish()
    })();
    let elapsed = started.elapsed();
    let _ = dst.remove(root, &name, Kind::File);
    written.ok().map(|()| elapsed.as_secs_f64().max(1e-6))
}

/// The engine's temporary name for a probe (an interrupted plan's is
/// cleaned up by the next run, as any leftover).
fn probe_name(n: u64) -> std::ffi::OsString {
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        ".ferry~{:016x}~tmp",
        salt ^ u64::from(std::process::id()) ^ n
    )
    .into()
}

/// Writes `count` files of `size` bytes as a run writes new files into
/// new directories (attributes, `workers` at once, the destination's
/// changes deferred as in a run), [`PROBE_DIR_FILES`] to a directory, in a
/// temporary directory at the top of `dst`; removes them; the seconds the
/// files took (their directories are made beforehand).
fn probe_files<D: Location>(
    dst: &D,
    root: &D::Dir,
    count: u64,
    size: u64,
    workers: usize,
) -> Option<f64> {
    let top_name = probe_name(1);
    dst.make_dir(root, &top_name, 0o700).ok()?;
    let top = dst.open_dir(root, &top_name).ok();
    let dirs: Vec<D::Dir> = match &top {
        Some(top) => (0..count.div_ceil(PROBE_DIR_FILES))
            .map_while(|d| {
                let name = format!("d{d}");
                dst.make_dir(top, OsStr::new(&name), 0o700).ok()?;
                dst.open_dir(top, OsStr::new(&name)).ok()
            })
            .collect(),
        None => Vec::new(),
    };
    let complete = dirs.len() as u64 == count.div_ceil(PROBE_DIR_FILES);
    let data = vec![0x5a_u8; size as usize];
    let failed = AtomicBool::new(false);
    let mtime = Some(crate::location::Timestamp {
        sec: 1_700_000_000,
        nsec: 0,
    });
    dst.defer_changes();
    let _ = dst.settle();
    let started = Instant::now();
    if complete {
        in_parallel(workers, count, |i| {
            let dir = &dirs[(i / PROBE_DIR_FILES) as usize];
            let wrote = (|| {
                let w = dst.create_file(dir, OsStr::new(&format!("f{i}")), 0o600)?;
                w.write_at(&data, 0)?;
                w.update(&crate::location::MetaUpdate {
                    mtime,
                    ..Default::default()
                })?;
                w.finish()
            })();
            if wrote.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        });
    }
    let settled = dst.settle().is_empty();
    let elapsed = started.elapsed();
    if complete {
        in_parallel(workers, count, |i| {
            let dir = &dirs[(i / PROBE_DIR_FILES) as usize];
            let _ = dst.remove(dir, OsStr::new(&format!("f{i}")), Kind::File);
        });
    }
    let _ = dst.settle();
    if let Some(top) = &top {
        in_parallel(workers, dirs.len() as u64, |d| {
            let _ = dst.remove(top, OsStr::new(&format!("d{d}")), Kind::Dir);
        });
    }
    let _ = dst.settle();
    let _ = dst.remove(root, &top_name, Kind::Dir);
    let _ = dst.settle();
    (complete && settled && !failed.load(Ordering::Relaxed))
        .then(|| elapsed.as_secs_f64().max(1e-6))
}

/// Calls `work` with 0 to `count` - 1 on `workers` threads.
fn in_parallel(workers: usize, count: u64, work: impl Fn(u64) + Sync) {
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(count as usize) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                work(i);
            });
        }
    });
}

/// The destination's rate of new files and the latency before it holds,
/// from two rounds of [`probe_files`] (one, when there are few files).
fn files_rate<D: Location>(
    dst: &D,
    root: &D::Dir,
    files: u64,
    size: u64,
    workers: usize,
) -> Option<(f64, f64)> {
    let most = files.min(FILES_PROBE_BYTES / size.max(1)).max(1);
    let [a, b] = FILES_PROBE.map(|n| n.min(most));
    let ta = probe_files(dst, root, a, size, workers)?;
    if b == a {
        return Some((a as f64 / ta, 0.0));
    }
    let tb = probe_files(dst, root, b, size, workers)?;
    let rate = if tb > ta {
        (b - a) as f64 / (tb - ta)
    } else {
        b as f64 / tb
    };
    Some((rate, (ta - a as f64 / rate).max(0.0)))
}

/// Estimates a run from what planning measured, or from `history`.
fn estimate(
    total: &Tally,
    m: &Measured,
    opts: &Options,
    workers: usize,
    history: Option<History>,
) -> Estimate {
    let files = (total.files_to_transfer + total.metadata_only + total.files_to_delete) as f64;
    let bytes = total.bytes_to_transfer as f64;
    let verified = match opts.verify_mode {
        VerifyMode::None => 0.0,
        VerifyMode::OnlyFilesTransferred => (total.files_to_transfer + total.metadata_only) as f64,
        VerifyMode::PointInTimeConsistent => total.files_listed as f64,
    };
    let limit = opts.bandwidth_limit().map(|b| b as f64);
    let (basis, files_s, data_s, verify_s) = match history {
        Some(h) => (
            "LAST_EXECUTION",
            files / h.files_per_second.max(1e-9),
            bytes
                / limit
                    .map_or(h.bytes_per_second, |l| l.min(h.bytes_per_second))
                    .max(1.0),
            verified * h.verify_seconds_per_file,
        ),
        None => {
            // A small file costs about two round trips at the source (open,
            // read), `workers` at once, and at the destination what its
            // probe measured (else four round trips: create, write,
            // attributes, rename); a large one its data, at the slowest of
            // the rates measured and the limit.
            let small = files - total.large_files as f64;
            let source = small * 2.0 * m.source_round_trip_ms / 1000.0 / workers as f64;
            let destination = match m.destination_files_per_second {
                Some(rate) => {
                    small / rate.max(1e-9) + m.destination_files_latency_seconds.unwrap_or(0.0)
                }
                None => small * 4.0 * m.destination_round_trip_ms / 1000.0 / workers as f64,
            };
            let rate = [
                m.source_read_bytes_per_second,
                m.destination_write_bytes_per_second,
                limit,
            ]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
            let large = if rate.is_finite() {
                total.large_bytes as f64 / rate.max(1.0)
            } else {
                0.0
            };
            // Small and large files share the link: all the bytes at the
            // slowest rate (the measured ones and the limit).
            let files_s = source.max(destination);
            let all = if rate.is_finite() {
                bytes / rate.max(1.0)
            } else {
                0.0
            };
            let (files_s, data_s) = if files_s >= large {
                ((files_s + large).max(all), large)
            } else {
                (files_s, (files_s + large).max(all))
            };
            // Verifying lists both sides again; hashing reads the data back
            // (files read back while copying are not read again).
            let rescan = m.scan_seconds * verified / (total.files_listed.max(1) as f64);
            ("MEASURED", files_s, data_s, rescan)
        }
    };
    let (bound, transfer) = [
        ("SCAN", m.scan_seconds),
        ("FILES", files_s),
        ("DATA", data_s),
    ]
    .into_iter()
    .fold(("SCAN", 0.0), |a, b| if b.1 > a.1 { b } else { a });
    Estimate {
        seconds: transfer + verify_s,
        basis,
        bound,
        verify_seconds: verify_s,
    }
}

/// Plans a run from `src` to `dst` with `opts`. `cancel` stops it.
pub fn plan<S: Location, D: Location>(
    src: &S,
    dst: &D,
    opts: &Options,
    hints: Hints,
    cancel: &AtomicBool,
) -> Result<MigrationPlan, EngineError> {
    let mut filters = opts.validate()?;
    if let Some(path) = &opts.manifest {
        filters = filters.with_manifest(Arc::new(manifest::load(std::path::Path::new(path))?));
    }
    let src_root = src
        .root()
        .ctx(|| format!("open the source {}", src.describe()))?;
    let dst_root = dst
        .root()
        .ctx(|| format!("open the destination {}", dst.describe()))?;
    let mut measured = Measured {
        source_round_trip_ms: round_trip(|| {
            let _ = src.stat_dir(&src_root);
        }),
        destination_round_trip_ms: round_trip(|| {
            let _ = dst.stat_dir(&dst_root);
        }),
        ..Measured::default()
    };
    let workers = opts
        .parallel
        .unwrap_or(if src.is_remote() || dst.is_remote() {
            REMOTE_WORKERS
        } else {
            16
        });
    let planner = Planner {
        src,
        dst,
        opts,
        filters,
        limits: Limits {
            file_size_max: hints.file_size_max.or(dst.limits().file_size_max),
            ..dst.limits()
        },
        creator: Creator::this_process(),
        cancel,
        queue: Mutex::new((Vec::new(), 1)),
        more: Condvar::new(),
        tallies: Mutex::new(BTreeMap::new()),
        issues: Mutex::new((Vec::new(), BTreeMap::new())),
        unreadable: Mutex::new(Vec::new()),
        linked: Mutex::new(HashMap::new()),
        read_probe: Mutex::new((0, Duration::ZERO)),
    };
    let started = Instant::now();
    // The top directory's own attributes, as a run sets them.
    if let (Ok(s), Ok(d)) = (src.stat_dir(&src_root), dst.stat_dir(&dst_root)) {
        if !plan::meta_update(&s, &d, opts).is_empty() {
            planner
                .tallies
                .lock()
                .unwrap()
                .entry("/".into())
                .or_default()
                .metadata_only += 1;
        }
    }
    let root = Arc::new(Opened {
        src: src_root,
        dst: Some(dst_root),
    });
    planner.queue.lock().unwrap().0.push(DirJob {
        at: Place::Open(root.clone()),
        at_destination: true,
        rel: b"/".to_vec(),
        included: false,
    });
    planner.run(workers);
    measured.scan_seconds = started.elapsed().as_secs_f64();
    let root_dst = root.dst.as_ref().expect("the top is at the destination");
    for (nlink, found, path) in planner.linked.lock().unwrap().values() {
        if found < nlink {
            planner.issue(
                path,
                Problem::HardLinkOutsideRoot,
                format!("{nlink} names, {found} of them under the task's root: the copy is not linked to the others"),
            );
        }
    }
    let by_top_level = planner.tallies.into_inner().unwrap();
    let mut total = Tally::default();
    for t in by_top_level.values() {
        total.add(t);
    }
    let (read, took) = *planner.read_probe.lock().unwrap();
    measured.source_read_bytes_per_second =
        (read > 0).then(|| read as f64 / took.as_secs_f64().max(1e-6));
    if total.large_bytes > 0 && !cancel.load(Ordering::Relaxed) {
        measured.destination_write_bytes_per_second = write_rate(dst, root_dst, total.large_bytes);
    }
    let small_files = total.files_to_transfer - total.large_files;
    if small_files > 0 && !cancel.load(Ordering::Relaxed) {
        let size =
            ((total.bytes_to_transfer - total.large_bytes) / small_files).min(FILES_PROBE_SIZE);
        if let Some((rate, latency)) = files_rate(dst, root_dst, small_files, size, workers) {
            measured.destination_files_per_second = Some(rate);
            measured.destination_files_latency_seconds = Some(latency);
        }
    }
    let (mut issues, issue_counts) = planner.issues.into_inner().unwrap();
    issues.sort_by(|a, b| a.path.cmp(&b.path).then(a.problem.cmp(&b.problem)));
    let estimate = estimate(&total, &measured, opts, workers, hints.history);
    Ok(MigrationPlan {
        source: src.describe(),
        destination: dst.describe(),
        total,
        by_top_level,
        issues,
        issue_counts,
        unreadable: planner.unreadable.into_inner().unwrap(),
        measured,
        estimate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_plan_ends() {
        use crate::location::local::LocalLocation;
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        for d in 0..4 {
            std::fs::create_dir_all(src.join(format!("d{d}/e"))).unwrap();
        }
        std::fs::create_dir(&dst).unwrap();
        let (src, dst) = (
            LocalLocation::open(&src).unwrap(),
            LocalLocation::open(&dst).unwrap(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Cancelled before it starts: the queued directories are dropped.
            let cancel = AtomicBool::new(true);
            let _ = tx.send(plan(&src, &dst, &Options::new(), Hints::default(), &cancel).is_ok());
        });
        let ended = rx.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(ended, Ok(true), "the plan did not end");
    }

    #[test]
    fn an_entry_counts_in_its_top_level_directory() {
        assert_eq!(top_of(b"/a/b/c", false), "a");
        assert_eq!(top_of(b"/a", true), "a");
        assert_eq!(top_of(b"/f", false), "/");
    }

    fn measured(scan: f64) -> Measured {
        Measured {
            scan_seconds: scan,
            source_round_trip_ms: 1.0,
            destination_round_trip_ms: 2.0,
            source_read_bytes_per_second: Some(100e6),
            destination_write_bytes_per_second: Some(50e6),
            destination_files_per_second: None,
            destination_files_latency_seconds: None,
        }
    }

    #[test]
    fn the_estimate_takes_the_slowest_of_scan_files_and_data() {
        let opts = Options {
            verify_mode: VerifyMode::None,
            ..Options::new()
        };
        let many_small = Tally {
            files_listed: 10_000,
            files_to_transfer: 10_000,
            bytes_to_transfer: 10_000,
            ..Tally::default()
        };
        // The slower side: 10,000 × 4 round trips of 2 ms / 10 workers = 8 s
        // at the destination (2 of 1 ms at the source).
        let e = estimate(&many_small, &measured(1.0), &opts, 10, None);
        assert_eq!((e.bound, e.basis), ("FILES", "MEASURED"));
        assert!((e.seconds - 8.0).abs() < 1e-9, "{e:?}");
        let few_large = Tally {
            files_listed: 2,
            files_to_transfer: 2,
            bytes_to_transfer: 1_000_000_000,
            large_files: 2,
            large_bytes: 1_000_000_000,
            ..Tally::default()
        };
        // A measured rate of new files takes the round trips' place.
        let probed = Measured {
            destination_files_per_second: Some(2000.0),
            ..measured(1.0)
        };
        let e = estimate(&many_small, &probed, &opts, 10, None);
        assert!((e.seconds - 5.0).abs() < 1e-9, "{e:?}");
        // The destination's 50 MB/s bounds it, or a lower limit.
        let e = estimate(&few_large, &measured(1.0), &opts, 10, None);
        assert_eq!(e.bound, "DATA");
        assert!((e.seconds - 20.0).abs() < 1e-9, "{e:?}");
        let limited = Options {
            bytes_per_second: 10_000_000,
            ..opts.clone()
        };
        assert!(
            (estimate(&few_large, &measured(1.0), &limited, 10, None).seconds - 100.0).abs() < 1e-9
        );
        // Small files' bytes cross the link too: 400 MB of them beside the
        // large files' 1 GB take 28 s at 50 MB/s, not the 20 s of the large.
        let mixed = Tally {
            files_listed: 1_002,
            files_to_transfer: 1_002,
            bytes_to_transfer: 1_400_000_000,
            ..few_large
        };
        let e = estimate(&mixed, &probed, &opts, 10, None);
        assert_eq!(e.bound, "DATA");
        assert!((e.seconds - 28.0).abs() < 1e-9, "{e:?}");
        // Nothing to do: the scan.
        let e = estimate(&Tally::default(), &measured(3.0), &opts, 10, None);
        assert_eq!((e.bound, e.seconds), ("SCAN", 3.0));
        // From the last execution's rates, with its verification's.
        let history = History {
            files_per_second: 500.0,
            bytes_per_second: 1e6,
            verify_seconds_per_file: 0.001,
        };
        let verified = Options {
            verify_mode: VerifyMode::OnlyFilesTransferred,
            ..Options::new()
        };
        let e = estimate(&many_small, &measured(1.0), &verified, 10, Some(history));
        assert_eq!((e.bound, e.basis), ("FILES", "LAST_EXECUTION"));
        assert!(
            (e.seconds - 30.0).abs() < 1e-9,
            "20 s copying, 10 s verifying: {e:?}"
        );
    }
}
