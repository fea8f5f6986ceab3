// SPDX-License-Identifier: MIT
//! The appliance's agent against real NFS: nfs-ganesha on the host exports
//! a source tree and four destinations; a configuration document declares
//! NFS locations with versions 3, 4.0 and 4.1 and one task per version,
//! started at boot, and a task into an EFS location with encryption in
//! transit: a mount target whose TLS side is stunnel4 (a certificate from a
//! CA the test makes, trusted through `daemon.efs_ca_certificates`) in
//! front of ganesha. Each execution must end in SUCCESS with the
//! destination equal to the source (compared here, on the host); a second
//! boot, after a few files changed, must transfer only those. A second EFS
//! mount target shows a certificate for the same name from another CA: its
//! task must end in ERROR, naming the certificate, and write nothing.
//! Build the image first: `scripts/build-image` (scripts/test does).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ferry_e2e::nfs::{Ganesha, HOST_FROM_GUEST};
use ferry_e2e::stunnel::{Service, Stunnel, TestCa};
use ferry_e2e::{
    appliance_image, copy_sparse, guestfwd_relay, tree_differences, Firmware, Scratch, Vm, VmConfig,
};

/// Ports of our own, so a benchmark's server on 2049 does not collide.
const NFS_PORT: u16 = 12049;
const MOUNT_PORT: u16 = 12048;

/// NFS version of each task's two locations, by task name.
const TASKS: [(&str, &str); 3] = [("copy-v3", "3"), ("copy-v40", "4.0"), ("copy-v41", "4.1")];

/// The task into EFS over TLS, and the one whose mount target is an impostor.
const EFS_TASK: &str = "copy-efs";
const IMPOSTOR_TASK: &str = "efs-impostor";
const FILE_SYSTEM: &str = "fs-0123456789abcdef0";
const REGION: &str = "us-east-1";
/// The mount targets as the guest reaches them (port 2049, as EFS's, which
/// the appliance's firewall lets out), relayed to stunnel4's ports.
const MOUNT_TARGET: (&str, u16) = ("10.0.2.101", 12449);
const IMPOSTOR: (&str, u16) = ("10.0.2.102", 12450);

/// Every task that copies, by name.
fn copying_tasks() -> impl Iterator<Item = &'static str> {
    TASKS.iter().map(|(t, _)| *t).chain([EFS_TASK])
}

fn write_source(src: &Path) {
    for d in 0..6 {
        let dir = src.join(format!("dir{d}/sub"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            fs::write(
                dir.join(format!("f{f}.txt")),
                format!("file {d}/{f}\n").repeat(f + 1),
            )
            .unwrap();
        }
    }
    let big: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("large.bin"), big).unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("dir0/sub/f0.txt", src.join("link")).unwrap();
}

fn config(server: &Ganesha, ca_pem: &str) -> String {
    let opts = server.mount_options();
    let mut locations = String::new();
    let mut tasks = String::new();
    for (task, version) in TASKS {
        for (side, export) in [
            ("src", "source".to_string()),
            ("dst", format!("dest-{task}")),
        ] {
            locations.push_str(&format!(
                "    {side}-{task}:\n      nfs: {{ server: {HOST_FROM_GUEST}, export: /{export}, \
                 version: \"{version}\", mount_options: \"{opts}\" }}\n"
            ));
        }
        tasks.push_str(&format!(
            "    {task}:\n      source: src-{task}\n      destination: dst-{task}\n      start_on_boot: true\n"
        ));
    }
    // EFS's export is "/": ganesha's pseudo root, where its exports are.
    for (task, (ip, _)) in [(EFS_TASK, MOUNT_TARGET), (IMPOSTOR_TASK, IMPOSTOR)] {
        locations.push_str(&format!(
            "    dst-{task}:\n      efs: {{ file_system_id: {FILE_SYSTEM}, region: {REGION}, \
             access_point_id: fsap-0123456789abcdef0, subdirectory: /dest-{task}, \
             in_transit_encryption: TLS1_2, mount_target_address: {ip} }}\n"
        ));
        tasks.push_str(&format!(
            "    {task}:\n      source: src-copy-v41\n      destination: dst-{task}\n      start_on_boot: true\n"
        ));
    }
    let ca = ca_pem.trim_end().replace('\n', "\n    ");
    format!(
        "version: 2\nhostname: ferry-nfs\ndaemon:\n  efs_ca_certificates: |\n    {ca}\n\
         agent:\n  locations:\n{locations}  tasks:\n{tasks}"
    )
}

