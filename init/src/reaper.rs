// SPDX-License-Identifier: GPL-2.0-only
//! Zombie reaping that never steals an exit status.
//!
//! PID 1 inherits every orphan and must reap it. Code that runs a command and
//! waits for it (mke2fs, e2fsck...) would lose the exit status if the reaper's
//! `waitpid(-1)` collected it first. As in the Kata agent, both take one
//! lock: [`run`] holds it from spawn to wait, [`reap`] while it loops over
//! `waitpid(-1, WNOHANG)`.

use std::io;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

static CHILDREN: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds the reaper off (for code that spawns and waits by itself).
pub fn hold() -> MutexGuard<'static, ()> {
    lock()
}

/// Serializes tests that spawn children (one test's reaper would reap
/// another test's child, as an init would).
#[cfg(test)]
pub static TEST_CHILDREN: Mutex<()> = Mutex::new(());

/// Runs a command to completion and returns its output, with the reaper
/// held off so the status is ours.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let _g = lock();
    cmd.output()
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(
                f,
                "signal {}",
                nix::sys::signal::Signal::try_from(*s)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| s.to_string())
            ),
        }
    }
}

/// Collects every child that has ended; calls `on_exit` for each.
pub fn reap(mut on_exit: impl FnMut(Pid, Exit)) {
    let _g = lock();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => on_exit(pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => on_exit(pid, Exit::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn reaper_never_steals_a_waited_status() {
        let _t = TEST_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // a reaper looping as hard as it can, as PID 1's would on SIGCHLD
        let reaper = std::thread::spawn(move || {
            let mut reaped = 0;
            while !s.load(Ordering::Relaxed) {
                reap(|_, _| reaped += 1);
                std::thread::sleep(Duration::from_micros(50));
            }
            reaped
        });
        for i in 0..20 {
            let out =
                run(Command::new("sh")
                    .args(["-c", &format!("sleep 0.0{}; exit {}", i % 3, 3 + i % 5)]))
                .expect("spawn sh");
            assert_eq!(out.status.code(), Some(3 + i % 5), "iteration {i}");
        }
        stop.store(true, Ordering::Relaxed);
        reaper.join().unwrap();
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by reap(), as PID 1 does
    fn reaps_orphans_with_their_status() {
        let _t = TEST_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        let _child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let pid = Pid::from_raw(_child.id() as i32);
        let mut seen = None;
        for _ in 0..200 {
            reap(|p, e| {
                if p == pid {
                    seen = Some(e)
                }
            });
            if seen.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(seen, Some(Exit::Code(7)));
        assert_eq!(Exit::Signal(15).to_string(), "signal SIGTERM");
    }
}
