// SPDX-License-Identifier: MIT
//! Test helpers: a generator of trees with every kind of entry, a strict
//! tree comparator, and a runner for the `ferry` binary.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Skips a test that needs root (to chown, mknod devices) when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("skipped: this test needs root (chown, device nodes)");
            return;
        }
    };
}

pub fn ferry(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("run ferry")
}

/// Runs `ferry sync --json [extra] SRC DST` and returns (exit code, summary).
pub fn sync(src: &Path, dst: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("sync"), OsStr::new("--json")];
    args.extend(extra.iter().map(OsStr::new));
    args.push(src.as_os_str());
    args.push(dst.as_os_str());
    let out = ferry(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["Event"] == "Summary")
        .unwrap_or_else(|| {
            panic!(
                "no summary event; status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.code().unwrap_or(-1), summary)
}

pub fn counter(summary: &serde_json::Value, name: &str) -> u64 {
    summary["Counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {summary}"))
}

fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

fn open_dir(path: &Path) -> OwnedFd {
    rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open dir")
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes a file, creating its parent directories.
pub fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().expect("a parent")).unwrap();
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Sets times without following symlinks.
pub fn set_times(path: &Path, mtime: (i64, i64)) {
    let t = Timestamps {
        last_access: ts(1_500_000_000, 111),
        last_modification: ts(mtime.0, mtime.1),
    };
    rfs::utimensat(rfs::CWD, path, &t, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    rfs::chownat(
        rfs::CWD,
        path,
        Some(rfs::Uid::from_raw(uid)),
        Some(rfs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// A tree with every kind of entry the engine must keep exactly.
/// Needs root (owners, device nodes).
pub fn make_full_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let p = |rel: &str| root.join(rel);
    for d in [
        "docs",
        "docs/sub",
        "empty/a/b/c",
        "links",
        "devices",
        "modes",
        "big",
    ] {
        fs::create_dir_all(p(d)).unwrap();
    }
    write(&p("docs/empty.txt"), b"");
    write(&p("docs/one"), b"1");
    write(&p("docs/page.4k"), &bytes(1, 4096));
    write(&p("docs/sub/one.mib"), &bytes(2, 1 << 20));
    write(&p("docs/name with spaces"), b"spaces");
    write(&p("docs/new\nline"), b"newline");
    let non_utf8 = p("docs").join(OsStr::from_bytes(b"caf\xe9-\xff\xfe"));
    write(&non_utf8, b"latin-1 name");
    // Larger than the split threshold: copied as ranges by several workers.
    write(&p("big/forty.mib"), &bytes(3, 40 << 20));

    // Sparse files: holes in the middle, at the start and at the end.
    let sparse = fs::File::create(p("big/sparse.middle")).unwrap();
    sparse.set_len(16 << 20).unwrap();
    sparse.write_all_at(&bytes(4, 65536), 0).unwrap();
    sparse.write_all_at(&bytes(5, 65536), 8 << 20).unwrap();
    let sparse = fs::File::create(p("big/sparse.start")).unwrap();
    sparse.set_len(4 << 20).unwrap();
    sparse.write_all_at(b"tail", (4 << 20) - 4).unwrap();
    let sparse = fs::File::create(p("big/sparse.end")).unwrap();
    sparse.write_all_at(b"head", 0).unwrap();
    sparse.set_len(6 << 20).unwrap();
    // A large sparse file: split into ranges and holes kept.
    let sparse = fs::File::create(p("big/sparse.large")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    sparse.write_all_at(&bytes(6, 1 << 20), 40 << 20).unwrap();

    // Symlinks: relative, absolute, dangling, to a directory.
    std::os::unix::fs::symlink("../docs/one", p("links/relative")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p("links/absolute")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("links/dangling")).unwrap();
    std::os::unix::fs::symlink("../docs", p("links/to-dir")).unwrap();

    // Hard links: three names across directories, two in one directory.
    write(&p("links/hard-a"), b"linked three times");
    fs::hard_link(p("links/hard-a"), p("docs/hard-b")).unwrap();
    fs::hard_link(p("links/hard-a"), p("docs/sub/hard-c")).unwrap();
    write(&p("links/pair-1"), b"linked twice");
    fs::hard_link(p("links/pair-1"), p("links/pair-2")).unwrap();

    // Special files.
    rfs::mknodat(
        rfs::CWD,
        p("devices/fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rfs::mknodat(
        rfs::CWD,
        p("devices/null-ish"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rfs::makedev(1, 3),
    )
    .unwrap();
    rfs::mknodat(
        rfs::CWD,
        p("devices/loop-ish"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o660),
        rfs::makedev(7, 200),
    )
    .unwrap();
    drop(std::os::unix::net::UnixListener::bind(p("devices/socket")).unwrap());

    // Modes and owners.
    write(&p("modes/zero"), b"mode 0000");
    write(&p("modes/setuid"), b"#!/bin/true\n");
    write(&p("modes/private"), b"0600");
    fs::create_dir(p("modes/setgid-dir")).unwrap();
    fs::create_dir(p("modes/sticky")).unwrap();
    write(&p("modes/setgid-dir/inside"), b"group");
    chown(&p("modes/setuid"), 1001, 1002);
    chown(&p("modes/private"), 65534, 65534);
    chown(&p("modes/setgid-dir"), 1003, 1004);
    chown(&p("modes/setgid-dir/inside"), 1005, 1004);
    chown(&p("links/relative"), 1006, 1007);
    chown(&p("devices/fifo"), 1008, 1009);
    chown(&p("docs/sub"), 1010, 1011);
    let mode =
        |rel: &str, m: u32| fs::set_permissions(p(rel), fs::Permissions::from_mode(m)).unwrap();
    mode("modes/zero", 0o000);
    mode("modes/setuid", 0o4755);
    mode("modes/private", 0o600);
    mode("modes/setgid-dir", 0o2775);
    mode("modes/sticky", 0o1777);
    mode("docs/sub", 0o750);

    let long = make_long_path(root);

    // Times to the nanosecond on everything, directories last (children
    // change their parents' times).
    let mut all = Vec::new();
    collect(root, &mut all);
    for (i, path) in all.iter().enumerate() {
        if !path.is_dir() || path.is_symlink() {
            set_times(
                path,
                (1_600_000_000 + i as i64 * 1000, 123_456_789 + i as i64),
            );
        }
    }
    set_long_path_times(root, &long);
    all.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for (i, path) in all.iter().enumerate() {
        if path.is_dir() && !path.is_symlink() {
            set_times(
                path,
                (1_400_000_000 + i as i64 * 1000, 987_654_321 - i as i64),
            );
        }
    }
    set_times(root, (1_300_000_000, 5));
}

/// Paths whose length is near PATH_MAX, deeper than an absolute path can name.
fn make_long_path(root: &Path) -> Vec<OsString> {
    let mut names = Vec::new();
    let mut fd = open_dir(root);
    let mut total = 0;
    let mut i = 0;
    while total < 3900 {
        let name = OsString::from(format!("{i:02}-{}", "d".repeat(196)));
        total += name.len() + 1;
        rfs::mkdirat(&fd, &name, Mode::from_raw_mode(0o755)).unwrap();
        fd = rfs::openat(
            &fd,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        names.push(name);
        i += 1;
    }
    let leaf = rfs::openat(
        &fd,
        "leaf",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&leaf, b"deep").unwrap();
    names
}

fn set_long_path_times(root: &Path, names: &[OsString]) {
    let mut fds = vec![open_dir(root)];
    for name in names {
        let fd = rfs::openat(
            fds.last().unwrap(),
            name,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        fds.push(fd);
    }
    let t = |s| Timestamps {
        last_access: ts(s, 1),
        last_modification: ts(s, 42),
    };
    rfs::utimensat(
        fds.last().unwrap(),
        "leaf",
        &t(1_234_567_890),
        AtFlags::empty(),
    )
    .unwrap();
    for (i, name) in names.iter().enumerate().rev() {
        rfs::utimensat(
            &fds[i],
            name,
            &t(1_200_000_000 + i as i64),
            AtFlags::empty(),
        )
        .unwrap();
    }
}

/// Every path below `dir` that an absolute path can reach.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.as_os_str().len() > 3000 {
            continue;
        }
        out.push(path.clone());
        if path.is_dir() && !path.is_symlink() {
            collect(&path, out);
        }
    }
}

/// What the comparator looks at for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    blocks: u64,
    mtime: (i64, u32),
    target: Option<Vec<u8>>,
    rdev: u64,
    sha256: Option<[u8; 32]>,
    inode: (u64, u64),
    nlink: u64,
}

fn scan(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let fd = open_dir(root);
    let st = rfs::statx(&fd, "", AtFlags::EMPTY_PATH, rfs::StatxFlags::BASIC_STATS).unwrap();
    out.insert(b"/".to_vec(), seen(&fd, OsStr::new(""), &st));
    scan_dir(&fd, b"", &mut out);
    out
}

fn seen(dir: &OwnedFd, name: &OsStr, st: &rfs::Statx) -> Seen {
    let mode = u32::from(st.stx_mode);
    let kind = mode & 0o170000;
    let target =
        (kind == 0o120000).then(|| rfs::readlinkat(dir, name, Vec::new()).unwrap().into_bytes());
    let sha256 = (kind == 0o100000).then(|| {
        let f = rfs::openat(dir, name, OFlags::RDONLY, Mode::empty()).unwrap();
        let mut f = fs::File::from(f);
        let mut h = Sha256::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.finalize().into()
    });
    Seen {
        kind,
        mode: mode & 0o7777,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: if kind == 0o40000 { 0 } else { st.stx_size },
        blocks: st.stx_blocks,
        mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
        target,
        rdev: rfs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        sha256,
        inode: (rfs::makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino),
        nlink: u64::from(st.stx_nlink),
    }
}

fn scan_dir(fd: &OwnedFd, rel: &[u8], out: &mut BTreeMap<Vec<u8>, Seen>) {
    let mut dir = rfs::Dir::read_from(fd).unwrap();
    while let Some(e) = dir.read() {
        let e = e.unwrap();
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsString::from_vec(name.to_vec());
        let st = rfs::statx(
            fd,
            &name,
            AtFlags::SYMLINK_NOFOLLOW,
            rfs::StatxFlags::BASIC_STATS,
        )
        .unwrap();
        let path = [rel, b"/", name.as_bytes()].concat();
        let s = seen(fd, &name, &st);
        let is_dir = s.kind == 0o40000;
        out.insert(path.clone(), s);
        if is_dir {
            let sub =
                rfs::openat(fd, &name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
            scan_dir(&sub, &path, out);
        }
    }
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).chars().take(80).collect()
}

/// Every way `copy` differs from `original`: one line each. Access times are
/// not compared; hard-link grouping and holes are.
pub fn compare_trees(original: &Path, copy: &Path) -> Vec<String> {
    let a = scan(original);
    let b = scan(copy);
    let mut diffs = Vec::new();
    for (path, x) in &a {
        let Some(y) = b.get(path) else {
            diffs.push(format!("missing {}", show(path)));
            continue;
        };
        let mut field = |name: &str, differs: bool| {
            if differs {
                diffs.push(format!("{name} {}", show(path)));
            }
        };
        field("type", x.kind != y.kind);
        field("mode", x.mode != y.mode && x.kind != 0o120000);
        field("uid", x.uid != y.uid);
        field("gid", x.gid != y.gid);
        field("size", x.size != y.size);
        field("mtime", x.mtime != y.mtime);
        field("target", x.target != y.target);
        field("rdev", x.rdev != y.rdev);
        field("content", x.sha256 != y.sha256);
        // Holes kept: the copy allocates no more than the original (plus a block).
        field(
            "sparseness",
            x.kind == 0o100000 && x.blocks * 512 < x.size && y.blocks > x.blocks + 8,
        );
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            diffs.push(format!("extra {}", show(path)));
        }
    }
    if link_groups(&a) != link_groups(&b) {
        diffs.push("hard-link grouping".into());
    }
    diffs
}

fn link_groups(tree: &BTreeMap<Vec<u8>, Seen>) -> BTreeSet<Vec<Vec<u8>>> {
    let mut groups: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    for (path, s) in tree {
        if s.kind != 0o40000 && s.nlink > 1 {
            groups.entry(s.inode).or_default().push(path.clone());
        }
    }
    groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// Regular files below `root` (fd-relative, any depth) whose name is a
/// temporary name of ferry's.
pub fn temp_files(root: &Path) -> Vec<String> {
    scan(root)
        .keys()
        .filter(|p| {
            let name = p.rsplit(|&b| b == b'/').next().unwrap_or_default();
            name.starts_with(b".ferry~")
        })
        .map(|p| show(p))
        .collect()
}
