// SPDX-License-Identifier: MIT
//! The runner: one execution at a time, the oldest queued first (DataSync's
//! task queueing). It mounts NFS locations, runs the engine, keeps the store
//! up to date while it runs, writes the report, and unmounts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::agent::{Agent, Running};
pub use super::agent::{Destination, Destinations, Pending};
use super::cloud::Ended;
use super::dispatch::Job;
use super::events::execution_metrics;
use super::mount::Mounted;
use super::nfs;
use ferry_engine::counters::CounterSnapshot;
use ferry_engine::digests;
use ferry_engine::dry_run::{self, Hints, History};
use ferry_engine::location::local::LocalLocation;
use ferry_engine::location::Location;
use ferry_engine::options::LogLevel;
use ferry_engine::report::{Fanout, Observer, Outcome, Phase, Record, ReportWriter};
use ferry_engine::{Execution, Summary};
use ferry_model::api::{self as records, Execution as ExecutionRecord, LocationSpec, ResultDetail};

/// How often live counters are saved while an execution runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs queued executions until the process ends; first, those `resumed`
/// (executions its agents were running when the hub stopped).
pub fn run(agent: Arc<Agent>, wake: std::sync::mpsc::Receiver<()>, resumed: Vec<ExecutionRecord>) {
    for exec in resumed {
        let running = Running::of(&exec);
        *agent.running.lock().unwrap() = Some(running.clone());
        agent.events.info(&format!(
            "{}: taken up again after a restart, as {}",
            exec.task_execution_id, exec.status
        ));
        execute(&agent, &exec, &running);
        *agent.running.lock().unwrap() = None;
    }
    loop {
        match claim_next(&agent) {
            Some((exec, running)) => {
                execute(&agent, &exec, &running);
                *agent.running.lock().unwrap() = None;
            }
            None => {
                let _ = wake.recv_timeout(Duration::from_secs(5));
            }
        }
    }
}

/// Takes the oldest queued execution and marks it LAUNCHING, atomically with
/// respect to cancels (which take the same locks in the same order).
fn claim_next(agent: &Agent) -> Option<(ExecutionRecord, Running)> {
    let mut running = agent.running.lock().unwrap();
    let store = agent.store.lock().unwrap();
    let exec = match store.next_queued() {
        Ok(e) => e?,
        Err(e) => {
            agent.events.warn(&format!("cannot read the queue: {e}"));
            return None;
        }
    };
    if let Err(e) = store.mark_started(&exec.task_execution_id) {
        agent
            .events
            .warn(&format!("cannot start {}: {e}", exec.task_execution_id));
        return None;
    }
    let r = Running::of(&exec);
    *running = Some(r.clone());
    agent.events.state(
        &exec.task_id,
        &exec.task_execution_id,
        records::LAUNCHING,
        None,
    );
    Some((exec, r))
}

/// A location made ready for one execution: mounted if it is NFS or EFS
/// (unmounted when dropped).
struct Prepared {
    path: PathBuf,
    _mounted: Option<Mounted>,
}

impl Prepared {
    fn open(agent: &Agent, spec: &LocationSpec, mount_point: PathBuf) -> Result<Prepared, String> {
        match spec {
            LocationSpec::Hub { .. } => {
                Err("a hub location is written over TLS, not opened".into())
            }
            LocationSpec::Agent { .. } => Err("an agent's location is read by that agent".into()),
            LocationSpec::Local { path, .. } => Ok(Prepared {
                path: PathBuf::from(path),
                _mounted: None,
            }),
            LocationSpec::Nfs { .. } | LocationSpec::Efs { .. } => {
                let m = agent.mount(spec, mount_point)?;
                Ok(Prepared {
                    path: m.path.clone(),
                    _mounted: Some(m),
                })
            }
        }
    }
}

/// Keeps the store's status in step with the engine's phases, and logs.
struct StoreObserver {
    agent: Arc<Agent>,
    task_id: String,
    execution_id: String,
    cancel: Arc<AtomicBool>,
    /// Failed files shown on the console so far (the journal gets them all).
    failures_shown: AtomicU32,
    log_level: LogLevel,
}

/// Failed files per execution that reach the console.
const CONSOLE_FAILURES: u32 = 10;

