// SPDX-License-Identifier: MIT
//! The hub's side of the remote writer: each operation an agent sends is
//! done on a location of the hub with the same code the engine uses locally.
//!
//! Nothing in a request is trusted: it is validated before anything touches
//! the disk ([`Op::validate`]), the location's [`Policy`] decides about
//! special files and set-id bits, compressed data cannot expand beyond its
//! declared size, and a digest has a time budget. The operations themselves
//! are [`LocalLocation`]'s: no symlink is followed, and data goes only to
//! and from regular files.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ferry_engine::digests::{sha256_of, DigestCache};
use ferry_engine::location::local::LocalLocation;
use ferry_engine::location::{Kind, Location, Meta, MetaUpdate, Reader, Writer};
use ferry_wire::proto::{
    InvalidOp, Op, Reply, Response, WireError, WireMeta, LISTED_DIGESTS_MAX, MAX_CHUNK,
};

/// What a location of the hub lets agents make there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Device nodes, FIFOs and sockets, and set-uid/set-gid modes: only for
    /// a task that asks for PreserveDevices, on a location that allows it.
    pub special_files: bool,
}

/// How long a digest may read. A request the agent has waited on for its
/// timeout (30 s) is sent again, which would start the same digest once
/// more: the hub gives up first and says why.
pub const DIGEST_BUDGET: Duration = Duration::from_secs(20);

/// What the hub refuses to do for an agent.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("bad request: {0}")]
    Invalid(#[from] InvalidOp),
    #[error(
        "the hub's location does not allow special files: {0}; \
         the task must ask for PreserveDevices and the location must allow it"
    )]
    SpecialFile(String),
    #[error("the compressed data does not fit its declared {raw_len} bytes: {detail}")]
    Expands { raw_len: u64, detail: String },
    #[error("the compressed data holds {len} bytes, {raw_len} were declared")]
    Short { raw_len: u64, len: u64 },
    #[error("the digest of {name} exceeded its time budget ({budget:?})")]
    DigestBudget { name: String, budget: Duration },
}

