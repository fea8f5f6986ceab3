// SPDX-License-Identifier: MIT
//! Ferry's sync engine: one execution of a task, from LAUNCHING to SUCCESS
//! or ERROR, with DataSync's phases and counters, between two [`location`]s.
//!
//! ```text
//! LAUNCHING ─► PREPARING ─┬─► TRANSFERRING ─► VERIFYING ─► SUCCESS | ERROR
//!              (scan both │   (starts while the scan still runs)
//!               sides)    │
//! ```
//!
//! The engine works through two [`Location`]s and a pool of worker threads
//! that keep many file-system operations in flight: on NFS every call is a
//! network round trip, and hiding round trips is what makes a sync fast.
//!
//! The crate is a library for the `ferry` command, the `ferry-agent` daemon
//! and the hub: it has no async runtime, HTTP, TLS, database or command line
//! of its own (README.md).

pub mod digests;
pub mod dry_run;
pub mod location;
pub mod manifest;

pub use ferry_model::counters;
/// The task options and their filters are defined in ferry-model (which
/// ferry-init links too); re-exported where they always were.
pub use ferry_model::{filter, options};
pub mod plan;
pub mod report;
pub mod sched;
pub mod share;
pub mod throttle;
mod transfer;
mod verify;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use self::counters::{CounterSnapshot, Counters};
use self::digests::DigestCache;
use self::filter::Filters;
pub use self::options::Options;
use self::options::{OptionsError, VerifyMode};
use self::plan::{Creator, SkipReason};
use self::report::{Observer, Outcome, Phase, Record};
use self::share::WorkShare;
use self::throttle::Throttle;
use crate::location::{Kind, Location, Meta, Timestamp};

/// Why an execution could not start. Nothing was touched.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `src.root().ctx(|| format!("open the source {}", src.describe()))?`.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, EngineError>;
}

impl<T> Context<T> for Result<T, io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, EngineError> {
        self.map_err(|source| EngineError::Io {
            what: what(),
            source,
        })
    }
}

/// The outcome of an execution, as the JSON report's summary and the last
/// `--json` event show it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    pub status: Phase,
    pub source: String,
    pub destination: String,
    pub start_time: String,
    pub options: Options,
    pub workers: usize,
    /// Milliseconds of each phase; PREPARING and TRANSFERRING overlap.
    pub prepare_duration: u64,
    pub transfer_duration: u64,
    pub verify_duration: u64,
    pub total_duration: u64,
    /// Milliseconds a plan estimated for this execution (set by whoever
    /// kept the plan: the engine does not know it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_duration: Option<u64>,
    pub counters: CounterSnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
}

/// What every worker of an execution shares.
pub(crate) struct Ctx<S: Location, D: Location> {
    pub src: S,
    pub dst: D,
    pub opts: Options,
    pub filters: Filters,
    pub counters: Counters,
    pub throttle: Arc<Throttle>,
    pub creator: Creator,
    /// Wall-clock start: a source entry whose ctime is later changed during the run.
    pub started: Timestamp,
    pub workers: usize,
    pub per_dir_limit: usize,
    observer: Arc<dyn Observer>,
    records: bool,
    cancel: Arc<AtomicBool>,
    phase: Mutex<Phase>,
    temp_salt: u64,
    temp_seq: AtomicU64,
    /// Paths transferred, for VerifyMode ONLY_FILES_TRANSFERRED: spooled to a
    /// temporary file so memory does not grow with the tree.
    transferred_log: Option<Mutex<BufWriter<File>>>,
    /// What copies learned for verification, by (dev, inode): source
    /// digests when no [`DigestCache`] is given, and files read back.
    source_hashes: Mutex<HashMap<(u64, u64), SourceHash>>,
    /// Source digests kept between executions, and the source's scope.
    source_digests: Option<(Arc<DigestCache>, u64)>,
    /// The manifest's paths found at the source (with a manifest): those
    /// it names and not found are reported.
    manifest_found: Option<Mutex<HashSet<Vec<u8>>>>,
    /// Several agents on the execution: units leased from their
    /// coordinator instead of a walk from the root ([`share`]).
    share: Option<Arc<dyn WorkShare>>,
}

/// The content hash of a source file and the attributes it was taken under:
/// valid as long as size, mtime and ctime are unchanged.
pub(crate) struct SourceHash {
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
    known: KnownHash,
}

