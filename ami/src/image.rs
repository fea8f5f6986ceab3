// SPDX-License-Identifier: MIT
//! The raw image as EBS sees it: 512 KiB blocks, all-zero ones skipped.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Context;
use crate::Error;

pub const BLOCK: u64 = 512 * 1024;
const GIB: u64 = 1 << 30;

/// An opened, checked image.
pub struct Image {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
}

impl Image {
    /// Opens the image and checks it is whole: a size in GiB (EBS volumes
    /// are) and the GPT's backup header in its last sector (a truncated copy
    /// has lost it).
    pub fn open(path: &Path) -> Result<Image, Error> {
        let file = File::open(path).ctx(|| format!("open image {}", path.display()))?;
        let size = file
            .metadata()
            .ctx(|| format!("stat image {}", path.display()))?
            .len();
        let bad = |why: String| Error::BadImage {
            path: path.to_path_buf(),
            why,
        };
        if size == 0 || size % GIB != 0 {
            return Err(bad(format!(
                "size {size} bytes is not a whole number of GiB: truncated or not a disk image"
            )));
        }
        let mut primary = [0u8; 8];
        let mut backup = [0u8; 8];
        file.read_exact_at(&mut primary, 512)
            .ctx(|| format!("read the GPT header of image {}", path.display()))?;
        file.read_exact_at(&mut backup, size - 512)
            .ctx(|| format!("read the backup GPT header of image {}", path.display()))?;
        if &primary != b"EFI PART" {
            return Err(bad(
                "no GPT header in sector 1: not a Ferry disk image".into()
            ));
        }
        if &backup != b"EFI PART" {
            return Err(bad(
                "no backup GPT header in the last sector: the image is truncated".into(),
            ));
        }
        Ok(Image {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    pub fn size_gib(&self) -> u64 {
        self.size / GIB
    }

    /// Indexes of the blocks that may hold data (from the file's data
    /// extents; all-zero blocks are dropped when read).
    pub fn candidate_blocks(&self) -> Result<Vec<u64>, Error> {
        let extents = data_extents(&self.file, self.size)
            .ctx(|| format!("find the data in image {}", self.path.display()))?;
        let mut blocks: Vec<u64> = Vec::new();
        for (start, end) in extents {
            for b in start / BLOCK..end.div_ceil(BLOCK) {
                if blocks.last() != Some(&b) {
                    blocks.push(b);
                }
            }
        }
        Ok(blocks)
    }

    /// Reads block `index`; `None` when it is all zeros.
    pub fn block(&self, index: u64) -> Result<Option<Vec<u8>>, Error> {
        let mut buf = vec![0u8; BLOCK as usize];
        self.file
            .read_exact_at(&mut buf, index * BLOCK)
            .ctx(|| format!("read block {index} of image {}", self.path.display()))?;
        Ok(if buf.iter().all(|&b| b == 0) {
            None
        } else {
            Some(buf)
        })
    }
}

fn data_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let seek = |off: u64, whence: i32| -> io::Result<u64> {
        // SAFETY: lseek on a descriptor we borrow.
        let r = unsafe { libc::lseek(fd, off as i64, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(pos, libc::SEEK_DATA) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                out.push((pos, len));
                break;
            }
            Err(e) => return Err(e),
        };
        let end = seek(start, libc::SEEK_HOLE)?.min(len);
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}
