// SPDX-License-Identifier: MIT
//! SHA-256 digests of files kept between executions: verifying a tree that
//! has not changed since the last run then reads nothing again.
//!
//! A digest is valid while its file keeps the inode, size, mtime and ctime
//! it was taken under. The kernel sets ctime on every change to a file's
//! content or attributes and no one can set it back, so a file whose ctime
//! is unchanged has not been written since (git's index trusts the same).

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::location::{Meta, Reader, Timestamp};

/// Digests by (scope, inode). A scope is one file system as its user names
/// it: the hub uses the device number; an agent, its source location (an
/// NFS export mounted again for each execution may get another device
/// number).
pub struct DigestCache {
    entries: Mutex<HashMap<(u64, u64), Stamped>>,
    limit: usize,
}

struct Stamped {
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
    digest: [u8; 32],
}

/// Entries kept at most by default (about 100 MB): a cache that is full is
/// emptied, and the digests are taken again as files are read.
pub const DIGESTS_KEPT: usize = 1 << 20;

impl Default for DigestCache {
    fn default() -> Self {
        DigestCache::with_limit(DIGESTS_KEPT)
    }
}

impl DigestCache {
    pub fn with_limit(limit: usize) -> Self {
        DigestCache {
            entries: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// The digest taken of this file, if it has not changed since.
    pub fn get(&self, scope: u64, meta: &Meta) -> Option<[u8; 32]> {
        let entries = self.entries.lock().unwrap();
        let e = entries.get(&(scope, meta.ino))?;
        (e.size == meta.size && e.mtime == meta.mtime && e.ctime == meta.ctime).then_some(e.digest)
    }

    /// Remembers `digest` as the content of the file, taken between
    /// `before` and `after`; not if the file changed meanwhile.
    pub fn put(&self, scope: u64, before: &Meta, after: &Meta, digest: [u8; 32]) {
        if crate::plan::changed(before, after) || before.ino != after.ino {
            return;
        }
        let meta = after;
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= self.limit {
            entries.clear();
        }
        let stamped = Stamped {
            size: meta.size,
            mtime: meta.mtime,
            ctime: meta.ctime,
            digest,
        };
        entries.insert((scope, meta.ino), stamped);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A scope named by a string (a location's id), as a number.
pub fn scope_of(name: &str) -> u64 {
    let d = Sha256::digest(name.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// SHA-256 of an open file from its start to its end (`size`: its size as
/// the caller saw it, for the buffer only); `check` runs before each read
/// (a time budget). Reads in parts of up to 1 MiB, no larger than the file:
/// a buffer filled with zeros for each small file costs more than hashing
/// it.
pub fn sha256_of<R: Reader>(
    reader: &R,
    size: u64,
    mut check: impl FnMut() -> io::Result<()>,
) -> io::Result<[u8; 32]> {
    let mut buf = vec![
        0u8;
        usize::try_from(size)
            .unwrap_or(usize::MAX)
            .clamp(4096, 1 << 20)
    ];
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    loop {
        check()?;
        let n = reader.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Kind;

    fn meta(ino: u64, size: u64, ctime: i64) -> Meta {
        let t = |sec| Timestamp { sec, nsec: 0 };
        Meta {
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            blocks: 0,
            nlink: 1,
            dev: 1,
            ino,
            rdev: 0,
            atime: t(0),
            mtime: t(10),
            ctime: t(ctime),
        }
    }

    #[test]
    fn a_digest_holds_while_size_and_times_hold() {
        let cache = DigestCache::default();
        cache.put(7, &meta(1, 3, 20), &meta(1, 3, 20), [1; 32]);
        assert_eq!(cache.get(7, &meta(1, 3, 20)), Some([1; 32]));
        assert_eq!(cache.get(7, &meta(1, 3, 21)), None, "ctime moved");
        assert_eq!(cache.get(7, &meta(1, 4, 20)), None, "size moved");
        let mut touched = meta(1, 3, 20);
        touched.mtime.nsec = 1;
        assert_eq!(cache.get(7, &touched), None, "mtime moved");
        assert_eq!(cache.get(8, &meta(1, 3, 20)), None, "another scope");
        assert_eq!(cache.get(7, &meta(2, 3, 20)), None, "another inode");
    }

    #[test]
    fn a_digest_taken_while_the_file_changed_is_not_kept() {
        let cache = DigestCache::default();
        cache.put(7, &meta(1, 3, 20), &meta(1, 3, 21), [1; 32]);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_starts_again() {
        let cache = DigestCache::with_limit(2);
        let put = |ino, d| cache.put(0, &meta(ino, 1, 1), &meta(ino, 1, 1), d);
        put(1, [1; 32]);
        put(2, [2; 32]);
        assert_eq!(cache.len(), 2);
        put(3, [3; 32]);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(0, &meta(3, 1, 1)), Some([3; 32]));
    }
}