/// What the copy of a file learned for its verification.
#[derive(Clone, Copy)]
pub(crate) enum KnownHash {
    /// SHA-256 of the source's content: only the destination needs reading.
    Source([u8; 32]),
    /// Every range written was read back from the destination and matched
    /// the source bytes it was written from: neither side needs reading.
    Verified,
}

/// Hashes remembered at most (about 80 MB): beyond, verification reads the
/// source again.
const MAX_SOURCE_HASHES: usize = 1 << 20;

/// One name of a directory as both sides have it.
pub(crate) struct Pair {
    pub name: OsString,
    pub src: Option<Meta>,
    pub dst: Option<Meta>,
}

/// Lists a directory on both sides at once (each listing is a round trip on
/// NFS) and pairs the entries by name, in name order. Without `dst_dir` only
/// the source is listed.
pub(crate) fn list_pair<S: Location, D: Location>(
    src: &S,
    src_dir: &S::Dir,
    dst: &D,
    dst_dir: Option<&D::Dir>,
) -> Result<Vec<Pair>, (&'static str, io::Error)> {
    let (a, b) = std::thread::scope(|scope| {
        let b = dst_dir.map(|d| scope.spawn(|| dst.list(d)));
        let a = src.list(src_dir);
        let b = match b {
            Some(b) => b
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("listing panicked"))),
            None => Ok(Vec::new()),
        };
        (a, b)
    });
    let mut a = a.map_err(|e| ("list source directory", e))?;
    let mut b = b.map_err(|e| ("list destination directory", e))?;
    a.sort_unstable_by(|x, y| x.name.cmp(&y.name));
    b.sort_unstable_by(|x, y| x.name.cmp(&y.name));
    let mut pairs = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let (x, y) = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => (a.next(), None),
            (None, Some(_)) => (None, b.next()),
            (Some(x), Some(y)) => match x.name.cmp(&y.name) {
                std::cmp::Ordering::Less => (a.next(), None),
                std::cmp::Ordering::Greater => (None, b.next()),
                std::cmp::Ordering::Equal => (a.next(), b.next()),
            },
        };
        let name = x.as_ref().or(y.as_ref()).expect("one side").name.clone();
        pairs.push(Pair {
            name,
            src: x.map(|e| e.meta),
            dst: y.map(|e| e.meta),
        });
    }
    Ok(pairs)
}

/// A directory on both sides: each location with its directory (the
/// destination's, if it has it).
pub(crate) type Both<'a, S, D> = (
    &'a S,
    &'a <S as Location>::Dir,
    &'a D,
    Option<&'a <D as Location>::Dir>,
);

/// The targets of `name` on both sides when it is a symlink on both
/// (`s`, `d` its attributes there), for [`plan::decide`] to compare.
pub(crate) fn symlink_targets<S: Location, D: Location>(
    (src, src_dir, dst, dst_dir): Both<'_, S, D>,
    s: &Meta,
    d: Option<&Meta>,
    name: &OsStr,
) -> Option<(OsString, OsString)> {
    if s.kind != Kind::Symlink || d.map(|d| d.kind) != Some(Kind::Symlink) {
        return None;
    }
    match (src.read_link(src_dir, name), dst.read_link(dst_dir?, name)) {
        (Ok(a), Ok(b)) => Some((a, b)),
        _ => None,
    }
}

/// The directory `names` lead to below `root`, opened one name at a time
/// (a location's operations take one name).
pub(crate) fn open_below<L: Location>(
    loc: &L,
    root: &L::Dir,
    names: &[&OsStr],
) -> io::Result<L::Dir> {
    let (first, rest) = names
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty path"))?;
    let mut dir = loc.open_dir(root, first)?;
    for name in rest {
        dir = loc.open_dir(&dir, name)?;
    }
    Ok(dir)
}

