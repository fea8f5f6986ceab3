"""The WAN benchmark (`scripts/bench --wan`): an agent sending to its hub
across the internet, against rsync over ssh and rclone over sftp, on one
machine. Every tool's traffic goes through the same userspace link,
ferry-netproxy (a fixed delay each way, optionally a bandwidth cap): the
agent's connections to the hub, and ssh's to an OpenSSH server the
benchmark starts on loopback with keys it makes."""

import base64
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass

from . import check, report, trees
from .plan import Workload
from .util import BenchError, write

MIB = 1 << 20

TOOLS = ["rsync", "rclone", "ferry", "ferry-verify", "ferry-x2", "ferry-x4"]
INCREMENTAL_TOOLS = ["rsync", "rclone", "ferry", "ferry-verify"]
# Several agents on one task (--scale-out), each behind its own link.
SCALE_OUT_TOOLS = ["rsync", "ferry", "ferry-x2", "ferry-x4"]

LABELS = {
    "rsync": "rsync -a over ssh",
    "rclone": "rclone copy --transfers 64 --checkers 64 (sftp)",
    "ferry": "ferry agent → hub, verification off",
    "ferry-verify": "ferry agent → hub, verification on",
    "ferry-x2": "ferry, 2 agents → hub (a link each), verification off",
    "ferry-x4": "ferry, 4 agents → hub (a link each), verification off",
}


def agents_of(tool):
    """How many agents share the task: `ferry-xN` N, other ferry tools 1."""
    m = re.fullmatch(r"ferry-x(\d+)", tool)
    return int(m.group(1)) if m else 1


@dataclass(frozen=True)
class Series:
    """The link: round trip added (half each way) and a cap each way."""

    name: str
    rtt_ms: int
    rate_mbit: int = 0


SERIES = {s.name: s for s in [Series("50ms", 50), Series("50ms 100Mbit", 50, 100),
                               Series("50ms 25Mbit a link", 50, 25)]}


def default_workloads():
    peers = ["rsync", "rclone", "ferry"]
    return [
        Workload("small", "small", ["50ms", "50ms 100Mbit"], peers),
        Workload("small+verify", "small", ["50ms", "50ms 100Mbit"], ["ferry", "ferry-verify"]),
        Workload("large", "large", ["50ms 100Mbit"], TOOLS),
        Workload("mixed", "mixed", ["50ms 100Mbit"], peers),
        Workload("incr-none", "incr-none", ["50ms 100Mbit"], INCREMENTAL_TOOLS),
        Workload("incr-1pct", "incr-1pct", ["50ms 100Mbit"], INCREMENTAL_TOOLS),
    ]


def smoke_workloads():
    return [
        Workload("small", "small", ["50ms 100Mbit"], TOOLS),
        Workload("large", "large", ["50ms 100Mbit"], TOOLS),
        Workload("incr-1pct", "incr-1pct", ["50ms 100Mbit"], INCREMENTAL_TOOLS),
    ]


def scale_out_workloads(smoke):
    """One task on one, two and four agents, each agent's link its own
    (25 Mbit/s): the link bounds each agent, not the source or the hub."""
    tools = SCALE_OUT_TOOLS
    if smoke:
        return [Workload("small", "small", ["50ms 25Mbit a link"], tools)]
    return [Workload("small", "small", ["50ms 25Mbit a link"], tools),
            Workload("large", "large", ["50ms 25Mbit a link"], tools)]


def sizes(args):
    if getattr(args, "scale_out", False):
        if args.smoke:
            return dict(small=dict(files=400, dirs=8, size=8192), large=dict(files=1, size=4 * MIB),
                        mixed=dict(files=0, dirs=1))
        return dict(small=dict(files=int(4000 * args.scale), dirs=40, size=8192),
                    large=dict(files=4, size=(args.large_mib or 32) * MIB), mixed=dict(files=0, dirs=1))
    if args.smoke:
        return dict(small=dict(files=200, dirs=4, size=8192), large=dict(files=1, size=16 * MIB),
                    mixed=dict(files=30, dirs=3, cap=4 * MIB))
    return dict(small=dict(files=int(20000 * args.scale), dirs=200, size=8192),
                large=dict(files=4, size=args.large_mib * MIB), mixed=dict(files=300, dirs=10))


