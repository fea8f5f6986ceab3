"""Turns run results into report.md, report.json and a chart of ratios."""

import json
import os
import statistics
import subprocess
import sys

from .plan import LABELS


def _ops_by_name(run):
    """NFS operations of a run on both mounts, by operation. Two exports of
    one file system share the client's superblock, and then its statistics:
    count them once."""
    src, dst = run["src_ops"] or {}, run["dst_ops"] or {}
    if src == dst:
        return dict(src)
    return {op: src.get(op, 0) + dst.get(op, 0) for op in src.keys() | dst.keys()}


def _run_ops(run):
    return sum(_ops_by_name(run).values())


def _median_present(values):
    """The median of the values that are there; None when none is."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results, files_per_workload):
    """Groups runs by (workload, series, tool): median time, runs, NFS
    operations per file; and per peer the median of run-by-run ratios."""
    groups = {}
    for r in results:
        groups.setdefault((r["workload"], r["series"], r["tool"]), []).append(r)
    rows = []
    for (workload, series, tool), runs in groups.items():
        ok = [r for r in runs if r["rc"] == 0 and not r["diffs"]]
        times = [r["ms"] for r in ok]
        files = files_per_workload.get(workload, 0)
        ops = [_run_ops(r) for r in ok if r.get("src_ops") is not None]
        phases = [r["phases"] for r in ok if r.get("phases")]
        rows.append({
            "phases_ms": {p: _median_present(x.get(p) for x in phases) for p in phases[0]} if phases else None,
            "ops_per_file": _median_ops(ok, files),
            "workload": workload,
            "series": series,
            "tool": tool,
            "runs": len(runs),
            "good_runs": len(ok),
            "median_ms": statistics.median(times) if times else None,
            "nfs_ops_per_file": round(statistics.median(ops) / files, 1) if ops and files else None,
            "failed": [f"run {r['run']}: rc={r['rc']} {'; '.join(r['diffs'])}" for r in runs if r not in ok],
        })
    # Ratios peer/ferry, run by run in the same series.
    by_run = {(r["workload"], r["series"], r["tool"], r["run"]): r for r in results if r["rc"] == 0 and not r["diffs"]}
    for row in rows:
        ratios = []
        for run in range(1, 100):
            peer = by_run.get((row["workload"], row["series"], row["tool"], run))
            ferry = by_run.get((row["workload"], row["series"], "ferry", run))
            if peer and ferry and ferry["ms"] > 0:
                ratios.append(peer["ms"] / ferry["ms"])
        if not ratios and row["median_ms"]:
            # The peer ran once (it took long): against ferry's median.
            ferry_row = next((x for x in rows if (x["workload"], x["series"], x["tool"]) ==
                              (row["workload"], row["series"], "ferry")), None)
            if ferry_row and ferry_row["median_ms"]:
                ratios.append(row["median_ms"] / ferry_row["median_ms"])
        row["ratio_vs_ferry"] = round(statistics.median(ratios), 2) if ratios else None
    # The NFS benchmark's order; the WAN one sorts its rows itself.
    order = list(LABELS)
    rows.sort(key=lambda x: order.index(x["tool"]) if x["tool"] in order else len(order))
    return rows


def _median_ops(runs, files):
    """Median count of each NFS operation per file over the runs."""
    counted = [_ops_by_name(r) for r in runs if r.get("src_ops") is not None]
    if not counted or not files:
        return None
    names = set().union(*counted)
    per_file = {op: statistics.median(c.get(op, 0) for c in counted) / files for op in names}
    return {op: round(n, 2) for op, n in sorted(per_file.items(), key=lambda x: -x[1]) if n >= 0.01}


def fmt_ms(ms):
    if ms is None:
        return "—"
    return f"{ms / 1000:.2f} s" if ms < 100_000 else f"{ms / 1000:.0f} s"


def workload_sections(rows, header, cells):
    """A section per workload, in the order of `rows`: a table with the
    columns `header` (two of text, the rest numbers) and `cells(row)` for
    each of its rows, then its failed runs."""
    out = []
    for w in dict.fromkeys(r["workload"] for r in rows):
        out += [f"## {w}", "", "| " + " | ".join(header) + " |",
                "| --- | --- | " + " | ".join("---:" for _ in header[2:]) + " |"]
        out += ["| " + " | ".join(cells(r)) + " |" for r in rows if r["workload"] == w]
        failures = [f"- {r['tool']} in {r['series']}: {f}" for r in rows if r["workload"] == w for f in r["failed"]]
        if failures:
            out += ["", "Failed runs (not counted):", *failures]
        out.append("")
    return out


def common_cells(r, labels):
    """Series, tool, median, good runs and the ratio to ferry, as shown."""
    ratio = "—" if r["ratio_vs_ferry"] is None else f"{r['ratio_vs_ferry']:.2f}x"
    runs = f"{r['good_runs']}" + (f" ({r['runs'] - r['good_runs']} failed)" if r["good_runs"] != r["runs"] else "")
    return [r["series"], labels.get(r["tool"], r["tool"]), fmt_ms(r["median_ms"]), runs, ratio]


def markdown(rows, meta):
    out = ["# Ferry benchmark", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += ["", "Times are medians of the runs (a run longer than the once-over limit is not repeated: `runs` = 1;",
            "latency-bound runs vary little).",
            "Ratios are peer time / ferry time, run by run in the same series; above 1 means ferry is faster.",
            "NFS operations per file count every operation on both mounts (from the guest's /proc/self/mountstats).", ""]
    out += workload_sections(
        rows, ["series", "tool", "median", "runs", "peer/ferry", "NFS ops/file"],
        lambda r: common_cells(r, LABELS) + ["—" if r["nfs_ops_per_file"] is None else f"{r['nfs_ops_per_file']}"])
    out += _phases_table(rows) + _ops_table(rows)
    return "\n".join(out)


def _phases_table(rows):
    ferry = [r for r in rows if r["phases_ms"]]
    if not ferry:
        return []
    out = ["## Where ferry's time goes", "",
           "Medians of ferry's own phase timings (its summary); PREPARING and TRANSFERRING overlap, so",
           "the transfer column is the time from the start of the scan to the last file.", "",
           "| workload | series | tool | prepare | transfer | verify | total |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in ferry:
        p = r["phases_ms"]
        out.append(f"| {r['workload']} | {r['series']} | {LABELS.get(r['tool'], r['tool'])} | {fmt_ms(p['prepare'])} "
                   f"| {fmt_ms(p['transfer'])} | {fmt_ms(p['verify'])} | {fmt_ms(r['median_ms'])} |")
    return out + [""]


def _ops_table(rows):
    counted = [r for r in rows if r["ops_per_file"]]
    if not counted:
        return []
    out = ["## NFS operations per file, by operation", "",
           "Each operation is at least one round trip; per file, both mounts together, medians over the runs.", "",
           "| workload | series | tool | operations per file |", "| --- | --- | --- | --- |"]
    for r in counted:
        ops = ", ".join(f"{op} {n:g}" for op, n in r["ops_per_file"].items())
        out.append(f"| {r['workload']} | {r['series']} | {LABELS.get(r['tool'], r['tool'])} | {ops} |")
    return out + [""]


def write(out_dir, results, rows, meta):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({"meta": meta, "summary": rows, "runs": results}, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(rows, meta))
    chart = os.path.join(out_dir, "ratios.png")
    try:
        _chart(rows, chart)
    except ImportError:
        print("bench: matplotlib is missing (scripts/setup installs it): no chart", file=sys.stderr)


def _chart(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [t for t in LABELS if t not in ("ferry",)]
    groups = []
    for r in rows:
        key = (r["workload"], r["series"])
        if key not in groups:
            groups.append(key)
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(groups)), 5))
    width = 0.8 / len(peers)
    for i, tool in enumerate(peers):
        values = []
        for key in groups:
            row = next((r for r in rows if (r["workload"], r["series"], r["tool"]) == (*key, tool)), None)
            values.append(row["ratio_vs_ferry"] if row and row["ratio_vs_ferry"] else 0)
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=LABELS[tool])
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("peer time / ferry time (log scale; >1: ferry faster)")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    # One line per part: long workload and series names would run into each other.
    labels = [f"{w}\n{s}".replace(", ", "\n").replace(" nconnect", "\nnconnect") for w, s in groups]
    ax.set_xticklabels(labels, fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("Ferry against cp, rsync, rclone and fpsync")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