/// What was being done when an operation failed, and why.
pub(crate) type Failure = (&'static str, io::Error);

/// The directory `names` lead to on both sides, opened below the roots
/// (the roots again for none): a unit's, with several agents.
pub(crate) fn open_both<S: Location, D: Location>(
    (src, dst): (&S, &D),
    (src_root, dst_root): (&S::Dir, &D::Dir),
    names: &[&OsStr],
) -> Result<(S::Dir, D::Dir), Failure> {
    let (s, d) = match names {
        [] => (src.root(), dst.root()),
        names => (
            open_below(src, src_root, names),
            open_below(dst, dst_root, names),
        ),
    };
    let s = s.map_err(|e| ("open source directory", e))?;
    let d = d.map_err(|e| ("open destination directory", e))?;
    Ok((s, d))
}

/// Temporary names are `.ferry~` + 16 hex digits + `~tmp`.
const TEMP_PREFIX: &[u8] = b".ferry~";
const TEMP_SUFFIX: &[u8] = b"~tmp";

pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() == TEMP_PREFIX.len() + 16 + TEMP_SUFFIX.len()
        && b.starts_with(TEMP_PREFIX)
        && b.ends_with(TEMP_SUFFIX)
}

/// `/`-rooted path of `name` inside directory `dir`.
pub(crate) fn child_path(dir: &[u8], name: &OsStr) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + name.len() + 1);
    path.extend_from_slice(dir);
    if dir != b"/" {
        path.push(b'/');
    }
    path.extend_from_slice(name.as_bytes());
    path
}

fn wall_clock(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

impl<S: Location, D: Location> Ctx<S, D> {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The counters, with what the destination's wire adds to them.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut c = self.counters.snapshot();
        let w = self.dst.wire_counters();
        c.bytes_compressed += w.bytes_compressed;
        c.bytes_resent += w.bytes_resent;
        c.requests_retried += w.requests_retried;
        c
    }

    pub fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
        self.observer.phase(phase, &self.snapshot());
    }

    pub fn record(&self, make: impl FnOnce() -> Record) {
        if self.records {
            self.observer.record(make());
        }
    }

    pub fn fail(&self, phase: Phase, path: &[u8], kind: Kind, what: &str, err: &io::Error) {
        let c = &self.counters;
        Counters::inc(match phase {
            Phase::Preparing => &c.files_failed_prepare,
            Phase::Verifying => &c.files_failed_verify,
            _ => &c.files_failed_transfer,
        });
        self.record(|| Record::new(path, kind, Outcome::Failed, phase).error(what, err));
    }

    /// A source entry the filters let through: found, if the manifest
    /// names it.
    pub fn found_at_source(&self, path: &[u8]) {
        if let (Some(found), Some(m)) = (&self.manifest_found, self.filters.manifest()) {
            if m.files.contains(path) {
                found.lock().unwrap().insert(path.to_vec());
            }
        }
    }

    /// Reports each path the manifest names that the source does not have
    /// (skipped, not failed: DataSync's way), in order.
    fn report_not_found(&self) {
        let (Some(found), Some(m)) = (&self.manifest_found, self.filters.manifest()) else {
            return;
        };
        let found = found.lock().unwrap();
        let mut missing: Vec<&Vec<u8>> = m.files.iter().filter(|p| !found.contains(*p)).collect();
        missing.sort();
        for path in missing {
            self.skip(path, Kind::File, SkipReason::NotAtSource);
        }
    }

    pub fn skip(&self, path: &[u8], kind: Kind, reason: SkipReason) {
        Counters::inc(&self.counters.files_skipped);
        self.record(|| {
            Record::new(path, kind, Outcome::Skipped, Phase::Preparing).reason(reason.text())
        });
    }

    pub fn transferred(&self, path: &[u8], kind: Kind, bytes: u64) {
        Counters::inc(&self.counters.files_transferred);
        self.record(|| {
            Record::new(path, kind, Outcome::Transferred, Phase::Transferring).bytes(bytes)
        });
        if let Some(log) = &self.transferred_log {
            let mut log = log.lock().unwrap();
            // NUL cannot occur in a path.
            let _ = log.write_all(path).and_then(|_| log.write_all(b"\0"));
        }
    }

    /// What the copy of a file learned for its verification: the source's
    /// digest, and whether every range was read back. Nothing if the
    /// source changed between `before` and `after` the copy.
    pub fn remember_copy(
        &self,
        before: &Meta,
        after: &Meta,
        digest: Option<[u8; 32]>,
        read_back: bool,
    ) {
        if plan::changed(before, after) {
            return;
        }
        if let (Some(d), Some((cache, scope))) = (digest, &self.source_digests) {
            cache.put(*scope, before, after, d);
        }
        let known = match digest {
            _ if read_back => KnownHash::Verified,
            Some(d) if self.source_digests.is_none() => KnownHash::Source(d),
            _ => return,
        };
        let mut hashes = self.source_hashes.lock().unwrap();
        if hashes.len() < MAX_SOURCE_HASHES {
            let hash = SourceHash {
                size: after.size,
                mtime: after.mtime,
                ctime: after.ctime,
                known,
            };
            hashes.insert((after.dev, after.ino), hash);
        }
    }

    /// What was learned of a source file, while copying it or by an
    /// earlier execution, if the file is still as it was then.
    pub fn source_hash(&self, meta: &Meta) -> Option<KnownHash> {
        let hashes = self.source_hashes.lock().unwrap();
        let learned = hashes
            .get(&(meta.dev, meta.ino))
            .filter(|h| h.size == meta.size && h.mtime == meta.mtime && h.ctime == meta.ctime);
        match (learned, &self.source_digests) {
            (Some(h), _) => Some(h.known),
            (None, Some((cache, scope))) => cache.get(*scope, meta).map(KnownHash::Source),
            (None, None) => None,
        }
    }

    /// A source digest verification took, between `before` and `after`.
    pub fn remember_source_digest(&self, before: &Meta, after: &Meta, digest: [u8; 32]) {
        if let Some((cache, scope)) = &self.source_digests {
            cache.put(*scope, before, after, digest);
        }
    }

    pub fn temp_name(&self) -> std::ffi::OsString {
        let n = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(".ferry~{:016x}~tmp", self.temp_salt ^ n);
        name.into()
    }

    /// Runs `work` on every worker thread and waits for all of them.
    pub fn run_workers(&self, work: impl Fn() + Sync) {
        std::thread::scope(|scope| {
            for i in 0..self.workers {
                std::thread::Builder::new()
                    .name(format!("ferry-worker-{i}"))
                    .stack_size(4 << 20)
                    .spawn_scoped(scope, &work)
                    .expect("spawn worker thread");
            }
        });
    }
}

