// SPDX-License-Identifier: MIT
//! Executions the hub gives to agents. A task of the hub whose source is
//! an `AGENT` location runs on that agent: the hub's runner posts the
//! execution here and waits; the agent picks it up when it next asks
//! (`GET /agent/v1/tasks`), runs it with the hub location as its remote
//! destination, and reports its status and counters
//! (`POST /agent/v1/executions/{id}/report`) until it ends. A cancel on the
//! hub reaches the agent in the answer to its next report.
//!
//! The board is also what authorizes an agent's file-system requests on the
//! hub ([`Board::grant`]): an agent may touch a location of the hub only
//! while an execution writing there is handed to it, from the moment it
//! picked the execution up until it reported its end (or the hub's runner
//! gave up on it). A job posted but not yet picked up grants nothing, nor
//! does one that ended.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use serde::{Deserialize, Serialize};

use ferry_engine::counters::CounterSnapshot;
use ferry_engine::Options;
use ferry_model::api::{LocationSpec, ResultDetail};

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

/// `GET /agent/v1/tasks` on the hub: the executions for the agent asking.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobList {
    pub agent_id: String,
    pub executions: Vec<Job>,
}

/// The hub's answer to a [`Report`]: whether the job is to stop, and its
/// bandwidth limit now (changed on the hub while it runs).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReportAnswer {
    pub cancel: bool,
    /// Absent from an older hub: unchanged.
    #[serde(default)]
    pub bytes_per_second: Option<i64>,
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
        self.status == ferry_model::api::SUCCESS || self.status == ferry_model::api::ERROR
    }
}

struct Slot {
    job: Job,
    report: Option<Report>,
    /// The agent has received the job (`GET /agent/v1/tasks`).
    picked_up: bool,
}

impl Slot {
    fn running(&self) -> bool {
        self.picked_up && !self.report.as_ref().is_some_and(Report::finished)
    }
}

/// How long an agent's ask for work may wait for one at most
/// ([`Board::wait_for_jobs`]): within the agent's time for an answer.
pub const JOBS_WAIT_MAX: Duration = Duration::from_secs(20);

#[derive(Default)]
pub struct Board {
    slots: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
    /// Wakes agents waiting for work.
    posted: Notify,
}

impl Board {
    pub fn post(&self, job: Job) {
        self.insert(job, false);
        self.posted.notify_waiters();
    }

    /// A job its agent was running when the hub stopped (killed, or its
    /// machine lost): posted as picked up, so that the agent's reports and
    /// operations are taken at once when they come again.
    pub fn post_resumed(&self, job: Job) {
        self.insert(job, true);
    }

    fn insert(&self, job: Job, picked_up: bool) {
        let slot = Slot {
            job,
            report: None,
            picked_up,
        };
        let id = slot.job.execution_id.clone();
        self.slots.lock().unwrap().insert(id, slot);
    }

    /// Whether the execution is on the board.
    pub fn has(&self, execution_id: &str) -> bool {
        self.slots.lock().unwrap().contains_key(execution_id)
    }

    /// [`Board::jobs_for`] once `agent_id` has a job it has not picked up,
    /// or after `wait` (at most [`JOBS_WAIT_MAX`]): the agent hears of a
    /// new execution at once instead of at its next poll.
    pub async fn wait_for_jobs(&self, agent_id: &str, wait: Duration) -> Vec<Job> {
        let deadline = tokio::time::Instant::now() + wait.min(JOBS_WAIT_MAX);
        loop {
            let posted = self.posted.notified();
            tokio::pin!(posted);
            // Registered before looking: a post in between is not missed.
            posted.as_mut().enable();
            let news = self
                .slots
                .lock()
                .unwrap()
                .values()
                .any(|s| s.job.agent_id == agent_id && !s.picked_up);
            if news || tokio::time::timeout_at(deadline, posted).await.is_err() {
                return self.jobs_for(agent_id);
            }
        }
    }

    /// The jobs of `agent_id`, running or to start; they count as picked up.
    pub fn jobs_for(&self, agent_id: &str) -> Vec<Job> {
        self.slots
            .lock()
            .unwrap()
            .values_mut()
            .filter(|s| s.job.agent_id == agent_id)
            .map(|s| {
                s.picked_up = true;
                s.job.clone()
            })
            .collect()
    }

    /// The running job that lets `agent_id` write to the hub's location
    /// `location_id`, if any (see the module's documentation).
    pub fn grant(&self, agent_id: &str, location_id: &str) -> Option<Job> {
        self.slots
            .lock()
            .unwrap()
            .values()
            .find(|s| {
                s.job.agent_id == agent_id
                    && s.job.destination_location_id == location_id
                    && s.running()
            })
            .map(|s| s.job.clone())
    }