impl Observer for StoreObserver {
    fn phase(&self, phase: Phase, _counters: &CounterSnapshot) {
        // The end is written by the runner with the summary, in one update;
        // after a cancel the status stays CANCELLING until then.
        if matches!(phase, Phase::Success | Phase::Error | Phase::Queued)
            || self.cancel.load(Ordering::Relaxed)
        {
            return;
        }
        let status = phase.to_string();
        if status == records::LAUNCHING {
            return; // already recorded when claimed
        }
        if let Err(e) = self
            .agent
            .store
            .lock()
            .unwrap()
            .set_status(&self.execution_id, &status)
        {
            self.agent
                .events
                .warn(&format!("cannot save the status: {e}"));
        }
        self.agent
            .events
            .state(&self.task_id, &self.execution_id, &status, None);
    }

    fn wants_records(&self) -> bool {
        self.log_level != LogLevel::Off
    }

    fn record(&self, record: Record) {
        let failed = record.outcome == Outcome::Failed;
        let logged = match self.log_level {
            LogLevel::Off => false,
            LogLevel::Basic => failed,
            // Unchanged files are not news (millions of them, run after run).
            LogLevel::Transfer => record.outcome != Outcome::Skipped,
        };
        if logged {
            self.agent
                .events
                .file(&self.task_id, &self.execution_id, &record);
        }
        if failed && self.log_level != LogLevel::Off {
            let shown = self.failures_shown.fetch_add(1, Ordering::Relaxed);
            if shown < CONSOLE_FAILURES {
                self.agent.events.console(&format!(
                    "{}: {} failed in {:?}: {}",
                    self.execution_id,
                    record.path,
                    record.phase,
                    record.reason.as_deref().unwrap_or("no reason given")
                ));
            }
        }
    }
}

/// Ends an execution that could not run, with `code` and `detail`.
fn fail_execution(agent: &Arc<Agent>, exec: &ExecutionRecord, code: &str, detail: String) {
    let id = &exec.task_execution_id;
    {
        let mut result = store_result(agent, id);
        for s in [
            &mut result.prepare_status,
            &mut result.transfer_status,
            &mut result.verify_status,
        ] {
            if s == "PENDING" {
                *s = records::ERROR.into();
            }
        }
        result.error_code = Some(code.into());
        result.error_detail = Some(detail.clone());
        finish(
            agent,
            exec,
            records::ERROR,
            &result,
            &exec.counters,
            None,
            None,
        );
    }
}

fn execute(agent: &Arc<Agent>, exec: &ExecutionRecord, running: &Running) {
    let id = &exec.task_execution_id;
    let fail = |code: &str, detail: String| fail_execution(agent, exec, code, detail);

    let found = agent
        .store
        .lock()
        .unwrap()
        .task_with_locations(&exec.task_id);
    let Ok(Some((_, source, destination))) = found else {
        return fail(
            "TaskNotFound",
            "the task or one of its locations is gone".into(),
        );
    };
    let src_scope = digests::scope_of(&source.location_id);
    // Again now: a location may have changed under the task since.
    if let Err(e) = super::check::task(&source.spec, &destination.spec) {
        return fail("InvalidTask", e);
    }
    match agent_job(exec, &source, &destination) {
        Ok(Some(job)) => return dispatched(agent, exec, running, job),
        Ok(None) => {}
        Err(e) => return fail("DestinationUnavailable", e),
    }
    let mounts = agent.mounts_dir.join(id);
    let src = match Prepared::open(agent, &source.spec, mounts.join("source")) {
        Ok(p) => p,
        Err(e) => return fail("SourceUnavailable", e),
    };
    if let LocationSpec::Hub {
        hub_location_id: location_id,
        compress,
        connections,
    } = &destination.spec
    {
        let src_loc = match LocalLocation::open(&src.path) {
            Ok(l) => l,
            Err(e) => {
                return fail(
                    "SourceUnavailable",
                    format!("cannot open the source {}: {e}", source.location_uri),
                )
            }
        };
        let dst_loc = match hub_destination(agent, location_id, *compress, *connections) {
            Ok(l) => l,
            Err(e) => return fail("DestinationUnavailable", e),
        };
        dst_loc.run(Pending {
            agent,
            exec,
            running,
            src_loc,
            src_scope,
        });
        drop(src);
        let _ = std::fs::remove_dir(&mounts);
        return;
    }
    let dst = match Prepared::open(agent, &destination.spec, mounts.join("destination")) {
        Ok(p) => p,
        Err(e) => return fail("DestinationUnavailable", e),
    };
    let src_loc = match LocalLocation::open(&src.path) {
        Ok(l) => l,
        Err(e) => {
            return fail(
                "SourceUnavailable",
                format!("cannot open the source {}: {e}", source.location_uri),
            )
        }
    };
    let dst_loc = match LocalLocation::open(&dst.path) {
        // The plan's fidelity check knows EFS's largest file.
        Ok(l) => l.with_file_size_max(destination.spec.file_size_max()),
        Err(e) => {
            return fail(
                "DestinationUnavailable",
                format!(
                    "cannot open the destination {}: {e}",
                    destination.location_uri
                ),
            )
        }
    };
    run_engine(agent, exec, running, (src_loc, src_scope), dst_loc);
    drop((src, dst));
    let _ = std::fs::remove_dir(&mounts);
}