impl From<Refused> for io::Error {
    fn from(e: Refused) -> Self {
        let kind = match e {
            Refused::DigestBudget { .. } => io::ErrorKind::TimedOut,
            Refused::SpecialFile(_) => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// What the policy refuses in `op`, before anything is done.
fn allowed(op: &Op, policy: &Policy) -> Result<(), Refused> {
    if policy.special_files {
        return Ok(());
    }
    if let Op::MakeNode { kind, .. } = op {
        return Err(Refused::SpecialFile(format!(
            "a {} cannot be made",
            kind.noun()
        )));
    }
    if let Some(mode) = op.modes().find(|m| m & 0o6000 != 0) {
        return Err(Refused::SpecialFile(format!(
            "mode {mode:#o} has set-uid or set-gid bits"
        )));
    }
    Ok(())
}

/// Opens `path` (names joined by `/`, already validated) one component at
/// a time without following symlinks, so nothing an agent sends reaches
/// outside the location.
fn open_path(loc: &LocalLocation, path: &[u8]) -> io::Result<OwnedFd> {
    let mut dir = loc.root()?;
    if path.is_empty() {
        return Ok(dir);
    }
    for part in path.split(|b| *b == b'/') {
        dir = loc.open_dir(&dir, OsStr::from_bytes(part))?;
    }
    Ok(dir)
}

/// A validated name.
fn as_name(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

/// The chunk as it was before compression: at most `raw_len` bytes
/// (validated to be at most [`MAX_CHUNK`]) are ever allocated, and data
/// that expands beyond them is refused.
fn decode(zstd: bool, raw_len: u64, data: Vec<u8>) -> Result<Vec<u8>, Refused> {
    if !zstd {
        return Ok(data);
    }
    debug_assert!(raw_len <= MAX_CHUNK as u64);
    let out = zstd::bulk::decompress(&data, raw_len as usize).map_err(|e| Refused::Expands {
        raw_len,
        detail: e.to_string(),
    })?;
    if out.len() as u64 != raw_len {
        return Err(Refused::Short {
            raw_len,
            len: out.len() as u64,
        });
    }
    Ok(out)
}

fn write_all(w: &impl Writer, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
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

fn finish(w: impl Writer, len: Option<u64>, update: &MetaUpdate) -> io::Result<()> {
    if let Some(len) = len {
        w.set_len(len)?;
    }
    if !update.is_empty() {
        w.update(update)?;
    }
    w.finish()
}

/// Does one operation on `loc`, if it is well formed and `policy` allows it.
pub fn execute(loc: &LocalLocation, op: Op, policy: &Policy) -> Response {
    execute_within(loc, op, policy, DIGEST_BUDGET)
}

/// [`execute`] with the digest's time budget given.
pub fn execute_within(
    loc: &LocalLocation,
    op: Op,
    policy: &Policy,
    digest_budget: Duration,
) -> Response {
    op.validate()
        .map_err(Refused::from)
        .and_then(|()| allowed(&op, policy))
        .map_err(io::Error::from)
        .and_then(|()| run(loc, op, digest_budget))
        .map_err(|e| WireError::from(&e))
}

/// A batch's operations in order, each checked and done as [`execute`]
/// does, until `budget` has passed: the answers then stop short, and the
/// agent sends the rest again. `resent`: the batch may have been done
/// before and its answer lost (the hub restarted); a change then finding
/// what it would have left is done, not failed.
pub fn execute_batch(
    loc: &LocalLocation,
    ops: Vec<Op>,
    policy: &Policy,
    budget: Duration,
    resent: bool,
) -> ferry_wire::proto::BatchResponse {
    let start = Instant::now();
    ops.into_iter()
        .take_while(|_| start.elapsed() < budget)
        .map(|op| {
            let first = (resent && leaves_a_trace(&op)).then(|| op.clone());
            match (execute(loc, op, policy), first) {
                (Err(e), Some(op)) if done_before(loc, &op, &e) => Ok(Reply::Done),
                (answer, _) => answer,
            }
        })
        .collect()
}

/// A change whose second doing fails on what the first left.
fn leaves_a_trace(op: &Op) -> bool {
    matches!(
        op,
        Op::Remove { .. }
            | Op::MakeDir { .. }
            | Op::MakeSymlink { .. }
            | Op::MakeNode { .. }
            | Op::HardLink { .. }
            | Op::Rename { .. }
    )
}

/// Whether `e`, from doing `op` again, is what doing it once left: gone,
/// made already, or renamed already (its source gone, its target there).
fn done_before(loc: &LocalLocation, op: &Op, e: &WireError) -> bool {
    match (op, e.errno) {
        (Op::Remove { .. }, Some(libc::ENOENT)) => true,
        (
            Op::MakeDir { .. } | Op::MakeSymlink { .. } | Op::MakeNode { .. } | Op::HardLink { .. },
            Some(libc::EEXIST),
        ) => true,
        (Op::Rename { dir, to, .. }, Some(libc::ENOENT)) => open_path(loc, dir)
            .and_then(|d| loc.stat(&d, as_name(to)))
            .is_ok(),
        _ => false,
    }
}

/// Digests of the files this hub has read, by (device, inode): verifying
/// files that have not changed since reads nothing again (see
/// [`DigestCache`] for when a digest still holds).
static DIGESTS: LazyLock<DigestCache> = LazyLock::new(DigestCache::default);

/// SHA-256 of a regular file, refused once `budget` has passed. `read`:
/// read it even if its digest is known (a file just written is read back).
fn digest(
    loc: &LocalLocation,
    dir: &[u8],
    file: &[u8],
    budget: Duration,
    read: bool,
) -> io::Result<[u8; 32]> {
    let deadline = Instant::now() + budget;
    let d = open_path(loc, dir)?;
    let r = loc.open_file(&d, as_name(file))?;
    let before = r.meta()?;
    if let Some(known) = DIGESTS.get(before.dev, &before).filter(|_| !read) {
        return Ok(known);
    }
    // Checked as it reads: a huge (sparse) file costs at most the budget.
    let digest = sha256_of(&r, before.size, || {
        if Instant::now() < deadline {
            return Ok(());
        }
        Err(Refused::DigestBudget {
            name: String::from_utf8_lossy(file).into_owned(),
            budget,
        }
        .into())
    })?;
    DIGESTS.put(before.dev, &before, &r.meta()?, digest);
    Ok(digest)
}

/// The digest of a regular file in a listing: kept, or taken if it fits in
/// what is `left` to read before `deadline`; `None` otherwise, or on any
/// failure (the agent then asks for it alone, and sees the failure).
fn listed_digest(
    loc: &LocalLocation,
    dir: &OwnedFd,
    name: &OsStr,
    meta: &Meta,
    left: &mut u64,
    deadline: Instant,
) -> Option<[u8; 32]> {
    if meta.kind != Kind::File {
        return None;
    }
    if let Some(known) = DIGESTS.get(meta.dev, meta) {
        return Some(known);
    }
    if meta.size > *left || Instant::now() >= deadline {
        return None;
    }
    *left -= meta.size;
    let r = loc.open_file(dir, name).ok()?;
    let before = r.meta().ok()?;
    let digest = sha256_of(&r, before.size, || {
        if Instant::now() < deadline {
            return Ok(());
        }
        Err(io::ErrorKind::TimedOut.into())
    })
    .ok()?;
    DIGESTS.put(before.dev, &before, &r.meta().ok()?, digest);
    // As listed: not if it changed between the listing and the read.
    (!ferry_engine::plan::changed(meta, &before)).then_some(digest)
}

fn run(loc: &LocalLocation, op: Op, digest_budget: Duration) -> io::Result<Reply> {
    Ok(match op {
        Op::StatDir { dir } => Reply::Meta(WireMeta::from(&loc.stat_dir(&open_path(loc, &dir)?)?)),
        Op::List { dir } => {
            let d = open_path(loc, &dir)?;
            let entries = loc.list(&d)?;
            Reply::List(
                entries
                    .into_iter()
                    .map(|e| (e.name.into_vec(), WireMeta::from(&e.meta)))
                    .collect(),
            )
        }
        Op::ListDigests { dir } => {
            let d = open_path(loc, &dir)?;
            let deadline = Instant::now() + digest_budget;
            let mut left = LISTED_DIGESTS_MAX;
            let entries = loc.list(&d)?;
            Reply::ListDigests(
                entries
                    .into_iter()
                    .map(|e| {
                        let digest = listed_digest(loc, &d, &e.name, &e.meta, &mut left, deadline);
                        (e.name.into_vec(), WireMeta::from(&e.meta), digest)
                    })
                    .collect(),
            )
        }
        Op::Stat { dir, name } => {
            let d = open_path(loc, &dir)?;
            Reply::Meta(WireMeta::from(&loc.stat(&d, as_name(&name))?))
        }
        Op::ReadLink { dir, name } => {
            let d = open_path(loc, &dir)?;
            Reply::Target(loc.read_link(&d, as_name(&name))?.into_vec())
        }
        Op::MakeDir { dir, name, mode } => {
            let d = open_path(loc, &dir)?;
            loc.make_dir(&d, as_name(&name), mode)?;
            Reply::Done
        }
        Op::MakeSymlink { dir, name, target } => {
            let d = open_path(loc, &dir)?;
            loc.make_symlink(&d, as_name(&name), OsStr::from_bytes(&target))?;
            Reply::Done
        }
        Op::MakeNode {
            dir,
            name,
            kind,
            mode,
            rdev,
        } => {
            let d = open_path(loc, &dir)?;
            loc.make_node(&d, as_name(&name), kind, mode, rdev)?;
            Reply::Done
        }
        Op::HardLink {
            from_dir,
            from,
            to_dir,
            to,
        } => {
            let a = open_path(loc, &from_dir)?;
            let b = open_path(loc, &to_dir)?;
            loc.hard_link(&a, as_name(&from), &b, as_name(&to))?;
            Reply::Done
        }
        Op::Rename { dir, from, to } => {
            let d = open_path(loc, &dir)?;
            loc.rename(&d, as_name(&from), as_name(&to))?;
            Reply::Done
        }
        Op::Remove { dir, name, kind } => {
            let d = open_path(loc, &dir)?;
            loc.remove(&d, as_name(&name), kind)?;
            Reply::Done
        }
        Op::Update { dir, name, update } => {
            let d = open_path(loc, &dir)?;
            loc.update(&d, as_name(&name), &MetaUpdate::from(&update))?;
            Reply::Done
        }
        Op::UpdateDir { dir, update } => {
            let d = open_path(loc, &dir)?;
            loc.update_dir(&d, &MetaUpdate::from(&update))?;
            Reply::Done
        }
        Op::Create { dir, name, mode } => {
            let d = open_path(loc, &dir)?;
            loc.create_file(&d, as_name(&name), mode)?.finish()?;
            Reply::Done
        }
        Op::Write {
            dir,
            name,
            offset,
            zstd,
            raw_len,
            data,
        } => {
            let data = decode(zstd, raw_len, data)?;
            let d = open_path(loc, &dir)?;
            let w = loc.open_write(&d, as_name(&name))?;
            write_all(&w, &data, offset)?;
            w.finish()?;
            Reply::Done
        }
        Op::Finish {
            dir,
            name,
            len,
            update,
        } => {
            let d = open_path(loc, &dir)?;
            let w = loc.open_write(&d, as_name(&name))?;
            finish(w, len, &MetaUpdate::from(&update))?;
            Reply::Done
        }
        Op::Put {
            dir,
            name,
            mode,
            zstd,
            raw_len,
            data,
            len,
            update,
        } => {
            let data = decode(zstd, raw_len, data)?;
            let d = open_path(loc, &dir)?;
            let w = loc.create_file(&d, as_name(&name), mode)?;
            write_all(&w, &data, 0)?;
            finish(w, len, &MetaUpdate::from(&update))?;
            // Read back as written: the agent's verification needs no
            // second round trip for it.
            Reply::Digest(digest(loc, &dir, &name, digest_budget, true)?)
        }
        Op::Digest { dir, name } => Reply::Digest(digest(loc, &dir, &name, digest_budget, false)?),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use super::*;
    use ferry_engine::location::Kind;
    use ferry_wire::proto::WireUpdate;
    use sha2::{Digest, Sha256};

    const NONE: Policy = Policy {
        special_files: false,
    };
    const ALL: Policy = Policy {
        special_files: true,
    };

    fn location() -> (tempfile::TempDir, LocalLocation) {
        let dir = tempfile::tempdir().unwrap();
        let loc = LocalLocation::open(dir.path()).unwrap();
        (dir, loc)
    }

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn a_batch_sent_again_after_a_restart_is_done_not_failed() {
        let (dir, loc) = location();
        std::fs::write(dir.path().join("f.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join("old"), b"x").unwrap();
        let batch = || {
            vec![
                Op::MakeDir {
                    dir: b(""),
                    name: b("d"),
                    mode: 0o755,
                },
                Op::Rename {
                    dir: b(""),
                    from: b("f.tmp"),
                    to: b("f"),
                },
                Op::Remove {
                    dir: b(""),
                    name: b("old"),
                    kind: Kind::File,
                },
                Op::MakeSymlink {
                    dir: b("d"),
                    name: b("s"),
                    target: b("../f"),
                },
            ]
        };
        let budget = Duration::from_secs(20);
        let first = execute_batch(&loc, batch(), &NONE, budget, false);
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        // Done twice without the hint: each change fails on what it left.
        let again = execute_batch(&loc, batch(), &NONE, budget, false);
        assert!(again.iter().all(Result::is_err), "{again:?}");
        // Sent again (its first answer lost): done.
        let resent = execute_batch(&loc, batch(), &NONE, budget, true);
        assert!(resent.iter().all(Result::is_ok), "{resent:?}");
        // Not a cover for what was never done: a rename whose target is
        // missing too still fails.
        let missing = Op::Rename {
            dir: b(""),
            from: b("nothing"),
            to: b("nowhere"),
        };
        let answers = execute_batch(&loc, vec![missing], &NONE, budget, true);
        assert!(answers[0].is_err());
    }

    #[test]
    fn a_batch_marked_resent_gains_a_hostile_agent_nothing() {
        let (dir, loc) = location();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("esc")).unwrap();
        // A device where a file already is: EEXIST would read as done.
        std::fs::write(dir.path().join("node"), b"file").unwrap();
        let hostile = vec![
            Op::MakeNode {
                dir: b(""),
                name: b("node"),
                kind: Kind::BlockDevice,
                mode: 0o600,
                rdev: 0x0801,
            },
            Op::Remove {
                dir: b("esc"),
                name: b("victim"),
                kind: Kind::File,
            },
            Op::MakeDir {
                dir: b("esc"),
                name: b("x"),
                mode: 0o755,
            },
            Op::Rename {
                dir: b("esc"),
                from: b("victim"),
                to: b("moved"),
            },
            Op::MakeSymlink {
                dir: b("esc"),
                name: b("victim"),
                target: b("/etc/passwd"),
            },
        ];
        let budget = Duration::from_secs(20);
        let answers = execute_batch(&loc, hostile, &NONE, budget, true);
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        // Nothing changed outside, and the file stays a file.
        let left: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["victim"]);
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"keep"
        );
        assert!(std::fs::symlink_metadata(dir.path().join("node"))
            .unwrap()
            .is_file());
    }

    fn refused(loc: &LocalLocation, op: Op, policy: &Policy) -> String {
        match execute(loc, op, policy) {
            Ok(r) => panic!("done: {r:?}"),
            Err(e) => e.message,
        }
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn with_mode(mode: u32) -> WireUpdate {
        WireUpdate {
            mode: Some(mode),
            ..WireUpdate::default()
        }
    }

    #[test]
    fn special_files_and_set_id_modes_are_refused_unless_the_policy_allows_them() {
        let (dir, loc) = location();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let refusals = [
            Op::MakeNode {
                dir: b(""),
                name: b("blk"),
                kind: Kind::BlockDevice,
                mode: 0o600,
                rdev: rustix::fs::makedev(7, 0),
            },
            Op::MakeNode {
                dir: b(""),
                name: b("fifo"),
                kind: Kind::Fifo,
                mode: 0o600,
                rdev: 0,
            },
            Op::MakeDir {
                dir: b(""),
                name: b("sgid"),
                mode: 0o2755,
            },
            Op::Create {
                dir: b(""),
                name: b("suid"),
                mode: 0o4755,
            },
            Op::Put {
                dir: b(""),
                name: b("put"),
                mode: 0o4755,
                zstd: false,
                raw_len: 1,
                data: b("x"),
                len: None,
                update: WireUpdate::default(),
            },
            Op::Put {
                dir: b(""),
                name: b("put"),
                mode: 0o644,
                zstd: false,
                raw_len: 1,
                data: b("x"),
                len: None,
                update: with_mode(0o6755),
            },
            Op::Update {
                dir: b(""),
                name: b("f"),
                update: with_mode(0o4777),
            },
            Op::UpdateDir {
                dir: b("d"),
                update: with_mode(0o2775),
            },
            Op::Finish {
                dir: b(""),
                name: b("f"),
                len: None,
                update: with_mode(0o4755),
            },
        ];
        for op in refusals {
            let what = format!("{op:?}");
            let message = refused(&loc, op, &NONE);
            assert!(
                message.contains("the hub's location does not allow special files")
                    && message.contains("PreserveDevices"),
                "{what}: {message}"
            );
        }
        // Nothing was made or changed.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["d", "f"]);
        assert_eq!(mode_of(&dir.path().join("f")) & 0o7000, 0);
        assert_eq!(mode_of(&dir.path().join("d")) & 0o7000, 0);
        let message = refused(
            &loc,
            Op::MakeNode {
                dir: b(""),
                name: b("sock"),
                kind: Kind::Socket,
                mode: 0o600,
                rdev: 0,
            },
            &NONE,
        );
        assert!(message.contains("a socket cannot be made"), "{message}");

        // Allowed: the same operations are done.
        let fifo = Op::MakeNode {
            dir: b(""),
            name: b("fifo"),
            kind: Kind::Fifo,
            mode: 0o600,
            rdev: 0,
        };
        execute(&loc, fifo, &ALL).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &std::fs::symlink_metadata(dir.path().join("fifo"))
                .unwrap()
                .file_type()
        ));
        let update = Op::Update {
            dir: b(""),
            name: b("f"),
            update: with_mode(0o4755),
        };
        execute(&loc, update, &ALL).unwrap();
        assert_eq!(mode_of(&dir.path().join("f")), 0o4755);
        // Without set-id bits the default policy lets modes through.
        let update = Op::Update {
            dir: b(""),
            name: b("f"),
            update: with_mode(0o1750),
        };
        execute(&loc, update, &NONE).unwrap();
        assert_eq!(mode_of(&dir.path().join("f")), 0o1750);
    }

    #[test]
    fn an_update_of_a_symlink_leaves_what_it_names_alone() {
        let (dir, loc) = location();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("secret");
        std::fs::write(&target, b"outside").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&target).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        // Only root may give a file away.
        let owner = rustix::process::geteuid().is_root().then_some(4242);
        let op = Op::Update {
            dir: b(""),
            name: b("link"),
            update: WireUpdate {
                uid: owner,
                gid: owner,
                mode: Some(0o777),
                atime: Some((1_000_000, 0)),
                mtime: Some((1_000_000, 0)),
            },
        };
        execute(&loc, op, &NONE).unwrap();
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(after.mode(), before.mode());
        assert_eq!(after.uid(), before.uid());
        assert_eq!(after.gid(), before.gid());
        assert_eq!(after.mtime(), before.mtime());
        assert_eq!(after.atime(), before.atime());
        // The symlink itself took the times.
        let link = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert_eq!(link.mtime(), 1_000_000);
        if let Some(owner) = owner {
            assert_eq!((link.uid(), link.gid()), (owner, owner));
        }
    }

    #[test]
    fn data_goes_only_to_and_from_regular_files() {
        let (dir, loc) = location();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let ops = [
            Op::Digest {
                dir: b(""),
                name: b("fifo"),
            },
            Op::Write {
                dir: b(""),
                name: b("fifo"),
                offset: 0,
                zstd: false,
                raw_len: 1,
                data: b("x"),
            },
            Op::Finish {
                dir: b(""),
                name: b("fifo"),
                len: Some(0),
                update: WireUpdate::default(),
            },
            Op::Put {
                dir: b(""),
                name: b("fifo"),
                mode: 0o600,
                zstd: false,
                raw_len: 1,
                data: b("x"),
                len: None,
                update: WireUpdate::default(),
            },
            Op::Create {
                dir: b(""),
                name: b("fifo"),
                mode: 0o600,
            },
        ];
        // On a thread: an open that blocks on the FIFO shows as a hang,
        // named, rather than as a test that never ends.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let loc = LocalLocation::open(&path).unwrap();
            for op in ops {
                let what = format!("{op:?}");
                tx.send((what, execute(&loc, op, &NONE))).unwrap();
            }
        });
        for _ in 0..5 {
            let (what, r) = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("an operation blocked on a FIFO");
            let message = r.expect_err(&what).message;
            assert!(
                message.contains("\"fifo\" is a FIFO, not a regular file"),
                "{what}: {message}"
            );
        }
        let _ = loc;
    }

    #[test]
    fn a_compressed_chunk_cannot_expand_beyond_its_declared_size() {
        use std::io::Write as _;
        let (dir, loc) = location();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        // 1 GiB of zeros in about 33 KB.
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let write = |raw_len: u64, data: Vec<u8>| Op::Write {
            dir: b(""),
            name: b("f"),
            offset: 0,
            zstd: true,
            raw_len,
            data,
        };
        let message = refused(&loc, write(MAX_CHUNK as u64, bomb.clone()), &NONE);
        assert!(
            message.contains("does not fit its declared 1048576 bytes"),
            "{message}"
        );
        let message = refused(&loc, write(1 << 30, bomb.clone()), &NONE);
        assert!(
            message.contains("a chunk of 1073741824 bytes is over the largest"),
            "{message}"
        );
        // The same as a whole file: refused before it is created.
        let put = Op::Put {
            dir: b(""),
            name: b("g"),
            mode: 0o644,
            zstd: true,
            raw_len: MAX_CHUNK as u64,
            data: bomb,
            len: None,
            update: WireUpdate::default(),
        };
        let message = refused(&loc, put, &NONE);
        assert!(message.contains("does not fit"), "{message}");
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 0);
        assert!(!dir.path().join("g").exists());

        // Less than declared is refused too; exactly what was declared is written.
        let packed = zstd::bulk::compress(&[7u8; 1000], 3).unwrap();
        let message = refused(&loc, write(2000, packed.clone()), &NONE);
        assert!(
            message.contains("holds 1000 bytes, 2000 were declared"),
            "{message}"
        );
        execute(&loc, write(1000, packed), &NONE).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), [7u8; 1000]);
    }

    #[test]
    fn a_digest_stops_at_its_time_budget() {
        let (dir, loc) = location();
        // 1 TiB of holes: hours of hashing.
        let f = std::fs::File::create(dir.path().join("sparse")).unwrap();
        f.set_len(1 << 40).unwrap();
        let op = Op::Digest {
            dir: b(""),
            name: b("sparse"),
        };
        let budget = Duration::from_millis(50);
        let message = match execute_within(&loc, op, &NONE, budget) {
            Ok(r) => panic!("{r:?}"),
            Err(e) => e.message,
        };
        assert_eq!(
            message,
            "the digest of sparse exceeded its time budget (50ms)"
        );
        // A small file within the budget.
        std::fs::write(dir.path().join("small"), b"abc").unwrap();
        let op = Op::Digest {
            dir: b(""),
            name: b("small"),
        };
        match execute(&loc, op, &NONE).unwrap() {
            Reply::Digest(d) => assert_eq!(d, <[u8; 32]>::from(Sha256::digest(b"abc"))),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn a_listing_with_digests_gives_those_of_regular_files_within_its_budget() {
        let (dir, loc) = location();
        std::fs::write(dir.path().join("small"), b"abc").unwrap();
        // Holes: nothing to read, but over what one listing may read.
        let big = std::fs::File::create(dir.path().join("big")).unwrap();
        big.set_len(LISTED_DIGESTS_MAX + 1).unwrap();
        std::os::unix::fs::symlink("small", dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let op = Op::ListDigests { dir: b("") };
        let Reply::ListDigests(entries) = execute(&loc, op, &NONE).unwrap() else {
            panic!("not a listing with digests");
        };
        let mut digests: Vec<_> = entries
            .into_iter()
            .map(|(name, _, d)| (String::from_utf8(name).unwrap(), d))
            .collect();
        digests.sort();
        let abc = <[u8; 32]>::from(Sha256::digest(b"abc"));
        assert_eq!(
            digests,
            [
                ("big".to_string(), None),
                ("link".to_string(), None),
                ("small".to_string(), Some(abc)),
                ("sub".to_string(), None),
            ]
        );
    }

    #[test]
    fn a_digest_kept_from_before_is_not_given_for_a_changed_file() {
        let (dir, loc) = location();
        let path = dir.path().join("f");
        let digest_of = |loc: &LocalLocation| {
            let op = Op::Digest {
                dir: b(""),
                name: b("f"),
            };
            match execute(loc, op, &NONE).unwrap() {
                Reply::Digest(d) => d,
                r => panic!("{r:?}"),
            }
        };
        std::fs::write(&path, b"abc").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(digest_of(&loc), <[u8; 32]>::from(Sha256::digest(b"abc")));
        // The same size and modification time, other bytes: only the
        // change time tells.
        std::fs::write(&path, b"xyz").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(mtime).unwrap();
        assert_eq!(digest_of(&loc), <[u8; 32]>::from(Sha256::digest(b"xyz")));
    }

    #[test]
    fn malformed_requests_are_refused_before_the_disk_is_touched() {
        let (dir, loc) = location();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        for name in ["", ".", "..", "a/b", "a\0b"] {
            let op = Op::MakeDir {
                dir: b(""),
                name: b(name),
                mode: 0o755,
            };
            let message = refused(&loc, op, &NONE);
            assert!(message.contains("not a file name"), "{name:?}: {message}");
        }
        for path in ["/d", "d/", "d//x", "d/../d", "./d", "d\0"] {
            let op = Op::MakeDir {
                dir: b(path),
                name: b("x"),
                mode: 0o755,
            };
            let message = refused(&loc, op, &NONE);
            assert!(
                message.contains("not a relative path"),
                "{path:?}: {message}"
            );
        }
        let cases = [
            (
                Op::Write {
                    dir: b(""),
                    name: b("f"),
                    offset: u64::MAX - 1,
                    zstd: false,
                    raw_len: 4,
                    data: b("abcd"),
                },
                "end beyond the largest file offset",
            ),
            (
                Op::Write {
                    dir: b(""),
                    name: b("f"),
                    offset: 0,
                    zstd: false,
                    raw_len: 3,
                    data: b("abcd"),
                },
                "4 bytes of data were sent for a chunk declared as 3",
            ),
            (
                Op::Finish {
                    dir: b(""),
                    name: b("f"),
                    len: Some(u64::MAX),
                    update: WireUpdate::default(),
                },
                "beyond the largest file offset",
            ),
            (
                Op::Update {
                    dir: b(""),
                    name: b("f"),
                    update: with_mode(0o170777),
                },
                "bits beyond",
            ),
            (
                Op::Update {
                    dir: b(""),
                    name: b("f"),
                    update: WireUpdate {
                        mtime: Some((0, 1_000_000_000)),
                        ..WireUpdate::default()
                    },
                },
                "nanoseconds",
            ),
            (
                Op::MakeSymlink {
                    dir: b(""),
                    name: b("l"),
                    target: b(""),
                },
                "not a symlink target",
            ),
            (
                Op::MakeNode {
                    dir: b(""),
                    name: b("n"),
                    kind: Kind::File,
                    mode: 0o644,
                    rdev: 0,
                },
                "not a special file kind",
            ),
        ];
        for (op, want) in cases {
            let what = format!("{op:?}");
            let message = refused(&loc, op, &ALL);
            assert!(message.contains(want), "{what}: {message}");
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["d", "f"]);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"data");
        assert_eq!(std::fs::read_dir(dir.path().join("d")).unwrap().count(), 0);
    }
}
