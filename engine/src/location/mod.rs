// SPDX-License-Identifier: MIT
//! Locations: where the engine reads and writes.
//!
//! The engine never calls the file system directly. It works through a
//! [`Location`], whose operations are all relative to a directory handle and a
//! single name, so that paths of any length work and no lookup is repeated.
//! An operation on a name acts on that name: it never follows a symlink
//! (only a location's root, the operator's path, may be one), and data is
//! read from or written to regular files only.
//! [`local::LocalLocation`] is a POSIX directory (a local disk or an NFS
//! mount); a remote location (the hub, over TLS) implements the same trait.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod local;

use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::Range;
use std::os::fd::BorrowedFd;

use serde::{Deserialize, Serialize};

/// The type of a file-system entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl Kind {
    /// The kind as a message names it: "… is a FIFO, not a regular file".
    pub fn noun(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Symlink => "symbolic link",
            Kind::Fifo => "FIFO",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Socket => "socket",
        }
    }

    /// FIFOs, sockets and device nodes: what `--preserve-devices` governs.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::CharDevice | Kind::BlockDevice | Kind::Socket
        )
    }
}

/// A point in time with nanoseconds, as the file system keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// What the engine knows of an entry: one `statx` worth of attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits, set-id and sticky bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Allocated 512-byte blocks; fewer than the size needs means holes.
    pub blocks: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

impl Meta {
    /// True when the file has fewer blocks allocated than its size needs.
    pub fn looks_sparse(&self) -> bool {
        self.kind == Kind::File && self.blocks.saturating_mul(512) < self.size
    }
}

/// One name in a directory listing, with its attributes.
/// What a destination can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in one name.
    pub name_max: usize,
    /// Bytes in a path from the location's top (programs that open a file
    /// by its full path fail beyond Linux's PATH_MAX).
    pub path_max: usize,
    /// Bytes in one file, when known.
    pub file_size_max: Option<u64>,
    /// Whether entries can be given another owner.
    pub can_chown: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            name_max: 255,
            path_max: 4096,
            file_size_max: None,
            can_chown: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub name: OsString,
    pub meta: Meta,
}

/// Attributes to change on an entry; `None` leaves an attribute as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaUpdate {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
}

impl MetaUpdate {
    pub fn is_empty(&self) -> bool {
        *self == MetaUpdate::default()
    }
}

/// The cost of the wire to a remote location, for the execution's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireCounters {
    /// Data bytes sent after compression (when compressing).
    pub bytes_compressed: u64,
    /// Data bytes sent again after a broken connection or a timeout.
    pub bytes_resent: u64,
    /// Requests sent again.
    pub requests_retried: u64,
}

/// Reads one open file.
pub trait Reader: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Attributes of the open file as the client knows them (no round trip).
    fn meta(&self) -> io::Result<Meta>;
    /// The ranges of `0..size` that hold data; holes are left out.
    fn data_segments(&self, size: u64) -> io::Result<Vec<Range<u64>>>;
    /// The open file, when it is one the kernel can copy from.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Writes one new file, created under a temporary name.
pub trait Writer: Send + Sync {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Copies `len` bytes at `offset` from `src` to the same offset, inside
    /// the kernel (no copy through user space; NFS 4.2 may copy on the
    /// server). `Unsupported` when this writer cannot.
    fn copy_from(&self, _src: BorrowedFd<'_>, _offset: u64, _len: usize) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn update(&self, update: &MetaUpdate) -> io::Result<()>;
    /// SHA-256 of `range` as the destination stores it, read back through
    /// this open file: on a network file system the data is first flushed
    /// and the client's cached copy dropped, so that the server answers the
    /// reads. `None`: this writer cannot read back, and verification reads
    /// the file after the transfer.
    fn read_back_digest(&self, _range: Range<u64>) -> Option<io::Result<[u8; 32]>> {
        None
    }
    /// Closes the file and reports what closing found (on NFS, write errors
    /// surface here).
    fn finish(self) -> io::Result<()>;
}

/// A change a location acknowledged before doing it (see
/// [`Location::defer_changes`]) that then failed.
#[derive(Debug)]
pub struct DeferredFailure {
    /// The entry's path from the location's root.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// What was being done, as the report says it.
    pub what: &'static str,
    pub error: io::Error,
}

/// A tree the engine can scan, read and write.
pub trait Location: Send + Sync + 'static {
    type Dir: Send + Sync + 'static;
    type Reader: Reader + 'static;
    type Writer: Writer + 'static;

    /// A human-readable name for messages.
    fn describe(&self) -> String;
    /// True when every operation is a network round trip (NFS, the hub):
    /// the engine then keeps many more operations in flight.
    fn is_remote(&self) -> bool;

