// SPDX-License-Identifier: MIT
//! The `Location` conformance suite: one set of checks every location runs
//! (rclone's model: one suite, every backend), so the local location, the
//! hub's remote location and any later one behave alike where it matters,
//! and above all keep the properties the engine relies on for safety: no
//! operation follows a symlink, data is never read from or written to
//! anything but a regular file, and a name is one name (`..`, `/`, an
//! absolute path are refused).
//!
//! Built only with the `conformance` feature. A backend's test makes a
//! [`Harness`] — a fresh, empty location and the directory that holds its
//! tree on this machine, to prepare and look at — and calls [`run_all`]:
//!
//! ```ignore
//! conformance::run_all(&|| {
//!     let dir = tempfile::tempdir().unwrap();
//!     let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
//!     std::fs::create_dir(&root).unwrap();
//!     std::fs::create_dir(&outside).unwrap();
//!     Harness {
//!         location: MyLocation::open(&root).unwrap(),
//!         root, outside,
//!         caps: Capabilities { read: true, deferred_create: false,
//!                              special_files: true, unsupported: vec!["digest"] },
//!         keep: Box::new(dir),
//!     }
//! });
//! ```
//!
//! Where a location legitimately differs, its [`Capabilities`] say so and the
//! check adapts (a write-only location's reader, errors of a create that
//! surface at `finish`); a check that cannot apply reports
//! [`Outcome::NotSupported`], and [`run_all`] fails unless the harness
//! listed exactly those checks in [`Capabilities::unsupported`]. Nothing is
//! skipped silently.

use std::any::Any;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::{Kind, Location, MetaUpdate, Reader, Timestamp, Writer};

/// What a location can do, where locations differ.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// `open_file` gives a reader (false: the location is only written to).
    pub read: bool,
    /// `create_file` may send nothing yet: its errors can surface at the
    /// writer's `finish` instead.
    pub deferred_create: bool,
    /// FIFOs and sockets can be made, and set-uid/set-gid modes set (the
    /// hub: a task with PreserveDevices on a location that allows them).
    pub special_files: bool,
    /// The checks this location reports as not supported, by name.
    pub unsupported: Vec<&'static str>,
}

