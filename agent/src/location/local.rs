//! A POSIX directory tree: a local disk or a mounted NFS export.
//!
//! Every operation is one system call relative to an open directory, so a
//! sync over NFS costs the fewest round trips the semantics allow and paths
//! longer than `PATH_MAX` work.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rayon::prelude::*;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, StatxFlags, Timespec};
use sha2::{Digest, Sha256};

use super::{Entry, Kind, Location, Meta, MetaUpdate, Reader, Timestamp, Writer};

/// `statfs` magic numbers of file systems where every call is a network round trip.
const NFS_SUPER_MAGIC: i64 = 0x6969;
const SMB2_SUPER_MAGIC: i64 = 0xFE53_4D42;
const CIFS_SUPER_MAGIC: i64 = 0xFF53_4D42;

/// A directory on a mounted file system.
#[derive(Debug)]
pub struct LocalLocation {
    root: PathBuf,
    remote: bool,
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens an existing file of `dir` for writing, without truncating it
    /// (the hub writes the chunks of one file in separate requests).
    pub fn open_write(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<LocalWriter> {
        let fd = rfs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
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

    fn root(&self) -> io::Result<OwnedFd> {
        open_dir_path(&self.root)
    }

    fn open_dir(&self, parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
        Ok(rfs::openat(
            parent,
            name,
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
        statx_at(dir, name)
    }

    fn open_file(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<LocalReader> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // O_NOATIME keeps the source's access times, but only the owner (or
        // CAP_FOWNER) may ask for it.
        let fd = match rfs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => rfs::openat(dir, name, flags, Mode::empty())?,
            other => other?,
        };
        Ok(LocalReader(File::from(fd)))
    }

    fn read_link(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OsString> {
        let target = rfs::readlinkat(dir, name, Vec::new())?;
        Ok(OsString::from_vec(target.into_bytes()))
    }

    fn make_dir(&self, parent: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
        Ok(rfs::mkdirat(parent, name, Mode::from_raw_mode(mode))?)
    }

    fn create_file(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<LocalWriter> {
        let fd = rfs::openat(
            dir,
            name,
            // Not O_EXCL: on NFSv4 an exclusive create costs a SETATTR more,
            // and temporary names are unique per run and cleaned at the scan.
            // Read and write: verification reads the data back through it.
            OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(LocalWriter {
            file: File::from(fd),
            remote: self.remote,
        })
    }

    fn make_symlink(&self, dir: &OwnedFd, name: &OsStr, target: &OsStr) -> io::Result<()> {
        Ok(rfs::symlinkat(target, dir, name)?)
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
            name,
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
        Ok(rfs::linkat(from_dir, from, to_dir, to, AtFlags::empty())?)
    }

    fn rename(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        Ok(rfs::renameat(dir, from, dir, to)?)
    }

    fn remove(&self, dir: &OwnedFd, name: &OsStr, kind: Kind) -> io::Result<()> {
        let flags = if kind == Kind::Dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        Ok(rfs::unlinkat(dir, name, flags)?)
    }

    fn update(&self, dir: &OwnedFd, name: &OsStr, update: &MetaUpdate) -> io::Result<()> {
        if let Some((uid, gid)) = owner(update) {
            rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        if let Some(mode) = update.mode {
            rfs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
        }
        if let Some(times) = timestamps(update) {
            rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
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
    use super::*;

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
