//! Executions the hub gives to agents. A task of the hub whose source is
//! an `AGENT` location runs on that agent: the hub's runner posts the
//! execution here and waits; the agent picks it up when it next asks
//! (`GET /agent/v1/tasks`), runs it with the hub location as its remote
//! destination, and reports its status and counters
//! (`POST /agent/v1/executions/{id}/report`) until it ends. A cancel on the
//! hub reaches the agent in the answer to its next report.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::daemon::model::{LocationSpec, ResultDetail};
use crate::engine::counters::CounterSnapshot;
use crate::engine::Options;

/// One execution for an agent, as the agent receives it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Job {
    pub execution_id: String,
    pub task_id: String,
    pub agent_id: String,
    /// The source as the agent reaches it (NFS or a local path).
    pub source: LocationSpec,
    /// The hub location written to.
    pub destination_location_id: String,
    #[serde(default)]
    pub compress: bool,
    #[serde(default)]
    pub connections: Option<u32>,
    pub options: Options,
    /// Set once an operator cancelled the execution on the hub.
    #[serde(default)]
    pub cancel: bool,
}

/// What an agent says of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    pub status: String,
    pub result: ResultDetail,
    pub counters: CounterSnapshot,
}

impl Report {
    pub fn finished(&self) -> bool {
        self.status == crate::daemon::model::SUCCESS || self.status == crate::daemon::model::ERROR
    }
}

struct Slot {
    job: Job,
    report: Option<Report>,
}

#[derive(Default)]
pub struct Board {
    slots: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
}

impl Board {
    pub fn post(&self, job: Job) {
        let id = job.execution_id.clone();
        self.slots
            .lock()
            .unwrap()
            .insert(id, Slot { job, report: None });
    }

    /// The jobs of `agent_id`, running or to start.
    pub fn jobs_for(&self, agent_id: &str) -> Vec<Job> {
        self.slots
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.job.agent_id == agent_id)
            .map(|s| s.job.clone())
            .collect()
    }

    /// Records a report; `None` when `agent_id` has no such job. Answers
    /// whether the job is cancelled.
    pub fn report(&self, agent_id: &str, execution_id: &str, report: Report) -> Option<bool> {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots
            .get_mut(execution_id)
            .filter(|s| s.job.agent_id == agent_id)?;
        slot.report = Some(report);
        let cancel = slot.job.cancel;
        drop(slots);
        self.changed.notify_all();
        Some(cancel)
    }

    /// The latest report, after a new one arrives or `timeout` passes.
    pub fn wait(&self, execution_id: &str, timeout: Duration) -> Option<Report> {
        let slots = self.slots.lock().unwrap();
        let (slots, _) = self.changed.wait_timeout(slots, timeout).unwrap();
        slots.get(execution_id).and_then(|s| s.report.clone())
    }

    pub fn cancel(&self, execution_id: &str) {
        if let Some(s) = self.slots.lock().unwrap().get_mut(execution_id) {
            s.job.cancel = true;
        }
    }

    pub fn remove(&self, execution_id: &str) {
        self.slots.lock().unwrap().remove(execution_id);
    }
}
