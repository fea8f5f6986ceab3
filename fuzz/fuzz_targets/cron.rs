// SPDX-License-Identifier: MIT
//! Schedules: a task's cron or rate expression (API, configuration
//! document), and the next firings the scheduler computes from it, from a
//! few instants (month and year ends, a leap day, the far end of a 32-bit
//! clock), a rate counted from the first.
//!
//! Input: the expression.
#![no_main]

use chrono::{DateTime, Utc};
use ferry_daemon::schedule;
use libfuzzer_sys::fuzz_target;

const FROM: [i64; 4] = [
    0,             // 1970-01-01 00:00
    1_767_225_599, // 2025-12-31 23:59:59
    1_835_481_599, // 2028-02-29 23:59:59
    4_102_444_799, // 2099-12-31 23:59:59
];

fuzz_target!(|expr: &str| {
    let Ok(schedule) = schedule::parse(expr) else {
        return;
    };
    let since = DateTime::<Utc>::from_timestamp(FROM[0], 0).expect("in range");
    for secs in FROM {
        let mut t = DateTime::<Utc>::from_timestamp(secs, 0).expect("in range");
        // the scheduler's steps: next, then next after that
        for _ in 0..3 {
            match schedule.next_after(&t, &since) {
                Some(next) => t = next,
                None => break,
            }
        }
    }
});