/// The mount targets' TLS side: stunnel4 in front of ganesha, one service
/// with a certificate from `ca`, one with a certificate for the same name
/// from another CA.
fn mount_targets(work: &Path, ca: &TestCa, nfs_port: u16) -> Stunnel {
    let name = format!("{FILE_SYSTEM}.efs.{REGION}.amazonaws.com");
    let (cert, key) = ca.issue(&name, work, "mount-target").unwrap();
    let other = TestCa::new("another CA").unwrap();
    let (bad_cert, bad_key) = other.issue(&name, work, "impostor").unwrap();
    Stunnel::start(
        work,
        &[
            Service {
                name: "efs".into(),
                accept: MOUNT_TARGET.1,
                connect: nfs_port,
                cert,
                key,
            },
            Service {
                name: "impostor".into(),
                accept: IMPOSTOR.1,
                connect: nfs_port,
                cert: bad_cert,
                key: bad_key,
            },
        ],
    )
    .unwrap()
}

/// One boot: the executions run (queued one after the other); returns per
/// copying task its summary line.
fn boot_and_run(disk: &Path, work: &Path, ca: &TestCa, what: &str) -> BTreeMap<String, String> {
    let exports: Vec<(String, std::path::PathBuf)> =
        std::iter::once(("source".into(), work.join("source")))
            .chain(
                copying_tasks()
                    .chain([IMPOSTOR_TASK])
                    .map(|t| (format!("dest-{t}"), work.join(format!("dest-{t}")))),
            )
            .collect();
    let exports: Vec<(&str, &Path)> = exports
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let server = Ganesha::start(work, &exports, NFS_PORT, MOUNT_PORT).unwrap();
    let tls = mount_targets(work, ca, NFS_PORT);
    let doc = work.join("ferry.yaml");
    fs::write(&doc, config(&server, &ca.pem)).unwrap();

    let dir = work.join(what);
    fs::create_dir_all(&dir).unwrap();
    let mut cfg = VmConfig::new(disk, Firmware::Uefi, &dir);
    cfg.fw_cfg.push(("opt/ferry/config".into(), doc));
    cfg.restrict = false;
    cfg.guestfwd = [MOUNT_TARGET, IMPOSTOR]
        .iter()
        .map(|(ip, port)| guestfwd_relay(work, &format!("{ip}:2049"), *port).unwrap())
        .collect();
    let mut vm = Vm::start(&cfg).unwrap();
    let logs = || {
        format!(
            "ganesha log:\n{}\nstunnel log:\n{}",
            fs::read_to_string(&server.log).unwrap_or_default(),
            fs::read_to_string(&tls.log).unwrap_or_default()
        )
    };
    let summaries = vm
        .wait_for_lines(
            " ms, total ",
            copying_tasks().count(),
            Duration::from_secs(900),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", logs()));
    let exec_of = |console: &str, task: &str| {
        let started = format!("task {task} started at boot as ");
        let line = console
            .lines()
            .find(|l| l.contains(&started))
            .unwrap_or_else(|| panic!("{what}: no start of {task}:\n{console}"));
        line[line.find(&started).unwrap() + started.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    // The impostor's execution ends in ERROR, its certificate named.
    let console = vm.console();
    let impostor = exec_of(&console, IMPOSTOR_TASK);
    let refused = line_with(
        &vm,
        &format!("{impostor} ("),
        "): ERROR",
        Duration::from_secs(300),
    )
    .unwrap_or_else(|| {
        panic!(
            "{what}: {IMPOSTOR_TASK} did not end in ERROR:\n{}",
            vm.console()
        )
    });
    assert!(
        refused.contains("invalid peer certificate: UnknownIssuer")
            && refused.contains(&format!("{FILE_SYSTEM}.efs.{REGION}.amazonaws.com")),
        "{what}: {refused}"
    );
    eprintln!("{what}: {IMPOSTOR_TASK}: {refused}");
    let console = vm.console();
    let mut by_task = BTreeMap::new();
    for task in copying_tasks() {
        let exec = exec_of(&console, task);
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("{exec} (")) && l.trim_end().ends_with("): SUCCESS")),
            "{what}: {task} ({exec}) did not end in SUCCESS:\n{console}\n{}",
            logs()
        );
        let summary = summaries
            .iter()
            .find(|l| l.contains(&format!("{exec}:")))
            .unwrap_or_else(|| panic!("{what}: no summary of {exec}"));
        eprintln!("{what}: {task}: {summary}");
        by_task.insert(task.to_string(), summary.clone());
    }
    vm.powerdown().unwrap();
    vm.wait_for(
        "shutdown: data partition unmounted cleanly",
        Duration::from_secs(120),
    )
    .unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    by_task
}

