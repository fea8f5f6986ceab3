// SPDX-License-Identifier: MIT
//! Boots out/ferry.raw in QEMU and checks the appliance from its console.
//! Build the image first: `scripts/build-image` (scripts/test does).

use std::fs;
use std::sync::Mutex;
use std::time::Duration;

use ferry_e2e::{
    appliance_image, copy_sparse, ext4_clean, flip_byte, partition, seconds_after, Firmware,
    Scratch, Vm, VmConfig,
};

/// One VM at a time: TCG on two cores, and guest times must mean something.
static ONE_VM: Mutex<()> = Mutex::new(());

const BOOT: Duration = Duration::from_secs(120);
const READY_LIMIT_S: f64 = 15.0;

fn services_in_manifest() -> Vec<String> {
    let m =
        ferry_image::manifest::Manifest::load(&ferry_e2e::workspace().join("image/manifest.toml"))
            .unwrap();
    m.services.into_iter().map(|s| s.name).collect()
}

/// Waits for "ready", checks the time and that journald and every service
/// of the manifest run.
fn expect_ready(vm: &mut Vm) -> f64 {
    let line = vm.wait_for("ferry-init: ready in ", BOOT).unwrap();
    let secs = seconds_after(&line, "ready in ").expect("a time in the ready line");
    assert!(
        secs < READY_LIMIT_S,
        "ready after {secs} s of guest time (limit {READY_LIMIT_S}): {line}"
    );
    assert!(
        line.contains("systemd-journald"),
        "journald not running: {line}"
    );
    for s in services_in_manifest() {
        assert!(
            line.contains(&s),
            "service {s} not running at ready: {line}"
        );
    }
    vm.wait_for("ferry-init: journald: running", Duration::from_secs(1))
        .unwrap();
    secs
}

