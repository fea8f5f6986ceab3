// SPDX-License-Identifier: GPL-2.0-only
//! Services: what the manifest says to run (`/usr/lib/ferry/services.yaml`,
//! written by the image builder) and how one is started: as its user, with
//! only its capabilities (ambient), no new privileges, output into the journal.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::seccomp;

/// The service list in the root file system.
pub const SERVICES: &str = "/usr/lib/ferry/services.yaml";

/// One supervised program.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// argv; the first element is an absolute path.
    pub exec: Vec<String>,
    /// User to run as (from the generated /etc/passwd); root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Capabilities kept (ambient), e.g. `CAP_NET_BIND_SERVICE`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// A terminal (`/dev/ttyS0`) for standard input, output and error, as
    /// the controlling terminal of a new session: the console menu.
    #[serde(default)]
    pub tty: Option<String>,
    /// Open-file limit (RLIMIT_NOFILE, soft and hard), set before the
    /// service starts: [`DEFAULT_OPEN_FILES`] when absent. ferry-agent's is
    /// sized for the hub's connections (see the image manifest).
    #[serde(default)]
    pub open_files: Option<u64>,
    /// The seccomp allow-list the service runs under (a
    /// [`seccomp::Profile`] name), installed just before exec.
    #[serde(default)]
    pub seccomp: Option<String>,
}

/// The open-file limit of a service that sets none: the kernel's usual
/// soft limit, made the hard one too, whatever PID 1 itself has.
pub const DEFAULT_OPEN_FILES: u64 = 1024;
/// Highest `open_files` accepted (the kernel's default `fs.nr_open`).
pub const MAX_OPEN_FILES: u64 = 1 << 20;

/// Parses the service list.
pub fn parse(text: &str) -> Result<Vec<Service>, String> {
    let list: Vec<Service> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    for s in &list {
        if s.exec.first().is_none_or(|p| !p.starts_with('/')) {
            return Err(format!(
                "service {}: exec must start with an absolute path",
                s.name
            ));
        }
        for c in &s.capabilities {
            cap_number(c).ok_or_else(|| format!("service {}: unknown capability {c}", s.name))?;
        }
        if let Some(p) = &s.seccomp {
            seccomp::Profile::from_name(p)
                .ok_or_else(|| format!("service {}: unknown seccomp profile {p}", s.name))?;
        }
        if let Some(n) = s.open_files {
            if !(16..=MAX_OPEN_FILES).contains(&n) {
                return Err(format!(
                    "service {}: open_files {n}: give 16 to {MAX_OPEN_FILES}",
                    s.name
                ));
            }
        }
    }
    Ok(list)
}

const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name.
pub fn cap_number(name: &str) -> Option<u32> {
    CAPS.iter().position(|c| *c == name).map(|p| p as u32)
}

/// A user from the generated /etc/passwd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Looks up a user in the built-in account table (see `accounts`).
pub fn lookup_user(name: &str) -> Option<Ids> {
    crate::accounts::USERS
        .iter()
        .find(|u| u.name == name)
        .map(|u| Ids {
            uid: u.uid,
            gid: u.gid,
        })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the child, after fork: become `ids` keeping exactly `caps`, as ambient
/// capabilities so they survive exec of a non-setcap binary.
fn drop_privileges(
    ids: Option<Ids>,
    caps: &[u32],
    open_files: u64,
    filter: Option<&seccompiler::BpfProgram>,
) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain syscalls on this process, between fork and exec.
    unsafe {
        // PID 1 blocks the signals it reads through a signalfd, and a
        // child inherits the mask (std does not reset it): a service
        // would never see SIGTERM, nor dropbear SIGCHLD.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &none,
            std::ptr::null_mut(),
        ))?;
        check(libc::setsid())?;
        // while still root: raising the hard limit needs CAP_SYS_RESOURCE
        let limit = libc::rlimit {
            rlim_cur: open_files as libc::rlim_t,
            rlim_max: open_files as libc::rlim_t,
        };
        check(libc::setrlimit(libc::RLIMIT_NOFILE, &limit))?;
        if let Some(ids) = ids {
            // Out of the bounding set too: a service running as root (the
            // agent, whose NFS requests must carry uid 0) would otherwise
            // get every capability back at exec.
            for c in 0..CAPS.len() as u32 {
                if !caps.contains(&c) {
                    check(libc::prctl(
                        libc::PR_CAPBSET_DROP,
                        c as libc::c_ulong,
                        0,
                        0,
                        0,
                    ))?;
                }
            }
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(ids.gid, ids.gid, ids.gid))?;
            check(libc::setresuid(ids.uid, ids.uid, ids.uid))?;
            let mut mask = [0u32; 2];
            for c in caps {
                mask[(*c / 32) as usize] |= 1 << (c % 32);
            }
            let mut hdr = CapHeader {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [
                CapData {
                    effective: mask[0],
                    permitted: mask[0],
                    inheritable: mask[0],
                },
                CapData {
                    effective: mask[1],
                    permitted: mask[1],
                    inheritable: mask[1],
                },
            ];
            check(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) as libc::c_int)?;
            for c in caps {
                check(libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    *c as libc::c_ulong,
                    0,
                    0,
                ))?;
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
    }
    // last: from here on only the exec is left to do
    if let Some(filter) = filter {
        seccomp::install(filter)?;
    }
    Ok(())
}