    /// Records a report; `None` when `agent_id` has no such job. Answers
    /// whether the job is cancelled, and its bandwidth limit.
    pub fn report(
        &self,
        agent_id: &str,
        execution_id: &str,
        report: Report,
    ) -> Option<ReportAnswer> {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots
            .get_mut(execution_id)
            .filter(|s| s.job.agent_id == agent_id)?;
        let answer = ReportAnswer {
            cancel: slot.job.cancel,
            bytes_per_second: Some(slot.job.options.bytes_per_second),
        };
        // A report is only taken from an agent that has the job, and an
        // ended job stays ended (no report reopens its grant).
        if slot.report.as_ref().is_some_and(Report::finished) {
            return Some(answer);
        }
        slot.picked_up = true;
        slot.report = Some(report);
        drop(slots);
        self.changed.notify_all();
        Some(answer)
    }

    /// A new bandwidth limit for a job, given to its agent with the answer
    /// to its next report.
    pub fn set_bytes_per_second(&self, execution_id: &str, bytes_per_second: i64) {
        if let Some(s) = self.slots.lock().unwrap().get_mut(execution_id) {
            s.job.options.bytes_per_second = bytes_per_second;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, agent: &str, location: &str) -> Job {
        Job {
            execution_id: id.into(),
            task_id: "task-1".into(),
            agent_id: agent.into(),
            source: LocationSpec::local("/src"),
            destination_location_id: location.into(),
            compress: false,
            connections: None,
            options: Options::new(),
            cancel: false,
        }
    }

    fn report(status: &str) -> Report {
        Report {
            status: status.into(),
            result: ResultDetail::default(),
            counters: CounterSnapshot::default(),
        }
    }

    #[tokio::test]
    async fn an_agent_waiting_for_work_hears_of_its_job_when_posted() {
        let board = std::sync::Arc::new(Board::default());
        // Nothing for it: the wait runs out, with nothing.
        let none = board
            .wait_for_jobs("agent-a", Duration::from_millis(50))
            .await;
        assert!(none.is_empty());
        let waiting = {
            let board = board.clone();
            tokio::spawn(async move { board.wait_for_jobs("agent-a", JOBS_WAIT_MAX).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another agent's job does not end the wait; its own does.
        board.post(job("exec-b", "agent-b", "loc-1"));
        board.post(job("exec-a", "agent-a", "loc-1"));
        let got = tokio::time::timeout(JOBS_WAIT_MAX / 2, waiting)
            .await
            .expect("woken by the post, not by the end of the wait")
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].execution_id, "exec-a");
        // Picked up now: the next ask waits again.
        let again = board
            .wait_for_jobs("agent-a", Duration::from_millis(50))
            .await;
        assert_eq!(again.len(), 1, "a job still running is listed");
    }

    #[test]
    fn a_location_is_granted_to_its_agent_only_while_its_execution_runs() {
        let board = Board::default();
        board.post(job("exec-1", "agent-a", "loc-1"));
        // Posted, not picked up yet.
        assert!(board.grant("agent-a", "loc-1").is_none());
        assert_eq!(board.jobs_for("agent-a").len(), 1);
        assert!(board.grant("agent-a", "loc-1").is_some());
        // Another agent, another location: nothing.
        assert!(board.grant("agent-b", "loc-1").is_none());
        assert!(board.jobs_for("agent-b").is_empty());
        assert!(board.grant("agent-b", "loc-1").is_none());
        assert!(board.grant("agent-a", "loc-2").is_none());
        // Another agent cannot report on it.
        assert!(board
            .report("agent-b", "exec-1", report(ferry_model::api::SUCCESS))
            .is_none());
        let answer = board.report("agent-a", "exec-1", report("TRANSFERRING"));
        assert_eq!(answer.unwrap().bytes_per_second, Some(-1));
        // A new limit reaches the agent with the answer to its next report.
        board.set_bytes_per_second("exec-1", 1 << 20);
        let answer = board.report("agent-a", "exec-1", report("TRANSFERRING"));
        assert_eq!(answer.unwrap().bytes_per_second, Some(1 << 20));
        assert!(board.grant("agent-a", "loc-1").is_some());
        // Ended: no more, and a later report does not reopen it.
        board.report("agent-a", "exec-1", report(ferry_model::api::SUCCESS));
        assert!(board.grant("agent-a", "loc-1").is_none());
        board.report("agent-a", "exec-1", report("TRANSFERRING"));
        assert!(board.grant("agent-a", "loc-1").is_none());
        board.remove("exec-1");
        assert!(board.grant("agent-a", "loc-1").is_none());
    }
}