/// The job of an execution whose source is an agent's location (it runs
/// there), with the agents it is for; `None` for the others. A location
/// several agents reach gives the execution to all of them, but a dry run
/// to its first.
pub fn agent_job(
    exec: &ExecutionRecord,
    source: &records::Location,
    destination: &records::Location,
) -> Result<Option<(Job, Vec<String>)>, String> {
    let LocationSpec::Agent {
        agent_id,
        additional_agent_ids,
        location,
        compress,
        connections,
    } = &source.spec
    else {
        return Ok(None);
    };
    let mut agents = vec![agent_id.clone()];
    if !exec.options.dry_run {
        agents.extend(additional_agent_ids.iter().cloned());
    }
    let reached = match &destination.spec {
        // Checked when the task was made (`check::task`): the same agents.
        LocationSpec::Agent { location, .. } => Some(location.as_ref().clone()),
        d if d.is_mounted() || matches!(d, LocationSpec::Local { .. }) => None,
        _ => {
            return Err(
                "a task from an agent's location writes to a LOCAL, NFS or EFS location of the hub, or to one its agents reach"
                    .into(),
            )
        }
    };
    let job = Job {
        execution_id: exec.task_execution_id.clone(),
        task_id: exec.task_id.clone(),
        agent_id: agent_id.clone(),
        source: location.as_ref().clone(),
        destination_location_id: destination.location_id.clone(),
        destination: reached,
        compress: *compress,
        connections: *connections,
        options: exec.options.clone(),
        cancel: false,
        shared: false,
    };
    Ok(Some((job, agents)))
}

/// How long a cancelled execution waits for its agent to confirm.
const DISPATCH_CANCEL_WAIT: Duration = Duration::from_secs(120);

/// On the hub: hands the execution to the agent that owns its source and
/// mirrors what the agent reports until the execution ends there.
fn dispatched(
    agent: &Arc<Agent>,
    exec: &ExecutionRecord,
    running: &Running,
    (job, agents): (Job, Vec<String>),
) {
    let id = &exec.task_execution_id;
    agent.events.info(&format!(
        "{id}: handed to the agent(s) {}",
        agents.join(", ")
    ));
    // Posted already when taken up again after a restart.
    let agent_id = agents[0].clone();
    if !agent.board.has(id) {
        agent.board.post(job, &agents);
    }
    // A limit changed between the claim and the post reached the throttle only.
    let limit = running.throttle.limit().map_or(-1, |r| r as i64);
    agent.board.set_bytes_per_second(id, limit);
    let mut status = records::LAUNCHING.to_string();
    let mut cancel_deadline: Option<std::time::Instant> = None;
    loop {
        if let Some(r) = agent.board.wait(id, PROGRESS_EVERY) {
            if r.finished() {
                finish(
                    agent,
                    exec,
                    &r.status,
                    &r.result,
                    &r.counters,
                    None,
                    Some(&agent_id),
                );
                break;
            }
            let store = agent.store.lock().unwrap();
            // QUEUED on the agent is still LAUNCHING here; CANCELLING stays.
            if r.status != status && r.status != records::QUEUED && cancel_deadline.is_none() {
                status = r.status.clone();
                let _ = store.set_status(id, &status);
                agent.events.state(&exec.task_id, id, &status, None);
            }
            let _ = store.save_progress(id, &r.result, &r.counters);
        }
        if running.cancel.load(Ordering::Relaxed) && cancel_deadline.is_none() {
            agent.board.cancel(id);
            cancel_deadline = Some(std::time::Instant::now() + DISPATCH_CANCEL_WAIT);
        }
        if cancel_deadline.is_some_and(|d| std::time::Instant::now() > d) {
            fail_execution(
                agent,
                exec,
                "Cancelled",
                "the execution was cancelled; its agent did not confirm".into(),
            );
            break;
        }
    }
    agent.board.remove(id);
}

