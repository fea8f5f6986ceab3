// SPDX-License-Identifier: MIT
//! A hub and an agent as processes on loopback, started from configuration
//! documents, with a fault-injecting proxy between them: activation through
//! the agent's activation port, a task whose destination is a location of
//! the hub, trees compared after killed connections and an outage; and what
//! the hub refuses.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use ferry_wire::proto::{self, Op};
use ferry_wire::{ca, client::HubClient, tls};
use hyper::Method;
use serde_json::{json, Value};

use daemons::{
    activate, agent_id, free_port, make_task, make_tree, run_task, runtime, start_task,
    wait_execution, wait_for, Agent, Binaries, Hub,
};
use ferry_netproxy::{Faults, Proxy};

#[test]
fn an_agent_pairs_with_the_hub_and_syncs_through_a_faulty_link() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    // Agent → proxy → hub; the operator talks to the hub directly.
    let proxy = Proxy::start(hub.addr, Faults::default());
    let agent = Agent::start(&tmp.path().join("agent"));
    let rt = runtime();

    // A wrong fingerprint: the agent refuses the hub.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (status, location, body) =
        agent.activation_get(&format!("hub={}&hubFingerprint={wrong}", proxy.addr));
    assert_eq!(status, 302, "{body}");
    assert!(body.contains("fingerprint"), "{body}");
    // The operator lands on the hub's page, which says why.
    let location = location.unwrap();
    let page_path = location.split_once(&proxy.addr.to_string()).unwrap().1;
    assert!(page_path.starts_with("/activate?errorType="), "{location}");
    let (status, page) = hub
        .https(&rt, None, None, Method::GET, page_path, None)
        .unwrap();
    assert_eq!(status, 200);
    let page = page.as_str().unwrap().to_string();
    assert!(
        page.contains("The agent could not register: ") && page.contains("fingerprint"),
        "{page}"
    );

    // DataSync's `no_redirect`: the key in the body, as scripts read it.
    let (status, _, body) = agent.activation_get(&format!(
        "hub={}&hubFingerprint={}&no_redirect",
        proxy.addr,
        hub.fingerprint()
    ));
    assert_eq!(status, 200, "{body}");
    let key = agent.register(proxy.addr, &hub.fingerprint());
    assert_eq!(body.trim(), key, "the same key pair, the same key");
    // The page the redirect lands on is served without credentials.
    let (status, page) = hub
        .https(
            &rt,
            None,
            None,
            Method::GET,
            &format!("/activate?activationKey={key}"),
            None,
        )
        .unwrap();
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains(&key));
    // Not activated yet: no marker, no certificate.
    assert!(!agent.marker().exists());

    let (code, out, err) = hub.cli(&["activate", &key, "--name", "site-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("activated as site-1"), "{out}");
    wait_for("the activation marker", Duration::from_secs(20), || {
        agent.marker().exists()
    });
    wait_for(
        "the activation port to close",
        Duration::from_secs(20),
        || TcpStream::connect(agent.activation).is_err(),
    );
    // Activated: the agent's API refuses a new registration.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["activation", "start", "--hub", &proxy.addr.to_string()])
        .env("FERRY_AGENT", agent.d.socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already activated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.ferry(&["activation", "show"])["Activated"], true);
    // A key works once.
    let (code, _, err) = hub.cli(&["activate", &key, "--name", "again"]);
    assert_ne!(code, 0);
    assert!(err.contains("already used"), "{err}");
    let (code, out, err) = hub.cli(&["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let agents: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(agents["Agents"][0]["Name"], "site-1");
    assert_eq!(agents["Agents"][0]["Status"], "ONLINE");

    // A destination on the hub, a source on the agent, a task on the hub.
    let (src, dst) = source_and_destination(tmp.path(), 40 << 20);
    let task_id = make_task(&hub, &agent_id(&hub, "site-1"), &src, &dst, true, 4);

    // A link that drops connections (FINs and resets) at random points.
    proxy.set(Faults {
        delay: Duration::from_millis(5),
        bytes_per_second: Some(40 << 20),
        kill_after: Some((64 << 10, 6 << 20)),
        kills: 8,
        reset: true,
    });
    let started = Instant::now();
    let exec_id = start_task(&hub, &task_id, json!({}));
    // An outage in the middle: every connection cut, new ones refused.
    wait_for("some data sent", Duration::from_secs(60), || {
        let (_, e) = hub.d.api("GET", &format!("/v1/executions/{exec_id}"), None);
        e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 20 << 20
            || e["Status"] == "SUCCESS"
    });
    proxy.outage(Duration::from_secs(5));
    let e = wait_execution(&hub.d, &exec_id, Duration::from_secs(240));
    let took = started.elapsed();
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    let diffs = common::compare_trees(&src, &dst);
    assert!(diffs.is_empty(), "{diffs:?}");
    assert!(common::temp_files(&dst).is_empty());
    let c = &e["Counters"];
    let killed = proxy
        .stats()
        .killed
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "through the faulty link in {took:?}: {killed} connections killed plus an outage; counters {c}"
    );
    assert!(killed >= 1, "the proxy killed nothing");
    assert!(c["RequestsRetried"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["BytesCompressed"].as_u64().unwrap() > 0, "{c}");
    assert!(c["FilesVerified"].as_u64().unwrap() > 200, "{c}");
    // What was sent again is at most what was in flight: a small share.
    let sent = c["BytesTransferred"].as_u64().unwrap();
    assert!(c["BytesResent"].as_u64().unwrap() < sent / 2, "{c}");

    // A second run over a clean link finds nothing to do.
    proxy.set(Faults::default());
    let id = start_task(&hub, &task_id, json!({}));
    let e = wait_execution(&hub.d, &id, Duration::from_secs(60));
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert_eq!(e["Counters"]["BytesTransferred"], 0, "{e}");
}

/// The hub killed in the middle of a transfer and started again on its
/// state: its execution is interrupted, the agent's ends without a panic
/// (chunks still in flight when the agent dropped the failed file used to
/// drop, as the last holders of the location, the runtime they ran on), and
/// the next execution completes the copy.
/// A hub, the link in front of it (no faults yet) and an agent activated
/// through the link, under `dir`.
fn linked(dir: &Path) -> (Hub, Proxy, Agent) {
    let hub = Hub::start(&dir.join("hub"), 1800);
    let proxy = Proxy::start(hub.addr, Faults::default());
    let agent = Agent::start(&dir.join("agent"));
    activate(&hub, &agent, proxy.addr);
    (hub, proxy, agent)
}

/// `dir/src`, a tree with two files of `big` bytes ([`make_tree`]), and an
/// empty `dir/dst`.
fn source_and_destination(dir: &Path, big: usize) -> (PathBuf, PathBuf) {
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    make_tree(&src, big);
    (src, dst)
}

/// The highest resident memory of a process so far, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib >> 10
}

/// Bytes a process has read so far (`rchar`: files and sockets alike).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io")
}

/// Verifying a tree unchanged since the last run reads neither side's
/// files again: both keep the digests they took, valid while a file's
/// inode, size, mtime and ctime hold. A destination file changed since,
/// its size and mtime put back, is read again and found different.
#[test]
fn verifying_an_unchanged_tree_reads_no_file_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, _proxy, agent) = linked(tmp.path());
    let (src, dst) = source_and_destination(tmp.path(), 16 << 20);
    let task = make_task(&hub, &agent_id(&hub, "site"), &src, &dst, false, 8);
    let (e, _) = run_task(&hub, &task);
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    let read = || (bytes_read(agent.d.child.id()), bytes_read(hub.d.child.id()));
    let before = read();
    let (e, _) = run_task(&hub, &task);
    let after = read();
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    assert_eq!(e["Counters"]["FilesTransferred"], 0, "{e}");
    assert!(
        e["Counters"]["FilesVerified"].as_u64().unwrap() > 200,
        "{e}"
    );
    let tree = tree_bytes(&src);
    let (agent_read, hub_read) = (after.0 - before.0, after.1 - before.1);
    eprintln!("the tree: {tree} bytes; read again: agent {agent_read}, hub {hub_read}");
    assert!(agent_read < tree / 8, "the agent read {agent_read} bytes");
    assert!(hub_read < tree / 8, "the hub read {hub_read} bytes");
    // Other bytes, the same size and mtime: only the ctime tells.
    let changed = dst.join("big0.bin");
    let mtime = std::fs::metadata(&changed).unwrap().modified().unwrap();
    let mut data = std::fs::read(&changed).unwrap();
    data[1000] ^= 1;
    std::fs::write(&changed, &data).unwrap();
    let f = std::fs::File::options().write(true).open(&changed).unwrap();
    f.set_modified(mtime).unwrap();
    let (e, _) = run_task(&hub, &task);
    assert_eq!(e["Status"], "ERROR", "{e}");
    assert_eq!(e["Counters"]["FilesFailedVerify"], 1, "{e}");
}