/// A fresh, empty location and its tree on this machine.
pub struct Harness<L: Location> {
    pub location: L,
    /// The directory that is the location's root, to prepare and look at.
    pub root: PathBuf,
    /// A directory outside the location: symlinks point there, and nothing
    /// an operation on the location does may change it.
    pub outside: PathBuf,
    pub caps: Capabilities,
    /// What must live as long as the location (temporary directories, a
    /// server).
    pub keep: Box<dyn Any>,
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The location cannot do this, and says why.
    NotSupported(&'static str),
}

pub type Checked = Result<Outcome, String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// `r` must be an error (with `errno` when one is given and the location
/// reports one).
fn refused<T>(what: &str, r: io::Result<T>, errno: Option<i32>) -> Result<io::Error, String> {
    match r {
        Ok(_) => Err(format!("{what}: done, should have been refused")),
        Err(e) => {
            if let (Some(want), Some(got)) = (errno, e.raw_os_error()) {
                ensure!(
                    want == got,
                    "{what}: refused with {e} (errno {got}), expected errno {want}"
                );
            }
            Ok(e)
        }
    }
}

fn ok<T>(what: &str, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn lstat(p: &Path) -> Result<std::fs::Metadata, String> {
    std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn mode_of(p: &Path) -> Result<u32, String> {
    Ok(lstat(p)?.permissions().mode() & 0o7777)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Writes all of `buf` at `offset`, short writes included.
fn write_all<W: Writer>(w: &W, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = w.write_at(buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// A whole file through the location: create, data, close.
fn put<L: Location>(loc: &L, dir: &L::Dir, name: &OsStr, mode: u32, data: &[u8]) -> io::Result<()> {
    let w = loc.create_file(dir, name, mode)?;
    write_all(&w, data, 0)?;
    w.finish()
}

/// The file `name` cannot be created: refused at `create_file`, or (a
/// location with a deferred create) at `finish`.
fn create_refused<L: Location>(
    h: &Harness<L>,
    dir: &L::Dir,
    name: &OsStr,
    errno: Option<i32>,
) -> Result<io::Error, String> {
    let what = format!("create_file {:?}", name.to_string_lossy());
    match h.location.create_file(dir, name, 0o644) {
        Err(e) => refused(&what, Err::<(), _>(e), errno),
        Ok(w) => {
            ensure!(
                h.caps.deferred_create,
                "{what}: created, should have been refused"
            );
            let r = write_all(&w, b"data", 0).and_then(|()| w.finish());
            refused(&format!("{what} (at finish)"), r, errno)
        }
    }
}

/// Opens `rel` (names joined by `/`) under `root` one name at a time, so
/// that paths longer than `PATH_MAX` can be looked at.
fn open_under(root: &Path, rel: &[&[u8]]) -> Result<OwnedFd, String> {
    let mut fd = rfs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| format!("{}: {e}", root.display()))?;
    for part in rel {
        fd = rfs::openat(
            &fd,
            os(part),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| format!("open {:?}: {e}", String::from_utf8_lossy(part)))?;
    }
    Ok(fd)
}

/// The names in a directory of the outside tree (which must not change).
fn outside_names(h: &Harness<impl Location>) -> Result<Vec<OsString>, String> {
    let mut names: Vec<_> = std::fs::read_dir(&h.outside)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.file_name()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

/// A file outside the location, with its attributes to compare later.
fn outside_file(
    h: &Harness<impl Location>,
    name: &str,
) -> Result<(PathBuf, std::fs::Metadata), String> {
    let p = h.outside.join(name);
    std::fs::write(&p, b"outside: never to change").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640))
        .map_err(|e| e.to_string())?;
    let m = lstat(&p)?;
    Ok((p, m))
}

fn unchanged(p: &Path, before: &std::fs::Metadata) -> Result<(), String> {
    let now = lstat(p)?;
    ensure!(
        now.mode() == before.mode()
            && now.uid() == before.uid()
            && now.gid() == before.gid()
            && now.mtime() == before.mtime()
            && now.mtime_nsec() == before.mtime_nsec()
            && now.ctime() == before.ctime()
            && now.ctime_nsec() == before.ctime_nsec()
            && now.size() == before.size()
            && now.nlink() == before.nlink(),
        "{} changed through the location: {before:?} -> {now:?}",
        p.display()
    );
    let content = std::fs::read(p).map_err(|e| e.to_string())?;
    ensure!(
        content == b"outside: never to change",
        "{} was written through the location",
        p.display()
    );
    Ok(())
}

fn ts(sec: i64, nsec: u32) -> Timestamp {
    Timestamp { sec, nsec }
}

/// The checks, in the order [`run_all`] runs them.
/// One check of a location.
pub type Check<L> = fn(&Harness<L>) -> Checked;

pub fn checks<L: Location>() -> Vec<(&'static str, Check<L>)> {
    vec![
        ("root", root::<L>),
        ("regular_files", regular_files::<L>),
        ("sparse_and_empty_files", sparse_and_empty_files::<L>),
        (
            "create_truncates_a_regular_file",
            create_truncates_a_regular_file::<L>,
        ),
        ("read_files", read_files::<L>),
        ("read_back_digest", read_back_digest::<L>),
        ("digest", digest::<L>),
        ("directories", directories::<L>),
        ("symlinks", symlinks::<L>),
        ("hard_links", hard_links::<L>),
        ("special_files", special_files::<L>),
        ("device_nodes", device_nodes::<L>),
        ("rename", rename::<L>),
        ("remove", remove::<L>),
        ("attributes", attributes::<L>),
        ("owner", owner::<L>),
        ("set_id_modes", set_id_modes::<L>),
        ("odd_names", odd_names::<L>),
        ("deep_paths", deep_paths::<L>),
        ("errors", errors::<L>),
        (
            "update_never_follows_a_symlink",
            update_never_follows_a_symlink::<L>,
        ),
        (
            "swapped_symlinks_are_not_followed",
            swapped_symlinks_are_not_followed::<L>,
        ),
        (
            "no_data_through_special_files",
            no_data_through_special_files::<L>,
        ),
        ("names_are_one_name", names_are_one_name::<L>),
        ("deferred_changes", deferred_changes::<L>),
    ]
}

/// Runs every check on a fresh harness each; prints each outcome, and
/// panics listing the failures, and any check reported not supported that
/// the harness did not list (or listed and passed).
pub fn run_all<L: Location>(make: &dyn Fn() -> Harness<L>) -> Vec<(&'static str, Outcome)> {
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    let mut declared = Vec::new();
    for (name, check) in checks::<L>() {
        let h = make();
        declared = h.caps.unsupported.clone();
        let result = check(&h);
        match &result {
            Ok(Outcome::Passed) => eprintln!("conformance {name}: passed"),
            Ok(Outcome::NotSupported(why)) => eprintln!("conformance {name}: not supported: {why}"),
            Err(e) => eprintln!("conformance {name}: FAILED: {e}"),
        }
        let listed = h.caps.unsupported.contains(&name);
        match result {
            Ok(Outcome::NotSupported(why)) if !listed => failures.push(format!(
                "{name}: not supported ({why}), but the harness does not list it"
            )),
            Ok(Outcome::Passed) if listed => failures.push(format!(
                "{name}: passed, but the harness lists it as not supported"
            )),
            Ok(o) => outcomes.push((name, o)),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    let names: Vec<_> = checks::<L>().into_iter().map(|(n, _)| n).collect();
    for d in declared {
        if !names.contains(&d) {
            failures.push(format!("the harness lists {d:?}, which is no check"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} conformance check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    outcomes
}

/// `root`, `stat_dir`, an empty `list`, `describe`.
pub fn root<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    ensure!(!loc.describe().is_empty(), "describe is empty");
    let root = ok("root", loc.root())?;
    let meta = ok("stat_dir root", loc.stat_dir(&root))?;
    ensure!(meta.kind == Kind::Dir, "the root is a {:?}", meta.kind);
    ensure!(
        meta.ino == lstat(&h.root)?.ino(),
        "stat_dir of the root is not the root"
    );
    let listed = ok("list root", loc.list(&root))?;
    ensure!(listed.is_empty(), "a fresh location lists {listed:?}");
    Ok(Outcome::Passed)
}

/// A file written in several chunks (over a MiB: a remote location splits
/// it), its mode, size and data, as the location and the tree see them.
pub fn regular_files<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let big = data(1, (3 << 20) + 12345);
    let w = ok("create_file", loc.create_file(&root, os(b"big"), 0o640))?;
    // Out of order, as ranges copied by several workers are.
    let half = big.len() / 2;
    ok(
        "write second half",
        write_all(&w, &big[half..], half as u64),
    )?;
    ok("write first half", write_all(&w, &big[..half], 0))?;
    ok("finish", w.finish())?;
    let small = b"small file\n";
    ok("put small", put(loc, &root, os(b"small"), 0o600, small))?;
    for (name, content, mode) in [("big", &big[..], 0o640), ("small", &small[..], 0o600)] {
        let p = h.root.join(name);
        let got = std::fs::read(&p).map_err(|e| e.to_string())?;
        ensure!(got == content, "{name}: other data in the tree");
        ensure!(mode_of(&p)? == mode, "{name}: mode {:o}", mode_of(&p)?);
        let meta = ok("stat", loc.stat(&root, OsStr::new(name)))?;
        ensure!(
            meta.kind == Kind::File && meta.size == content.len() as u64 && meta.mode == mode,
            "{name}: stat says {meta:?}"
        );
        ensure!(meta.nlink == 1, "{name}: nlink {}", meta.nlink);
        ensure!(meta.ino == lstat(&p)?.ino(), "{name}: another inode");
    }
    let mut names: Vec<_> = ok("list", loc.list(&root))?
        .into_iter()
        .map(|e| (e.name, e.meta.kind, e.meta.size))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    ensure!(
        names
            == vec![
                ("big".into(), Kind::File, big.len() as u64),
                ("small".into(), Kind::File, small.len() as u64)
            ],
        "list says {names:?}"
    );
    Ok(Outcome::Passed)
}

/// A length set past the data (a file ending in a hole), a write that
/// starts past the start, an empty file.
pub fn sparse_and_empty_files<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let w = ok("create_file", loc.create_file(&root, os(b"holes"), 0o644))?;
    ok("write", write_all(&w, b"tail", 5 << 20))?;
    ok("set_len", w.set_len(8 << 20))?;
    ok("finish", w.finish())?;
    let got = std::fs::read(h.root.join("holes")).map_err(|e| e.to_string())?;
    ensure!(got.len() == 8 << 20, "length {}", got.len());
    ensure!(
        &got[5 << 20..(5 << 20) + 4] == b"tail"
            && got[..5 << 20].iter().all(|b| *b == 0)
            && got[(5 << 20) + 4..].iter().all(|b| *b == 0),
        "the data is not where it was written"
    );
    let w = ok("create_file", loc.create_file(&root, os(b"short"), 0o644))?;
    ok("write", write_all(&w, b"0123456789", 0))?;
    ok("set_len", w.set_len(4))?;
    ok("finish", w.finish())?;
    let got = std::fs::read(h.root.join("short")).map_err(|e| e.to_string())?;
    ensure!(got == b"0123", "set_len shorter: {got:?}");
    let w = ok("create_file", loc.create_file(&root, os(b"empty"), 0o604))?;
    ok("finish", w.finish())?;
    let p = h.root.join("empty");
    ensure!(lstat(&p)?.len() == 0, "empty file has data");
    ensure!(mode_of(&p)? == 0o604, "empty file mode {:o}", mode_of(&p)?);
    Ok(Outcome::Passed)
}

/// A leftover regular file of the same name is truncated by the create.
pub fn create_truncates_a_regular_file<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    std::fs::write(h.root.join("left"), data(3, 100_000)).map_err(|e| e.to_string())?;
    ok("put", put(loc, &root, os(b"left"), 0o644, b"new"))?;
    let got = std::fs::read(h.root.join("left")).map_err(|e| e.to_string())?;
    ensure!(
        got == b"new",
        "the leftover was not truncated: {} bytes",
        got.len()
    );
    Ok(Outcome::Passed)
}

/// `open_file`: data, the open file's attributes, its data segments.
pub fn read_files<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    if !h.caps.read {
        refused(
            "open_file on a write-only location",
            {
                std::fs::write(h.root.join("f"), b"x").map_err(|e| e.to_string())?;
                loc.open_file(&root, os(b"f"))
            },
            None,
        )?;
        return Ok(Outcome::NotSupported("the location is only written to"));
    }
    let content = data(7, 300_000);
    std::fs::write(h.root.join("f"), &content).map_err(|e| e.to_string())?;
    let r = ok("open_file", loc.open_file(&root, os(b"f")))?;
    let mut buf = vec![0u8; content.len() + 10];
    let mut got = 0;
    loop {
        let n = ok("read_at", r.read_at(&mut buf[got..], got as u64))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    ensure!(buf[..got] == content[..], "read other data");
    let meta = ok("meta", r.meta())?;
    ensure!(
        meta.kind == Kind::File && meta.size == content.len() as u64,
        "meta {meta:?}"
    );
    let segments = ok("data_segments", r.data_segments(meta.size))?;
    let covered: u64 = segments.iter().map(|s| s.end - s.start).sum();
    ensure!(
        covered == meta.size,
        "a file without holes has segments {segments:?}"
    );
    Ok(Outcome::Passed)
}

/// `Writer::read_back_digest` answers what the file holds.
pub fn read_back_digest<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let content = data(9, 2 << 20);
    let w = ok("create_file", loc.create_file(&root, os(b"f"), 0o644))?;
    ok("write", write_all(&w, &content, 0))?;
    let result = w.read_back_digest(1000..(1 << 20));
    ok("finish", w.finish())?;
    match result {
        None => Ok(Outcome::NotSupported(
            "the writer cannot read back (verification reads the file afterwards)",
        )),
        Some(r) => {
            let d = ok("read_back_digest", r)?;
            ensure!(d == sha256(&content[1000..1 << 20]), "another digest");
            Ok(Outcome::Passed)
        }
    }
}

/// `Location::digest` hashes regular files only.
pub fn digest<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let content = data(11, 1_500_000);
    std::fs::write(h.root.join("f"), &content).map_err(|e| e.to_string())?;
    let Some(r) = loc.digest(&root, os(b"f")) else {
        return Ok(Outcome::NotSupported(
            "no digest where the files are (the engine reads them)",
        ));
    };
    ensure!(ok("digest", r)? == sha256(&content), "another digest");
    let (target, _) = outside_file(h, "target")?;
    std::os::unix::fs::symlink(&target, h.root.join("link")).map_err(|e| e.to_string())?;
    std::fs::create_dir(h.root.join("d")).map_err(|e| e.to_string())?;
    // Asked for ahead: the same answers, each given once.
    let names = ["f", "link", "d", "missing"].map(OsStr::new);
    loc.prefetch_digests(&root, &names);
    let again = loc.digest(&root, os(b"f")).expect("some");
    ensure!(
        ok("digest after prefetch", again)? == sha256(&content),
        "another digest"
    );
    for name in ["link", "d", "missing"] {
        let r = loc.digest(&root, OsStr::new(name)).expect("some");
        refused(&format!("digest of {name}"), r, None)?;
    }
    // Changed after it was asked for ahead and given: asked again.
    std::fs::write(h.root.join("f"), b"changed").map_err(|e| e.to_string())?;
    let r = loc.digest(&root, os(b"f")).expect("some");
    ensure!(
        ok("digest after a change", r)? == sha256(b"changed"),
        "a stale digest"
    );
    // Listed with the digests: each file's comes with the listing, and one
    // changed since the last listing is taken anew by the next.
    loc.list_with_digests();
    for content in [&b"listed"[..], b"listed again"] {
        std::fs::write(h.root.join("g"), content).map_err(|e| e.to_string())?;
        // Opened as the engine does, then listed: a listing asked for with
        // the root is as the root was then (`Location::root`).
        let root = ok("root", loc.root())?;
        let listed = ok("list", loc.list(&root))?;
        ensure!(listed.iter().any(|e| e.name == "g"), "g not listed");
        let r = loc.digest(&root, os(b"g")).expect("some");
        ensure!(
            ok("digest after a listing", r)? == sha256(content),
            "another digest than the file's after a listing"
        );
    }
    Ok(Outcome::Passed)
}

/// `make_dir` with its mode, `open_dir`, `stat_dir`, `list` of a nested
/// directory, `update_dir`, removing an empty and a non-empty directory.
pub fn directories<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    ok("make_dir", loc.make_dir(&root, os(b"d"), 0o750))?;
    ensure!(mode_of(&h.root.join("d"))? == 0o750, "mode not as made");
    let d = ok("open_dir", loc.open_dir(&root, os(b"d")))?;
    ok("make_dir inner", loc.make_dir(&d, os(b"e"), 0o700))?;
    let e = ok("open_dir inner", loc.open_dir(&d, os(b"e")))?;
    ok("put inner", put(loc, &e, os(b"f"), 0o644, b"deep"))?;
    ensure!(
        std::fs::read(h.root.join("d/e/f")).map_err(|e| e.to_string())? == b"deep",
        "the file is not where its directory is"
    );
    let listed = ok("list", loc.list(&d))?;
    ensure!(
        listed.len() == 1 && listed[0].name == "e" && listed[0].meta.kind == Kind::Dir,
        "list {listed:?}"
    );
    let meta = ok("stat_dir", loc.stat_dir(&e))?;
    ensure!(
        meta.kind == Kind::Dir && meta.mode == 0o700,
        "stat_dir {meta:?}"
    );
    let update = MetaUpdate {
        mode: Some(0o755),
        atime: Some(ts(1_000_000_001, 123_456_789)),
        mtime: Some(ts(1_100_000_002, 987_654_321)),
        ..MetaUpdate::default()
    };
    ok("update_dir", loc.update_dir(&e, &update))?;
    let m = lstat(&h.root.join("d/e"))?;
    ensure!(
        m.permissions().mode() & 0o7777 == 0o755
            && (m.mtime(), m.mtime_nsec()) == (1_100_000_002, 987_654_321)
            && (m.atime(), m.atime_nsec()) == (1_000_000_001, 123_456_789),
        "update_dir: {m:?}"
    );
    refused(
        "remove a directory that is not empty",
        loc.remove(&d, os(b"e"), Kind::Dir),
        Some(libc::ENOTEMPTY),
    )?;
    ok("remove file", loc.remove(&e, os(b"f"), Kind::File))?;
    ok("remove dir", loc.remove(&d, os(b"e"), Kind::Dir))?;
    ensure!(!h.root.join("d/e").exists(), "still there");
    Ok(Outcome::Passed)
}

/// Symlinks: made (dangling, odd targets), read, stat'ed and listed as
/// links, removed as links.
pub fn symlinks<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let targets: [&[u8]; 4] = [
        b"nowhere/at all",
        b"../../outside/../..",
        b"/etc/passwd",
        b"odd \n\xff\xfe target",
    ];
    for (i, target) in targets.iter().enumerate() {
        let name = format!("l{i}");
        ok(
            "make_symlink",
            loc.make_symlink(&root, OsStr::new(&name), os(target)),
        )?;
        let got = ok("read_link", loc.read_link(&root, OsStr::new(&name)))?;
        ensure!(got.as_bytes() == *target, "read_link {got:?}");
        let on_disk = std::fs::read_link(h.root.join(&name)).map_err(|e| e.to_string())?;
        ensure!(
            on_disk.as_os_str().as_bytes() == *target,
            "on disk {on_disk:?}"
        );
        let meta = ok("stat", loc.stat(&root, OsStr::new(&name)))?;
        ensure!(
            meta.kind == Kind::Symlink && meta.size == target.len() as u64,
            "stat {meta:?}"
        );
    }
    // A link to a directory lists as a link.
    std::os::unix::fs::symlink(&h.outside, h.root.join("to_dir")).map_err(|e| e.to_string())?;
    let listed = ok("list", loc.list(&root))?;
    ensure!(
        listed.len() == 5 && listed.iter().all(|e| e.meta.kind == Kind::Symlink),
        "list {listed:?}"
    );
    ok("remove", loc.remove(&root, os(b"to_dir"), Kind::Symlink))?;
    ensure!(h.outside.is_dir(), "removing the link removed its target");
    ensure!(
        lstat(&h.root.join("to_dir")).is_err(),
        "the link is still there"
    );
    Ok(Outcome::Passed)
}

/// `hard_link` within and across directories; a symlink is linked itself.
pub fn hard_links<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    ok("put", put(loc, &root, os(b"a"), 0o644, b"linked"))?;
    ok("make_dir", loc.make_dir(&root, os(b"d"), 0o755))?;
    let d = ok("open_dir", loc.open_dir(&root, os(b"d")))?;
    ok(
        "hard_link same dir",
        loc.hard_link(&root, os(b"a"), &root, os(b"b")),
    )?;
    ok(
        "hard_link across",
        loc.hard_link(&root, os(b"a"), &d, os(b"c")),
    )?;
    let a = ok("stat", loc.stat(&root, os(b"a")))?;
    let c = ok("stat", loc.stat(&d, os(b"c")))?;
    ensure!(
        a.ino == c.ino && a.dev == c.dev && a.nlink == 3 && c.nlink == 3,
        "not one inode: {a:?} {c:?}"
    );
    ensure!(
        lstat(&h.root.join("d/c"))?.ino() == lstat(&h.root.join("a"))?.ino(),
        "the tree has two inodes"
    );
    ok("make_symlink", loc.make_symlink(&root, os(b"s"), os(b"a")))?;
    ok(
        "hard_link symlink",
        loc.hard_link(&root, os(b"s"), &d, os(b"s2")),
    )?;
    let s2 = ok("stat", loc.stat(&d, os(b"s2")))?;
    let s = ok("stat", loc.stat(&root, os(b"s")))?;
    ensure!(
        s2.kind == Kind::Symlink && s2.ino == s.ino,
        "the link's target was linked: {s2:?}"
    );
    Ok(Outcome::Passed)
}

