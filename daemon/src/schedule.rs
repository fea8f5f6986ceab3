// SPDX-License-Identifier: MIT
//! Schedules: standard five-field cron expressions (minute hour day month
//! weekday, in UTC) or rates (`rate(12 hours)`, counted from when the
//! schedule was set), checked by `ferry_model::schedule`; the shortest
//! interval is one minute. A scheduled start while the task already has an
//! execution waiting adds nothing; while one runs, it queues one (never
//! two). A disabled schedule fires nothing: an operator's, or one whose
//! task kept failing the same way ([`super::agent::SCHEDULE_FAILURES_IN_A_ROW`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::agent::Agent;
use ferry_model::api as records;

/// The check, shared with ferry-init's configuration document (one
/// definition, in ferry-model).
pub use ferry_model::schedule::{parse, Schedule};

/// Whether a schedule fires at `now`; moves `next` on when it does. A
/// schedule with no next firing (`None`) never fires.
fn due(
    next: &mut Option<DateTime<Utc>>,
    schedule: &Schedule,
    since: &DateTime<Utc>,
    now: &DateTime<Utc>,
) -> bool {
    if next.is_some_and(|t| t <= *now) {
        *next = schedule.next_after(now, since);
        return true;
    }
    false
}

/// Starts scheduled tasks when their time comes. Firings missed while the
/// agent was down are not made up (as with cron).
pub fn run(agent: Arc<Agent>) {
    // By task: the expression and since when it holds, and the next firing
    // (`None`: the expression never occurs; it never fires).
    type Key = (String, String);
    let mut next: HashMap<String, (Key, Option<DateTime<Utc>>)> = HashMap::new();
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
            let (Some(expr), Some(details)) = (&task.schedule, &task.schedule_details) else {
                next.remove(&task.task_id);
                continue;
            };
            if details.status != records::ENABLED {
                next.remove(&task.task_id);
                continue;
            }
            let since = DateTime::parse_from_rfc3339(&details.status_update_time)
                .map_or(now, |t| t.with_timezone(&Utc));
            // A new, changed or enabled again schedule counts from now.
            let key = (expr.clone(), details.status_update_time.clone());
            let seen = next.get(&task.task_id).is_some_and(|(k, _)| *k == key);
            // Stored by an older agent that did not check it: never fires.
            let schedule = match parse(expr) {
                Ok(s) => s,
                Err(why) => {
                    if !seen {
                        agent.events.warn(&format!(
                            "task {}: it is not started on its schedule: {why}",
                            task.task_id
                        ));
                        next.insert(task.task_id.clone(), (key, None));
                    }
                    continue;
                }
            };
            if !seen {
                let first = schedule.next_after(&now, &since);
                next.insert(task.task_id.clone(), (key, first));
            }
            let entry = next.get_mut(&task.task_id).expect("inserted above");
            if due(&mut entry.1, &schedule, &since, &now) {
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
    fn a_schedule_fires_once_per_firing_and_one_that_never_occurs_never() {
        // as an older agent stored it, without the check
        let never = Schedule::Cron(Box::new(croner::Cron::new("0 0 31 2 *").parse().unwrap()));
        assert!(parse("0 0 31 2 *").is_err());
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap();
        let mut next = never.next_after(&now, &now);
        assert_eq!(next, None);
        for s in 0..10 {
            let t = now + chrono::Duration::milliseconds(500 * s);
            assert!(!due(&mut next, &never, &now, &t));
        }
        let later = Utc.with_ymd_and_hms(2026, 1, 1, 10, 10, 0).unwrap();
        for expr in ["*/5 * * * *", "rate(5 minutes)"] {
            let every_5 = parse(expr).unwrap();
            let mut next = every_5.next_after(&now, &now);
            assert!(!due(&mut next, &every_5, &now, &now), "{expr}");
            assert!(due(&mut next, &every_5, &now, &later), "{expr}");
            assert!(
                !due(&mut next, &every_5, &now, &later),
                "{expr}: once per firing"
            );
        }
    }
}