def progress(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_id(workload, series, tool, run):
    slug = lambda s: re.sub(r"[^A-Za-z0-9.-]+", "_", s)
    return f"{slug(workload)}.{slug(series)}.{tool}.r{run}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, ok, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.05)


def can_connect(addr):
    try:
        with socket.create_connection(addr, timeout=1):
            return True
    except OSError:
        return False


class Process:
    """A child process with its log in `log`; stopped on exit."""

    def __init__(self, argv, log, **kw):
        self.argv = argv
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(argv, stdout=kw.pop("stdout", f), stderr=f, **kw)

    def check_alive(self):
        if self.proc.poll() is not None:
            with open(self.log, errors="replace") as f:
                tail = f.read()[-2000:]
            raise BenchError(f"{os.path.basename(self.argv[0])} exited ({self.proc.returncode}): {tail}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def peak_rss_reset(self):
        """Resets the peak RSS (VmHWM) to the current RSS."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None


class Proxy(Process):
    """ferry-netproxy in front of `upstream` with the series' link."""

    def __init__(self, binary, upstream, series, log):
        port = free_port()
        argv = [binary, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream}",
                "--delay-ms", str(series.rtt_ms // 2)]
        if series.rate_mbit:
            argv += ["--rate-mbit", str(series.rate_mbit)]
        super().__init__(argv, log)
        self.port = port
        wait_for("ferry-netproxy", lambda: self.check_alive() or can_connect(("127.0.0.1", port)))


def api(sock, method, path, body=None):
    """A request on a daemon's unix-socket API: (status, JSON)."""
    data = json.dumps(body).encode() if body is not None else b""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head[9:12])
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


class Ferry:
    """A hub and an agent as processes (as agent/tests/common/daemons.rs
    starts them), the agent activated with the hub through the proxy."""

    def __init__(self, bins, work, series, sources, agents=1):
        self.bins, self.work = bins, work
        shutil.rmtree(work, ignore_errors=True)
        hub_dir = os.path.join(work, "hub")
        os.makedirs(hub_dir)
        self.hub_port = free_port()
        self.hub_sock = os.path.join(hub_dir, "api.sock")
        write(os.path.join(hub_dir, "ferry.yaml"),
              f"version: 2\nrole: hub\ndaemon:\n  data_dir: {hub_dir}/data\n  socket: {self.hub_sock}\n"
              f"  https_listen: 127.0.0.1:{self.hub_port}\n  operator_token_file: {hub_dir}/token\n")
        self.hub = Process([bins["ferry-agent"], "--config", os.path.join(hub_dir, "ferry.yaml")],
                           os.path.join(hub_dir, "daemon.log"), stdout=subprocess.DEVNULL)
        wait_for("the hub's HTTPS port", lambda: self.hub.check_alive() or can_connect(("127.0.0.1", self.hub_port)))
        # Each agent behind a link of its own.
        self.proxies, self.agents, self.agent_ids = [], [], []
        for i in range(agents):
            agent_dir = os.path.join(work, "agent" if i == 0 else f"agent{i}")
            os.makedirs(agent_dir)
            proxy = Proxy(bins["ferry-netproxy"], self.hub_port, series,
                          os.path.join(work, "proxy.log" if i == 0 else f"proxy{i}.log"))
            act_port = free_port()
            marker = os.path.join(agent_dir, "activated")
            write(os.path.join(agent_dir, "ferry.yaml"),
                  f"version: 2\ndaemon:\n  data_dir: {agent_dir}/data\n  socket: {agent_dir}/api.sock\n"
                  f"  activation_listen: 127.0.0.1:{act_port}\n  activated_marker: {marker}\n"
                  f"  poll_seconds: 1\n  hub_local_sources: [{sources}]\n")
            agent = Process([bins["ferry-agent"], "--config", os.path.join(agent_dir, "ferry.yaml")],
                            os.path.join(agent_dir, "daemon.log"), stdout=subprocess.DEVNULL)
            wait_for("the agent's activation port", lambda: agent.check_alive() or can_connect(("127.0.0.1", act_port)))
            self.proxies.append(proxy)
            self.agents.append(agent)
            self.agent_ids.append(self._activate(hub_dir, act_port, proxy, marker, f"site{i}"))
        self.agent, self.proxy = self.agents[0], self.proxies[0]

    def _activate(self, hub_dir, act_port, proxy, marker, name):
        ca = os.path.join(hub_dir, "data/hub/ca/ca.pem")
        with open(ca) as f:
            pem = f.read()
        der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
        fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
        # The agent registers with the hub through its link, as it will work.
        query = urllib.parse.urlencode({"hub": f"127.0.0.1:{proxy.port}", "hubFingerprint": fingerprint})
        with socket.create_connection(("127.0.0.1", act_port)) as s:
            s.sendall(f"GET /?{query} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        m = re.search(rb"(?i)^location: \S*activationKey=(\S+)", answer, re.M)
        if not m:
            raise BenchError(f"activation: the agent answered {answer[:300]!r}")
        with open(os.path.join(hub_dir, "token")) as f:
            token = f.read().strip()
        env = dict(os.environ, FERRY_HUB=f"127.0.0.1:{self.hub_port}", FERRY_HUB_TOKEN=token, FERRY_HUB_CA=ca)
        key = m.group(1).decode()
        subprocess.run([self.bins["ferry"], "agent", "activate", key, "--name", name], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        wait_for("the activation marker", lambda: os.path.exists(marker))
        out = subprocess.run([self.bins["ferry"], "agent", "list", "--json"], env=env, check=True,
                             stdout=subprocess.PIPE).stdout
        return next(a["AgentId"] for a in json.loads(out)["Agents"] if a["Name"] == name)

    def task(self, src, dst, verify, agents=1):
        """A task kept on the hub, the local `src` of the first `agents`
        agents to the hub's local `dst`: its id."""
        d = self._post("/v1/locations", {"Type": "LOCAL", "Path": dst})
        s = self._post("/v1/locations", {"Type": "AGENT", "AgentId": self.agent_ids[0],
                                         "AdditionalAgentIds": self.agent_ids[1:agents],
                                         "Location": {"Type": "LOCAL", "Path": src}})
        task = self._post("/v1/tasks", {"Name": f"wan-{os.path.basename(dst)}", "SourceLocationId": s["LocationId"],
                                        "DestinationLocationId": d["LocationId"],
                                        "Options": {"VerifyMode": "POINT_IN_TIME_CONSISTENT" if verify else "NONE"}})
        return task["TaskId"]

    def _post(self, path, body):
        status, answer = api(self.hub_sock, "POST", path, body)
        if status >= 300:
            raise BenchError(f"hub: POST {path} answered {status}: {answer}")
        return answer

    def run(self, task, timeout=3600, dry_run=False):
        """An execution of `task` run to its end: (ok, seconds, execution);
        with `dry_run`, its plan (the estimate waits for the next run)."""
        # Timed as an operator sees it: from the start request to the end
        # (the hub hands the execution to the agent's held ask for work).
        start = time.monotonic()
        e = self._post(f"/v1/tasks/{task}/start", {"OverrideOptions": {"DryRun": True}} if dry_run else {})
        eid = e["TaskExecutionId"]
        while True:
            _, ex = api(self.hub_sock, "GET", f"/v1/executions/{eid}")
            if isinstance(ex, dict) and ex.get("Status") in ("SUCCESS", "ERROR"):
                break
            if time.monotonic() - start > timeout:
                raise BenchError(f"ferry's execution {eid} did not end in {timeout} s: {ex}")
            self.hub.check_alive()
            for agent in self.agents:
                agent.check_alive()
            time.sleep(0.01)
        return ex["Status"] == "SUCCESS", time.monotonic() - start, ex

    def stop(self):
        for p in (*self.agents, *self.proxies, self.hub):
            p.stop()


class Sshd:
    """OpenSSH's server on a loopback port, with a host key and a client key
    made here; sftp in process (internal-sftp)."""

    def __init__(self, work):
        self.dir = os.path.join(work, "ssh")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        binary = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(binary):
            raise BenchError("sshd is missing: scripts/setup installs openssh-server")
        self.key = os.path.join(self.dir, "client_key")
        host_key = os.path.join(self.dir, "host_key")
        for k in (self.key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k], check=True)
        shutil.copy(self.key + ".pub", os.path.join(self.dir, "authorized_keys"))
        self.port = free_port()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        conf = os.path.join(self.dir, "sshd_config")
        write(conf, f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
# rclone opens up to 64 connections at once
MaxStartups 256
MaxSessions 256
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation
        argv = [binary, "-D", "-e", "-f", conf]
        home = pwd.getpwuid(os.getuid()).pw_dir
        rc = os.path.join(home, ".bashrc")
        if os.getuid() == 0 and os.path.exists(rc) and shutil.which("unshare"):
            # A session's bash reads ~/.bashrc (here it runs `pyenv init`,
            # ~0.4 s of CPU per ssh command): sshd gets an empty one in a
            # mount namespace of its own.
            empty = os.path.join(self.dir, "empty.bashrc")
            write(empty, "")
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", empty, rc, *argv]
        self.proc = Process(argv, os.path.join(self.dir, "sshd.log"))
        wait_for("sshd", lambda: self.proc.check_alive() or can_connect(("127.0.0.1", self.port)))

    def ssh_command(self, port):
        return (f"ssh -F /dev/null -p {port} -i {self.key} -o BatchMode=yes -o StrictHostKeyChecking=no "
                "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")

    def stop(self):
        self.proc.stop()


def peer_command(tool, src, dst, sshd, port):
    if tool == "rsync":
        return ["rsync", "-a", "-e", sshd.ssh_command(port), f"{src}/", f"{sshd.user}@127.0.0.1:{dst}/"]
    if tool == "rclone":
        remote = f":sftp,host=127.0.0.1,port={port},user={sshd.user},key_file={sshd.key}:{dst}"
        return ["rclone", "copy", "--transfers", "64", "--checkers", "64", src, remote]
    raise ValueError(tool)


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass


def change_1pct(root):
    """Rewrites the first 4 KiB of every 100th file (by sorted name)."""
    files = sorted(os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns)
    for i, f in enumerate(files):
        if (i + 1) % 100 == 0:
            with open(f, "r+b") as fh:
                fh.write(os.urandom(4096))


def make_trees(src_root, workloads, args):
    sz = sizes(args)
    made = {}
    for kind in sorted({"small" if w.kind.startswith("incr") else w.kind for w in workloads}):
        root = os.path.join(src_root, kind)
        getattr(trees, kind)(root, **sz[kind])
        made[kind] = trees.tree_size(root)[0]
    return made


def run(args, workloads, out, bins):
    """Runs the plan; returns (results, files per workload, notes)."""
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(out, "runs.jsonl"), "w"):
        pass
    src_root, dst_root = os.path.join(work, "src"), os.path.join(work, "dst")
    os.makedirs(dst_root)
    progress("generating source trees")
    made = make_trees(src_root, workloads, args)
    sshd = Sshd(work)
    results = []
    try:
        for w in workloads:
            for series_name in w.series:
                series = SERIES[series_name]
                results += run_group(args, w, series, work, src_root, dst_root, made, bins, sshd, out)
    finally:
        sshd.stop()
    files = {w.name: made["small" if w.kind.startswith("incr") else w.kind] for w in workloads}
    return results, files


def run_group(args, w, series, work, src_root, dst_root, made, bins, sshd, out):
    """One workload in one series: fresh daemons and proxies (peak RSS per
    run: reset before it, read after)."""
    progress(f"{w.name} | {series.name}: starting the hub, the agent (activated through the link), the link for ssh")
    agents = max((agents_of(t) for t in w.tools if t.startswith("ferry")), default=1)
    ferry = Ferry(bins, os.path.join(work, "ferry"), series, src_root, agents)
    ssh_proxy = Proxy(bins["ferry-netproxy"], sshd.port, series, os.path.join(work, "ssh-proxy.log"))
    slow, results = set(), []
    try:
        for r in range(1, args.runs + 1):
            for tool in w.tools:
                if tool in slow:
                    continue
                rid = run_id(w.name, series.name, tool, r)
                dst = os.path.join(dst_root, rid)
                src = os.path.join(src_root, "small" if w.kind.startswith("incr") else w.kind)
                task = None
                if w.kind.startswith("incr"):
                    # Its own source copy and a destination already in sync
                    # (made locally, untimed; every tool compares size and
                    # time), then the tool's own sync of them, untimed: what
                    # an incremental run follows (ferry's verification keeps
                    # the digests it took, by inode, size and times).
                    copy = os.path.join(src_root, "incr", rid)  # under the agent's hub_local_sources
                    shutil.rmtree(copy, ignore_errors=True)
                    os.makedirs(os.path.dirname(copy), exist_ok=True)
                    subprocess.run(["cp", "-a", src, copy], check=True)
                    subprocess.run(["cp", "-a", src, dst], check=True)
                    src = copy
                    if tool.startswith("ferry"):
                        task = ferry.task(src, dst, verify=tool == "ferry-verify")
                        ok, _, execution = ferry.run(task)
                        if not ok:
                            raise BenchError(f"ferry's sync before {rid} failed: {execution}")
                    else:
                        subprocess.run(peer_command(tool, src, dst, sshd, ssh_proxy.port), check=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env=dict(os.environ, RCLONE_CONFIG="/dev/null"))
                    if w.kind == "incr-1pct":
                        change_1pct(src)
                else:
                    os.makedirs(dst)
                if tool.startswith("ferry") and args.plan:
                    # The plan first (untimed; the caches it warmed are
                    # dropped): the run shows its estimate beside its time.
                    task = task or ferry.task(src, dst, verify=tool == "ferry-verify")
                    ok, _, planned = ferry.run(task, dry_run=True)
                    if not ok:
                        raise BenchError(f"ferry's plan before {rid} failed: {planned}")
                drop_caches()
                for p in (ferry.hub, ferry.agent):
                    p.peak_rss_reset()
                res = dict(id=rid, workload=w.name, series=series.name, tool=tool, run=r,
                           src_ops=None, dst_ops=None, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
                if tool.startswith("ferry"):
                    task = task or ferry.task(src, dst, verify=tool == "ferry-verify", agents=agents_of(tool))
                    ok, seconds, execution = ferry.run(task)
                    res.update(rc=0 if ok else 1, ms=int(seconds * 1000), phases=ferry_phases(execution),
                               execution=execution)
                    if not ok:
                        res["error"] = json.dumps({k: v for k, v in execution.items() if "Error" in k})
                    res["rss_kib"] = {"agent": ferry.agent.peak_rss_kib(), "hub": ferry.hub.peak_rss_kib()}
                else:
                    cmd = peer_command(tool, src, dst, sshd, ssh_proxy.port)
                    start = time.monotonic()
                    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=dict(os.environ, RCLONE_CONFIG="/dev/null"))
                    res.update(rc=proc.returncode, ms=int((time.monotonic() - start) * 1000))
                    if proc.returncode:
                        res["error"] = proc.stderr.decode(errors="replace")[-500:]
                # The machine's load: anything else running slows every tool.
                res["load1"] = os.getloadavg()[0]
                res["diffs"] = check.differences(src, dst)
                results.append(res)
                # Each run as it ends: a benchmark stopped half-way keeps what it measured.
                with open(os.path.join(out, "runs.jsonl"), "a") as f:
                    f.write(json.dumps(res) + "\n")
                progress(f"{w.name} | {series.name} | {LABELS[tool]} | run {r}: {res['ms'] / 1000:.2f} s"
                         + (f" (exit {res['rc']}: {res.get('error', '')})" if res["rc"] else "")
                         + (f" MISMATCH {'; '.join(res['diffs'])}" if res["diffs"] else "")
                         + (f" (peak RSS agent {res['rss_kib']['agent'] // 1024} MiB, hub {res['rss_kib']['hub'] // 1024} MiB)"
                            if "rss_kib" in res else ""))
                # The trees are compared: make room for the next run.
                shutil.rmtree(dst, ignore_errors=True)
                if w.kind.startswith("incr"):
                    shutil.rmtree(src, ignore_errors=True)
                if res["ms"] > args.once_over * 1000:
                    slow.add(tool)
    finally:
        ssh_proxy.stop()
        ferry.stop()
    return results


def ferry_phases(execution):
    """Milliseconds of each phase, where the hub's execution gives them."""
    result = (execution or {}).get("Result") or {}
    phases = {p: result.get(f"{p.capitalize()}Duration") for p in ("prepare", "transfer", "verify", "total", "estimated")}
    return phases if any(v is not None for v in phases.values()) else None


# The report


def add_rss(rows, results):
    """Peak RSS of each group's first run and the highest of its runs: the
    daemons live through a workload's runs, and what a run leaves behind
    (the hub keeps answers for a while) counts in the next one's."""
    for row in rows:
        runs = sorted((r for r in results if (r["workload"], r["series"], r["tool"]) ==
                       (row["workload"], row["series"], row["tool"]) and r.get("rss_kib")), key=lambda r: r["run"])
        row["peak_rss_mib"] = None
        if runs:
            row["peak_rss_mib"] = {who: round(max(r["rss_kib"][who] for r in runs) / 1024, 1) for who in ("agent", "hub")}
            row["peak_rss_mib"].update({f"{who}_first": round(runs[0]["rss_kib"][who] / 1024, 1)
                                        for who in ("agent", "hub")})
        row["label"] = LABELS[row["tool"]]


def markdown(rows, meta):
    out = ["# Ferry benchmark across the internet (agent → hub)", ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if not k.startswith("_")]
    out += ["", "Times are medians of the runs (a run longer than the once-over limit is not repeated: `runs` = 1).",
            "Ratios are peer time / ferry time, run by run in the same series; above 1 means ferry is faster.",
            "Ferry with verification is measured against ferry without it: its ratio is what verification costs.",
            "Ferry's time runs from the start request to the end as the hub reports it (the hub hands the",
            "execution to the agent's held ask for work). Peak RSS: the highest VmHWM of the run's",
            "`ferry-agent` processes (the agent, the hub), reset before each run: the first run's / the highest",
            "of the runs (the daemons live through a workload's runs).", ""]
    def cells(r):
        rss = r["peak_rss_mib"]
        memory = [f"{rss[who + '_first']:.0f} / {rss[who]:.0f} MiB" for who in ("agent", "hub")] if rss else ["—", "—"]
        return report.common_cells(r, LABELS) + memory
    out += report.workload_sections(
        rows, ["series", "tool", "median", "runs", "peer/ferry", "peak RSS agent", "peak RSS hub"], cells)
    return "\n".join(out + _scale_out_table(rows, meta) + _phases_table(rows))


def _scale_out_table(rows, meta):
    """One, two and four agents on one task: throughput and speed-up."""
    ferry = [r for r in rows if r["tool"] in ("ferry", "ferry-x2", "ferry-x4") and r["median_ms"]]
    if not any(r["tool"] != "ferry" for r in ferry):
        return []
    out = ["## Scale-out: agents on one task", "",
           "Each agent behind a link of its own; speed-up is one agent's time / this time, and per agent that",
           "divided by the agents.", "",
           "| workload | series | agents | median | MiB/s | speed-up | per agent |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in ferry:
        one = next((x for x in ferry if (x["workload"], x["series"], x["tool"]) ==
                    (r["workload"], r["series"], "ferry")), None)
        n = agents_of(r["tool"])
        mib = meta.get("_bytes", {}).get(r["workload"], 0) / MIB
        speed = one["median_ms"] / r["median_ms"] if one else None
        out.append(f"| {r['workload']} | {r['series']} | {n} | {report.fmt_ms(r['median_ms'])} "
                   f"| {mib / (r['median_ms'] / 1000):.1f} | {f'{speed:.2f}' if speed else '—'} "
                   f"| {f'{speed / n:.2f}' if speed else '—'} |")
    return out + [""]


def _phases_table(rows):
    ferry = [r for r in rows if r["phases_ms"]]
    if not ferry:
        return []
    out = ["## Where ferry's time goes", "",
           "Medians of the execution's own phase timings (the hub's record); PREPARING and TRANSFERRING overlap.",
           "`execution` is its own total; `wall` adds the pick-up (the agent's held ask for work) and the reports' way back.",
           "`plan` is what the task's dry run just before (`ferry plan`'s estimate, on the agent through the link) said the",
           "execution would take; `plan / execution` is how close it came.", "",
           "| workload | series | tool | prepare | transfer | verify | execution | wall | plan | plan / execution |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in ferry:
        p = r["phases_ms"]
        est, total = p.get("estimated"), p.get("total")
        accuracy = f"{est / total:.2f}" if est is not None and total else "—"
        out.append(f"| {r['workload']} | {r['series']} | {LABELS[r['tool']]} | {report.fmt_ms(p['prepare'])} "
                   f"| {report.fmt_ms(p['transfer'])} | {report.fmt_ms(p['verify'])} | {report.fmt_ms(total)} "
                   f"| {report.fmt_ms(r['median_ms'])} | {report.fmt_ms(est)} | {accuracy} |")
    return out + [""]


def write_report(out_dir, results, rows, meta, files):
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({"meta": meta, "files": files, "summary": rows, "runs": results}, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(rows, meta))
    try:
        _chart(rows, os.path.join(out_dir, "ratios.png"))
    except ImportError:
        print("bench: matplotlib is missing (scripts/setup installs it): no chart", file=sys.stderr)


def _chart(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = [t for t in TOOLS if t != "ferry" and any(r["tool"] == t for r in rows)]
    groups = []
    for r in rows:
        if (r["workload"], r["series"]) not in groups:
            groups.append((r["workload"], r["series"]))
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(max(11, 2 * len(groups) + 4), 5),
                                  gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / max(1, len(tools))
    for i, tool in enumerate(tools):
        values = []
        for key in groups:
            row = next((r for r in rows if (r["workload"], r["series"], r["tool"]) == (*key, tool)), None)
            values.append(row["ratio_vs_ferry"] if row and row["ratio_vs_ferry"] else 0)
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=LABELS[tool])
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("peer time / ferry time (log scale; >1: ferry faster)")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{w}\n{s}" for w, s in groups], fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("Time: rsync over ssh, rclone over sftp against ferry", fontsize=10)
    # Peak RSS of ferry's two processes in the first run without verification
    # (later runs carry what earlier ones left).
    ferry = [r for r in rows if r["tool"] == "ferry" and r.get("peak_rss_mib")]
    for i, who in enumerate(("agent", "hub")):
        mem.bar([g + i * 0.4 for g in range(len(ferry))], [r["peak_rss_mib"][f"{who}_first"] for r in ferry], 0.4, label=who)
    mem.set_xticks([g + 0.2 for g in range(len(ferry))])
    mem.set_xticklabels([f"{r['workload']}\n{r['series']}" for r in ferry], fontsize=7)
    mem.set_ylabel("peak RSS in the first run (MiB)")
    mem.legend(fontsize=8)
    mem.set_title("Ferry's memory: the agent and the hub", fontsize=10)
    fig.suptitle("Across the internet (agent → hub), through ferry-netproxy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
