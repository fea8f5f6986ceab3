// SPDX-License-Identifier: GPL-2.0-only
//! Seccomp allow-lists: the system calls each of the appliance's programs
//! that face operators or the network may make, and nothing else.
//!
//! ferry-init installs a service's list between fork and exec (after
//! no_new_privs; see `services::spawn`); the diagnostic console, started by
//! dropbear, installs its own first thing. The filter is inherited by
//! children (journalctl, the `ferry` CLI), so a list holds what they need
//! too. A call outside the list fails with EPERM and, installed with
//! `SECCOMP_FILTER_FLAG_LOG`, leaves an audit line in the kernel log, which
//! ferry-init reports on the console ([`watch_denials`]): a denial is a bug
//! in a list, never silent.
//!
//! The lists were recorded with strace from the static (musl) binaries of
//! the image running the project's tests, journalctl included, and are
//! checked on the booted image by the end-to-end tests, which fail on any
//! denial. Left out on purpose, whatever a program is allowed otherwise:
//! ptrace, bpf, perf_event_open, module loading, kexec, reboot, keyrings,
//! io_uring, userfaultfd, namespaces (unshare, setns), chroot/pivot_root,
//! the new mount API, open_by_handle_at (a classic escape with
//! CAP_DAC_READ_SEARCH), and changes of identity.

use std::io;

use seccompiler::BpfProgram;

/// A list of system calls by name (seccompiler's x86_64 table gives the
/// numbers; a misspelt name fails to compile, and a unit test compiles all).
macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$(stringify!($name)),*]
    };
}

/// What every program here needs to run at all (Rust's std on musl, and
/// glibc's start-up for journalctl): memory, threads, signals, time, exit,
/// plain reads and writes on what it already holds. `execve` is here
/// because the filter is installed before the program is started.
const PROCESS: &[&str] = syscalls!(
    arch_prctl,
    brk,
    mmap,
    munmap,
    mremap,
    mprotect,
    madvise,
    set_tid_address,
    set_robust_list,
    rseq,
    futex,
    clone,
    exit,
    exit_group,
    gettid,
    getpid,
    getppid,
    getuid,
    geteuid,
    getgid,
    getegid,
    getresuid,
    getresgid,
    getgroups,
    rt_sigaction,
    rt_sigprocmask,
    rt_sigreturn,
    sigaltstack,
    tgkill,
    sched_yield,
    sched_getaffinity,
    clock_gettime,
    clock_getres,
    clock_nanosleep,
    nanosleep,
    gettimeofday,
    getrandom,
    uname,
    sysinfo,
    prlimit64,
    prctl,
    restart_syscall,
    execve,
    read,
    readv,
    write,
    writev,
    close,
    dup,
    dup2,
    dup3,
    fcntl,
    lseek,
    pread64,
    preadv,
);

/// Looking at files: opening, status, listing, links' targets.
const READ_FILES: &[&str] = syscalls!(
    open, openat, stat, fstat, lstat, newfstatat, statx, access, faccessat, faccessat2, readlink,
    readlinkat, getdents64, getcwd, statfs, fstatfs, fadvise64,
);

/// Changing files: what a sync writes, and a program's own state files.
const WRITE_FILES: &[&str] = syscalls!(
    pwrite64, pwritev, mkdir, mkdirat, rmdir, unlink, unlinkat, rename, renameat, renameat2,
    linkat, symlinkat, chmod, fchmod, fchmodat, fchmodat2, chown, fchown, fchownat, utimensat,
    fsync, fdatasync, ftruncate, fallocate, umask,
);

/// Waiting on several things at once (tokio, the console's timeouts).
const WAIT: &[&str] = syscalls!(
    poll,
    ppoll,
    epoll_create1,
    epoll_ctl,
    epoll_wait,
    epoll_pwait,
    eventfd2,
    pipe2,
);

