// SPDX-License-Identifier: MIT
//! Schedules: standard five-field cron expressions (minute hour
//! day-of-month month day-of-week, in UTC), so the shortest interval is one
//! minute. One check for the agent's API, its provisioning and ferry-init's
//! configuration document.

use chrono::{DateTime, Utc};
use croner::Cron;

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
pub fn parse(expr: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "the schedule {expr:?} has {} field(s), not five cron fields: give five (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\" for every hour",
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
    if next_after(&cron, &Utc::now()).is_none() {
        return Err(format!(
            "the schedule {expr:?} never occurs: no date matches its day and month"
        ));
    }
    Ok(cron)
}

/// The first firing strictly after `after`.
pub fn next_after(cron: &Cron, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(after, false).ok()
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
            next_after(&cron, &t).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 10, 0).unwrap()
        );
    }
}
