// SPDX-License-Identifier: MIT
//! The appliance's ports as a second host on its network sees them. A hub
//! appliance and an agent appliance each get a second adapter on a bridge
//! in a network namespace of the test's own; from that namespace `nmap`
//! scans every TCP port of each, in each state, and the open ports are
//! compared with what the state allows (README, "Security"):
//!
//! | state | open |
//! | --- | --- |
//! | agent, not activated | 80 (the activation page) |
//! | agent, activated | none |
//! | agent, support channel open | 22 |
//! | hub | 443 |
//!
//! The agent is activated with the hub over that network, as on a
//! customer's. Needs root, /dev/net/tun and `nmap`; build the image first:
//! `scripts/build-image` (scripts/test does).

#[path = "common/activation.rs"]
mod activation;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use activation::Operator;
use ferry_e2e::netns::{Tap, TapNet};
use ferry_e2e::ssh::keygen;
use ferry_e2e::{appliance_image, copy_sparse, free_port, Firmware, Scratch, Vm, VmConfig};

const TOKEN: &str = "e2e-operator-token-0002";
/// The scanning host, and the appliances' second adapters (a documentation
/// network: it exists only on the test's bridge).
const SCANNER: &str = "192.0.2.1/24";
const HUB: &str = "192.0.2.3";
const AGENT: &str = "192.0.2.2";
const BOOT: Duration = Duration::from_secs(300);

/// Every TCP port of `addr` that answers a SYN, as `nmap` in the
/// namespace finds them. Fails unless the host answered at all (ARP on the
/// bridge), so a scan that reached nothing cannot pass as "all closed".
fn open_ports(net: &TapNet, addr: &str) -> BTreeSet<u16> {
    let out = net
        .command("nmap")
        .args(["-n", "-sS", "-p-", "-T4", "--min-rate", "2000"])
        .args(["--max-retries", "2", "-oG", "-", addr])
        .output()
        .expect("run nmap (package nmap)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Status: Up"),
        "nmap did not find {addr} on the test network:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `Host: 192.0.2.2 ()	Ports: 80/open/tcp//http///, 443/closed/tcp//https///`
    text.lines()
        .filter_map(|l| l.split("Ports: ").nth(1))
        .flat_map(|ports| ports.split('\t').next().unwrap_or("").split(", "))
        .filter_map(|p| {
            let mut fields = p.trim().split('/');
            let port = fields.next()?.parse().ok()?;
            (fields.next()? == "open").then_some(port)
        })
        .collect()
}

fn ports(list: &[u16]) -> BTreeSet<u16> {
    list.iter().copied().collect()
}

/// Boots `disk` with `doc`, its second adapter on `tap`, one host port
/// forwarded to a guest port.
fn boot(net: &TapNet, tap: Tap, disk: &Path, dir: &Path, doc: &str, fwd: String) -> Vm {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("ferry.yaml");
    fs::write(&path, doc).unwrap();
    let mut cfg = VmConfig::new(disk, Firmware::Uefi, dir);
    cfg.fw_cfg.push(("opt/ferry/config".into(), path));
    cfg.hostfwd = vec![fwd];
    cfg.tap = Some(tap.clone());
    let vm = Vm::start(&cfg).unwrap();
    net.attach(&tap.name).unwrap();
    vm
}

fn second_adapter(address: &str) -> String {
    format!("network:\n  interface: eth0\n  adapters:\n    eth1: {{ mode: static, address: {address}/24 }}\n")
}

#[test]
fn only_the_ports_each_state_needs_are_open_to_the_network() {
    let image = appliance_image().unwrap();
    let s = Scratch::new("ports").unwrap();
    let work = &s.0;
    let mut net = TapNet::new("ports", SCANNER).unwrap();
    let public = keygen(&work.join("engineer"));
    let (hub_port, agent_port) = (free_port(), free_port());

    let hub_disk = work.join("hub.raw");
    copy_sparse(&image, &hub_disk).unwrap();
    let hub_doc = format!(
        "version: 2\nhostname: ferry-hub\nrole: hub\n{}daemon:\n  operator_token: {TOKEN}\n  hub_names: [{HUB}]\n",
        second_adapter(HUB)
    );
    let tap = net.add_tap().unwrap();
    let mut hub = boot(
        &net,
        tap,
        &hub_disk,
        &work.join("hub"),
        &hub_doc,
        format!("tcp:127.0.0.1:{hub_port}-:443"),
    );

    let agent_disk = work.join("agent.raw");
    copy_sparse(&image, &agent_disk).unwrap();
    let agent_doc = |support: &str| {
        format!(
            "version: 2\nhostname: ferry-site\n{}support:\n  public_key: \"{public}\"\n{support}",
            second_adapter(AGENT)
        )
    };
    let tap = net.add_tap().unwrap();
    let mut agent = boot(
        &net,
        tap,
        &agent_disk,
        &work.join("agent"),
        &agent_doc(""),
        format!("tcp:127.0.0.1:{agent_port}-:80"),
    );
    for (vm, address) in [(&mut hub, HUB), (&mut agent, AGENT)] {
        vm.wait_for("ferry-init: ready in ", BOOT).unwrap();
        vm.wait_for(&format!("network: eth1 {address}/24 (static)"), BOOT)
            .unwrap();
    }

    let operator = Operator::connect(&hub, hub_port, TOKEN);
    assert_eq!(open_ports(&net, HUB), ports(&[443]), "a hub");
    assert_eq!(
        open_ports(&net, AGENT),
        ports(&[80]),
        "an agent before activation"
    );

    // Activated over the test network: the agent reaches the hub at HUB.
    operator.activate(&agent, agent_port, HUB, "site");
    assert_eq!(
        open_ports(&net, AGENT),
        ports(&[]),
        "an activated agent:\n{}",
        agent.console()
    );

    // The support channel opened by the document at the next boot (on a
    // new tap: the old one now lives in the namespace).
    agent.power_off().unwrap();
    drop(agent);
    let tap = net.add_tap().unwrap();
    let mut agent = boot(
        &net,
        tap,
        &agent_disk,
        &work.join("agent-support"),
        &agent_doc("  open_minutes: 10\n"),
        format!("tcp:127.0.0.1:{agent_port}-:80"),
    );
    agent.wait_for("ferry-init: ready in ", BOOT).unwrap();
    agent
        .wait_for(&format!("network: eth1 {AGENT}/24 (static)"), BOOT)
        .unwrap();
    agent.wait_for("support-dropbear: started", BOOT).unwrap();
    assert_eq!(
        open_ports(&net, AGENT),
        ports(&[22]),
        "an activated agent with the support channel open:\n{}",
        agent.console()
    );

    for vm in [&mut hub, &mut agent] {
        vm.power_off().unwrap();
    }
}