/// FIFOs and sockets, made, stat'ed, listed, removed.
pub fn special_files<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    if !h.caps.special_files {
        refused(
            "make_node where special files are not allowed",
            loc.make_node(&root, os(b"p"), Kind::Fifo, 0o600, 0),
            None,
        )?;
        return Ok(Outcome::NotSupported("special files are not allowed here"));
    }
    for (name, kind) in [("p", Kind::Fifo), ("s", Kind::Socket)] {
        ok(
            "make_node",
            loc.make_node(&root, OsStr::new(name), kind, 0o640, 0),
        )?;
        let meta = ok("stat", loc.stat(&root, OsStr::new(name)))?;
        ensure!(meta.kind == kind && meta.mode == 0o640, "stat {meta:?}");
    }
    refused(
        "make_node of a regular file",
        loc.make_node(&root, os(b"f"), Kind::File, 0o644, 0),
        None,
    )?;
    refused(
        "make_node of a directory",
        loc.make_node(&root, os(b"g"), Kind::Dir, 0o755, 0),
        None,
    )?;
    ensure!(ok("list", loc.list(&root))?.len() == 2, "list");
    ok("remove", loc.remove(&root, os(b"p"), Kind::Fifo))?;
    ok("remove", loc.remove(&root, os(b"s"), Kind::Socket))?;
    Ok(Outcome::Passed)
}