/// Operations in flight when a side is remote: enough to hide round trips.
pub const REMOTE_WORKERS: usize = 64;
/// Entry jobs of one destination directory in flight on a remote destination
/// (creates and renames in one NFS directory are serialized by the client).
pub const PER_DIR_LIMIT: usize = 8;

/// One execution of a sync task.
pub struct Execution<S: Location, D: Location> {
    ctx: Ctx<S, D>,
}

impl<S: Location, D: Location> Execution<S, D> {
    /// Validates the options; nothing is touched yet.
    pub fn new(
        src: S,
        dst: D,
        opts: Options,
        observer: Arc<dyn Observer>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self, EngineError> {
        let mut filters = opts.validate()?;
        if let Some(path) = &opts.manifest {
            filters = filters.with_manifest(Arc::new(manifest::load(Path::new(path))?));
        }
        let manifest_found = filters.manifest().map(|_| Mutex::new(HashSet::new()));
        let workers = opts.parallel.unwrap_or_else(|| {
            if src.is_remote() || dst.is_remote() {
                REMOTE_WORKERS
            } else {
                std::thread::available_parallelism()
                    .map_or(4, |n| n.get() * 4)
                    .clamp(4, 16)
            }
        });
        let transferred_log = match opts.verify_mode {
            VerifyMode::OnlyFilesTransferred => Some(Mutex::new(BufWriter::new(
                tempfile::tempfile().ctx(|| "prepare the task report (a temporary file)".into())?,
            ))),
            _ => None,
        };
        let now = SystemTime::now();
        let salt = wall_clock(now).nsec as u64 ^ (u64::from(std::process::id()) << 32);
        Ok(Execution {
            ctx: Ctx {
                throttle: Arc::new(Throttle::new(opts.bandwidth_limit())),
                records: observer.wants_records(),
                creator: Creator::this_process(),
                started: wall_clock(now),
                workers,
                per_dir_limit: PER_DIR_LIMIT,
                src,
                dst,
                opts,
                filters,
                counters: Counters::default(),
                observer,
                cancel,
                phase: Mutex::new(Phase::Queued),
                temp_salt: salt.rotate_left(17),
                temp_seq: AtomicU64::new(0),
                transferred_log,
                source_hashes: Mutex::new(HashMap::new()),
                source_digests: None,
                manifest_found,
                share: None,
            },
        })
    }

    /// Takes source digests from `cache`, and keeps those it takes there,
    /// for the source `scope` ([`digests::scope_of`] its location): a file
    /// unchanged since an earlier execution is not read again to verify it.
    pub fn with_source_digests(mut self, cache: Arc<DigestCache>, scope: u64) -> Self {
        self.ctx.source_digests = Some((cache, scope));
        self
    }

    /// Runs as one of several agents on the execution: its work comes in
    /// units leased from `share` ([`share`]).
    pub fn with_share(mut self, share: Arc<dyn WorkShare>) -> Self {
        self.ctx.share = Some(share);
        self
    }

    /// The current phase and counters, for progress displays.
    pub fn progress(&self) -> (Phase, CounterSnapshot) {
        (*self.ctx.phase.lock().unwrap(), self.ctx.snapshot())
    }

    /// Takes its bandwidth limit from `throttle` (one its runner keeps, to
    /// change the limit while it runs), not from its options.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.ctx.throttle = throttle;
        self
    }

