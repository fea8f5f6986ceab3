// SPDX-License-Identifier: MIT
//! The remote-writer protocol: batches of file-system operations, one lane's
//! per HTTPS request (`POST /agent/v1/fs/{location}/batch`), postcard-encoded
//! both ways. Names and paths are bytes, as the file system keeps them.
//! Every batch carries an id: a retry after a lost answer gets the first
//! answers again, so no operation is done twice.
//!
//! The hub trusts nothing in a request: [`Op::validate`] refuses malformed
//! names, paths, sizes and times before anything touches the disk.

use serde::{Deserialize, Serialize};

use ferry_engine::location::{Kind, Meta, MetaUpdate, Timestamp};

/// The most data one `Write` or `Put` carries, before compression: the
/// agent splits larger writes, and the hub refuses larger declared sizes
/// (so a small compressed message cannot become a large allocation).
pub const MAX_CHUNK: usize = 1 << 20;

/// A request the hub refuses before doing anything.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidOp {
    #[error("not a file name: {0:?} (empty, `.`, `..`, or with `/` or NUL)")]
    Name(String),
    #[error("not a relative path of names: {0:?}")]
    Path(String),
    #[error("not a symlink target: {0:?} (empty or with NUL)")]
    Target(String),
    #[error("a chunk of {declared} bytes is over the largest the hub takes ({MAX_CHUNK})")]
    ChunkTooLarge { declared: u64 },
    #[error("{len} bytes of data were sent for a chunk declared as {declared} bytes")]
    LengthMismatch { declared: u64, len: u64 },
    #[error("{len} bytes at offset {offset} end beyond the largest file offset")]
    Overflow { offset: u64, len: u64 },
    #[error("a file length of {0} bytes is beyond the largest file offset")]
    Length(u64),
    #[error("mode {0:#o} has bits beyond the permission, set-id and sticky bits (0o7777)")]
    Mode(u32),
    #[error("a timestamp with {0} nanoseconds (at most 999999999)")]
    Nanoseconds(u32),
    #[error("{0:?} is not a special file kind (FIFO, socket, device)")]
    NodeKind(Kind),
    #[error("a batch of {0} operations is over the most one takes ({MAX_BATCH_OPS})")]
    BatchTooLarge(usize),
    #[error("operation {index} of the batch: {why}")]
    InBatch { index: usize, why: Box<InvalidOp> },
}

/// Many operations of one lane (`POST /agent/v1/fs/{location}/batch`),
/// done in order and each answered ([`BatchResponse`]): an agent sends what
/// queued while its previous batch was on the way, so many files cost one
/// round trip. A batch holds operations, never batches: nothing nests, so
/// decoding needs no depth limit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Batch {
    /// Done once per id: a batch sent again gets its first answers.
    pub batch_id: u64,
    pub ops: Vec<Op>,
}

/// Operations in one [`Batch`] at most.
pub const MAX_BATCH_OPS: usize = 4096;

/// One answer per operation of a [`Batch`], in order. Fewer when the hub's
/// time for the batch ran out: the rest were not done; the agent sends them
/// again in its next batch.
pub type BatchResponse = Vec<Response>;

impl Batch {
    /// Every operation checked as [`Op::validate`] does, before any is
    /// done: one malformed operation refuses the whole batch.
    pub fn validate(&self) -> Result<(), InvalidOp> {
        if self.ops.len() > MAX_BATCH_OPS {
            return Err(InvalidOp::BatchTooLarge(self.ops.len()));
        }
        self.ops.iter().enumerate().try_for_each(|(index, op)| {
            op.validate().map_err(|e| InvalidOp::InBatch {
                index,
                why: Box::new(e),
            })
        })
    }

    /// Whether any operation changes the location.
    pub fn changes(&self) -> bool {
        self.ops.iter().any(Op::changes)
    }

    /// Data bytes the batch carries.
    pub fn payload(&self) -> usize {
        self.ops.iter().map(Op::payload).sum()
    }
}

/// Set on a batch sent again after no answer: the hub may have done it
/// already, and lost its answer if it restarted since (see the hub's
/// `fs::execute_batch`).
pub const RESENT_HEADER: &str = "ferry-resent";

