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
    let src = agent.location(tmp.path());
    std::fs::create_dir(tmp.path().join("out")).unwrap();
    let dst = agent.location(&tmp.path().join("out"));

    let refused = |args: &[&str], words: &str| {
        let (code, _, err) = agent.cli(args);
        assert_eq!(code, 2, "ferry {args:?} was accepted");
        assert!(
            err.contains(words),
            "ferry {args:?}: {err:?} does not say {words:?}"
        );
    };
    let create = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["task", "create", "--name", "t"].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let args = create(&["--source", "loc-00000000000000000", "--destination", &dst]);
    refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "source location loc-00000000000000000 does not exist",
    );
    let args = create(&[
        "--source",
        &src,
        "--destination",
        &dst,
        "--schedule",
        "every hour",
    ]);
    refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "five (minute hour",
    );
    let args = create(&[
        "--source",
        &src,
        "--destination",
        &dst,
        "--schedule",
        "61 * * * *",
    ]);
    refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "not a valid cron expression",
    );
    let args = create(&["--source", &src, "--destination", &dst, "--mtime", "none"]);
    refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "--atime best-effort needs --mtime preserve",
    );
    let args = create(&["--source", &src, "--destination", &src]);
    refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
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
        2
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
        "cannot go with --transfer-mode all",
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
    agent.ok(&["task", "update", &task, "--schedule", ""]);
    assert_eq!(
        agent.ok(&["task", "describe", &task])["Schedule"],
        Value::Null
    );
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
        log.contains("task nightly: the source \\\"nowhere\\\" is not a location of the document"),
        "{log}"
    );
}

/// One raw HTTP request on a socket; (status, body).
fn http(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer.split_once("\r\n\r\n").unwrap().1.to_string())
}

#[test]
fn the_read_only_socket_answers_get_only_and_only_its_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("agent-ro.sock");
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
    let (_, body) = http(&ro, "GET", "/v1/locations", "");
    assert!(
        body.contains(&location),
        "nothing changed through it: {body}"
    );
}
