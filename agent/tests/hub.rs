//! A hub and an agent as processes on loopback, started from configuration
//! documents, with a fault-injecting proxy between them: activation through
//! the agent's activation port, a task whose destination is a location of
//! the hub, trees compared after killed connections and an outage; and what
//! the hub refuses.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry::hub::{ca, client::HubClient, tls};
use hyper::Method;
use serde_json::{json, Value};

use proxy::{Faults, Proxy};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `ferry-agent --config` process.
struct Daemon {
    dir: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(dir: &Path, yaml: &str) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("ferry.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferry-agent");
        let d = Daemon {
            dir: dir.to_path_buf(),
            child,
        };
        wait_for("the daemon's socket", Duration::from_secs(20), || {
            UnixStream::connect(d.socket()).is_ok()
        });
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// A request on the Unix-socket API: (status, JSON).
    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Hub {
    d: Daemon,
    addr: SocketAddr,
}

impl Hub {
    fn start(dir: &Path, key_seconds: u64) -> Hub {
        let port = free_port();
        let yaml = format!(
            "version: 2\nrole: hub\ndaemon:\n  data_dir: {data}\n  socket: {sock}\n  https_listen: 127.0.0.1:{port}\n  operator_token_file: {token}\n  activation_key_seconds: {key_seconds}\n",
            data = dir.join("data").display(),
            sock = dir.join("api.sock").display(),
            token = dir.join("token").display(),
        );
        let d = Daemon::start(dir, &yaml);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("the hub's HTTPS port", Duration::from_secs(20), || {
            TcpStream::connect(addr).is_ok()
        });
        Hub { d, addr }
    }

    fn ca_path(&self) -> PathBuf {
        self.d.dir.join("data/hub/ca/ca.pem")
    }

    fn ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        ca::cert_from_pem(&std::fs::read_to_string(self.ca_path()).unwrap(), "ca").unwrap()
    }

