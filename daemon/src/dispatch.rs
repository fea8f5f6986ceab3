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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use serde::{Deserialize, Serialize};

use ferry_engine::counters::CounterSnapshot;
use ferry_engine::options::VerifyMode;
use ferry_engine::share::{Lease, SharedPhase, Unit, UnitError, Units};
use ferry_engine::Options;
use ferry_model::api::{LocationSpec, ResultDetail, ERROR, SUCCESS};

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
    /// The destination as the agent reaches it, when it is an agent's
    /// location too (the agent writes it itself; the hub only
    /// coordinates, and grants nothing of its own locations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<LocationSpec>,
    #[serde(default)]
    pub compress: bool,
    #[serde(default)]
    pub connections: Option<u32>,
    pub options: Options,
    /// Set once an operator cancelled the execution on the hub.
    #[serde(default)]
    pub cancel: bool,
    /// Several agents share the execution: the agent leases its work in
    /// units (`POST /agent/v1/executions/{id}/units`).
    #[serde(default)]
    pub shared: bool,
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

/// One agent's part in a job.
struct Part {
    report: Option<Report>,
    /// The agent has received the job (`GET /agent/v1/tasks`).
    picked_up: bool,
    /// When the hub last heard from the agent about the job.
    seen: Instant,
    /// The agent's run of a shared job, which holds its units: a
    /// restarted agent runs the job anew, and its former units are free.
    session: Option<String>,
}

impl Part {
    fn finished(&self) -> bool {
        self.report.as_ref().is_some_and(Report::finished)
    }

    fn running(&self) -> bool {
        self.picked_up && !self.finished()
    }

    fn lost(&self, now: Instant) -> bool {
        now.duration_since(self.seen) > LOST_AFTER
    }
}

struct Slot {
    /// The job as its first agent gets it (the others get it with their id).
    job: Job,
    parts: BTreeMap<String, Part>,
    /// Several agents: the units they lease.
    units: Option<Units>,
    /// Counts the news (reports, units done or found); `seen`: as far as
    /// [`Board::wait`] has returned them. A report that comes while the
    /// hub's runner is not waiting is not missed.
    news: u64,
    seen: u64,
}

impl Slot {
    /// The job as `agent_id` gets it: with its id, and its share of the
    /// bandwidth limit (one budget for all the agents of the job).
    fn job_for(&self, agent_id: &str) -> Job {
        let mut job = self.job.clone();
        job.agent_id = agent_id.to_string();
        job.options.bytes_per_second = self.limit_for();
        job
    }

    /// The limit split among the agents at work now (running and heard
    /// from; all named before any starts), given again with every
    /// report's answer: a lost agent's share goes to the others.
    fn limit_for(&self) -> i64 {
        let working = self.working(Instant::now());
        let agents = if working == 0 {
            self.parts.len()
        } else {
            working
        };
        match self.job.options.bytes_per_second {
            limit if limit > 0 => (limit / agents.max(1) as i64).max(1),
            limit => limit,
        }
    }

    /// Agents at work now: running, and heard from lately.
    fn working(&self, now: Instant) -> usize {
        self.parts
            .values()
            .filter(|p| p.running() && !p.lost(now))
            .count()
    }

    /// Frees the units of agents not heard of for [`LOST_AFTER`].
    fn release_lost(&mut self, now: Instant) -> usize {
        let Some(units) = &mut self.units else {
            return 0;
        };
        let holders: Vec<String> = units.holders().into_iter().map(String::from).collect();
        holders
            .iter()
            .filter(|a| self.parts.get(*a).is_none_or(|p| p.lost(now)))
            .map(|a| units.release(a))
            .sum()
    }

