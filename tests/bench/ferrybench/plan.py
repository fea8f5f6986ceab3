"""What the benchmark runs: workloads, network series and tools, and the
shell script the guest executes."""

import re
from dataclasses import dataclass, field
from typing import Optional

# Ferry against the peers; `ferry-verify` shows what verification costs.
TOOLS = ["cp", "rsync", "rclone", "fpsync", "ferry", "ferry-verify"]
INCREMENTAL_TOOLS = ["rsync", "rclone", "fpsync", "ferry"]  # cp has no incremental mode

LABELS = {
    "cp": "cp -a",
    "rsync": "rsync -a",
    "rclone": "rclone sync --transfers 64 --checkers 64",
    "fpsync": "fpsync -n 16",
    "ferry": "ferry sync --verify-mode none",
    "ferry-verify": "ferry sync (verification on)",
}


def command(tool, src, dst, files):
    """The command line of `tool` copying directory `src` into `dst`."""
    if tool == "cp":
        return ["cp", "-a", f"{src}/.", f"{dst}/"]
    if tool == "rsync":
        return ["rsync", "-a", f"{src}/", f"{dst}/"]
    if tool == "rclone":
        return ["rclone", "sync", "--transfers", "64", "--checkers", "64", src, dst]
    if tool == "fpsync":
        # fpsync puts 2,000 files in a partition by default: size the
        # partitions so 16 jobs really run.
        per_job = max(1, -(-files // 16))
        return ["dash", "/usr/bin/fpsync", "-n", "16", "-f", str(per_job), f"{src}/", f"{dst}/"]
    # --json: the last event is the summary with each phase's duration
    # (read after the timed run; a few hundred bytes a file on a tmpfs).
    if tool == "ferry":
        return ["ferry", "sync", "--json", "--verify-mode", "none", src, dst]
    if tool == "ferry-verify":
        return ["ferry", "sync", "--json", src, dst]
    raise ValueError(tool)


@dataclass(frozen=True)
class Series:
    """How the guest reaches the server: NFS version, added delay, mount options."""

    name: str
    vers: str = "4.1"
    delay_ms: int = 0
    nconnect: Optional[int] = None

    def mount_options(self):
        if self.vers == "3":
            # No rpcbind or lockd in the guest; ganesha answers NFSACL with EIO.
            opts = "vers=3,nolock,proto=tcp,port=2049,mountport=20048,mountproto=tcp,noacl"
        else:
            opts = f"vers={self.vers}"
        if self.nconnect:
            opts += f",nconnect={self.nconnect}"
        return opts + ",addr=10.0.2.2"


@dataclass
class Workload:
    name: str
    kind: str  # small | large | large-1 | mixed | incr-none | incr-1pct
    series: list
    tools: list = field(default_factory=lambda: list(TOOLS))
    # About the network (connections per mount): left out of --local.
    network_only: bool = False


SERIES = {
    s.name: s
    for s in [
        Series("v4.1 0ms", delay_ms=0),
        Series("v4.1 5ms", delay_ms=5),
        Series("v4.1 20ms", delay_ms=20),
        Series("v4.1 20ms nconnect=8", delay_ms=20, nconnect=8),
        Series("v4.1 20ms nconnect=16", delay_ms=20, nconnect=16),
        Series("v3 0ms", vers="3", delay_ms=0),
    ]
}


def default_workloads():
    """The default plan, sized to finish in about 45 minutes on 2 cores
    under TCG: latency-bound peers at 20 ms cost minutes per run."""
    peers = ["cp", "rsync", "rclone", "fpsync", "ferry"]
    # fpsync splits a file list among rsync jobs: four files give it nothing to split.
    large = ["cp", "rsync", "rclone", "ferry", "ferry-verify"]
    return [
        Workload("small", "small", ["v4.1 0ms", "v4.1 5ms", "v4.1 20ms", "v3 0ms"], peers),
        Workload("small+verify", "small", ["v4.1 5ms"], ["ferry", "ferry-verify"]),
        Workload("mixed", "mixed", ["v4.1 0ms"], TOOLS),
        # The agent mounts with nconnect=8: the peers get the same mounts.
        Workload("large", "large", ["v4.1 0ms", "v4.1 20ms nconnect=8"], large),
        # What more connections give, and what one connection caps everyone at.
        Workload("large, 16 connections", "large", ["v4.1 20ms nconnect=16"], ["cp", "ferry"], network_only=True),
        Workload("large-1, one connection", "large-1", ["v4.1 20ms"], ["cp", "ferry"], network_only=True),
        Workload("incr-none", "incr-none", ["v4.1 5ms"], INCREMENTAL_TOOLS),
        Workload("incr-1pct", "incr-1pct", ["v4.1 5ms"], INCREMENTAL_TOOLS),
    ]


def smoke_workloads():
    return [
        Workload("small", "small", ["v4.1 0ms", "v3 0ms"], TOOLS),
        # One file large enough to be copied (and read back) as ranges.
        Workload("large", "large", ["v4.1 0ms"], ["cp", "ferry", "ferry-verify"]),
        Workload("incr-none", "incr-none", ["v4.1 0ms"], INCREMENTAL_TOOLS),
        Workload("incr-1pct", "incr-1pct", ["v4.1 0ms"], INCREMENTAL_TOOLS),
    ]


def run_id(workload, series, tool, run):
    """`workload.series.tool.rN`, with nothing but letters, digits, `.`,
    `-` and `_`: a directory name, and in shell variable names below."""
    slug = lambda s: re.sub(r"[^A-Za-z0-9.-]+", "_", s.replace("=", ""))
    return f"{slug(workload)}.{slug(series)}.{tool}.r{run}"


GUEST_FUNCTIONS = r"""
ops() {
    awk -v mp="$1" '$1 == "device" { on = ($5 == mp); per = 0; next }
        on && /per-op statistics/ { per = 1; next }
        on && per && NF > 2 && $2 > 0 { sub(":", "", $1); printf "%s=%s ", $1, $2 }' /proc/self/mountstats
}
mount_all() {
    umount /mnt/src 2>/dev/null; umount /mnt/dst 2>/dev/null
    mount -t nfs -o "$1" 10.0.2.2:/src /mnt/src || echo "BENCH-ERROR mount src $1"
    mount -t nfs -o "$1" 10.0.2.2:/dst /mnt/dst || echo "BENCH-ERROR mount dst $1"
}
delay() {
    /usr/bin/tc qdisc del dev eth0 root 2>/dev/null
    [ "$1" -gt 0 ] && /usr/bin/tc qdisc add dev eth0 root netem delay "$1"ms
}
# run ID SLOWKEY CMD...: one timed run, with NFS operation counts.
run() {
    id=$1; key=$2; shift 2
    if [ -n "$(eval echo \$slow_$key)" ]; then echo "SKIPPED $id"; return; fi
    sync; echo 3 > /proc/sys/vm/drop_caches
    echo "OPS $id src before $(ops /mnt/src)"
    echo "OPS $id dst before $(ops /mnt/dst)"
    s=$(/usr/bin/date +%s%N)
    "$@" > /tmp/out 2>&1
    rc=$?
    e=$(/usr/bin/date +%s%N)
    echo "OPS $id src after $(ops /mnt/src)"
    echo "OPS $id dst after $(ops /mnt/dst)"
    ms=$(( (e - s) / 1000000 ))
    echo "RESULT $id rc=$rc ms=$ms"
    [ $rc -ne 0 ] && tail -n 5 /tmp/out | sed "s|^|TOOLOUT $id |"
    case "$1" in */ferry) tail -n 1 /tmp/out | sed "s|^|SUMMARY $id |" ;; esac
    [ $ms -gt $ONCE_OVER_MS ] && eval slow_$key=1
    return 0
}
# link BYTES: one TCP connection's throughput from the host to the guest
# (the direction of NFS reads), through the same network path as NFS.
link() {
    s=$(/usr/bin/date +%s%N)
    wget -q -O /dev/null "http://10.0.2.2:$LINK_PORT/$1" || echo "BENCH-ERROR link probe"
    e=$(/usr/bin/date +%s%N)
    echo "LINK $1 $(( (e - s) / 1000000 ))"
}
# change_1pct DIR N: rewrites every Nth file (by sorted name) of DIR.
change_1pct() {
    find "$1" -type f | sort | awk -v n="$2" 'NR % n == 0' | while read -r f; do
        /usr/bin/dd if=/dev/urandom of="$f" bs=4096 count=1 conv=notrunc status=none
    done
}
"""


# What one TCP connection carries from the server to the guest, per series.
LINK_PROBE_BYTES = 8 << 20


def guest_plan(workloads, trees, runs, once_over_s, link_port):
    """The shell script the guest runs. `trees` maps a workload kind to
    (source dir under /src, file count); `link_port` is the host's port
    that serves the link probe."""
    lines = ["#!/bin/sh", GUEST_FUNCTIONS, f"ONCE_OVER_MS={once_over_s * 1000}", f"LINK_PORT={link_port}"]
    by_series = {}
    for w in workloads:
        for s in w.series:
            by_series.setdefault(s, []).append(w)
    for series_name, ws in by_series.items():
        series = SERIES[series_name]
        lines.append(f'echo "SERIES {series_name}"')
        lines.append(f'mount_all "{series.mount_options()}"')
        lines.append(f"delay {series.delay_ms}")
        lines.append('ping -c 3 10.0.2.2 | tail -n 1 | sed "s/^/RTT /"')
        lines.append(f"link {LINK_PROBE_BYTES}")
        for w in ws:
            src_rel, files = trees[w.kind]
            for r in range(1, runs + 1):
                for tool in w.tools:
                    rid = run_id(w.name, series_name, tool, r)
                    # A shell variable name: letters, digits and `_` only.
                    key = re.sub(r"\W", "_", rid.rsplit(".", 1)[0])
                    dst = f"/mnt/dst/{rid}"
                    if w.kind.startswith("incr"):
                        # Its own source copy, synced beforehand (untimed, by ferry:
                        # every tool compares size and time, which ferry keeps).
                        src = f"/mnt/src/{src_rel}/r{r}.{tool}"
                        lines.append(f"mkdir -p {dst}")
                        lines.append(f"/usr/bin/ferry sync --verify-mode none {src} {dst} >/dev/null 2>&1 || echo BENCH-ERROR prep {rid}")
                        if w.kind == "incr-1pct":
                            lines.append(f"change_1pct {src} 100")
                    else:
                        src = f"/mnt/src/{src_rel}"
                        lines.append(f"mkdir -p {dst}")
                    argv = command(tool, src, dst, files)
                    # Absolute paths: busybox's shell runs its own applets
                    # (a busybox cp) before anything in PATH.
                    argv[0] = f"/usr/bin/{argv[0]}"
                    cmd = " ".join(f"'{a}'" for a in argv)
                    lines.append(f"run {rid} {key} {cmd}")
    lines.append('echo "PLAN-END"')
    return "\n".join(lines) + "\n"
