// SPDX-License-Identifier: MIT
//! A POSIX directory tree: a local disk or a mounted NFS export.
//!
//! Every operation is one system call relative to an open directory, so a
//! sync over NFS costs the fewest round trips the semantics allow and paths
//! longer than `PATH_MAX` work. No operation on a name follows a symlink
//! (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, or an `O_PATH` handle on the name
//! itself), and data goes only to and from regular files: an open for data
//! cannot block on a FIFO, and whatever is not a regular file is closed
//! before a byte moves.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, StatxFlags, Timespec};
use sha2::{Digest, Sha256};

use super::{Entry, Kind, Limits, Location, Meta, MetaUpdate, Reader, Timestamp, Writer};

/// `statfs` magic numbers of file systems where every call is a network round trip.
const NFS_SUPER_MAGIC: i64 = 0x6969;
const SMB2_SUPER_MAGIC: i64 = 0xFE53_4D42;
const CIFS_SUPER_MAGIC: i64 = 0xFF53_4D42;

/// What a location refuses that the kernel would not.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{name} is a {}, not a regular file", .kind.noun())]
    NotRegular { name: String, kind: Kind },
    #[error(
        "cannot change the mode of {name} without following a link: {source} \
         (fchmodat2 needs Linux 6.6; before it, /proc must be mounted)"
    )]
    NoChmod {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl From<LocalError> for io::Error {
    fn from(e: LocalError) -> Self {
        io::Error::other(e)
    }
}

/// A name is one name: not empty, `.` or `..`, without `/` (so not an
/// absolute path) or NUL. The engine only passes names it listed; this
/// keeps any other caller (the hub, a fuzzer) inside the location.
fn one(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not a file name: {} (empty, `.`, `..`, or with `/` or NUL)",
                display(name)
            ),
        ));
    }
    Ok(name)
}

fn display(name: &OsStr) -> String {
    format!("{:?}", name.to_string_lossy())
}

/// A directory on a mounted file system.
#[derive(Debug)]
pub struct LocalLocation {
    root: PathBuf,
    remote: bool,
    /// The largest file the file system takes, when the caller knows it
    /// (EFS's): statvfs does not say.
    file_size_max: Option<u64>,
}

/// Stats in flight for the listings of network locations (see `list`).
const STAT_THREADS: usize = 16;

/// The threads that stat the entries of a listing at once, made at the
/// first listing of a network location.
fn stat_pool() -> io::Result<&'static rayon::ThreadPool> {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(STAT_THREADS)
        .thread_name(|i| format!("ferry-stat-{i}"))
        .build()
        .map_err(io::Error::other)?;
    Ok(POOL.get_or_init(|| pool))
}

impl LocalLocation {
    /// Opens `root`, which must be a directory.
    pub fn open(root: &Path) -> io::Result<Self> {
        let fd = open_dir_path(root)?;
        let fs = rfs::fstatfs(&fd)?;
        #[allow(clippy::unnecessary_cast)]
        let magic = fs.f_type as i64;
        let remote = matches!(magic, NFS_SUPER_MAGIC | SMB2_SUPER_MAGIC | CIFS_SUPER_MAGIC);
        Ok(Self {
            root: root.to_path_buf(),
            remote,
            file_size_max: None,
        })
    }

