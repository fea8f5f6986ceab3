// SPDX-License-Identifier: MIT
//! Schedules: standard five-field cron expressions (minute hour day month
//! weekday, in UTC; checked by `ferry_model::schedule`), so the shortest
//! interval is one minute. A scheduled
//! start while the task already has an execution waiting adds nothing; while
//! one runs, it queues one (never two).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

use super::agent::Agent;

/// The check, shared with ferry-init's configuration document (one
/// definition, in ferry-model).
pub use ferry_model::schedule::{next_after, parse};

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
}
