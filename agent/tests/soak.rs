// SPDX-License-Identifier: MIT
//! The soak (issue #14): a hub and two agents, each agent through a
//! fault-injecting proxy of its own (added delay, a bandwidth cap,
//! connections killed at random with a FIN or a reset, short outages), for
//! FERRY_SOAK_MINUTES (default 60). Round after round both source trees
//! change (files and directories made, changed, deleted, renamed, a few big
//! files among many small ones) and both tasks run at once; every execution
//! that succeeds must leave its destination equal to its source, with no
//! temporary file. The hub is killed and started again twice (SIGKILL at a
//! third of the time, SIGTERM at two thirds) while executions run; the next
//! executions must finish what those left. The memory (VmRSS, VmHWM) and open
//! files of the three processes are sampled all along and must stay flat.
//!
//! Not in CI: `scripts/soak [MINUTES]` runs it (`--ignored --nocapture`) and
//! writes its summary to FERRY_SOAK_REPORT (JSON; docs/soak.md has a run's).

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use daemons::{activate_as, agent_id, free_port, make_task, start_task, Agent, Binaries, Hub};
use ferry_netproxy::{Faults, Proxy};

/// A process's memory and open files at one moment.
#[derive(Clone, Debug)]
struct Sample {
    /// Seconds since the start.
    t: f64,
    /// "hub#1" (the hub's first life), "agent-a", "agent-b".
    who: String,
    rss_kib: u64,
    /// Of the RSS, what is anonymous (the heap).
    anon_kib: u64,
    hwm_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32, who: &str, t: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        t,
        who: who.to_string(),
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        hwm_kib: field("VmHWM:"),
        fds,
        threads: field("Threads:"),
    })
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Every regular file and directory below `root` (not `root`), relative.
fn walk(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dirs.push(r.clone());
                todo.push(r);
            } else if t.is_file() {
                files.push(r);
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn tree_size(root: &Path) -> u64 {
    walk(root)
        .0
        .iter()
        .map(|f| std::fs::symlink_metadata(root.join(f)).map_or(0, |m| m.len()))
        .sum()
}

fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> Option<&'a T> {
    (!v.is_empty()).then(|| &v[rng.random_range(0..v.len())])
}

/// Content of `len` bytes: text that compresses, or random bytes.
fn content(rng: &mut StdRng, len: usize) -> Vec<u8> {
    if rng.random_bool(0.5) {
        let line = format!(
            "{:x} a line of text that compresses well\n",
            rng.random::<u32>()
        );
        line.repeat(len / line.len() + 1).into_bytes()[..len].to_vec()
    } else {
        common::bytes(rng.random(), len)
    }
}

/// A new name in a random existing directory (or the root).
fn new_path(rng: &mut StdRng, root: &Path, dirs: &[PathBuf], stem: &str) -> PathBuf {
    let dir = if rng.random_bool(0.2) {
        PathBuf::new()
    } else {
        pick(rng, dirs).cloned().unwrap_or_default()
    };
    let p = dir.join(format!("{stem}-{:08x}", rng.random::<u32>()));
    if root.join(&p).exists() {
        dir.join(format!("{stem}-{:016x}", rng.random::<u64>()))
    } else {
        p
    }
}

/// How a round changed a tree.
#[derive(Default, Debug)]
struct Changes {
    created: u32,
    modified: u32,
    deleted: u32,
    renamed: u32,
    dirs_made: u32,
    dirs_renamed: u32,
    dirs_deleted: u32,
    links: u32,
    big: u32,
}

