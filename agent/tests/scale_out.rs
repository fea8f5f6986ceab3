// SPDX-License-Identifier: MIT
//! Several agents on one task: a hub and four agents as processes, each
//! agent behind its own link (a proxy). One execution is shared by the
//! three agents online; one is killed with SIGKILL halfway, and a fourth
//! joins while it runs. The execution ends SUCCESS, the destination equals
//! the source, and the hub shows what each agent did and the units leased
//! again.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use daemons::{activate_as, agent_id, start_task, wait_for, Agent, Hub};
use ferry_netproxy::{Faults, Proxy};

/// 48 directories of 40 files of 16 KiB (30 MiB), two levels deep.
fn make_source(root: &Path) -> u64 {
    let mut bytes = 0;
    for d in 0..8 {
        for s in 0..6 {
            let dir = root.join(format!("d{d}/s{s}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..40u64 {
                let data = common::bytes(d * 1000 + s * 100 + f, 16 << 10);
                bytes += data.len() as u64;
                std::fs::write(dir.join(format!("f{f}")), data).unwrap();
            }
        }
    }
    bytes
}

#[test]
fn agents_share_an_execution_survive_one_killed_and_take_one_joining() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(&tmp.path().join("hub"), 1800);
    let link = || {
        Proxy::start(
            hub.addr,
            Faults {
                delay: Duration::from_millis(5),
                ..Faults::default()
            },
        )
    };
    let proxies: Vec<Proxy> = (0..4).map(|_| link()).collect();
    let mut agents: Vec<Agent> = (0..4)
        .map(|i| Agent::start(&tmp.path().join(format!("agent{i}"))))
        .collect();
    let mut ids = Vec::new();
    for (i, (agent, proxy)) in agents.iter().zip(&proxies).enumerate() {
        activate_as(&hub, agent, proxy.addr, &format!("a{i}"));
        ids.push(agent_id(&hub, &format!("a{i}")));
    }
    // The fourth is off when the execution starts.
    agents[3].d.stop(libc::SIGTERM);

    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    let total = make_source(&src);
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
            json!({"Type": "AGENT", "AgentId": ids[0], "AdditionalAgentIds": ids[1..],
                    "Location": {"Type": "LOCAL", "Path": src}}),
        ),
    );
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["AdditionalAgentIds"].as_array().unwrap().len(), 3, "{s}");
    let (status, task) = hub.d.api(
        "POST",
        "/v1/tasks",
        Some(json!({
            "Name": "scale-out",
            "SourceLocationId": s["LocationId"],
            "DestinationLocationId": d["LocationId"],
            // One budget for all: slow enough to act while it runs.
            "Options": {"VerifyMode": "POINT_IN_TIME_CONSISTENT", "BytesPerSecond": 3 << 20},
        })),
    );
    assert_eq!(status, 201, "{task}");
    let task_id = task["TaskId"].as_str().unwrap();
    let id = start_task(&hub, task_id, json!({}));
    let execution = || hub.d.api("GET", &format!("/v1/executions/{id}"), None).1;

    wait_for("a quarter of the bytes", Duration::from_secs(60), || {
        execution()["Counters"]["BytesTransferred"]
            .as_u64()
            .unwrap_or(0)
            > total / 4
    });
    let killed = agents[1].d.stop(libc::SIGKILL);
    assert!(!killed.success());
    // The fourth comes online and takes work.
    agents[3] = Agent::restart(&tmp.path().join("agent3"));

    let deadline = Instant::now() + Duration::from_secs(180);
    let e: Value = loop {
        let e = execution();
        if e["Status"] == "SUCCESS" || e["Status"] == "ERROR" {
            break e;
        }
        assert!(Instant::now() < deadline, "{e}\n{}", hub.d.log());
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", hub.d.log());
    assert!(common::compare_trees(&src, &dst).is_empty());
    assert!(common::temp_files(&dst).is_empty());

    let done = |i: usize| {
        e["Result"]["Agents"][&ids[i]]["UnitsDone"]
            .as_u64()
            .unwrap_or(0)
    };
    for i in [0, 2, 3] {
        assert!(done(i) > 0, "a{i} did no unit: {}", e["Result"]);
    }
    // The killed agent's units were leased again, and the report says so.
    let released = e["Result"]["Agents"][&ids[1]]["UnitsReleased"]
        .as_u64()
        .unwrap_or(0);
    assert!(released > 0, "{}", e["Result"]);
    let listed = e["Result"]["ReleasedUnits"].as_array().unwrap();
    assert_eq!(listed.len() as u64, released, "{}", e["Result"]);
    assert!(listed.iter().all(|u| u["AgentId"] == ids[1]));
    // Every unit (the root, 8 and 48 directories) transferred and verified once.
    let units: u64 = (0..4).map(done).sum();
    assert_eq!(units, 2 * (1 + 8 + 48), "{}", e["Result"]);
    // Each agent's part, for Prometheus too.
    let bytes = |i: usize| {
        e["Result"]["Agents"][&ids[i]]["BytesTransferred"]
            .as_u64()
            .unwrap()
    };
    assert!(bytes(0) > 0 && bytes(2) > 0, "{}", e["Result"]);
    let mut s = UnixStream::connect(hub.d.socket()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    let line = format!("agent_id=\"{}\"}} {released}", ids[1]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_agent_units_released{") && l.ends_with(&line)),
        "{metrics}"
    );
    // 1,920 files, 56 directories and the root verified.
    let entries = 1920 + 56 + 1;
    assert!(
        e["Counters"]["FilesVerified"].as_u64().unwrap() >= entries,
        "{e}"
    );
}

/// Agents that reach the destination themselves (NFS to EFS over a VPN,
/// say): the data never crosses the hub, which only leases the units. The
/// hub is killed halfway and started again: its units start again from the
/// root, what was done is found done, and the execution ends SUCCESS.
#[test]
fn agents_that_reach_the_destination_write_it_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let bins = daemons::Binaries::cargo();
    let mut hub = Hub::start_on(&bins, &tmp.path().join("hub"), 1800, None, port);
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    make_source(&src);
    let writes = format!(
        "  hub_local_sources: [{}]\n  hub_local_destinations: [{}]\n",
        src.display(),
        dst.display()
    );
    let agents: Vec<Agent> = (0..2)
        .map(|i| Agent::start_with(&tmp.path().join(format!("agent{i}")), &writes, None))
        .collect();
    let mut ids = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        activate_as(&hub, agent, hub.addr, &format!("a{i}"));
        ids.push(agent_id(&hub, &format!("a{i}")));
    }
    let location = |agents: &[String], path: &Path| {
        let (status, l) = hub.d.api(
            "POST",
            "/v1/locations",
            Some(
                json!({"Type": "AGENT", "AgentId": agents[0], "AdditionalAgentIds": agents[1..],
                        "Location": {"Type": "LOCAL", "Path": path}}),
            ),
        );
        assert_eq!(status, 201, "{l}");
        l["LocationId"].as_str().unwrap().to_string()
    };
    let task = |name: &str, s: &str, d: &str| {
        hub.d.api(
            "POST",
            "/v1/tasks",
            Some(
                json!({"Name": name, "SourceLocationId": s, "DestinationLocationId": d,
                        "Options": {"VerifyMode": "POINT_IN_TIME_CONSISTENT",
                                    "BytesPerSecond": 4 << 20}}),
            ),
        )
    };
    let s = location(&ids, &src);
    // Other agents than the source's: refused, saying why.
    let elsewhere = location(&ids[..1], &dst);
    let (status, refused) = task("elsewhere", &s, &elsewhere);
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["Message"].as_str().unwrap().contains("same agents"),
        "{refused}"
    );
    // Nested on the agents' side: refused too.
    let inside = location(&ids, &src.join("d1"));
    assert_eq!(task("nested", &s, &inside).0, 400);

    let d = location(&ids, &dst);
    let (status, t) = task("site-to-site", &s, &d);
    assert_eq!(status, 201, "{t}");
    let id = start_task(&hub, t["TaskId"].as_str().unwrap(), json!({}));
    wait_for("a quarter of the bytes", Duration::from_secs(60), || {
        let (_, e) = hub.d.api("GET", &format!("/v1/executions/{id}"), None);
        e["Counters"]["BytesTransferred"].as_u64().unwrap_or(0) > 30 << 18
    });
    hub.d.stop(libc::SIGKILL);
    hub = Hub::start_on(&bins, &tmp.path().join("hub"), 1800, None, port);
    let e = daemons::wait_execution(&hub.d, &id, Duration::from_secs(180));
    assert_eq!(e["Status"], "SUCCESS", "{e}\n{}", hub.d.log());
    assert!(hub.d.log().contains("taken up again"), "{}", hub.d.log());
    assert!(common::compare_trees(&src, &dst).is_empty());
    for agent_id in &ids {
        let done = e["Result"]["Agents"][agent_id]["UnitsDone"]
            .as_u64()
            .unwrap();
        assert!(done > 0, "{}", e["Result"]);
    }
}
