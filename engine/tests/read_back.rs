// SPDX-License-Identifier: MIT
//! Verification reads every written range back from the destination while
//! the file is still open. A destination that stores other bytes than it was
//! given (a real directory underneath, one bit flipped on its way in) is
//! caught during the transfer, and the bad copy never takes the final name.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use ferry_engine::location::local::{LocalLocation, LocalWriter};
use ferry_engine::location::{Entry, Kind, Location, Meta, MetaUpdate, Writer};
use ferry_engine::options::VerifyMode;
use ferry_engine::report::{Observer, Outcome, Phase, Record};
use ferry_engine::{Execution, Options, Summary};

/// A local directory that flips one bit of the byte at `FLIPPED_AT` on its
/// way into every file created with mode `FLIPPED_MODE`.
struct Flipping(LocalLocation);

const FLIPPED_AT: u64 = 3000;
const FLIPPED_MODE: u32 = 0o604;

struct FlippingWriter {
    inner: LocalWriter,
    flips: bool,
}

impl Writer for FlippingWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let at = FLIPPED_AT.wrapping_sub(offset) as usize;
        if self.flips && at < buf.len() {
            let mut bad = buf.to_vec();
            bad[at] ^= 1;
            return self.inner.write_at(&bad, offset);
        }
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn update(&self, update: &MetaUpdate) -> io::Result<()> {
        self.inner.update(update)
    }
    fn read_back_digest(&self, range: Range<u64>) -> Option<io::Result<[u8; 32]>> {
        self.inner.read_back_digest(range)
    }
    fn finish(self) -> io::Result<()> {
        self.inner.finish()
    }
}

type Dir = <LocalLocation as Location>::Dir;

impl Location for Flipping {
    type Dir = Dir;
    type Reader = <LocalLocation as Location>::Reader;
    type Writer = FlippingWriter;

    fn describe(&self) -> String {
        self.0.describe()
    }
    fn is_remote(&self) -> bool {
        false
    }
    fn root(&self) -> io::Result<Dir> {
        self.0.root()
    }
    fn open_dir(&self, parent: &Dir, name: &OsStr) -> io::Result<Dir> {
        self.0.open_dir(parent, name)
    }
    fn list(&self, dir: &Dir) -> io::Result<Vec<Entry>> {
        self.0.list(dir)
    }
    fn stat_dir(&self, dir: &Dir) -> io::Result<Meta> {
        self.0.stat_dir(dir)
    }
    fn stat(&self, dir: &Dir, name: &OsStr) -> io::Result<Meta> {
        self.0.stat(dir, name)
    }
    fn open_file(&self, dir: &Dir, name: &OsStr) -> io::Result<Self::Reader> {
        self.0.open_file(dir, name)
    }
    fn read_link(&self, dir: &Dir, name: &OsStr) -> io::Result<OsString> {
        self.0.read_link(dir, name)
    }
    fn make_dir(&self, parent: &Dir, name: &OsStr, mode: u32) -> io::Result<()> {
        self.0.make_dir(parent, name, mode)
    }
    fn create_file(&self, dir: &Dir, name: &OsStr, mode: u32) -> io::Result<FlippingWriter> {
        Ok(FlippingWriter {
            inner: self.0.create_file(dir, name, mode)?,
            flips: mode == FLIPPED_MODE,
        })
    }
    fn make_symlink(&self, dir: &Dir, name: &OsStr, target: &OsStr) -> io::Result<()> {
        self.0.make_symlink(dir, name, target)
    }
    fn make_node(
        &self,
        dir: &Dir,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        rdev: u64,
    ) -> io::Result<()> {
        self.0.make_node(dir, name, kind, mode, rdev)
    }
    fn hard_link(&self, from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        self.0.hard_link(from_dir, from, to_dir, to)
    }
    fn rename(&self, dir: &Dir, from: &OsStr, to: &OsStr) -> io::Result<()> {
        self.0.rename(dir, from, to)
    }
    fn remove(&self, dir: &Dir, name: &OsStr, kind: Kind) -> io::Result<()> {
        self.0.remove(dir, name, kind)
    }
    fn update(&self, dir: &Dir, name: &OsStr, update: &MetaUpdate) -> io::Result<()> {
        self.0.update(dir, name, update)
    }
    fn update_dir(&self, dir: &Dir, update: &MetaUpdate) -> io::Result<()> {
        self.0.update_dir(dir, update)
    }
}