/// A slow way to the hub slows the agent instead of filling its memory:
/// with a source many times larger than what may be in flight, both
/// processes stay within a bound while the link is the limit.
#[test]
fn a_slow_hub_bounds_the_memory_of_both_sides() {
    // What may be in flight (24 MiB of operations, their batches' bodies
    // while sent) and the processes' own, with room; the source is 500 MiB.
    const LIMIT_MIB: u64 = 160;
    let tmp = tempfile::tempdir().unwrap();
    let (hub, proxy, agent) = linked(tmp.path());
    let (src, dst) = source_and_destination(tmp.path(), 160 << 20);
    for d in 0..40 {
        let dir = src.join(format!("small{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            common::write(&dir.join(format!("f{f}")), &common::bytes(f, 40 << 10));
        }
    }
    let task = make_task(&hub, &agent_id(&hub, "site"), &src, &dst, false, 64);
    proxy.set(Faults {
        delay: Duration::from_millis(10),
        bytes_per_second: Some(4 << 20),
        ..Faults::default()
    });
    let exec = start_task(&hub, &task, json!({}));
    let transferred = || {
        let (_, e) = hub.d.api("GET", &format!("/v1/executions/{exec}"), None);
        e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0)
    };
    wait_for("the transfer to start", Duration::from_secs(60), || {
        transferred() > 0
    });
    // Long enough for the agent to have read far more than the bound.
    std::thread::sleep(Duration::from_secs(12));
    let (agent_peak, hub_peak) = (
        peak_rss_mib(agent.d.child.id()),
        peak_rss_mib(hub.d.child.id()),
    );
    let sent = transferred();
    let (status, _) = hub.d.api(
        "POST",
        &format!("/v1/executions/{exec}/cancel"),
        Some(json!({})),
    );
    assert!(status < 300);
    eprintln!(
        "peak RSS: agent {agent_peak} MiB, hub {hub_peak} MiB; {} MiB sent",
        sent >> 20
    );
    assert!(
        sent < 200 << 20,
        "the link was not the limit: {sent} bytes sent"
    );
    assert!(
        agent_peak < LIMIT_MIB,
        "the agent peaked at {agent_peak} MiB"
    );
    assert!(hub_peak < LIMIT_MIB, "the hub peaked at {hub_peak} MiB");
    let e = wait_execution(&hub.d, &exec, Duration::from_secs(120));
    assert_eq!(e["Result"]["ErrorCode"], "Cancelled", "{e}");
}

/// Many files over a MiB at once: each writer's first MiB waits in the
/// link's budget while the file is created, and none of that may hold the
/// budget that the others need to go on.
#[test]
fn many_large_files_at_once_fill_the_budget_without_a_standstill() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, proxy, agent) = linked(tmp.path());
    let (src, dst) = source_and_destination(tmp.path(), 1 << 20);
    // Each file's creation a round trip away: many writers wait at once.
    proxy.set(Faults {
        delay: Duration::from_millis(20),
        ..Faults::default()
    });
    // Spread over directories: the engine writes 8 files of one at once.
    for i in 0..80 {
        let dir = src.join(format!("large{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        common::write(
            &dir.join(format!("f{i}")),
            &common::bytes(i, (2 << 20) + 4096),
        );
    }
    let task = make_task(&hub, &agent_id(&hub, "site"), &src, &dst, false, 64);
    let exec = start_task(&hub, &task, json!({}));
    let e = wait_execution(&hub.d, &exec, Duration::from_secs(180));
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    assert!(common::compare_trees(&src, &dst).is_empty());
}

/// The hub killed with SIGKILL in the middle of an execution and started
/// again: the agent goes on (its operations wait for the hub), the hub
/// takes the execution up again, and it ends SUCCESS with nothing partial
/// under a final name.
#[test]
fn an_execution_survives_its_hub_killed_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = tmp.path().join("hub");
    let port = free_port();
    let mut hub = Hub::start_on(&Binaries::cargo(), &hub_dir, 1800, None, port);
    let proxy = Proxy::start(hub.addr, Faults::default());
    let agent = Agent::start(&tmp.path().join("agent"));
    activate(&hub, &agent, proxy.addr);
    let (src, dst) = source_and_destination(tmp.path(), 40 << 20);
    let task = make_task(&hub, &agent_id(&hub, "site"), &src, &dst, true, 4);
    proxy.set(Faults {
        delay: Duration::from_millis(20),
        bytes_per_second: Some(24 << 20),
        kill_after: Some((64 << 10, 8 << 20)),
        kills: 1000,
        reset: true,
    });
    let exec = start_task(&hub, &task, json!({}));
    wait_for("some data sent", Duration::from_secs(60), || {
        let (_, e) = hub.d.api("GET", &format!("/v1/executions/{exec}"), None);
        e["Status"] == "TRANSFERRING"
            && e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 8 << 20
    });
    hub.d.stop(libc::SIGKILL);
    hub = Hub::start_on(&Binaries::cargo(), &hub_dir, 1800, None, port);
    let e = wait_execution(&hub.d, &exec, Duration::from_secs(240));
    assert_eq!(
        e["Status"],
        "SUCCESS",
        "{e}\n{}\n{}",
        hub.d.log(),
        agent.d.log()
    );
    assert!(hub.d.log().contains("taken up again"), "{}", hub.d.log());
    let (_, v) = agent.d.api("GET", "/v1/executions", None);
    assert_eq!(v["Executions"][0]["Status"], "SUCCESS", "{v}");
    assert!(common::compare_trees(&src, &dst).is_empty());
    assert!(common::temp_files(&dst).is_empty());
    assert!(!agent.d.log().contains("panicked"), "{}", agent.d.log());
    // And the next run finds nothing to do.
    proxy.set(Faults::default());
    let (e, _) = run_task(&hub, &task);
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    assert_eq!(e["Counters"]["FilesTransferred"], 0, "{e}");
}

