//! The remote-writer protocol: one file-system operation per HTTPS request
//! (`POST /agent/v1/fs/{location}`), postcard-encoded both ways. Names and
//! paths are bytes, as the file system keeps them. Every request carries an
//! operation id: a retry after a lost answer gets the first answer again,
//! so no operation is done twice.
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub op_id: u64,
    pub op: Op,
}

/// `dir` is a `/`-separated path relative to the location's root (empty for
/// the root); `name` is one component in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    StatDir {
        dir: Vec<u8>,
    },
    List {
        dir: Vec<u8>,
    },
    Stat {
        dir: Vec<u8>,
        name: Vec<u8>,
    },
    ReadLink {
        dir: Vec<u8>,
        name: Vec<u8>,
    },
    MakeDir {
        dir: Vec<u8>,
        name: Vec<u8>,
        mode: u32,
    },
    MakeSymlink {
        dir: Vec<u8>,
        name: Vec<u8>,
        target: Vec<u8>,
    },
    MakeNode {
        dir: Vec<u8>,
        name: Vec<u8>,
        kind: Kind,
        mode: u32,
        rdev: u64,
    },
    HardLink {
        from_dir: Vec<u8>,
        from: Vec<u8>,
        to_dir: Vec<u8>,
        to: Vec<u8>,
    },
    Rename {
        dir: Vec<u8>,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Remove {
        dir: Vec<u8>,
        name: Vec<u8>,
        kind: Kind,
    },
    Update {
        dir: Vec<u8>,
        name: Vec<u8>,
        update: WireUpdate,
    },
    UpdateDir {
        dir: Vec<u8>,
        update: WireUpdate,
    },
    /// Creates (or truncates) a file with its final mode.
    Create {
        dir: Vec<u8>,
        name: Vec<u8>,
        mode: u32,
    },
    /// Writes one chunk of a created file; `zstd` when compressed.
    /// `raw_len`: the chunk's length before compression, at most
    /// [`MAX_CHUNK`]; the data may not expand beyond it.
    Write {
        dir: Vec<u8>,
        name: Vec<u8>,
        offset: u64,
        zstd: bool,
        raw_len: u64,
        data: Vec<u8>,
    },
    /// Sets the length and attributes of a written file.
    Finish {
        dir: Vec<u8>,
        name: Vec<u8>,
        len: Option<u64>,
        update: WireUpdate,
    },
    /// A whole small file in one request: create, data, length, attributes.
    Put {
        dir: Vec<u8>,
        name: Vec<u8>,
        mode: u32,
        zstd: bool,
        raw_len: u64,
        data: Vec<u8>,
        len: Option<u64>,
        update: WireUpdate,
    },
    /// SHA-256 of a file's content, read by the hub.
    Digest {
        dir: Vec<u8>,
        name: Vec<u8>,
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
            Op::StatDir { dir } | Op::List { dir } => path(dir),
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
    Target(Vec<u8>),
    Digest([u8; 32]),
}

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