/// Runs the engine into `dst` and records the outcome (see
/// [`Destination`]).
impl Pending<'_> {
    pub fn run<D: Location>(self, dst: D) {
        let src = (self.src_loc, self.src_scope);
        run_engine(self.agent, self.exec, self.running, src, dst);
    }
}

/// The destination of a task whose data goes to the hub.
fn hub_destination(
    agent: &Agent,
    location_id: &str,
    compress: bool,
    connections: Option<u32>,
) -> Result<Box<dyn Destination>, String> {
    let destinations = agent
        .destinations
        .get()
        .ok_or("this agent is not set up to reach a hub")?;
    let connections = connections.unwrap_or(64).clamp(1, 64) as usize;
    destinations.open(location_id, compress, connections)
}

/// Runs the engine from `src` (its location, and its scope in
/// [`Agent::digests`]) to `dst` and records the outcome.
fn run_engine<D: Location>(
    agent: &Arc<Agent>,
    exec: &ExecutionRecord,
    running: &Running,
    (src_loc, src_scope): (LocalLocation, u64),
    dst_loc: D,
) {
    let id = &exec.task_execution_id;
    let fail = |code: &str, detail: String| fail_execution(agent, exec, code, detail);
    let report_path = agent.reports_dir.join(format!("{id}.json"));
    if exec.options.dry_run {
        return run_plan(agent, exec, running, &src_loc, dst_loc, &report_path);
    }
    let planned = agent
        .store
        .lock()
        .unwrap()
        .take_planned(&exec.task_id)
        .unwrap_or(None);
    let report = match ReportWriter::create(&report_path) {
        Ok(r) => Arc::new(r.with_config(exec.options.task_report_config.clone())),
        Err(e) => {
            return fail(
                "ReportUnavailable",
                format!("cannot prepare the report: {e}"),
            )
        }
    };
    let observer = Arc::new(StoreObserver {
        agent: agent.clone(),
        task_id: exec.task_id.clone(),
        execution_id: id.clone(),
        cancel: running.cancel.clone(),
        failures_shown: AtomicU32::new(0),
        log_level: exec.options.log_level,
    });
    let fanout: Arc<dyn Observer> = Arc::new(Fanout(vec![report.clone(), observer]));
    let engine = match Execution::new(
        src_loc,
        dst_loc,
        exec.options.clone(),
        fanout,
        running.cancel.clone(),
    ) {
        Ok(e) => {
            let e = e
                .with_source_digests(agent.digests.clone(), src_scope)
                .with_throttle(running.throttle.clone());
            match agent.destinations.get().map(|d| d.share(id)) {
                Some(Ok(Some(share))) => e.with_share(share),
                Some(Err(why)) => return fail("HubUnavailable", why),
                _ => e,
            }
        }
        Err(e) => return fail("InvalidOptions", e.to_string()),
    };
    let done = Mutex::new(false);
    let done_signal = std::sync::Condvar::new();
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut finished = done.lock().unwrap();
            while !*finished {
                finished = done_signal
                    .wait_timeout(finished, PROGRESS_EVERY)
                    .unwrap()
                    .0;
                let (_, counters) = engine.progress();
                let result = store_result(agent, id);
                let _ = agent
                    .store
                    .lock()
                    .unwrap()
                    .save_progress(id, &result, &counters);
            }
        });
        let outcome = engine.run();
        *done.lock().unwrap() = true;
        done_signal.notify_all();
        outcome
    });
    let mut summary = match outcome {
        Ok(s) => s,
        Err(e) => return fail("LocationUnavailable", e.to_string()),
    };
    summary.estimated_duration = planned;
    let report_saved = match report.finish(&summary) {
        Ok(()) => Some(report_path.to_string_lossy().into_owned()),
        Err(e) => {
            agent
                .events
                .warn(&format!("cannot write the report of {id}: {e}"));
            None
        }
    };
    let status = if summary.status == Phase::Success {
        records::SUCCESS
    } else {
        records::ERROR
    };
    finish(
        agent,
        exec,
        status,
        &result_of(&summary),
        &summary.counters,
        report_saved.as_deref(),
        None,
    );
}