/// A stream into journald for a service's stdout/stderr (the journald
/// "stdout" protocol: a header of seven lines, then the text).
pub fn journal_stream(identifier: &str) -> Option<OwnedFd> {
    let mut s = UnixStream::connect("/run/systemd/journal/stdout").ok()?;
    let _ = s.shutdown(std::net::Shutdown::Read);
    s.write_all(format!("{identifier}\n\n6\n0\n0\n0\n0\n").as_bytes())
        .ok()?;
    Some(OwnedFd::from(s))
}

/// Starts a service; returns its pid.
pub fn spawn(s: &Service) -> io::Result<u32> {
    let ids = match &s.user {
        Some(u) => Some(
            lookup_user(u)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no user {u}")))?,
        ),
        None => None,
    };
    let caps: Vec<u32> = s
        .capabilities
        .iter()
        .filter_map(|c| cap_number(c))
        .collect();
    let mut cmd = Command::new(&s.exec[0]);
    cmd.args(&s.exec[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin")
        .envs(&s.environment)
        .current_dir("/")
        .stdin(Stdio::null());
    if let Some(tty) = &s.tty {
        // O_NOCTTY: PID 1 must not make it its own controlling terminal.
        // The service gets none either (drop_privileges starts a session):
        // no Ctrl-C or hangup signal reaches the menu from the line.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(tty)?;
        cmd.stdin(f.try_clone()?)
            .stdout(f.try_clone()?)
            .stderr(f)
            .env("TERM", "linux");
    } else {
        match (journal_stream(&s.name), journal_stream(&s.name)) {
            (Some(out), Some(err)) => {
                cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
            }
            _ => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
        }
    }
    // compiled here: the child may not allocate between fork and exec
    let filter = match s.seccomp.as_deref().map(seccomp::Profile::from_name) {
        None => None,
        Some(Some(p)) => Some(p.compile().map_err(io::Error::other)?),
        Some(None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown seccomp profile for {}", s.name),
            ))
        }
    };
    // SAFETY: drop_privileges only makes async-signal-safe syscalls.
    let open_files = s.open_files.unwrap_or(DEFAULT_OPEN_FILES);
    unsafe {
        cmd.pre_exec(move || drop_privileges(ids, &caps, open_files, filter.as_ref()));
    }
    let child = cmd.spawn()?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that writes the given fields of its /proc/self/status
    /// into `dir`/status.
    fn probe(dir: &std::path::Path, user: Option<&str>, caps: &[&str], fields: &str) -> Service {
        Service {
            name: "probe".into(),
            exec: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    // exec: the status is grep's own, not a shell's
                    "exec grep -E '^({fields})' /proc/self/status > {}",
                    dir.join("status").display()
                ),
            ],
            user: user.map(str::to_string),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            environment: BTreeMap::new(),
            tty: None,
            open_files: None,
            seccomp: None,
        }
    }

    /// Waits for the probe and returns what it wrote.
    fn probe_status(pid: u32, dir: &std::path::Path) -> String {
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        std::fs::read_to_string(dir.join("status")).unwrap()
    }

    #[test]
    fn parses_the_service_list() {
        let l = parse(
            "- name: chronyd\n  exec: [/usr/sbin/chronyd, -d]\n- name: agent\n  exec: [/usr/bin/ferry-agent]\n  user: ferry\n  capabilities: [CAP_NET_BIND_SERVICE]\n",
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].user.as_deref(), Some("ferry"));
        assert!(parse("- name: x\n  exec: [relative]\n").is_err());
        assert!(parse("- name: x\n  exec: [/x]\n  capabilities: [CAP_BOGUS]\n").is_err());
        assert!(parse("- name: x\n  exec: [/x]\n  usr: root\n").is_err());
        let l = parse("- name: x\n  exec: [/x]\n  open_files: 65536\n").unwrap();
        assert_eq!(l[0].open_files, Some(65536));
        for bad in ["0", "2000000"] {
            let e = parse(&format!("- name: x\n  exec: [/x]\n  open_files: {bad}\n")).unwrap_err();
            assert!(
                e.contains(&format!("service x: open_files {bad}: give 16 to")),
                "{e}"
            );
        }
        assert_eq!(cap_number("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(cap_number("CAP_SYS_TIME"), Some(25));
        assert_eq!(cap_number("CAP_MKNOD"), Some(27));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
    }

    #[test]
    fn a_service_starts_with_no_signal_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let s = probe(dir.path(), None, &[], "SigBlk");
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // as PID 1 does
        let mut mask = nix::sys::signal::SigSet::empty();
        mask.add(nix::sys::signal::Signal::SIGCHLD);
        mask.add(nix::sys::signal::Signal::SIGTERM);
        let old = mask
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
            .unwrap();
        let pid = spawn(&s);
        old.thread_set_mask().unwrap();
        let status = probe_status(pid.unwrap(), dir.path());
        assert_eq!(status.trim(), "SigBlk:\t0000000000000000");
    }

    /// Runs for real as root (CI is root); skipped cleanly otherwise.
    #[test]
    fn spawned_service_runs_unprivileged_with_only_its_capabilities() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let s = probe(
            dir.path(),
            Some("ferry"),
            &["CAP_NET_BIND_SERVICE"],
            "Uid|CapAmb|CapEff|NoNewPrivs",
        );
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let status = probe_status(spawn(&s).unwrap(), dir.path());
        assert!(status.contains("Uid:\t1000\t1000\t1000\t1000"), "{status}");
        assert!(status.contains("CapAmb:\t0000000000000400"), "{status}");
        assert!(status.contains("CapEff:\t0000000000000400"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }

    /// The limit is the service's (or the default), not PID 1's: ferry-agent
    /// is given room for the hub's connections. Raising it above PID 1's
    /// hard limit needs CAP_SYS_RESOURCE (PID 1 has it).
    #[test]
    fn a_service_gets_its_open_file_limit() {
        let can_raise = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << 24) != 0);
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: writes into `now`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        let hard = now.rlim_max;
        let dir = tempfile::tempdir().unwrap();
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let limits = |open_files: Option<u64>| {
            let mut s = probe(dir.path(), None, &[], "");
            s.exec[2] = format!(
                "grep '^Max open files' /proc/self/limits > {}",
                dir.path().join("status").display()
            );
            s.open_files = open_files;
            // from a parent whose limit is not the one wanted
            probe_status(spawn(&s).unwrap(), dir.path())
                .split_whitespace()
                .skip(3)
                .take(2)
                .map(|n| n.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(limits(None), [DEFAULT_OPEN_FILES, DEFAULT_OPEN_FILES]);
        assert_eq!(limits(Some(100)), [100, 100]);
        // above the default, up to what this process may give
        let high = if can_raise { 65536 } else { hard.min(65536) };
        assert_eq!(limits(Some(high)), [high, high]);
    }

    #[test]
    fn a_root_service_keeps_only_its_capabilities_across_exec() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let s = probe(
            dir.path(),
            Some("root"),
            &["CAP_DAC_OVERRIDE", "CAP_SYS_ADMIN"],
            "Uid|CapPrm|CapEff|CapBnd",
        );
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let status = probe_status(spawn(&s).unwrap(), dir.path());
        assert!(status.contains("Uid:\t0\t0\t0\t0"), "{status}");
        for set in ["CapPrm", "CapEff", "CapBnd"] {
            assert!(
                status.contains(&format!("{set}:\t0000000000200002")),
                "{set}: {status}"
            );
        }
    }

    /// A service with a profile runs under its filter (the kernel's view),
    /// and the list refuses what it lacks: the diagnostic list has no mkdir.
    #[test]
    fn a_service_runs_under_its_seccomp_list() {
        let dir = tempfile::tempdir().unwrap();
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut s = probe(dir.path(), None, &[], "Seccomp|NoNewPrivs");
        s.seccomp = Some("console".into());
        let status = probe_status(spawn(&s).unwrap(), dir.path());
        assert!(status.contains("Seccomp:\t2"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");

        let mut s = probe(dir.path(), None, &[], "");
        s.exec[2] = format!(
            "exec mkdir {} 2> {}",
            dir.path().join("made").display(),
            dir.path().join("status").display()
        );
        s.seccomp = Some("diag".into());
        let status = probe_status(spawn(&s).unwrap(), dir.path());
        assert!(status.contains("Operation not permitted"), "{status}");
        assert!(!dir.path().join("made").exists());

        s.seccomp = Some("nonsense".into());
        assert!(spawn(&s).is_err());
        assert!(parse("- name: x\n  exec: [/x]\n  seccomp: nonsense\n")
            .unwrap_err()
            .contains("unknown seccomp profile nonsense"));
    }
}