/// Device nodes (root only: CAP_MKNOD).
pub fn device_nodes<L: Location>(h: &Harness<L>) -> Checked {
    if !h.caps.special_files {
        return Ok(Outcome::NotSupported("special files are not allowed here"));
    }
    if !is_root() {
        return Ok(Outcome::NotSupported("device nodes need root"));
    }
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    for (name, kind, rdev) in [
        ("c", Kind::CharDevice, rfs::makedev(1, 3)),
        ("b", Kind::BlockDevice, rfs::makedev(7, 0)),
    ] {
        ok(
            "make_node",
            loc.make_node(&root, OsStr::new(name), kind, 0o600, rdev),
        )?;
        let meta = ok("stat", loc.stat(&root, OsStr::new(name)))?;
        ensure!(meta.kind == kind && meta.rdev == rdev, "stat {meta:?}");
    }
    Ok(Outcome::Passed)
}

/// `rename` within a directory, replacing a file or a symlink; onto a
/// directory it is refused.
pub fn rename<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    ok("put", put(loc, &root, os(b"tmp"), 0o644, b"new"))?;
    std::fs::write(h.root.join("f"), b"old").map_err(|e| e.to_string())?;
    ok(
        "rename over a file",
        loc.rename(&root, os(b"tmp"), os(b"f")),
    )?;
    ensure!(
        std::fs::read(h.root.join("f")).map_err(|e| e.to_string())? == b"new",
        "not replaced"
    );
    ensure!(
        lstat(&h.root.join("tmp")).is_err(),
        "the old name is still there"
    );
    let (target, before) = outside_file(h, "target")?;
    std::os::unix::fs::symlink(&target, h.root.join("l")).map_err(|e| e.to_string())?;
    ok(
        "rename over a symlink",
        loc.rename(&root, os(b"f"), os(b"l")),
    )?;
    ensure!(
        lstat(&h.root.join("l"))?.is_file(),
        "the symlink was not replaced"
    );
    unchanged(&target, &before)?;
    std::fs::create_dir(h.root.join("d")).map_err(|e| e.to_string())?;
    refused(
        "rename a file onto a directory",
        loc.rename(&root, os(b"l"), os(b"d")),
        Some(libc::EISDIR),
    )?;
    Ok(Outcome::Passed)
}

/// `remove` of each kind, and of a kind other than the entry's.
pub fn remove<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    std::fs::write(h.root.join("f"), b"x").map_err(|e| e.to_string())?;
    std::fs::create_dir(h.root.join("d")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink("f", h.root.join("l")).map_err(|e| e.to_string())?;
    refused(
        "remove a file as a directory",
        loc.remove(&root, os(b"f"), Kind::Dir),
        Some(libc::ENOTDIR),
    )?;
    refused(
        "remove a directory as a file",
        loc.remove(&root, os(b"d"), Kind::File),
        Some(libc::EISDIR),
    )?;
    ok("remove symlink", loc.remove(&root, os(b"l"), Kind::Symlink))?;
    ensure!(h.root.join("f").is_file(), "the symlink's target went");
    ok("remove file", loc.remove(&root, os(b"f"), Kind::File))?;
    ok("remove dir", loc.remove(&root, os(b"d"), Kind::Dir))?;
    ensure!(ok("list", loc.list(&root))?.is_empty(), "not all removed");
    Ok(Outcome::Passed)
}