/// The rates of the task's last execution that transferred something, for
/// a plan's estimate.
fn history_of(agent: &Agent, task_id: &str) -> Option<History> {
    let ended = agent
        .store
        .lock()
        .unwrap()
        .last_ended_executions(task_id, 10)
        .ok()?;
    let e = ended.iter().find(|e| {
        e.status == records::SUCCESS
            && !e.options.dry_run
            && e.counters.files_transferred > 0
            && e.result.transfer_duration > 0
    })?;
    let c = &e.counters;
    let transfer_s = e.result.transfer_duration as f64 / 1000.0;
    Some(History {
        files_per_second: c.files_transferred as f64 / transfer_s,
        bytes_per_second: (c.bytes_transferred as f64 / transfer_s).max(1.0),
        verify_seconds_per_file: if c.files_verified > 0 {
            e.result.verify_duration as f64 / 1000.0 / c.files_verified as f64
        } else {
            0.0
        },
    })
}

/// A dry run: the migration plan from `src_loc` to `dst_loc`, kept as the
/// execution's report; its estimate waits for the task's next execution.
fn run_plan<D: Location>(
    agent: &Arc<Agent>,
    exec: &ExecutionRecord,
    running: &Running,
    src_loc: &LocalLocation,
    dst_loc: D,
    report_path: &Path,
) {
    let id = &exec.task_execution_id;
    let started = std::time::Instant::now();
    let preparing = Phase::Preparing.to_string();
    let _ = agent.store.lock().unwrap().set_status(id, &preparing);
    agent.events.state(&exec.task_id, id, &preparing, None);
    let hints = Hints {
        history: history_of(agent, &exec.task_id),
        file_size_max: None,
    };
    let plan = match dry_run::plan(src_loc, &dst_loc, &exec.options, hints, &running.cancel) {
        Ok(p) => p,
        Err(e) => return fail_execution(agent, exec, "LocationUnavailable", e.to_string()),
    };
    let saved = serde_json::to_vec_pretty(&plan)
        .map_err(std::io::Error::other)
        .and_then(|json| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(report_path)?;
            f.write_all(&json)
        });
    let report = match saved {
        Ok(()) => Some(report_path.to_string_lossy().into_owned()),
        Err(e) => {
            agent
                .events
                .warn(&format!("cannot write the plan of {id}: {e}"));
            None
        }
    };
    let t = &plan.total;
    let counters = CounterSnapshot {
        files_listed_source: t.files_listed,
        estimated_files_to_transfer: t.files_to_transfer + t.metadata_only,
        estimated_bytes_to_transfer: t.bytes_to_transfer,
        estimated_files_to_delete: t.files_to_delete,
        files_unchanged: t.unchanged,
        files_skipped: t.skipped,
        ..CounterSnapshot::default()
    };
    let cancelled = running.cancel.load(Ordering::Relaxed);
    let (status, code, detail) = if cancelled {
        (
            records::ERROR,
            Some("Cancelled"),
            Some("the plan was cancelled".to_string()),
        )
    } else if !plan.unreadable.is_empty() {
        (
            records::ERROR,
            Some("SourceOrDestinationUnreadable"),
            Some(format!(
                "{} unreadable: {}",
                plan.unreadable.len(),
                plan.unreadable[0]
            )),
        )
    } else {
        (records::SUCCESS, None, None)
    };
    let scan_ms = (plan.measured.scan_seconds * 1000.0) as u64;
    let result = ResultDetail {
        prepare_status: status.into(),
        prepare_duration: scan_ms,
        transfer_status: records::SUCCESS.into(),
        verify_status: records::SUCCESS.into(),
        total_duration: started.elapsed().as_millis() as u64,
        estimated_duration: Some((plan.estimate.seconds * 1000.0).round() as u64),
        error_code: code.map(str::to_string),
        error_detail: detail,
        ..ResultDetail::default()
    };
    finish(
        agent,
        exec,
        status,
        &result,
        &counters,
        report.as_deref(),
        None,
    );
}