    /// Runs the execution to its end.
    pub fn run(&self) -> Result<Summary, EngineError> {
        let ctx = &self.ctx;
        let start = Instant::now();
        let start_time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        ctx.set_phase(Phase::Launching);
        let src_root = ctx
            .src
            .root()
            .ctx(|| format!("open the source {}", ctx.src.describe()))?;
        let dst_root = ctx
            .dst
            .root()
            .ctx(|| format!("open the destination {}", ctx.dst.describe()))?;

        ctx.set_phase(Phase::Preparing);
        let prepare_start = Instant::now();
        let transfer = transfer::Transfer::new(ctx);
        let mut error_detail = None;
        ctx.dst.defer_changes();
        if let Err(e) = transfer.run(src_root, dst_root) {
            Counters::inc(&ctx.counters.files_failed_prepare);
            error_detail = Some(format!("cannot read the roots: {e}"));
        }
        for f in ctx.dst.settle() {
            // A unit's subdirectory made meanwhile by another agent doing
            // the unit again: it is there, as wanted.
            let made_meanwhile = ctx.share.is_some()
                && f.kind == Kind::Dir
                && f.error.kind() == io::ErrorKind::AlreadyExists;
            if made_meanwhile {
                continue;
            }
            // Counted as transferred when it was acknowledged.
            let _ = ctx.counters.files_transferred.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            );
            ctx.fail(Phase::Transferring, &f.path, f.kind, f.what, &f.error);
        }
        // With several agents, each knows only the paths it found.
        if error_detail.is_none() && !ctx.cancelled() && ctx.share.is_none() {
            ctx.report_not_found();
        }
        let transfer_end = Instant::now();
        let prepared = transfer.prepared_at.lock().unwrap().unwrap_or(transfer_end);
        drop(transfer);
        if let Some(log) = &ctx.transferred_log {
            let _ = log.lock().unwrap().flush();
        }

        let mut verify_duration = Duration::ZERO;
        if ctx.opts.verify_mode != VerifyMode::None && !ctx.cancelled() && error_detail.is_none() {
            ctx.set_phase(Phase::Verifying);
            let verify_start = Instant::now();
            verify::run(ctx);
            verify_duration = verify_start.elapsed();
        }

        let counters = ctx.snapshot();
        let (status, error_code) = if ctx.cancelled() {
            error_detail.get_or_insert_with(|| "the execution was cancelled".into());
            (Phase::Error, Some("Cancelled"))
        } else if error_detail.is_some() {
            (Phase::Error, Some("SourceOrDestinationUnreadable"))
        } else if counters.files_failed_verify > 0 {
            error_detail = Some(format!(
                "verification found {} difference(s); see the report",
                counters.files_failed_verify
            ));
            (Phase::Error, Some("VerificationFailed"))
        } else if counters.files_failed() > 0 {
            error_detail = Some(format!(
                "{} entr{} failed; see the report",
                counters.files_failed(),
                if counters.files_failed() == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
            (Phase::Error, Some("FilesFailed"))
        } else {
            (Phase::Success, None)
        };
        ctx.set_phase(status);
        Ok(Summary {
            status,
            source: ctx.src.describe(),
            destination: ctx.dst.describe(),
            start_time,
            options: ctx.opts.clone(),
            workers: ctx.workers,
            prepare_duration: millis(prepared - prepare_start),
            transfer_duration: millis(transfer_end - prepare_start),
            verify_duration: millis(verify_duration),
            total_duration: millis(start.elapsed()),
            estimated_duration: None,
            counters,
            error_code: error_code.map(str::to_string),
            error_detail,
        })
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}