    fn fingerprint(&self) -> String {
        ca::fingerprint(&self.ca_der())
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.d.dir.join("token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// An HTTPS request to the hub: (status, JSON), or the transport error.
    fn https(
        &self,
        rt: &tokio::runtime::Runtime,
        token: Option<&str>,
        identity: Option<(String, String)>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let identity = identity.map(|(cert, key)| {
            let cert = ca::cert_from_pem(&cert, "cert").unwrap();
            let key = rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).unwrap();
            (vec![cert], key)
        });
        let config = tls::client_config(&self.ca_der(), identity).unwrap();
        rt.block_on(async {
            let c = HubClient::new(
                format!("https://{}", self.addr),
                config,
                1,
                token.map(str::to_string),
            );
            let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
            c.send(method, path, "application/json", body)
                .await
                .map(|(s, b)| {
                    (
                        s.as_u16(),
                        serde_json::from_slice(&b)
                            .unwrap_or(Value::String(String::from_utf8_lossy(&b).into_owned())),
                    )
                })
                .map_err(|e| e.to_string())
        })
    }

    /// `ferry agent ARGS` against this hub: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("agent")
            .args(args)
            .env("FERRY_HUB", self.addr.to_string())
            .env("FERRY_HUB_TOKEN", self.token())
            .env("FERRY_HUB_CA", self.ca_path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

struct Agent {
    d: Daemon,
    activation: SocketAddr,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let port = free_port();
        let yaml = format!(
            "version: 2\ndaemon:\n  data_dir: {data}\n  socket: {sock}\n  activation_listen: 127.0.0.1:{port}\n  activated_marker: {marker}\n  poll_seconds: 1\n",
            data = dir.join("data").display(),
            sock = dir.join("api.sock").display(),
            marker = dir.join("activated").display(),
        );
        let d = Daemon::start(dir, &yaml);
        let activation: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("the activation port", Duration::from_secs(20), || {
            TcpStream::connect(activation).is_ok()
        });
        Agent { d, activation }
    }

    fn marker(&self) -> PathBuf {
        self.d.dir.join("activated")
    }

    /// `GET /?QUERY` on the activation port: (status, Location header, body).
    fn activation_get(&self, query: &str) -> (u16, Option<String>, String) {
        let mut s = TcpStream::connect(self.activation).unwrap();
        write!(
            s,
            "GET /?{query} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let location = answer
            .lines()
            .find_map(|l| {
                l.strip_prefix("location: ")
                    .or_else(|| l.strip_prefix("Location: "))
            })
            .map(str::to_string);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, location, body)
    }

    /// `ferry ARGS --json` against this agent's socket; must succeed.
    fn ferry(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .arg("--json")
            .env("FERRY_AGENT", self.d.socket())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ferry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Registers with the hub at `hub_addr`; returns the activation key.
    fn register(&self, hub_addr: SocketAddr, fingerprint: &str) -> String {
        let (status, location, body) =
            self.activation_get(&format!("hub={hub_addr}&hubFingerprint={fingerprint}"));
        assert_eq!(
            status,
            302,
            "activation answered {status}: {body}\n{}",
            self.d.log()
        );
        let location = location.expect("a Location header");
        assert!(
            location.starts_with(&format!("https://{hub_addr}/activate?activationKey=")),
            "{location}"
        );
        location.rsplit('=').next().unwrap().to_string()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A source tree: small files, nested directories, a symlink, an empty
/// file, and two large incompressible files (split into ranges).
fn make_tree(root: &Path, big: usize) {
    for d in 0..8 {
        let dir = root.join(format!("dir{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            // Text-like content, so compression has something to do.
            let line = format!("line {d} {f} of a file that compresses well\n");
            common::write(
                &dir.join(format!("f{f}.txt")),
                line.repeat(50 + f * 40).as_bytes(),
            );
        }
    }
    common::write(&root.join("empty"), b"");
    std::os::unix::fs::symlink("dir0/sub/f1.txt", root.join("link")).unwrap();
    for i in 0..2 {
        common::write(&root.join(format!("big{i}.bin")), &common::bytes(i, big));
    }
}

fn wait_execution(agent: &Daemon, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, e) = agent.api("GET", &format!("/v1/executions/{id}"), None);
        let status = e["Status"].as_str().unwrap_or("").to_string();
        if status == "SUCCESS" || status == "ERROR" {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "the execution did not end: {e}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A hub location on `dst`, a local location on `src` and a HUB location on
/// the agent, and a task between them; returns the task's id.
fn make_task(
    hub: &Hub,
    agent: &Agent,
    rt: &tokio::runtime::Runtime,
    src: &Path,
    dst: &Path,
    compress: bool,
    connections: u32,
) -> String {
    let token = hub.token();
    let (status, loc) = hub
        .https(
            rt,
            Some(&token),
            None,
            Method::POST,
            "/v1/locations",
            Some(json!({"Type": "LOCAL", "Path": dst})),
        )
        .unwrap();
    assert_eq!(status, 201, "{loc}");
    let hub_loc = loc["LocationId"].as_str().unwrap();
    let (_, s) = agent.d.api(
        "POST",
        "/v1/locations",
        Some(json!({"Type": "LOCAL", "Path": src})),
    );
    let (status, d) = agent.d.api(
        "POST",
        "/v1/locations",
        Some(json!({"Type": "HUB", "HubLocationId": hub_loc, "Compress": compress, "Connections": connections})),
    );
    assert_eq!(status, 201, "{d}");
    let (status, task) = agent.d.api(
        "POST",
        "/v1/tasks",
        Some(json!({
            "Name": format!("to-hub-{}", dst.file_name().unwrap().to_string_lossy()),
            "SourceLocationId": s["LocationId"],
            "DestinationLocationId": d["LocationId"],
            "Options": {"VerifyMode": "POINT_IN_TIME_CONSISTENT"},
        })),
    );
    assert_eq!(status, 201, "{task}");
    let task_id = task["TaskId"].as_str().unwrap().to_string();
    task_id
}

/// Activation without the checks: register, confirm, wait for the marker.
fn activate(hub: &Hub, agent: &Agent, via: SocketAddr) {
    let key = agent.register(via, &hub.fingerprint());
    let (code, out, err) = hub.cli(&["activate", &key, "--name", "site"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("the activation marker", Duration::from_secs(20), || {
        agent.marker().exists()
    });
}

/// Runs the task to its end; returns the execution and how long it took.
fn run_task(agent: &Agent, task_id: &str) -> (Value, Duration) {
    let started = Instant::now();
    let (status, e) = agent.d.api(
        "POST",
        &format!("/v1/tasks/{task_id}/start"),
        Some(json!({})),
    );
    assert!(status < 300, "{e}");
    let e = wait_execution(
        &agent.d,
        e["TaskExecutionId"].as_str().unwrap(),
        Duration::from_secs(900),
    );
    (e, started.elapsed())
}

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
    let (status, _, body) =
        agent.activation_get(&format!("hub={}&hubFingerprint={wrong}", proxy.addr));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("fingerprint"), "{body}");

    let key = agent.register(proxy.addr, &hub.fingerprint());
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

    // A destination on the hub, a source on the agent, a task on the agent.
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    make_tree(&src, 40 << 20);
    let task_id = make_task(&hub, &agent, &rt, &src, &dst, true, 4);

    // A link that drops connections (FINs and resets) at random points.
    proxy.set(Faults {
        delay: Duration::from_millis(5),
        bytes_per_second: Some(40 << 20),
        kill_after: Some((64 << 10, 6 << 20)),
        kills: 8,
        reset: true,
    });
    let started = Instant::now();
    let (status, e) = agent.d.api(
        "POST",
        &format!("/v1/tasks/{task_id}/start"),
        Some(json!({})),
    );
    assert!(status < 300, "{e}");
    let exec_id = e["TaskExecutionId"].as_str().unwrap().to_string();
    // An outage in the middle: every connection cut, new ones refused.
    wait_for("some data sent", Duration::from_secs(60), || {
        let (_, e) = agent
            .d
            .api("GET", &format!("/v1/executions/{exec_id}"), None);
        e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 20 << 20
            || e["Status"] == "SUCCESS"
    });
    proxy.outage(Duration::from_secs(5));
    let e = wait_execution(&agent.d, &exec_id, Duration::from_secs(240));
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
    let (_, e) = agent.d.api(
        "POST",
        &format!("/v1/tasks/{task_id}/start"),
        Some(json!({})),
    );
    let e = wait_execution(
        &agent.d,
        e["TaskExecutionId"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert_eq!(e["Counters"]["BytesTransferred"], 0, "{e}");
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
        .https(&rt, None, None, Method::POST, "/agent/v1/fs/loc-1", None)
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
    // A second registration replaces the first.
    let v = agent.ferry(&["activation", "start", "--hub", &hub.addr.to_string()]);
    let key = v["ActivationKey"].as_str().unwrap().to_string();
    assert_ne!(key, first);
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
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let proxy = Proxy::start(hub.addr, Faults::default());
    let agent = Agent::start(&tmp.path().join("agent"));
    let rt = runtime();
    activate(&hub, &agent, proxy.addr);

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
        let task = make_task(&hub, &agent, &rt, src, &dst, false, connections);
        proxy.set(faults);
        let killed_before = proxy
            .stats()
            .killed
            .load(std::sync::atomic::Ordering::Relaxed);
        let (e, took) = run_task(&agent, &task);
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
        let transfer_ms = e["Result"]["TransferDuration"].as_u64().unwrap_or(0);
        let secs = took.as_secs_f64();
        eprintln!(
            "{name}: {files} files, {} MiB in {secs:.1} s (transfer {transfer_ms} ms): {:.1} MiB/s = {:.0}% of the cap, {:.0} files/s; killed {killed}, resent {} KiB, retried {}",
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
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let proxy = Proxy::start(hub.addr, Faults::default());
    let agent = Agent::start(&tmp.path().join("agent"));
    let rt = runtime();
    activate(&hub, &agent, proxy.addr);
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    make_tree(&src, 40 << 20);
    let task = make_task(&hub, &agent, &rt, &src, &dst, false, 8);
    proxy.set(Faults {
        bytes_per_second: Some(8 << 20),
        ..Faults::default()
    });
    let (status, e) = agent
        .d
        .api("POST", &format!("/v1/tasks/{task}/start"), Some(json!({})));
    assert!(status < 300, "{e}");
    let exec_id = e["TaskExecutionId"].as_str().unwrap().to_string();
    wait_for("some data sent", Duration::from_secs(60), || {
        let (_, e) = agent
            .d
            .api("GET", &format!("/v1/executions/{exec_id}"), None);
        e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 10 << 20
    });
    proxy.outage(Duration::from_secs(60));
    let e = wait_execution(&agent.d, &exec_id, Duration::from_secs(300));
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

    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    make_tree(&src, 36 << 20);
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

    let e = wait(&run(json!({})));
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", agent.d.log());
    assert!(common::compare_trees(&src, &dst).is_empty());
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
}

/// An activated agent sends file-system operations of its own making to a
/// location of the hub: none reaches outside the location, makes special
/// files, or takes unbounded memory or a blocked thread.
#[test]
fn the_hub_does_an_agents_operations_only_on_what_the_location_holds() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use ferry::hub::proto::{Op, Request, Response, WireUpdate, MAX_CHUNK};
    use ferry::location::Kind;

    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let agent = Agent::start(&tmp.path().join("agent"));
    let rt = runtime();
    activate(&hub, &agent, hub.addr);

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
    let (status, loc) = hub
        .https(
            &rt,
            Some(&hub.token()),
            None,
            Method::POST,
            "/v1/locations",
            Some(json!({"Type": "LOCAL", "Path": dst})),
        )
        .unwrap();
    assert_eq!(status, 201, "{loc}");
    let loc = loc["LocationId"].as_str().unwrap().to_string();

    // The agent's own certificate, as its remote writer uses it.
    let link = agent.d.dir.join("data/hub-link");
    let cert = ca::cert_from_pem(
        &std::fs::read_to_string(link.join("agent.pem")).unwrap(),
        "agent",
    )
    .unwrap();
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(
        &std::fs::read(link.join("agent.key")).unwrap(),
    )
    .unwrap();
    let config = tls::client_config(&hub.ca_der(), Some((vec![cert], key))).unwrap();
    let client =
        rt.block_on(async { HubClient::new(format!("https://{}", hub.addr), config, 1, None) });
    let mut op_id = 0;
    let mut send = |op: Op| -> Response {
        op_id += 1;
        let req = Request { op_id, op };
        rt.block_on(client.fs(&loc, &req)).unwrap()
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
}