/// Changes a source tree: files and directories made, changed, deleted and
/// renamed; now and then a big file; symlinks and hard links. `extra_big`
/// adds a big file (so that executions are still running when the hub is
/// killed). The tree stays within a few thousand files and ~250 MiB.
fn mutate(rng: &mut StdRng, root: &Path, extra_big: Option<usize>) -> Changes {
    let mut c = Changes::default();
    let (files, dirs) = walk(root);
    let size = tree_size(root);
    let crowded = files.len() > 2500;
    // Directories: a few made, sometimes one renamed or deleted.
    for _ in 0..rng.random_range(0..3) {
        let p = new_path(rng, root, &dirs, "dir");
        std::fs::create_dir_all(root.join(p)).unwrap();
        c.dirs_made += 1;
    }
    let (files, dirs) = if rng.random_bool(0.3) && !dirs.is_empty() {
        let d = pick(rng, &dirs).unwrap().clone();
        if rng.random_bool(0.5) || crowded {
            std::fs::remove_dir_all(root.join(&d)).unwrap();
            c.dirs_deleted += 1;
        } else {
            // Within its parent or elsewhere (not into itself).
            let to = new_path(rng, root, &dirs, "moved");
            if !to.starts_with(&d) {
                std::fs::rename(root.join(&d), root.join(&to)).unwrap();
                c.dirs_renamed += 1;
            }
        }
        walk(root)
    } else {
        (files, dirs)
    };
    // Small files made.
    let make = if crowded { 5 } else { rng.random_range(10..60) };
    for _ in 0..make {
        let len = match rng.random_range(0..10) {
            0 => 0,
            1..=6 => rng.random_range(1..16 << 10),
            _ => rng.random_range(16 << 10..512 << 10),
        };
        let p = new_path(rng, root, &dirs, "f");
        let data = content(rng, len);
        common::write(&root.join(p), &data);
        c.created += 1;
    }
    // Files changed: rewritten, appended to, cut short, changed in place.
    for _ in 0..rng.random_range(5..30).min(files.len()) {
        let f = root.join(pick(rng, &files).unwrap());
        if !f.exists() {
            continue;
        }
        let len = std::fs::metadata(&f).unwrap().len();
        use std::io::{Seek, SeekFrom, Write};
        match rng.random_range(0..4) {
            0 => {
                let n = rng.random_range(0..64 << 10);
                let data = content(rng, n);
                std::fs::write(&f, data).unwrap();
            }
            1 => {
                let n = rng.random_range(1..32 << 10);
                let data = content(rng, n);
                let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
                h.write_all(&data).unwrap();
            }
            2 => {
                let h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
                h.set_len(len / 2).unwrap();
            }
            _ => {
                let n = rng.random_range(1..4096);
                let data = content(rng, n);
                let mut h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
                h.seek(SeekFrom::Start(rng.random_range(0..=len))).unwrap();
                h.write_all(&data).unwrap();
            }
        }
        c.modified += 1;
    }
    // Files deleted and renamed.
    let deletes = if crowded { 60 } else { rng.random_range(3..25) };
    for _ in 0..deletes.min(files.len()) {
        let f = root.join(pick(rng, &files).unwrap());
        if std::fs::remove_file(f).is_ok() {
            c.deleted += 1;
        }
    }
    for _ in 0..rng.random_range(2..15).min(files.len()) {
        let f = root.join(pick(rng, &files).unwrap());
        let to = root.join(new_path(rng, root, &dirs, "renamed"));
        if f.exists() && std::fs::rename(&f, to).is_ok() {
            c.renamed += 1;
        }
    }
    // Now and then a symlink or a hard link.
    if rng.random_bool(0.3) {
        let (files, dirs) = walk(root);
        if let Some(f) = pick(rng, &files) {
            let at = new_path(rng, root, &dirs, "link");
            if rng.random_bool(0.5) {
                std::os::unix::fs::symlink(f, root.join(at)).unwrap();
            } else {
                std::fs::hard_link(root.join(f), root.join(at)).unwrap();
            }
            c.links += 1;
        }
    }
    // A few bigger files: made, rewritten or deleted, within ~250 MiB.
    let (files, dirs) = walk(root);
    let bigs: Vec<_> = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("big-"))
        .collect();
    if size > 200 << 20 || bigs.len() > 10 {
        for f in bigs.iter().take(3) {
            let _ = std::fs::remove_file(root.join(f));
            c.deleted += 1;
        }
    } else if rng.random_bool(0.25) {
        let len = rng.random_range(2 << 20..24 << 20);
        let p = match (rng.random_bool(0.5), bigs.first()) {
            (true, Some(f)) => f.to_path_buf(),
            _ => new_path(rng, root, &dirs, "big"),
        };
        common::write(&root.join(p), &common::bytes(rng.random(), len));
        c.big += 1;
    }
    if let Some(len) = extra_big {
        let p = new_path(rng, root, &dirs, "big");
        common::write(&root.join(p), &common::bytes(rng.random(), len));
        c.big += 1;
    }
    c
}