    /// The execution as its agents' reports say: the one agent's report,
    /// or for several, their counters summed, the phase the units are in,
    /// and an end once every unit is done and every agent that took part
    /// has ended (or is lost).
    fn merged(&self, now: Instant) -> Option<Report> {
        let Some(units) = &self.units else {
            return self.parts.values().next()?.report.clone();
        };
        let reports: Vec<&Report> = self
            .parts
            .values()
            .filter_map(|p| p.report.as_ref())
            .collect();
        if reports.is_empty() {
            return None;
        }
        let mut counters = CounterSnapshot::default();
        for r in &reports {
            counters.add(&r.counters);
        }
        let (agents, released) = units.agents();
        // An agent that failed before it did any unit (its mount, say)
        // leaves the work to the others; one that failed after, fails it.
        let failed = self.parts.iter().find_map(|(id, p)| {
            let r = p.report.as_ref().filter(|r| r.status == ERROR)?;
            agents
                .get(id)
                .is_some_and(|a| a.units_leased > 0)
                .then_some(r)
        });
        let ended = self.parts.values().all(|p| !p.running() || p.lost(now));
        // Every agent that came has ended (one named but never seen does
        // not hold the execution up).
        let nobody = self
            .parts
            .values()
            .filter(|p| p.picked_up)
            .all(|p| p.finished());
        let mut result = match (units.is_over(), failed) {
            (true, Some(r)) if ended => r.result.clone(),
            (true, None) if ended => {
                // A successful agent's phases, not one that failed early.
                let ok = reports.iter().find(|r| r.status == SUCCESS);
                let mut result = ok.unwrap_or(&reports[0]).result.clone();
                result.error_code = None;
                result.error_detail = None;
                result
            }
            // No agent left to do the units: the first's reason.
            (false, _) if nobody => match failed {
                Some(r) => r.result.clone(),
                None => reports[0].result.clone(),
            },
            _ => ResultDetail {
                prepare_status: "PENDING".into(),
                transfer_status: "PENDING".into(),
                verify_status: "PENDING".into(),
                ..ResultDetail::default()
            },
        };
        let status = if units.is_over() && ended {
            if failed.is_some() {
                ERROR
            } else {
                SUCCESS
            }
        } else if nobody {
            // No agent left to do the units: failed, if one said why.
            if reports.iter().any(|r| r.status == ERROR) {
                ERROR
            } else {
                SUCCESS
            }
        } else if units.phase() == SharedPhase::Verifying {
            "VERIFYING"
        } else {
            "TRANSFERRING"
        };
        for r in &reports {
            result.prepare_duration = result.prepare_duration.max(r.result.prepare_duration);
            result.transfer_duration = result.transfer_duration.max(r.result.transfer_duration);
            result.verify_duration = result.verify_duration.max(r.result.verify_duration);
            result.total_duration = result.total_duration.max(r.result.total_duration);
        }
        result.agents = agents.clone();
        for (id, part) in &self.parts {
            if let Some(r) = &part.report {
                let share = result.agents.entry(id.clone()).or_default();
                share.files_transferred = r.counters.files_transferred;
                share.bytes_transferred = r.counters.bytes_transferred;
                share.files_verified = r.counters.files_verified;
            }
        }
        result.released_units = released.to_vec();
        Some(Report {
            status: status.into(),
            result,
            counters,
        })
    }
}

/// How long an agent of a shared job may go unheard (it reports every
/// second while it runs) before its units are leased to others.
pub const LOST_AFTER: Duration = Duration::from_secs(10);

/// How long an agent's ask for work may wait for one at most
/// ([`Board::wait_for_jobs`]): within the agent's time for an answer.
pub const JOBS_WAIT_MAX: Duration = Duration::from_secs(20);

/// Units an agent may lease at once, and found units or done units it may
/// send in one request.
pub const UNITS_MAX: usize = 256;

/// A unit on the wire (`POST /agent/v1/executions/{id}/units`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireUnit {
    /// Bytes: a name need not be UTF-8.
    pub path: Vec<u8>,
    pub included: bool,
    #[serde(default)]
    pub keep_meta: bool,
    /// One large file, not a directory.
    #[serde(default)]
    pub entry: bool,
}

impl From<Unit> for WireUnit {
    fn from(u: Unit) -> Self {
        WireUnit {
            path: u.path,
            included: u.included,
            keep_meta: u.keep_meta,
            entry: u.entry,
        }
    }
}

impl From<WireUnit> for Unit {
    fn from(u: WireUnit) -> Self {
        Unit {
            path: u.path,
            included: u.included,
            keep_meta: u.keep_meta,
            entry: u.entry,
        }
    }
}

/// The two phases of units, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnitPhase {
    Transferring,
    Verifying,
}

impl From<SharedPhase> for UnitPhase {
    fn from(p: SharedPhase) -> Self {
        match p {
            SharedPhase::Transferring => UnitPhase::Transferring,
            SharedPhase::Verifying => UnitPhase::Verifying,
        }
    }
}

impl From<UnitPhase> for SharedPhase {
    fn from(p: UnitPhase) -> Self {
        match p {
            UnitPhase::Transferring => SharedPhase::Transferring,
            UnitPhase::Verifying => SharedPhase::Verifying,
        }
    }
}

