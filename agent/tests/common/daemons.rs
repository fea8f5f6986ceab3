// SPDX-License-Identifier: MIT
//! Ferry's daemons as processes on loopback, started from configuration
//! documents: a hub, agents, and what a test does with them (activation,
//! tasks kept on the hub, executions waited for). The hub tests and the
//! soak use them.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_wire::{ca, client::HubClient, tls};
use hyper::Method;
use serde_json::{json, Value};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `ferry-agent --config` process.
pub struct Daemon {
    pub dir: PathBuf,
    pub child: Child,
    pub bins: Binaries,
}

/// The programs the daemons and the operator's commands run.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `ferry-agent`
    pub agent: PathBuf,
    /// `ferry`
    pub ferry: PathBuf,
}

impl Binaries {
    /// The ones cargo built for these tests.
    pub fn cargo() -> Binaries {
        Binaries {
            agent: env!("CARGO_BIN_EXE_ferry-agent").into(),
            ferry: env!("CARGO_BIN_EXE_ferry").into(),
        }
    }

    /// Copies of cargo's in `dir`: a long run keeps its programs while the
    /// target directory is rebuilt under it. A target directory shared by
    /// several checkouts may hold another checkout's build under the same
    /// name: each copy must name this checkout as where it was compiled
    /// (the debug information's compilation directory).
    pub fn copied_to(dir: &Path) -> Binaries {
        std::fs::create_dir_all(dir).unwrap();
        let cargo = Binaries::cargo();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut needle = root.as_os_str().as_encoded_bytes().to_vec();
        needle.push(0);
        let copy = |from: &Path| {
            let to = dir.join(from.file_name().unwrap());
            std::fs::copy(from, &to)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
            let bytes = std::fs::read(&to).unwrap();
            assert!(
                bytes.windows(needle.len()).any(|w| w == needle),
                "{} was not built from {} (another checkout built it since, in the same target \
                 directory): build again",
                from.display(),
                root.display()
            );
            to
        };
        Binaries {
            agent: copy(&cargo.agent),
            ferry: copy(&cargo.ferry),
        }
    }
}

impl Daemon {
    /// With `nofile` as its open-file limit (an appliance's is 1024).
    pub fn start_limited(dir: &Path, yaml: &str, nofile: Option<u64>) -> Daemon {
        Daemon::start_as(&Binaries::cargo(), dir, yaml, nofile)
    }