    /// What this location can hold as a destination (a migration plan
    /// lists what it cannot); Linux's usual limits unless it knows better.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// The location's top directory. A remote location may ask for its
    /// listing in the same round trip: the next `list` of it then answers
    /// as it was at this call, with changes made through the location
    /// since (as after [`Location::prefetch_listings`]).
    fn root(&self) -> io::Result<Self::Dir>;
    fn open_dir(&self, parent: &Self::Dir, name: &OsStr) -> io::Result<Self::Dir>;
    /// All entries of a directory but `.` and `..`, in no particular order.
    fn list(&self, dir: &Self::Dir) -> io::Result<Vec<Entry>>;
    fn stat_dir(&self, dir: &Self::Dir) -> io::Result<Meta>;
    fn stat(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Meta>;
    /// [`Location::stat`] of several names of `dir`, in their order (a
    /// remote location asks for them all at once).
    fn stat_many(&self, dir: &Self::Dir, names: &[&OsStr]) -> Vec<io::Result<Meta>> {
        names.iter().map(|name| self.stat(dir, name)).collect()
    }
    /// Opens a regular file for its data; anything else (a symlink, a FIFO,
    /// a device) is refused without blocking and without reading it.
    fn open_file(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::Reader>;
    fn read_link(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<OsString>;

    fn make_dir(&self, parent: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<()>;
    /// Creates a file with its final mode (truncating a leftover of the same
    /// name, which must be a regular file: nothing else is opened).
    fn create_file(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<Self::Writer>;
    fn make_symlink(&self, dir: &Self::Dir, name: &OsStr, target: &OsStr) -> io::Result<()>;
    fn make_node(
        &self,
        dir: &Self::Dir,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        rdev: u64,
    ) -> io::Result<()>;
    fn hard_link(
        &self,
        from_dir: &Self::Dir,
        from: &OsStr,
        to_dir: &Self::Dir,
        to: &OsStr,
    ) -> io::Result<()>;
    /// Renames within one directory, replacing what `to` names (not a directory).
    fn rename(&self, dir: &Self::Dir, from: &OsStr, to: &OsStr) -> io::Result<()>;
    /// Removes one entry; a directory must be empty.
    fn remove(&self, dir: &Self::Dir, name: &OsStr, kind: Kind) -> io::Result<()>;
    /// Changes attributes of the entry `name` itself, never of what a
    /// symlink names: a symlink gets its owner and times, and no mode
    /// (Linux symlinks have none).
    fn update(&self, dir: &Self::Dir, name: &OsStr, update: &MetaUpdate) -> io::Result<()>;
    /// Changes attributes of an open directory.
    fn update_dir(&self, dir: &Self::Dir, update: &MetaUpdate) -> io::Result<()>;

    /// SHA-256 of a file's content computed where the file is (the hub),
    /// so that verification does not move the data again. `None`: this
    /// location has no such thing, and the engine reads the file.
    fn digest(&self, _dir: &Self::Dir, _name: &OsStr) -> Option<io::Result<[u8; 32]>> {
        None
    }

    /// From now on, changes (files written, attributes, renames, removals)
    /// may be acknowledged before they are done and their failures reported
    /// by [`Location::settle`]: a remote location then keeps them flowing
    /// instead of paying a round trip each. Reads still see every change
    /// made before them in the same directory. `open_dir` may then answer
    /// unchecked: a name that is not a directory fails the first operation
    /// in it instead. Off unless asked.
    fn defer_changes(&self) {}

    /// Waits until the changes made in `dir` (its entries, and the
    /// directories made in it) are done; their failures are still
    /// [`Location::settle`]'s to report.
    fn wait_settled(&self, _dir: &Self::Dir) {}

    /// Waits until every change is done; the deferred ones that failed.
    fn settle(&self) -> Vec<DeferredFailure> {
        Vec::new()
    }

    /// A hint: these subdirectories of `dir` are about to be listed (a
    /// scan); a remote location asks for their listings all at once.
    fn prefetch_listings(&self, _dir: &Self::Dir, _names: &[&OsStr]) {}

    /// A hint: the digests of these files of `dir` are about to be asked
    /// for (verification); a remote location asks for them all at once.
    fn prefetch_digests(&self, _dir: &Self::Dir, _names: &[&OsStr]) {}

    /// A hint: from now on, the digests of a directory's files will be
    /// asked for after each listing (verification); a remote location
    /// lists with the digests it knows, in the same round trip.
    fn list_with_digests(&self) {}

    /// What the wire to a remote location cost.
    fn wire_counters(&self) -> WireCounters {
        WireCounters::default()
    }
}