/// An agent's request about the units of a shared job: what it found and
/// did since its last, and units it wants.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UnitsRequest {
    /// The agent's run of the job (random, new when it runs it anew).
    pub session: String,
    #[serde(default)]
    pub found: Vec<FoundUnit>,
    #[serde(default)]
    pub done: Vec<DoneUnit>,
    /// Units wanted, of this phase.
    #[serde(default)]
    pub lease: Option<(UnitPhase, u32)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FoundUnit {
    /// The unit that found it.
    pub from: Vec<u8>,
    pub unit: WireUnit,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DoneUnit {
    pub phase: UnitPhase,
    pub path: Vec<u8>,
}

/// The hub's answer: units leased to the agent; or none and `Over` when
/// the phase asked for is over (none and not over: ask again soon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UnitsAnswer {
    pub units: Vec<WireUnit>,
    pub over: bool,
}

/// Why a units request was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnitsRefused {
    #[error("the hub gave {0} no shared execution {1}")]
    NoSuchJob(String, String),
    #[error("a request names at most {UNITS_MAX} units of each kind")]
    TooMany,
    #[error(transparent)]
    Unit(#[from] UnitError),
}

#[derive(Default)]
pub struct Board {
    slots: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
    /// Wakes agents waiting for work.
    posted: Notify,
    /// Wakes agents waiting for units.
    units_changed: Notify,
}

/// How long the hub holds an agent's ask for units when none is free
/// ([`Board::wait_for_units`]): a unit found elsewhere reaches it at once.
pub const UNITS_WAIT: Duration = Duration::from_secs(2);

impl Board {
    /// Posts the execution for `agents` (one, or several sharing it).
    pub fn post(&self, job: Job, agents: &[String]) {
        self.insert(job, agents, false);
        self.posted.notify_waiters();
    }

    /// A job its agents were running when the hub stopped (killed, or its
    /// machine lost): posted as picked up, so that the agents' reports and
    /// operations are taken at once when they come again. The units of a
    /// shared one start again from the root (what was done is found done).
    pub fn post_resumed(&self, job: Job, agents: &[String]) {
        self.insert(job, agents, true);
    }

