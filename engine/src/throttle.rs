// SPDX-License-Identifier: MIT
//! BytesPerSecond: one budget shared by every worker of an execution.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` bytes a second, bursts of at most one second's
/// worth; or no limit. The limit can change while an execution runs
/// (DataSync's UpdateTaskExecution), so every execution has one.
pub struct Throttle {
    /// Bytes a second; 0: no limit.
    rate: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `None`: no limit.
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        let t = Throttle {
            rate: AtomicU64::new(0),
            state: Mutex::new((0.0, Instant::now())),
        };
        t.set_limit(bytes_per_second);
        t
    }

    /// Changes the limit (`None`: none) while an execution runs.
    pub fn set_limit(&self, bytes_per_second: Option<u64>) {
        let rate = bytes_per_second.map_or(0, |r| r.max(1));
        // The debt taken at the old limit is paid at the new one (by the
        // callers waiting); the bucket starts again.
        *self.state.lock().unwrap() = (0.0, Instant::now());
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// The limit, if any.
    pub fn limit(&self) -> Option<u64> {
        match self.rate.load(Ordering::Relaxed) {
            0 => None,
            r => Some(r),
        }
    }

    /// Waits until `bytes` may be sent.
    pub fn take(&self, bytes: u64) {
        let Some(rate) = self.limit() else {
            return;
        };
        let mut debt = {
            let rate = rate as f64;
            let mut state = self.state.lock().unwrap();
            let (tokens, last) = &mut *state;
            let now = Instant::now();
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
            *last = now;
            *tokens -= bytes as f64;
            // In debt: this caller waits for the debt to be paid back.
            (-*tokens).max(0.0)
        };
        // Paid back at the limit in force, looked at every tenth of a
        // second: one changed or lifted while callers wait (a debt of
        // minutes at a low limit) holds them no longer than that.
        while debt > 0.0 {
            let Some(rate) = self.limit() else {
                return;
            };
            let slice = (debt / rate as f64).min(0.1);
            std::thread::sleep(Duration::from_secs_f64(slice));
            debt -= slice * rate as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_makes_callers_wait() {
        let t = Throttle::new(Some(1_000_000));
        let start = Instant::now();
        // A full second's burst is not available at start: 200 KB costs ~0.2 s.
        t.take(200_000);
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn a_limit_can_come_and_go() {
        let t = Throttle::new(None);
        assert_eq!(t.limit(), None);
        t.set_limit(Some(1_000));
        assert_eq!(t.limit(), Some(1_000));
        t.set_limit(Some(0));
        assert_eq!(t.limit(), Some(1), "0 is the slowest, not none");
        t.set_limit(None);
        // Without a limit nothing waits, however much is taken.
        let start = Instant::now();
        t.take(u64::MAX / 2);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_limit_lifted_frees_callers_waiting_on_a_debt() {
        let t = std::sync::Arc::new(Throttle::new(Some(1_000)));
        // A debt of 1,000 seconds at this limit.
        let waiting = {
            let t = t.clone();
            std::thread::spawn(move || t.take(1_000_000))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiting.is_finished());
        t.set_limit(None);
        // Lifted: the caller goes on within its next look.
        let start = Instant::now();
        waiting.join().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still paying 1,000 s"
        );
    }
}
