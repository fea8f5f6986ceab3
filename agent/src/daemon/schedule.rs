//! Schedules: standard five-field cron expressions (minute hour day month
//! weekday, in UTC), so the shortest interval is one minute. A scheduled
//! start while the task already has an execution waiting adds nothing; while
//! one runs, it queues one (never two).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

use super::Agent;

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
    Cron::new(expr)
        .parse()
        .map_err(|e| format!("the schedule {expr:?} is not a valid cron expression: {e}"))
}

/// The first firing strictly after `after`.
pub fn next_after(cron: &Cron, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(after, false).ok()
}

/// Starts scheduled tasks when their time comes. Firings missed while the
/// agent was down are not made up (as with cron).
pub fn run(agent: Arc<Agent>) {
    let mut next: HashMap<String, (String, DateTime<Utc>)> = HashMap::new();
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
            let Ok(cron) = parse(expr) else { continue };
            // A new or changed schedule counts from now.
            let entry = next
                .entry(task.task_id.clone())
                .or_insert_with(|| (expr.clone(), next_after(&cron, &now).unwrap_or(now)));
            if &entry.0 != expr {
                *entry = (expr.clone(), next_after(&cron, &now).unwrap_or(now));
            }
            if entry.1 <= now {
                entry.1 = next_after(&cron, &now).unwrap_or(now);
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
    fn next_firing_is_strictly_later() {
        let cron = parse("*/5 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap();
        assert_eq!(
            next_after(&cron, &t).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 10, 0).unwrap()
        );
    }
}
