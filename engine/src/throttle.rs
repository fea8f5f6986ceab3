// SPDX-License-Identifier: MIT
//! BytesPerSecond: one budget shared by every worker of an execution.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` bytes a second, bursts of at most one second's worth.
pub struct Throttle {
    rate: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Self {
        Throttle {
            rate: AtomicU64::new(bytes_per_second.max(1)),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Changes the rate while an execution runs.
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second.max(1), Ordering::Relaxed);
    }

    /// Waits until `bytes` may be sent.
    pub fn take(&self, bytes: u64) {
        let wait = {
            let rate = self.rate.load(Ordering::Relaxed) as f64;
            let mut state = self.state.lock().unwrap();
            let (tokens, last) = &mut *state;
            let now = Instant::now();
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
            *last = now;
            *tokens -= bytes as f64;
            // In debt: this caller waits for the debt to be paid back.
            if *tokens < 0.0 {
                Duration::from_secs_f64(-*tokens / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_makes_callers_wait() {
        let t = Throttle::new(1_000_000);
        let start = Instant::now();
        // A full second's burst is not available at start: 200 KB costs ~0.2 s.
        t.take(200_000);
        assert!(start.elapsed() >= Duration::from_millis(150));
    }
}