    /// The same location, known to take files of `max` bytes at most.
    pub fn with_file_size_max(self, max: Option<u64>) -> Self {
        Self {
            file_size_max: max,
            ..self
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens an existing file of `dir` for writing, without truncating it
    /// (the hub writes the chunks of one file in separate requests).
    pub fn open_write(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<LocalWriter> {
        let fd = open_regular(dir, name, OFlags::WRONLY, Mode::empty())?;
        Ok(LocalWriter {
            file: File::from(fd),
            remote: self.remote,
        })
    }
}

fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `name` for its data, which only a regular file has. `O_NOFOLLOW`:
/// not through a symlink; `O_NONBLOCK`: a FIFO (or a device waiting for
/// carrier) cannot hold the thread in `open`; `O_NOCTTY`: a terminal does
/// not become ours. Anything but a regular file is closed unread. An
/// `O_TRUNC` in `flags` is safe: Linux truncates only regular files.
fn open_regular(dir: &OwnedFd, name: &OsStr, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let name = one(name)?;
    let extra = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags | extra, mode) {
        Ok(fd) => fd,
        // A FIFO without a reader (for writing) or a socket: say what it is.
        Err(rustix::io::Errno::NXIO) => {
            return Err(match statx_at(dir, name) {
                Ok(meta) if meta.kind != Kind::File => LocalError::NotRegular {
                    name: display(name),
                    kind: meta.kind,
                }
                .into(),
                _ => rustix::io::Errno::NXIO.into(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    // The type of an inode never changes: the attributes the open brought
    // will do (no round trip on NFS).
    let st = rfs::statx(
        &fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::TYPE,
    )?;
    let kind = kind_of(u32::from(st.stx_mode));
    if kind != Kind::File {
        return Err(LocalError::NotRegular {
            name: display(name),
            kind,
        }
        .into());
    }
    // Regular files ignore it, but the descriptor goes on to other calls
    // (copy_file_range, NFS): as an ordinary blocking file.
    rfs::fcntl_setfl(&fd, rfs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
    Ok(fd)
}

/// False once `fchmodat2` answered ENOSYS (Linux before 6.6).
static HAVE_FCHMODAT2: AtomicBool = AtomicBool::new(true);

/// Changes the mode of what `handle` (an `O_PATH` descriptor, never a
/// symlink) names. Linux's `fchmodat` has no `AT_SYMLINK_NOFOLLOW` and
/// `fchmod` refuses `O_PATH` descriptors, so: `fchmodat2(handle, "",
/// AT_EMPTY_PATH)` where the kernel has it (6.6), else `chmod` of
/// `/proc/self/fd/N`, which reaches the inode the descriptor holds without
/// looking any name up again (what glibc's `lchmod` does).
fn chmod_handle(handle: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let result = if HAVE_FCHMODAT2.load(Ordering::Relaxed) {
        match chmod_fchmodat2(handle, mode) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                HAVE_FCHMODAT2.store(false, Ordering::Relaxed);
                chmod_proc(handle, mode)
            }
            other => other,
        }
    } else {
        chmod_proc(handle, mode)
    };
    result.map_err(|source| match source.raw_os_error() {
        // No /proc, or a kernel refusing both ways: say why.
        Some(libc::ENOENT | libc::ENOSYS) => LocalError::NoChmod {
            name: display(name),
            source,
        }
        .into(),
        _ => source,
    })
}

fn chmod_fchmodat2(handle: &OwnedFd, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor, a NUL-terminated empty path, plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            handle.as_raw_fd(),
            c"".as_ptr(),
            mode as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn chmod_proc(handle: &OwnedFd, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    Ok(rfs::chmod(path.as_str(), Mode::from_raw_mode(mode))?)
}

fn timestamp(t: rfs::StatxTimestamp) -> Timestamp {
    Timestamp {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    }
}

fn kind_of(mode: u32) -> Kind {
    match FileType::from_raw_mode(mode) {
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::CharacterDevice => Kind::CharDevice,
        FileType::BlockDevice => Kind::BlockDevice,
        FileType::Socket => Kind::Socket,
        _ => Kind::File,
    }
}

fn meta_of(st: &rfs::Statx) -> Meta {
    let mode = u32::from(st.stx_mode);
    Meta {
        kind: kind_of(mode),
        mode: mode & 0o7777,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        blocks: st.stx_blocks,
        nlink: u64::from(st.stx_nlink),
        dev: rfs::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        rdev: rfs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        atime: timestamp(st.stx_atime),
        mtime: timestamp(st.stx_mtime),
        ctime: timestamp(st.stx_ctime),
    }
}

const STATX_WANTED: StatxFlags = StatxFlags::BASIC_STATS;

fn statx_at(dir: impl AsFd, name: &OsStr) -> io::Result<Meta> {
    let st = rfs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, STATX_WANTED)?;
    Ok(meta_of(&st))
}

fn statx_fd(fd: impl AsFd) -> io::Result<Meta> {
    let st = rfs::statx(fd, "", AtFlags::EMPTY_PATH, STATX_WANTED)?;
    Ok(meta_of(&st))
}

fn timespec(t: Option<Timestamp>) -> Timespec {
    match t {
        Some(t) => Timespec {
            tv_sec: t.sec,
            tv_nsec: t.nsec.into(),
        },
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
    }
}

fn timestamps(update: &MetaUpdate) -> Option<rfs::Timestamps> {
    if update.atime.is_none() && update.mtime.is_none() {
        return None;
    }
    Some(rfs::Timestamps {
        last_access: timespec(update.atime),
        last_modification: timespec(update.mtime),
    })
}

fn owner(update: &MetaUpdate) -> Option<(Option<rfs::Uid>, Option<rfs::Gid>)> {
    if update.uid.is_none() && update.gid.is_none() {
        return None;
    }
    Some((
        update.uid.map(rfs::Uid::from_raw),
        update.gid.map(rfs::Gid::from_raw),
    ))
}

/// Applies an update to an open file: owner first (it clears set-id bits),
/// then the mode, then the times.
fn update_fd(fd: impl AsFd, update: &MetaUpdate) -> io::Result<()> {
    let fd = fd.as_fd();
    if let Some((uid, gid)) = owner(update) {
        rfs::fchown(fd, uid, gid)?;
    }
    if let Some(mode) = update.mode {
        rfs::fchmod(fd, Mode::from_raw_mode(mode))?;
    }
    if let Some(times) = timestamps(update) {
        rfs::futimens(fd, &times)?;
    }
    Ok(())
}

impl Location for LocalLocation {
    type Dir = OwnedFd;
    type Reader = LocalReader;
    type Writer = LocalWriter;

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn is_remote(&self) -> bool {
        self.remote
    }

    fn limits(&self) -> Limits {
        let name_max = rustix::fs::statvfs(&self.root)
            .ok()
            .and_then(|s| usize::try_from(s.f_namemax).ok())
            .filter(|n| *n > 0)
            .unwrap_or(255);
        Limits {
            name_max,
            // Only root gives files to others (CAP_CHOWN).
            can_chown: rustix::process::geteuid().is_root(),
            file_size_max: self.file_size_max,
            ..Limits::default()
        }
    }

    fn root(&self) -> io::Result<OwnedFd> {
        open_dir_path(&self.root)
    }

    fn open_dir(&self, parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
        Ok(rfs::openat(
            parent,
            one(name)?,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    fn list(&self, dir: &OwnedFd) -> io::Result<Vec<Entry>> {
        // A duplicate descriptor: reading the directory moves its offset.
        let mut reader = rfs::Dir::new(rustix::io::dup(dir)?)?;
        reader.rewind();
        let mut names = Vec::new();
        while let Some(item) = reader.read() {
            let item = item?;
            let name = item.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        let stat = |name: OsString| match statx_at(dir, &name) {
            Ok(meta) => Ok(Some(Entry { name, meta })),
            // Removed between the listing and the stat: it is not there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        // On NFS a stat is a GETATTR round trip whenever the attributes the
        // listing brought are not fresh (entries this client wrote, listed
        // again by verification): many at once, not one after the other.
        let entries: Vec<Option<Entry>> = if self.remote && names.len() > 1 {
            stat_pool()?.install(|| names.into_par_iter().map(stat).collect::<io::Result<_>>())?
        } else {
            names.into_iter().map(stat).collect::<io::Result<_>>()?
        };
        Ok(entries.into_iter().flatten().collect())
    }

    fn stat_dir(&self, dir: &OwnedFd) -> io::Result<Meta> {
        statx_fd(dir)
    }

    fn stat(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<Meta> {
        statx_at(dir, one(name)?)
    }

    fn open_file(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<LocalReader> {
        let flags = OFlags::RDONLY;
        // O_NOATIME keeps the source's access times, but only the owner (or
        // CAP_FOWNER) may ask for it.
        let fd = match open_regular(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                open_regular(dir, name, flags, Mode::empty())?
            }
            other => other?,
        };
        Ok(LocalReader(File::from(fd)))
    }

    fn read_link(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OsString> {
        // readlinkat reads the link itself (EINVAL for anything else).
        let target = rfs::readlinkat(dir, one(name)?, Vec::new())?;
        Ok(OsString::from_vec(target.into_bytes()))
    }

    fn make_dir(&self, parent: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
        // mkdirat never follows: an existing name, symlink or not, is EEXIST.
        Ok(rfs::mkdirat(parent, one(name)?, Mode::from_raw_mode(mode))?)
    }

    fn create_file(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<LocalWriter> {
        let fd = open_regular(
            dir,
            name,
            // Not O_EXCL: on NFSv4 an exclusive create costs a SETATTR more,
            // and temporary names are unique per run and cleaned at the scan.
            // A leftover that is not a regular file is refused, not opened
            // for data. Read and write: verification reads the data back
            // through it.
            OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(LocalWriter {
            file: File::from(fd),
            remote: self.remote,
        })
    }

    fn make_symlink(&self, dir: &OwnedFd, name: &OsStr, target: &OsStr) -> io::Result<()> {
        Ok(rfs::symlinkat(target, dir, one(name)?)?)
    }

    fn make_node(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        rdev: u64,
    ) -> io::Result<()> {
        let file_type = match kind {
            Kind::Fifo => FileType::Fifo,
            Kind::CharDevice => FileType::CharacterDevice,
            Kind::BlockDevice => FileType::BlockDevice,
            Kind::Socket => FileType::Socket,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("mknod cannot make a {other:?}"),
                ))
            }
        };
        Ok(rfs::mknodat(
            dir,
            one(name)?,
            file_type,
            Mode::from_raw_mode(mode),
            rdev,
        )?)
    }

    fn hard_link(
        &self,
        from_dir: &OwnedFd,
        from: &OsStr,
        to_dir: &OwnedFd,
        to: &OsStr,
    ) -> io::Result<()> {
        // Without AT_SYMLINK_FOLLOW: a symlink `from` is linked itself.
        Ok(rfs::linkat(
            from_dir,
            one(from)?,
            to_dir,
            one(to)?,
            AtFlags::empty(),
        )?)
    }

    fn rename(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        // renameat and unlinkat act on names, never on what a symlink names.
        Ok(rfs::renameat(dir, one(from)?, dir, one(to)?)?)
    }

    fn remove(&self, dir: &OwnedFd, name: &OsStr, kind: Kind) -> io::Result<()> {
        let flags = if kind == Kind::Dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        Ok(rfs::unlinkat(dir, one(name)?, flags)?)
    }

    fn update(&self, dir: &OwnedFd, name: &OsStr, update: &MetaUpdate) -> io::Result<()> {
        if update.is_empty() {
            return Ok(());
        }
        // One handle on the entry itself (O_PATH opens anything, a symlink
        // included, without reading it or following it): every change
        // below goes to that inode, whatever the name comes to mean meanwhile.
        let handle = rfs::openat(
            dir,
            one(name)?,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // fchownat and (since Linux 5.8) utimensat take AT_EMPTY_PATH: the
        // handle's inode, even an O_PATH one on a symlink.
        let here = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
        // Owner first: a chown clears set-id bits, which the mode puts back.
        if let Some((uid, gid)) = owner(update) {
            rfs::chownat(&handle, "", uid, gid, here)?;
        }
        if let Some(mode) = update.mode {
            let st = rfs::statx(
                &handle,
                "",
                AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
                StatxFlags::TYPE,
            )?;
            // A symlink has no mode of its own on Linux: a chmod of one
            // would change what it names, so none is made.
            if kind_of(u32::from(st.stx_mode)) != Kind::Symlink {
                chmod_handle(&handle, name, mode)?;
            }
        }
        if let Some(times) = timestamps(update) {
            rfs::utimensat(&handle, "", &times, here)?;
        }
        Ok(())
    }

    fn update_dir(&self, dir: &OwnedFd, update: &MetaUpdate) -> io::Result<()> {
        update_fd(dir, update)
    }
}

/// An open source file.
#[derive(Debug)]
pub struct LocalReader(File);

impl Reader for LocalReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn meta(&self) -> io::Result<Meta> {
        // What the client already knows: no round trip on NFS, where the
        // attributes come with the open and the reads.
        let st = rfs::statx(
            &self.0,
            "",
            AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
            STATX_WANTED,
        )?;
        Ok(meta_of(&st))
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0.as_fd())
    }

    fn data_segments(&self, size: u64) -> io::Result<Vec<Range<u64>>> {
        let mut segments = Vec::new();
        let mut offset = 0;
        while offset < size {
            let start = match rfs::seek(&self.0, rfs::SeekFrom::Data(offset)) {
                Ok(start) => start,
                // No data after `offset`: the rest is a hole.
                Err(rustix::io::Errno::NXIO) => break,
                // SEEK_DATA unsupported: all of it is data.
                Err(rustix::io::Errno::INVAL) if offset == 0 => {
                    let all = 0..size;
                    return Ok(vec![all]);
                }
                Err(e) => return Err(e.into()),
            };
            if start >= size {
                break;
            }
            let end = match rfs::seek(&self.0, rfs::SeekFrom::Hole(start)) {
                Ok(end) => end.min(size),
                Err(rustix::io::Errno::NXIO) => size,
                Err(e) => return Err(e.into()),
            };
            segments.push(start..end);
            offset = end;
        }
        Ok(segments)
    }
}

/// A new destination file under its temporary name.
#[derive(Debug)]
pub struct LocalWriter {
    file: File,
    /// On a network file system: reading back must bypass the client's cache.
    remote: bool,
}

impl Writer for LocalWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    fn copy_from(&self, src: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<usize> {
        let (mut off_in, mut off_out) = (offset, offset);
        Ok(rfs::copy_file_range(
            src,
            Some(&mut off_in),
            &self.file,
            Some(&mut off_out),
            len,
        )?)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        Ok(rfs::ftruncate(&self.file, len)?)
    }

    fn update(&self, update: &MetaUpdate) -> io::Result<()> {
        update_fd(&self.file, update)
    }

    fn read_back_digest(&self, range: Range<u64>) -> Option<io::Result<[u8; 32]>> {
        let read_back = || -> io::Result<[u8; 32]> {
            if self.remote {
                // The data goes to the server and is committed there (the
                // close would flush it anyway), and the now clean cached
                // pages are dropped: the reads below are answered by the server.
                rfs::fdatasync(&self.file)?;
                let len = NonZeroU64::new(range.end - range.start);
                rfs::fadvise(&self.file, range.start, len, rfs::Advice::DontNeed)?;
            }
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; (range.end - range.start).clamp(1, 1 << 20) as usize];
            let mut offset = range.start;
            while offset < range.end {
                let want = (range.end - offset).min(buf.len() as u64) as usize;
                let got = self.file.read_at(&mut buf[..want], offset)?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file ends at {offset} bytes, {} were written",
                            range.end
                        ),
                    ));
                }
                hasher.update(&buf[..got]);
                offset += got as u64;
            }
            Ok(hasher.finalize().into())
        };
        Some(read_back())
    }

    fn finish(self) -> io::Result<()> {
        let fd = self.file.into_raw_fd();
        // SAFETY: `fd` was just released by the File and is closed exactly once.
        if unsafe { libc::close(fd) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn outside_file(dir: &Path) -> (PathBuf, std::fs::Metadata) {
        let target = dir.join("outside");
        std::fs::write(&target, b"not the location's").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let t = rfs::Timestamps {
            last_access: Timespec {
                tv_sec: 123_456,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: 654_321,
                tv_nsec: 0,
            },
        };
        rfs::utimensat(rfs::CWD, &target, &t, AtFlags::empty()).unwrap();
        let meta = std::fs::metadata(&target).unwrap();
        (target, meta)
    }

    fn assert_unchanged(path: &Path, before: &std::fs::Metadata) {
        let after = std::fs::metadata(path).unwrap();
        assert_eq!(after.mode(), before.mode(), "mode of {path:?}");
        assert_eq!(after.uid(), before.uid(), "owner of {path:?}");
        assert_eq!(after.gid(), before.gid(), "group of {path:?}");
        assert_eq!(after.mtime(), before.mtime(), "mtime of {path:?}");
        assert_eq!(after.atime(), before.atime(), "atime of {path:?}");
    }

    #[test]
    fn update_changes_a_symlink_never_what_it_names() {
        let outside = tempfile::tempdir().unwrap();
        let (target, before) = outside_file(outside.path());
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let loc = LocalLocation::open(dir.path()).unwrap();
        let root = loc.root().unwrap();
        // Only root may give a file away.
        let owner = rustix::process::geteuid().is_root().then_some(4321);
        let update = MetaUpdate {
            uid: owner,
            gid: owner,
            mode: Some(0o4777),
            atime: Some(Timestamp { sec: 1, nsec: 0 }),
            mtime: Some(Timestamp { sec: 2, nsec: 0 }),
        };
        loc.update(&root, OsStr::new("link"), &update).unwrap();
        assert_unchanged(&target, &before);
        let link = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert!(link.file_type().is_symlink());
        assert_eq!(link.mtime(), 2);
        if let Some(owner) = owner {
            assert_eq!((link.uid(), link.gid()), (owner, owner));
        }
        // Each attribute alone, too.
        for update in [
            MetaUpdate {
                mode: Some(0o777),
                ..MetaUpdate::default()
            },
            MetaUpdate {
                uid: owner,
                ..MetaUpdate::default()
            },
            MetaUpdate {
                mtime: Some(Timestamp { sec: 5, nsec: 0 }),
                ..MetaUpdate::default()
            },
        ] {
            loc.update(&root, OsStr::new("link"), &update).unwrap();
            assert_unchanged(&target, &before);
        }
    }

    #[test]
    fn update_sets_the_mode_of_files_and_directories_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let loc = LocalLocation::open(dir.path()).unwrap();
        let root = loc.root().unwrap();
        let mode = |name: &str| {
            std::fs::symlink_metadata(dir.path().join(name))
                .unwrap()
                .mode()
                & 0o7777
        };
        let update = MetaUpdate {
            mode: Some(0o4751),
            ..MetaUpdate::default()
        };
        loc.update(&root, OsStr::new("f"), &update).unwrap();
        assert_eq!(mode("f"), 0o4751);
        let update = MetaUpdate {
            mode: Some(0o1777),
            ..MetaUpdate::default()
        };
        loc.update(&root, OsStr::new("d"), &update).unwrap();
        assert_eq!(mode("d"), 0o1777);
        // Both ways of changing a mode through a handle: fchmodat2 where
        // the kernel has it (6.6), /proc/self/fd/N before.
        let handle = |name: &str| {
            rfs::openat(
                &root,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap()
        };
        chmod_proc(&handle("f"), 0o600).unwrap();
        assert_eq!(mode("f"), 0o600);
        chmod_proc(&handle("d"), 0o700).unwrap();
        assert_eq!(mode("d"), 0o700);
        match chmod_fchmodat2(&handle("f"), 0o640) {
            Ok(()) => assert_eq!(mode("f"), 0o640),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSYS), "{e}"),
        }
        // A name that is gone is named as such.
        let err = loc.update(&root, OsStr::new("gone"), &update).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn data_is_opened_only_in_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let (target, before) = outside_file(outside.path());
        let loc = LocalLocation::open(dir.path()).unwrap();
        rfs::mknodat(
            loc.root().unwrap(),
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        // On a thread: an open that blocks on the FIFO fails the test by
        // name instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let loc = LocalLocation::open(&path).unwrap();
            let root = loc.root().unwrap();
            let name = OsStr::new("fifo");
            let results = [
                ("open_file", loc.open_file(&root, name).map(drop)),
                ("open_write", loc.open_write(&root, name).map(drop)),
                ("create_file", loc.create_file(&root, name, 0o600).map(drop)),
            ];
            for r in results {
                tx.send(r).unwrap();
            }
        });
        for _ in 0..3 {
            let (what, r) = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("an open blocked on a FIFO");
            let err = r.expect_err(what);
            assert_eq!(
                err.to_string(),
                "\"fifo\" is a FIFO, not a regular file",
                "{what}"
            );
        }
        let root = loc.root().unwrap();
        let err = loc.open_file(&root, OsStr::new("d")).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        // A symlink is not opened through, even to create over it.
        for r in [
            loc.open_file(&root, OsStr::new("link")).map(drop),
            loc.open_write(&root, OsStr::new("link")).map(drop),
            loc.create_file(&root, OsStr::new("link"), 0o600).map(drop),
        ] {
            assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ELOOP));
        }
        assert_unchanged(&target, &before);
        assert_eq!(std::fs::read(&target).unwrap(), b"not the location's");
        if rustix::process::geteuid().is_root() {
            // A device node (/dev/null's numbers) is neither truncated nor written.
            rfs::mknodat(
                &root,
                "null",
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rfs::makedev(1, 3),
            )
            .unwrap();
            let err = loc
                .create_file(&root, OsStr::new("null"), 0o600)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "\"null\" is a character device, not a regular file"
            );
        }
        // A leftover regular file is still truncated and written.
        std::fs::write(dir.path().join("f"), b"leftover").unwrap();
        let w = loc.create_file(&root, OsStr::new("f"), 0o600).unwrap();
        w.write_at(b"new", 0).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
        let r = loc.open_file(&root, OsStr::new("f")).unwrap();
        let flags = rfs::fcntl_getfl(r.fd().unwrap()).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK));
    }

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn read_back_digest_reads_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let loc = LocalLocation::open(dir.path()).unwrap();
        let root = loc.root().unwrap();
        let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let writer = loc.create_file(&root, OsStr::new("f"), 0o400).unwrap();
        writer.write_at(&data, 0).unwrap();
        // Readable through the writer although the mode is read-only for the owner.
        let all = 0..data.len() as u64;
        let read = writer.read_back_digest(all.clone()).unwrap().unwrap();
        assert_eq!(read, sha256(&data));
        let part = writer.read_back_digest(1000..(2 << 20)).unwrap().unwrap();
        assert_eq!(part, sha256(&data[1000..2 << 20]));

        // Another writer changes a byte: the read-back sees the file, not
        // what this writer sent.
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f"));
        if let Ok(other) = other {
            other.write_at(b"X", 1 << 20).unwrap();
            let read = writer.read_back_digest(all.clone()).unwrap().unwrap();
            assert_ne!(read, sha256(&data));
        }
        // A file shorter than what was written is named as such.
        writer.set_len(10).unwrap();
        let err = writer.read_back_digest(all).unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("ends at 10 bytes"), "{err}");
        writer.finish().unwrap();
    }
}
