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

/// Parses and checks a schedule; the message says what is wrong.
pub fn parse(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "the schedule {expr:?} has {fields} field(s): give five (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\" for every hour"
        ));
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