/// Mode both ways and times with nanoseconds, by `update` and by the
/// writer before `finish`.
pub fn attributes<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    std::fs::write(h.root.join("f"), b"x").map_err(|e| e.to_string())?;
    for mode in [0o600, 0o755, 0o640, 0o1777] {
        let u = MetaUpdate {
            mode: Some(mode),
            ..MetaUpdate::default()
        };
        ok("update mode", loc.update(&root, os(b"f"), &u))?;
        ensure!(mode_of(&h.root.join("f"))? == mode, "mode {mode:o} not set");
        let meta = ok("stat", loc.stat(&root, os(b"f")))?;
        ensure!(meta.mode == mode, "stat says mode {:o}", meta.mode);
    }
    let times = MetaUpdate {
        atime: Some(ts(1_234_567_890, 1)),
        mtime: Some(ts(987_654_321, 999_999_999)),
        ..MetaUpdate::default()
    };
    ok("update times", loc.update(&root, os(b"f"), &times))?;
    let meta = ok("stat", loc.stat(&root, os(b"f")))?;
    ensure!(
        meta.atime == ts(1_234_567_890, 1) && meta.mtime == ts(987_654_321, 999_999_999),
        "times {:?} {:?}",
        meta.atime,
        meta.mtime
    );
    // Only mtime: atime stays.
    let only = MetaUpdate {
        mtime: Some(ts(5, 5)),
        ..MetaUpdate::default()
    };
    ok("update mtime", loc.update(&root, os(b"f"), &only))?;
    let meta = ok("stat", loc.stat(&root, os(b"f")))?;
    ensure!(
        meta.atime == ts(1_234_567_890, 1) && meta.mtime == ts(5, 5),
        "mtime alone: {:?} {:?}",
        meta.atime,
        meta.mtime
    );
    ok(
        "update nothing",
        loc.update(&root, os(b"f"), &MetaUpdate::default()),
    )?;
    // The writer's attributes, set before the close.
    let w = ok("create_file", loc.create_file(&root, os(b"w"), 0o600))?;
    ok("write", write_all(&w, b"written", 0))?;
    ok(
        "writer update",
        w.update(&MetaUpdate {
            mode: Some(0o644),
            atime: Some(ts(100, 200)),
            mtime: Some(ts(300, 400)),
            ..MetaUpdate::default()
        }),
    )?;
    ok("finish", w.finish())?;
    let m = lstat(&h.root.join("w"))?;
    ensure!(
        m.permissions().mode() & 0o7777 == 0o644
            && (m.mtime(), m.mtime_nsec()) == (300, 400)
            && (m.atime(), m.atime_nsec()) == (100, 200),
        "writer attributes: {m:?}"
    );
    Ok(Outcome::Passed)
}

/// Owner and group, on a file, a directory, a symlink (itself) and by the
/// writer (root only).
pub fn owner<L: Location>(h: &Harness<L>) -> Checked {
    if !is_root() {
        return Ok(Outcome::NotSupported("changing owners needs root"));
    }
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    std::fs::write(h.root.join("f"), b"x").map_err(|e| e.to_string())?;
    std::fs::create_dir(h.root.join("d")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink("f", h.root.join("l")).map_err(|e| e.to_string())?;
    let u = MetaUpdate {
        uid: Some(1234),
        gid: Some(5678),
        ..MetaUpdate::default()
    };
    for name in ["f", "d", "l"] {
        ok("update owner", loc.update(&root, OsStr::new(name), &u))?;
        let m = lstat(&h.root.join(name))?;
        ensure!((m.uid(), m.gid()) == (1234, 5678), "{name}: owner {m:?}");
    }
    let f = lstat(&h.root.join("f"))?;
    ensure!((f.uid(), f.gid()) == (1234, 5678), "f");
    let w = ok("create_file", loc.create_file(&root, os(b"w"), 0o644))?;
    ok("writer update", w.update(&u))?;
    ok("finish", w.finish())?;
    let m = lstat(&h.root.join("w"))?;
    ensure!((m.uid(), m.gid()) == (1234, 5678), "writer owner {m:?}");
    Ok(Outcome::Passed)
}

/// Set-uid and set-gid modes, set by `update`, `make_dir` and the writer.
pub fn set_id_modes<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    std::fs::write(h.root.join("f"), b"x").map_err(|e| e.to_string())?;
    let u = MetaUpdate {
        mode: Some(0o4755),
        ..MetaUpdate::default()
    };
    if !h.caps.special_files {
        refused("a set-uid mode", loc.update(&root, os(b"f"), &u), None)?;
        ensure!(mode_of(&h.root.join("f"))? & 0o6000 == 0, "set anyway");
        return Ok(Outcome::NotSupported("set-id modes are not allowed here"));
    }
    ok("update set-uid", loc.update(&root, os(b"f"), &u))?;
    ensure!(mode_of(&h.root.join("f"))? == 0o4755, "set-uid not set");
    ok("make_dir", loc.make_dir(&root, os(b"d"), 0o755))?;
    let d = ok("open_dir", loc.open_dir(&root, os(b"d")))?;
    let g = MetaUpdate {
        mode: Some(0o2775),
        ..MetaUpdate::default()
    };
    ok("update_dir set-gid", loc.update_dir(&d, &g))?;
    ensure!(mode_of(&h.root.join("d"))? == 0o2775, "set-gid not set");
    let w = ok("create_file", loc.create_file(&root, os(b"w"), 0o644))?;
    ok("writer update", w.update(&g))?;
    ok("finish", w.finish())?;
    ensure!(
        mode_of(&h.root.join("w"))? == 0o2775,
        "writer set-gid not set"
    );
    Ok(Outcome::Passed)
}

/// Names of any bytes but `/` and NUL: spaces, newlines, non-UTF-8, 255
/// bytes; 256 bytes are too long.
pub fn odd_names<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let long = vec![b'n'; 255];
    let names: Vec<&[u8]> = vec![
        b"with space",
        b" leading and trailing ",
        b"new\nline",
        b"tab\tand\rreturn",
        b"\xff\xfe not utf-8 \x80",
        b"-dash",
        b"*?[glob]",
        b"...",
        b".hidden",
        "unicode \u{e9}\u{65e5}".as_bytes(),
        &long,
    ];
    for (i, name) in names.iter().enumerate() {
        let what = String::from_utf8_lossy(name);
        match i % 3 {
            0 => ok(
                &format!("put {what:?}"),
                put(loc, &root, os(name), 0o644, name),
            )?,
            1 => ok(
                &format!("make_dir {what:?}"),
                loc.make_dir(&root, os(name), 0o755),
            )?,
            _ => ok(
                &format!("make_symlink {what:?}"),
                loc.make_symlink(&root, os(name), os(name)),
            )?,
        }
        let p = h.root.join(os(name));
        ensure!(
            lstat(&p).is_ok(),
            "{what:?} is not in the tree under its name"
        );
        ok(&format!("stat {what:?}"), loc.stat(&root, os(name)))?;
    }
    let mut listed: Vec<Vec<u8>> = ok("list", loc.list(&root))?
        .into_iter()
        .map(|e| e.name.into_vec())
        .collect();
    listed.sort();
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    want.sort();
    ensure!(listed == want, "list gives other names: {listed:?}");
    let too_long = vec![b'n'; 256];
    refused(
        "make_dir of a 256-byte name",
        loc.make_dir(&root, os(&too_long), 0o755),
        Some(libc::ENAMETOOLONG),
    )?;
    Ok(Outcome::Passed)
}

