// SPDX-License-Identifier: MIT
//! `ferry-secure`: the daemon's own files (the agent's, the hub's, its
//! CA's): written privately, trusted only when no one else could have put
//! them there. Its own crate because the daemon and the wire's certificate
//! authority (`ferry_wire::ca`) both use it, and the wire knows no daemon.
//!
//! ferry-agent runs with umask 0 so that the copy engine creates files with
//! their final modes (no SETATTR round trip on NFS). Everything the daemon
//! writes for itself therefore gets its mode here, explicitly: directories
//! 0700, files 0600 (a certificate, public by nature, 0644). What it reads
//! (its state, the operator token, the configuration) is trusted only when
//! every directory on the way is owned by root or the daemon's user and not
//! writable by others (a sticky directory such as /tmp is fine: others cannot
//! rename or remove what is ours there), and a symbolic link is followed only
//! when root or the daemon's user made it. A state directory with a mode too
//! open is repaired; one owned by someone else is refused.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Directories of the daemon.
pub const DIR_MODE: u32 = 0o700;
/// Files of the daemon.
pub const FILE_MODE: u32 = 0o600;

/// Why a path of the daemon cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is owned by uid {owner}, not by the daemon's user (uid {us}) or root: someone else could have put it there (remove it, or give it to uid {us})")]
    Owner { path: String, owner: u32, us: u32 },
    #[error("{path} is writable by others (mode {mode:04o}): anyone could replace what is in it (chmod go-w {path})")]
    Writable { path: String, mode: u32 },
    #[error("{path} can be read by others (mode {mode:04o}): a secret must be its owner's only (chmod 600 {path})")]
    Readable { path: String, mode: u32 },
    #[error("{path} is a symbolic link made by uid {owner}: the daemon follows links only from root or its own user")]
    Link { path: String, owner: u32 },
    #[error(
        "{path} is a symbolic link: the daemon does not follow links for its own files (remove it)"
    )]
    OwnLink { path: String },
    #[error("{path} is not a {what}")]
    Kind { path: String, what: &'static str },
    #[error("{path}: too many symbolic links")]
    Loop { path: String },
}

impl From<TrustError> for io::Error {
    fn from(e: TrustError) -> io::Error {
        let kind = match &e {
            TrustError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                io::ErrorKind::NotFound
            }
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e)
    }
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `std::fs::read_link(p).ctx(|| format!("read the link {}", p.display()))?`.
trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, TrustError>;
}

impl<T> Context<T> for Result<T, io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, TrustError> {
        self.map_err(|source| TrustError::Io {
            what: what(),
            source,
        })
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// A directory on the way to something of ours: made by root or us, and
/// nobody else can replace its entries.
fn check_ancestor(path: &Path, md: &std::fs::Metadata) -> Result<(), TrustError> {
    if !trusted_owner(md.uid()) {
        return Err(TrustError::Owner {
            path: path.display().to_string(),
            owner: md.uid(),
            us: euid(),
        });
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(TrustError::Writable {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// Resolves `path` through trusted directories and links only. Returns the
/// resolved part that exists and the components still to create. The last
/// directory is checked as the others only with `check_last` (else the
/// caller checks it: it may repair its mode).
fn resolve(path: &Path, check_last: bool) -> Result<(PathBuf, Vec<OsString>), TrustError> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .ctx(|| format!("find the current directory to resolve {}", path.display()))?
            .join(path)
    };
    let mut pending: std::collections::VecDeque<OsString> = abs
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::from("/");
    let root = std::fs::symlink_metadata(&resolved).ctx(|| "stat /".to_string())?;
    check_ancestor(&resolved, &root)?;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let next = resolved.join(&name);
        let md = match std::fs::symlink_metadata(&next) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut rest = vec![name];
                rest.extend(pending);
                if rest.iter().any(|c| c == "..") {
                    return Err(e).ctx(|| format!("stat {}", next.display()));
                }
                return Ok((resolved, rest));
            }
            Err(e) => return Err(e).ctx(|| format!("stat {}", next.display())),
        };
        if md.file_type().is_symlink() {
            if !trusted_owner(md.uid()) {
                return Err(TrustError::Link {
                    path: next.display().to_string(),
                    owner: md.uid(),
                });
            }
            links += 1;
            if links > 40 {
                return Err(TrustError::Loop {
                    path: path.display().to_string(),
                });
            }
            let target =
                std::fs::read_link(&next).ctx(|| format!("read the link {}", next.display()))?;
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push_front(n.to_os_string()),
                    Component::ParentDir => pending.push_front("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        if md.is_dir() {
            if check_last || !pending.is_empty() {
                check_ancestor(&next, &md)?;
            }
        } else if !pending.is_empty() {
            return Err(TrustError::Kind {
                path: next.display().to_string(),
                what: "directory",
            });
        }
        resolved = next;
    }
    Ok((resolved, Vec::new()))
}

/// Checks that nobody but root and us could have changed `path` or the
/// directories on the way to it; returns it resolved.
pub fn trusted_path(path: &Path) -> Result<PathBuf, TrustError> {
    let (resolved, rest) = resolve(path, true)?;
    if !rest.is_empty() {
        return Err(io::Error::from(io::ErrorKind::NotFound))
            .ctx(|| format!("resolve {}", path.display()));
    }
    Ok(resolved)
}

/// Makes the missing components `rest` below the existing `resolved` with
/// `mode`; returns the path and what it is, which must be a directory.
fn make_dirs(
    mut resolved: PathBuf,
    rest: Vec<OsString>,
    mode: u32,
) -> Result<(PathBuf, std::fs::Metadata), TrustError> {
    for name in rest {
        resolved.push(name);
        match std::fs::DirBuilder::new().mode(mode).create(&resolved) {
            Ok(()) => {}
            // made meanwhile by another thread of ours: checked below
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("create {}", resolved.display())),
        }
    }
    let md = std::fs::symlink_metadata(&resolved).ctx(|| format!("stat {}", resolved.display()))?;
    if !md.is_dir() {
        return Err(TrustError::Kind {
            path: resolved.display().to_string(),
            what: "directory",
        });
    }
    Ok((resolved, md))
}

