// SPDX-License-Identifier: MIT
//! Data: a regular file copied whole or as ranges by several workers (in
//! the kernel, or through user space and read back as it is written), then
//! given its attributes and renamed into place; symlinks and special files
//! made under a temporary name and renamed.

use std::cell::RefCell;
use std::ffi::OsString;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use super::{DirNode, EntryJob, Failure, Job, Transfer};
use crate::child_path;
use crate::counters::Counters;
use crate::location::{Kind, Location, Meta, Reader, Writer};
use crate::options::VerifyMode;
use crate::plan::{self, changed};
use crate::report::{Outcome, Phase, Record};
use crate::sched::Slot;

/// Files at least this large are copied as ranges by several workers.
pub(super) const SPLIT_THRESHOLD: u64 = 32 << 20;
/// The size of one range of a large file.
const RANGE_SIZE: u64 = 8 << 20;
/// The copy buffer of each worker.
const BUFFER_SIZE: usize = 1 << 20;
/// When verifying, every range of every file that is not sparse is copied
/// through user space, hashed and read back from the destination as soon
/// as it is written, so the verification phase reads neither side again;
/// otherwise data is copied inside the kernel. Files up to this size, copied
/// as one range, also keep that range's hash as the source's: a destination
/// that cannot be read back (the hub) then hashes only its own copy.
const HASH_WHILE_COPYING_MAX: u64 = 1 << 20;
/// One in-kernel copy call at most: a cancel is noticed between calls.
const KERNEL_COPY_CHUNK: usize = 8 << 20;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
/// A regular file being copied, by one worker or as ranges by several.
pub(super) struct FileCopy<S: Location, D: Location> {
    dir: Arc<DirNode<S, D>>,
    name: OsString,
    tmp: OsString,
    src: Meta,
    reader: S::Reader,
    writer: RwLock<Option<D::Writer>>,
    ranges_left: AtomicUsize,
    failure: Mutex<Option<(&'static str, io::Error)>>,
    /// Whether the data ends in a hole, so the length must be set.
    ends_in_hole: bool,
    /// Written under its final name (inside a staged directory).
    direct: bool,
    /// SHA-256 of the whole source, from its one range (files up to
    /// `HASH_WHILE_COPYING_MAX`): verification then reads only the destination.
    source_digest: Mutex<Option<[u8; 32]>>,
    /// Each range is read back from the destination once written, and
    /// compared with the source bytes it was written from.
    read_back: bool,
    /// Ranges to copy, and those read back equal.
    ranges: usize,
    ranges_read_back: AtomicUsize,
}
impl<S: Location, D: Location> Transfer<'_, S, D> {
    /// One range of a large file, by one of several workers; the last one
    /// done finishes the file.
    pub(super) fn range(&self, copy: Arc<FileCopy<S, D>>, range: Range<u64>) {
        if !self.ctx.cancelled() && copy.failure.lock().unwrap().is_none() {
            if let Err(f) = self.copy_range(&copy, range) {
                copy.failure.lock().unwrap().get_or_insert(f);
            }
        }
        if copy.ranges_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish_file(copy);
        }
    }

    /// Makes a symlink or special file under a temporary name, then renames it.
    pub(super) fn make_other(&self, job: EntryJob<S, D>) {
        let ctx = self.ctx;
        let path = child_path(&job.dir.rel, &job.name);
        let direct = self.clear_for_direct(&job);
        let tmp = if direct {
            job.name.clone()
        } else {
            ctx.temp_name()
        };
        let result = (|| -> Result<(), Failure> {
            match job.src.kind {
                Kind::Symlink => {
                    let target = ctx
                        .src
                        .read_link(&job.dir.src, &job.name)
                        .map_err(|e| ("read symlink", e))?;
                    ctx.dst
                        .make_symlink(&job.dir.dst, &tmp, &target)
                        .map_err(|e| ("create symlink", e))?;
                }
                kind => ctx
                    .dst
                    .make_node(
                        &job.dir.dst,
                        &tmp,
                        kind,
                        plan::create_mode(&job.src, &ctx.opts),
                        job.src.rdev,
                    )
                    .map_err(|e| ("create special file", e))?,
            }
            let update = plan::creation_update(&job.src, &ctx.opts, ctx.creator, job.dir.setgid);
            let renamed = ctx
                .dst
                .update(&job.dir.dst, &tmp, &update)
                .map_err(|e| ("set attributes", e))
                .and_then(|_| match direct {
                    true => Ok(()),
                    false => ctx
                        .dst
                        .rename(&job.dir.dst, &tmp, &job.name)
                        .map_err(|e| ("rename into place", e)),
                });
            if renamed.is_err() {
                let _ = ctx.dst.remove(&job.dir.dst, &tmp, job.src.kind);
            }
            renamed
        })();
        let target = match result {
            Ok(()) => {
                job.dir.modified.store(true, Ordering::Relaxed);
                ctx.transferred(&path, job.src.kind, 0);
                self.link_target(&job.dir, &job.name, &job.src)
            }
            Err((what, e)) => {
                ctx.fail(Phase::Transferring, &path, job.src.kind, what, &e);
                None
            }
        };
        self.settle_group(&job.src, target);
        self.release(job.dir);
    }

    /// Whether `job` is written under its final name (inside a staged
    /// directory); if so, clears what an interrupted run left at that name
    /// unless it is a regular file, which the create truncates.
    pub(super) fn clear_for_direct(&self, job: &EntryJob<S, D>) -> bool {
        if !job.dir.hidden {
            return false;
        }
        if let Some(d) = &job.dst {
            if d.kind != Kind::Dir && (d.kind != Kind::File || job.src.kind != Kind::File) {
                let _ = self.ctx.dst.remove(&job.dir.dst, &job.name, d.kind);
            } else if d.kind == Kind::File && job.src.nlink > 1 {
                // Do not truncate through a hard link.
                let _ = self.ctx.dst.remove(&job.dir.dst, &job.name, d.kind);
            }
        }
        true
    }

    /// Opens both ends of a file copy and copies it, or queues its ranges.
    pub(super) fn start_file(&self, job: EntryJob<S, D>) {
        let ctx = self.ctx;
        let path = child_path(&job.dir.rel, &job.name);
        let opened = (|| -> Result<FileCopy<S, D>, Failure> {
            let reader = ctx
                .src
                .open_file(&job.dir.src, &job.name)
                .map_err(|e| ("open source file", e))?;
            let mode = plan::create_mode(&job.src, &ctx.opts);
            let direct = self.clear_for_direct(&job);
            let tmp = if direct {
                job.name.clone()
            } else {
                ctx.temp_name()
            };
            let writer = ctx
                .dst
                .create_file(&job.dir.dst, &tmp, mode)
                .map_err(|e| ("create destination file", e))?;
            Ok(FileCopy {
                dir: job.dir.clone(),
                name: job.name.clone(),
                tmp,
                src: job.src.clone(),
                reader,
                writer: RwLock::new(Some(writer)),
                ranges_left: AtomicUsize::new(0),
                failure: Mutex::new(None),
                ends_in_hole: false,
                direct,
                source_digest: Mutex::new(None),
                read_back: ctx.opts.verify_mode != VerifyMode::None && !job.src.looks_sparse(),
                ranges: 0,
                ranges_read_back: AtomicUsize::new(0),
            })
        })();
        let mut copy = match opened {
            Ok(copy) => copy,
            Err((what, e)) => {
                ctx.fail(Phase::Transferring, &path, Kind::File, what, &e);
                self.settle_group(&job.src, None);
                return self.release(job.dir);
            }
        };
        let segments = if job.src.looks_sparse() {
            match copy.reader.data_segments(job.src.size) {
                Ok(s) => s,
                Err(e) => {
                    copy.failure
                        .lock()
                        .unwrap()
                        .get_or_insert(("find holes", e));
                    Vec::new()
                }
            }
        } else if job.src.size > 0 {
            let all = 0..job.src.size;
            vec![all]
        } else {
            Vec::new()
        };
        copy.ends_in_hole = segments.last().is_none_or(|s| s.end < job.src.size);
        let ranges: Vec<Range<u64>> = if job.src.size >= SPLIT_THRESHOLD {
            segments
                .iter()
                .flat_map(|s| split(s.clone(), RANGE_SIZE))
                .collect()
        } else {
            Vec::new()
        };
        copy.ranges = if ranges.len() > 1 {
            ranges.len()
        } else {
            segments.len()
        };
        if ranges.len() > 1 {
            copy.ranges_left.store(ranges.len(), Ordering::Release);
            let copy = Arc::new(copy);
            for range in ranges {
                self.sched.push(
                    Slot::Global,
                    Job::Range {
                        copy: copy.clone(),
                        range,
                    },
                );
            }
            return;
        }
        for segment in segments {
            if copy.failure.lock().unwrap().is_some() {
                break;
            }
            if let Err(f) = self.copy_range(&copy, segment) {
                copy.failure.lock().unwrap().get_or_insert(f);
            }
        }
        self.finish_file(Arc::new(copy));
    }

    pub(super) fn copy_range(
        &self,
        copy: &FileCopy<S, D>,
        range: Range<u64>,
    ) -> Result<(), Failure> {
        let ctx = self.ctx;
        let writer = copy.writer.read().unwrap();
        let writer = writer.as_ref().expect("writer is taken only at the end");
        // Bytes to hash pass through user space.
        if let (false, true, Some(fd)) = (
            copy.read_back,
            self.kernel_copy.load(Ordering::Relaxed),
            copy.reader.fd(),
        ) {
            match self.kernel_copy(writer, fd, range.clone()) {
                Ok(()) => return Ok(()),
                // Not between these two: copy through user space from now on.
                Err(None) => self.kernel_copy.store(false, Ordering::Relaxed),
                Err(Some(f)) => return Err(f),
            }
        }
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let want = (range.end - range.start).min(BUFFER_SIZE as u64) as usize;
            if buffer.len() < want {
                buffer.resize(want, 0);
            }
            let mut range_hasher = copy.read_back.then(Sha256::new);
            let mut offset = range.start;
            while offset < range.end {
                if ctx.cancelled() {
                    return Err(("cancelled", io::Error::from(io::ErrorKind::Interrupted)));
                }
                let n = (range.end - offset).min(buffer.len() as u64) as usize;
                let got = copy
                    .reader
                    .read_at(&mut buffer[..n], offset)
                    .map_err(|e| ("read source file", e))?;
                if got == 0 {
                    // The file shrank while we copied: noticed at the end.
                    break;
                }
                ctx.throttle.take(got as u64);
                if let Some(h) = range_hasher.as_mut() {
                    h.update(&buffer[..got]);
                }
                write_all_at(writer, &buffer[..got], offset)
                    .map_err(|e| ("write destination file", e))?;
                Counters::add(&ctx.counters.bytes_transferred, got as u64);
                Counters::add(&ctx.counters.bytes_written, got as u64);
                offset += got as u64;
            }
            match range_hasher {
                // The whole range was written: read it back.
                Some(h) if offset == range.end => self.read_back(copy, writer, range, h),
                _ => Ok(()),
            }
        })
    }

    /// Verification's read of the destination, done as soon as a range is
    /// written and while the file is open: one read where the verification
    /// phase would open, read and close the file again (and for a large
    /// file, while other ranges still travel).
    pub(super) fn read_back(
        &self,
        copy: &FileCopy<S, D>,
        writer: &D::Writer,
        range: Range<u64>,
        source: Sha256,
    ) -> Result<(), Failure> {
        let written: [u8; 32] = source.finalize().into();
        if range == (0..copy.src.size) && copy.src.size <= HASH_WHILE_COPYING_MAX {
            *copy.source_digest.lock().unwrap() = Some(written);
        }
        match writer.read_back_digest(range.clone()) {
            Some(Ok(stored)) if stored == written => {
                copy.ranges_read_back.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Some(Ok(_)) => Err((
                "verify written data",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the destination returned other data than was written at bytes {}..{}",
                        range.start, range.end
                    ),
                ),
            )),
            Some(Err(e)) => Err(("read back destination file", e)),
            // The verification phase reads it.
            None => Ok(()),
        }
    }

    /// Copies a range inside the kernel. `Err(None)`: the kernel cannot copy
    /// between these files and nothing was copied.
    pub(super) fn kernel_copy(
        &self,
        writer: &D::Writer,
        src: std::os::fd::BorrowedFd<'_>,
        range: Range<u64>,
    ) -> Result<(), Option<Failure>> {
        let ctx = self.ctx;
        let mut offset = range.start;
        while offset < range.end {
            if ctx.cancelled() {
                return Err(Some((
                    "cancelled",
                    io::Error::from(io::ErrorKind::Interrupted),
                )));
            }
            let n = (range.end - offset).min(KERNEL_COPY_CHUNK as u64) as usize;
            ctx.throttle.take(n as u64);
            let got = match writer.copy_from(src, offset, n) {
                Ok(0) => break, // The file shrank: noticed at the end.
                Ok(got) => got,
                Err(e) if offset == range.start && kernel_cannot(&e) => return Err(None),
                Err(e) => return Err(Some(("copy data", e))),
            };
            Counters::add(&ctx.counters.bytes_transferred, got as u64);
            Counters::add(&ctx.counters.bytes_written, got as u64);
            offset += got as u64;
        }
        Ok(())
    }

    /// Completes a file copy: attributes, close, rename into place.
    pub(super) fn finish_file(&self, copy: Arc<FileCopy<S, D>>) {
        let ctx = self.ctx;
        let path = child_path(&copy.dir.rel, &copy.name);
        let writer = copy.writer.write().unwrap().take().expect("finished once");
        let failure = copy.failure.lock().unwrap().take();
        let digest = copy.source_digest.lock().unwrap().take();
        let read_back =
            copy.read_back && copy.ranges_read_back.load(Ordering::Relaxed) == copy.ranges;
        let result = match failure {
            Some(f) => {
                drop(writer);
                Err(f)
            }
            None => (|| -> Result<(), Failure> {
                if copy.ends_in_hole {
                    writer
                        .set_len(copy.src.size)
                        .map_err(|e| ("set file length", e))?;
                }
                let update =
                    plan::creation_update(&copy.src, &ctx.opts, ctx.creator, copy.dir.setgid);
                if !update.is_empty() {
                    writer.update(&update).map_err(|e| ("set attributes", e))?;
                }
                writer.finish().map_err(|e| ("close destination file", e))?;
                if copy.direct {
                    return Ok(());
                }
                ctx.dst
                    .rename(&copy.dir.dst, &copy.tmp, &copy.name)
                    .map_err(|e| ("rename into place", e))
            })(),
        };
        let target = match result {
            Ok(()) => {
                copy.dir.modified.store(true, Ordering::Relaxed);
                let now = copy.reader.meta();
                if let Ok(now) = &now {
                    ctx.remember_copy(&copy.src, now, digest, read_back);
                }
                match now {
                    Ok(now) if changed(&copy.src, &now) => {
                        // Verification, when on, finds it again and counts it.
                        if ctx.opts.verify_mode == VerifyMode::None {
                            Counters::inc(&ctx.counters.files_changed_at_source);
                        }
                        ctx.record(|| {
                            Record::new(&path, Kind::File, Outcome::ChangedAtSource, Phase::Transferring)
                                .reason("changed at source during the copy; the next execution copies it again")
                        });
                    }
                    _ => {}
                }
                ctx.transferred(&path, Kind::File, copy.src.size);
                self.link_target(&copy.dir, &copy.name, &copy.src)
            }
            Err((what, e)) => {
                let _ = ctx.dst.remove(&copy.dir.dst, &copy.tmp, Kind::File);
                if e.kind() != io::ErrorKind::Interrupted {
                    ctx.fail(Phase::Transferring, &path, Kind::File, what, &e);
                }
                None
            }
        };
        self.settle_group(&copy.src, target);
        let dir = copy.dir.clone();
        drop(copy);
        self.release(dir);
    }
}

/// Errors of copy_file_range that mean "not between these two files".
fn kernel_cannot(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)
        )
}

fn split(range: Range<u64>, size: u64) -> impl Iterator<Item = Range<u64>> {
    (range.start..range.end)
        .step_by(size as usize)
        .map(move |start| start..(start + size).min(range.end))
}

fn write_all_at<W: Writer>(writer: &W, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match writer.write_at(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_at_the_range_size_and_end_at_the_data() {
        let r: Vec<_> = split(0..20, 8).collect();
        assert_eq!(r, vec![0..8, 8..16, 16..20]);
        let r: Vec<_> = split(5..13, 8).collect();
        assert_eq!(r, vec![5..13]);
        assert_eq!(split(7..7, 8).count(), 0);
    }

    #[test]
    fn the_kernel_cannot_copy_between_these_files_only_for_those_errors() {
        for errno in [
            libc::EXDEV,
            libc::EINVAL,
            libc::ENOSYS,
            libc::EOPNOTSUPP,
            libc::EBADF,
        ] {
            assert!(
                kernel_cannot(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(kernel_cannot(&io::ErrorKind::Unsupported.into()));
        for errno in [libc::EIO, libc::ENOSPC, libc::EDQUOT] {
            assert!(
                !kernel_cannot(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