/// Directories nested past `PATH_MAX`, a file at the bottom, and all of it
/// listed and removed again.
pub fn deep_paths<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let mut dirs = vec![ok("root", loc.root())?];
    let name = vec![b'd'; 200];
    const DEPTH: usize = 30; // 6 KB of path, over PATH_MAX
    for _ in 0..DEPTH {
        let parent = dirs.last().expect("root");
        ok("make_dir", loc.make_dir(parent, os(&name), 0o755))?;
        let d = ok("open_dir", loc.open_dir(parent, os(&name)))?;
        dirs.push(d);
    }
    let bottom = dirs.last().expect("bottom");
    ok(
        "put at the bottom",
        put(loc, bottom, os(b"f"), 0o644, b"deep"),
    )?;
    let listed = ok("list at the bottom", loc.list(bottom))?;
    ensure!(
        listed.len() == 1 && listed[0].meta.size == 4,
        "list {listed:?}"
    );
    let parts: Vec<&[u8]> = vec![&name[..]; DEPTH];
    let fd = open_under(&h.root, &parts)?;
    let st = rfs::statat(&fd, "f", rfs::AtFlags::SYMLINK_NOFOLLOW).map_err(|e| e.to_string())?;
    ensure!(st.st_size == 4, "the tree's file has {} bytes", st.st_size);
    ok(
        "remove at the bottom",
        loc.remove(bottom, os(b"f"), Kind::File),
    )?;
    for i in (0..DEPTH).rev() {
        ok("remove", loc.remove(&dirs[i], os(&name), Kind::Dir))?;
    }
    ensure!(ok("list", loc.list(&dirs[0]))?.is_empty(), "left behind");
    Ok(Outcome::Passed)
}

/// Errors: what is missing, what exists, what is not a directory.
pub fn errors<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    std::fs::write(h.root.join("f"), b"x").map_err(|e| e.to_string())?;
    std::fs::create_dir(h.root.join("d")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink("f", h.root.join("l")).map_err(|e| e.to_string())?;
    let enoent = Some(libc::ENOENT);
    let eexist = Some(libc::EEXIST);
    let enotdir = Some(libc::ENOTDIR);
    let e = refused("open_dir missing", loc.open_dir(&root, os(b"nope")), enoent)?;
    ensure!(
        e.kind() == io::ErrorKind::NotFound,
        "missing is not NotFound: {e}"
    );
    refused("stat missing", loc.stat(&root, os(b"nope")), enoent)?;
    refused(
        "read_link missing",
        loc.read_link(&root, os(b"nope")),
        enoent,
    )?;
    refused(
        "remove missing",
        loc.remove(&root, os(b"nope"), Kind::File),
        enoent,
    )?;
    refused(
        "rename missing",
        loc.rename(&root, os(b"nope"), os(b"x")),
        enoent,
    )?;
    refused(
        "hard_link missing",
        loc.hard_link(&root, os(b"nope"), &root, os(b"x")),
        enoent,
    )?;
    refused(
        "update missing",
        loc.update(
            &root,
            os(b"nope"),
            &MetaUpdate {
                mode: Some(0o644),
                ..MetaUpdate::default()
            },
        ),
        enoent,
    )?;
    // A directory removed after it was opened: its handle leads nowhere.
    ok("make_dir", loc.make_dir(&root, os(b"gone"), 0o755))?;
    let gone = ok("open_dir", loc.open_dir(&root, os(b"gone")))?;
    std::fs::remove_dir(h.root.join("gone")).map_err(|e| e.to_string())?;
    refused(
        "make_dir in a removed directory",
        loc.make_dir(&gone, os(b"x"), 0o755),
        None,
    )?;
    refused(
        "make_symlink in a removed directory",
        loc.make_symlink(&gone, os(b"x"), os(b"t")),
        None,
    )?;
    create_refused(h, &gone, os(b"x"), None)?;
    // Listing it finds nothing, or nothing to list.
    if let Ok(entries) = loc.list(&gone) {
        ensure!(entries.is_empty(), "a removed directory lists {entries:?}");
    }
    ensure!(!h.root.join("x").exists(), "made in the root instead");
    // Names that exist.
    for name in ["f", "d", "l"] {
        refused(
            &format!("make_dir over {name}"),
            loc.make_dir(&root, OsStr::new(name), 0o755),
            eexist,
        )?;
        refused(
            &format!("make_symlink over {name}"),
            loc.make_symlink(&root, OsStr::new(name), os(b"t")),
            eexist,
        )?;
        refused(
            &format!("hard_link over {name}"),
            loc.hard_link(&root, os(b"f"), &root, OsStr::new(name)),
            eexist,
        )?;
        if h.caps.special_files {
            refused(
                &format!("make_node over {name}"),
                loc.make_node(&root, OsStr::new(name), Kind::Fifo, 0o644, 0),
                eexist,
            )?;
        }
    }
    create_refused(h, &root, os(b"d"), Some(libc::EISDIR))?;
    // Not a directory.
    refused("open_dir of a file", loc.open_dir(&root, os(b"f")), enotdir)?;
    refused(
        "read_link of a file",
        loc.read_link(&root, os(b"f")),
        Some(libc::EINVAL),
    )?;
    refused(
        "rename a directory onto a file",
        loc.rename(&root, os(b"d"), os(b"f")),
        enotdir,
    )?;
    ensure!(
        h.root.join("d").is_dir() && h.root.join("f").is_file(),
        "changed"
    );
    Ok(Outcome::Passed)
}

/// `update` of a symlink changes the link (its times, its owner) and never
/// what it names; a mode is not applied to it.
pub fn update_never_follows_a_symlink<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let (target, before) = outside_file(h, "target")?;
    std::os::unix::fs::symlink(&target, h.root.join("l")).map_err(|e| e.to_string())?;
    let u = MetaUpdate {
        mode: Some(0o777),
        atime: Some(ts(111, 1)),
        mtime: Some(ts(222, 2)),
        ..MetaUpdate::default()
    };
    ok("update symlink", loc.update(&root, os(b"l"), &u))?;
    unchanged(&target, &before)?;
    let m = lstat(&h.root.join("l"))?;
    ensure!(
        m.file_type().is_symlink() && (m.mtime(), m.mtime_nsec()) == (222, 2),
        "the link's own times were not set: {m:?}"
    );
    // A symlink to a directory outside.
    std::os::unix::fs::symlink(&h.outside, h.root.join("ld")).map_err(|e| e.to_string())?;
    let dir_before = lstat(&h.outside)?;
    ok(
        "update symlink to a directory",
        loc.update(&root, os(b"ld"), &u),
    )?;
    let dir_now = lstat(&h.outside)?;
    ensure!(
        dir_now.mode() == dir_before.mode() && dir_now.mtime() == dir_before.mtime(),
        "the directory a link names changed"
    );
    Ok(Outcome::Passed)
}