/// Sockets as a client: TCP, UDP (DNS), unix sockets, netlink queries.
const CLIENT_SOCKETS: &[&str] = syscalls!(
    socket,
    connect,
    bind,
    getsockname,
    getpeername,
    setsockopt,
    getsockopt,
    sendto,
    recvfrom,
    sendmsg,
    recvmsg,
    shutdown,
);

/// Starting and waiting for children (journalctl, the `ferry` CLI).
const SPAWN: &[&str] = syscalls!(clone3, wait4, waitid);

/// mount(2) of NFS locations (the old API only) and their unmount.
const MOUNT: &[&str] = syscalls!(mount, umount2);

/// The agent's daemon: an HTTPS/activation server and a client of the hub,
/// a sync engine over local and NFS files (std's copy falls back from
/// copy_file_range to sendfile across file systems), device nodes for
/// PreserveDevices.
const AGENT_OWN: &[&str] = syscalls!(accept4, listen, copy_file_range, sendfile, mknodat);

/// The console menu: terminal control, the signal that makes ferry-init
/// apply a new configuration, waiting for a key with a timeout.
const CONSOLE_OWN: &[&str] = syscalls!(ioctl, kill, rt_sigtimedwait);

/// The diagnostic console: terminal queries (journalctl asks for the width).
const DIAG_OWN: &[&str] = syscalls!(ioctl);

