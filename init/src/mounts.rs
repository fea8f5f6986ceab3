// SPDX-License-Identifier: GPL-2.0-only
//! The system stage's mounts: kernel file systems and tmpfs, each with
//! nosuid/nodev/noexec wherever the system allows.

use nix::mount::MsFlags;

use crate::error::{Context, Result};
use crate::sys::Sys;

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NSDE: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The mount table, in order. `dev_mounted`: the initramfs already moved
/// devtmpfs onto /dev.
pub fn table(dev_mounted: bool) -> Vec<Mount> {
    let m = |source, target, fstype, flags, data| Mount {
        source,
        target,
        fstype,
        flags,
        data,
    };
    let mut t = vec![
        m("proc", "/proc", "proc", NSDE, Some("hidepid=invisible")),
        m("sysfs", "/sys", "sysfs", NSDE, None),
    ];
    if !dev_mounted {
        t.push(m(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0755"),
        ));
    }
    t.extend([
        m(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0000"),
        ),
        m(
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            NSDE,
            Some("mode=1777,size=64m"),
        ),
        m("tmpfs", "/run", "tmpfs", NSDE, Some("mode=0755,size=64m")),
        m("tmpfs", "/tmp", "tmpfs", NSDE, Some("mode=1777,size=256m")),
        m("tmpfs", "/etc", "tmpfs", NSDE, Some("mode=0755,size=8m")),
        m("tmpfs", "/var", "tmpfs", NSDE, Some("mode=0755,size=64m")),
        m("cgroup2", "/sys/fs/cgroup", "cgroup2", NSDE, None),
        m(
            "securityfs",
            "/sys/kernel/security",
            "securityfs",
            NSDE,
            None,
        ),
    ]);
    t
}

/// Mounts the table.
pub fn mount_all(sys: &dyn Sys, table: &[Mount]) -> Result<()> {
    for m in table {
        sys.mkdir(m.target, 0o755)
            .ctx(|| format!("mkdir {}", m.target))?;
        sys.mount(m.source, m.target, Some(m.fstype), m.flags, m.data)
            .ctx(|| format!("mount {} on {}", m.fstype, m.target))?;
    }
    // directories the services expect under the fresh tmpfs
    for d in ["/run/ferry", "/run/systemd/journal", "/var/log"] {
        sys.mkdir(d, 0o755).ctx(|| format!("mkdir {d}"))?;
    }
    // clients that know the old path (chrony's command socket)
    sys.symlink("/run", "/var/run")
        .ctx(|| "symlink /var/run".into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    #[test]
    fn golden_mount_transcript() {
        let r = Recorder::new();
        mount_all(&r, &table(true)).unwrap();
        let t = r.transcript();
        let mounts: Vec<&String> = t.iter().filter(|l| l.starts_with("mount")).collect();
        assert_eq!(
            mounts,
            vec![
                "mount proc /proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC hidepid=invisible",
                "mount sysfs /sys sysfs MS_NOSUID | MS_NODEV | MS_NOEXEC -",
                "mount devpts /dev/pts devpts MS_NOSUID | MS_NOEXEC gid=5,mode=0620,ptmxmode=0000",
                "mount tmpfs /dev/shm tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=1777,size=64m",
                "mount tmpfs /run tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=0755,size=64m",
                "mount tmpfs /tmp tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=1777,size=256m",
                "mount tmpfs /etc tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=0755,size=8m",
                "mount tmpfs /var tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=0755,size=64m",
                "mount cgroup2 /sys/fs/cgroup cgroup2 MS_NOSUID | MS_NODEV | MS_NOEXEC -",
                "mount securityfs /sys/kernel/security securityfs MS_NOSUID | MS_NODEV | MS_NOEXEC -",
            ]
        );
        // every mount but /dev and /dev/pts is nosuid, nodev and noexec
        assert!(table(false)
            .iter()
            .all(|m| m.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)));
    }

    #[test]
    fn a_failed_mount_stops_with_context() {
        let mut r = Recorder::new();
        r.fail = Some("mount tmpfs /run".into());
        let e = mount_all(&r, &table(true)).unwrap_err().to_string();
        assert!(e.starts_with("mount tmpfs on /run:"), "{e}");
    }
}