/// Keeps every per-entry record.
#[derive(Default)]
struct Records(Mutex<Vec<Record>>);

impl Observer for Records {
    fn wants_records(&self) -> bool {
        true
    }
    fn record(&self, record: Record) {
        self.0.lock().unwrap().push(record);
    }
}

fn sync<D: Location>(src: &Path, dst: D, verify_mode: VerifyMode) -> (Summary, Vec<Record>) {
    let opts = Options {
        verify_mode,
        ..Options::new()
    };
    let records = Arc::new(Records::default());
    let execution = Execution::new(
        LocalLocation::open(src).unwrap(),
        dst,
        opts,
        records.clone(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let summary = execution.run().unwrap();
    let records = std::mem::take(&mut *records.0.lock().unwrap());
    (summary, records)
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A source with a small and a large (split into ranges) file of each kind,
/// at the top (written under a temporary name) and in a new directory
/// (written in place), and an empty destination; returns (tmp, src, dst).
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir(&dst).unwrap();
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("good"), &data(4096, 1), 0o644);
    write(&src.join("bad"), &data(4096, 2), FLIPPED_MODE);
    write(&src.join("sub/good-large"), &data(40 << 20, 3), 0o644);
    write(&src.join("sub/bad-large"), &data(40 << 20, 4), FLIPPED_MODE);
    (t, src, dst)
}

#[test]
fn a_destination_that_stores_other_bytes_is_caught_while_copying() {
    let (_tmp, src, dst) = setup();

    let (summary, records) = sync(
        &src,
        Flipping(LocalLocation::open(&dst).unwrap()),
        VerifyMode::PointInTimeConsistent,
    );
    assert_eq!(summary.status, Phase::Error, "{summary:?}");
    assert_eq!(summary.counters.files_failed_transfer, 2, "{summary:?}");
    let mut failed: Vec<_> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Failed && r.phase == Phase::Transferring)
        .map(|r| (r.path.as_str(), r.reason.clone().unwrap_or_default()))
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{records:?}");
    assert_eq!(failed[0].0, "/bad");
    assert_eq!(failed[1].0, "/sub/bad-large");
    for (_, reason) in &failed {
        assert!(
            reason.starts_with("verify written data: the destination returned other data than was written at bytes 0.."),
            "{reason}"
        );
    }
    // The bad copies never took their names; the good ones are exact.
    assert!(!dst.join("bad").exists());
    assert!(!dst.join("sub/bad-large").exists());
    assert_eq!(fs::read(dst.join("good")).unwrap(), data(4096, 1));
    assert_eq!(
        fs::read(dst.join("sub/good-large")).unwrap(),
        data(40 << 20, 3)
    );
    let leftovers: Vec<_> = fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".ferry~"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A destination that keeps what it is given: the next run completes.
    let (summary, records) = sync(
        &src,
        LocalLocation::open(&dst).unwrap(),
        VerifyMode::PointInTimeConsistent,
    );
    assert_eq!(summary.status, Phase::Success, "{records:?}");
    assert_eq!(summary.counters.files_transferred, 2, "{summary:?}");
    assert_eq!(
        fs::read(dst.join("sub/bad-large")).unwrap(),
        data(40 << 20, 4)
    );
}

#[test]
fn without_verification_the_bad_bytes_go_unnoticed() {
    let (_tmp, src, dst) = setup();
    let (summary, _) = sync(
        &src,
        Flipping(LocalLocation::open(&dst).unwrap()),
        VerifyMode::None,
    );
    assert_eq!(summary.status, Phase::Success, "{summary:?}");
    let mut expected = data(4096, 2);
    expected[FLIPPED_AT as usize] ^= 1;
    assert_eq!(fs::read(dst.join("bad")).unwrap(), expected);
}