fn store_result(agent: &Agent, id: &str) -> ResultDetail {
    agent
        .store
        .lock()
        .unwrap()
        .execution(id)
        .ok()
        .flatten()
        .map(|e| e.result)
        .unwrap_or_else(super::store::pending_result)
}

/// Records an execution's end, and tells the cloud; `agent_id` names the
/// agent that ran it when it is not this machine.
fn finish(
    agent: &Agent,
    exec: &ExecutionRecord,
    status: &str,
    result: &ResultDetail,
    counters: &CounterSnapshot,
    report: Option<&str>,
    agent_id: Option<&str>,
) {
    let id = &exec.task_execution_id;
    if let Err(e) = agent
        .store
        .lock()
        .unwrap()
        .finish(id, status, result, counters, report)
    {
        agent
            .events
            .warn(&format!("cannot save the end of {id}: {e}"));
    }
    agent
        .events
        .state(&exec.task_id, id, status, result.error_detail.as_deref());
    agent
        .events
        .finished(&exec.task_id, id, status, counters, result.total_duration);
    to_cloud(agent, exec, result, counters, report, agent_id);
    // A plan's estimate waits for the task's next execution.
    if let (true, records::SUCCESS, Some(ms)) =
        (exec.options.dry_run, status, result.estimated_duration)
    {
        let _ = agent.store.lock().unwrap().set_planned(&exec.task_id, ms);
    }
    agent.ended.notify_one();
    if status == records::ERROR {
        agent.check_schedule(&exec.task_id);
    }
    agent.events.console(&format!(
        "{id}: {} files listed, {} transferred ({} bytes), {} verified, {} failed; \
         prepare {} ms, transfer {} ms, verify {} ms, total {} ms",
        counters.files_listed_source,
        counters.files_transferred,
        counters.bytes_transferred,
        counters.files_verified,
        counters.files_failed(),
        result.prepare_duration,
        result.transfer_duration,
        result.verify_duration,
        result.total_duration
    ));
}

/// Hands the execution's metrics, and its report when the task names a
/// bucket, to the cloud.
fn to_cloud(
    agent: &Agent,
    exec: &ExecutionRecord,
    result: &ResultDetail,
    counters: &CounterSnapshot,
    report: Option<&str>,
    agent_id: Option<&str>,
) {
    let id = &exec.task_execution_id;
    let destination = exec.options.task_report_config.destination.clone();
    let Some(cloud) = agent.events.cloud.get() else {
        if destination.is_some() && report.is_some() {
            agent.events.warn(&format!(
                "{id}: the task report names an S3 bucket, but daemon.aws is not set here: the report stays on this machine"
            ));
        }
        return;
    };
    let events = agent.events.clone();
    let execution_id = id.clone();
    cloud.ended(Ended {
        task_id: exec.task_id.clone(),
        execution_id: id.clone(),
        agent_id: agent_id.map(str::to_string),
        metrics: execution_metrics(counters, result.total_duration),
        report: report
            .zip(destination)
            .map(|(p, d)| (PathBuf::from(p), d.s3)),
        uploaded: Box::new(move |r| match r {
            Ok(uri) => events.info(&format!("{execution_id}: report uploaded to {uri}")),
            Err(e) => events.warn(&format!("{execution_id}: cannot upload the report: {e}")),
        }),
    });
}

