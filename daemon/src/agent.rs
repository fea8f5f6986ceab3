// SPDX-License-Identifier: MIT
//! The daemon's shared state: the store, the execution the runner is on,
//! and what the runner, the scheduler and the API do to it (queue, cancel).
//! [`Agent::start`] (in the module's root) opens it and starts them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use super::dispatch;
use super::events::Events;
use super::mount::{self, EfsTunnels, Mounted};
use super::store::{Store, StoreError};
use ferry_engine::digests::DigestCache;
use ferry_engine::location::local::LocalLocation;
use ferry_engine::options::TaskQueueing;
use ferry_engine::throttle::Throttle;
use ferry_engine::Options;
use ferry_model::api::Execution as ExecutionRecord;
use ferry_model::api::{self as records, LocationSpec, Task};

/// The execution the runner is working on.
#[derive(Clone)]
pub struct Running {
    pub execution_id: String,
    pub task_id: String,
    pub cancel: Arc<AtomicBool>,
    /// The engine's bandwidth limit, changed while it runs.
    pub throttle: Arc<Throttle>,
}

impl Running {
    pub fn of(exec: &ExecutionRecord) -> Running {
        Running {
            execution_id: exec.task_execution_id.clone(),
            task_id: exec.task_id.clone(),
            cancel: Arc::new(AtomicBool::new(false)),
            throttle: Arc::new(Throttle::new(exec.options.bandwidth_limit())),
        }
    }
}

/// Why a start queued nothing.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("execution {0} is queued or running here, and this start's TaskQueueing is DISABLED: it is not queued behind it (start it again later, or with TaskQueueing ENABLED)")]
    Busy(String),
}

pub struct Agent {
    /// Locks are taken in the order `running`, then `store`.
    pub store: Mutex<Store>,
    pub running: Mutex<Option<Running>>,
    pub reports_dir: PathBuf,
    pub mounts_dir: PathBuf,
    pub events: Arc<Events>,
    pub history: Duration,
    /// How the runner reaches a hub's locations: set by the `ferry-agent`
    /// binary to the agent's link to its hub (an agent started with
    /// `--config`).
    pub destinations: OnceLock<Arc<dyn Destinations>>,
    /// Executions handed to agents (on the hub).
    pub board: dispatch::Board,
    /// Digests of source files taken by earlier executions, by source
    /// location: verifying files unchanged since reads them no more.
    pub digests: Arc<DigestCache>,
    /// Signalled when an execution ends: the link to a hub reports it at
    /// once instead of at its next poll.
    pub ended: tokio::sync::Notify,
    pub(super) wake: Mutex<mpsc::Sender<()>>,
    /// How EFS is reached over TLS ([`crate::Config::efs_tunnels`]).
    pub efs_tunnels: Option<Arc<dyn EfsTunnels>>,
}

/// A schedule whose task failed with the same error this many times in a
/// row is disabled (as DataSync does), saying why.
pub const SCHEDULE_FAILURES_IN_A_ROW: usize = 3;

impl Agent {
    pub(super) fn expire_history(&self) {
        let keep = i64::try_from(self.history.as_millis()).unwrap_or(i64::MAX);
        let cutoff = records::now_ms().saturating_sub(keep);
        match self.store.lock().unwrap().expire(cutoff) {
            Ok(reports) => remove_reports(&reports),
            Err(e) => self.events.warn(&format!("cannot expire the history: {e}")),
        }
    }

    /// Mounts an NFS or EFS location on `point` ([`mount::mount`]).
    pub fn mount(&self, spec: &LocationSpec, point: PathBuf) -> Result<Mounted, String> {
        mount::mount(spec, point, self.efs_tunnels.as_deref(), &self.events)
    }

    fn wake_runner(&self) {
        let _ = self.wake.lock().unwrap().send(());
    }

    /// Queues an execution of `task` with `options`; with TaskQueueing
    /// DISABLED, only when no other execution is queued or running.
    pub fn queue(&self, task: &Task, options: &Options) -> Result<String, QueueError> {
        let id = {
            let store = self.store.lock().unwrap();
            if options.task_queueing == TaskQueueing::Disabled {
                if let Some(busy) = store.active_executions(None)?.into_iter().next() {
                    return Err(QueueError::Busy(busy.task_execution_id));
                }
            }
            store.insert_execution(&task.task_id, options)?
        };
        self.events.state(&task.task_id, &id, records::QUEUED, None);
        self.wake_runner();
        Ok(id)
    }

    /// A scheduled start: queued unless an execution of the task already waits.
    pub fn start_scheduled(&self, task_id: &str) -> Result<Option<String>, QueueError> {
        let task = {
            let store = self.store.lock().unwrap();
            let active = store.active_executions(Some(task_id))?;
            if active.iter().any(|e| e.status == records::QUEUED) {
                return Ok(None);
            }
            match store.task(task_id)? {
                Some(t) => t,
                None => return Ok(None),
            }
        };
        self.queue(&task, &task.options).map(Some)
    }

    /// Changes the bandwidth limit of a queued or running execution
    /// (DataSync's UpdateTaskExecution): in its stored options, and at once
    /// in its engine's throttle, or (on the hub) in the job its agent
    /// hears of with the answer to its next report. `Ok(None)`: it has
    /// ended (or is not there).
    pub fn set_bytes_per_second(
        &self,
        execution_id: &str,
        bytes_per_second: i64,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        let running = self.running.lock().unwrap();
        let store = self.store.lock().unwrap();
        let Some(mut exec) = store.execution(execution_id)? else {
            return Ok(None);
        };
        if records::is_terminal(&exec.status) {
            return Ok(None);
        }
        exec.options.bytes_per_second = bytes_per_second;
        store.set_options(execution_id, &exec.options)?;
        if let Some(r) = running.as_ref().filter(|r| r.execution_id == execution_id) {
            r.throttle.set_limit(exec.options.bandwidth_limit());
        }
        self.board
            .set_bytes_per_second(execution_id, bytes_per_second);
        self.events.info(&format!(
            "{execution_id}: BytesPerSecond is now {bytes_per_second}"
        ));
        Ok(Some(exec))
    }

