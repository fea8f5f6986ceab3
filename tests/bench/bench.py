#!/usr/bin/env python3
"""Ferry's benchmark: ferry against cp, rsync, rclone and fpsync, side by
side, over real NFS (nfs-ganesha on the host, a QEMU guest with the
appliance's kernel as the client, netem adding round-trip delay), or on the
local disk (--local). Writes report.md, report.json and ratios.png.

Run it through scripts/bench, which builds ferry and installs the peers."""

import argparse
import contextlib
import http.server
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ferrybench import check, ganesha, guest, plan, report, trees, wan  # noqa: E402
from ferrybench.util import BenchError  # noqa: E402

MIB = 1 << 20


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="target/bench", help="where the report goes (default target/bench)")
    p.add_argument("--ferry", default="target/x86_64-unknown-linux-musl/release/ferry", help="the static ferry binary")
    p.add_argument("--local", action="store_true", help="host disk to host disk, no VM")
    p.add_argument("--wan", action="store_true",
                   help="across the internet: ferry's agent -> hub against rsync over ssh and rclone over sftp, "
                        "through ferry-netproxy (report in OUT/wan)")
    p.add_argument("--scale-out", action="store_true",
                   help="--wan: one task on one, two and four agents, each behind its own 25 Mbit/s link "
                        "(report in OUT/scale-out)")
    p.add_argument("--smoke", action="store_true", help="tiny trees, one run: checks that every tool runs and every copy is exact")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the small-file count (1,000 by default, --wan 20,000)")
    p.add_argument("--large-mib", type=int,
                   help="size of each of the 4 large files in MiB (64 by default, --wan 256; the one-connection file is half)")
    p.add_argument("--runs", type=int, default=3, help="runs of each tool (default 3)")
    p.add_argument("--plan", action="store_true",
                   help="--wan: plan each ferry run first (a dry run, untimed) and report its estimate beside the run's time; "
                        "the plan's connections are the run's, warm")
    p.add_argument("--once-over", type=int, default=60, help="a run longer than this many seconds is not repeated (default 60)")
    p.add_argument("--workloads", help="comma-separated workload names to run (default: all)")
    p.add_argument("--tools", help="comma-separated tools to run, e.g. 'cp,ferry' (default: each workload's own)")
    p.add_argument("--series", help="comma-separated series to run, e.g. 'v4.1 20ms' (default: all)")
    p.add_argument("--from-log", action="store_true", help="report from the guest.log of an earlier run in --out (same plan options), without running; "
                        "with --wan, from OUT/wan/report.json")
    return p.parse_args()