/// DataSync's per-phase statuses from the engine's summary.
pub fn result_of(s: &Summary) -> ResultDetail {
    let c = &s.counters;
    let cancelled = s.error_code.as_deref() == Some("Cancelled");
    let phase = |failed: bool, ran: bool| {
        if failed {
            records::ERROR
        } else if ran {
            records::SUCCESS
        } else if s.status == Phase::Error {
            records::ERROR
        } else {
            records::SUCCESS
        }
    };
    let unreadable = s.error_code.as_deref() == Some("SourceOrDestinationUnreadable");
    let verify_ran = s.verify_duration > 0 || c.files_verified > 0 || c.files_failed_verify > 0;
    ResultDetail {
        prepare_status: phase(c.files_failed_prepare > 0 || unreadable, true).into(),
        prepare_duration: s.prepare_duration,
        transfer_status: phase(
            c.files_failed_transfer + c.files_failed_delete > 0 || unreadable,
            !cancelled,
        )
        .into(),
        transfer_duration: s.transfer_duration,
        verify_status: phase(
            c.files_failed_verify > 0,
            verify_ran || s.options.verify_mode == ferry_engine::options::VerifyMode::None,
        )
        .into(),
        verify_duration: s.verify_duration,
        total_duration: s.total_duration,
        estimated_duration: s.estimated_duration,
        error_code: s.error_code.clone(),
        error_detail: s.error_detail.clone(),
        ..ResultDetail::default()
    }
}

/// Unmounts what a killed agent (or hub) left mounted below `dir`, and
/// removes the mount points; returns what to log. Only mounts that the
/// kernel lists strictly below `dir` are unmounted, by their real path and
/// without following a link (`UMOUNT_NOFOLLOW`); entries are removed by name
/// relative to an open directory (`O_NOFOLLOW`), never through a link, and
/// never below a directory that is still a mount: a link planted in `dir`
/// is removed, not followed.
pub fn clean_mounts(dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let Ok(base) = dir.canonicalize() else {
        return notes;
    };
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|p| p.starts_with(&base) && p != &base)
        .collect();
    // the deepest first
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        match nfs::unmount(&p) {
            Ok(()) => notes.push(format!(
                "unmounted {}, left by a stopped agent",
                p.display()
            )),
            Err(e) => notes.push(format!("cannot unmount {}: {e}", p.display())),
        }
    }
    if let Err(e) = remove_points(&base, 2, &mut notes) {
        notes.push(format!("cannot clean {}: {e}", base.display()));
    }
    notes
}

/// Mount points, as /proc/self/mountinfo spells them (octal escapes undone).
fn mount_points() -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let text = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| {
            let mut out = Vec::with_capacity(field.len());
            let mut i = 0;
            while i < field.len() {
                let oct = field
                    .get(i + 1..i + 4)
                    .filter(|o| o.iter().all(|d| (b'0'..=b'7').contains(d)));
                match (field[i], oct) {
                    (b'\\', Some(o)) => {
                        out.push(o.iter().fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')));
                        i += 4;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            PathBuf::from(std::ffi::OsString::from_vec(out))
        })
        .collect()
}

/// Removes the empty directories below `dir`, `depth` levels down, and
/// links and other files planted there; nothing is followed, and nothing
/// below a mount that is still there is touched.
fn remove_points(dir: &Path, depth: u32, notes: &mut Vec<String>) -> rustix::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::empty())?;
    remove_below(&fd, dir, depth, notes)
}

fn remove_below(
    fd: &std::os::fd::OwnedFd,
    path: &Path,
    depth: u32,
    notes: &mut Vec<String>,
) -> rustix::io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let here = rustix::fs::fstat(fd)?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    for name in names {
        let child = path
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes()));
        let st = match rustix::fs::statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(_) => continue,
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            // Nothing of ours is anything but a directory here.
            if rustix::fs::unlinkat(fd, &name, AtFlags::empty()).is_ok() {
                notes.push(format!(
                    "removed {}: not a mount point of the agent (not followed)",
                    child.display()
                ));
            }
            continue;
        }
        if st.st_dev != here.st_dev {
            // still mounted: what is below is someone's data
            continue;
        }
        if depth > 1 {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            if let Ok(sub) = rustix::fs::openat(fd, &name, flags, Mode::empty()) {
                remove_below(&sub, &child, depth - 1, notes)?;
            }
        }
        let _ = rustix::fs::unlinkat(fd, &name, AtFlags::REMOVEDIR);
    }
    Ok(())
}
