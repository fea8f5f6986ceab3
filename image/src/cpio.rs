// SPDX-License-Identifier: MIT
//! Deterministic cpio archives (newc, as the kernel reads initramfs):
//! entries sorted by path, owner root, mtime 0, inode numbers in order.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::Context;
use crate::{Error, Result};

/// An entry not backed by a file in the tree (device nodes).
#[derive(Debug, Clone)]
pub struct Node {
    pub path: String,
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
}

impl Node {
    /// The console node the kernel opens for the initramfs's /init.
    pub fn console() -> Node {
        Node {
            path: "dev/console".into(),
            mode: 0o020600,
            major: 5,
            minor: 1,
        }
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: u32, rdev: (u32, u32), name: &str) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn walk(root: &Path, dir: &Path, acc: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir).ctx(|| format!("read {}", dir.display()))? {
        let e = e.ctx(|| format!("read {}", dir.display()))?;
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        acc.push(rel);
        if e.file_type()
            .ctx(|| format!("stat {}", p.display()))?
            .is_dir()
        {
            walk(root, &p, acc)?;
        }
    }
    Ok(())
}

/// Archives the directory `root` plus `nodes` into `out`.
pub fn write(root: &Path, nodes: &[Node], out: &Path) -> Result<()> {
    let mut paths = Vec::new();
    walk(root, root, &mut paths)?;
    let mut entries: Vec<(String, Option<&Node>)> = paths.into_iter().map(|p| (p, None)).collect();
    entries.extend(nodes.iter().map(|n| (n.path.clone(), Some(n))));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::new();
    for (i, (path, node)) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        if let Some(n) = node {
            header(&mut buf, ino, n.mode, 0, (n.major, n.minor), path);
            continue;
        }
        let full = root.join(path);
        let m = fs::symlink_metadata(&full).ctx(|| format!("stat {}", full.display()))?;
        let perm = m.permissions().mode() & 0o7777;
        if m.file_type().is_symlink() {
            let target = fs::read_link(&full).ctx(|| format!("readlink {}", full.display()))?;
            let t = target.to_string_lossy();
            header(&mut buf, ino, 0o120777, t.len() as u32, (0, 0), path);
            buf.extend_from_slice(t.as_bytes());
            pad4(&mut buf);
        } else if m.is_dir() {
            header(&mut buf, ino, 0o040000 | perm, 0, (0, 0), path);
        } else if m.is_file() {
            let data = fs::read(&full).ctx(|| format!("read {}", full.display()))?;
            header(
                &mut buf,
                ino,
                0o100000 | perm,
                data.len() as u32,
                (0, 0),
                path,
            );
            buf.extend_from_slice(&data);
            pad4(&mut buf);
        } else {
            return Err(Error::Policy(format!(
                "{}: unsupported file type (mode {:o})",
                full.display(),
                m.mode()
            )));
        }
    }
    header(&mut buf, 0, 0, 0, (0, 0), "TRAILER!!!");
    let mut f = fs::File::create(out).ctx(|| format!("create {}", out.display()))?;
    f.write_all(&buf).ctx(|| format!("write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn archives_are_deterministic_and_readable_by_cpio() {
        let t = tempfile::tempdir().unwrap();
        let mk = |name: &str, order: &[&str]| {
            let root = t.path().join(name);
            for f in order {
                let p = root.join(f);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, f.as_bytes()).unwrap();
            }
            std::os::unix::fs::symlink("b/c", root.join("link")).unwrap();
            root
        };
        let r1 = mk("one", &["a", "b/c", "b/d"]);
        let r2 = mk("two", &["b/d", "b/c", "a"]);
        let (o1, o2) = (t.path().join("1.cpio"), t.path().join("2.cpio"));
        write(&r1, &[Node::console()], &o1).unwrap();
        write(&r2, &[Node::console()], &o2).unwrap();
        assert_eq!(fs::read(&o1).unwrap(), fs::read(&o2).unwrap());
        let out = Command::new("cpio")
            .args(["-t", "-v", "-F"])
            .arg(&o1)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        for want in ["a", "b/c", "dev/console", "link -> b/c"] {
            assert!(listing.contains(want), "{want} missing in {listing}");
        }
    }
}