def sizes(args):
    if args.smoke:
        return dict(small=dict(files=100, dirs=5), large=dict(files=1, size=40 * MIB), large1=dict(files=1, size=8 * MIB),
                    mixed=dict(files=40, dirs=4, cap=4 * MIB))
    return dict(small=dict(files=int(1000 * args.scale), dirs=20), large=dict(files=4, size=args.large_mib * MIB),
                large1=dict(files=1, size=args.large_mib * MIB // 2), mixed=dict(files=300, dirs=10))


def make_trees(src_root, workloads, args):
    """Generates each workload's source tree; returns {kind: (dir, files)}."""
    sz = sizes(args)
    made = {}
    kinds = {w.kind for w in workloads}
    for kind in sorted(kinds):
        rel = kind
        root = os.path.join(src_root, rel)
        if kind == "small":
            trees.small(root, **sz["small"])
        elif kind == "large":
            trees.large(root, **sz["large"])
        elif kind == "large-1":
            trees.large(root, **sz["large1"])
        elif kind == "mixed":
            trees.mixed(root, **sz["mixed"])
        elif kind.startswith("incr"):
            # One copy per run and tool: each is prepared, changed and synced on its own.
            for r in range(1, args.runs + 1):
                for tool in plan.INCREMENTAL_TOOLS:
                    trees.small(os.path.join(root, f"r{r}.{tool}"), **sz["small"])
        files = sz["small"]["files"] if kind.startswith("incr") else trees.tree_size(root)[0]
        made[kind] = (rel, files)
    return made


def progress(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class GuestLog:
    """Reads the guest's console: results, NFS operation counts, round trips."""

    def __init__(self, workloads, runs):
        self.pending = {
            plan.run_id(w.name, s, tool, r): (w.name, s, tool, r)
            for w in workloads for s in w.series for r in range(1, runs + 1) for tool in w.tools
        }
        self.results, self.ops, self.rtt, self.link, self.series = [], {}, {}, {}, None

    def line(self, line, show=True):
        m = re.match(r"^(SERIES|RTT|LINK|RESULT|SUMMARY|BENCH-ERROR|TOOLOUT|OPS)\b ?(.*)", line)
        if not m:
            return
        kind, rest = m.groups()
        if kind == "OPS":
            rid, mount, when, *pairs = rest.split()
            self.ops[(rid, mount, when)] = {k: int(v) for k, v in (p.split("=") for p in pairs)}
        elif kind == "RESULT":
            rid, rc, ms = re.match(r"(\S+) rc=(\d+) ms=(\d+)", rest).groups()
            if rid not in self.pending:
                return  # a log of another plan
            workload, series, tool, run = self.pending[rid]
            res = dict(id=rid, workload=workload, series=series, tool=tool, run=run, rc=int(rc), ms=int(ms))
            for mount in ("src", "dst"):
                before, after = self.ops.get((rid, mount, "before")), self.ops.get((rid, mount, "after"))
                res[f"{mount}_ops"] = (
                    {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
                    if before is not None and after else None
                )
            self.results.append(res)
            if show:
                progress(f"{workload} | {series} | {plan.LABELS[tool]} | run {run}: {int(ms) / 1000:.2f} s"
                         + ("" if rc == "0" else f" (exit {rc})"))
        elif kind == "SUMMARY":
            rid, _, text = rest.partition(" ")
            run = next((r for r in reversed(self.results) if r["id"] == rid), None)
            if run is not None:
                run["phases"] = ferry_phases(text)
        elif kind == "SERIES":
            self.series = rest
        elif kind == "LINK":
            size, ms = (int(x) for x in rest.split())
            self.link[self.series] = f"{size / MIB / max(ms, 1) * 1000:.1f} MiB/s"
        elif kind == "RTT":
            # "round-trip min/avg/max = a/b/c ms"
            avg = re.search(r"= [\d.]+/([\d.]+)/", rest)
            if avg:
                self.rtt[self.series] = f"{float(avg.group(1)):.1f} ms"
        if show and kind in ("SERIES", "RTT", "LINK", "BENCH-ERROR", "TOOLOUT"):
            progress(f"{kind.lower()} {rest}")


def ferry_phases(summary_json):
    """Milliseconds of each of ferry's phases, from its --json summary
    (PREPARING and TRANSFERRING overlap)."""
    try:
        summary = json.loads(summary_json)
    except ValueError:
        return None
    return {phase: summary.get(f"{phase.capitalize()}Duration") for phase in ("prepare", "transfer", "verify")}


def check_destinations(results, workloads, made, export):
    progress("checking every destination against its source")
    for res in results:
        w = next(x for x in workloads if x.name == res["workload"])
        src = os.path.join(export["src"], made[w.kind][0])
        if w.kind.startswith("incr"):
            src = os.path.join(src, f"r{res['run']}.{res['tool']}")
        res["diffs"] = check.differences(src, os.path.join(export["dst"], res["id"]))
        if res["diffs"]:
            progress(f"MISMATCH {res['id']}: {'; '.join(res['diffs'])}")


def run_nfs(args, workloads, out):
    # Without symlinks: ganesha does not export a path through one.
    work = os.path.realpath(os.path.join(out, "work"))
    export = {"src": os.path.join(work, "export", "src"), "dst": os.path.join(work, "export", "dst")}
    log = GuestLog(workloads, args.runs)
    if args.from_log:
        # Report on a finished (or interrupted) run without running again.
        made = {w.kind: (w.kind, files_of(export["src"], w.kind, args)) for w in workloads}
        with open(os.path.join(out, "guest.log"), errors="replace") as f:
            for line in f:
                log.line(line.rstrip("\n"), show=False)
    else:
        shutil.rmtree(os.path.join(work, "export"), ignore_errors=True)
        for path in export.values():
            os.makedirs(path)
        progress("generating source trees")
        made = make_trees(export["src"], workloads, args)
        with link_probe_server() as link_port:
            script = plan.guest_plan(workloads, made, args.runs, args.once_over, link_port)
            progress("building the guest (Debian cloud kernel, busybox, the tools)")
            vmlinuz, initrd = guest.build_initramfs(work, os.path.join(out, "cache"), args.ferry, script)
            with ganesha.Ganesha(work, export):
                progress("nfs-ganesha serves the exports; booting the guest")
                guest.run(vmlinuz, initrd, os.path.join(out, "guest.log"), log.line)
    check_destinations(log.results, workloads, made, export)
    network = {k: f"{v}; one TCP connection {log.link[k]}" if k in log.link else v for k, v in log.rtt.items()}
    return log.results, {k: v[1] for k, v in made.items()}, network


@contextlib.contextmanager
def link_probe_server():
    """An HTTP server on the host's loopback (the guest's 10.0.2.2): GET /N
    answers N bytes, for the guest to time one TCP connection."""

    class Probe(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            size = int(self.path.strip("/"))
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = os.urandom(1 << 16)
            while size > 0:
                self.wfile.write(block[:size])
                size -= len(block)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def files_of(src_root, kind, args):
    if kind.startswith("incr"):
        return sizes(args)["small"]["files"]
    return trees.tree_size(os.path.join(src_root, kind))[0]


def run_local(args, workloads, out):
    work = os.path.join(out, "local")
    shutil.rmtree(work, ignore_errors=True)
    src_root, dst_root = os.path.join(work, "src"), os.path.join(work, "dst")
    os.makedirs(dst_root)
    progress("generating source trees")
    made = make_trees(src_root, workloads, args)
    results = []
    binaries = {"ferry": os.path.abspath(args.ferry)}
    for w in workloads:
        rel, files = made[w.kind]
        for r in range(1, args.runs + 1):
            for tool in w.tools:
                rid = plan.run_id(w.name, "local", tool, r)
                dst = os.path.join(dst_root, rid)
                src = os.path.join(src_root, rel)
                if w.kind.startswith("incr"):
                    src = os.path.join(src, f"r{r}.{tool}")
                    subprocess.run([binaries["ferry"], "sync", "--verify-mode", "none", src, dst], check=True)
                    if w.kind == "incr-1pct":
                        for i, f in enumerate(sorted(os.path.join(d, n) for d, _, ns in os.walk(src) for n in ns)):
                            if (i + 1) % 100 == 0:
                                with open(f, "r+b") as fh:
                                    fh.write(os.urandom(4096))
                else:
                    os.makedirs(dst)
                cmd = plan.command(tool, src, dst, files)
                cmd[0] = binaries.get(cmd[0], cmd[0])
                subprocess.run(["sync"])
                try:
                    with open("/proc/sys/vm/drop_caches", "w") as f:
                        f.write("3")
                except OSError:
                    pass
                start = time.monotonic()
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=dict(os.environ, RCLONE_CONFIG="/dev/null"))
                ms = int((time.monotonic() - start) * 1000)
                diffs = check.differences(src, dst)
                results.append(dict(id=rid, workload=w.name, series="local", tool=tool, run=r, rc=proc.returncode,
                                    ms=ms, src_ops=None, dst_ops=None, diffs=diffs))
                if tool.startswith("ferry") and proc.stdout:
                    results[-1]["phases"] = ferry_phases(proc.stdout.decode().splitlines()[-1])
                progress(f"{w.name} | local | {plan.LABELS[tool]} | run {r}: {ms / 1000:.2f} s"
                         + ("" if proc.returncode == 0 else f" (exit {proc.returncode}: {proc.stderr.decode()[-200:]})")
                         + (f" MISMATCH {'; '.join(diffs)}" if diffs else ""))
    return results, {k: v[1] for k, v in made.items()}, {}


def filter_plan(args, workloads, tools):
    """--workloads, --series and --tools."""
    if args.workloads:
        wanted = set(args.workloads.split(","))
        workloads = [w for w in workloads if w.name in wanted]
    if args.series:
        wanted = set(args.series.split(","))
        for w in workloads:
            w.series = [s for s in w.series if s in wanted]
        workloads = [w for w in workloads if w.series]
    if args.tools:
        wanted = args.tools.split(",")
        unknown = [t for t in wanted if t not in tools]
        if unknown:
            raise BenchError(f"unknown tool {', '.join(unknown)}: the tools are {', '.join(tools)}")
        for w in workloads:
            w.tools = [t for t in w.tools if t in wanted]
        workloads = [w for w in workloads if w.tools]
    if not workloads:
        raise BenchError("--workloads, --series and --tools left nothing to run")
    return workloads


def main_wan(args):
    out = os.path.join(os.path.abspath(args.out), "scale-out" if args.scale_out else "wan")
    os.makedirs(out, exist_ok=True)
    if args.scale_out:
        workloads = wan.scale_out_workloads(args.smoke)
    else:
        if args.large_mib is None:
            args.large_mib = 256
        workloads = wan.smoke_workloads() if args.smoke else wan.default_workloads()
    workloads = filter_plan(args, workloads, wan.TOOLS)
    if args.smoke:
        args.runs = 1
    here = os.path.dirname(os.path.abspath(args.ferry))
    bins = {name: os.path.join(here, name) for name in ("ferry", "ferry-agent", "ferry-netproxy")}
    for name, path in bins.items():
        if not os.path.exists(path):
            raise BenchError(f"{path} does not exist: build it with scripts/bench, which runs cargo first")
    for tool in ("rsync", "rclone", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is missing: scripts/setup installs it")
    started = time.time()
    if args.from_log:
        # The report again from an earlier run's runs (runs.jsonl: one a line,
        # written as each ended, so a run stopped half-way can be reported).
        with open(os.path.join(out, "runs.jsonl")) as f:
            results = [json.loads(line) for line in f if line.strip()]
        # Files per workload count only for NFS operations per file: none here.
        files = {}
        done = {r["workload"] for r in results}
        workloads = [w for w in workloads if w.name in done]
    else:
        results, files = wan.run(args, workloads, out, bins)
    rows = report.summarize(results, files)
    order = [w.name for w in workloads]
    rows.sort(key=lambda r: (order.index(r["workload"]), list(wan.SERIES).index(r["series"]),
                             wan.TOOLS.index(r["tool"])))
    wan.add_rss(rows, results)
    sz = wan.sizes(args)
    meta = {
        "command": "scripts/bench " + " ".join(sys.argv[1:]),
        "mode": "across the internet: a hub and an agent as processes on this machine, rsync and rclone to an "
                "OpenSSH server on loopback; every connection through ferry-netproxy (half the round trip each way, "
                "the cap each way)",
        "trees": f"small {sz['small']['files']:,} x {sz['small']['size'] // 1024} KiB in {sz['small']['dirs']} directories; "
                 f"large {sz['large']['files']} x {sz['large']['size'] // MIB} MiB; mixed {sz['mixed']['files']} files "
                 "(log-normal sizes); incremental: the small tree, in sync, then nothing or 1 % of files changed",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration": f"{(time.time() - started) / 60:.1f} min",
        "runs": args.runs,
        "once over": f"{args.once_over} s",
    }
    if args.scale_out:
        meta["mode"] = ("several agents on one task: a hub and up to four agents as processes on this machine, each "
                        "agent behind its own ferry-netproxy link (25 Mbit/s each way, 50 ms round trip); rsync over "
                        "ssh through one such link")
        meta["trees"] = (f"small {sz['small']['files']:,} x {sz['small']['size'] // 1024} KiB in {sz['small']['dirs']} "
                         f"directories; large {sz['large']['files']} x {sz['large']['size'] // MIB} MiB in one directory")
        # For the throughput column (not shown in the list).
        meta["_bytes"] = {k: v["files"] * v["size"] for k, v in sz.items() if "size" in v}
    loads = [r["load1"] for r in results if "load1" in r]
    if loads:
        meta["load average (1 min) at the end of the runs"] = \
            f"median {statistics.median(loads):.1f}, highest {max(loads):.1f} ({os.cpu_count()} CPUs)"
    if args.from_log:
        dates = sorted(r["date"] for r in results if "date" in r)
        meta["date"] = f"runs from {dates[0]} to {dates[-1]}" if dates else "unknown"
        del meta["duration"]
    wan.write_report(out, results, rows, meta, files)
    progress(f"report: {os.path.join(out, 'report.md')}")
    print(wan.markdown(rows, meta))
    return completeness(workloads, results)


def completeness(workloads, results):
    """0 when every tool ran in every series and every copy compared equal;
    1, said on stderr, otherwise."""
    expected = sum(len(w.series) * len(w.tools) for w in workloads)
    ran = {(r["workload"], r["series"], r["tool"]) for r in results}
    bad = [r for r in results if r["rc"] != 0 or r["diffs"]]
    if len(ran) < expected or bad:
        print(f"bench: {expected - len(ran)} tool/series pairs did not run, {len(bad)} runs failed or copied wrong",
              file=sys.stderr)
        return 1
    return 0


def main():
    args = parse_args()
    if args.wan:
        return main_wan(args)
    if args.large_mib is None:
        args.large_mib = 64
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    workloads = plan.smoke_workloads() if args.smoke else plan.default_workloads()
    if args.local:
        for w in workloads:
            w.series = ["local"]
        workloads = [w for w in workloads if not w.network_only]
    workloads = filter_plan(args, workloads, plan.TOOLS)
    if args.smoke:
        args.runs = 1
    if not os.path.exists(args.ferry):
        raise BenchError(f"{args.ferry} does not exist: build it with scripts/bench, which runs cargo first")
    started = time.time()
    runner = run_local if args.local else run_nfs
    results, files, rtt = runner(args, workloads, out)
    rows = report.summarize(results, {w.name: files[w.kind] for w in workloads})
    order = [w.name for w in workloads]
    series_order = list(plan.SERIES) + ["local"]
    rows.sort(key=lambda r: (order.index(r["workload"]), series_order.index(r["series"])))
    meta = {
        "command": "scripts/bench " + " ".join(sys.argv[1:]),
        "mode": "local disk" if args.local else "NFS (nfs-ganesha on the host, QEMU/TCG guest with Debian's cloud kernel)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration": f"{(time.time() - started) / 60:.1f} min",
        "runs": args.runs,
        "once over": f"{args.once_over} s",
    }
    if rtt:
        meta["measured round trip (ping, average) and one TCP connection's throughput, server to guest"] = \
            ", ".join(f"{k}: {v}" for k, v in rtt.items())
    report.write(out, results, rows, meta)
    progress(f"report: {os.path.join(out, 'report.md')}")
    print(report.markdown(rows, meta))
    return completeness(workloads, results)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(2)
