// SPDX-License-Identifier: MIT
//! The state of an upload, kept so an interrupted one (the process killed,
//! the network gone) can be resumed with the same command, or cleaned up.
//!
//! One text file, by default next to the image (`IMAGE.ferry-ami`),
//! appended to as blocks are written: a header naming the snapshot, the
//! image (path, size, modification time) and the AMI name, then one
//! `block INDEX SHA256HEX` line per block EBS accepted. Appending a line is
//! all a block costs, and a line cut short by a crash is ignored (that block
//! is written again, which EBS allows while the snapshot is pending).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use crate::Context;
use crate::Error;

const MAGIC: &str = "ferry-ami upload state 1";

/// What identifies the image an upload was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageId {
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
}

impl ImageId {
    pub fn of(path: &Path) -> io::Result<ImageId> {
        let m = fs::metadata(path)?;
        Ok(ImageId {
            size: m.len(),
            mtime_ns: m
                .modified()?
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        })
    }
}

/// A started upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub snapshot: String,
    pub name: String,
    pub image: ImageId,
    /// Blocks EBS accepted: index → SHA-256.
    pub blocks: BTreeMap<u64, [u8; 32]>,
}

/// The default state file of an image.
pub fn default_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".ferry-ami");
    PathBuf::from(p)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads a state file; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<Upload>, Error> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                what: format!("read upload state {}", path.display()),
                source,
            })
        }
    };
    let bad = |why: &str| Error::State {
        path: path.to_path_buf(),
        why: format!("{why}; delete the file, or run `ferry-ami cleanup` with it"),
    };
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("not a ferry-ami state file"));
    }
    let (mut snapshot, mut name, mut image) = (None, None, None);
    let mut blocks = BTreeMap::new();
    for line in lines {
        let mut w = line.split(' ');
        match w.next() {
            Some("snapshot") => snapshot = w.next().map(str::to_string),
            Some("name") => name = Some(line["name ".len()..].to_string()),
            Some("image") => {
                let size = w.next().and_then(|s| s.parse().ok());
                let mtime_ns = w.next().and_then(|s| s.parse().ok());
                if let (Some(size), Some(mtime_ns)) = (size, mtime_ns) {
                    image = Some(ImageId { size, mtime_ns });
                }
            }
            Some("block") => {
                // a line cut short by a crash does not parse: skipped
                let index = w.next().and_then(|s| s.parse::<u64>().ok());
                let digest = w.next().and_then(unhex32);
                if let (Some(i), Some(d), None) = (index, digest, w.next()) {
                    blocks.insert(i, d);
                }
            }
            _ => {}
        }
    }
    match (snapshot, name, image) {
        (Some(snapshot), Some(name), Some(image)) => Ok(Some(Upload {
            snapshot,
            name,
            image,
            blocks,
        })),
        _ => Err(bad("header incomplete")),
    }
}

/// An open state file that blocks are appended to.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Creates the file for a new upload (the header is synced to disk
    /// before the first block is sent).
    pub fn create(path: &Path, up: &Upload) -> Result<Journal, Error> {
        let err = || format!("write upload state {}", path.display());
        let mut f = File::create(path).ctx(err)?;
        writeln!(
            f,
            "{MAGIC}\nsnapshot {}\nname {}\nimage {} {}",
            up.snapshot, up.name, up.image.size, up.image.mtime_ns
        )
        .ctx(err)?;
        f.sync_all().ctx(err)?;
        drop(f);
        Journal::append_to(path)
    }

    /// Opens an existing file to add blocks (ending a line a crash cut
    /// short first).
    pub fn append_to(path: &Path) -> Result<Journal, Error> {
        let err = || format!("open upload state {}", path.display());
        let torn = !fs::read(path).ctx(err)?.ends_with(b"\n");
        let mut file = OpenOptions::new().append(true).open(path).ctx(err)?;
        if torn {
            file.write_all(b"\n").ctx(err)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Records a block EBS accepted (one `write`: whole line or nothing
    /// useful).
    pub fn block(&self, index: u64, digest: &[u8; 32]) -> Result<(), Error> {
        let line = format!("block {index} {}\n", hex(digest));
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes())
            .ctx(|| format!("write upload state {}", self.path.display()))
    }
}

/// Removes the state file (the upload is finished or abandoned).
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.raw.ferry-ami");
        assert_eq!(load(&path).unwrap(), None);
        let up = Upload {
            snapshot: "snap-0123".into(),
            name: "ferry 1.0 (test)".into(),
            image: ImageId {
                size: 1 << 30,
                mtime_ns: 1_700_000_000_123_456_789,
            },
            blocks: BTreeMap::new(),
        };
        let j = Journal::create(&path, &up).unwrap();
        j.block(5, &[0xab; 32]).unwrap();
        j.block(7, &[0x01; 32]).unwrap();
        drop(j);
        // a crash in the middle of a line
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"block 9 abab")
            .unwrap();
        let got = load(&path).unwrap().unwrap();
        // resumed: the torn line is ended before the next block
        Journal::append_to(&path)
            .unwrap()
            .block(11, &[2; 32])
            .unwrap();
        let again = load(&path).unwrap().unwrap();
        assert_eq!(again.blocks.keys().copied().collect::<Vec<_>>(), [5, 7, 11]);
        assert_eq!(got.snapshot, "snap-0123");
        assert_eq!(got.name, "ferry 1.0 (test)");
        assert_eq!(got.image, up.image);
        assert_eq!(got.blocks.keys().copied().collect::<Vec<_>>(), [5, 7]);
        assert_eq!(got.blocks[&5], [0xab; 32]);
        fs::write(&path, "something else\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("not a ferry-ami state file"), "{e}");
        assert_eq!(
            default_path(Path::new("out/ferry.raw")),
            Path::new("out/ferry.raw.ferry-ami")
        );
    }
}
