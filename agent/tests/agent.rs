// SPDX-License-Identifier: MIT
//! `ferry-agent` on the host with local locations, driven through the real
//! `ferry` CLI (and so through the HTTP API on a Unix socket): executions to
//! SUCCESS with the trees compared, queueing, cancel, schedules, restarts
//! between and during executions, refused requests, reports and metrics.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running agent with its own data directory and socket.
struct Agent {
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Agent {
    fn launch(dir: &Path) -> Agent {
        let mut agent = Agent {
            dir: dir.to_path_buf(),
            child: None,
            extra: Vec::new(),
        };
        agent.spawn();
        agent
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--cloudwatch-emf")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferry-agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(self.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "the agent did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// `ferry ARGS --json`: (exit code, parsed stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .arg("--json")
            .env("FERRY_AGENT", self.socket())
            .output()
            .expect("run ferry");
        let stdout = String::from_utf8_lossy(&out.stdout);
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_str(&stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A CLI call that must succeed.
    fn ok(&self, args: &[&str]) -> Value {
        let (code, v, err) = self.cli(args);
        assert_eq!(
            code,
            0,
            "ferry {args:?} failed: {err}\nagent log:\n{}",
            self.log()
        );
        v
    }

    /// A CLI call the agent must refuse, saying `words`.
    fn refused(&self, args: &[&str], words: &str) {
        let (code, _, err) = self.cli(args);
        assert_eq!(code, 2, "ferry {args:?} was accepted");
        assert!(
            err.contains(words),
            "ferry {args:?}: {err:?} does not say {words:?}"
        );
    }

    /// A raw HTTP GET; (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    fn location(&self, path: &Path) -> String {
        let v = self.ok(&["location", "create-local", "--path", path.to_str().unwrap()]);
        v["LocationId"].as_str().unwrap().to_string()
    }

    fn execution(&self, id: &str) -> Value {
        self.ok(&["execution", "describe", id])
    }

    /// Waits until the execution's status satisfies `done`.
    fn wait(&self, id: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.execution(id);
            if done(e["Status"].as_str().unwrap_or("")) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} still {} after {timeout:?}\nagent log:\n{}",
                e["Status"],
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_end(&self, id: &str) -> Value {
        self.wait(id, Duration::from_secs(120), |s| {
            s == "SUCCESS" || s == "ERROR"
        })
    }

    fn start_task(&self, task: &str, extra: &[&str]) -> String {
        let mut args = vec!["task", "start", task];
        args.extend_from_slice(extra);
        let v = self.ok(&args);
        v["TaskExecutionId"].as_str().unwrap().to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn counter(e: &Value, name: &str) -> u64 {
    e["Counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {e}"))
}

/// A source of `files` files of `size` bytes in a few directories.
fn make_tree(root: &Path, files: usize, size: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        common::write(&dir.join(format!("f{i}")), &common::bytes(i as u64, size));
    }
}

/// Source, destination, agent, and a task between them.
fn setup(name: &str) -> (tempfile::TempDir, Agent, PathBuf, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let agent = Agent::launch(tmp.path());
    let s = agent.location(&src);
    let d = agent.location(&dst);
    let task = agent.ok(&[
        "task",
        "create",
        "--name",
        name,
        "--source",
        &s,
        "--destination",
        &d,
    ]);
    let task = task["TaskId"].as_str().unwrap().to_string();
    (tmp, agent, src, dst, task)
}

#[test]
fn an_execution_runs_to_success_with_report_metrics_and_an_incremental_rerun() {
    let (_tmp, agent, src, dst, task) = setup("full");
    if common::is_root() {
        common::make_full_tree(&src);
        agent.ok(&["task", "update", "full", "--preserve-devices", "preserve"]);
    } else {
        make_tree(&src, 40, 5000);
    }
    let exec = agent.start_task("full", &[]);
    let e = agent.wait_end(&exec);
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert_eq!(e["TaskId"], task.as_str());
    for phase in ["PrepareStatus", "TransferStatus", "VerifyStatus"] {
        assert_eq!(e["Result"][phase], "SUCCESS", "{e}");
    }
    assert!(counter(&e, "FilesTransferred") > 0);
    assert!(
        counter(&e, "FilesVerified") >= counter(&e, "FilesTransferred"),
        "{e}"
    );
    assert_eq!(common::compare_trees(&src, &dst), Vec::<String>::new());

    // The report is the engine's, kept by the agent.
    let report = agent.ok(&["execution", "report", &exec]);
    assert_eq!(report["Summary"]["Status"], "SUCCESS");
    assert!(
        report["Entries"].as_array().unwrap().len() as u64
            >= counter(&e, "FilesTransferred") + counter(&e, "FilesVerified"),
    );

    // A second execution with nothing changed transfers nothing.
    let second = agent.start_task(&task, &[]);
    let e2 = agent.wait_end(&second);
    assert_eq!(e2["Status"], "SUCCESS", "{e2}");
    assert_eq!(counter(&e2, "FilesTransferred"), 0, "{e2}");
    assert_eq!(counter(&e2, "BytesTransferred"), 0, "{e2}");
    // One change: one file transferred.
    common::write(&src.join("changed"), b"new");
    let third = agent.start_task(&task, &[]);
    let e3 = agent.wait_end(&third);
    assert_eq!(
        counter(&e3, "FilesTransferred"),
        2,
        "the file and its directory: {e3}"
    );
    assert_eq!(common::compare_trees(&src, &dst), Vec::<String>::new());

    // Newest first.
    let list = agent.ok(&["execution", "list", "--task", "full"]);
    let ids: Vec<&str> = list["Executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["TaskExecutionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [third.as_str(), second.as_str(), exec.as_str()]);

    let (status, metrics) = agent.get("/metrics");
    assert_eq!(status, 200);
    let line = format!(
        "ferry_files_transferred{{task_id=\"{task}\",task_name=\"full\",execution_id=\"{third}\"}} 2"
    );
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    assert!(
        metrics.contains("ferry_executions{status=\"SUCCESS\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "ferry_execution_status{{task_id=\"{task}\",task_name=\"full\",execution_id=\"{third}\",status=\"SUCCESS\"}} 1"
    )));

    // One log line per state change, and EMF at the end.
    let log = agent.log();
    for status in [
        "QUEUED",
        "LAUNCHING",
        "PREPARING",
        "TRANSFERRING",
        "VERIFYING",
        "SUCCESS",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&exec) && l.contains(&format!("\"status\":\"{status}\""))),
            "no {status} line for {exec}:\n{log}"
        );
    }
    assert!(log.contains("\"CloudWatchMetrics\""), "{log}");

