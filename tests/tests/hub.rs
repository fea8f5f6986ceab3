// SPDX-License-Identifier: MIT
//! Two appliances from one image: a hub (`role: hub`) and an agent.
//! nfs-ganesha on the host exports a source tree (the agent's) and an empty
//! destination (the hub's, as EFS would be). The agent is activated through
//! its port 80 from the host, the key confirmed through the hub's API; the
//! locations and the task are declared on the hub only; the execution runs
//! on the agent, which sends the data to the hub over mutual TLS; it ends
//! SUCCESS and the destination equals the source.
//! Build the image first: `scripts/build-image` (scripts/test does).

#[path = "common/activation.rs"]
mod activation;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use activation::Operator;
use ferry_e2e::nfs::{Ganesha, HOST_FROM_GUEST};
use ferry_e2e::{
    appliance_image, copy_sparse, free_port, guestfwd_relay, tree_differences, Firmware, Scratch,
    Vm, VmConfig,
};
use hyper::Method;
use serde_json::{json, Value};

/// Ports of our own: agent_nfs.rs (perhaps running at once) takes 12049.
const NFS_PORT: u16 = 12149;
const MOUNT_PORT: u16 = 12148;
const TOKEN: &str = "e2e-operator-token-0001";
/// The hub as the agent reaches it (a guestfwd to the hub's forwarded 443).
const HUB_FROM_AGENT: &str = "10.0.2.100";

fn write_source(src: &Path) {
    for d in 0..4 {
        let dir = src.join(format!("dir{d}/sub"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            fs::write(
                dir.join(format!("f{f}.txt")),
                format!("file {d}/{f}\n").repeat(f * 10 + 1),
            )
            .unwrap();
        }
    }
    let big: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("large.bin"), big).unwrap();
    symlink("dir0/sub/f0.txt", src.join("link")).unwrap();
}

#[test]
fn an_agent_appliance_pairs_with_a_hub_appliance_and_syncs_through_it() {
    let image = appliance_image().unwrap();
    let s = Scratch::new("hub-pair").unwrap();
    let work = &s.0;
    let src = work.join("source");
    let dst = work.join("dest");
    write_source(&src);
    fs::create_dir_all(&dst).unwrap();
    let server = Ganesha::start(
        work,
        &[("source", src.as_path()), ("dest", dst.as_path())],
        NFS_PORT,
        MOUNT_PORT,
    )
    .unwrap();
    let opts = server.mount_options();
    let (hub_port, agent_port) = (free_port(), free_port());

    let boot = |name: &str, doc: String, fwd: Vec<String>, guestfwd: Vec<String>| {
        let disk = work.join(format!("{name}.raw"));
        copy_sparse(&image, &disk).unwrap();
        let dir = work.join(name);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ferry.yaml");
        fs::write(&path, doc).unwrap();
        let mut cfg = VmConfig::new(&disk, Firmware::Uefi, &dir);
        cfg.fw_cfg.push(("opt/ferry/config".into(), path));
        cfg.restrict = false;
        cfg.hostfwd = fwd;
        cfg.guestfwd = guestfwd;
        Vm::start(&cfg).unwrap()
    };
    let mut hub = boot(
        "hub",
        format!("version: 2\nhostname: ferry-hub\nrole: hub\ndaemon:\n  operator_token: {TOKEN}\n  hub_names: [{HUB_FROM_AGENT}]\n"),
        vec![format!("tcp:127.0.0.1:{hub_port}-:443")],
        Vec::new(),
    );
    let mut agent = boot(
        "agent",
        "version: 2\nhostname: ferry-site\n".into(),
        vec![format!("tcp:127.0.0.1:{agent_port}-:80")],
        vec![guestfwd_relay(work, &format!("{HUB_FROM_AGENT}:443"), hub_port).unwrap()],
    );
    for vm in [&mut hub, &mut agent] {
        vm.wait_for("ferry-init: ready in ", Duration::from_secs(300))
            .unwrap();
    }

    let operator = Operator::connect(&hub, hub_port, TOKEN);
    let call = |method: Method, path: &str, body: Option<Value>| operator.call(method, path, body);
    // Activation through the agent's port 80, as a browser or Terraform would.
    let agent_id = operator.activate(&agent, agent_port, HUB_FROM_AGENT, "site");
    let agents = call(Method::GET, "/v1/agents", None);
    assert_eq!(agents["Agents"][0]["Status"], "ONLINE", "{agents}");

    // Everything declared on the hub: its NFS destination, the agent's NFS source.
    let nfs = |export: &str| json!({"Type": "NFS", "Server": HOST_FROM_GUEST, "Export": export, "MountOptions": opts});
    let d = call(Method::POST, "/v1/locations", Some(nfs("/dest")));
    let mut source = json!({"Type": "AGENT", "AgentId": agent_id, "Location": nfs("/source")});
    source["Compress"] = true.into();
    let s_loc = call(Method::POST, "/v1/locations", Some(source));
    let task = call(
        Method::POST,
        "/v1/tasks",
        Some(
            json!({"Name": "site-to-hub", "SourceLocationId": s_loc["LocationId"], "DestinationLocationId": d["LocationId"]}),
        ),
    );
    let task_id = task["TaskId"].as_str().unwrap();
    let e = call(
        Method::POST,
        &format!("/v1/tasks/{task_id}/start"),
        Some(json!({})),
    );
    let exec_id = e["TaskExecutionId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(900);
    let e = loop {
        let e = call(Method::GET, &format!("/v1/executions/{exec_id}"), None);
        if e["Status"] == "SUCCESS" || e["Status"] == "ERROR" {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "{e}\nhub:\n{}\nagent:\n{}",
            hub.console(),
            agent.console()
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    assert_eq!(e["Status"], "SUCCESS", "{e}\nagent:\n{}", agent.console());
    eprintln!("across the appliances: {}", e["Counters"]);
    drop(server);
    let diffs = tree_differences(&src, &dst).unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");

    for vm in [&mut hub, &mut agent] {
        vm.powerdown().unwrap();
    }
    for vm in [&mut hub, &mut agent] {
        vm.wait_exit(Duration::from_secs(120)).unwrap();
    }
}