/// What `file` (opened from `path`) is, which must be a regular file.
fn regular_file(path: &Path, file: &std::fs::File) -> Result<std::fs::Metadata, TrustError> {
    let md = file.metadata().ctx(|| format!("stat {}", path.display()))?;
    if !md.is_file() {
        return Err(TrustError::Kind {
            path: path.display().to_string(),
            what: "regular file",
        });
    }
    Ok(md)
}

/// A directory of the daemon: made 0700 where missing (and its missing
/// parents), its mode repaired when it is open to others; refused when it
/// is not ours or the way to it is not trusted. Returns the resolved path
/// and, when a mode was repaired, a line saying so.
pub fn private_dir(path: &Path) -> Result<(PathBuf, Option<String>), TrustError> {
    let (resolved, rest) = resolve(path, false)?;
    let (resolved, md) = make_dirs(resolved, rest, DIR_MODE)?;
    own(&resolved, &md)?;
    let repaired = repair(&resolved, &md, DIR_MODE)?;
    Ok((resolved, repaired))
}

/// A directory the daemon writes in but does not own the whole of (the
/// operator token's, the activation marker's): made 0700 where missing,
/// else left as it is but refused when the way to it, itself included, is
/// not trusted.
pub fn trusted_dir(path: &Path) -> Result<PathBuf, TrustError> {
    trusted_dir_with_mode(path, DIR_MODE)
}

/// [`trusted_dir`], making what is missing with `mode` (a socket's
/// directory that a group must pass through).
pub fn trusted_dir_with_mode(path: &Path, mode: u32) -> Result<PathBuf, TrustError> {
    let (resolved, rest) = resolve(path, true)?;
    let (resolved, md) = make_dirs(resolved, rest, mode)?;
    check_ancestor(&resolved, &md)?;
    Ok(resolved)
}

/// `path` must be ours.
fn own(path: &Path, md: &std::fs::Metadata) -> Result<(), TrustError> {
    if md.uid() != euid() {
        return Err(TrustError::Owner {
            path: path.display().to_string(),
            owner: md.uid(),
            us: euid(),
        });
    }
    Ok(())
}

/// Takes away what group and others may do with something of ours.
fn repair(path: &Path, md: &std::fs::Metadata, mode: u32) -> Result<Option<String>, TrustError> {
    let now = md.mode() & 0o7777;
    if now & 0o077 == 0 {
        return Ok(None);
    }
    // A set-id or sticky bit has no business on the daemon's files either.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {mode:04o} {}", path.display()))?;
    Ok(Some(format!(
        "{} was open to others (mode {now:04o}): made {mode:04o}",
        path.display()
    )))
}

/// Checks the daemon's state below `dir` (which [`private_dir`] checked):
/// every directory and file must be ours, and no symbolic link may be there
/// (nothing of ours is one); modes open to others are repaired. `skip`
/// names entries of `dir` checked elsewhere (the mount points). Returns the
/// repairs made.
pub fn check_tree(dir: &Path, skip: &[&str]) -> Result<Vec<String>, TrustError> {
    let mut repaired = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ctx(|| format!("list {}", d.display()))? {
            let entry = entry.ctx(|| format!("list {}", d.display()))?;
            if d == dir && skip.iter().any(|s| entry.file_name() == OsStr::new(s)) {
                continue;
            }
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
            if md.file_type().is_symlink() {
                return Err(TrustError::OwnLink {
                    path: path.display().to_string(),
                });
            }
            own(&path, &md)?;
            if md.is_dir() {
                repaired.extend(repair(&path, &md, DIR_MODE)?);
                stack.push(path);
            } else {
                let public = path.extension() == Some(OsStr::new("pem"));
                let mode = if public { 0o644 } else { FILE_MODE };
                if md.mode() & 0o022 != 0 || (!public && md.mode() & 0o077 != 0) {
                    repaired.extend(repair(&path, &md, mode)?);
                }
            }
        }
    }
    Ok(repaired)
}