/// A program with an allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// ferry-agent (service `ferry-agent`).
    Agent,
    /// `ferry-init console` (the console menu's services).
    Console,
    /// `ferry-init diag` (the support channel's diagnostic console).
    Diag,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Agent, Profile::Console, Profile::Diag];

    /// The name a service's `seccomp` field gives.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Agent => "agent",
            Profile::Console => "console",
            Profile::Diag => "diag",
        }
    }

    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    fn groups(self) -> &'static [&'static [&'static str]] {
        match self {
            Profile::Agent => &[
                PROCESS,
                READ_FILES,
                WRITE_FILES,
                WAIT,
                CLIENT_SOCKETS,
                MOUNT,
                AGENT_OWN,
            ],
            // the console writes the configuration document, tests NFS
            // storage (a mount) and runs journalctl and the ferry CLI
            Profile::Console => &[
                PROCESS,
                READ_FILES,
                WRITE_FILES,
                WAIT,
                CLIENT_SOCKETS,
                SPAWN,
                MOUNT,
                CONSOLE_OWN,
            ],
            // read-only: nothing that changes a file or a mount
            Profile::Diag => &[PROCESS, READ_FILES, WAIT, CLIENT_SOCKETS, SPAWN, DIAG_OWN],
        }
    }

    /// The allowed system calls, sorted by name, each once.
    pub fn syscalls(self) -> Vec<&'static str> {
        let mut all: Vec<&str> = self
            .groups()
            .iter()
            .flat_map(|g| g.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The filter: the listed calls pass, any other fails with EPERM (x32's
    /// numbers are in no list); a call of the i386 ABI kills the process.
    pub fn compile(self) -> Result<BpfProgram, CompileError> {
        let filter = serde_json::json!({
            self.name(): {
                "mismatch_action": { "errno": libc::EPERM },
                "match_action": "allow",
                "filter": self.syscalls().iter()
                    .map(|name| serde_json::json!({ "syscall": name }))
                    .collect::<Vec<_>>(),
            }
        });
        let mut map = seccompiler::compile_from_json(
            filter.to_string().as_bytes(),
            seccompiler::TargetArch::x86_64,
        )
        .map_err(|source| CompileError {
            profile: self.name(),
            source,
        })?;
        Ok(map.remove(self.name()).unwrap_or_default())
    }
}

/// A profile seccompiler refused (a call name it does not know).
#[derive(Debug, thiserror::Error)]
#[error("seccomp profile {profile}: {source}")]
pub struct CompileError {
    profile: &'static str,
    #[source]
    source: seccompiler::Error,
}

/// Installs a compiled filter on the calling thread (and what it will
/// exec). Async-signal-safe: two system calls, no allocation, so it may
/// run between fork and exec.
pub fn install(program: &BpfProgram) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        // seccompiler's sock_filter has the kernel's layout, as libc's does
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain syscalls; the kernel copies the program.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_LOG,
            &fprog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Compiles and installs a profile on this process (the diagnostic console,
/// which no ferry-init service starts).
pub fn confine(profile: Profile) -> io::Result<()> {
    let program = profile.compile().map_err(io::Error::other)?;
    install(&program)
}

/// A seccomp denial read from the kernel log: which program, which call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub pid: u32,
    pub comm: String,
    pub syscall: i64,
}

/// Parses the audit line the kernel logs for a logged seccomp action
/// (`audit: type=1326 … pid=812 comm="ferry-agent" … syscall=101 …
/// code=0x50000`). Lines of allowed calls are not logged at all.
pub fn parse_denial(line: &str) -> Option<Denial> {
    if !line.contains("type=1326") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    Some(Denial {
        pid: field("pid")?.parse().ok()?,
        comm: field("comm")?.trim_matches('"').to_string(),
        syscall: field("syscall")?.parse().ok()?,
    })
}

/// Reports every seccomp denial in the kernel log on the console and in
/// the journal, from a thread of its own (ferry-init's system stage).
pub fn watch_denials() {
    use std::io::{BufRead, BufReader, Seek, SeekFrom};
    let Ok(mut kmsg) = std::fs::File::open("/dev/kmsg") else {
        log::warn!("seccomp: cannot read /dev/kmsg; denials will not be reported");
        return;
    };
    // from now on: earlier records were before any filter
    let _ = kmsg.seek(SeekFrom::End(0));
    let spawned = std::thread::Builder::new()
        .name("seccomp-denials".into())
        .spawn(move || {
            // each read of /dev/kmsg returns one record ("pri,seq,ts,-;text")
            let mut lines = BufReader::new(kmsg);
            let mut record = String::new();
            loop {
                record.clear();
                match lines.read_line(&mut record) {
                    Ok(0) => return,
                    Ok(_) => {}
                    // EPIPE: records were overwritten before we read them
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    Err(_) => return,
                }
                if let Some(d) = parse_denial(&record) {
                    log::error!(
                        "seccomp: denied system call {} to {} (pid {}): its allow-list lacks it",
                        d.syscall,
                        d.comm,
                        d.pid
                    );
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("seccomp: cannot watch for denials: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child under `profile`; its exit code.
    fn in_child(profile: Profile, f: fn() -> i32) -> i32 {
        let program = profile.compile().unwrap();
        // SAFETY: the child makes only syscalls (the test's closure) and exits.
        unsafe {
            match libc::fork() {
                0 => {
                    let code = match install(&program) {
                        Ok(()) => f(),
                        Err(_) => 100,
                    };
                    libc::_exit(code)
                }
                pid => {
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, 0);
                    assert!(libc::WIFEXITED(status), "child died: {status:#x}");
                    libc::WEXITSTATUS(status)
                }
            }
        }
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn what_a_list_lacks_fails_with_eperm_and_what_it_has_works() {
        // ptrace is in no list
        for p in Profile::ALL {
            let code = in_child(p, || unsafe {
                let r = libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                if r == -1 && errno() == libc::EPERM {
                    0
                } else {
                    1
                }
            });
            assert_eq!(code, 0, "{}: ptrace was not refused", p.name());
        }
        // the agent makes directories; the diagnostic console may not
        let mkdir = || unsafe {
            let r = libc::mkdir(c"/no-such-dir-for-seccomp/x".as_ptr(), 0o700);
            // allowed: the kernel answers (the parent does not exist)
            match (r, errno()) {
                (-1, libc::ENOENT) => 0,
                (-1, libc::EPERM) => 2,
                _ => 1,
            }
        };
        assert_eq!(in_child(Profile::Agent, mkdir), 0);
        assert_eq!(in_child(Profile::Console, mkdir), 0);
        assert_eq!(in_child(Profile::Diag, mkdir), 2);
    }

    #[test]
    fn open_by_handle_at_and_namespaces_are_in_no_list() {
        for p in Profile::ALL {
            let names = p.syscalls();
            for banned in [
                "open_by_handle_at",
                "unshare",
                "setns",
                "ptrace",
                "bpf",
                "kexec_load",
            ] {
                assert!(!names.contains(&banned), "{}: {banned}", p.name());
            }
            assert!(names.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// What the diagnostic console runs: journalctl, a glibc program with
    /// threads of its own, started under the list (as dropbear's child is).
    #[test]
    fn journalctl_runs_under_the_diagnostic_list() {
        use std::os::unix::process::CommandExt;
        let journalctl = "/bin/journalctl";
        if !std::path::Path::new(journalctl).exists() {
            panic!("{journalctl} missing: scripts/setup installs systemd");
        }
        let program = Profile::Diag.compile().unwrap();
        let mut cmd = std::process::Command::new(journalctl);
        cmd.args(["--no-pager", "-q", "-n", "5"]);
        // SAFETY: install makes two syscalls and allocates nothing
        unsafe {
            cmd.pre_exec(move || install(&program));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "journalctl under the diag list: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_kernels_audit_line_gives_program_and_call() {
        let line = "6,1234,5678,-;audit: type=1326 audit(1733500000.123:42): auid=4294967295 \
                    uid=0 gid=0 ses=4294967295 pid=812 comm=\"ferry-agent\" \
                    exe=\"/usr/bin/ferry-agent\" sig=0 arch=c000003e syscall=101 compat=0 \
                    ip=0x7f0 code=0x50000";
        assert_eq!(
            parse_denial(line),
            Some(Denial {
                pid: 812,
                comm: "ferry-agent".into(),
                syscall: 101
            })
        );
        assert_eq!(parse_denial("6,1,2,-;eth0: link up"), None);
    }

    /// The kernel logs a denial (the filter asks it to) in the form
    /// [`parse_denial`] reads: what ferry-init's watcher reports.
    #[test]
    fn a_denial_reaches_the_kernel_log() {
        use std::io::{BufRead, BufReader, Seek, SeekFrom};
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(mut kmsg) = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
        else {
            eprintln!("skipped: /dev/kmsg is not readable here");
            return;
        };
        kmsg.seek(SeekFrom::End(0)).unwrap();
        let code = in_child(Profile::Diag, || unsafe {
            // the name the kernel logs as comm
            libc::prctl(libc::PR_SET_NAME, c"sc-log-probe".as_ptr());
            libc::mkdir(c"/no-such-dir-for-seccomp/x".as_ptr(), 0o700);
            0
        });
        assert_eq!(code, 0);
        let mut lines = BufReader::new(kmsg);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut record = String::new();
        loop {
            record.clear();
            match lines.read_line(&mut record) {
                Ok(_) => {
                    if let Some(d) = parse_denial(&record) {
                        if d.comm == "sc-log-probe" {
                            assert_eq!(d.syscall, libc::SYS_mkdir);
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) => panic!("read /dev/kmsg: {e}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no audit line for the denied mkdir in /dev/kmsg"
            );
        }
    }

    /// The README's security section lists each profile's calls as built.
    #[test]
    fn the_readme_lists_each_profiles_calls() {
        let readme = include_str!("../../README.md");
        let lines: Vec<String> = Profile::ALL
            .iter()
            .map(|p| {
                let names = p.syscalls();
                format!("- `{}`: {}", p.name(), names.join(" "))
            })
            .collect();
        assert!(
            lines.iter().all(|l| readme.contains(l.as_str())),
            "README.md must list the profiles as built:\n{}",
            lines.join("\n")
        );
    }
}