    fn insert(&self, mut job: Job, agents: &[String], picked_up: bool) {
        job.shared = agents.len() > 1;
        let units = job.shared.then(|| {
            let included = job.options.validate().map_or(true, |f| f.root_included());
            let verify = job.options.verify_mode != VerifyMode::None;
            Units::new(Unit::root(included), verify)
        });
        let now = Instant::now();
        let parts = agents
            .iter()
            .map(|a| {
                let part = Part {
                    report: None,
                    picked_up,
                    seen: now,
                    session: None,
                };
                (a.clone(), part)
            })
            .collect();
        let id = job.execution_id.clone();
        let slot = Slot {
            job,
            parts,
            units,
            news: 0,
            seen: 0,
        };
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
                .any(|s| s.parts.get(agent_id).is_some_and(|p| !p.picked_up));
            if news || tokio::time::timeout_at(deadline, posted).await.is_err() {
                return self.jobs_for(agent_id);
            }
        }
    }

    /// The jobs of `agent_id`, running or to start; they count as picked up.
    pub fn jobs_for(&self, agent_id: &str) -> Vec<Job> {
        let now = Instant::now();
        self.slots
            .lock()
            .unwrap()
            .values_mut()
            .filter_map(|s| {
                let part = s.parts.get_mut(agent_id)?;
                part.picked_up = true;
                part.seen = now;
                Some(s.job_for(agent_id))
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
                s.job.destination.is_none()
                    && s.job.destination_location_id == location_id
                    && s.parts.get(agent_id).is_some_and(Part::running)
            })
            .map(|s| s.job_for(agent_id))
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
        let slot = slots.get_mut(execution_id)?;
        let answer = ReportAnswer {
            cancel: slot.job.cancel,
            bytes_per_second: Some(slot.limit_for()),
        };
        let part = slot.parts.get_mut(agent_id)?;
        part.seen = Instant::now();
        // A report is only taken from an agent that has the job, and an
        // ended job stays ended (no report reopens its grant).
        if part.finished() {
            return Some(answer);
        }
        part.picked_up = true;
        part.report = Some(report);
        slot.news += 1;
        drop(slots);
        self.changed.notify_all();
        Some(answer)
    }

    /// An agent's request about the units of a shared job: what it found
    /// and did is taken, then units are leased to it.
    pub fn units(
        &self,
        agent_id: &str,
        execution_id: &str,
        request: UnitsRequest,
    ) -> Result<UnitsAnswer, UnitsRefused> {
        let no_job = || UnitsRefused::NoSuchJob(agent_id.into(), execution_id.into());
        if request.found.len() > UNITS_MAX || request.done.len() > UNITS_MAX {
            return Err(UnitsRefused::TooMany);
        }
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(execution_id).ok_or_else(no_job)?;
        let part = slot
            .parts
            .get_mut(agent_id)
            .filter(|p| p.running())
            .ok_or_else(no_job)?;
        part.seen = now;
        let renewed = part.session.as_ref() != Some(&request.session);
        part.session = Some(request.session);
        // No agent takes more than half its share of the units free now:
        // the others find some too, and those that end first take what is
        // left, so that the agents end together.
        let running = slot.working(now);
        let units = slot.units.as_mut().ok_or_else(no_job)?;
        // Whether others waiting for units should look again.
        let mut news = false;
        if renewed {
            // The agent runs the job anew: what it held before is free.
            news |= units.release(agent_id) > 0;
        }
        for f in request.found {
            news |= units.found(agent_id, &f.from, f.unit.into())?;
        }
        for d in request.done {
            news |= units.done(agent_id, d.phase.into(), &d.path);
        }
        let fair = units
            .queued()
            .div_ceil(2 * running.max(1))
            .clamp(1, UNITS_MAX);
        let answer = match request.lease {
            None => UnitsAnswer {
                units: Vec::new(),
                over: units.is_over(),
            },
            Some((phase, max)) => {
                match units.lease(agent_id, phase.into(), fair.min(max as usize)) {
                    Lease::Units(u) => UnitsAnswer {
                        units: u.into_iter().map(WireUnit::from).collect(),
                        over: false,
                    },
                    Lease::Wait => UnitsAnswer::default(),
                    Lease::Over => UnitsAnswer {
                        units: Vec::new(),
                        over: true,
                    },
                }
            }
        };
        news |= slot.release_lost(now) > 0;
        slot.news += u64::from(news);
        drop(slots);
        if news {
            self.changed.notify_all();
            self.units_changed.notify_waiters();
        }
        Ok(answer)
    }

    /// [`Board::units`], held up to [`UNITS_WAIT`] while no unit is free
    /// and the phase goes on.
    pub async fn wait_for_units(
        &self,
        agent_id: &str,
        execution_id: &str,
        mut request: UnitsRequest,
    ) -> Result<UnitsAnswer, UnitsRefused> {
        let deadline = tokio::time::Instant::now() + UNITS_WAIT;
        loop {
            let changed = self.units_changed.notified();
            tokio::pin!(changed);
            // Registered before looking: a change in between is not missed.
            changed.as_mut().enable();
            let asks = request.lease.is_some();
            let answer = self.units(agent_id, execution_id, request.clone())?;
            if !asks || answer.over || !answer.units.is_empty() {
                return Ok(answer);
            }
            // Found and done are taken once.
            request.found.clear();
            request.done.clear();
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(answer);
            }
        }
    }

    /// A new bandwidth limit for a job, given to its agents with the
    /// answer to their next report (each agent's is its share of it).
    pub fn set_bytes_per_second(&self, execution_id: &str, bytes_per_second: i64) {
        if let Some(s) = self.slots.lock().unwrap().get_mut(execution_id) {
            s.job.options.bytes_per_second = bytes_per_second;
        }
    }

    /// The execution as its agents report it ([`Slot::merged`]), after a
    /// new report arrives or `timeout` passes. The units of agents gone
    /// quiet are freed for the others.
    pub fn wait(&self, execution_id: &str, timeout: Duration) -> Option<Report> {
        let mut slots = self.slots.lock().unwrap();
        let unseen = |slots: &HashMap<String, Slot>| {
            slots.get(execution_id).is_some_and(|s| s.news != s.seen)
        };
        if !unseen(&slots) {
            slots = self.changed.wait_timeout(slots, timeout).unwrap().0;
        }
        let now = Instant::now();
        let slot = slots.get_mut(execution_id)?;
        slot.seen = slot.news;
        if slot.release_lost(now) > 0 {
            self.units_changed.notify_waiters();
        }
        slot.merged(now)
    }

    pub fn cancel(&self, execution_id: &str) {
        if let Some(s) = self.slots.lock().unwrap().get_mut(execution_id) {
            s.job.cancel = true;
            if let Some(units) = &mut s.units {
                units.cancel();
                self.units_changed.notify_waiters();
            }
        }
    }

    pub fn remove(&self, execution_id: &str) {
        self.slots.lock().unwrap().remove(execution_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn job(id: &str, agent: &str, location: &str) -> Job {
        Job {
            execution_id: id.into(),
            task_id: "task-1".into(),
            agent_id: agent.into(),
            source: LocationSpec::local("/src"),
            destination_location_id: location.into(),
            destination: None,
            compress: false,
            connections: None,
            options: Options::new(),
            cancel: false,
            shared: false,
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
        board.post(job("exec-b", "agent-b", "loc-1"), &["agent-b".into()]);
        board.post(job("exec-a", "agent-a", "loc-1"), &["agent-a".into()]);
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
        board.post(job("exec-1", "agent-a", "loc-1"), &["agent-a".into()]);
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

    #[test]
    fn a_shared_job_leases_units_splits_the_limit_and_merges_the_reports() {
        let board = Board::default();
        let mut j = job("exec-1", "agent-a", "loc-1");
        j.options.bytes_per_second = 3 << 20;
        j.options.verify_mode = VerifyMode::None;
        let agents = ["agent-a".to_string(), "agent-b".to_string()];
        board.post(j, &agents);
        let a = board.jobs_for("agent-a");
        assert!(a[0].shared);
        // One budget: the first agent at work has it all, then each its share.
        assert_eq!(a[0].options.bytes_per_second, 3 << 20);
        assert_eq!(board.jobs_for("agent-b")[0].agent_id, "agent-b");
        let share = board.report("agent-a", "exec-1", report("TRANSFERRING"));
        assert_eq!(share.unwrap().bytes_per_second, Some((3 << 20) / 2));
        // Another agent has no part in it.
        let ask = |session: &str| UnitsRequest {
            session: session.into(),
            lease: Some((UnitPhase::Transferring, 8)),
            ..UnitsRequest::default()
        };
        assert!(matches!(
            board.units("agent-c", "exec-1", ask("s")),
            Err(UnitsRefused::NoSuchJob(..))
        ));
        let root = board.units("agent-a", "exec-1", ask("s1")).unwrap();
        assert_eq!(root.units.len(), 1);
        assert_eq!(
            board.units("agent-b", "exec-1", ask("s2")).unwrap(),
            UnitsAnswer::default()
        );
        // agent-a restarts: what it held is free again, for anyone.
        let again = board.units("agent-b", "exec-1", ask("s2")).unwrap();
        assert!(again.units.is_empty());
        assert_eq!(
            board
                .units("agent-a", "exec-1", ask("s3"))
                .unwrap()
                .units
                .len(),
            1
        );
        // A path that is no unit is refused, naming it.
        let mut bad = ask("s3");
        bad.found.push(FoundUnit {
            from: b"/".to_vec(),
            unit: WireUnit {
                path: b"/../etc".to_vec(),
                included: true,
                keep_meta: false,
                entry: false,
            },
        });
        let refused = board.units("agent-a", "exec-1", bad).unwrap_err();
        assert!(refused.to_string().contains(".."), "{refused}");
        // More than a request may carry: refused whole.
        let mut flood = ask("s3");
        flood.done = (0..=UNITS_MAX)
            .map(|i| DoneUnit {
                phase: UnitPhase::Transferring,
                path: format!("/d{i}").into_bytes(),
            })
            .collect();
        let refused = board.units("agent-a", "exec-1", flood).unwrap_err();
        assert!(matches!(refused, UnitsRefused::TooMany), "{refused}");
        let mut done = ask("s3");
        done.lease = None;
        done.done.push(DoneUnit {
            phase: UnitPhase::Transferring,
            path: b"/".to_vec(),
        });
        assert!(board.units("agent-a", "exec-1", done).unwrap().over);
        let mut counted = report(ferry_model::api::SUCCESS);
        counted.counters.files_transferred = 3;
        board.report("agent-a", "exec-1", counted.clone());
        // agent-b still runs: not ended yet.
        let merged = board.wait("exec-1", Duration::from_millis(1)).unwrap();
        assert_eq!(merged.status, "TRANSFERRING");
        board.report("agent-b", "exec-1", counted);
        // Reported before the hub's runner waits: not missed (no wait).
        let asked = Instant::now();
        let merged = board.wait("exec-1", Duration::from_secs(60)).unwrap();
        assert!(asked.elapsed() < Duration::from_secs(30));
        assert_eq!(merged.status, ferry_model::api::SUCCESS);
        assert_eq!(merged.counters.files_transferred, 6);
        assert_eq!(merged.result.agents["agent-a"].units_done, 1);
        assert_eq!(merged.result.agents["agent-a"].units_released, 1);
        assert_eq!(merged.result.agents["agent-b"].files_transferred, 3);
    }

    #[tokio::test]
    async fn an_agent_waiting_for_units_gets_those_another_finds() {
        let board = Arc::new(Board::default());
        let agents = ["agent-a".to_string(), "agent-b".to_string()];
        board.post(job("exec-1", "agent-a", "loc-1"), &agents);
        board.jobs_for("agent-a");
        board.jobs_for("agent-b");
        let ask = |session: &str| UnitsRequest {
            session: session.into(),
            lease: Some((UnitPhase::Transferring, 8)),
            ..UnitsRequest::default()
        };
        let root = board
            .wait_for_units("agent-a", "exec-1", ask("a"))
            .await
            .unwrap();
        assert_eq!(root.units.len(), 1);
        let waiting = {
            let board = board.clone();
            tokio::spawn(async move { board.wait_for_units("agent-b", "exec-1", ask("b")).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "held while nothing is free");
        let mut found = ask("a");
        found.lease = None;
        found.found.push(FoundUnit {
            from: b"/".to_vec(),
            unit: WireUnit {
                path: b"/d".to_vec(),
                included: true,
                keep_meta: false,
                entry: false,
            },
        });
        board
            .wait_for_units("agent-a", "exec-1", found)
            .await
            .unwrap();
        let got = tokio::time::timeout(UNITS_WAIT / 2, waiting)
            .await
            .expect("woken by the unit found, not by the end of the wait")
            .unwrap()
            .unwrap();
        assert_eq!(got.units[0].path, b"/d");
    }

    #[test]
    fn a_shared_job_whose_agents_all_failed_ends_without_the_one_never_seen() {
        let board = Board::default();
        let agents = ["agent-a".to_string(), "agent-b".to_string()];
        board.post(job("exec-1", "agent-a", "loc-1"), &agents);
        board.jobs_for("agent-a");
        // agent-a cannot mount the source; agent-b never comes.
        let mut failed = report(ferry_model::api::ERROR);
        failed.result.error_code = Some("SourceUnavailable".into());
        board.report("agent-a", "exec-1", failed);
        let merged = board.wait("exec-1", Duration::from_secs(60)).unwrap();
        assert_eq!(merged.status, ferry_model::api::ERROR);
        assert_eq!(
            merged.result.error_code.as_deref(),
            Some("SourceUnavailable")
        );
    }

    #[test]
    fn an_agent_that_failed_before_any_unit_leaves_the_work_to_the_others() {
        let board = Board::default();
        let mut j = job("exec-1", "agent-a", "loc-1");
        j.options.verify_mode = VerifyMode::None;
        let agents = ["agent-a".to_string(), "agent-b".to_string()];
        board.post(j, &agents);
        board.jobs_for("agent-a");
        board.jobs_for("agent-b");
        let mut failed = report(ferry_model::api::ERROR);
        failed.result.prepare_status = ferry_model::api::ERROR.into();
        failed.result.error_code = Some("SourceUnavailable".into());
        board.report("agent-a", "exec-1", failed);
        let request = UnitsRequest {
            session: "b".into(),
            lease: Some((UnitPhase::Transferring, 8)),
            ..UnitsRequest::default()
        };
        assert_eq!(
            board
                .units("agent-b", "exec-1", request)
                .unwrap()
                .units
                .len(),
            1
        );
        let done = UnitsRequest {
            session: "b".into(),
            done: vec![DoneUnit {
                phase: UnitPhase::Transferring,
                path: b"/".to_vec(),
            }],
            ..UnitsRequest::default()
        };
        assert!(board.units("agent-b", "exec-1", done).unwrap().over);
        let mut ok = report(ferry_model::api::SUCCESS);
        ok.result.prepare_status = ferry_model::api::SUCCESS.into();
        board.report("agent-b", "exec-1", ok);
        let merged = board.wait("exec-1", Duration::from_secs(60)).unwrap();
        assert_eq!(merged.status, ferry_model::api::SUCCESS);
        assert_eq!(merged.result.prepare_status, ferry_model::api::SUCCESS);
        assert_eq!(merged.result.error_code, None);
    }
}
