// SPDX-License-Identifier: MIT
//! Schedules: standard five-field cron expressions (minute hour
//! day-of-month month day-of-week, in UTC), or a fixed interval written as
//! DataSync (and EventBridge) write one, `rate(12 hours)`; the shortest
//! interval is one minute. One check for the agent's API, its provisioning
//! and ferry-init's configuration document.

use chrono::{DateTime, Duration, Utc};
use croner::Cron;

/// A task's schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    Cron(Box<Cron>),
    /// Every this long, counted from when the schedule was set (or enabled
    /// again): a restart of the agent does not move its firings.
    Rate(Duration),
}

/// `rate(…)`'s units, singular (for 1) and plural, in seconds.
const RATE_UNITS: [(&str, &str, i64); 3] = [
    ("minute", "minutes", 60),
    ("hour", "hours", 3600),
    ("day", "days", 86_400),
];

/// The longest interval: a year.
const RATE_MAX_SECONDS: i64 = 366 * 86_400;

/// `N unit` inside `rate(…)`.
fn parse_rate(inner: &str, expr: &str) -> Result<Duration, String> {
    let how = "write rate(N minutes|hours|days), e.g. rate(12 hours), or rate(1 day) for one";
    let words: Vec<&str> = inner.split_whitespace().collect();
    let [n, unit] = words[..] else {
        return Err(format!("the schedule {expr:?} is not a rate: {how}"));
    };
    let n: i64 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        format!("the schedule {expr:?}: {n:?} is not a whole number from 1: {how}")
    })?;
    let seconds = RATE_UNITS
        .iter()
        .find(|(one, many, _)| unit == if n == 1 { *one } else { *many })
        .map(|u| u.2)
        .ok_or_else(|| format!("the schedule {expr:?}: {unit:?} is not a unit here: {how}"))?;
    n.checked_mul(seconds)
        .filter(|s| *s <= RATE_MAX_SECONDS)
        .map(Duration::seconds)
        .ok_or_else(|| format!("the schedule {expr:?} is longer than a year: use cron for that"))
}

impl Schedule {
    /// The first firing strictly after `after`; a rate's are `since` (when
    /// the schedule was set) plus whole intervals.
    pub fn next_after(
        &self,
        after: &DateTime<Utc>,
        since: &DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(cron) => cron.find_next_occurrence(after, false).ok(),
            Schedule::Rate(every) => {
                let every = every.num_seconds().max(1);
                let elapsed = (*after - *since).num_seconds();
                let intervals = if elapsed < 0 { 1 } else { elapsed / every + 1 };
                since.checked_add_signed(Duration::seconds(every.checked_mul(intervals)?))
            }
        }
    }
}

const FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Standard cron in one field: numbers, `*`, lists, ranges and steps, and
/// names for months and weekdays. croner's extensions (`L`, `W`, `#`, `?`)
/// are not: with some of them the search for the next firing runs for
/// hours (in the agent's scheduler, and in PID 1 it would hold the boot).
fn standard_field(field: &str, names: &[&str]) -> bool {
    field.split([',', '-', '/']).all(|t| {
        t == "*"
            || (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            || names.iter().any(|n| n.eq_ignore_ascii_case(t))
    })
}

/// Parses and checks a schedule; the message says what is wrong.
pub fn parse(expr: &str) -> Result<Schedule, String> {
    match expr
        .trim()
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
    {
        Some(inner) => parse_rate(inner, expr).map(Schedule::Rate),
        None => parse_cron(expr).map(|c| Schedule::Cron(Box::new(c))),
    }
}

/// Standard five-field cron, checked.
fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "the schedule {expr:?} has {} field(s), not five cron fields: give five (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\" for every hour, or a rate, e.g. \"rate(1 hour)\"",
            fields.len()
        ));
    }
    for (i, field) in fields.iter().enumerate() {
        let names: &[&str] = match i {
            3 => &MONTHS,
            4 => &DAYS,
            _ => &[],
        };
        if !standard_field(field, names) {
            return Err(format!(
                "the schedule {expr:?} is not standard cron: its {} field {field:?} may hold numbers, *, lists (1,15), ranges (1-5) and steps (*/15){}",
                FIELDS[i],
                if names.is_empty() { "" } else { ", and names (JAN, MON)" }
            ));
        }
    }
    let cron = Cron::new(expr)
        .parse()
        .map_err(|e| format!("the schedule {expr:?} is not a valid cron expression: {e}"))?;
    // A valid expression may name a day that no month has (31 February).
    if cron.find_next_occurrence(&Utc::now(), false).is_err() {
        return Err(format!(
            "the schedule {expr:?} never occurs: no date matches its day and month"
        ));
    }
    Ok(cron)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_fields_only_and_every_minute_is_allowed() {
        assert!(parse("* * * * *").is_ok());
        assert!(parse("*/15 2 * * 1-5").is_ok());
        assert!(parse("0 * * * * *").unwrap_err().contains("6 field(s)"));
        assert!(parse("61 * * * *").is_err());
        assert!(parse("every hour").is_err());
    }

    /// Found by the `cron` fuzz target: croner's extensions (`L`, `W`, `#`,
    /// `?`) were let through, and `L` in the minute field made the search
    /// for the next firing run minute by minute to the year 5000 (hours),
    /// in the scheduler's loop.
    #[test]
    fn only_standard_cron_syntax_is_accepted() {
        for expr in [
            "L * * * *",
            "0 L * * *",
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * * 5L",
            "0 0 ? * MON#2",
        ] {
            let e = parse(expr).unwrap_err();
            assert!(e.contains("standard cron"), "{expr}: {e}");
        }
        assert!(parse("0 12 1,15 JAN-JUN,dec MON-FRI").is_ok());
        assert!(parse("*/5 0-23/2 * * sun,sat").is_ok());
    }

    #[test]
    fn a_schedule_that_never_occurs_is_refused() {
        let e = parse("0 0 31 2 *").unwrap_err();
        assert!(e.contains("never occurs"), "{e}");
        assert!(parse("0 0 30 2 *").is_err());
        assert!(parse("0 0 31 4 *").is_err());
        // every fourth year is enough
        assert!(parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn next_firing_is_strictly_later() {
        let cron = parse("*/5 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap();
        assert_eq!(
            cron.next_after(&t, &t).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 10, 0).unwrap()
        );
    }

    #[test]
    fn rates_are_written_as_datasync_writes_them() {
        let seconds = |expr: &str| match parse(expr).unwrap() {
            Schedule::Rate(d) => d.num_seconds(),
            Schedule::Cron(_) => panic!("{expr} is a rate"),
        };
        assert_eq!(seconds("rate(1 minute)"), 60);
        assert_eq!(seconds("rate(12 hours)"), 12 * 3600);
        assert_eq!(seconds(" rate(7 days) "), 7 * 86_400);
        for (bad, why) in [
            ("rate(1 minutes)", "not a unit"),
            ("rate(2 hour)", "not a unit"),
            ("rate(0 minutes)", "whole number from 1"),
            ("rate(-1 minutes)", "whole number from 1"),
            ("rate(1.5 hours)", "whole number from 1"),
            ("rate(5 weeks)", "not a unit"),
            ("rate(5)", "not a rate"),
            ("rate()", "not a rate"),
            ("rate(367 days)", "longer than a year"),
            ("rate(99999999999999 days)", "longer than a year"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(parse("rate(1 hour").unwrap_err().contains("field(s)"));
    }

    #[test]
    fn a_rate_fires_at_whole_intervals_from_when_it_was_set() {
        let every_6h = parse("rate(6 hours)").unwrap();
        let set = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap();
        assert_eq!(every_6h.next_after(&set, &set), Some(at(16, 30)));
        // After a restart at 17:00: still on the half hour, six hours on.
        assert_eq!(every_6h.next_after(&at(17, 0), &set), Some(at(22, 30)));
        assert_eq!(every_6h.next_after(&at(16, 30), &set), Some(at(22, 30)));
        // A clock behind when it was set: the first interval.
        assert_eq!(every_6h.next_after(&at(9, 0), &set), Some(at(16, 30)));
    }
}
