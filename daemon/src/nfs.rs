// SPDX-License-Identifier: MIT
//! NFS locations: the agent mounts the export for an execution and unmounts
//! it afterwards, with mount(2) directly (the appliance has no mount.nfs).
//!
//! The kernel's NFS mount wants the server's address in the data string
//! (`addr=`); mount.nfs would add it, so we resolve the name ourselves.
//! The options are `ferry_model::nfs`'s (chosen for throughput over long
//! round trips), which the console's storage test mounts with too; what a
//! location may say is checked there as well.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use ferry_model::api::NfsVersion;

#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("mounting {device} (NFS {version}, options {options}) failed: {source}")]
    Mount {
        device: String,
        version: &'static str,
        options: String,
        source: io::Error,
    },
}

/// The versions to try, in order.
fn versions(v: NfsVersion) -> &'static [&'static str] {
    match v {
        NfsVersion::Automatic => &["4.1", "4.0", "3"],
        NfsVersion::Nfs3 => &["3"],
        NfsVersion::Nfs4_0 => &["4.0"],
        NfsVersion::Nfs4_1 => &["4.1"],
    }
}

/// Mounts `server:export[/subdirectory]` on `target`; returns the version used.
pub fn mount(
    server: &str,
    export: &str,
    subdirectory: Option<&str>,
    version: NfsVersion,
    mount_options: Option<&str>,
    target: &Path,
) -> Result<&'static str, NfsError> {
    let addr = resolve(server)?;
    mount_at(
        addr,
        &export_path(export, subdirectory),
        version,
        mount_options,
        target,
    )
}

/// The first address of `server`.
pub fn resolve(server: &str) -> Result<IpAddr, NfsError> {
    (server, 2049)
        .to_socket_addrs()
        .and_then(|mut a| {
            a.next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
        })
        .map(|a| a.ip())
        .map_err(|source| NfsError::Io {
            what: format!("resolve the NFS server {server}"),
            source,
        })
}

/// `export[/subdirectory]`, `/` when both are empty.
pub fn export_path(export: &str, subdirectory: Option<&str>) -> String {
    let mut path = export.trim_end_matches('/').to_string();
    if let Some(sub) = subdirectory
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
    {
        path.push('/');
        path.push_str(sub);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Mounts `path` of the server at `addr` on `target` (`mount_options` may
/// name its `port`); returns the version used.
pub fn mount_at(
    addr: IpAddr,
    path: &str,
    version: NfsVersion,
    mount_options: Option<&str>,
    target: &Path,
) -> Result<&'static str, NfsError> {
    // The mount points are the daemon's, below its private directory.
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(ferry_secure::DIR_MODE)
        .create(target)
        .map_err(|source| NfsError::Io {
            what: format!("create the mount point {}", target.display()),
            source,
        })?;
    let host = if addr.is_ipv6() {
        format!("[{addr}]")
    } else {
        addr.to_string()
    };
    let device = format!("{host}:{path}");
    let mut last = None;
    for &vers in versions(version) {
        let options = ferry_model::nfs::mount_options(vers, mount_options, addr);
        match mount_syscall(&device, target, ferry_model::nfs::fstype(vers), &options) {
            Ok(()) => return Ok(vers),
            Err(source) => {
                last = Some(NfsError::Mount {
                    device: device.clone(),
                    version: vers,
                    options,
                    source,
                })
            }
        }
    }
    Err(last.expect("at least one version is tried"))
}

fn mount_syscall(device: &str, target: &Path, fstype: &str, data: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let device = c(device)?;
    let target = c(&target.to_string_lossy())?;
    let fstype = c(fstype)?;
    let data = c(data)?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            device.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmounts; a busy or unreachable mount is detached instead. A link at
/// `target` is not followed (`UMOUNT_NOFOLLOW`).
pub fn unmount(target: &Path) -> io::Result<()> {
    let target = ferry_secure::c_path(target)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::UMOUNT_NOFOLLOW) } == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