#[test]
fn the_hub_refuses_strangers() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 2);
    let agent = Agent::start(&tmp.path().join("agent"));
    let rt = runtime();
    let token = hub.token();

    // Plain TCP: no HTTP answer at all.
    let mut s = TcpStream::connect(hub.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /v1/tasks HTTP/1.1\r\nHost: hub\r\n\r\n");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The API without credentials, or with a wrong token.
    for t in [None, Some("not-the-token")] {
        let (status, v) = hub
            .https(&rt, t, None, Method::GET, "/v1/tasks", None)
            .unwrap();
        assert_eq!(status, 401, "{v}");
        let (status, _) = hub
            .https(&rt, t, None, Method::GET, "/v1/agents", None)
            .unwrap();
        assert_eq!(status, 401);
    }
    let (status, _) = hub
        .https(&rt, Some(&token), None, Method::GET, "/v1/tasks", None)
        .unwrap();
    assert_eq!(status, 200);

    // Without an agent certificate: no tasks, no writing.
    let (status, _) = hub
        .https(
            &rt,
            Some(&token),
            None,
            Method::GET,
            "/agent/v1/tasks",
            None,
        )
        .unwrap();
    assert_eq!(status, 403);
    let (status, _) = hub
        .https(
            &rt,
            None,
            None,
            Method::POST,
            "/agent/v1/fs/loc-1/batch",
            None,
        )
        .unwrap();
    assert_eq!(status, 403);

    // A client certificate from another hub's CA: the handshake fails.
    let other = ca::Ca::load_or_create(&tmp.path().join("other-ca"), &[]).unwrap();
    let foreign = other.operator_identity("mallory").unwrap();
    let r = hub.https(&rt, None, Some(foreign), Method::GET, "/v1/agents", None);
    assert!(r.is_err(), "a foreign certificate was let in: {r:?}");
    let r = hub.https(
        &rt,
        None,
        Some(other.operator_identity("x").unwrap()),
        Method::GET,
        "/agent/v1/tasks",
        None,
    );
    assert!(r.is_err(), "{r:?}");

    // An unknown key, an expired key.
    let (code, _, err) = hub.cli(&["activate", "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "--name", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("no activation has the key"), "{err}");
    // Through the agent's API this time (what the console does).
    let v = agent.ferry(&[
        "activation",
        "start",
        "--hub",
        &hub.addr.to_string(),
        "--hub-fingerprint",
        &hub.fingerprint(),
    ]);
    let first = v["ActivationKey"].as_str().unwrap().to_string();
    // Asked again while the key waits: the hub answers the same key.
    let v = agent.ferry(&["activation", "start", "--hub", &hub.addr.to_string()]);
    let key = v["ActivationKey"].as_str().unwrap().to_string();
    assert_eq!(key, first);
    assert_eq!(
        agent.ferry(&["activation", "show"])["ActivationKey"],
        key.as_str()
    );
    std::thread::sleep(Duration::from_secs(3));
    let (code, _, err) = hub.cli(&["activate", &key, "--name", "late"]);
    assert_ne!(code, 0);
    assert!(err.contains("expired"), "{err}");
    // The agent stays unactivated, its port open.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!agent.marker().exists());
    assert!(TcpStream::connect(agent.activation).is_ok());
    let v = agent.ferry(&["activation", "show"]);
    assert_eq!(v["Activated"], false, "{v}");
    // The hub said the key expired: the agent dropped it.
    assert_eq!(v["ActivationKey"], Value::Null, "{v}");
}

/// Not a test: the throughput share of a bandwidth cap through the proxy
/// with 50 ms of added round trip, and what killed connections cost.
/// `cargo test -p ferry --test hub measure -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_throughput_at_50ms() {
    let cap: u64 = 12 << 20;
    let link = Faults {
        // 25 ms each way: 50 ms added to every round trip.
        delay: Duration::from_millis(25),
        bytes_per_second: Some(cap),
        ..Faults::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (hub, proxy, _agent) = linked(tmp.path());

    let big = tmp.path().join("big");
    for i in 0..2 {
        std::fs::create_dir_all(&big).unwrap();
        common::write(&big.join(format!("f{i}")), &common::bytes(i, 48 << 20));
    }
    let small = tmp.path().join("small");
    for d in 0..20 {
        let dir = small.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            common::write(
                &dir.join(format!("f{f}")),
                &common::bytes(d * 1000 + f, 8 << 10),
            );
        }
    }
    let case = |name: &str, src: &Path, connections: u32, faults: Faults| {
        let dst = tmp.path().join(format!("dst-{}", name.replace(' ', "-")));
        std::fs::create_dir_all(&dst).unwrap();
        let task = make_task(&hub, &agent_id(&hub, "site"), src, &dst, false, connections);
        proxy.set(faults);
        let killed_before = proxy
            .stats()
            .killed
            .load(std::sync::atomic::Ordering::Relaxed);
        let (e, took) = run_task(&hub, &task);
        proxy.set(Faults::default());
        assert_eq!(e["Status"], "SUCCESS", "{e}");
        assert!(common::compare_trees(src, &dst).is_empty());
        let c = &e["Counters"];
        let bytes = c["BytesTransferred"].as_u64().unwrap();
        let files = c["FilesTransferred"].as_u64().unwrap();
        let killed = proxy
            .stats()
            .killed
            .load(std::sync::atomic::Ordering::Relaxed)
            - killed_before;
        let r = &e["Result"];
        let phases = format!(
            "prepare {} ms, transfer {} ms, verify {} ms",
            r["PrepareDuration"], r["TransferDuration"], r["VerifyDuration"]
        );
        let secs = took.as_secs_f64();
        eprintln!(
            "{name}: {files} files, {} MiB in {secs:.1} s ({phases}): {:.1} MiB/s = {:.0}% of the cap, {:.0} files/s; killed {killed}, resent {} KiB, retried {}",
            bytes >> 20,
            bytes as f64 / secs / 1048576.0,
            100.0 * bytes as f64 / secs / cap as f64,
            files as f64 / secs,
            c["BytesResent"].as_u64().unwrap() >> 10,
            c["RequestsRetried"],
        );
        secs
    };
    let clean = case("large files", &big, 8, link.clone());
    let faulty = case(
        "large files, 4 connections killed",
        &big,
        8,
        Faults {
            kill_after: Some((2 << 20, 12 << 20)),
            kills: 4,
            reset: true,
            ..link.clone()
        },
    );
    eprintln!(
        "each killed connection cost {:.2} s",
        (faulty - clean) / 4.0
    );
    case("small files, 8 connections", &small, 8, link.clone());
    case("small files, 32 connections", &small, 32, link.clone());
    case("small files, 64 connections", &small, 64, link.clone());

    // The same data with `rsync -a` over ssh (Debian's dropbear as the
    // server, in a mount namespace with a user of its own) on the same link.
    if !common::is_root() {
        eprintln!("rsync over ssh: skipped (needs root for the ssh server's namespace)");
        return;
    }
    let port = free_port();
    let _server = SshServer::start(&tmp.path().join("ssh"), port);
    let ssh_link = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap(), link.clone());
    for (name, src) in [("large files", &big), ("small files", &small)] {
        let dst = tmp.path().join(format!("rsync-{}", name.replace(' ', "-")));
        let started = Instant::now();
        let out = Command::new("rsync")
            .arg("-a")
            .arg("-e")
            .arg(format!(
                "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
                ssh_link.addr.port(),
                tmp.path().join("ssh/client").display()
            ))
            .arg(format!("{}/", src.display()))
            .arg(format!("bench@127.0.0.1:{}/", dst.display()))
            .output()
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "rsync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(common::compare_trees(src, &dst).is_empty());
        let bytes = ssh_link
            .stats()
            .bytes_up
            .load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "rsync -a over ssh, {name}: {secs:.1} s, {:.1} MiB/s of data = {:.0}% of the cap (on the wire so far: {} MiB)",
            tree_bytes(src) as f64 / secs / 1048576.0,
            100.0 * tree_bytes(src) as f64 / secs / cap as f64,
            bytes >> 20
        );
    }
}