fn power_down_cleanly(vm: &mut Vm) {
    let console = vm.console();
    assert!(
        !console.contains(": ended with"),
        "a service died before shutdown:\n{}",
        console
            .lines()
            .filter(|l| l.contains("ended with"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // the button is watched once the system stage is up
    vm.wait_for(
        "power: listening to the ACPI power button",
        Duration::from_secs(30),
    )
    .unwrap();
    vm.powerdown().unwrap();
    vm.wait_for(
        "shutdown: PowerOff requested by the ACPI power button",
        Duration::from_secs(30),
    )
    .unwrap();
    vm.wait_for(
        "shutdown: data partition unmounted cleanly",
        Duration::from_secs(60),
    )
    .unwrap();
    let status = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "QEMU exit status {status}");
}

fn machine_id(vm: &mut Vm) -> String {
    let line = vm
        .wait_for("identity: machine-id ", Duration::from_secs(10))
        .unwrap();
    seconds_after_word(&line, "machine-id ")
}

fn seconds_after_word(line: &str, marker: &str) -> String {
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    rest.split(|c: char| c == ',' || c.is_whitespace())
        .next()
        .unwrap()
        .to_string()
}

fn ctrl_alt_del(vm: &mut Vm) {
    // an ordered reboot; QEMU runs with -no-reboot, so it exits
    vm.wait_for("power: listening", Duration::from_secs(30))
        .unwrap();
    vm.monitor("sendkey ctrl-alt-delete").unwrap();
    vm.wait_for(
        "shutdown: Reboot requested by Ctrl-Alt-Del",
        Duration::from_secs(30),
    )
    .unwrap();
    vm.wait_for(
        "shutdown: data partition unmounted cleanly",
        Duration::from_secs(60),
    )
    .unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
}

fn boot(
    disk: &std::path::Path,
    fw: Firmware,
    dir: &std::path::Path,
    config: Option<&std::path::Path>,
    what: &str,
) -> Vm {
    let mut cfg = VmConfig::new(disk, fw, dir);
    if let Some(c) = config {
        cfg.fw_cfg
            .push(("opt/ferry/config".into(), c.to_path_buf()));
    }
    let mut vm = Vm::start(&cfg).unwrap();
    let ready = expect_ready(&mut vm);
    eprintln!(
        "{what}: ready in {ready} s of guest time, {:.1} s after QEMU started",
        vm.started.elapsed().as_secs_f64()
    );
    vm
}

/// Three boots of one disk:
/// 1. UEFI, first boot, no document: data partition grown and formatted,
///    DHCP on the first adapter, ACPI power button;
/// 2. BIOS, a static configuration offered: accepted, address and gateway
///    set, /data kept, Ctrl-Alt-Del;
/// 3. UEFI, a bad document offered: refused naming key and line, the
///    static configuration stays in force, journal of earlier boots kept.
#[test]
fn three_boots_dhcp_static_bad_config_persistence_and_shutdowns() {
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let image = appliance_image().unwrap();
    let s = Scratch::new("boots").unwrap();
    let disk = s.0.join("disk.raw");
    copy_sparse(&image, &disk).unwrap();

    // boot 1: OVMF, first boot, no configuration document
    let mut vm = boot(&disk, Firmware::Uefi, &s.0, None, "UEFI boot 1");
    vm.wait_for("data: partition /dev/vda4 grown", Duration::from_secs(1))
        .unwrap();
    // root and hash tree found by the PARTUUIDs on the UKI's command line
    let root = vm
        .wait_for("root: PARTUUID=", Duration::from_secs(1))
        .unwrap();
    assert!(
        root.contains(" is /dev/vda2, PARTUUID=") && root.ends_with(" is /dev/vda3"),
        "{root}"
    );
    vm.wait_for(
        "config: in force from default (no document yet)",
        Duration::from_secs(1),
    )
    .unwrap();
    vm.wait_for("hostname: ferry", Duration::from_secs(1))
        .unwrap();
    vm.wait_for(
        "lockdown: none [integrity] confidentiality",
        Duration::from_secs(1),
    )
    .unwrap();
    // QEMU's user-mode DHCP server hands out 10.0.2.15/24 to the first adapter
    let net = vm
        .wait_for("network: eth0 10.0.2.15/24", Duration::from_secs(60))
        .unwrap();
    assert!(net.contains("dhcp from 10.0.2.2"), "{net}");
    // read back from the kernel over netlink
    vm.wait_for(
        "network: status eth0: addresses [10.0.2.15/24]",
        Duration::from_secs(10),
    )
    .unwrap();
    let id1 = machine_id(&mut vm);
    power_down_cleanly(&mut vm);
    drop(vm);
    let data = partition(&disk, "ferry-data").unwrap();
    assert!(
        data.size() > 79 << 30,
        "data partition grown to the disk: {} bytes",
        data.size()
    );
    assert_eq!(
        ext4_clean(&disk, &data).unwrap(),
        Some(true),
        "ext4 left cleanly unmounted"
    );

    // boot 2: SeaBIOS, a good static configuration offered through fw_cfg
    let good = s.0.join("good.yaml");
    fs::write(
        &good,
        "version: 1\nhostname: ferry-e2e\nnetwork:\n  mode: static\n  address: 10.0.2.15/24\n  gateway: 10.0.2.2\n  dns: [10.0.2.3]\n",
    )
    .unwrap();
    let mut vm = boot(&disk, Firmware::Bios, &s.0, Some(&good), "BIOS boot 2");
    vm.wait_for(
        "config: accepted the document offered through fw_cfg",
        Duration::from_secs(1),
    )
    .unwrap();
    vm.wait_for("hostname: ferry-e2e", Duration::from_secs(1))
        .unwrap();
    // /data kept what boot 1 wrote
    vm.wait_for(
        "data: /dev/vda4 was unmounted cleanly last time",
        Duration::from_secs(1),
    )
    .unwrap();
    vm.wait_for("boot 2", Duration::from_secs(1)).unwrap();
    assert_eq!(machine_id(&mut vm), id1, "machine id kept on /data");
    assert!(
        !vm.console().contains("grown from"),
        "the data partition grows once"
    );
    // address and default route applied over netlink (the line follows success)
    vm.wait_for(
        "network: eth0 10.0.2.15/24 gateway 10.0.2.2 (static)",
        Duration::from_secs(30),
    )
    .unwrap();
    vm.wait_for(
        "network: status eth0: addresses [10.0.2.15/24]",
        Duration::from_secs(10),
    )
    .unwrap();
    let c = vm.console();
    assert!(!c.contains(": ended with"), "a service died:\n{c}");
    ctrl_alt_del(&mut vm);
    drop(vm);
    assert_eq!(ext4_clean(&disk, &data).unwrap(), Some(true));

    // boot 3: OVMF, a bad document offered
    let bad = s.0.join("bad.yaml");
    fs::write(&bad, "version: 1\nhostnme: ferry-typo\n").unwrap();
    let mut vm = boot(&disk, Firmware::Uefi, &s.0, Some(&bad), "UEFI boot 3");
    let refused = vm
        .wait_for("config: refused:", Duration::from_secs(1))
        .unwrap();
    assert!(refused.contains("unknown field `hostnme`"), "{refused}");
    assert!(refused.contains("line 2"), "{refused}");
    vm.wait_for(
        "config: the configuration in force is unchanged",
        Duration::from_secs(1),
    )
    .unwrap();
    vm.wait_for("hostname: ferry-e2e", Duration::from_secs(1))
        .unwrap();
    vm.wait_for("boot 3", Duration::from_secs(1)).unwrap();
    let journal = vm.wait_for("journal: ", Duration::from_secs(1)).unwrap();
    assert!(
        !journal.contains("journal: 0 journal"),
        "earlier journals are not on /data: {journal}"
    );
    vm.wait_for(
        "network: eth0 10.0.2.15/24 gateway 10.0.2.2 (static)",
        Duration::from_secs(30),
    )
    .unwrap();
    power_down_cleanly(&mut vm);
    assert_eq!(ext4_clean(&disk, &data).unwrap(), Some(true));
}

/// One flipped byte in the root partition: the initramfs refuses the root
/// and nothing from it runs.
#[test]
fn tampered_root_is_refused() {
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let image = appliance_image().unwrap();
    let s = Scratch::new("tamper").unwrap();
    let disk = s.0.join("disk.raw");
    copy_sparse(&image, &disk).unwrap();
    let root = partition(&image, "ferry-root").unwrap();
    // a byte well inside the erofs image (the partition is it, rounded up to 1 MiB)
    flip_byte(&disk, root.offset() + root.size() / 3).unwrap();

    let mut vm = Vm::start(&VmConfig::new(&disk, Firmware::Bios, &s.0)).unwrap();
    let why = vm
        .wait_for("root file system failed verification", BOOT)
        .unwrap();
    eprintln!("{why}");
    vm.wait_for("refusing to boot", Duration::from_secs(10))
        .unwrap();
    // it powers off, and the system stage never ran
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    let console = vm.console();
    assert!(!console.contains("system stage"), "the tampered root ran");
    assert!(!console.contains("ready in"));
}

/// Two builds from the same sources give the same root file system image.
#[test]
fn root_file_system_is_reproducible() {
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let image = appliance_image().unwrap();
    let out = image.parent().unwrap();
    let report = fs::read_to_string(out.join("ferry.report.txt")).unwrap();
    let first = report
        .lines()
        .find(|l| l.starts_with("root.erofs sha256 "))
        .expect("the report names the root image hash")
        .to_string();
    let s = Scratch::new("rebuild").unwrap();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| ferry_e2e::workspace().join("target"));
    let st = std::process::Command::new(target.join("debug/ferry-image"))
        .current_dir(ferry_e2e::workspace())
        .args(["build", "--manifest", "image/manifest.toml", "--binaries"])
        .arg(target.join("x86_64-unknown-linux-musl/release"))
        .arg("--out")
        .arg(&s.0)
        .status()
        .expect("run ferry-image (built by scripts/build-image)");
    assert!(st.success());
    let again = fs::read_to_string(s.0.join("ferry.report.txt")).unwrap();
    assert!(
        again.lines().any(|l| l == first),
        "rebuild differs: {first} vs\n{again}"
    );
}