/// The first console line with both `a` and `b`, waited for.
fn line_with(vm: &Vm, a: &str, b: &str, timeout: Duration) -> Option<String> {
    let t = std::time::Instant::now();
    loop {
        let console = vm.console();
        if let Some(l) = console.lines().find(|l| l.contains(a) && l.contains(b)) {
            return Some(l.to_string());
        }
        if t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The count before `word` in a summary line ("..., 12 transferred (...").
fn count_before(summary: &str, word: &str) -> u64 {
    let head = &summary[..summary
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {summary}"))];
    head.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn nfs_v3_v40_v41_and_efs_over_tls_full_then_incremental() {
    let image = appliance_image().unwrap();
    let scratch = Scratch::new("agent-nfs").unwrap();
    let work = scratch.0.as_path();
    let src = work.join("source");
    write_source(&src);
    for task in copying_tasks().chain([IMPOSTOR_TASK]) {
        fs::create_dir_all(work.join(format!("dest-{task}"))).unwrap();
    }
    let disk = work.join("ferry.raw");
    copy_sparse(&image, &disk).unwrap();
    let ca = TestCa::new("Ferry e2e EFS CA").unwrap();

    let full = boot_and_run(&disk, work, &ca, "full");
    let written = fs::read_dir(work.join(format!("dest-{IMPOSTOR_TASK}")))
        .unwrap()
        .count();
    assert_eq!(written, 0, "the impostor's mount target was written to");
    let entries = count_before(&full["copy-v3"], "files listed");
    for (task, summary) in &full {
        let diff = tree_differences(&src, &work.join(format!("dest-{task}"))).unwrap();
        assert!(
            diff.is_empty(),
            "{task}: the destination differs:\n{}",
            diff.join("\n")
        );
        assert_eq!(
            count_before(summary, "files listed"),
            entries,
            "{task}: {summary}"
        );
        assert!(
            count_before(summary, "transferred") >= 150,
            "{task}: {summary}"
        );
        assert_eq!(count_before(summary, "failed"), 0, "{task}: {summary}");
    }

    // Two files changed (content and mtime), one added; the server is down.
    fs::write(src.join("dir1/sub/f3.txt"), "changed\n").unwrap();
    fs::write(src.join("dir4/sub/f9.txt"), "changed too\n").unwrap();
    fs::write(src.join("dir5/new.txt"), "new\n").unwrap();

    let incremental = boot_and_run(&disk, work, &ca, "incremental");
    for (task, summary) in &incremental {
        let diff = tree_differences(&src, &work.join(format!("dest-{task}"))).unwrap();
        assert!(
            diff.is_empty(),
            "{task}: the destination differs:\n{}",
            diff.join("\n")
        );
        assert_eq!(
            count_before(summary, "files listed"),
            entries + 1,
            "{task}: {summary}"
        );
        // the three files, and the two directories whose contents changed
        // (their times are set again)
        let transferred = count_before(summary, "transferred");
        assert!(
            (3..=5).contains(&transferred),
            "{task}: expected only the 3 changed files to move: {summary}"
        );
        assert_eq!(count_before(summary, "failed"), 0, "{task}: {summary}");
    }
}