    /// Cancels a queued or running execution. `Ok(false)`: it had already ended.
    pub fn cancel(&self, execution_id: &str) -> Result<bool, StoreError> {
        let running = self.running.lock().unwrap();
        let store = self.store.lock().unwrap();
        if let Some(r) = running.as_ref().filter(|r| r.execution_id == execution_id) {
            r.cancel.store(true, Ordering::Relaxed);
            store.set_status(execution_id, records::CANCELLING)?;
            self.events
                .state(&r.task_id, execution_id, records::CANCELLING, None);
            return Ok(true);
        }
        match store.execution(execution_id)? {
            Some(e) if e.status == records::QUEUED => {
                let mut result = e.result.clone();
                result.prepare_status = records::ERROR.into();
                result.transfer_status = records::ERROR.into();
                result.verify_status = records::ERROR.into();
                result.error_code = Some("Cancelled".into());
                result.error_detail = Some("the execution was cancelled before it started".into());
                store.finish(execution_id, records::ERROR, &result, &e.counters, None)?;
                self.events.state(
                    &e.task_id,
                    execution_id,
                    records::ERROR,
                    Some("cancelled while queued"),
                );
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// After an execution of `task_id` failed: disables its schedule (by
    /// SERVICE) if its last [`SCHEDULE_FAILURES_IN_A_ROW`] executions
    /// failed with the same error code (a cancel is not a failure).
    pub(super) fn check_schedule(&self, task_id: &str) {
        let disabled = (|| -> Result<Option<String>, StoreError> {
            let store = self.store.lock().unwrap();
            let Some(task) = store.task(task_id)? else {
                return Ok(None);
            };
            if task
                .schedule_details
                .is_none_or(|d| d.status != records::ENABLED)
            {
                return Ok(None);
            }
            let last = store.last_ended_executions(task_id, SCHEDULE_FAILURES_IN_A_ROW)?;
            let code = |e: &ExecutionRecord| match e.status == records::ERROR {
                true => e.result.error_code.clone(),
                false => None,
            };
            let Some(first) = last.first() else {
                return Ok(None);
            };
            let Some(failed_with) = code(first).filter(|c| c != "Cancelled") else {
                return Ok(None);
            };
            if last.len() < SCHEDULE_FAILURES_IN_A_ROW
                || last.iter().any(|e| code(e).as_ref() != Some(&failed_with))
            {
                return Ok(None);
            }
            let detail: String = first
                .result
                .error_detail
                .as_deref()
                .unwrap_or("no detail")
                .chars()
                .take(1000)
                .collect();
            let reason = format!(
                "the task failed {SCHEDULE_FAILURES_IN_A_ROW} times in a row with {failed_with}: {detail}"
            );
            store.set_schedule_status(task_id, Some(("SERVICE", &reason)))?;
            Ok(Some(reason))
        })();
        match disabled {
            Ok(Some(reason)) => {
                let line = format!("task {task_id}: its schedule is disabled: {reason}");
                self.events.warn(&line);
                self.events.console(&line);
            }
            Ok(None) => {}
            Err(e) => self
                .events
                .warn(&format!("cannot check the schedule of task {task_id}: {e}")),
        }
    }
}

pub(super) fn remove_reports(reports: &[String]) {
    for r in reports {
        let _ = std::fs::remove_file(Path::new(r));
    }
}

/// How the runner reaches a location of the hub (`LocationSpec::Hub`): the
/// daemon knows no hub, the `ferry-agent` binary injects the agent's link
/// to its hub ([`Agent::destinations`]). Also `runner::Destinations`.
pub trait Destinations: Send + Sync {
    /// Opens the hub's location `location_id` for one execution, its data
    /// compressed when `compress`, over `connections` connections (1 to 64).
    fn open(
        &self,
        location_id: &str,
        compress: bool,
        connections: usize,
    ) -> Result<Box<dyn Destination>, String>;

    /// When the local execution `execution_id` runs a job its hub shares
    /// among several agents: the hub's units, leased to this agent
    /// ([`ferry_engine::share`]); an error when they cannot be reached
    /// (the execution must not run alone then).
    fn share(
        &self,
        _execution_id: &str,
    ) -> Result<Option<Arc<dyn ferry_engine::share::WorkShare>>, String> {
        Ok(None)
    }
}

/// A destination opened by [`Destinations`]. A
/// [`Location`](ferry_engine::location::Location) has types of
/// its own (its directories, readers and writers), so it is not a trait
/// object: the destination is handed the execution and runs it with itself,
/// the engine typed with its own location (`Pending::run`, in
/// [`super::runner`]).
pub trait Destination: Send {
    fn run(self: Box<Self>, pending: Pending<'_>);
}

/// An execution whose source is open, waiting for its destination.
pub struct Pending<'a> {
    pub(super) agent: &'a Arc<Agent>,
    pub(super) exec: &'a ExecutionRecord,
    pub(super) running: &'a Running,
    pub(super) src_loc: LocalLocation,
    /// The source's scope in [`Agent::digests`].
    pub(super) src_scope: u64,
}
