// SPDX-License-Identifier: GPL-2.0-only
//! Supervision: start services, restart them when they end, with an
//! exponential backoff (1 s, 2 s, 4 s... 60 s) that resets once a run lasted
//! long enough. A crash loop is logged as an error, so it shows on the
//! console and in the journal.

use std::time::{Duration, Instant};

use crate::reaper::Exit;

/// A run shorter than this counts as a crash.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Longest wait between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// This many crashes in a row is reported as a crash loop.
pub const CRASH_LOOP: u32 = 5;

/// Delay before restart after `crashes` short runs in a row.
pub fn backoff(crashes: u32) -> Duration {
    let secs = 1u64 << crashes.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

#[derive(Debug)]
struct Slot<S> {
    spec: S,
    name: String,
    pid: Option<u32>,
    started: Instant,
    crashes: u32,
    restart_at: Option<Instant>,
}

/// Supervised services. `S` is what the spawner needs to start one.
pub struct Supervisor<S> {
    slots: Vec<Slot<S>>,
    stopping: bool,
}

impl<S> Supervisor<S> {
    pub fn new() -> Supervisor<S> {
        Supervisor {
            slots: Vec::new(),
            stopping: false,
        }
    }

    /// Adds and starts a service.
    pub fn start(
        &mut self,
        name: &str,
        spec: S,
        now: Instant,
        spawn: &mut dyn FnMut(&S) -> std::io::Result<u32>,
    ) {
        let mut slot = Slot {
            spec,
            name: name.to_string(),
            pid: None,
            started: now,
            crashes: 0,
            restart_at: None,
        };
        Self::launch(&mut slot, now, spawn);
        self.slots.push(slot);
    }

    fn launch(slot: &mut Slot<S>, now: Instant, spawn: &mut dyn FnMut(&S) -> std::io::Result<u32>) {
        slot.restart_at = None;
        slot.started = now;
        match spawn(&slot.spec) {
            Ok(pid) => {
                log::info!("service {}: started (pid {pid})", slot.name);
                slot.pid = Some(pid);
            }
            Err(e) => {
                slot.crashes += 1;
                let wait = backoff(slot.crashes);
                log::error!(
                    "service {}: cannot start: {e}; retrying in {} s",
                    slot.name,
                    wait.as_secs()
                );
                slot.restart_at = Some(now + wait);
            }
        }
    }

    /// Handles the end of a process. Returns false if it was not a service.
    pub fn exited(&mut self, pid: u32, how: Exit, now: Instant) -> bool {
        let stopping = self.stopping;
        let Some(slot) = self.slots.iter_mut().find(|s| s.pid == Some(pid)) else {
            return false;
        };
        slot.pid = None;
        if stopping {
            log::info!("service {}: stopped ({how})", slot.name);
            return true;
        }
        let ran = now.duration_since(slot.started);
        if ran >= STABLE_AFTER {
            slot.crashes = 0;
        }
        slot.crashes += 1;
        let wait = backoff(slot.crashes);
        slot.restart_at = Some(now + wait);
        if slot.crashes >= CRASH_LOOP {
            log::error!(
                "service {}: crash loop: ended with {how} after {:.1} s, {} times in a row; restarting in {} s",
                slot.name,
                ran.as_secs_f64(),
                slot.crashes,
                wait.as_secs()
            );
        } else {
            log::warn!(
                "service {}: ended with {how} after {:.1} s; restarting in {} s",
                slot.name,
                ran.as_secs_f64(),
                wait.as_secs()
            );
        }
        true
    }

    /// Restarts services whose backoff has passed.
    pub fn tick(&mut self, now: Instant, spawn: &mut dyn FnMut(&S) -> std::io::Result<u32>) {
        if self.stopping {
            return;
        }
        for slot in &mut self.slots {
            if slot.restart_at.is_some_and(|t| t <= now) {
                Self::launch(slot, now, spawn);
            }
        }
    }

    /// When the next restart is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.restart_at).min()
    }

    /// Running services, newest first (the order to stop them).
    pub fn running_for_stop(&self) -> Vec<(String, u32)> {
        self.slots
            .iter()
            .rev()
            .filter_map(|s| s.pid.map(|p| (s.name.clone(), p)))
            .collect()
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.slots.iter().any(|s| s.name == name && s.pid.is_some())
    }

    /// Forgets a service (no more restarts); returns its pid if it runs, for
    /// the caller to stop. Its exit is then reaped as any other process's.
    pub fn remove(&mut self, name: &str) -> Option<u32> {
        let i = self.slots.iter().position(|s| s.name == name)?;
        self.slots.remove(i).pid
    }

    /// No more restarts: the system is going down.
    pub fn stop_all(&mut self) {
        self.stopping = true;
        for s in &mut self.slots {
            s.restart_at = None;
        }
    }
}

impl<S> Default for Supervisor<S> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let b: Vec<u64> = (1..=9).map(|c| backoff(c).as_secs()).collect();
        assert_eq!(b, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn crash_loop_backs_off_and_a_stable_run_resets() {
        let t0 = Instant::now();
        let mut next_pid = 100;
        let mut spawned = Vec::new();
        let mut spawn = |s: &&str| {
            next_pid += 1;
            spawned.push((s.to_string(), next_pid));
            Ok(next_pid)
        };
        let mut sup = Supervisor::new();
        sup.start("agent", "agent-spec", t0, &mut spawn);
        assert!(sup.is_running("agent"));
        // crashes immediately, three times
        let mut now = t0;
        let mut pid = 101;
        for expected_wait in [1, 2, 4] {
            assert!(sup.exited(pid, Exit::Code(1), now));
            assert!(!sup.is_running("agent"));
            let due = sup.next_deadline().unwrap();
            assert_eq!(due - now, Duration::from_secs(expected_wait));
            sup.tick(due - Duration::from_millis(1), &mut spawn);
            assert!(!sup.is_running("agent"), "restarted too early");
            now = due;
            sup.tick(now, &mut spawn);
            assert!(sup.is_running("agent"));
            pid += 1;
        }
        // a long run resets the count
        now += STABLE_AFTER;
        assert!(sup.exited(pid, Exit::Signal(9), now));
        assert_eq!(sup.next_deadline().unwrap() - now, Duration::from_secs(1));
        // unknown pids are not services
        assert!(!sup.exited(4242, Exit::Code(0), now));

        assert_eq!(spawned.len(), 4);
    }

    #[test]
    fn nothing_restarts_while_stopping() {
        let t0 = Instant::now();
        let mut spawn = |_: &()| Ok(7);
        let mut sup = Supervisor::new();
        sup.start("a", (), t0, &mut spawn);
        assert_eq!(sup.running_for_stop(), vec![("a".to_string(), 7)]);
        sup.stop_all();
        assert!(sup.exited(7, Exit::Signal(15), t0));
        assert_eq!(sup.next_deadline(), None);
        sup.tick(t0 + Duration::from_secs(100), &mut spawn);
        assert!(!sup.is_running("a"));
    }

    #[test]
    fn a_removed_service_is_not_restarted() {
        let t0 = Instant::now();
        let mut spawn = |_: &()| Ok(9);
        let mut sup = Supervisor::new();
        sup.start("dropbear", (), t0, &mut spawn);
        assert_eq!(sup.remove("dropbear"), Some(9));
        assert_eq!(sup.remove("dropbear"), None);
        assert!(!sup.exited(9, Exit::Signal(15), t0));
        assert_eq!(sup.next_deadline(), None);
    }
}