    // TaskReportConfig, overridden for one execution: the summary alone.
    let fourth = agent.start_task(&task, &["--report-output-type", "summary-only"]);
    assert_eq!(agent.wait_end(&fourth)["Status"], "SUCCESS");
    let report = agent.ok(&["execution", "report", &fourth]);
    assert_eq!(report["Summary"]["Status"], "SUCCESS", "{report}");
    assert!(report.get("Entries").is_none(), "{report}");
}

#[test]
fn a_dry_run_plans_without_changing_anything_and_the_next_execution_shows_its_estimate() {
    let (_tmp, agent, src, dst, _task) = setup("planned");
    make_tree(&src, 40, 5000);
    common::write(&dst.join("stale"), b"gone from the source");
    std::os::unix::fs::symlink("x", dst.join("link-only-here")).unwrap();
    let before = common::compare_trees(&src, &dst);
    let plan = agent.start_task(
        "planned",
        &["--dry-run", "--preserve-deleted-files", "remove"],
    );
    let e = agent.wait_end(&plan);
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert_eq!(e["Options"]["DryRun"], true, "{e}");
    // Nothing changed at the destination (the probes are gone too).
    assert_eq!(common::compare_trees(&src, &dst), before);
    assert!(common::temp_files(&dst).is_empty());
    assert_eq!(counter(&e, "FilesTransferred"), 0);
    // 40 files and their 4 directories (and the top's attributes); the
    // two entries only at the destination.
    let planned = counter(&e, "EstimatedFilesToTransfer");
    assert!(planned == 44 || planned == 45, "{e}");
    assert_eq!(counter(&e, "EstimatedBytesToTransfer"), 40 * 5000, "{e}");
    assert_eq!(counter(&e, "EstimatedFilesToDelete"), 2, "{e}");
    let estimate = e["Result"]["EstimatedDuration"]
        .as_u64()
        .expect("an estimate");
    // The report is the plan.
    let report = agent.ok(&["execution", "report", &plan]);
    assert_eq!(report["Total"]["FilesToTransfer"], 44, "{report}");
    assert_eq!(
        report["ByTopLevel"]["d0"]["FilesToTransfer"], 11,
        "{report}"
    );
    assert_eq!(report["ByTopLevel"]["/"]["FilesToDelete"], 2, "{report}");
    assert_eq!(report["ByTopLevel"]["/"]["FilesToTransfer"], 0, "{report}");
    assert_eq!(report["Estimate"]["Basis"], "MEASURED", "{report}");
    // Small files: the rate of new files is measured, not bytes.
    let measured = &report["Measured"];
    assert!(
        measured["DestinationFilesPerSecond"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        measured.get("DestinationWriteBytesPerSecond").is_none(),
        "{report}"
    );

    // The next execution does what the plan said and shows its estimate
    // beside its own time, in its result and its report.
    let run = agent.start_task("planned", &["--preserve-deleted-files", "remove"]);
    let e = agent.wait_end(&run);
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert_eq!(counter(&e, "FilesTransferred"), planned, "{e}");
    assert_eq!(counter(&e, "FilesDeleted"), 2, "{e}");
    assert_eq!(e["Result"]["EstimatedDuration"], estimate, "{e}");
    let report = agent.ok(&["execution", "report", &run]);
    assert_eq!(report["Summary"]["EstimatedDuration"], estimate, "{report}");
    assert!(report["Summary"]["TotalDuration"].is_u64());
    // Used once: the run after has none; a plan now rests on that run's rates.
    common::write(&src.join("d0/new"), b"new");
    let plan = agent.start_task("planned", &["--dry-run"]);
    assert_eq!(agent.wait_end(&plan)["Status"], "SUCCESS");
    let report = agent.ok(&["execution", "report", &plan]);
    assert_eq!(report["Total"]["FilesToTransfer"], 1, "{report}");
    assert_eq!(
        report["Total"]["MetadataOnly"], 1,
        "its directory's times: {report}"
    );
    assert_eq!(report["Estimate"]["Basis"], "LAST_EXECUTION", "{report}");
    let again = agent.start_task("planned", &[]);
    let e = agent.wait_end(&again);
    assert!(e["Result"]["EstimatedDuration"].is_u64(), "{e}");
    let after = agent.start_task("planned", &[]);
    let e = agent.wait_end(&after);
    assert!(e["Result"].get("EstimatedDuration").is_none(), "{e}");
}

#[test]
fn a_second_start_queues_and_cancel_stops_running_and_queued_executions() {
    let (_tmp, agent, src, dst, task) = setup("slow");
    make_tree(&src, 24, 1 << 20);
    // 24 MiB at 1 MiB/s, two files at a time: long enough to watch.
    let slow = ["--bytes-per-second", "1048576", "--parallel", "2"];
    let first = agent.start_task(&task, &slow);
    let second = agent.start_task(&task, &[]);
    let third = agent.start_task(&task, &[]);
    agent.wait(&first, Duration::from_secs(30), |s| s == "TRANSFERRING");
    let t = agent.ok(&["task", "describe", &task]);
    assert_eq!(t["Status"], "RUNNING");
    assert_eq!(t["CurrentTaskExecutionId"], first.as_str());
    assert_eq!(agent.execution(&second)["Status"], "QUEUED");
    assert_eq!(
        agent.execution(&first)["Options"]["BytesPerSecond"],
        1048576
    );
    assert_eq!(agent.execution(&second)["Options"]["BytesPerSecond"], -1);

    // Cancel the queued third, then the running first.
    agent.ok(&["execution", "cancel", &third]);
    let e3 = agent.execution(&third);
    assert_eq!(e3["Status"], "ERROR");
    assert_eq!(e3["Result"]["ErrorCode"], "Cancelled");
    agent.ok(&["execution", "cancel", &first]);
    let e1 = agent.wait_end(&first);
    assert_eq!(e1["Status"], "ERROR");
    assert_eq!(e1["Result"]["ErrorCode"], "Cancelled", "{e1}");

    // The queued second runs next, and completes the sync.
    let e2 = agent.wait_end(&second);
    assert_eq!(e2["Status"], "SUCCESS", "{e2}");
    assert!(
        counter(&e2, "FilesTransferred") > 0,
        "the cancelled execution had finished: {e2}"
    );
    assert_eq!(common::compare_trees(&src, &dst), Vec::<String>::new());
    assert_eq!(
        agent.execution(&third)["Status"],
        "ERROR",
        "a cancelled execution stays cancelled"
    );

    // An ended execution cannot be cancelled.
    let (code, _, err) = agent.cli(&["execution", "cancel", &second]);
    assert_eq!(code, 2);
    assert!(err.contains("already ended"), "{err}");
}

#[test]
fn a_running_execution_takes_a_new_bandwidth_limit_and_task_queueing_disabled_does_not_wait() {
    let (_tmp, agent, src, dst, task) = setup("limited");
    make_tree(&src, 16, 1 << 20);
    // 16 MiB at 64 KiB/s: over four minutes, longer than `wait_end` waits.
    let first = agent.start_task(
        &task,
        &["--bytes-per-second", "65536", "--log-level", "transfer"],
    );
    agent.wait(&first, Duration::from_secs(30), |s| s == "TRANSFERRING");

    // TaskQueueing DISABLED: not queued behind the running one.
    let (code, _, err) = agent.cli(&["task", "start", &task, "--task-queueing", "disabled"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TaskQueueing is DISABLED"), "{err}");
    assert!(err.contains(&first), "{err}");
    // Only BytesPerSecond changes while it runs, and it is checked.
    let (status, e) = http(
        &agent.socket(),
        "PATCH",
        &format!("/v1/executions/{first}"),
        r#"{"Options": {"VerifyMode": "NONE"}}"#,
    );
    assert_eq!(status, 400, "{e}");
    assert!(e.contains("only BytesPerSecond"), "{e}");
    let (code, _, err) = agent.cli(&["execution", "update", &first, "--bytes-per-second", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("BytesPerSecond 0 is not valid"), "{err}");

    // Unlimited now: it ends long before four minutes.
    let e = agent.ok(&["execution", "update", &first, "--bytes-per-second", "-1"]);
    assert_eq!(e["Options"]["BytesPerSecond"], -1, "{e}");
    let e = agent.wait_end(&first);
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert_eq!(e["Options"]["BytesPerSecond"], -1);
    assert_eq!(common::compare_trees(&src, &dst), Vec::<String>::new());
    assert!(agent
        .log()
        .contains(&format!("{first}: BytesPerSecond is now -1")));

    // LogLevel TRANSFER: a line for each file transferred.
    let lines = |id: &str, event: &str| {
        let needle = format!("\"event\":\"{event}\"");
        agent
            .log()
            .lines()
            .filter(|l| l.contains(id) && l.contains(&needle))
            .count()
    };
    assert!(lines(&first, "file-transferred") >= 16, "{}", agent.log());
    assert!(lines(&first, "file-verified") >= 16, "{}", agent.log());
    // The default (BASIC) logs failed files only.
    common::write(&src.join("d0/new"), b"new");
    let second = agent.start_task(&task, &[]);
    assert_eq!(agent.wait_end(&second)["Status"], "SUCCESS");
    assert_eq!(lines(&second, "file-transferred"), 0);

    // Ended: nothing to change.
    let (code, _, err) = agent.cli(&["execution", "update", &first, "--bytes-per-second", "100"]);
    assert_eq!(code, 2);
    assert!(err.contains("already ended"), "{err}");
}

#[test]
fn the_store_survives_restarts_and_a_killed_execution_is_marked_interrupted() {
    let (_tmp, mut agent, src, dst, task) = setup("crash");
    make_tree(&src, 16, 1 << 20);
    let done = agent.start_task(&task, &["--transfer-mode", "all"]);
    agent.wait_end(&done);

    // Between executions: everything is still there.
    agent.restart();
    assert_eq!(agent.execution(&done)["Status"], "SUCCESS");
    assert_eq!(
        agent.ok(&["task", "list"])["Tasks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        agent.ok(&["location", "list"])["Locations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // During one: SIGKILL while transferring.
    common::write(&src.join("d0/f0"), &common::bytes(99, 1 << 20));
    let killed = agent.start_task(
        &task,
        &[
            "--transfer-mode",
            "all",
            "--bytes-per-second",
            "1048576",
            "--parallel",
            "2",
        ],
    );
    let queued = agent.start_task(&task, &[]);
    agent.wait(&killed, Duration::from_secs(30), |s| s == "TRANSFERRING");
    std::thread::sleep(Duration::from_millis(1500));
    agent.restart();
    let e = agent.execution(&killed);
    assert_eq!(e["Status"], "ERROR", "{e}");
    assert_eq!(e["Result"]["ErrorCode"], "Interrupted", "{e}");
    assert!(e["EndTime"].is_string());
    // The execution queued behind it runs after the restart and completes the sync.
    let q = agent.wait_end(&queued);
    assert_eq!(q["Status"], "SUCCESS", "{q}");
    assert_eq!(common::compare_trees(&src, &dst), Vec::<String>::new());
    assert!(common::temp_files(&dst).is_empty());
}

#[test]
fn bad_requests_are_refused_with_a_clear_message_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::launch(tmp.path());
    std::fs::create_dir_all(tmp.path().join("in/sub")).unwrap();
    let src = agent.location(&tmp.path().join("in"));
    std::fs::create_dir(tmp.path().join("out")).unwrap();
    let dst = agent.location(&tmp.path().join("out"));
    let inner = agent.location(&tmp.path().join("in/sub"));

    let refused = |args: &[&str], words: &str| agent.refused(args, words);
    let refused_task = |extra: &[&str], words: &str| {
        let mut args = vec!["task", "create", "--name", "t"];
        args.extend_from_slice(extra);
        refused(&args, words);
    };
    refused_task(
        &["--source", "loc-00000000000000000", "--destination", &dst],
        "source location loc-00000000000000000 does not exist",
    );
    refused_task(
        &[
            "--source",
            &src,
            "--destination",
            &dst,
            "--schedule",
            "every hour",
        ],
        "five (minute hour",
    );
    refused_task(
        &[
            "--source",
            &src,
            "--destination",
            &dst,
            "--schedule",
            "61 * * * *",
        ],
        "not a valid cron expression",
    );
    refused_task(
        &[
            "--source",
            &src,
            "--destination",
            &dst,
            "--schedule",
            "0 0 31 2 *",
        ],
        "never occurs",
    );
    refused_task(
        &["--source", &src, "--destination", &inner],
        "is inside the source",
    );
    refused_task(
        &["--source", &inner, "--destination", &src],
        "would overwrite or delete its own source",
    );
    refused(
        &[
            "location",
            "create-hub",
            "--location-id",
            "loc-1",
            "--connections",
            "0",
        ],
        "0 connections: give 1 to 64",
    );
    refused(
        &[
            "location",
            "create-nfs",
            "--server",
            "nas",
            "--export",
            "/e",
            "--subdirectory",
            "../../etc",
        ],
        "'..'",
    );
    // The agent names options and values as its API does (Atime BEST_EFFORT).
    refused_task(
        &["--source", &src, "--destination", &dst, "--mtime", "none"],
        "Atime BEST_EFFORT needs Mtime PRESERVE",
    );
    refused_task(
        &["--source", &src, "--destination", &src],
        "the same location",
    );
    refused(
        &["location", "create-local", "--path", "/nonexistent/dir"],
        "not a directory",
    );
    refused(
        &[
            "location",
            "create-nfs",
            "--server",
            "nas",
            "--export",
            "/e",
            "--mount-options",
            "vers=3",
        ],
        "--version",
    );
    refused(
        &["task", "start", "nosuchtask"],
        "there is no task nosuchtask",
    );
    refused(
        &["execution", "describe", "exec-00000000000000000"],
        "there is no execution",
    );

    assert_eq!(agent.ok(&["task", "list"])["Tasks"], serde_json::json!([]));
    assert_eq!(
        agent.ok(&["location", "list"])["Locations"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A valid task; then refusals that concern it.
    agent.ok(&[
        "task",
        "create",
        "--name",
        "t",
        "--source",
        &src,
        "--destination",
        &dst,
    ]);
    refused(
        &[
            "task",
            "create",
            "--name",
            "t",
            "--source",
            &src,
            "--destination",
            &dst,
        ],
        "already exists",
    );
    refused(
        &[
            "task",
            "start",
            "t",
            "--preserve-deleted-files",
            "remove",
            "--transfer-mode",
            "all",
        ],
        "cannot go with TransferMode ALL",
    );
    refused(&["location", "delete", &src], "used by task(s) t");
    refused(
        &["task", "update", "t", "--schedule", "0 0 * * * *"],
        "6 field(s)",
    );
    assert_eq!(
        agent.ok(&["task", "describe", "t"])["Schedule"],
        Value::Null
    );
    assert!(agent.ok(&["execution", "list"])["Executions"]
        .as_array()
        .unwrap()
        .is_empty());

    // Raw API: unknown fields and unknown options are named.
    let mut s = UnixStream::connect(agent.socket()).unwrap();
    let body = r#"{"OverrideOptions":{"VerifyMod":"NONE"}}"#;
    write!(s, "POST /v1/tasks/t/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("unknown option VerifyMod"), "{answer}");
}

#[test]
fn an_efs_location_is_datasyncs_and_a_mount_target_out_of_reach_ends_the_execution_saying_so() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let agent = Agent::launch(tmp.path());
    let refused = |args: &[&str], words: &str| agent.refused(args, words);
    fn efs<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["location", "create-efs"][..], extra].concat()
    }
    refused(
        &efs(&["--file-system-id", "fs-12345678"]),
        "give --region with a file system id",
    );
    refused(
        &efs(&["--file-system-id", "fs-nothex!", "--region", "us-east-1"]),
        "is not an EFS file system id",
    );
    refused(
        &efs(&[
            "--file-system-id",
            "fs-12345678",
            "--region",
            "us-east-1",
            "--access-point",
            "fsap-12345678",
        ]),
        "give TLS1_2 with an access point",
    );
    refused(
        &efs(&[
            "--file-system-id",
            "arn:aws:elasticfilesystem:eu-west-1:111122223333:file-system/fs-12345678",
            "--region",
            "us-east-1",
        ]),
        "is in eu-west-1, not --region us-east-1",
    );

    // By its ARN, as DataSync names it; the access point by its ARN too.
    let loc = agent.ok(&efs(&[
        "--file-system-id",
        "arn:aws:elasticfilesystem:eu-west-1:111122223333:file-system/fs-0123456789abcdef0",
        "--access-point",
        "arn:aws:elasticfilesystem:eu-west-1:111122223333:access-point/fsap-0123456789abcdef0",
        "--subdirectory",
        "/migrated",
        "--in-transit-encryption",
        "TLS1_2",
        "--mount-target-address",
        "127.0.0.1",
    ]));
    let id = loc["LocationId"].as_str().unwrap();
    let described = agent.ok(&["location", "describe", id]);
    assert_eq!(described["Type"], "EFS", "{described}");
    assert_eq!(
        described["LocationUri"],
        "efs://eu-west-1.fs-0123456789abcdef0/migrated"
    );
    assert_eq!(described["FileSystemId"], "fs-0123456789abcdef0");
    assert_eq!(described["AccessPointId"], "fsap-0123456789abcdef0");
    assert_eq!(described["InTransitEncryption"], "TLS1_2");

    // Nothing answers TLS at 127.0.0.1:2049 (or something that is not EFS
    // does): the execution ends in ERROR, the mount target named.
    let s = agent.location(&src);
    agent.ok(&[
        "task",
        "create",
        "--name",
        "to-efs",
        "--source",
        &s,
        "--destination",
        id,
    ]);
    let exec = agent.start_task("to-efs", &[]);
    let e = agent.wait_end(&exec);
    assert_eq!(e["Status"], "ERROR", "{e}");
    let detail = e["Result"]["ErrorDetail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(
            "the mount target fs-0123456789abcdef0.efs.eu-west-1.amazonaws.com at 127.0.0.1:2049"
        ),
        "{e}"
    );
}

#[test]
fn a_schedule_starts_the_task_every_minute_without_doubling() {
    let (_tmp, agent, src, dst, task) = setup("cron");
    make_tree(&src, 4, 1000);
    agent.ok(&["task", "update", &task, "--schedule", "* * * * *"]);
    assert_eq!(
        agent.ok(&["task", "describe", &task])["Schedule"],
        "* * * * *"
    );
    let deadline = Instant::now() + Duration::from_secs(75);
    let exec = loop {
        let list = agent.ok(&["execution", "list", "--task", &task]);
        if let Some(e) = list["Executions"].as_array().unwrap().first() {
            break e["TaskExecutionId"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the schedule never fired:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let e = agent.wait_end(&exec);
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert_eq!(common::compare_trees(&src, &dst), Vec::<String>::new());
    // One firing, one execution.
    let list = agent.ok(&["execution", "list", "--task", &task]);
    assert_eq!(list["Executions"].as_array().unwrap().len(), 1, "{list}");

    // A rate counts from when it is set: a minute on, not before.
    let set = Instant::now();
    agent.ok(&["task", "update", &task, "--schedule", "rate(1 minute)"]);
    let count = || {
        agent.ok(&["execution", "list", "--task", &task])["Executions"]
            .as_array()
            .unwrap()
            .len()
    };
    while count() < 2 {
        assert!(
            set.elapsed() < Duration::from_secs(90),
            "the rate never fired:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(set.elapsed() >= Duration::from_secs(59), "fired early");
    agent.ok(&["task", "update", &task, "--schedule", ""]);
    assert_eq!(
        agent.ok(&["task", "describe", &task])["Schedule"],
        Value::Null
    );
}

#[test]
fn a_schedule_that_keeps_failing_the_same_way_is_disabled_and_says_why() {
    let (_tmp, agent, src, _dst, task) = setup("failing");
    make_tree(&src, 2, 100);
    agent.ok(&["task", "update", &task, "--schedule", "rate(1 day)"]);
    let details = |agent: &Agent| agent.ok(&["task", "describe", &task])["ScheduleDetails"].clone();
    assert_eq!(details(&agent)["Status"], "ENABLED");
    // The source gone: every start fails the same way.
    std::fs::rename(&src, src.with_extension("away")).unwrap();
    let mut code = Value::Null;
    for run in 1..=3 {
        assert_eq!(details(&agent)["Status"], "ENABLED", "before run {run}");
        let e = agent.wait_end(&agent.start_task(&task, &[]));
        assert_eq!(e["Status"], "ERROR", "{e}");
        code = e["Result"]["ErrorCode"].clone();
    }
    let d = details(&agent);
    assert_eq!(d["Status"], "DISABLED", "{d}");
    assert_eq!(d["DisabledBy"], "SERVICE", "{d}");
    let why = d["DisabledReason"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "the task failed 3 times in a row with {}: ",
            code.as_str().unwrap()
        )),
        "{why}"
    );
    assert!(agent.log().contains("its schedule is disabled"));
    // The list shows it.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["task", "list"])
        .env("FERRY_AGENT", agent.socket())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("rate(1 day) (DISABLED)"), "{list}");

    // Fixed and enabled again by the operator: from now, nothing left of why.
    std::fs::rename(src.with_extension("away"), &src).unwrap();
    agent.ok(&["task", "update", &task, "--schedule-status", "enabled"]);
    let d = details(&agent);
    assert_eq!(d["Status"], "ENABLED", "{d}");
    assert_eq!(d["DisabledReason"], Value::Null, "{d}");
    // Disabled by the operator, in DataSync's words; a new schedule is enabled.
    agent.ok(&["task", "update", &task, "--schedule-status", "disabled"]);
    let d = details(&agent);
    assert_eq!(
        (&d["DisabledBy"], &d["DisabledReason"]),
        (
            &Value::from("USER"),
            &Value::from("Manually disabled by user.")
        )
    );
    agent.ok(&["task", "update", &task, "--schedule", "rate(2 days)"]);
    assert_eq!(details(&agent)["Status"], "ENABLED");
    // A rate written wrong is refused with why.
    let (code, _, err) = agent.cli(&["task", "update", &task, "--schedule", "rate(2 day)"]);
    assert_eq!(code, 2);
    assert!(err.contains("\"day\" is not a unit here"), "{err}");
}

#[test]
fn locations_and_tasks_declared_in_a_provisioning_document_are_created_updated_and_started() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    make_tree(&src, 6, 3000);
    let doc_path = tmp.path().join("provision.json");
    let doc = |verify: &str, source: &str| {
        serde_json::json!({
            "locations": {
                "source": {"local": {"path": src}},
                "backup": {"local": {"path": dst}},
                "nas": {"nfs": {"server": "nas.example", "export": "/exports/data", "version": "4.1", "mount_options": "nconnect=4"}},
            },
            "tasks": {
                "nightly": {
                    "source": source,
                    "destination": "backup",
                    "options": {"VerifyMode": verify},
                    "schedule": "0 2 * * *",
                    "start_on_boot": true,
                },
            },
        })
        .to_string()
    };
    std::fs::write(&doc_path, doc("ONLY_FILES_TRANSFERRED", "source")).unwrap();
    let mut agent = Agent {
        dir: tmp.path().to_path_buf(),
        child: None,
        extra: vec![
            "--provision".into(),
            doc_path.to_string_lossy().into_owned(),
        ],
    };
    agent.spawn();

    let t = agent.ok(&["task", "describe", "nightly"]);
    assert_eq!(t["Options"]["VerifyMode"], "ONLY_FILES_TRANSFERRED");
    assert_eq!(t["Schedule"], "0 2 * * *");
    let locations = agent.ok(&["location", "list"]);
    let uris: Vec<&str> = locations["Locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["LocationUri"].as_str().unwrap())
        .collect();
    assert_eq!(uris.len(), 3, "{locations}");
    assert!(uris.contains(&"nfs://nas.example/exports/data"), "{uris:?}");
    // Started at boot.
    let list = agent.ok(&["execution", "list", "--task", "nightly"]);
    let first = list["Executions"][0]["TaskExecutionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(agent.wait_end(&first)["Status"], "SUCCESS");
    assert_eq!(common::compare_trees(&src, &dst), Vec::<String>::new());

    // Next start with a changed document: updated in place, started again.
    std::fs::write(&doc_path, doc("NONE", "source")).unwrap();
    agent.restart();
    let t2 = agent.ok(&["task", "describe", "nightly"]);
    assert_eq!(t2["TaskId"], t["TaskId"]);
    assert_eq!(t2["Options"]["VerifyMode"], "NONE");
    assert_eq!(
        agent.ok(&["location", "list"])["Locations"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let list = agent.ok(&["execution", "list", "--task", "nightly"]);
    assert_eq!(list["Executions"].as_array().unwrap().len(), 2, "{list}");
    let second = list["Executions"][0]["TaskExecutionId"]
        .as_str()
        .unwrap()
        .to_string();
    let e = agent.wait_end(&second);
    assert_eq!(e["Status"], "SUCCESS");
    assert_eq!(counter(&e, "FilesTransferred"), 0, "{e}");

    // A bad document changes nothing, and says why.
    std::fs::write(&doc_path, doc("NONE", "nowhere")).unwrap();
    agent.restart();
    assert_eq!(
        agent.ok(&["task", "describe", "nightly"])["Options"]["VerifyMode"],
        "NONE"
    );
    assert_eq!(
        agent.ok(&["execution", "list"])["Executions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let log = agent.log();
    assert!(
        log.contains(
            "agent.tasks.nightly.source: \\\"nowhere\\\" is not a location of agent.locations"
        ),
        "{log}"
    );

    // A local path that does not exist, a schedule that never occurs, a
    // destination inside the source: each refused, nothing changes.
    let base = serde_json::from_str::<Value>(&doc("NONE", "source")).unwrap();
    for (change, want) in [
        (
            serde_json::json!({"locations": {"source": {"local": {"path": "/nonexistent/dir"}}}}),
            "agent.locations.source: /nonexistent/dir is not a directory on the agent",
        ),
        (
            serde_json::json!({"tasks": {"nightly": {"schedule": "0 0 31 2 *"}}}),
            "never occurs",
        ),
        (
            serde_json::json!({"locations": {"": {"local": {"path": "/"}}}}),
            "is not a name (letters, digits, '-', '_', at most 64)",
        ),
        (
            serde_json::json!({"locations": {"backup": {"local": {"path": src.join("d0")}}}}),
            "is inside the source",
        ),
    ] {
        let mut d = base.clone();
        merge(&mut d, &change);
        std::fs::write(&doc_path, d.to_string()).unwrap();
        agent.restart();
        assert_eq!(
            agent.ok(&["task", "describe", "nightly"])["Options"]["VerifyMode"],
            "NONE"
        );
        let log = agent.log();
        assert!(log.contains(want), "{want}: {log}");
    }
}

/// `change` laid over `v`, object by object.
fn merge(v: &mut Value, change: &Value) {
    match (v, change) {
        (Value::Object(v), Value::Object(c)) => {
            for (k, c) in c {
                merge(v.entry(k.clone()).or_insert(Value::Null), c);
            }
        }
        (v, c) => *v = c.clone(),
    }
}

/// One raw HTTP request on a socket; (status, body). A server may answer,
/// and close, before it has read the whole request: the answer counts
/// whether or not the write completed (no race to win).
fn http(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(request.as_bytes()) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        );
    }
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.len() > 12, "no answer ({read:?})");
    let status = answer[9..12].parse().unwrap();
    (status, answer.split_once("\r\n\r\n").unwrap().1.to_string())
}

#[test]
fn the_read_only_socket_answers_get_only_and_only_its_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    // in a directory the agent makes: its group must pass through it
    let ro = dir.path().join("run/agent-ro.sock");
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    let mut agent = Agent {
        dir: dir.path().to_path_buf(),
        child: None,
        extra: vec![
            "--read-only-socket".into(),
            ro.display().to_string(),
            "--read-only-group".into(),
            gid.to_string(),
        ],
    };
    agent.spawn();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let location = agent.location(&src);
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&ro).is_err() {
        assert!(
            Instant::now() < deadline,
            "no read-only socket:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&agent.socket()),
        0o600,
        "the main socket is the owner's only"
    );
    assert_eq!(mode(&ro), 0o660);
    assert_eq!(mode(&dir.path().join("run")), 0o711);
    assert_eq!(std::fs::metadata(&ro).unwrap().gid(), gid);

    let (status, body) = http(&ro, "GET", "/v1/locations", "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&location), "{body}");
    let create = format!("{{\"Type\": \"LOCAL\", \"Path\": \"{}\"}}", src.display());
    let (status, body) = http(&ro, "POST", "/v1/locations", &create);
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("only answers GET"), "{body}");
    // the same request on the main socket is a good one
    let (status, body) = http(&agent.socket(), "POST", "/v1/locations", &create);
    assert_eq!(status, 201, "{body}");
    let (status, _) = http(&ro, "DELETE", &format!("/v1/locations/{location}"), "");
    assert_eq!(status, 405);
    // A refused request's body is read (up to a bound) before the answer:
    // the client's write completes, far past what a socket buffers.
    let mut s = UnixStream::connect(&ro).unwrap();
    let big = "x".repeat(512 * 1024);
    let request = format!(
        "POST /v1/locations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    s.write_all(request.as_bytes())
        .expect("the whole request is read before the refusal");
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let (_, body) = http(&ro, "GET", "/v1/locations", "");
    assert!(
        body.contains(&location),
        "nothing changed through it: {body}"
    );
}

/// Runs `sh -c script` as an unprivileged user (nobody); whether it worked.
fn as_nobody(script: &str) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Every directory below `root` must be 0700 and every file 0600 (a
/// certificate 0644); returns what is not.
fn not_private(root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if mode_of(&d) != 0o700 {
            bad.push(format!("{} {:o}", d.display(), mode_of(&d)));
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else {
                let want = if p.extension().is_some_and(|x| x == "pem") {
                    0o644
                } else {
                    0o600
                };
                if mode_of(&p) != want {
                    bad.push(format!("{} {:o}", p.display(), mode_of(&p)));
                }
            }
        }
    }
    bad
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ferry-agent --config DOC`, until its socket answers; or its exit and
/// stderr when it stops first.
fn daemon_with_config(dir: &Path, yaml: &str) -> Result<Child, (i32, String)> {
    let doc = dir.join("ferry.yaml");
    std::fs::write(&doc, yaml).unwrap();
    let log = dir.join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .arg("--config")
        .arg(&doc)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err((
                status.code().unwrap_or(-1),
                std::fs::read_to_string(&log).unwrap(),
            ));
        }
        if UnixStream::connect(dir.join("api.sock")).is_ok() {
            return Ok(child);
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hub_yaml(dir: &Path, token: &Path) -> String {
    format!(
        "version: 2\nrole: hub\ndaemon:\n  data_dir: {}\n  socket: {}\n  https_listen: 127.0.0.1:{}\n  operator_token_file: {}\n",
        dir.join("data").display(),
        dir.join("api.sock").display(),
        free_port(),
        token.display()
    )
}

#[test]
fn everything_a_started_daemon_creates_is_its_own_only() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    // An agent that ran an execution: database, report, mount points.
    let (tmp, agent, src, _dst, task) = setup("private");
    // /data is 0755: others may pass, so only the modes below keep them out
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    make_tree(&src, 3, 100);
    let id = agent.start_task(&task, &[]);
    assert_eq!(agent.wait_end(&id)["Status"], "SUCCESS");
    let data = tmp.path().join("data");
    assert!(data.join("reports").read_dir().unwrap().count() > 0);
    assert_eq!(not_private(&data), Vec::<String>::new());
    assert_eq!(mode_of(&agent.socket()), 0o600);
    let d = data.display();
    assert!(!as_nobody(&format!("ls {d}")), "others list the state");
    assert!(!as_nobody(&format!("touch {d}/reports/planted")));
    assert!(!as_nobody(&format!("ln -s / {d}/mnt/planted")));

    // A hub: its CA, token and records.
    let hub = tempfile::tempdir().unwrap();
    std::fs::set_permissions(hub.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = hub.path().join("data/hub/operator-token");
    let mut child = daemon_with_config(hub.path(), &hub_yaml(hub.path(), &token)).unwrap();
    assert!(token.exists());
    let hub_data = hub.path().join("data");
    assert_eq!(not_private(&hub_data), Vec::<String>::new());
    assert_eq!(mode_of(&token), 0o600);
    assert_eq!(mode_of(&hub_data.join("hub/ca/ca.key")), 0o600);
    let t = token.display();
    assert!(!as_nobody(&format!("cat {t}")));
    assert!(!as_nobody(&format!("rm -f {t}")));
    child.kill().unwrap();
    child.wait().unwrap();

    // An agent with its activation port: the link's directory.
    let linked = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 2\ndaemon:\n  data_dir: {}\n  socket: {}\n  activation_listen: 127.0.0.1:{}\n  activated_marker: {}\n",
        linked.path().join("data").display(),
        linked.path().join("api.sock").display(),
        free_port(),
        linked.path().join("marker").display()
    );
    let mut child = daemon_with_config(linked.path(), &yaml).unwrap();
    assert!(linked.path().join("data/hub-link").is_dir());
    assert_eq!(
        not_private(&linked.path().join("data")),
        Vec::<String>::new()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_state_directory_open_to_others_is_repaired_and_one_of_someone_else_refused() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // as an older agent left it, with umask 0
    std::fs::create_dir_all(data.join("reports")).unwrap();
    std::fs::write(data.join("reports/exec-1.json"), "{}").unwrap();
    for (p, m) in [
        ("", 0o777),
        ("reports", 0o777),
        ("reports/exec-1.json", 0o666),
    ] {
        std::fs::set_permissions(data.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    let agent = Agent::launch(tmp.path());
    assert_eq!(not_private(&data), Vec::<String>::new());
    assert!(
        agent.log().contains("was open to others (mode 0777)"),
        "{}",
        agent.log()
    );
    drop(agent);

    // A file planted by someone else in it: refused, named.
    std::fs::write(data.join("reports/planted"), "x").unwrap();
    common::chown(&data.join("reports/planted"), 65534, 65534);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--socket")
        .arg(tmp.path().join("agent.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("reports/planted is owned by uid 65534"),
        "{err}"
    );
    std::fs::remove_file(data.join("reports/planted")).unwrap();
    // The directory itself someone else's: refused.
    common::chown(&data, 65534, 65534);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--socket")
        .arg(tmp.path().join("agent.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
}

#[test]
fn an_operator_token_others_could_write_or_a_link_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    let attempt = |what: &str, want: &str| {
        let (code, err) = daemon_with_config(tmp.path(), &hub_yaml(tmp.path(), &token))
            .map(|mut c| {
                c.kill().unwrap();
                c.wait().unwrap();
            })
            .expect_err(what);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains(want), "{what}: {err}");
    };
    // as an attacker would have left it in a directory open to all
    std::fs::write(&token, "attacker-chosen-token-000000\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o666)).unwrap();
    attempt("writable by others", "writable by others");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    common::chown(&token, 65534, 65534);
    attempt("someone else's", "owned by uid 65534");
    std::fs::remove_file(&token).unwrap();
    let real = tmp.path().join("real-token");
    std::fs::write(&real, "attacker-chosen-token-000000\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, &token).unwrap();
    attempt("a link", "symbolic link");
    // A directory others can write on the way: refused too.
    std::fs::remove_file(&token).unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = daemon_with_config(tmp.path(), &hub_yaml(tmp.path(), &open.join("token")))
        .map(|mut c| {
            c.kill().unwrap();
            c.wait().unwrap();
        })
        .expect_err("an open directory");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("writable by others"), "{err}");
}

/// A tmpfs mounted for a test, unmounted at the end whatever happens.
struct TestMount(PathBuf);

impl Drop for TestMount {
    fn drop(&mut self) {
        // already unmounted by the agent, where the test wants it
        let _ = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

fn is_mounted(p: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.display().to_string();
    text.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

#[test]
fn a_link_planted_in_the_mount_directory_is_not_followed_at_start() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    let point = victim.join("source");
    std::fs::create_dir_all(&point).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "ferry-test", point.to_str().unwrap()])
        .status()
        .unwrap()
        .success();
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _guard = TestMount(point.clone());
    std::fs::write(point.join("kept"), "x").unwrap();
    // As someone could have left them while the directory was open to all:
    // a link where an execution's directory is, and one where its mount is.
    let mnt = tmp.path().join("data/mnt");
    std::fs::create_dir_all(mnt.join("exec-2")).unwrap();
    std::os::unix::fs::symlink(&victim, mnt.join("exec-1")).unwrap();
    std::os::unix::fs::symlink(&point, mnt.join("exec-2/source")).unwrap();
    // and a mount a killed agent left: unmounted, its point removed
    let left = mnt.join("exec-3/source");
    std::fs::create_dir_all(&left).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "ferry-test", left.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let _left_guard = TestMount(left.clone());
    let agent = Agent::launch(tmp.path());
    assert!(!is_mounted(&left), "{}", agent.log());
    assert!(!mnt.join("exec-3").exists());
    assert!(
        is_mounted(&point),
        "the agent unmounted {}",
        point.display()
    );
    assert!(point.join("kept").exists());
    // the links are gone, not what they pointed at
    assert!(std::fs::symlink_metadata(mnt.join("exec-1")).is_err());
    assert!(!mnt.join("exec-2").exists());
    assert!(victim.is_dir());
    drop(agent);
}

#[test]
fn a_misspelt_or_out_of_range_configuration_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let base = format!(
        "version: 2\ndaemon:\n  data_dir: {}\n  socket: {}\n",
        tmp.path().join("data").display(),
        tmp.path().join("api.sock").display()
    );
    for (extra, want) in [
        (
            "deamon:\n  activation_listen: 127.0.0.1:8080\n",
            "unknown field `deamon`",
        ),
        (
            "  activation_listen: 127.0.0.1:8080\n  activation_key_seconds: 18446744073709551615\n",
            "daemon.activation_key_seconds: 18446744073709551615 is out of range",
        ),
        (
            "  activation_listen: 127.0.0.1:8080\n  poll_seconds: 0\n",
            "daemon.poll_seconds",
        ),
    ] {
        let doc = format!("{base}{extra}");
        let (code, err) = daemon_with_config(tmp.path(), &doc)
            .map(|mut c| {
                c.kill().unwrap();
                c.wait().unwrap();
            })
            .expect_err(want);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
    // the same bound on the command line
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args(["--history-days", "0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--history-days") && err.contains("1..=36500"),
        "{err}"
    );
}