fn tree_bytes(root: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            tree_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// Debian's dropbear on the loopback, with a user `bench` (uid 0) whose
/// home and key live in `dir`: /etc/passwd is replaced in a mount
/// namespace of its own, nothing of the host changes. Its receive window
/// is OpenSSH's (2 MiB; dropbear's default of 24 KiB would cap a 50 ms
/// link at 0.5 MiB/s).
struct SshServer(Child);

impl SshServer {
    fn start(dir: &Path, port: u16) -> SshServer {
        let home = dir.join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join("client"))
            .status()
            .expect("ssh-keygen (openssh-client)");
        assert!(st.success());
        std::fs::copy(dir.join("client.pub"), home.join(".ssh/authorized_keys")).unwrap();
        let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        passwd.push_str(&format!("bench:x:0:0::{}:/bin/sh\n", home.display()));
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        std::fs::write(dir.join("shells"), "/bin/sh\n").unwrap();
        let st = Command::new("dropbearkey")
            .args(["-t", "ed25519", "-f"])
            .arg(dir.join("host-key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("dropbearkey (dropbear-bin)");
        assert!(st.success());
        let script = format!(
            "mount --bind {d}/passwd /etc/passwd && mount --bind {d}/shells /etc/shells && exec dropbear -F -E -s -W 2097152 -p 127.0.0.1:{port} -r {d}/host-key -P {d}/pid",
            d = dir.display()
        );
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dropbear.log")).unwrap())
            .spawn()
            .expect("unshare (util-linux)");
        wait_for("dropbear", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        SshServer(child)
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An execution survives the hub being unreachable for a minute (ignored:
/// it takes that minute; `cargo test -p ferry --test hub outage -- --ignored`).
#[test]
#[ignore]
fn an_execution_survives_a_60_second_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, proxy, agent) = linked(tmp.path());
    let (src, dst) = source_and_destination(tmp.path(), 40 << 20);
    let task = make_task(&hub, &agent_id(&hub, "site"), &src, &dst, false, 8);
    proxy.set(Faults {
        bytes_per_second: Some(8 << 20),
        ..Faults::default()
    });
    let exec_id = start_task(&hub, &task, json!({}));
    wait_for("some data sent", Duration::from_secs(60), || {
        let (_, e) = hub.d.api("GET", &format!("/v1/executions/{exec_id}"), None);
        e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 10 << 20
    });
    proxy.outage(Duration::from_secs(60));
    let e = wait_execution(&hub.d, &exec_id, Duration::from_secs(300));
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    assert!(common::compare_trees(&src, &dst).is_empty());
    eprintln!("after a 60 s outage: {}", e["Counters"]);
}

#[test]
fn the_hub_runs_its_task_on_the_agent_that_owns_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let proxy = Proxy::start(
        hub.addr,
        Faults {
            delay: Duration::from_millis(2),
            ..Faults::default()
        },
    );
    let agent = Agent::start(&tmp.path().join("agent"));
    let rt = runtime();
    activate(&hub, &agent, proxy.addr);
    let (_, out, _) = hub.cli(&["list", "--json"]);
    let agents: Value = serde_json::from_str(&out).unwrap();
    let agent_id = agents["Agents"][0]["AgentId"].as_str().unwrap().to_string();
    let token = hub.token();
    let call = |method: Method, path: &str, body: Option<Value>| {
        hub.https(&rt, Some(&token), None, method, path, body)
            .unwrap()
    };

    let (src, dst) = source_and_destination(tmp.path(), 36 << 20);
    // Everything is declared on the hub: the agent's source, the hub's destination.
    let (status, s) = call(
        Method::POST,
        "/v1/locations",
        Some(
            json!({"Type": "AGENT", "AgentId": agent_id, "Location": {"Type": "LOCAL", "Path": src}}),
        ),
    );
    assert_eq!(status, 201, "{s}");
    let (_, d) = call(
        Method::POST,
        "/v1/locations",
        Some(json!({"Type": "LOCAL", "Path": dst})),
    );
    // An agent's location cannot be a destination.
    let (status, _) = call(
        Method::POST,
        "/v1/tasks",
        Some(
            json!({"Name": "backwards", "SourceLocationId": d["LocationId"], "DestinationLocationId": s["LocationId"]}),
        ),
    );
    assert_eq!(status, 400);
    let (status, task) = call(
        Method::POST,
        "/v1/tasks",
        Some(
            json!({"Name": "from-site", "SourceLocationId": s["LocationId"], "DestinationLocationId": d["LocationId"]}),
        ),
    );
    assert_eq!(status, 201, "{task}");
    let task_id = task["TaskId"].as_str().unwrap().to_string();
    let run = |options: Value| {
        let (status, e) = call(
            Method::POST,
            &format!("/v1/tasks/{task_id}/start"),
            Some(options),
        );
        assert!(status < 300, "{e}");
        e["TaskExecutionId"].as_str().unwrap().to_string()
    };
    let wait = |id: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, e) = call(Method::GET, &format!("/v1/executions/{id}"), None);
            if e["Status"] == "SUCCESS" || e["Status"] == "ERROR" {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "{e}\n{}\n{}",
                hub.d.log(),
                agent.d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // A dry run started on the hub: the agent plans through the link, and
    // nothing is written (the probes are removed).
    let plan = wait(&run(json!({"OverrideOptions": {"DryRun": true}})));
    assert_eq!(plan["Status"], "SUCCESS", "{plan}\n{}", agent.d.log());
    assert!(
        plan["Counters"]["EstimatedFilesToTransfer"]
            .as_u64()
            .unwrap()
            > 200,
        "{plan}"
    );
    assert_eq!(plan["Counters"]["FilesTransferred"], 0, "{plan}");
    assert!(plan["Result"]["EstimatedDuration"].is_u64(), "{plan}");
    assert!(
        std::fs::read_dir(&dst).map_or(true, |mut d| d.next().is_none()),
        "a plan writes nothing"
    );

    let e = wait(&run(json!({})));
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    assert!(common::compare_trees(&src, &dst).is_empty());
    // Beside its time, what the plan estimated.
    assert!(e["Result"]["EstimatedDuration"].is_u64(), "{e}");
    assert!(
        e["Counters"]["FilesVerified"].as_u64().unwrap() > 200,
        "{e}"
    );
    // The agent ran it as its own task hub-TASK.
    let (_, tasks) = agent.d.api("GET", "/v1/tasks", None);
    assert_eq!(tasks["Tasks"][0]["Name"], format!("hub-{task_id}"));

    // A cancel on the hub reaches the agent.
    std::fs::write(src.join("new.bin"), common::bytes(9, 30 << 20)).unwrap();
    let id = run(json!({"OverrideOptions": {"BytesPerSecond": 1048576}}));
    wait_for("the agent to start", Duration::from_secs(30), || {
        let (_, e) = call(Method::GET, &format!("/v1/executions/{id}"), None);
        e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 0
    });
    // A new bandwidth limit on the hub reaches the agent's execution
    // (with the answer to its next report, one a second).
    let (status, e) = call(
        Method::PATCH,
        &format!("/v1/executions/{id}"),
        Some(json!({"Options": {"BytesPerSecond": 2097152}})),
    );
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["Options"]["BytesPerSecond"], 2097152);
    wait_for(
        "the new limit on the agent",
        Duration::from_secs(10),
        || {
            let (_, execs) = agent.d.api("GET", "/v1/executions", None);
            execs["Executions"][0]["Options"]["BytesPerSecond"] == 2097152
        },
    );
    let (status, _) = call(
        Method::POST,
        &format!("/v1/executions/{id}/cancel"),
        Some(json!({})),
    );
    assert!(status < 300);
    let e = wait(&id);
    assert_eq!(e["Status"], "ERROR", "{e}");
    assert_eq!(e["Result"]["ErrorCode"], "Cancelled", "{e}");
    let (_, execs) = agent.d.api("GET", "/v1/executions", None);
    assert_eq!(execs["Executions"][0]["Status"], "ERROR", "{execs}");

    // ONLY_FILES_TRANSFERRED checks what was written, deep down too.
    let deep = src.join("deep/er/still");
    std::fs::create_dir_all(&deep).unwrap();
    for i in 0..40 {
        std::fs::write(deep.join(format!("f{i}")), common::bytes(i, 3000)).unwrap();
    }
    let e = wait(&run(
        json!({"OverrideOptions": {"VerifyMode": "ONLY_FILES_TRANSFERRED"}}),
    ));
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    // The 40 files, their 3 directories, new.bin and the root.
    assert!(
        e["Counters"]["FilesVerified"].as_u64().unwrap() >= 44,
        "{e}"
    );
    assert!(common::compare_trees(&src, &dst).is_empty());
}

/// An activated agent sends file-system operations of its own making to a
/// location of the hub: none reaches outside the location, makes special
/// files, or takes unbounded memory or a blocked thread.
#[test]
fn the_hub_does_an_agents_operations_only_on_what_the_location_holds() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use ferry_engine::location::Kind;
    use ferry_wire::proto::{Response, WireUpdate, MAX_CHUNK};

    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let rt = runtime();
    // An activated agent's certificate, operations of its own making.
    let agent = FakeAgent::activate(&hub, &rt, "a");

    let dst = tmp.path().join("dst");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, b"not the location's").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink(&secret, dst.join("evil")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dst.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let before = std::fs::metadata(&secret).unwrap();
    let loc = hub_location(&hub, json!({"Type": "LOCAL", "Path": dst}));
    // The location is the agent's while an execution writing there runs.
    let task = fake_task(&hub, &agent, &loc, "t", json!({}));
    let exec = start_task(&hub, &task, json!({}));
    assert_eq!(pick_up(&hub, &rt, &agent), exec);
    let send = |op: Op| -> Response {
        agent
            .fs(&hub, &rt, &loc, op)
            .unwrap_or_else(|status| panic!("refused with {status}"))
    };
    let refused = |r: Response| match r {
        Ok(r) => panic!("done: {r:?}"),
        Err(e) => e.message,
    };

    // An attribute update of a symlink changes the symlink, not its target.
    let r = send(Op::Update {
        dir: Vec::new(),
        name: b"evil".to_vec(),
        update: WireUpdate {
            mode: Some(0o777),
            mtime: Some((1_000_000, 0)),
            atime: Some((1_000_000, 0)),
            ..WireUpdate::default()
        },
    });
    r.unwrap();
    let after = std::fs::metadata(&secret).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(after.ctime(), before.ctime());
    assert_eq!(
        std::fs::symlink_metadata(dst.join("evil")).unwrap().mtime(),
        1_000_000
    );

    // Set-id modes and device nodes: not without PreserveDevices and a
    // location that allows them.
    let message = refused(send(Op::Update {
        dir: Vec::new(),
        name: b"evil".to_vec(),
        update: WireUpdate {
            mode: Some(0o4777),
            ..WireUpdate::default()
        },
    }));
    assert!(
        message.contains("does not allow special files"),
        "{message}"
    );
    let message = refused(send(Op::MakeNode {
        dir: Vec::new(),
        name: b"disk".to_vec(),
        kind: Kind::BlockDevice,
        mode: 0o666,
        rdev: rustix::fs::makedev(7, 0),
    }));
    assert!(
        message.contains("does not allow special files"),
        "{message}"
    );
    assert!(!dst.join("disk").exists());
    assert_eq!(std::fs::metadata(&secret).unwrap().mode(), before.mode());

    // A FIFO is not opened for data (an open would block a hub thread).
    let message = refused(send(Op::Digest {
        dir: Vec::new(),
        name: b"fifo".to_vec(),
    }));
    assert!(
        message.contains("is a FIFO, not a regular file"),
        "{message}"
    );

    // A zstd bomb: 1 GiB of zeros in a few KB, declared as one chunk.
    use std::io::Write as _;
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    send(Op::Create {
        dir: Vec::new(),
        name: b"f".to_vec(),
        mode: 0o644,
    })
    .unwrap();
    let message = refused(send(Op::Write {
        dir: Vec::new(),
        name: b"f".to_vec(),
        offset: 0,
        zstd: true,
        raw_len: MAX_CHUNK as u64,
        data: bomb,
    }));
    assert!(message.contains("does not fit its declared"), "{message}");
    assert_eq!(std::fs::metadata(dst.join("f")).unwrap().len(), 0);

    // And a name that climbs out.
    let message = refused(send(Op::Stat {
        dir: b"..".to_vec(),
        name: b"outside".to_vec(),
    }));
    assert!(message.contains("not a relative path"), "{message}");
    agent.report(&hub, &rt, &exec, "SUCCESS");
}

/// An agent played by the test itself: its key, and the certificate the
/// hub signed once an operator confirmed it.
struct FakeAgent {
    id: String,
    cert: String,
    key: String,
}

impl FakeAgent {
    fn activate(hub: &Hub, rt: &tokio::runtime::Runtime, name: &str) -> FakeAgent {
        let (key, csr) = ca::new_request(name).unwrap();
        let (status, v) = hub
            .https(
                rt,
                None,
                None,
                Method::POST,
                "/activation/v1/register",
                Some(json!({"Csr": csr, "Hostname": name})),
            )
            .unwrap();
        assert_eq!(status, 200, "{v}");
        let activation = v["ActivationKey"].as_str().unwrap().to_string();
        let (code, out, err) = hub.cli(&["activate", &activation, "--name", name]);
        assert_eq!(code, 0, "{out}{err}");
        let (status, v) = hub
            .https(
                rt,
                None,
                None,
                Method::GET,
                &format!("/activation/v1/certificate?activationKey={activation}"),
                None,
            )
            .unwrap();
        assert_eq!(status, 200, "{v}");
        FakeAgent {
            id: v["AgentId"].as_str().unwrap().to_string(),
            cert: v["Certificate"].as_str().unwrap().to_string(),
            key,
        }
    }

    fn client(&self, hub: &Hub, connections: usize) -> HubClient {
        let cert = ca::cert_from_pem(&self.cert, "cert").unwrap();
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(self.key.as_bytes()).unwrap();
        let config = tls::client_config(&hub.ca_der(), Some((vec![cert], key))).unwrap();
        HubClient::new(format!("https://{}", hub.addr), config, connections, None)
    }

    /// Asks for work, as an agent does: the hub's executions for it.
    fn poll(&self, hub: &Hub, rt: &tokio::runtime::Runtime) -> Vec<Value> {
        rt.block_on(async {
            let c = self.client(hub, 1);
            let v = c.json(Method::GET, "/agent/v1/tasks", None).await.unwrap();
            v["Executions"].as_array().cloned().unwrap_or_default()
        })
    }

    fn report(&self, hub: &Hub, rt: &tokio::runtime::Runtime, exec: &str, status: &str) {
        rt.block_on(async {
            let c = self.client(hub, 1);
            let counters: Value = serde_json::to_value(
                ferry_engine::counters::CounterSnapshot::default(),
            )
            .unwrap();
            let body = json!({"Status": status, "Result": {
                "PrepareStatus": status, "PrepareDuration": 0, "TransferStatus": status,
                "TransferDuration": 0, "VerifyStatus": status, "VerifyDuration": 0, "TotalDuration": 0},
                "Counters": counters});
            c.json(
                Method::POST,
                &format!("/agent/v1/executions/{exec}/report"),
                Some(&body),
            )
            .await
            .unwrap();
        });
    }

    /// One fs operation on a location of the hub, as a batch of one: the
    /// hub's answer (an operation that is not valid refuses its batch
    /// whole, 400 with why: that reason, as an answer), or the HTTP status
    /// it refused with.
    fn fs(
        &self,
        hub: &Hub,
        rt: &tokio::runtime::Runtime,
        location: &str,
        op: Op,
    ) -> Result<proto::Response, u16> {
        rt.block_on(async {
            let c = self.client(hub, 1);
            let batch = proto::Batch {
                batch_id: rand::random(),
                ops: vec![op],
            };
            match c.fs_batch(location, &batch).await {
                Ok(mut answers) => Ok(answers.pop().expect("one answer")),
                Err(ferry_wire::client::HubError::Refused {
                    status: 400,
                    message,
                    ..
                }) => Ok(Err(proto::WireError {
                    errno: None,
                    message,
                })),
                Err(ferry_wire::client::HubError::Refused { status, .. }) => Err(status),
                Err(e) => panic!("{location}: {e}"),
            }
        })
    }
}

fn stat_root() -> Op {
    Op::StatDir { dir: Vec::new() }
}

fn make_fifo(name: &str) -> Op {
    Op::MakeNode {
        dir: Vec::new(),
        name: name.as_bytes().to_vec(),
        kind: ferry_engine::location::Kind::Fifo,
        mode: 0o644,
        rdev: 0,
    }
}

/// A location of the hub (through its Unix-socket API); its id.
fn hub_location(hub: &Hub, spec: Value) -> String {
    let (status, v) = hub.d.api("POST", "/v1/locations", Some(spec));
    assert_eq!(status, 201, "{v}");
    v["LocationId"].as_str().unwrap().to_string()
}

/// A task of the hub from the fake agent's path `/src` to `dst`.
fn fake_task(hub: &Hub, agent: &FakeAgent, dst: &str, name: &str, options: Value) -> String {
    let src = hub_location(
        hub,
        json!({"Type": "AGENT", "AgentId": agent.id, "Location": {"Type": "LOCAL", "Path": "/src"}}),
    );
    let (status, t) = hub.d.api(
        "POST",
        "/v1/tasks",
        Some(json!({"Name": name, "SourceLocationId": src, "DestinationLocationId": dst, "Options": options})),
    );
    assert_eq!(status, 201, "{t}");
    t["TaskId"].as_str().unwrap().to_string()
}

/// Waits for the hub to hand `agent` an execution; picks it up.
fn pick_up(hub: &Hub, rt: &tokio::runtime::Runtime, agent: &FakeAgent) -> String {
    let mut id = String::new();
    wait_for(
        "an execution for the agent",
        Duration::from_secs(30),
        || match agent.poll(hub, rt).first() {
            Some(j) => {
                id = j["ExecutionId"].as_str().unwrap().to_string();
                true
            }
            None => false,
        },
    );
    id
}

#[test]
fn an_agent_reaches_only_the_location_of_its_running_execution() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let rt = runtime();
    let a = FakeAgent::activate(&hub, &rt, "a");
    let b = FakeAgent::activate(&hub, &rt, "b");
    let dir = |n: &str| {
        let p = tmp.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let l1 = hub_location(&hub, json!({"Type": "LOCAL", "Path": dir("l1")}));
    let l2 = hub_location(&hub, json!({"Type": "LOCAL", "Path": dir("l2")}));
    // An NFS location of the hub: nobody may make the hub mount it.
    let nfs = hub_location(
        &hub,
        json!({"Type": "NFS", "Server": "127.0.0.1", "Export": "/nothing"}),
    );
    let refused = |agent: &FakeAgent, loc: &str| {
        assert_eq!(
            agent.fs(&hub, &rt, loc, stat_root()).map(|_| ()),
            Err(403),
            "{} reached {loc}",
            agent.id
        );
    };

    // No execution: nothing anywhere.
    for loc in [&l1, &l2, &nfs] {
        refused(&a, loc);
    }
    let special = hub_location(
        &hub,
        json!({"Type": "LOCAL", "Path": dir("special"), "AllowSpecialFiles": true}),
    );
    let (_, v) = hub.d.api("GET", &format!("/v1/locations/{special}"), None);
    assert_eq!(v["AllowSpecialFiles"], true, "{v}");
    refused(&a, &special);
    // An execution writing to l1, posted but not picked up yet: still nothing.
    let t1 = fake_task(&hub, &a, &l1, "t1", json!({"PreserveDevices": "PRESERVE"}));
    let e1 = start_task(&hub, &t1, json!({}));
    wait_for(
        "the execution to be handed over",
        Duration::from_secs(30),
        || {
            let (_, e) = hub.d.api("GET", &format!("/v1/executions/{e1}"), None);
            e["Status"] == "LAUNCHING"
        },
    );
    refused(&a, &l1);
    assert_eq!(pick_up(&hub, &rt, &a), e1);
    // Picked up: l1 only, for a only.
    assert!(matches!(a.fs(&hub, &rt, &l1, stat_root()), Ok(Ok(_))));
    for loc in [&l2, &special, &nfs] {
        refused(&a, loc);
    }
    refused(&b, &l1);
    assert!(b.poll(&hub, &rt).is_empty());
    // PreserveDevices asked for, but l1 does not allow special files.
    let r = a.fs(&hub, &rt, &l1, make_fifo("fifo")).unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(!tmp.path().join("l1/fifo").exists());
    // Ended: nothing again.
    a.report(&hub, &rt, &e1, "SUCCESS");
    refused(&a, &l1);
    let e = wait_execution(&hub.d, &e1, Duration::from_secs(30));
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    refused(&a, &l1);
    assert!(
        !hub.d.log().contains("mounted"),
        "the hub mounted something: {}",
        hub.d.log()
    );

    // A location that allows special files, a task that does not ask: no.
    let t2 = fake_task(&hub, &a, &special, "t2", json!({}));
    let e2 = start_task(&hub, &t2, json!({}));
    assert_eq!(pick_up(&hub, &rt, &a), e2);
    let r = a.fs(&hub, &rt, &special, make_fifo("fifo")).unwrap();
    assert!(r.is_err(), "{r:?}");
    a.report(&hub, &rt, &e2, "SUCCESS");
    // Both: the FIFO is made.
    let t3 = fake_task(
        &hub,
        &a,
        &special,
        "t3",
        json!({"PreserveDevices": "PRESERVE"}),
    );
    let e3 = start_task(&hub, &t3, json!({}));
    assert_eq!(pick_up(&hub, &rt, &a), e3);
    let r = a.fs(&hub, &rt, &special, make_fifo("fifo")).unwrap();
    assert!(r.is_ok(), "{r:?}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(tmp.path().join("special/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    a.report(&hub, &rt, &e3, "SUCCESS");
}

/// A batch is checked whole before any of it is done (a malformed or
/// truncated one is refused with the reason and writes nothing), done in
/// order, and done once: sent again, it gets its first answers.
#[test]
fn batches_are_checked_whole_done_in_order_and_once() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let rt = runtime();
    let agent = FakeAgent::activate(&hub, &rt, "a");
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let loc = hub_location(&hub, json!({"Type": "LOCAL", "Path": dst}));
    let task = fake_task(&hub, &agent, &loc, "t", json!({}));
    let exec = start_task(&hub, &task, json!({}));
    assert_eq!(pick_up(&hub, &rt, &agent), exec);
    let c = {
        let _inside = rt.enter();
        agent.client(&hub, 2)
    };
    let put = |dir: &str, name: &str, data: &[u8]| Op::Put {
        dir: dir.as_bytes().to_vec(),
        name: name.as_bytes().to_vec(),
        mode: 0o644,
        zstd: false,
        raw_len: data.len() as u64,
        data: data.to_vec(),
        len: None,
        update: Default::default(),
    };
    let batch = |ops: Vec<Op>| proto::Batch {
        batch_id: rand::random(),
        ops,
    };

    // One bad name in the second operation: all refused, nothing written.
    let bad = batch(vec![put("", "first", b"1"), put("", "a/b", b"2")]);
    match rt.block_on(c.fs_batch(&loc, &bad)) {
        Err(ferry_wire::client::HubError::Refused {
            status: 400,
            message,
            ..
        }) => assert!(
            message.contains("operation 1 of the batch") && message.contains("a/b"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    // Cut short: refused, nothing written.
    let good = batch(vec![put("", "first", b"1")]);
    let body = postcard::to_stdvec(&good).unwrap();
    let path = format!("/agent/v1/fs/{loc}/batch");
    let (status, answer) = rt
        .block_on(c.send(
            Method::POST,
            &path,
            "application/x-postcard",
            body[..body.len() - 1].to_vec(),
        ))
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);

    // In order: a directory, a file in it, renamed, then read back.
    let ops = batch(vec![
        Op::MakeDir {
            dir: vec![],
            name: b"d".to_vec(),
            mode: 0o755,
        },
        put("d", "tmp", b"data"),
        Op::Rename {
            dir: b"d".to_vec(),
            from: b"tmp".to_vec(),
            to: b"f".to_vec(),
        },
        Op::Stat {
            dir: b"d".to_vec(),
            name: b"f".to_vec(),
        },
    ]);
    let first = rt.block_on(c.fs_batch(&loc, &ops)).unwrap();
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    assert!(matches!(&first[3], Ok(proto::Reply::Meta(m)) if m.size == 4));
    // Again, as after a lost answer: the same answers (a second rename
    // would have failed), nothing done twice.
    let again = rt.block_on(c.fs_batch(&loc, &ops)).unwrap();
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    assert_eq!(std::fs::read(dst.join("d/f")).unwrap(), b"data");
    assert!(!dst.join("d/tmp").exists());
    agent.report(&hub, &rt, &exec, "SUCCESS");
}

/// An fs request body larger than any operation's, and JSON bodies larger
/// than the routes take, are refused unread.
#[test]
fn request_bodies_have_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let rt = runtime();
    let token = hub.token();
    // Refused unread: the 413, or (a race) the connection closed after it
    // while the rest of the body was still on its way.
    let refused_unread = |answer: Result<(u16, Value), String>| match answer {
        Ok((status, body)) => assert_eq!(status, 413, "{body}"),
        Err(e) => assert!(
            e.contains("Broken pipe") || e.contains("reset by peer"),
            "{e}"
        ),
    };
    // The activation flow takes a few KiB.
    let big = "x".repeat(64 << 10);
    refused_unread(hub.https(
        &rt,
        None,
        None,
        Method::POST,
        "/activation/v1/register",
        Some(json!({"Csr": big, "Hostname": "h"})),
    ));
    // An operator's JSON: at most 1 MiB.
    refused_unread(hub.https(
        &rt,
        Some(&token),
        None,
        Method::POST,
        "/v1/locations",
        Some(json!({"Type": "LOCAL", "Path": "x".repeat(2 << 20)})),
    ));
    // An agent's fs request: at most 2 MiB (a 1 MiB chunk and its names).
    let a = FakeAgent::activate(&hub, &rt, "a");
    std::fs::create_dir_all(tmp.path().join("dst")).unwrap();
    let dst = hub_location(
        &hub,
        json!({"Type": "LOCAL", "Path": tmp.path().join("dst")}),
    );
    let t = fake_task(&hub, &a, &dst, "t", json!({}));
    let e = start_task(&hub, &t, json!({}));
    pick_up(&hub, &rt, &a);
    let r = a.fs(
        &hub,
        &rt,
        &dst,
        Op::Put {
            dir: Vec::new(),
            name: b"big".to_vec(),
            mode: 0o644,
            zstd: false,
            raw_len: 3 << 20,
            data: vec![7; 3 << 20],
            len: None,
            update: Default::default(),
        },
    );
    assert_eq!(r.map(|_| ()), Err(413));
    assert!(!tmp.path().join("dst/big").exists());
    // A chunk of the usual size goes through.
    let r = a.fs(
        &hub,
        &rt,
        &dst,
        Op::Put {
            dir: Vec::new(),
            name: b"chunk".to_vec(),
            mode: 0o644,
            zstd: false,
            raw_len: 1 << 20,
            data: vec![7; 1 << 20],
            len: None,
            update: Default::default(),
        },
    );
    assert!(matches!(r, Ok(Ok(_))), "{r:?}");
    a.report(&hub, &rt, &e, "SUCCESS");
}

#[test]
fn registrations_are_capped_and_not_written_to_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let rt = runtime();
    let register = |csr: &str| {
        hub.https(
            &rt,
            None,
            None,
            Method::POST,
            "/activation/v1/register",
            Some(json!({"Csr": csr, "Hostname": "h"})),
        )
        .unwrap()
    };
    // A certificate request of more than a few KiB.
    let (_, csr) = ca::new_request("h").unwrap();
    let padded = format!("{csr}{}", "\n".repeat(12 << 10));
    let (status, v) = register(&padded);
    assert_eq!(status, 413, "{v}");
    // A few waiting keys from one address (agents: a key pair each),
    // then no more.
    for _ in 0..4 {
        let (status, v) = register(&ca::new_request("h").unwrap().1);
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = register(&ca::new_request("h").unwrap().1);
    assert_eq!(status, 429, "{v}");
    assert!(
        v["Message"].as_str().unwrap().contains("this address"),
        "{v}"
    );
    // Nothing of it was written.
    let state = tmp.path().join("hub/data/hub/hub.json");
    let saved = std::fs::read_to_string(&state).unwrap_or_default();
    assert!(!saved.contains("CERTIFICATE REQUEST"), "{saved}");
}

/// Many connections that never finish a TLS handshake, and slowloris
/// clients (a handshake, then headers a byte at a time), from one address,
/// more than the hub's open-file limit allows: an operator from another
/// address is still answered.
#[test]
fn idle_and_slow_connections_do_not_lock_others_out() {
    let tmp = tempfile::tempdir().unwrap();
    // As on a host with a small open-file limit.
    let hub = Hub::start_limited(&tmp.path().join("hub"), 1800, Some(256));
    let agent = Agent::start_with(&tmp.path().join("agent"), "", Some(256));
    let rt = runtime();
    let token = hub.token();
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    // An attacker does not wait for a full backlog either.
    let connect = |to: SocketAddr| {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(attacker, 0)).unwrap();
        async move {
            match tokio::time::timeout(Duration::from_secs(1), s.connect(to)).await {
                Ok(r) => r,
                Err(e) => Err(e.into()),
            }
        }
    };
    let tls_config = Arc::new(tls::client_config(&hub.ca_der(), None).unwrap());
    let holders = rt.block_on(async {
        let mut holders = Vec::new();
        // Slowloris after a handshake, more than the open-file limit.
        for _ in 0..300 {
            let config = tls_config.clone();
            if let Ok(s) = connect(hub.addr).await {
                holders.push(tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let c = tokio_rustls::TlsConnector::from(config);
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    let Ok(mut s) = c.connect(name, s).await else {
                        return;
                    };
                    let _ = s.write_all(b"GET /v1/agents HTTP/1.1\r\nHost: a\r\n").await;
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        if s.write_all(b"X").await.is_err() {
                            return;
                        }
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        for _ in 0..300 {
            // Idle before the handshake, on both ports.
            if let Ok(s) = connect(hub.addr).await {
                holders.push(tokio::spawn(async move {
                    let _s = s;
                    std::future::pending::<()>().await
                }));
            }
            if let Ok(mut s) = connect(agent.activation).await {
                holders.push(tokio::spawn(async move {
                    // Slowloris on the activation port.
                    use tokio::io::AsyncWriteExt;
                    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await;
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        if s.write_all(b"X").await.is_err() {
                            return;
                        }
                    }
                }));
            }
        }
        holders
    });
    // The operator's request (from 127.0.0.1) is answered; so is the
    // activation page.
    let (status, v) = hub
        .https(&rt, Some(&token), None, Method::GET, "/v1/agents", None)
        .expect("the hub answers its operator");
    assert_eq!(status, 200, "{v}");
    let mut s = TcpStream::connect(agent.activation).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("the activation port answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for h in holders {
        h.abort();
    }
}

/// An agent sending hundreds of operations on a FIFO at once (which used to
/// hold one of the runtime's blocking threads each, until none was left for
/// anyone): each is refused without blocking, and meanwhile the next
/// agent's operations, heartbeats and the operators' API are answered. The
/// slots that bound blocking work per agent and in all are tested beside
/// `ferry_hub::server` (nothing here can block a thread any more).
#[test]
fn operations_on_a_fifo_neither_block_nor_starve_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let rt = runtime();
    let a = FakeAgent::activate(&hub, &rt, "a");
    let b = FakeAgent::activate(&hub, &rt, "b");
    for d in ["a", "b"] {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    let fifo = tmp.path().join("a/fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let la = hub_location(&hub, json!({"Type": "LOCAL", "Path": tmp.path().join("a")}));
    let lb = hub_location(&hub, json!({"Type": "LOCAL", "Path": tmp.path().join("b")}));
    let ta = fake_task(&hub, &a, &la, "ta", json!({}));
    let tb = fake_task(&hub, &b, &lb, "tb", json!({}));
    let ea = start_task(&hub, &ta, json!({}));
    let eb = start_task(&hub, &tb, json!({}));
    assert_eq!(pick_up(&hub, &rt, &a), ea);

    // More reads of the FIFO than the runtime has blocking threads.
    let stuck = a.client(&hub, 520);
    let path = format!("/agent/v1/fs/{la}/batch");
    let held: Vec<_> = (0..520u64)
        .map(|i| {
            let c = stuck.clone();
            let path = path.clone();
            let body = postcard::to_stdvec(&proto::Batch {
                batch_id: i,
                ops: vec![Op::Digest {
                    dir: Vec::new(),
                    name: b"fifo".to_vec(),
                }],
            })
            .unwrap();
            rt.spawn(async move {
                c.send(Method::POST, &path, "application/x-postcard", body)
                    .await
            })
        })
        .collect();
    // The operators' API and heartbeats.
    let token = hub.token();
    let (status, _) = hub
        .https(&rt, Some(&token), None, Method::GET, "/v1/agents", None)
        .unwrap();
    assert_eq!(status, 200);
    rt.block_on(
        b.client(&hub, 1)
            .json(Method::POST, "/agent/v1/heartbeat", None),
    )
    .unwrap();
    for h in held {
        let (status, body) = rt.block_on(h).unwrap().expect("an answer");
        assert_eq!(status.as_u16(), 200);
        let mut r: proto::BatchResponse = postcard::from_bytes(&body).unwrap();
        let e = r
            .pop()
            .expect("one answer")
            .expect_err("a FIFO is not read");
        assert!(e.message.contains("is a FIFO"), "{}", e.message);
    }
    // The next execution, on another agent, can work.
    a.report(&hub, &rt, &ea, "SUCCESS");
    assert_eq!(pick_up(&hub, &rt, &b), eb);
    let answer = rt.block_on(async {
        let c = b.client(&hub, 1);
        let body = postcard::to_stdvec(&proto::Batch {
            batch_id: 1,
            ops: vec![stat_root()],
        })
        .unwrap();
        c.send(
            Method::POST,
            &format!("/agent/v1/fs/{lb}/batch"),
            "application/x-postcard",
            body,
        )
        .await
    });
    let (status, body) = answer.expect("the hub answers the other agent");
    assert_eq!(status.as_u16(), 200);
    let r: proto::BatchResponse = postcard::from_bytes(&body).unwrap();
    assert!(matches!(&r[..], [Ok(_)]), "{r:?}");
    b.report(&hub, &rt, &eb, "SUCCESS");
}

/// The agent reads for its hub only NFS exports and the local paths its
/// configuration lists; an activation that did not check the hub's
/// fingerprint is flagged, and can be refused.
#[test]
fn a_hub_reads_only_what_the_agent_allows() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let allowed = tmp.path().join("allowed");
    let secret = tmp.path().join("secret");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    common::write(&allowed.join("data"), b"to be synced");
    common::write(&secret.join("key"), b"the appliance's own key");
    std::os::unix::fs::symlink(&secret, allowed.join("escape")).unwrap();
    let agent = Agent::start_with(
        &tmp.path().join("agent"),
        &format!("  hub_local_sources: [{}]\n", allowed.display()),
        None,
    );

    activate(&hub, &agent, hub.addr);
    let id = agent_id(&hub, "site");

    let run = |src: &Path, name: &str| {
        let dst = tmp.path().join(name);
        std::fs::create_dir_all(&dst).unwrap();
        let task = make_task(&hub, &id, src, &dst, false, 4);
        let (e, _) = run_task(&hub, &task);
        (e, dst)
    };
    let (e, dst) = run(&allowed, "dst-allowed");
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    assert_eq!(std::fs::read(dst.join("data")).unwrap(), b"to be synced");
    for (src, name) in [
        (secret.clone(), "dst-secret"),
        (allowed.join("escape"), "dst-escape"),
    ] {
        let (e, dst) = run(&src, name);
        assert_eq!(e["Status"], "ERROR", "{e}");
        assert_eq!(e["Result"]["ErrorCode"], "SourceNotAllowed", "{e}");
        assert!(
            e["Result"]["ErrorDetail"]
                .as_str()
                .unwrap()
                .contains("hub_local_sources"),
            "{e}"
        );
        assert!(!dst.join("key").exists());
    }

    let unchecked = Agent::start_with(&tmp.path().join("unchecked"), "", None);
    // No fingerprint: a warning, and the hub's page behind a link.
    let (status, location, body) = unchecked.activation_get(&format!("hub={}", hub.addr));
    assert_eq!(status, 200, "{body}");
    assert!(location.is_none());
    assert!(body.contains("not verified"), "{body}");
    assert!(body.contains(&hub.fingerprint()), "{body}");
    let key = body
        .split("activationKey=")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let v = unchecked.ferry(&["activation", "show"]);
    assert_eq!(v["HubFingerprintChecked"], false, "{v}");
    assert!(
        v["Warning"].as_str().unwrap().contains(&hub.fingerprint()),
        "{v}"
    );
    assert!(
        unchecked.d.log().contains("warning"),
        "{}",
        unchecked.d.log()
    );
    let (code, out, err) = hub.cli(&["activate", &key, "--name", "unchecked"]);
    assert_eq!(code, 0, "{out}{err}");

    // An agent that requires the fingerprint refuses to go without.
    let strict = Agent::start_with(
        &tmp.path().join("strict"),
        "  require_hub_fingerprint: true\n",
        None,
    );
    let (status, _, body) = strict.activation_get(&format!("hub={}", hub.addr));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("fingerprint"), "{body}");
    let (status, v) = strict.d.api(
        "POST",
        "/v1/activation",
        Some(json!({"Hub": hub.addr.to_string()})),
    );
    assert_eq!(status, 400, "{v}");
    // With it, as usual.
    strict.register(hub.addr, &hub.fingerprint());
}

/// Activation requests that cannot be right are refused with 400 and what
/// is wrong, on the activation port and in the agent's API alike, before
/// any hub is contacted; a hub that does not answer is a 502.
#[test]
fn bad_activation_requests_are_refused_with_400() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(&tmp.path().join("agent"), "", None);
    let good_fp = format!("sha256:{}", "ab".repeat(32));
    let bad_hubs = [
        ("", "empty"),
        ("   ", "empty"),
        ("hub example.com", "not a host name"),
        ("hub.example.com:99999", "port"),
        ("hub.example.com:0", "port"),
        ("hub.example.com:x", "port"),
        ("hub.example.com/x", "HOST[:PORT]"),
        ("user@hub.example.com", "HOST[:PORT]"),
        ("-hub.example.com", "not a host name"),
        ("[::1", "not a host name"),
    ];
    let bad_fps = [
        "sha256:abc",
        "md5:0123456789abcdef0123456789abcdef",
        &format!("sha256:{}", "g".repeat(64)),
        &format!("sha256:{}", "a".repeat(65)),
        &"a".repeat(64),
    ];
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b':' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let mut cases: Vec<(String, Option<String>, &str)> = bad_hubs
        .iter()
        .map(|(h, why)| (h.to_string(), Some(good_fp.clone()), *why))
        .collect();
    for fp in bad_fps {
        cases.push((
            "127.0.0.1:1".to_string(),
            Some(fp.to_string()),
            "sha256: followed by 64 hex digits",
        ));
    }
    for (hub, fp, why) in &cases {
        let mut query = format!("hub={}", encode(hub));
        if let Some(fp) = fp {
            query += &format!("&hubFingerprint={}", encode(fp));
        }
        let (status, _, body) = agent.activation_get(&query);
        assert_eq!(status, 400, "GET /?{query}: {body}");
        assert!(body.contains(why), "GET /?{query}: {body}");

        let (status, v) = agent.d.api(
            "POST",
            "/v1/activation",
            Some(json!({"Hub": hub, "HubFingerprint": fp})),
        );
        assert_eq!(status, 400, "{hub:?} {fp:?}: {v}");
        assert!(
            v["Message"].as_str().unwrap_or_default().contains(why),
            "{hub:?} {fp:?}: {v}"
        );
    }
    // The body's own shape.
    for body in [
        json!({}),
        json!({"Hub": 5}),
        json!({"Hub": "h", "Hubb": "x"}),
    ] {
        let (status, v) = agent.d.api("POST", "/v1/activation", Some(body.clone()));
        assert_eq!(status, 400, "{body}: {v}");
    }
    // Nothing was started.
    assert_eq!(
        agent.ferry(&["activation", "show"])["ActivationKey"],
        Value::Null
    );
    assert!(
        !agent.d.log().contains("registered with"),
        "{}",
        agent.d.log()
    );

    // Well formed, but nobody answers there: the registration failed. The
    // operator is sent to the hub's page with why, and the body says it;
    // with `no_redirect` (scripts), a 502 that says it.
    let (status, location, body) = agent.activation_get("hub=127.0.0.1:1");
    assert_eq!(status, 302, "{body}");
    let location = location.unwrap();
    assert!(
        location.starts_with("https://127.0.0.1:1/activate?errorType=HubUnreachable&errorMessage=cannot+reach+the+hub"),
        "{location}"
    );
    assert!(
        body.contains("errorType=HubUnreachable: cannot reach the hub"),
        "{body}"
    );
    let (status, location, body) = agent.activation_get("hub=127.0.0.1:1&no_redirect");
    assert_eq!((status, location), (502, None), "{body}");
    assert!(body.contains("errorType=HubUnreachable"), "{body}");
    let (status, v) = agent.d.api(
        "POST",
        "/v1/activation",
        Some(json!({"Hub": "127.0.0.1:1"})),
    );
    assert_eq!(status, 502, "{v}");
}

/// Whoever reaches an agent's activation port before the operator cannot
/// lock the operator out: requests naming the operator's hub, more than
/// the hub takes from one address, and others naming a hub of their own,
/// leave the operator's activation working right after; and a stranger
/// who moves the pending registration to their hub after the operator
/// confirmed is undone by the operator's next request.
#[test]
fn a_stranger_at_the_activation_port_cannot_lock_the_operator_out() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let theirs = Hub::start(&tmp.path().join("theirs"), 1800);
    let agent = Agent::start(&tmp.path().join("agent"));

    // More than the hub's 4 waiting keys and burst of 6 from one address.
    for i in 0..10 {
        let query = match i % 3 {
            0 => format!("hub={}", hub.addr),
            1 => format!("hub={}&hubFingerprint={}", hub.addr, hub.fingerprint()),
            _ => format!("hub={}", theirs.addr),
        };
        let _ = agent.activation_get(&query);
    }
    // The operator, right after.
    let key = agent.register(hub.addr, &hub.fingerprint());
    let v = agent.ferry(&["activation", "show"]);
    assert_eq!(v["ActivationKey"], key.as_str(), "{v}");
    assert_eq!(v["HubFingerprintChecked"], true, "{v}");

    // The stranger moves it to their hub; the operator confirms the key.
    let _ = agent.activation_get(&format!("hub={}", theirs.addr));
    let (code, out, err) = hub.cli(&["activate", &key, "--name", "site"]);
    assert_eq!(code, 0, "{out}{err}\n{}", agent.d.log());
    // (The agent asks the stranger's hub, which does not confirm.)
    std::thread::sleep(Duration::from_secs(2));
    assert!(!agent.marker().exists());
    // The operator's next request finds the confirmed key: activated.
    assert_eq!(agent.register(hub.addr, &hub.fingerprint()), key);
    wait_for("the activation marker", Duration::from_secs(5), || {
        agent.marker().exists()
    });
    let v = agent.ferry(&["activation", "show"]);
    assert_eq!(v["Activated"], true, "{v}");
    assert_eq!(v["Hub"], format!("https://{}", hub.addr), "{v}");
    assert_eq!(v["HubCaFingerprint"], hub.fingerprint(), "{v}");
    assert_eq!(agent_id(&hub, "site"), v["AgentId"].as_str().unwrap());
}