/// A symlink swapped in for a file or a directory the location knew is
/// never followed: operations act on the link or are refused, and nothing
/// outside the location changes.
pub fn swapped_symlinks_are_not_followed<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    let (target, before) = outside_file(h, "target")?;
    let swap = |name: &str, to: &Path| -> Result<(), String> {
        let p = h.root.join(name);
        std::fs::rename(&p, h.root.join(format!("{name}.moved"))).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(to, &p).map_err(|e| e.to_string())
    };
    // A file, swapped before it is written to again.
    ok("put", put(loc, &root, os(b"f"), 0o644, b"mine"))?;
    swap("f", &target)?;
    create_refused(h, &root, os(b"f"), Some(libc::ELOOP))?;
    let meta = ok("stat", loc.stat(&root, os(b"f")))?;
    ensure!(
        meta.kind == Kind::Symlink,
        "stat followed the link: {meta:?}"
    );
    if h.caps.read {
        refused(
            "open_file through a symlink",
            loc.open_file(&root, os(b"f")),
            None,
        )?;
    }
    if let Some(r) = loc.digest(&root, os(b"f")) {
        refused("digest through a symlink", r, None)?;
    }
    let mode = MetaUpdate {
        mode: Some(0o666),
        ..MetaUpdate::default()
    };
    // Acts on the link (no mode for it) or is refused: never the target.
    let _ = loc.update(&root, os(b"f"), &mode);
    refused(
        "remove as a directory",
        loc.remove(&root, os(b"f"), Kind::Dir),
        Some(libc::ENOTDIR),
    )?;
    ok(
        "hard_link of the link",
        loc.hard_link(&root, os(b"f"), &root, os(b"f2")),
    )?;
    ensure!(
        lstat(&h.root.join("f2"))?.file_type().is_symlink(),
        "linked the target"
    );
    unchanged(&target, &before)?;
    // A file being written, swapped before the writer is done.
    let w = ok("create_file", loc.create_file(&root, os(b"w"), 0o644))?;
    ok("write", write_all(&w, b"first", 0))?;
    if !h.caps.deferred_create || h.root.join("w").exists() {
        swap("w", &target)?;
    } else {
        std::os::unix::fs::symlink(&target, h.root.join("w")).map_err(|e| e.to_string())?;
    }
    let _ = w.update(&mode);
    let _ = w.finish();
    unchanged(&target, &before)?;
    // A directory, swapped for a link to one outside while open.
    ok("make_dir", loc.make_dir(&root, os(b"d"), 0o755))?;
    let d = ok("open_dir", loc.open_dir(&root, os(b"d")))?;
    swap("d", &h.outside)?;
    let names = outside_names(h)?;
    let _ = loc.make_dir(&d, os(b"x"), 0o755);
    let _ = loc.make_symlink(&d, os(b"y"), os(b"t"));
    let _ = put(loc, &d, os(b"z"), 0o644, b"z");
    let _ = loc.hard_link(&root, os(b"f2"), &d, os(b"h"));
    let _ = loc.update_dir(&d, &mode);
    let _ = loc.rename(&d, os(b"target"), os(b"renamed"));
    let _ = loc.remove(&d, os(b"target"), Kind::File);
    ensure!(
        outside_names(h)? == names,
        "an operation reached outside through a swapped directory"
    );
    unchanged(&target, &before)?;
    refused("open_dir of a symlink", loc.open_dir(&root, os(b"d")), None)?;
    refused(
        "list through a symlink",
        loc.open_dir(&root, os(b"d")).and_then(|d| loc.list(&d)),
        None,
    )?;
    Ok(Outcome::Passed)
}

/// Data is never read from or written to a FIFO, a socket or a device:
/// refused at once, without blocking.
pub fn no_data_through_special_files<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    rfs::mknodat(
        rfs::CWD,
        h.root.join("fifo"),
        rfs::FileType::Fifo,
        Mode::from_raw_mode(0o666),
        0,
    )
    .map_err(|e| e.to_string())?;
    let sock =
        std::os::unix::net::UnixListener::bind(h.root.join("sock")).map_err(|e| e.to_string())?;
    let mut names = vec!["fifo", "sock"];
    if is_root() {
        rfs::mknodat(
            rfs::CWD,
            h.root.join("null"),
            rfs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rfs::makedev(1, 3),
        )
        .map_err(|e| e.to_string())?;
        names.push("null");
    }
    // Twice: a FIFO without a reader answers differently the second time.
    for _ in 0..2 {
        for name in &names {
            let name = OsStr::new(name);
            if h.caps.read {
                refused(
                    "open_file of a special file",
                    loc.open_file(&root, name),
                    None,
                )?;
            }
            create_refused(h, &root, name, None)?;
            if let Some(r) = loc.digest(&root, name) {
                refused("digest of a special file", r, None)?;
            }
        }
    }
    for name in &names {
        let m = lstat(&h.root.join(name))?;
        ensure!(!m.is_file(), "{name} was replaced by a file");
    }
    drop(sock);
    Ok(Outcome::Passed)
}

/// A name is one name: `.`, `..`, empty, with `/` (an absolute path among
/// them) or NUL is refused by every operation, and nothing is made or
/// changed outside the location.
pub fn names_are_one_name<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    std::fs::write(h.root.join("f"), b"x").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(h.root.join("d/e")).map_err(|e| e.to_string())?;
    let (target, before) = outside_file(h, "target")?;
    let abs = h.outside.join("made");
    let abs_target = target.as_os_str().as_bytes().to_vec();
    let bad: Vec<Vec<u8>> = vec![
        b"..".to_vec(),
        b".".to_vec(),
        b"".to_vec(),
        b"d/../..".to_vec(),
        b"d/e".to_vec(),
        b"d/".to_vec(),
        b"../escape".to_vec(),
        b"a\0b".to_vec(),
        abs.as_os_str().as_bytes().to_vec(),
        abs_target,
    ];
    let names_before = outside_names(h)?;
    let parent = h.root.parent().map(Path::to_path_buf);
    let parent_before = match &parent {
        Some(p) => std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0),
        None => 0,
    };
    let mode = MetaUpdate {
        mode: Some(0o600),
        mtime: Some(ts(1, 0)),
        ..MetaUpdate::default()
    };
    for name in &bad {
        let n = os(name);
        let show = String::from_utf8_lossy(name);
        refused(&format!("stat {show:?}"), loc.stat(&root, n), None)?;
        refused(&format!("open_dir {show:?}"), loc.open_dir(&root, n), None)?;
        refused(
            &format!("read_link {show:?}"),
            loc.read_link(&root, n),
            None,
        )?;
        refused(
            &format!("make_dir {show:?}"),
            loc.make_dir(&root, n, 0o755),
            None,
        )?;
        refused(
            &format!("make_symlink {show:?}"),
            loc.make_symlink(&root, n, os(b"t")),
            None,
        )?;
        create_refused(h, &root, n, None)?;
        refused(
            &format!("update {show:?}"),
            loc.update(&root, n, &mode),
            None,
        )?;
        refused(
            &format!("hard_link from {show:?}"),
            loc.hard_link(&root, n, &root, os(b"h")),
            None,
        )?;
        refused(
            &format!("hard_link to {show:?}"),
            loc.hard_link(&root, os(b"f"), &root, n),
            None,
        )?;
        refused(
            &format!("rename from {show:?}"),
            loc.rename(&root, n, os(b"r")),
            None,
        )?;
        refused(
            &format!("rename to {show:?}"),
            loc.rename(&root, os(b"f"), n),
            None,
        )?;
        refused(
            &format!("remove {show:?}"),
            loc.remove(&root, n, Kind::File),
            None,
        )?;
        refused(
            &format!("remove dir {show:?}"),
            loc.remove(&root, n, Kind::Dir),
            None,
        )?;
        if h.caps.read {
            refused(
                &format!("open_file {show:?}"),
                loc.open_file(&root, n),
                None,
            )?;
        }
        if h.caps.special_files {
            refused(
                &format!("make_node {show:?}"),
                loc.make_node(&root, n, Kind::Fifo, 0o600, 0),
                None,
            )?;
        }
        if let Some(r) = loc.digest(&root, n) {
            refused(&format!("digest {show:?}"), r, None)?;
        }
    }
    ensure!(
        outside_names(h)? == names_before,
        "something was made outside the location"
    );
    unchanged(&target, &before)?;
    if let Some(p) = &parent {
        let now = std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
        ensure!(
            now == parent_before,
            "something was made beside the location's root"
        );
    }
    ensure!(
        h.root.join("f").is_file() && h.root.join("d").is_dir(),
        "changed inside"
    );
    Ok(Outcome::Passed)
}

