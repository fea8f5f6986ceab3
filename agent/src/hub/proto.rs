//! The remote-writer protocol: one file-system operation per HTTPS request
//! (`POST /agent/v1/fs/{location}`), postcard-encoded both ways. Names and
//! paths are bytes, as the file system keeps them. Every request carries an
//! operation id: a retry after a lost answer gets the first answer again,
//! so no operation is done twice.

use serde::{Deserialize, Serialize};

use crate::location::{Kind, Meta, MetaUpdate, Timestamp};

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
    Write {
        dir: Vec<u8>,
        name: Vec<u8>,
        offset: u64,
        zstd: bool,
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

    /// Data bytes the operation carries, compressed or not.
    pub fn payload(&self) -> usize {
        match self {
            Op::Write { data, .. } | Op::Put { data, .. } => data.len(),
            _ => 0,
        }
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
