//! Schedules: standard five-field cron expressions (minute hour day month
//! weekday, in UTC), so the shortest interval is one minute. A scheduled
//! start while the task already has an execution waiting adds nothing; while
//! one runs, it queues one (never two).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

use super::agent::Agent;

const FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Standard cron in one field: numbers, `*`, lists, ranges and steps, and
/// names for months and weekdays. croner's extensions (`L`, `W`, `#`, `?`)
/// are not: with some of them the search for the next firing runs for hours.
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
            "the schedule {expr:?} has {} field(s): give five (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\" for every hour",
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

/// Whether a schedule fires at `now`; moves `next` on when it does. A
/// schedule with no next firing (`None`) never fires.
fn due(next: &mut Option<DateTime<Utc>>, cron: &Cron, now: &DateTime<Utc>) -> bool {
    if next.is_some_and(|t| t <= *now) {
        *next = next_after(cron, now);
        return true;
    }
    false
}

/// Starts scheduled tasks when their time comes. Firings missed while the
/// agent was down are not made up (as with cron).
pub fn run(agent: Arc<Agent>) {
    // `None`: the expression never occurs (stored by an older agent that
    // did not check); it never fires.
    let mut next: HashMap<String, (String, Option<DateTime<Utc>>)> = HashMap::new();
    loop {
        let now = Utc::now();
        let tasks = match agent.store.lock().unwrap().tasks() {
            Ok(t) => t,
            Err(e) => {
                agent
                    .events
                    .warn(&format!("scheduler: cannot read tasks: {e}"));
                Vec::new()
            }
        };
        next.retain(|id, _| tasks.iter().any(|t| &t.task_id == id));
        for task in &tasks {
            let Some(expr) = &task.schedule else {
                next.remove(&task.task_id);
                continue;
            };
            let cron = match Cron::new(expr).parse() {
                Ok(c) => c,
                Err(_) => continue,
            };
            // A new or changed schedule counts from now.
            let changed = next.get(&task.task_id).is_none_or(|(e, _)| e != expr);
            if changed {
                let first = next_after(&cron, &now);
                if first.is_none() {
                    agent.events.warn(&format!(
                        "schedule {expr:?} of task {} never occurs: it does not start the task",
                        task.task_id
                    ));
                }
                next.insert(task.task_id.clone(), (expr.clone(), first));
            }
            let entry = next.get_mut(&task.task_id).expect("inserted above");
            if due(&mut entry.1, &cron, &now) {
                match agent.start_scheduled(&task.task_id) {
                    Ok(Some(id)) => agent.events.info(&format!(
                        "schedule {expr:?} started task {} as {id}",
                        task.task_id
                    )),
                    Ok(None) => agent.events.info(&format!(
                        "schedule {expr:?}: task {} already has an execution queued; not adding another",
                        task.task_id
                    )),
                    Err(e) => agent.events.warn(&format!(
                        "schedule {expr:?}: cannot start task {}: {e}",
                        task.task_id
                    )),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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
    fn a_stored_schedule_that_never_occurs_never_fires() {
        // as an older agent stored it, without the check
        let cron = Cron::new("0 0 31 2 *").parse().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap();
        let mut next = next_after(&cron, &now);
        assert_eq!(next, None);
        for s in 0..10 {
            let t = now + chrono::Duration::milliseconds(500 * s);
            assert!(!due(&mut next, &cron, &t));
        }
        let cron = parse("*/5 * * * *").unwrap();
        let mut next = next_after(&cron, &now);
        assert!(!due(&mut next, &cron, &now));
        let later = Utc.with_ymd_and_hms(2026, 1, 1, 10, 10, 0).unwrap();
        assert!(due(&mut next, &cron, &later));
        assert!(!due(&mut next, &cron, &later), "once per firing");
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