/// `dir` is a `/`-separated path relative to the location's root (empty for
/// the root); `name` is one component in it. Byte strings are encoded as
/// bytes (`serde_bytes`: the same encoding as a sequence of `u8` in
/// postcard, copied whole instead of byte by byte).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    StatDir {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
    },
    List {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
    },
    Stat {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    ReadLink {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    MakeDir {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        mode: u32,
    },
    MakeSymlink {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    MakeNode {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        kind: Kind,
        mode: u32,
        rdev: u64,
    },
    HardLink {
        #[serde(with = "serde_bytes")]
        from_dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        #[serde(with = "serde_bytes")]
        to_dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
    Rename {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
    Remove {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        kind: Kind,
    },
    Update {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        update: WireUpdate,
    },
    UpdateDir {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        update: WireUpdate,
    },
    /// Creates (or truncates) a file with its final mode.
    Create {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        mode: u32,
    },
    /// Writes one chunk of a created file; `zstd` when compressed.
    /// `raw_len`: the chunk's length before compression, at most
    /// [`MAX_CHUNK`]; the data may not expand beyond it.
    Write {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        offset: u64,
        zstd: bool,
        raw_len: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Sets the length and attributes of a written file.
    Finish {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        len: Option<u64>,
        update: WireUpdate,
    },
    /// A whole small file in one request: create, data, length, attributes.
    Put {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        mode: u32,
        zstd: bool,
        raw_len: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        len: Option<u64>,
        update: WireUpdate,
    },
    /// SHA-256 of a file's content, read by the hub.
    Digest {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    /// A listing with the digests of its regular files the hub keeps or
    /// can take within [`LISTED_DIGESTS_MAX`] bytes read (verification).
    ListDigests {
        #[serde(with = "serde_bytes")]
        dir: Vec<u8>,
    },
}

impl Op {
    /// Operations that change the location: done once per operation id.
    /// The others may simply be done again.
    pub fn changes(&self) -> bool {
        !matches!(
            self,
            Op::StatDir { .. }
                | Op::List { .. }
                | Op::ListDigests { .. }
                | Op::Stat { .. }
                | Op::ReadLink { .. }
                | Op::Digest { .. }
        )
    }

    /// Refuses what no location may be asked: bad names and paths, chunks
    /// over [`MAX_CHUNK`], offsets and lengths past the largest file
    /// offset, unknown mode bits, malformed times. What a location allows
    /// (special files, set-id bits) is the hub's policy, not checked here.
    pub fn validate(&self) -> Result<(), InvalidOp> {
        match self {
            Op::StatDir { dir } | Op::List { dir } | Op::ListDigests { dir } => path(dir),
            Op::Stat { dir, name } | Op::ReadLink { dir, name } | Op::Digest { dir, name } => {
                path(dir)?;
                name_ok(name)
            }
            Op::MakeDir { dir, name, mode } | Op::Create { dir, name, mode } => {
                path(dir)?;
                name_ok(name)?;
                mode_ok(*mode)
            }
            Op::MakeSymlink { dir, name, target } => {
                path(dir)?;
                name_ok(name)?;
                if target.is_empty() || target.contains(&0) {
                    return Err(InvalidOp::Target(lossy(target)));
                }
                Ok(())
            }
            Op::MakeNode {
                dir,
                name,
                kind,
                mode,
                ..
            } => {
                path(dir)?;
                name_ok(name)?;
                mode_ok(*mode)?;
                if !kind.is_special() {
                    return Err(InvalidOp::NodeKind(*kind));
                }
                Ok(())
            }
            Op::HardLink {
                from_dir,
                from,
                to_dir,
                to,
            } => {
                path(from_dir)?;
                name_ok(from)?;
                path(to_dir)?;
                name_ok(to)
            }
            Op::Rename { dir, from, to } => {
                path(dir)?;
                name_ok(from)?;
                name_ok(to)
            }
            Op::Remove { dir, name, .. } => {
                path(dir)?;
                name_ok(name)
            }
            Op::Update { dir, name, update } => {
                path(dir)?;
                name_ok(name)?;
                update.validate()
            }
            Op::UpdateDir { dir, update } => {
                path(dir)?;
                update.validate()
            }
            Op::Write {
                dir,
                name,
                offset,
                zstd,
                raw_len,
                data,
            } => {
                path(dir)?;
                name_ok(name)?;
                chunk(*zstd, *raw_len, data)?;
                end(*offset, *raw_len)
            }
            Op::Finish {
                dir,
                name,
                len,
                update,
            } => {
                path(dir)?;
                name_ok(name)?;
                length(*len)?;
                update.validate()
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
                path(dir)?;
                name_ok(name)?;
                mode_ok(*mode)?;
                chunk(*zstd, *raw_len, data)?;
                length(*len)?;
                update.validate()
            }
        }
    }

    /// The mode bits the operation would set, for the hub's policy.
    pub fn modes(&self) -> impl Iterator<Item = u32> {
        let (mode, update) = match self {
            Op::MakeDir { mode, .. } | Op::Create { mode, .. } | Op::MakeNode { mode, .. } => {
                (Some(*mode), None)
            }
            Op::Put { mode, update, .. } => (Some(*mode), update.mode),
            Op::Update { update, .. }
            | Op::UpdateDir { update, .. }
            | Op::Finish { update, .. } => (None, update.mode),
            _ => (None, None),
        };
        mode.into_iter().chain(update)
    }

    /// Data bytes the operation carries, compressed or not.
    pub fn payload(&self) -> usize {
        match self {
            Op::Write { data, .. } | Op::Put { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// At least its encoded size: data, paths and names, and a bound on
    /// the rest (numbers, times, lengths; postcard writes no field names).
    pub fn encoded_bound(&self) -> usize {
        const REST: usize = 96;
        let text = match self {
            Op::StatDir { dir }
            | Op::List { dir }
            | Op::ListDigests { dir }
            | Op::UpdateDir { dir, .. } => dir.len(),
            Op::MakeSymlink { dir, name, target } => dir.len() + name.len() + target.len(),
            Op::HardLink {
                from_dir,
                from,
                to_dir,
                to,
            } => from_dir.len() + from.len() + to_dir.len() + to.len(),
            Op::Rename { dir, from, to } => dir.len() + from.len() + to.len(),
            Op::Stat { dir, name }
            | Op::ReadLink { dir, name }
            | Op::Digest { dir, name }
            | Op::MakeDir { dir, name, .. }
            | Op::MakeNode { dir, name, .. }
            | Op::Remove { dir, name, .. }
            | Op::Update { dir, name, .. }
            | Op::Create { dir, name, .. }
            | Op::Write { dir, name, .. }
            | Op::Finish { dir, name, .. }
            | Op::Put { dir, name, .. } => dir.len() + name.len(),
        };
        self.payload() + text + REST
    }
}

/// The largest file offset (`off_t` is signed).
const MAX_OFFSET: u64 = i64::MAX as u64;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One name in a directory: not empty, `.` or `..`, without `/` or NUL.
pub fn name_ok(name: &[u8]) -> Result<(), InvalidOp> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(InvalidOp::Name(lossy(name)));
    }
    Ok(())
}

/// Empty (the root) or names joined by single `/`s.
fn path(dir: &[u8]) -> Result<(), InvalidOp> {
    if dir.is_empty() {
        return Ok(());
    }
    dir.split(|b| *b == b'/')
        .try_for_each(name_ok)
        .map_err(|_| InvalidOp::Path(lossy(dir)))
}

fn mode_ok(mode: u32) -> Result<(), InvalidOp> {
    if mode & !0o7777 != 0 {
        return Err(InvalidOp::Mode(mode));
    }
    Ok(())
}

fn chunk(zstd: bool, raw_len: u64, data: &[u8]) -> Result<(), InvalidOp> {
    if raw_len > MAX_CHUNK as u64 {
        return Err(InvalidOp::ChunkTooLarge { declared: raw_len });
    }
    let len = data.len() as u64;
    // Compressed data is never sent when it is not smaller.
    if (zstd && len > raw_len) || (!zstd && len != raw_len) {
        return Err(InvalidOp::LengthMismatch {
            declared: raw_len,
            len,
        });
    }
    Ok(())
}

fn end(offset: u64, len: u64) -> Result<(), InvalidOp> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_OFFSET => Ok(()),
        _ => Err(InvalidOp::Overflow { offset, len }),
    }
}

fn length(len: Option<u64>) -> Result<(), InvalidOp> {
    match len {
        Some(len) if len > MAX_OFFSET => Err(InvalidOp::Length(len)),
        _ => Ok(()),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Done,
    Meta(WireMeta),
    List(Vec<(Vec<u8>, WireMeta)>),
    Target(#[serde(with = "serde_bytes")] Vec<u8>),
    Digest([u8; 32]),
    /// A listing, each regular file with its digest when the hub gave it.
    ListDigests(Vec<(Vec<u8>, WireMeta, Option<[u8; 32]>)>),
}

/// Bytes the hub reads at most for the digests of one listing
/// ([`Op::ListDigests`]); files beyond are listed without one (the agent
/// asks for them).
pub const LISTED_DIGESTS_MAX: u64 = 64 << 20;

/// A refusal from the file system on the hub, with its errno when it had one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireError {
    pub errno: Option<i32>,
    pub message: String,
}

pub type Response = Result<Reply, WireError>;

impl From<&std::io::Error> for WireError {
    fn from(e: &std::io::Error) -> Self {
        WireError {
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

impl From<WireError> for std::io::Error {
    fn from(e: WireError) -> Self {
        match e.errno {
            Some(n) => std::io::Error::from_raw_os_error(n),
            None => std::io::Error::other(format!("on the hub: {}", e.message)),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireMeta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

fn ts(t: Timestamp) -> (i64, u32) {
    (t.sec, t.nsec)
}

fn un(t: (i64, u32)) -> Timestamp {
    Timestamp {
        sec: t.0,
        nsec: t.1,
    }
}

impl From<&Meta> for WireMeta {
    fn from(m: &Meta) -> Self {
        WireMeta {
            kind: m.kind,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            blocks: m.blocks,
            nlink: m.nlink,
            dev: m.dev,
            ino: m.ino,
            rdev: m.rdev,
            atime: ts(m.atime),
            mtime: ts(m.mtime),
            ctime: ts(m.ctime),
        }
    }
}

impl From<WireMeta> for Meta {
    fn from(m: WireMeta) -> Self {
        Meta {
            kind: m.kind,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            blocks: m.blocks,
            nlink: m.nlink,
            dev: m.dev,
            ino: m.ino,
            rdev: m.rdev,
            atime: un(m.atime),
            mtime: un(m.mtime),
            ctime: un(m.ctime),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WireUpdate {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub atime: Option<(i64, u32)>,
    pub mtime: Option<(i64, u32)>,
}

impl WireUpdate {
    fn validate(&self) -> Result<(), InvalidOp> {
        if let Some(mode) = self.mode {
            mode_ok(mode)?;
        }
        for (_, nsec) in self.atime.iter().chain(&self.mtime) {
            if *nsec >= 1_000_000_000 {
                return Err(InvalidOp::Nanoseconds(*nsec));
            }
        }
        Ok(())
    }
}

impl From<&MetaUpdate> for WireUpdate {
    fn from(u: &MetaUpdate) -> Self {
        WireUpdate {
            uid: u.uid,
            gid: u.gid,
            mode: u.mode,
            atime: u.atime.map(ts),
            mtime: u.mtime.map(ts),
        }
    }
}

impl From<&WireUpdate> for MetaUpdate {
    fn from(u: &WireUpdate) -> Self {
        MetaUpdate {
            uid: u.uid,
            gid: u.gid,
            mode: u.mode,
            atime: u.atime.map(un),
            mtime: u.mtime.map(un),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn the_encoded_bound_is_never_below_the_encoding() {
        let long = vec![b'n'; 255];
        let deep: Vec<u8> = [long.as_slice(); 16].join(&b'/');
        let ops = [
            Op::StatDir { dir: deep.clone() },
            Op::Put {
                dir: deep.clone(),
                name: long.clone(),
                mode: 0o7777,
                zstd: true,
                raw_len: u64::MAX,
                data: vec![1; 1000],
                len: Some(u64::MAX),
                update: update(),
            },
            Op::HardLink {
                from_dir: deep.clone(),
                from: long.clone(),
                to_dir: deep.clone(),
                to: long.clone(),
            },
            Op::Write {
                dir: deep.clone(),
                name: long.clone(),
                offset: u64::MAX,
                zstd: true,
                raw_len: u64::MAX,
                data: vec![2; 10],
            },
            Op::UpdateDir {
                dir: deep.clone(),
                update: update(),
            },
            Op::MakeNode {
                dir: deep.clone(),
                name: long.clone(),
                kind: Kind::CharDevice,
                mode: u32::MAX,
                rdev: u64::MAX,
            },
        ];
        for op in ops.into_iter().chain(every_op()) {
            let encoded = postcard::to_stdvec(&op).unwrap().len();
            assert!(
                op.encoded_bound() >= encoded,
                "{encoded} > bound for {op:?}"
            );
        }
    }

    #[test]
    fn a_batch_is_checked_whole_and_names_the_bad_operation() {
        let stat = |name: &str| Op::Stat {
            dir: b("d"),
            name: b(name),
        };
        let ok = Batch {
            batch_id: 7,
            ops: vec![stat("a"), stat("b")],
        };
        assert_eq!(ok.validate(), Ok(()));
        assert!(!ok.changes());
        let decoded: Batch = postcard::from_bytes(&postcard::to_stdvec(&ok).unwrap()).unwrap();
        assert_eq!(decoded.ops.len(), 2);
        let bad = Batch {
            batch_id: 8,
            ops: vec![stat("a"), stat(".."), stat("c")],
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "operation 1 of the batch: not a file name: \"..\" (empty, `.`, `..`, or with `/` or NUL)"
        );
        let many = Batch {
            batch_id: 9,
            ops: vec![stat("a"); MAX_BATCH_OPS + 1],
        };
        assert_eq!(
            many.validate(),
            Err(InvalidOp::BatchTooLarge(MAX_BATCH_OPS + 1))
        );
    }

    fn update() -> WireUpdate {
        WireUpdate {
            uid: Some(1),
            gid: Some(2),
            mode: Some(0o4755),
            atime: Some((-5, 999_999_999)),
            mtime: Some((i64::MAX, 0)),
        }
    }

    /// One of every operation, well formed.
    fn every_op() -> Vec<Op> {
        let odd = b"\xff \n name".to_vec();
        vec![
            Op::StatDir { dir: b("") },
            Op::List { dir: b("a/b") },
            Op::Stat {
                dir: b("a"),
                name: odd.clone(),
            },
            Op::ReadLink {
                dir: b(""),
                name: b("l"),
            },
            Op::MakeDir {
                dir: b(""),
                name: b("d"),
                mode: 0o755,
            },
            Op::MakeSymlink {
                dir: b(""),
                name: b("l"),
                target: b("../../x"),
            },
            Op::MakeNode {
                dir: b(""),
                name: b("p"),
                kind: Kind::Fifo,
                mode: 0o600,
                rdev: 7,
            },
            Op::HardLink {
                from_dir: b("a"),
                from: b("f"),
                to_dir: b("b"),
                to: b("g"),
            },
            Op::Rename {
                dir: b("a"),
                from: b("f"),
                to: b("g"),
            },
            Op::Remove {
                dir: b(""),
                name: b("d"),
                kind: Kind::Dir,
            },
            Op::Update {
                dir: b(""),
                name: b("f"),
                update: update(),
            },
            Op::UpdateDir {
                dir: b("d"),
                update: WireUpdate::default(),
            },
            Op::Create {
                dir: b(""),
                name: b("f"),
                mode: 0o644,
            },
            Op::Write {
                dir: b(""),
                name: b("f"),
                offset: 1 << 40,
                zstd: false,
                raw_len: 3,
                data: b("abc"),
            },
            Op::Finish {
                dir: b(""),
                name: b("f"),
                len: Some(10),
                update: update(),
            },
            Op::Put {
                dir: b(""),
                name: b("f"),
                mode: 0o644,
                zstd: true,
                raw_len: MAX_CHUNK as u64,
                data: vec![1; 100],
                len: None,
                update: WireUpdate::default(),
            },
            Op::Digest {
                dir: b("d"),
                name: odd,
            },
        ]
    }

    #[test]
    fn every_operation_and_answer_round_trips() {
        for (i, op) in every_op().into_iter().enumerate() {
            op.validate().unwrap_or_else(|e| panic!("{op:?}: {e}"));
            let req = Batch {
                batch_id: u64::MAX - i as u64,
                ops: vec![op],
            };
            let wire = postcard::to_stdvec(&req).unwrap();
            let back: Batch = postcard::from_bytes(&wire).unwrap();
            // Debug shows every field: equal text, equal message.
            assert_eq!(format!("{back:?}"), format!("{req:?}"));
        }
        let meta = Meta {
            kind: Kind::BlockDevice,
            mode: 0o7777,
            uid: u32::MAX,
            gid: 0,
            size: u64::MAX,
            blocks: 3,
            nlink: 2,
            dev: 4,
            ino: 5,
            rdev: 6,
            atime: Timestamp { sec: -1, nsec: 1 },
            mtime: Timestamp {
                sec: i64::MIN,
                nsec: 999_999_999,
            },
            ctime: Timestamp { sec: 7, nsec: 0 },
        };
        let answers: Vec<Response> = vec![
            Ok(Reply::Done),
            Ok(Reply::Meta(WireMeta::from(&meta))),
            Ok(Reply::List(vec![(
                b"\xffx".to_vec(),
                WireMeta::from(&meta),
            )])),
            Ok(Reply::Target(b("../t"))),
            Ok(Reply::Digest([9; 32])),
            Err(WireError {
                errno: Some(libc::ELOOP),
                message: b_str("loop"),
            }),
            Err(WireError {
                errno: None,
                message: b_str("refused"),
            }),
        ];
        for a in answers {
            let wire = postcard::to_stdvec(&a).unwrap();
            let back: Response = postcard::from_bytes(&wire).unwrap();
            assert_eq!(format!("{back:?}"), format!("{a:?}"));
        }
        // Attributes survive both conversions.
        assert_eq!(Meta::from(WireMeta::from(&meta)), meta);
        let u = MetaUpdate::from(&update());
        assert_eq!(
            format!("{:?}", WireUpdate::from(&u)),
            format!("{:?}", update())
        );
    }

    fn b_str(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn errors_cross_the_wire_with_their_errno_or_their_message() {
        let e = std::io::Error::from_raw_os_error(libc::ENOTDIR);
        let back = std::io::Error::from(WireError::from(&e));
        assert_eq!(back.raw_os_error(), Some(libc::ENOTDIR));
        let e = std::io::Error::other("no errno");
        let back = std::io::Error::from(WireError::from(&e));
        assert_eq!(back.raw_os_error(), None);
        assert_eq!(back.to_string(), "on the hub: no errno");
    }

    #[test]
    fn malformed_names_paths_and_targets_are_refused() {
        for name in ["", ".", "..", "a/b", "/abs", "a\0b"] {
            let op = Op::Stat {
                dir: b(""),
                name: b(name),
            };
            assert_eq!(op.validate(), Err(InvalidOp::Name(name.into())), "{name:?}");
            let op = Op::Rename {
                dir: b(""),
                from: b("f"),
                to: b(name),
            };
            assert!(matches!(op.validate(), Err(InvalidOp::Name(_))), "{name:?}");
            let op = Op::HardLink {
                from_dir: b(""),
                from: b("f"),
                to_dir: b(""),
                to: b(name),
            };
            assert!(matches!(op.validate(), Err(InvalidOp::Name(_))), "{name:?}");
        }
        for dir in ["/d", "d/", "d//x", "d/../d", "./d", "..", "d\0"] {
            let op = Op::List { dir: b(dir) };
            assert_eq!(op.validate(), Err(InvalidOp::Path(dir.into())), "{dir:?}");
            let op = Op::HardLink {
                from_dir: b(""),
                from: b("f"),
                to_dir: b(dir),
                to: b("g"),
            };
            assert!(matches!(op.validate(), Err(InvalidOp::Path(_))), "{dir:?}");
        }
        for target in ["", "a\0b"] {
            let op = Op::MakeSymlink {
                dir: b(""),
                name: b("l"),
                target: b(target),
            };
            assert_eq!(op.validate(), Err(InvalidOp::Target(target.into())));
        }
        for kind in [Kind::File, Kind::Dir, Kind::Symlink] {
            let op = Op::MakeNode {
                dir: b(""),
                name: b("n"),
                kind,
                mode: 0o600,
                rdev: 0,
            };
            assert_eq!(op.validate(), Err(InvalidOp::NodeKind(kind)));
        }
    }

    #[test]
    fn oversized_or_inconsistent_chunks_are_refused() {
        let write = |zstd, raw_len, len: usize, offset| Op::Write {
            dir: b(""),
            name: b("f"),
            offset,
            zstd,
            raw_len,
            data: vec![0; len],
        };
        let over = MAX_CHUNK as u64 + 1;
        assert_eq!(
            write(false, over, over as usize, 0).validate(),
            Err(InvalidOp::ChunkTooLarge { declared: over })
        );
        assert_eq!(
            write(true, over, 10, 0).validate(),
            Err(InvalidOp::ChunkTooLarge { declared: over })
        );
        // Uncompressed data is exactly its declared length; compressed data
        // is never larger than it.
        assert_eq!(
            write(false, 10, 9, 0).validate(),
            Err(InvalidOp::LengthMismatch {
                declared: 10,
                len: 9
            })
        );
        assert_eq!(
            write(true, 10, 11, 0).validate(),
            Err(InvalidOp::LengthMismatch {
                declared: 10,
                len: 11
            })
        );
        assert!(write(true, 10, 10, 0).validate().is_ok());
        assert!(write(false, MAX_CHUNK as u64, MAX_CHUNK, 0)
            .validate()
            .is_ok());
        // Past the largest file offset.
        let max = i64::MAX as u64;
        assert!(write(false, 1, 1, max - 1).validate().is_ok());
        assert_eq!(
            write(false, 1, 1, max).validate(),
            Err(InvalidOp::Overflow {
                offset: max,
                len: 1
            })
        );
        assert_eq!(
            write(false, 2, 2, u64::MAX).validate(),
            Err(InvalidOp::Overflow {
                offset: u64::MAX,
                len: 2
            })
        );
        let put = Op::Put {
            dir: b(""),
            name: b("f"),
            mode: 0o644,
            zstd: false,
            raw_len: over,
            data: vec![0; over as usize],
            len: None,
            update: WireUpdate::default(),
        };
        assert_eq!(
            put.validate(),
            Err(InvalidOp::ChunkTooLarge { declared: over })
        );
        let finish = |len| Op::Finish {
            dir: b(""),
            name: b("f"),
            len: Some(len),
            update: WireUpdate::default(),
        };
        assert!(finish(max).validate().is_ok());
        assert_eq!(finish(max + 1).validate(), Err(InvalidOp::Length(max + 1)));
    }

    #[test]
    fn modes_and_times_out_of_range_are_refused() {
        for mode in [0o10000, 0o170644, u32::MAX] {
            let op = Op::MakeDir {
                dir: b(""),
                name: b("d"),
                mode,
            };
            assert_eq!(op.validate(), Err(InvalidOp::Mode(mode)));
            let op = Op::Update {
                dir: b(""),
                name: b("f"),
                update: WireUpdate {
                    mode: Some(mode),
                    ..WireUpdate::default()
                },
            };
            assert_eq!(op.validate(), Err(InvalidOp::Mode(mode)));
        }
        for (atime, mtime) in [
            (Some((0, 1_000_000_000)), None),
            (None, Some((0, u32::MAX))),
        ] {
            let op = Op::UpdateDir {
                dir: b(""),
                update: WireUpdate {
                    atime,
                    mtime,
                    ..WireUpdate::default()
                },
            };
            assert!(
                matches!(op.validate(), Err(InvalidOp::Nanoseconds(_))),
                "{op:?}"
            );
        }
    }

    #[test]
    fn modes_payload_and_changes_are_what_the_hub_polices() {
        let ops = every_op();
        let changes: Vec<bool> = ops.iter().map(Op::changes).collect();
        assert_eq!(
            changes,
            [
                false, false, false, false, true, true, true, true, true, true, true, true, true,
                true, true, true, false
            ]
        );
        let modes: Vec<Vec<u32>> = ops.iter().map(|o| o.modes().collect()).collect();
        assert_eq!(modes[4], [0o755]); // MakeDir
        assert_eq!(modes[6], [0o600]); // MakeNode
        assert_eq!(modes[10], [0o4755]); // Update
        assert_eq!(modes[14], [0o4755]); // Finish
        assert_eq!(modes[15], [0o644]); // Put
        assert!(modes[0].is_empty() && modes[7].is_empty());
        assert_eq!(ops[13].payload(), 3);
        assert_eq!(ops[15].payload(), 100);
        assert_eq!(ops[0].payload(), 0);
    }

    #[test]
    fn garbage_does_not_decode_as_a_batch() {
        assert!(postcard::from_bytes::<Batch>(&[]).is_err());
        assert!(postcard::from_bytes::<Batch>(&[1, 1, 200]).is_err());
        // A batch cut short anywhere does not decode.
        let batch = Batch {
            batch_id: 7,
            ops: vec![every_op().remove(13)],
        };
        let wire = postcard::to_stdvec(&batch).unwrap();
        for cut in 0..wire.len() {
            assert!(
                postcard::from_bytes::<Batch>(&wire[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A length prefix claiming more data than there is.
        let mut lying = postcard::to_stdvec(&Batch {
            batch_id: 0,
            ops: vec![Op::List { dir: b("a") }],
        })
        .unwrap();
        let last = lying.len() - 2;
        lying[last] = 0x7f;
        assert!(postcard::from_bytes::<Batch>(&lying).is_err());
    }
}