    /// `bins.agent` as the daemon; its log goes on after an earlier one's.
    pub fn start_as(bins: &Binaries, dir: &Path, yaml: &str, nofile: Option<u64>) -> Daemon {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("ferry.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(&bins.agent);
        cmd.arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = nofile {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().expect("start ferry-agent");
        let d = Daemon {
            dir: dir.to_path_buf(),
            child,
            bins: bins.clone(),
        };
        wait_for("the daemon's socket", Duration::from_secs(20), || {
            UnixStream::connect(d.socket()).is_ok()
        });
        d
    }

    /// Sends `signal` and waits for the process to end.
    pub fn stop(&mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child, which has not been waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        self.child.wait().unwrap()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// A request on the Unix-socket API: (status, JSON).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        // One write: `write!` sends each piece on its own, and a body that
        // arrives after the server has answered (a route that does not
        // read it) and closed makes the kernel reset the connection.
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).unwrap();
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

pub struct Hub {
    pub d: Daemon,
    pub addr: SocketAddr,
}

impl Hub {
    pub fn start(dir: &Path, key_seconds: u64) -> Hub {
        Hub::start_limited(dir, key_seconds, None)
    }

    pub fn start_limited(dir: &Path, key_seconds: u64, nofile: Option<u64>) -> Hub {
        Hub::start_on(&Binaries::cargo(), dir, key_seconds, nofile, free_port())
    }

    /// On `port`: a hub started again on its state directory `dir` keeps
    /// its address.
    pub fn start_on(
        bins: &Binaries,
        dir: &Path,
        key_seconds: u64,
        nofile: Option<u64>,
        port: u16,
    ) -> Hub {
        Hub::start_configured(bins, dir, key_seconds, nofile, port, "")
    }

    /// `extra`: more lines of the `daemon:` section.
    pub fn start_configured(
        bins: &Binaries,
        dir: &Path,
        key_seconds: u64,
        nofile: Option<u64>,
        port: u16,
        extra: &str,
    ) -> Hub {
        let yaml = format!(
            "version: 2\nrole: hub\ndaemon:\n  data_dir: {data}\n  socket: {sock}\n  https_listen: 127.0.0.1:{port}\n  operator_token_file: {token}\n  activation_key_seconds: {key_seconds}\n{extra}",
            data = dir.join("data").display(),
            sock = dir.join("api.sock").display(),
            token = dir.join("token").display(),
        );
        let d = Daemon::start_as(bins, dir, &yaml, nofile);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("the hub's HTTPS port", Duration::from_secs(20), || {
            TcpStream::connect(addr).is_ok()
        });
        Hub { d, addr }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.d.dir.join("data/hub/ca/ca.pem")
    }

    pub fn ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        ca::cert_from_pem(&std::fs::read_to_string(self.ca_path()).unwrap(), "ca").unwrap()
    }

    pub fn fingerprint(&self) -> String {
        ca::fingerprint(&self.ca_der())
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.d.dir.join("token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// An HTTPS request to the hub: (status, JSON), or the transport error.
    pub fn https(
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
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.d.bins.ferry)
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

pub struct Agent {
    pub d: Daemon,
    pub activation: SocketAddr,
}

impl Agent {
    /// An agent whose hub may read local paths under `dir`'s parent (the
    /// test's directory).
    pub fn start(dir: &Path) -> Agent {
        let sources = format!(
            "  hub_local_sources: [{}]\n",
            dir.parent().unwrap().display()
        );
        Agent::start_with(dir, &sources, None)
    }

    /// `extra`: more lines of the `daemon:` section.
    pub fn start_with(dir: &Path, extra: &str, nofile: Option<u64>) -> Agent {
        Agent::start_as(&Binaries::cargo(), dir, extra, nofile)
    }

    pub fn start_as(bins: &Binaries, dir: &Path, extra: &str, nofile: Option<u64>) -> Agent {
        let agent = Agent::launch(bins, dir, extra, nofile);
        wait_for("the activation port", Duration::from_secs(20), || {
            TcpStream::connect(agent.activation).is_ok()
        });
        agent
    }

    /// An agent started again in `dir` once activated (its activation port
    /// stays closed then), as [`Agent::start`] started it.
    #[allow(dead_code)]
    pub fn restart(dir: &Path) -> Agent {
        let sources = format!(
            "  hub_local_sources: [{}]\n",
            dir.parent().unwrap().display()
        );
        Agent::launch(&Binaries::cargo(), dir, &sources, None)
    }

    fn launch(bins: &Binaries, dir: &Path, extra: &str, nofile: Option<u64>) -> Agent {
        let port = free_port();
        let yaml = format!(
            "version: 2\ndaemon:\n  data_dir: {data}\n  socket: {sock}\n  activation_listen: 127.0.0.1:{port}\n  activated_marker: {marker}\n  poll_seconds: 1\n{extra}",
            data = dir.join("data").display(),
            sock = dir.join("api.sock").display(),
            marker = dir.join("activated").display(),
        );
        let d = Daemon::start_as(bins, dir, &yaml, nofile);
        let activation: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Agent { d, activation }
    }

    pub fn marker(&self) -> PathBuf {
        self.d.dir.join("activated")
    }

    /// `GET /?QUERY` on the activation port: (status, Location header, body).
    pub fn activation_get(&self, query: &str) -> (u16, Option<String>, String) {
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
    pub fn ferry(&self, args: &[&str]) -> Value {
        let out = Command::new(&self.d.bins.ferry)
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
    pub fn register(&self, hub_addr: SocketAddr, fingerprint: &str) -> String {
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

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A source tree: small files, nested directories, a symlink, an empty
/// file, and two large incompressible files (split into ranges).
pub fn make_tree(root: &Path, big: usize) {
    for d in 0..8 {
        let dir = root.join(format!("dir{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            // Text-like content, so compression has something to do.
            let line = format!("line {d} {f} of a file that compresses well\n");
            crate::common::write(
                &dir.join(format!("f{f}.txt")),
                line.repeat(50 + f * 40).as_bytes(),
            );
        }
    }
    crate::common::write(&root.join("empty"), b"");
    std::os::unix::fs::symlink("dir0/sub/f1.txt", root.join("link")).unwrap();
    for i in 0..2 {
        crate::common::write(
            &root.join(format!("big{i}.bin")),
            &crate::common::bytes(i, big),
        );
    }
}

pub fn wait_execution(agent: &Daemon, id: &str, timeout: Duration) -> Value {
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

/// The id the hub gave the agent named `name`.
pub fn agent_id(hub: &Hub, name: &str) -> String {
    let (code, out, err) = hub.cli(&["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let agents: Value = serde_json::from_str(&out).unwrap();
    agents["Agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Name"] == name)
        .unwrap_or_else(|| panic!("no agent {name}: {agents}"))["AgentId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A task kept on the hub (an agent's location can be written to the hub
/// only as such): the agent's local `src` (an `AGENT` location) to a local
/// location of the hub on `dst`; returns the task's id.
pub fn make_task(
    hub: &Hub,
    agent_id: &str,
    src: &Path,
    dst: &Path,
    compress: bool,
    connections: u32,
) -> String {
    let (status, d) = hub.d.api(
        "POST",
        "/v1/locations",
        Some(json!({"Type": "LOCAL", "Path": dst})),
    );
    assert_eq!(status, 201, "{d}");
    let (status, s) = hub.d.api(
        "POST",
        "/v1/locations",
        Some(
            json!({"Type": "AGENT", "AgentId": agent_id, "Location": {"Type": "LOCAL", "Path": src},
                    "Compress": compress, "Connections": connections}),
        ),
    );
    assert_eq!(status, 201, "{s}");
    let (status, task) = hub.d.api(
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
    task["TaskId"].as_str().unwrap().to_string()
}

/// Starts a task kept on the hub; returns the hub's execution id.
pub fn start_task(hub: &Hub, task_id: &str, options: Value) -> String {
    let (status, e) = hub
        .d
        .api("POST", &format!("/v1/tasks/{task_id}/start"), Some(options));
    assert!(status < 300, "{e}");
    e["TaskExecutionId"].as_str().unwrap().to_string()
}

/// Activation without the checks: register, confirm, wait for the marker.
pub fn activate(hub: &Hub, agent: &Agent, via: SocketAddr) {
    activate_as(hub, agent, via, "site");
}

/// The same, the agent named `name` on the hub.
pub fn activate_as(hub: &Hub, agent: &Agent, via: SocketAddr, name: &str) {
    let key = agent.register(via, &hub.fingerprint());
    let (code, out, err) = hub.cli(&["activate", &key, "--name", name]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("the activation marker", Duration::from_secs(20), || {
        agent.marker().exists()
    });
}

/// Runs a task of the hub to its end; returns the hub's execution and how
/// long it took.
pub fn run_task(hub: &Hub, task_id: &str) -> (Value, Duration) {
    let started = Instant::now();
    let id = start_task(hub, task_id, json!({}));
    let e = wait_execution(&hub.d, &id, Duration::from_secs(900));
    (e, started.elapsed())
}