/// Makes sure a file of the daemon that others' programs open by name
/// (SQLite's database) is a regular file of ours with mode 0600, creating it
/// empty when missing, without following a link.
pub fn private_file(path: &Path) -> Result<(), TrustError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| link_error(path, e))?;
    let md = regular_file(path, &file)?;
    own(path, &md)?;
    if md.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .ctx(|| format!("chmod {FILE_MODE:04o} {}", path.display()))?;
    }
    Ok(())
}

/// ELOOP from O_NOFOLLOW means: a link where a file was expected.
fn link_error(path: &Path, e: io::Error) -> TrustError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        TrustError::OwnLink {
            path: path.display().to_string(),
        }
    } else {
        TrustError::Io {
            what: format!("open {}", path.display()),
            source: e,
        }
    }
}

/// Reads a secret (the operator token): a regular file of ours, not a
/// link, that nobody else may read or write, through trusted directories.
/// At most `limit` bytes.
pub fn read_secret(path: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    read_checked(path, limit, true)
}

/// Reads a file the daemon acts on (the configuration, a provisioning
/// document): owned by root or us, writable by nobody else, through
/// trusted directories. At most `limit` bytes.
pub fn read_trusted(path: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    read_checked(path, limit, false)
}

fn read_checked(path: &Path, limit: u64, secret: bool) -> Result<Vec<u8>, TrustError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = trusted_path(parent)?;
    let name = path.file_name().ok_or_else(|| TrustError::Kind {
        path: path.display().to_string(),
        what: "file",
    })?;
    let full = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        // a FIFO planted there must not block the start
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&full)
        .map_err(|e| link_error(path, e))?;
    let md = regular_file(path, &file)?;
    let mode = md.mode() & 0o7777;
    if secret {
        own(path, &md)?;
    } else if !trusted_owner(md.uid()) {
        return Err(TrustError::Owner {
            path: path.display().to_string(),
            owner: md.uid(),
            us: euid(),
        });
    }
    if mode & 0o022 != 0 {
        return Err(TrustError::Writable {
            path: path.display().to_string(),
            mode,
        });
    }
    if secret && mode & 0o044 != 0 {
        return Err(TrustError::Readable {
            path: path.display().to_string(),
            mode,
        });
    }
    let mut out = Vec::new();
    file.take(limit)
        .read_to_end(&mut out)
        .ctx(|| format!("read {}", path.display()))?;
    Ok(out)
}

/// A path as bytes, for system calls.
pub fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn private_dirs_are_made_0700_and_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        let (resolved, repaired) = private_dir(&d).unwrap();
        assert_eq!(resolved, d);
        assert!(repaired.is_none());
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_, repaired) = private_dir(&d).unwrap();
        assert!(repaired.unwrap().contains("mode 0777"));
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn a_way_through_a_directory_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&open.join("state")).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        // sticky, as /tmp: fine
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        private_dir(&open.join("state")).unwrap();
    }

    #[test]
    fn links_inside_the_state_are_refused_and_files_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("state");
        private_dir(&d).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(d.join("sub/f"), std::fs::Permissions::from_mode(0o666)).unwrap();
        let repaired = check_tree(&d, &[]).unwrap();
        assert_eq!(repaired.len(), 2, "{repaired:?}");
        assert_eq!(mode(&d.join("sub/f")), 0o600);
        symlink("/etc", d.join("sub/l")).unwrap();
        let e = check_tree(&d, &[]).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(check_tree(&d, &["sub"]).is_ok());
    }

    #[test]
    fn secrets_must_be_ours_private_and_not_links() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("token");
        std::fs::write(&f, "t0ken").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&f, 100).unwrap(), b"t0ken");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o622)).unwrap();
        let e = read_secret(&f, 100).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&f, 100).unwrap_err().to_string();
        assert!(e.contains("can be read by others"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = tmp.path().join("link");
        symlink(&f, &l).unwrap();
        let e = read_secret(&l, 100).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn the_database_file_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("db");
        private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        let l = tmp.path().join("l");
        symlink(tmp.path().join("elsewhere"), &l).unwrap();
        assert!(private_file(&l).is_err());
        assert!(!tmp.path().join("elsewhere").exists());
    }
}