/// After `defer_changes` a change may be acknowledged before it is done:
/// a failure comes once, at the call or from `settle`, naming its path;
/// a read in a directory sees the changes made in it before; once `settle`
/// returns, every change that succeeded is in the tree.
pub fn deferred_changes<L: Location>(h: &Harness<L>) -> Checked {
    let loc = &h.location;
    let root = ok("root", loc.root())?;
    loc.defer_changes();
    ok("make_dir", loc.make_dir(&root, os(b"d"), 0o755))?;
    let d = ok("open_dir", loc.open_dir(&root, os(b"d")))?;
    ok("put", put(loc, &d, os(b"a"), 0o644, b"alpha"))?;
    ok("make_symlink", loc.make_symlink(&d, os(b"s"), os(b"a")))?;
    let private = MetaUpdate {
        mode: Some(0o600),
        ..MetaUpdate::default()
    };
    ok("update", loc.update(&d, os(b"a"), &private))?;
    let mut names: Vec<_> = ok("list", loc.list(&d))?
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    ensure!(
        names == [OsString::from("a"), OsString::from("s")],
        "list saw {names:?}"
    );
    // New directories in new directories, each written in at once.
    let mut made: Vec<L::Dir> = Vec::new();
    for level in 0..12 {
        let name = format!("n{level}");
        let parent = made.last().unwrap_or(&d);
        ok(
            "make_dir in a new one",
            loc.make_dir(parent, os(name.as_bytes()), 0o755),
        )?;
        let dir = ok("open_dir", loc.open_dir(parent, os(name.as_bytes())))?;
        ok("put deep", put(loc, &dir, os(b"g"), 0o644, name.as_bytes()))?;
        made.push(dir);
    }
    // Times set once a directory is written, the deepest first (as the
    // engine does): kept, whatever is still on its way.
    let when = Timestamp {
        sec: 1_000_000_000,
        nsec: 0,
    };
    let times = MetaUpdate {
        mtime: Some(when),
        ..MetaUpdate::default()
    };
    for dir in made.iter().rev().chain([&d]) {
        ok("update_dir", loc.update_dir(dir, &times))?;
    }
    // The same in a directory of many new ones with data on its way.
    ok("make_dir", loc.make_dir(&root, os(b"w"), 0o755))?;
    let w = ok("open_dir", loc.open_dir(&root, os(b"w")))?;
    let data = vec![7u8; 256 << 10];
    for i in 0..32 {
        let name = format!("s{i}");
        ok("make_dir", loc.make_dir(&w, os(name.as_bytes()), 0o755))?;
        let sub = ok("open_dir", loc.open_dir(&w, os(name.as_bytes())))?;
        ok("put", put(loc, &sub, os(b"f"), 0o644, &data))?;
    }
    ok("update_dir", loc.update_dir(&w, &times))?;
    // Not a directory: refused when opened or when first used.
    ensure!(
        loc.open_dir(&d, os(b"a"))
            .and_then(|x| loc.list(&x))
            .is_err(),
        "a file was opened and listed as a directory"
    );
    // Several names at once: each as `stat` gives it, in their order.
    let metas = loc.stat_many(&d, &[os(b"s"), os(b"missing"), os(b"a")]);
    ensure!(
        matches!(
            &metas[..],
            [Ok(s), Err(e), Ok(a)] if s.kind == Kind::Symlink
                && e.kind() == io::ErrorKind::NotFound
                && a.kind == Kind::File && a.size == 5
        ),
        "stat_many gave {metas:?}"
    );
    let failed_now = loc.rename(&d, os(b"missing"), os(b"m")).is_err();
    let failures = loc.settle();
    if failed_now {
        ensure!(failures.is_empty(), "failed twice: {failures:?}");
    } else {
        ensure!(
            failures.len() == 1 && failures[0].path == b"d/m",
            "settle gave {failures:?}, not the rename's failure"
        );
    }
    let a = lstat(&h.root.join("d/a"))?;
    ensure!(a.mode() & 0o7777 == 0o600, "mode {:o}", a.mode());
    let w = lstat(&h.root.join("w"))?;
    ensure!(
        w.mtime() == when.sec,
        "w: modified at {} after settle, not at the time set",
        w.mtime()
    );
    let mut written = vec![("d/a".to_string(), "alpha".to_string())];
    let mut path = "d".to_string();
    for level in 0..12 {
        let m = lstat(&h.root.join(&path))?;
        ensure!(
            m.mtime() == when.sec,
            "{path}: modified at {} after settle, not at the time set",
            m.mtime()
        );
        path = format!("{path}/n{level}");
        written.push((format!("{path}/g"), format!("n{level}")));
    }
    for (path, data) in written {
        ensure!(
            std::fs::read(h.root.join(&path)).map_err(|e| e.to_string())? == data.as_bytes(),
            "{path}: the data is not what was written"
        );
    }
    ensure!(loc.settle().is_empty(), "settle gave failures twice");
    // A listing asked for ahead, then a change in the directory: the
    // listing sees it.
    let n0 = ok("open_dir", loc.open_dir(&d, os(b"n0")))?;
    loc.prefetch_listings(&d, &[os(b"n0")]);
    ok("put", put(loc, &n0, os(b"h"), 0o644, b"late"))?;
    let mut names: Vec<_> = ok("list", loc.list(&n0))?
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    ensure!(
        names
            == [
                OsString::from("g"),
                OsString::from("h"),
                OsString::from("n1")
            ],
        "a listing asked for ahead missed a change made since: {names:?}"
    );
    // More listings wanted ahead than are asked for at once: each opened
    // lists what it holds, a change made in one still waiting included.
    ok("make_dir", loc.make_dir(&root, os(b"many"), 0o755))?;
    let many = ok("open_dir", loc.open_dir(&root, os(b"many")))?;
    let names: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for name in &names {
        ok("make_dir", loc.make_dir(&many, os(name.as_bytes()), 0o755))?;
        let m = ok("open_dir", loc.open_dir(&many, os(name.as_bytes())))?;
        ok("put", put(loc, &m, os(b"f"), 0o644, name.as_bytes()))?;
    }
    ensure!(loc.settle().is_empty(), "settle gave failures");
    let wanted: Vec<&OsStr> = names.iter().map(|n| os(n.as_bytes())).collect();
    loc.prefetch_listings(&many, &wanted);
    let last = ok("open_dir", loc.open_dir(&many, os(b"m99")))?;
    ok("put", put(loc, &last, os(b"late"), 0o644, b"late"))?;
    ok("make_dir", loc.make_dir(&last, os(b"new"), 0o755))?;
    let first = ok("open_dir", loc.open_dir(&many, os(b"m0")))?;
    ok("make_dir", loc.make_dir(&first, os(b"new"), 0o755))?;
    for name in &names {
        let m = ok("open_dir", loc.open_dir(&many, os(name.as_bytes())))?;
        let mut listed: Vec<_> = ok("list", loc.list(&m))?
            .into_iter()
            .map(|e| e.name)
            .collect();
        listed.sort();
        let mut expected = vec![OsString::from("f")];
        match name.as_str() {
            "m0" => expected.push(OsString::from("new")),
            "m99" => expected.extend([OsString::from("late"), OsString::from("new")]),
            _ => {}
        }
        ensure!(
            listed == expected,
            "{name}, its listing wanted ahead, lists {listed:?}"
        );
    }
    ensure!(loc.settle().is_empty(), "settle gave failures");
    Ok(Outcome::Passed)
}