/// One agent, its proxy, its tree and the task of the hub that copies it.
struct Site {
    name: &'static str,
    agent: Agent,
    proxy: Proxy,
    src: PathBuf,
    dst: PathBuf,
    task: String,
    /// Whether this round's kills are resets (else FINs).
    reset: bool,
}

fn faults(reset: bool) -> Faults {
    Faults {
        delay: Duration::from_millis(20),
        bytes_per_second: Some(24 << 20),
        kill_after: Some((64 << 10, 8 << 20)),
        kills: u64::MAX,
        reset,
    }
}

/// A start that makes the destination a mirror: what the source deleted goes.
fn mirror() -> Value {
    json!({"OverrideOptions": {"PreserveDeletedFiles": "REMOVE"}})
}

/// An execution of the hub as the hub has it now.
fn execution(hub: &Hub, id: &str) -> Value {
    hub.d.api("GET", &format!("/v1/executions/{id}"), None).1
}

fn ended(e: &Value) -> bool {
    e["Status"] == "SUCCESS" || e["Status"] == "ERROR"
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

#[test]
#[ignore]
fn soak() {
    let minutes = env_f64("FERRY_SOAK_MINUTES", 60.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let report = std::env::var_os("FERRY_SOAK_REPORT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak/summary.json"),
        PathBuf::from,
    );
    let seed = std::env::var("FERRY_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = StdRng::seed_from_u64(seed);
    // Samples every 30 s (more often in a short run).
    let every = Duration::from_secs_f64((total.as_secs_f64() / 120.0).clamp(5.0, 30.0));
    let tmp = tempfile::Builder::new()
        .prefix("ferry-soak")
        .tempdir()
        .unwrap();
    // Copies: the shared target directory may be rebuilt during the run.
    let bins = Binaries::copied_to(&tmp.path().join("bin"));
    eprintln!(
        "soak: {minutes} min, seed {seed}, in {}, report {}",
        tmp.path().display(),
        report.display()
    );

    let hub_dir = tmp.path().join("hub");
    let hub_port = free_port();
    let mut hub = Hub::start_on(&bins, &hub_dir, 1800, None, hub_port);
    let mut hub_life = 1;
    let sources = format!("  hub_local_sources: [{}]\n", tmp.path().display());
    let mut sites: Vec<Site> = ["a", "b"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let agent = Agent::start_as(
                &bins,
                &tmp.path().join(format!("agent-{name}")),
                &sources,
                None,
            );
            let proxy = Proxy::start(hub.addr, Faults::default());
            activate_as(&hub, &agent, proxy.addr, &format!("site-{name}"));
            let src = tmp.path().join(format!("src-{name}"));
            let dst = tmp.path().join(format!("dst-{name}"));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::create_dir_all(&dst).unwrap();
            daemons::make_tree(&src, 8 << 20);
            let id = agent_id(&hub, &format!("site-{name}"));
            // One compressed with 4 connections, one not with 8.
            let task = make_task(&hub, &id, &src, &dst, i == 0, 4 + 4 * i as u32);
            Site {
                name,
                agent,
                proxy,
                src,
                dst,
                task,
                reset: i == 0,
            }
        })
        .collect();

    let started = Instant::now();
    let secs = || started.elapsed().as_secs_f64();
    let mut samples: Vec<Sample> = Vec::new();
    let mut rounds: Vec<Value> = Vec::new();
    let mut restarts: Vec<Value> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut outages = 0u32;
    let mut next_sample = Instant::now();
    let take_samples = |hub: &Hub, life: u32, sites: &[Site], samples: &mut Vec<Sample>| {
        let t = started.elapsed().as_secs_f64();
        samples.extend(sample(hub.d.child.id(), &format!("hub#{life}"), t));
        for s in sites {
            samples.extend(sample(
                s.agent.d.child.id(),
                &format!("agent-{}", s.name),
                t,
            ));
        }
    };
    // The hub is stopped with SIGKILL at a third of the run, SIGTERM at two.
    let mut restarts_due = vec![
        (total.mul_f64(2.0 / 3.0), libc::SIGTERM, "SIGTERM"),
        (total / 3, libc::SIGKILL, "SIGKILL"),
    ];
    let write_report = |rounds: &[Value],
                        samples: &[Sample],
                        restarts: &[Value],
                        outages: u32,
                        sites: &[Site],
                        extra: Value| {
        let summary = json!({
            "Minutes": minutes,
            "Seed": seed,
            "SampleSeconds": every.as_secs_f64(),
            "Faults": format!("{:?}", faults(true)),
            "Elapsed": started.elapsed().as_secs_f64(),
            "Rounds": rounds,
            "Restarts": restarts,
            "Outages": outages,
            "Proxies": sites.iter().map(|s| {
                let st = s.proxy.stats();
                json!({"Site": s.name,
                    "Connections": st.connections.load(Ordering::Relaxed),
                    "Killed": st.killed.load(Ordering::Relaxed),
                    "BytesUp": st.bytes_up.load(Ordering::Relaxed),
                    "BytesDown": st.bytes_down.load(Ordering::Relaxed)})
            }).collect::<Vec<_>>(),
            "Samples": samples.iter().map(|s| json!({"T": s.t, "Who": s.who,
                "RssKiB": s.rss_kib, "AnonKiB": s.anon_kib, "HwmKiB": s.hwm_kib, "Fds": s.fds, "Threads": s.threads}))
                .collect::<Vec<_>>(),
            "Result": extra,
        });
        std::fs::create_dir_all(report.parent().unwrap()).unwrap();
        std::fs::write(&report, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    };

    let mut round = 0u32;
    while started.elapsed() < total {
        round += 1;
        let round_start = secs();
        let restart = restarts_due
            .last()
            .filter(|(at, _, _)| started.elapsed() >= *at)
            .copied();
        if restart.is_some() {
            restarts_due.pop();
        }
        let mut changes = Vec::new();
        for s in &mut sites {
            // The biggest file of the run in the first round too: the
            // warm-up has had the largest transfer before memory is judged.
            let big = (round == 1 || restart.is_some()).then_some(96 << 20);
            let c = mutate(&mut rng, &s.src, big);
            changes.push(format!("{c:?}"));
            // FINs on one link, resets on the other; they swap each round.
            s.reset = !s.reset;
            s.proxy.set(faults(s.reset));
        }
        let killed_before: Vec<u64> = sites
            .iter()
            .map(|s| s.proxy.stats().killed.load(Ordering::Relaxed))
            .collect();
        // Now and then an outage on one link, some time into the round.
        let outage = rng.random_bool(0.12).then(|| {
            (
                rng.random_range(0..sites.len()),
                Duration::from_millis(rng.random_range(500..4000)),
                Duration::from_millis(rng.random_range(2000..6000)),
            )
        });
        let round_started = Instant::now();
        let mut ids: Vec<String> = sites
            .iter()
            .map(|s| start_task(&hub, &s.task, mirror()))
            .collect();
        let mut done: Vec<Option<Value>> = vec![None; sites.len()];
        let mut outage_done = outage.is_none();
        let mut restarted = restart.is_none();
        // Executions of this round that an interrupted one left to finish.
        let mut retried: Vec<Vec<Value>> = vec![Vec::new(); sites.len()];
        loop {
            if !outage_done {
                let (i, after, length) = outage.unwrap();
                if round_started.elapsed() >= after {
                    sites[i].proxy.outage(length);
                    outages += 1;
                    outage_done = true;
                }
            }
            let now: Vec<Value> = ids.iter().map(|id| execution(&hub, id)).collect();
            if !restarted {
                let (_, signal, name) = restart.unwrap();
                // In the middle of a transfer (or, failing that, after a minute).
                let moving = now.iter().any(|e| {
                    e["Status"] == "TRANSFERRING"
                        && e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 8 << 20
                });
                if moving || round_started.elapsed() > Duration::from_secs(60) {
                    let at = secs();
                    let statuses: Vec<Value> = now.iter().map(|e| e["Status"].clone()).collect();
                    take_samples(&hub, hub_life, &sites, &mut samples);
                    let down = Instant::now();
                    let status = hub.d.stop(signal);
                    let old_log = std::fs::read_to_string(hub_dir.join("daemon.log"))
                        .unwrap_or_default()
                        .len();
                    std::thread::sleep(Duration::from_secs(2));
                    hub = Hub::start_on(&bins, &hub_dir, 1800, None, hub_port);
                    hub_life += 1;
                    let after: Vec<Value> = ids.iter().map(|id| execution(&hub, id)).collect();
                    eprintln!(
                        "soak: {at:.0} s: hub stopped with {name} ({status}) while the executions were {statuses:?}; up again after {:.1} s (life {hub_life}); the executions now {:?}",
                        down.elapsed().as_secs_f64(),
                        after.iter().map(|e| (&e["Status"], &e["Result"]["ErrorDetail"])).collect::<Vec<_>>()
                    );
                    restarts.push(json!({"T": at, "Round": round, "Signal": name,
                        "ExitStatus": status.to_string(),
                        "ExecutionsBefore": statuses,
                        "ExecutionsAfter": after.iter().map(|e| json!({"Status": e["Status"], "Result": e["Result"]})).collect::<Vec<_>>(),
                        "DownSeconds": down.elapsed().as_secs_f64(), "LogOffset": old_log}));
                    restarted = true;
                    take_samples(&hub, hub_life, &sites, &mut samples);
                    continue;
                }
            }
            for (i, e) in now.into_iter().enumerate() {
                if done[i].is_some() || !ended(&e) {
                    continue;
                }
                if e["Status"] == "ERROR" && restart.is_some() && restarted && retried[i].len() < 3
                {
                    // Interrupted by the restart: the next execution must finish.
                    retried[i].push(json!({"Status": e["Status"], "Result": e["Result"], "Counters": e["Counters"]}));
                    ids[i] = start_task(&hub, &sites[i].task, mirror());
                    continue;
                }
                done[i] = Some(e);
            }
            if done.iter().all(Option::is_some) {
                break;
            }
            if round_started.elapsed() > Duration::from_secs(1200) {
                let s: Vec<_> = ids.iter().map(|id| execution(&hub, id)).collect();
                problems.push(format!(
                    "round {round}: executions did not end in 20 min: {s:?}"
                ));
                write_report(
                    &rounds,
                    &samples,
                    &restarts,
                    outages,
                    &sites,
                    json!({"Problems": problems}),
                );
                panic!(
                    "round {round}: the executions did not end in 20 minutes: {s:?}\nhub log:\n{}",
                    tail(&hub.d.log())
                );
            }
            if Instant::now() >= next_sample {
                take_samples(&hub, hub_life, &sites, &mut samples);
                next_sample += every;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // Each success left its destination equal to its source.
        let mut line = format!(
            "round {round:4} {:7.1} s {:6.1} s",
            round_start,
            round_started.elapsed().as_secs_f64()
        );
        let mut execs = Vec::new();
        for (i, s) in sites.iter().enumerate() {
            let e = done[i].as_ref().unwrap();
            let c = &e["Counters"];
            let killed = s.proxy.stats().killed.load(Ordering::Relaxed) - killed_before[i];
            let status = e["Status"].as_str().unwrap_or("?").to_string();
            let mut diffs = Vec::new();
            if status == "SUCCESS" {
                diffs = common::compare_trees(&s.src, &s.dst);
                diffs.extend(
                    common::temp_files(&s.dst)
                        .into_iter()
                        .map(|t| format!("temporary file {t}")),
                );
                if !diffs.is_empty() {
                    problems.push(format!(
                        "round {round}: {}: SUCCESS but the trees differ: {:?}",
                        s.name,
                        &diffs[..diffs.len().min(20)]
                    ));
                }
            } else {
                problems.push(format!(
                    "round {round}: {}: {status} {} {}",
                    s.name, e["Result"]["ErrorCode"], e["Result"]["ErrorDetail"]
                ));
            }
            line += &format!(
                " | {} {}{} {} files {} KiB killed {}{}",
                s.name,
                status,
                if retried[i].is_empty() {
                    String::new()
                } else {
                    format!(" (after {} interrupted)", retried[i].len())
                },
                c["FilesTransferred"],
                c["BytesTransferred"].as_u64().unwrap_or(0) >> 10,
                killed,
                if s.reset { " rst" } else { " fin" },
            );
            if !diffs.is_empty() {
                line += &format!(" DIFFERS ({} differences)", diffs.len());
            }
            execs.push(
                json!({"Site": s.name, "Status": status, "Result": e["Result"],
                "Counters": c, "Killed": killed, "Reset": s.reset, "Interrupted": retried[i],
                "Differences": diffs.len(), "Changes": changes[i]}),
            );
        }
        take_samples(&hub, hub_life, &sites, &mut samples);
        let now: BTreeMap<_, _> = samples
            .iter()
            .rev()
            .take(3)
            .map(|s| (s.who.clone(), s.rss_kib >> 10))
            .collect();
        line += &format!(" | RSS MiB {now:?}");
        if let Some((i, _, length)) = outage {
            line += &format!(" | outage {} {:.1} s", sites[i].name, length.as_secs_f64());
        }
        if let Some((_, _, name)) = restart {
            line += &format!(" | hub {name}");
        }
        eprintln!("{line}");
        rounds.push(json!({"Round": round, "T": round_start,
            "Seconds": round_started.elapsed().as_secs_f64(), "Executions": execs,
            "Outage": outage.map(|(i, _, l)| json!({"Site": sites[i].name, "Seconds": l.as_secs_f64()})),
            "Restart": restart.map(|r| r.2)}));
        write_report(
            &rounds,
            &samples,
            &restarts,
            outages,
            &sites,
            json!({"Problems": problems}),
        );
    }

    // A last execution each over a clean link: trees equal.
    for s in &sites {
        s.proxy.set(Faults::default());
    }
    let ids: Vec<String> = sites
        .iter()
        .map(|s| start_task(&hub, &s.task, mirror()))
        .collect();
    let mut last = Vec::new();
    for (s, id) in sites.iter().zip(&ids) {
        let e = daemons::wait_execution(&hub.d, id, Duration::from_secs(1200));
        let mut diffs = common::compare_trees(&s.src, &s.dst);
        diffs.extend(common::temp_files(&s.dst));
        eprintln!(
            "final {}: {} {} files {} KiB; {} differences; source {} files, {} MiB",
            s.name,
            e["Status"],
            e["Counters"]["FilesTransferred"],
            e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) >> 10,
            diffs.len(),
            walk(&s.src).0.len(),
            tree_size(&s.src) >> 20
        );
        if e["Status"] != "SUCCESS" || !diffs.is_empty() {
            problems.push(format!(
                "final {}: {} {}; differences {:?}",
                s.name,
                e["Status"],
                e["Result"],
                &diffs[..diffs.len().min(20)]
            ));
        }
        last.push(
            json!({"Site": s.name, "Status": e["Status"], "Counters": e["Counters"],
            "Differences": diffs.len(), "SourceFiles": walk(&s.src).0.len(),
            "SourceBytes": tree_size(&s.src)}),
        );
    }
    take_samples(&hub, hub_life, &sites, &mut samples);
    // No daemon panicked (the hub's log holds all its lives).
    let logs = std::iter::once(("hub", hub.d.log()))
        .chain(sites.iter().map(|s| (s.name, s.agent.d.log())));
    for (who, log) in logs {
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        if !panics.is_empty() {
            problems.push(format!("{who}: {} panics: {panics:?}", panics.len()));
        }
    }

    // Memory flat: the median RSS of the last quarter against that of the
    // second (after the warm-up), for each agent and for the hub's last
    // life (its own quarters); open files likewise.
    let mut memory = Vec::new();
    let mut whos: Vec<String> = samples.iter().map(|s| s.who.clone()).collect();
    whos.sort();
    whos.dedup();
    for who in &whos {
        let mine: Vec<&Sample> = samples.iter().filter(|s| &s.who == who).collect();
        let (from, to) = (mine[0].t, mine[mine.len() - 1].t);
        let quarter = |q: f64| -> Vec<&Sample> {
            let lo = from + (to - from) * (q - 1.0) / 4.0;
            let hi = from + (to - from) * q / 4.0;
            mine.iter()
                .filter(|s| s.t >= lo && s.t <= hi)
                .copied()
                .collect()
        };
        let (q2, q4) = (quarter(2.0), quarter(4.0));
        let rss = |q: &[&Sample]| median(q.iter().map(|s| s.rss_kib).collect());
        let fds = |q: &[&Sample]| median(q.iter().map(|s| s.fds).collect());
        let (r2, r4, f2, f4) = (rss(&q2), rss(&q4), fds(&q2), fds(&q4));
        let last_life = !who.starts_with("hub#") || *who == format!("hub#{hub_life}");
        let limit = r2 + r2 / 4 + (16 << 10);
        let flat = r4 <= limit && f4 <= f2 + 8;
        let max_rss = mine.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let hwm = mine.iter().map(|s| s.hwm_kib).max().unwrap_or(0);
        eprintln!(
            "memory {who}: {:.0}..{:.0} s, {} samples; RSS median Q2 {} MiB, Q4 {} MiB (limit {} MiB), max {} MiB, HWM {} MiB; fds Q2 {f2}, Q4 {f4}; threads last {}{}",
            from,
            to,
            mine.len(),
            r2 >> 10,
            r4 >> 10,
            limit >> 10,
            max_rss >> 10,
            hwm >> 10,
            mine[mine.len() - 1].threads,
            if !last_life { " (an earlier life: reported, not judged)" } else if flat { ": flat" } else { ": GREW" }
        );
        if last_life && q2.len() >= 2 && q4.len() >= 2 && !flat {
            problems.push(format!(
                "{who}: memory grew: RSS median {} KiB in the second quarter, {} KiB in the last; fds {f2} then {f4}",
                r2, r4
            ));
        }
        memory.push(
            json!({"Who": who, "From": from, "To": to, "Samples": mine.len(),
            "RssQ2KiB": r2, "RssQ4KiB": r4, "LimitKiB": limit, "FdsQ2": f2, "FdsQ4": f4,
            "MaxRssKiB": max_rss, "HwmKiB": hwm, "Judged": last_life, "Flat": flat}),
        );
    }
    write_report(
        &rounds,
        &samples,
        &restarts,
        outages,
        &sites,
        json!({"Problems": problems, "Final": last, "Memory": memory, "HubLives": hub_life}),
    );
    eprintln!(
        "soak: {round} rounds in {:.1} min, {} restarts, {outages} outages, {} connections killed; {} problems",
        started.elapsed().as_secs_f64() / 60.0,
        restarts.len(),
        sites
            .iter()
            .map(|s| s.proxy.stats().killed.load(Ordering::Relaxed))
            .sum::<u64>(),
        problems.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
