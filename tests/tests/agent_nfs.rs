// SPDX-License-Identifier: MIT
//! The appliance's agent against real NFS: nfs-ganesha on the host exports
//! a source tree and three destinations; a configuration document declares
//! NFS locations with versions 3, 4.0 and 4.1 and one task per version,
//! started at boot. Each execution must end in SUCCESS with the destination
//! equal to the source (compared here, on the host); a second boot, after
//! a few files changed, must transfer only those.
//! Build the image first: `scripts/build-image` (scripts/test does).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ferry_e2e::nfs::{Ganesha, HOST_FROM_GUEST};
use ferry_e2e::{appliance_image, copy_sparse, tree_differences, Firmware, Scratch, Vm, VmConfig};

/// Ports of our own, so a benchmark's server on 2049 does not collide.
const NFS_PORT: u16 = 12049;
const MOUNT_PORT: u16 = 12048;

/// NFS version of each task's two locations, by task name.
const TASKS: [(&str, &str); 3] = [("copy-v3", "3"), ("copy-v40", "4.0"), ("copy-v41", "4.1")];

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

fn config(server: &Ganesha) -> String {
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
    format!("version: 2\nhostname: ferry-nfs\nagent:\n  locations:\n{locations}  tasks:\n{tasks}")
}

/// One boot: the three executions run (queued one after the other); returns
/// per task its summary line.
fn boot_and_run(disk: &Path, work: &Path, what: &str) -> BTreeMap<String, String> {
    let exports: Vec<(String, std::path::PathBuf)> =
        std::iter::once(("source".into(), work.join("source")))
            .chain(
                TASKS
                    .iter()
                    .map(|(t, _)| (format!("dest-{t}"), work.join(format!("dest-{t}")))),
            )
            .collect();
    let exports: Vec<(&str, &Path)> = exports
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let server = Ganesha::start(work, &exports, NFS_PORT, MOUNT_PORT).unwrap();
    let doc = work.join("ferry.yaml");
    fs::write(&doc, config(&server)).unwrap();

    let dir = work.join(what);
    fs::create_dir_all(&dir).unwrap();
    let mut cfg = VmConfig::new(disk, Firmware::Uefi, &dir);
    cfg.fw_cfg.push(("opt/ferry/config".into(), doc));
    cfg.restrict = false;
    let mut vm = Vm::start(&cfg).unwrap();
    let summaries = vm
        .wait_for_lines(" ms, total ", TASKS.len(), Duration::from_secs(900))
        .unwrap_or_else(|e| {
            panic!(
                "{what}: {e}\nganesha log:\n{}",
                fs::read_to_string(&server.log).unwrap_or_default()
            )
        });
    let console = vm.console();
    let mut by_task = BTreeMap::new();
    for (task, _) in TASKS {
        let started = format!("task {task} started at boot as ");
        let line = console
            .lines()
            .find(|l| l.contains(&started))
            .unwrap_or_else(|| panic!("{what}: no start of {task}:\n{console}"));
        let exec = line[line.find(&started).unwrap() + started.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("{exec} (")) && l.trim_end().ends_with("): SUCCESS")),
            "{what}: {task} ({exec}) did not end in SUCCESS:\n{console}"
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

/// The count before `word` in a summary line ("..., 12 transferred (...").
fn count_before(summary: &str, word: &str) -> u64 {
    let head = &summary[..summary
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {summary}"))];
    head.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn nfs_v3_v40_v41_full_then_incremental() {
    let image = appliance_image().unwrap();
    let scratch = Scratch::new("agent-nfs").unwrap();
    let work = scratch.0.as_path();
    let src = work.join("source");
    write_source(&src);
    for (task, _) in TASKS {
        fs::create_dir_all(work.join(format!("dest-{task}"))).unwrap();
    }
    let disk = work.join("ferry.raw");
    copy_sparse(&image, &disk).unwrap();

    let full = boot_and_run(&disk, work, "full");
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

    let incremental = boot_and_run(&disk, work, "incremental");
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
