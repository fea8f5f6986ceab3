// SPDX-License-Identifier: MIT
//! End-to-end tests of `ferry sync` on real directory trees.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{compare_trees, counter, ferry, make_full_tree, sync, temp_files, write};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

#[test]
fn full_tree_is_exact_and_at_least_as_exact_as_rsync() {
    require_root!();
    let t = tempdir();
    let src = t.path().join("src");
    make_full_tree(&src);

    let dst = t.path().join("ferry");
    let (code, summary) = sync(&src, &dst, &["--preserve-devices", "preserve"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["Status"], "SUCCESS");
    let ferry_diffs = compare_trees(&src, &dst);

    let reference = t.path().join("rsync");
    let status = Command::new("rsync")
        .args(["-aHS", "--numeric-ids"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", reference.display()))
        .status()
        .expect("rsync is installed (scripts/setup)");
    assert!(status.success(), "rsync failed: {status}");
    let rsync_diffs = compare_trees(&src, &reference);
    eprintln!(
        "rsync -aHS --numeric-ids differs in {} ways:",
        rsync_diffs.len()
    );
    for d in &rsync_diffs {
        eprintln!("  rsync: {d}");
    }
    assert!(
        ferry_diffs.is_empty(),
        "ferry's copy differs:\n{}",
        ferry_diffs.join("\n")
    );
    assert!(ferry_diffs.len() <= rsync_diffs.len());

    // Every entry was verified, nothing failed.
    assert_eq!(counter(&summary, "FilesFailedVerify"), 0);
    assert!(counter(&summary, "FilesVerified") >= counter(&summary, "FilesListedSource"));
    assert!(temp_files(&dst).is_empty());
}

#[test]
fn second_run_is_incremental() {
    require_root!();
    let t = tempdir();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    make_full_tree(&src);
    let (code, first) = sync(&src, &dst, &["--preserve-devices", "preserve"]);
    assert_eq!(code, 0, "{first}");
    assert!(counter(&first, "FilesTransferred") > 40);

    let (code, second) = sync(&src, &dst, &["--preserve-devices", "preserve"]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(counter(&second, "FilesTransferred"), 0, "{second}");
    assert_eq!(counter(&second, "BytesTransferred"), 0);

    // Touch one file: that file alone is transferred.
    let touched = src.join("docs/sub/one.mib");
    write(&touched, &common::bytes(99, 1 << 20));
    let (code, third) = sync(&src, &dst, &["--preserve-devices", "preserve"]);
    assert_eq!(code, 0, "{third}");
    assert_eq!(counter(&third, "BytesTransferred"), 1 << 20, "{third}");
    // Its directory's times moved at the destination and are put back,
    // which is not a transfer of its own.
    assert_eq!(counter(&third, "FilesTransferred"), 1, "{third}");
    assert!(compare_trees(&src, &dst).is_empty());
}

fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    write(&root.join("a/one.txt"), b"one");
    write(&root.join("a/b/two.tmp"), b"two");
    write(&root.join("three.jpg"), b"three");
}

#[test]
fn preserve_deleted_files() {
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    small_tree(&src);
    write(&dst.join("extra.txt"), b"only at destination");
    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    assert!(dst.join("extra.txt").exists(), "PRESERVE keeps it");
    assert_eq!(counter(&s, "FilesDeleted"), 0);

    fs::create_dir_all(dst.join("gone/deeper")).unwrap();
    write(&dst.join("gone/deeper/x"), b"x");
    let (code, s) = sync(&src, &dst, &["--preserve-deleted-files", "remove"]);
    assert_eq!(code, 0, "{s}");
    assert!(!dst.join("extra.txt").exists());
    assert!(!dst.join("gone").exists());
    assert_eq!(counter(&s, "FilesDeleted"), 4, "{s}");
}

#[test]
fn overwrite_mode_never_keeps_destination_versions() {
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    small_tree(&src);
    write(&dst.join("a/one.txt"), b"mine");
    let (code, s) = sync(&src, &dst, &["--overwrite-mode", "never"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(fs::read(dst.join("a/one.txt")).unwrap(), b"mine");
    assert_eq!(
        fs::read(dst.join("three.jpg")).unwrap(),
        b"three",
        "new files still arrive"
    );
    assert!(counter(&s, "FilesSkipped") >= 1);

    let (code, s) = sync(&src, &dst, &["--overwrite-mode", "always"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(fs::read(dst.join("a/one.txt")).unwrap(), b"one");
}

#[test]
fn transfer_mode_all_copies_unchanged_files() {
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    small_tree(&src);
    assert_eq!(sync(&src, &dst, &[]).0, 0);
    let inode = fs::metadata(dst.join("three.jpg")).unwrap().ino();
    let (_, changed) = sync(&src, &dst, &["--transfer-mode", "changed"]);
    assert_eq!(counter(&changed, "FilesTransferred"), 0);
    let (code, all) = sync(&src, &dst, &["--transfer-mode", "all"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(counter(&all, "FilesTransferred"), 3, "{all}");
    assert_ne!(
        fs::metadata(dst.join("three.jpg")).unwrap().ino(),
        inode,
        "rewritten"
    );
}

#[test]
fn preserve_devices() {
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir(&src).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    assert!(!dst.join("fifo").exists(), "NONE leaves special files out");
    assert_eq!(counter(&s, "FilesSkipped"), 1);
    let (code, s) = sync(&src, &dst, &["--preserve-devices", "preserve"]);
    assert_eq!(code, 0, "{s}");
    assert!(fs::symlink_metadata(dst.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn posix_permissions_uid_gid() {
    require_root!();
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"f");
    fs::set_permissions(src.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    common::chown(&src.join("f"), 4321, 8765);

    let none = t.path().join("none");
    let (code, s) = sync(
        &src,
        &none,
        &[
            "--posix-permissions",
            "none",
            "--uid",
            "none",
            "--gid",
            "none",
        ],
    );
    assert_eq!(code, 0, "{s}");
    let m = fs::metadata(none.join("f")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 0, 0));

    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    let m = fs::metadata(dst.join("f")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 4321, 8765));

    // Only the group differs now: a metadata-only transfer, no data.
    common::chown(&src.join("f"), 4321, 1111);
    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(counter(&s, "BytesTransferred"), 0);
    assert_eq!(fs::metadata(dst.join("f")).unwrap().gid(), 1111);
}

#[test]
fn atime_and_mtime() {
    let t = tempdir();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"f");
    common::set_times(&src.join("f"), (1_000_000_000, 5));
    let src_atime = fs::metadata(src.join("f")).unwrap().atime();

    let kept = t.path().join("kept");
    assert_eq!(sync(&src, &kept, &[]).0, 0);
    let m = fs::metadata(kept.join("f")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 5));
    assert_eq!(m.atime(), src_atime);

    let no_atime = t.path().join("no-atime");
    assert_eq!(sync(&src, &no_atime, &["--atime", "none"]).0, 0);
    let m = fs::metadata(no_atime.join("f")).unwrap();
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_ne!(m.atime(), src_atime);

    let neither = t.path().join("neither");
    assert_eq!(
        sync(&src, &neither, &["--atime", "none", "--mtime", "none"]).0,
        0
    );
    assert_ne!(
        fs::metadata(neither.join("f")).unwrap().mtime(),
        1_000_000_000
    );
}

#[test]
fn include_and_exclude_filters() {
    let t = tempdir();
    let src = t.path().join("src");
    small_tree(&src);
    let dst = t.path().join("excluded");
    let (code, s) = sync(&src, &dst, &["--exclude", "*.tmp|/three.jpg"]);
    assert_eq!(code, 0, "{s}");
    assert!(dst.join("a/one.txt").exists());
    assert!(!dst.join("a/b/two.tmp").exists());
    assert!(!dst.join("three.jpg").exists());

    let dst = t.path().join("included");
    let (code, s) = sync(&src, &dst, &["--include", "*.jpg"]);
    assert_eq!(code, 0, "{s}");
    assert!(dst.join("three.jpg").exists());
    assert!(!dst.join("a/one.txt").exists());

    // Excluded destination entries are not deleted.
    let dst = t.path().join("excluded");
    write(&dst.join("keep.tmp"), b"keep");
    let (code, s) = sync(
        &src,
        &dst,
        &[
            "--exclude",
            "*.tmp|/three.jpg",
            "--preserve-deleted-files",
            "remove",
        ],
    );
    assert_eq!(code, 0, "{s}");
    assert!(dst.join("keep.tmp").exists());
}

#[test]
fn bytes_per_second_limits_the_rate() {
    let t = tempdir();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), &common::bytes(7, 3 << 20));
    let start = Instant::now();
    let (code, s) = sync(
        &src,
        &t.path().join("dst"),
        &["--bytes-per-second", "1048576", "--verify-mode", "none"],
    );
    assert_eq!(code, 0, "{s}");
    // 3 MiB at 1 MiB/s cannot take less than about two seconds.
    assert!(
        start.elapsed() >= Duration::from_millis(1800),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn parallel_sets_the_workers() {
    let t = tempdir();
    let src = t.path().join("src");
    small_tree(&src);
    let (code, s) = sync(&src, &t.path().join("dst"), &["--parallel", "3"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["Workers"], 3);
    assert!(compare_trees(&src, &t.path().join("dst")).is_empty());
}

#[test]
fn verify_modes_catch_what_the_comparison_cannot() {
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    small_tree(&src);
    assert_eq!(sync(&src, &dst, &[]).0, 0);
    // Same size and time, other content: invisible to the comparison.
    let victim = dst.join("a/one.txt");
    let m = fs::metadata(&victim).unwrap();
    write(&victim, b"ONE");
    common::set_times(&victim, (m.mtime(), m.mtime_nsec()));

    let (code, s) = sync(&src, &dst, &["--verify-mode", "none"]);
    assert_eq!((code, s["Status"].as_str()), (0, Some("SUCCESS")));
    let (code, s) = sync(&src, &dst, &["--verify-mode", "only-files-transferred"]);
    assert_eq!(code, 0, "nothing was transferred, so nothing to check: {s}");
    let report = t.path().join("report.json");
    let (code, s) = sync(&src, &dst, &["--report", report.to_str().unwrap()]);
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["Status"], "ERROR");
    assert_eq!(s["ErrorCode"], "VerificationFailed");
    assert_eq!(counter(&s, "FilesFailedVerify"), 1);
    let report: serde_json::Value = serde_json::from_slice(&fs::read(report).unwrap()).unwrap();
    let failed: Vec<_> = report["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["path"], "/a/one.txt");
    assert!(failed[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("checksum"));

    // only-files-transferred checks what it wrote.
    write(&src.join("new.txt"), b"new");
    let (code, s) = sync(&src, &dst, &["--verify-mode", "only-files-transferred"]);
    assert_eq!(code, 0, "{s}");
    assert!(counter(&s, "FilesVerified") >= 1);
}

#[test]
fn report_lists_every_outcome() {
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    small_tree(&src);
    let report = t.path().join("r.json");
    let (code, _) = sync(&src, &dst, &["--report", report.to_str().unwrap()]);
    assert_eq!(code, 0);
    let r: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["Summary"]["Status"], "SUCCESS");
    let entries = r["Entries"].as_array().unwrap();
    let with = |outcome: &str| entries.iter().filter(|e| e["outcome"] == outcome).count();
    // a, a/b, a/one.txt, a/b/two.tmp, three.jpg; and the root's attributes
    // when its time differs (the clock is coarse: not always).
    let root = entries
        .iter()
        .filter(|e| e["path"] == "/" && e["outcome"] == "transferred")
        .count();
    assert_eq!(with("transferred") - root, 5, "{r}");
    assert_eq!(with("verified"), 6, "{r}");
}

#[test]
fn json_events_end_with_a_summary() {
    let t = tempdir();
    let src = t.path().join("src");
    small_tree(&src);
    let out = ferry(&[
        OsStr::new("sync"),
        OsStr::new("--json"),
        src.as_os_str(),
        t.path().join("dst").as_os_str(),
    ]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let phases: Vec<_> = events
        .iter()
        .filter(|e| e["Event"] == "Phase")
        .map(|e| e["Phase"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        phases,
        [
            "LAUNCHING",
            "PREPARING",
            "TRANSFERRING",
            "VERIFYING",
            "SUCCESS"
        ]
    );
    assert_eq!(events.last().unwrap()["Event"], "Summary");
    assert!(out.stderr.is_empty(), "nothing but errors on stderr");
}

#[test]
fn usage_errors_exit_2_and_touch_nothing() {
    let t = tempdir();
    let src = t.path().join("src");
    small_tree(&src);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let s = src.to_str().unwrap();
    let missing = t.path().join("missing");
    let (code, err) = run(&["sync", missing.to_str().unwrap(), "/tmp/x"]);
    assert_eq!(code, 2);
    assert!(err.contains("source"), "{err}");
    let inside = src.join("inside");
    let (code, err) = run(&["sync", s, inside.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("inside the source"), "{err}");
    assert!(!inside.exists());
    let dst = t.path().join("dst");
    let d = dst.to_str().unwrap();
    let (code, err) = run(&[
        "sync",
        "--transfer-mode",
        "all",
        "--preserve-deleted-files",
        "remove",
        s,
        d,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot go with"), "{err}");
    let (code, err) = run(&["sync", "--verify-mode", "sometimes", s, d]);
    assert_eq!(code, 2);
    assert!(err.contains("sometimes"), "{err}");
    let (code, err) = run(&["sync", "--exclude", "a||b", s, d]);
    assert_eq!(code, 2);
    assert!(err.contains("empty pattern"), "{err}");
    let (code, err) = run(&["sync", "-avH", "--delete", s, d]);
    assert_eq!(code, 2);
    assert!(err.contains("hint"), "{err}");
    assert!(!dst.exists(), "nothing was created");
}

#[test]
fn unreadable_file_fails_alone_and_the_run_goes_on() {
    let t = tempdir();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    small_tree(&src);
    write(&src.join("secret"), b"secret");
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads everything: run as nobody, into a destination nobody owns.
    let mut cmd = if common::is_root() {
        fs::create_dir(&dst).unwrap();
        common::chown(&dst, 65534, 65534);
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_ferry"));
        cmd
    } else {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
    };
    let out = cmd
        .args(["sync", "--json", "--uid", "none", "--gid", "none"])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    check_unreadable(&out, &dst);
}

fn check_unreadable(out: &std::process::Output, dst: &Path) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["Event"] == "Failed")
        .collect();
    assert!(
        failed
            .iter()
            .any(|f| f["path"] == "/secret" && f["errno"] == 13),
        "{stdout}"
    );
    assert!(dst.join("a/one.txt").exists(), "the rest was copied");
    assert!(!dst.join("secret").exists());
}

#[test]
fn interrupted_runs_leave_no_partial_file_and_the_next_run_completes() {
    let t = tempdir();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    // Many files and a few large ones, so a kill lands mid-copy.
    for d in 0..8 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..50 {
            write(
                &src.join(format!("d{d}/f{f}")),
                &common::bytes(d * 100 + f, 20_000 + f as usize * 997),
            );
        }
        write(
            &src.join(format!("d{d}/large")),
            &common::bytes(d, 24 << 20),
        );
    }
    // Random points in the run, printed so a failure can be replayed.
    let kills: Vec<Duration> = (0..5)
        .map(|_| Duration::from_millis(rand::random_range(20..1200)))
        .collect();
    eprintln!("killing after {kills:?}");
    for (i, after) in kills.iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "sync",
                "--verify-mode",
                "none",
                "--bytes-per-second",
                "150000000",
            ])
            .arg(&src)
            .arg(&dst)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(*after);
        // SIGKILL, or SIGINT (a cancel) every other time.
        if i % 2 == 0 {
            child.kill().unwrap();
        } else {
            rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::INT,
            )
            .unwrap();
        }
        child.wait().unwrap();
        // Whatever is under a final name is complete.
        for d in 0..8u64 {
            for f in 0..50u64 {
                let path = dst.join(format!("d{d}/f{f}"));
                if let Ok(data) = fs::read(&path) {
                    assert_eq!(
                        data,
                        common::bytes(d * 100 + f, 20_000 + f as usize * 997),
                        "{}",
                        path.display()
                    );
                }
            }
            if let Ok(data) = fs::read(dst.join(format!("d{d}/large"))) {
                assert!(
                    data == common::bytes(d, 24 << 20),
                    "partial large file under its final name"
                );
            }
        }
    }
    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    assert!(compare_trees(&src, &dst).is_empty());
    assert!(
        temp_files(&dst).is_empty(),
        "leftovers removed: {:?}",
        temp_files(&dst)
    );
}

#[test]
fn changed_at_source_during_the_run_is_reported_not_failed() {
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir(&src).unwrap();
    write(&src.join("growing"), &common::bytes(1, 2 << 20));
    let writer = {
        let path = src.join("growing");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
            std::io::Write::write_all(&mut f, b"appended while copying").unwrap();
        })
    };
    // Throttled so the copy is still running when the file changes.
    let (code, s) = sync(&src, &dst, &["--bytes-per-second", "1048576"]);
    writer.join().unwrap();
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["Status"], "SUCCESS");
    assert!(counter(&s, "FilesChangedAtSource") >= 1, "{s}");
    assert_eq!(counter(&s, "FilesFailedVerify"), 0);
    // The next run copies it.
    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    assert!(compare_trees(&src, &dst).is_empty());
}

#[test]
fn copies_between_file_systems_the_kernel_cannot_copy_across() {
    // /dev/shm is a tmpfs: copy_file_range to the test's disk fails with
    // EXDEV, and the engine falls back to copying through user space.
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let src = shm.path().join("src");
    write(&src.join("big"), &common::bytes(11, 3 << 20));
    write(&src.join("d/small"), b"small");
    let t = tempdir();
    let dst = t.path().join("dst");
    let (code, s) = sync(&src, &dst, &["--verify-mode", "none"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(counter(&s, "BytesTransferred"), (3 << 20) + 5);
    assert!(compare_trees(&src, &dst).is_empty());
}

/// Destination files swapped for symlinks to files outside the destination
/// while `ferry sync` changes their modes: whatever the race does, no file
/// outside the destination changes (mode, owner, times, ctime).
#[test]
fn attribute_updates_never_follow_a_symlink_swapped_in_during_the_run() {
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const DIRS: usize = 4;
    const FILES: usize = 500;
    // Each pass swaps every file once; bounded whatever the run's length.
    const MAX_PASSES: usize = 400;
    let t = tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    let (outside, spare) = (t.path().join("outside"), t.path().join("spare"));
    fs::create_dir_all(&spare).unwrap();
    let names: Vec<String> = (0..DIRS)
        .flat_map(|d| (0..FILES).map(move |f| format!("dir{d}/f{f}")))
        .collect();
    for name in &names {
        write(&src.join(name), name.as_bytes());
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(0o644)).unwrap();
        write(&outside.join(name), b"outside the destination");
        fs::set_permissions(outside.join(name), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    let snapshot = || {
        names
            .iter()
            .map(|n| {
                let m = fs::metadata(outside.join(n)).unwrap();
                (
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.ctime(),
                    m.ctime_nsec(),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot();

    for (round, mode) in [0o755, 0o700, 0o4750].into_iter().enumerate() {
        // Only the modes change at the source: the run updates attributes.
        for name in &names {
            fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let racer = {
            let (stop, names) = (stop.clone(), names.clone());
            let (src, dst, outside, spare) =
                (src.clone(), dst.clone(), outside.clone(), spare.clone());
            std::thread::spawn(move || {
                let tmp = spare.join("tmp");
                for pass in 0..MAX_PASSES {
                    for name in &names {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let _ = fs::remove_file(&tmp);
                        if pass % 2 == 0 {
                            // The destination file becomes a symlink out.
                            symlink(outside.join(name), &tmp).unwrap();
                        } else {
                            // And back: a file the scan finds with the old mode.
                            fs::copy(src.join(name), &tmp).unwrap();
                            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
                            let mtime = fs::metadata(src.join(name)).unwrap().modified().unwrap();
                            let f = fs::File::options().write(true).open(&tmp).unwrap();
                            f.set_modified(mtime).unwrap();
                        }
                        let _ = fs::rename(&tmp, dst.join(name));
                    }
                }
            })
        };
        // The run's outcome depends on the race; only its summary is needed.
        let _ = sync(&src, &dst, &[]);
        stop.store(true, Ordering::Relaxed);
        racer.join().unwrap();
        let after = snapshot();
        let changed: Vec<&String> = names
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|(n, _)| n)
            .collect();
        assert!(
            changed.is_empty(),
            "round {round}: {} files outside the destination changed, e.g. {:?}",
            changed.len(),
            &changed[..changed.len().min(5)]
        );
    }
}

/// All files below `root`, as `/`-separated relative paths, sorted.
fn files_below(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_manifest_transfers_exactly_what_it_names_and_reports_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let named = [
        "keep/a.txt",
        "keep/with,comma.txt",
        "keep/say \"hi\".txt",
        "keep/two\nlines",
        "keep/sub/deep.txt",
    ];
    for name in named
        .iter()
        .chain(&["keep/not-named.txt", "other/b.txt", "top.txt"])
    {
        write(&src.join(name), name.as_bytes());
    }
    fs::create_dir_all(&dst).unwrap();
    // Quoted as DataSync quotes: commas, quotes and newlines in names.
    let manifest = tmp.path().join("manifest.csv");
    fs::write(
        &manifest,
        "keep/a.txt\n\"keep/with,comma.txt\"\n\"keep/say \"\"hi\"\".txt\"\n\"keep/two\nlines\"\n/keep/sub/deep.txt\nmissing/file.txt\n",
    )
    .unwrap();
    let report = tmp.path().join("report.json");
    let (code, summary) = sync(
        &src,
        &dst,
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    // A named path missing at the source is reported, not fatal.
    assert_eq!(code, 0, "{summary}");
    let mut want: Vec<String> = named.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(files_below(&dst), want);
    assert_eq!(counter(&summary, "FilesSkipped"), 1, "{summary}");
    assert!(counter(&summary, "FilesVerified") >= 5, "{summary}");
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let missing = report["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/missing/file.txt")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(missing["outcome"], "skipped");
    assert_eq!(
        missing["reason"],
        "named in the manifest, not at the source"
    );

    // A path that leaves the location: refused before anything is touched.
    fs::write(&manifest, "keep/a.txt\n../outside.txt\n").unwrap();
    let dst2 = tmp.path().join("dst2");
    fs::create_dir_all(&dst2).unwrap();
    let out = ferry(&[
        OsStr::new("sync"),
        OsStr::new("--manifest"),
        manifest.as_os_str(),
        src.as_os_str(),
        dst2.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manifest.csv, line 2: a . or .. in a path"),
        "{err}"
    );
    assert!(files_below(&dst2).is_empty());
}

#[test]
fn the_task_report_keeps_what_its_output_type_and_levels_say() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..5 {
        write(&src.join(format!("f{i}")), b"data");
    }
    let outcomes = |extra: &[&str]| {
        let dst = tempfile::tempdir_in(tmp.path()).unwrap();
        let report = dst.path().join("../report.json");
        let mut args = vec!["--report", report.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, summary) = sync(&src, dst.path(), &args);
        assert_eq!(code, 0, "{summary}");
        let report: serde_json::Value =
            serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["Summary"]["Status"], "SUCCESS", "{report}");
        report.get("Entries").map(|entries| {
            let mut kinds: Vec<String> = entries
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["outcome"].as_str().unwrap().to_string())
                .collect();
            kinds.sort();
            kinds.dedup();
            kinds
        })
    };
    assert_eq!(outcomes(&[]).unwrap(), ["transferred", "verified"]);
    // Errors only: none here.
    assert_eq!(
        outcomes(&["--report-level", "errors-only"]).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        outcomes(&[
            "--report-level",
            "errors-only",
            "--report-verified",
            "successes-and-errors"
        ])
        .unwrap(),
        ["verified"]
    );
    assert_eq!(outcomes(&["--report-output-type", "summary-only"]), None);
}

#[test]
fn a_plan_says_what_a_sync_will_do_and_what_the_destination_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("docs/old")).unwrap();
    fs::create_dir_all(&dst).unwrap();
    write(&src.join("docs/a.txt"), &common::bytes(1, 3000));
    write(&src.join("docs/old/b.txt"), &common::bytes(2, 5000));
    write(&src.join("big.bin"), &common::bytes(3, 200_000));
    write(&src.join("top.txt"), b"top");
    // A hard link whose other name is outside the task's root.
    fs::hard_link(src.join("docs/a.txt"), tmp.path().join("elsewhere")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args: Vec<&OsStr> = vec![OsStr::new("plan"), OsStr::new("--json")];
        args.extend(extra.iter().map(OsStr::new));
        args.extend([src.as_os_str(), dst.as_os_str()]);
        let out = ferry(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let p = plan(&["--max-file-size", "100000"]);
    assert!(
        fs::read_dir(&dst).unwrap().next().is_none(),
        "a plan changes nothing"
    );
    let total = &p["Total"];
    // docs, docs/old, three files; the FIFO is skipped (PreserveDevices NONE).
    assert_eq!(total["FilesToTransfer"], 6, "{p}");
    assert_eq!(total["BytesToTransfer"], 3000 + 5000 + 200_000 + 3, "{p}");
    assert_eq!(total["Skipped"], 1, "{p}");
    assert_eq!(p["ByTopLevel"]["docs"]["FilesToTransfer"], 4, "{p}");
    assert_eq!(p["ByTopLevel"]["/"]["FilesToTransfer"], 2, "{p}");
    let issues: Vec<(String, String)> = p["Issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["Problem"].as_str().unwrap().into(),
                i["Path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        issues,
        [
            ("FILE_TOO_LARGE".to_string(), "/big.bin".to_string()),
            ("HARD_LINK_OUTSIDE_ROOT".into(), "/docs/a.txt".into()),
            ("SPECIAL_FILE_NOT_COPIED".into(), "/pipe".into()),
        ],
        "{p}"
    );
    assert_eq!(p["Estimate"]["Basis"], "MEASURED");

    // The sync does what the plan said (the top's attributes as well).
    let (code, s) = sync(&src, &dst, &[]);
    assert_eq!(code, 0, "{s}");
    let planned =
        total["FilesToTransfer"].as_u64().unwrap() + total["MetadataOnly"].as_u64().unwrap();
    assert_eq!(counter(&s, "FilesTransferred"), planned, "{s}");
    assert_eq!(
        counter(&s, "BytesTransferred"),
        3000 + 5000 + 200_000 + 3,
        "{s}"
    );

    // Then: one file changed, one gone, and `sync -n` (rsync's dry run) plans.
    write(&src.join("docs/old/b.txt"), &common::bytes(4, 6000));
    fs::remove_file(src.join("top.txt")).unwrap();
    let out = ferry(&[
        OsStr::new("sync"),
        OsStr::new("-n"),
        OsStr::new("--json"),
        OsStr::new("--preserve-deleted-files"),
        OsStr::new("remove"),
        src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["Total"]["FilesToTransfer"], 1, "{p}");
    assert_eq!(p["Total"]["BytesToTransfer"], 6000, "{p}");
    assert_eq!(p["Total"]["FilesToDelete"], 1, "{p}");
    assert!(dst.join("top.txt").exists(), "a dry run deletes nothing");
    assert!(temp_files(&dst).is_empty());

    // Without a destination, a plan says so and makes none.
    let out = ferry(&[
        OsStr::new("plan"),
        src.as_os_str(),
        tmp.path().join("none").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!tmp.path().join("none").exists());
}
