// SPDX-License-Identifier: MIT
//! A staging root directory: files from packages and from our builds, and
//! the shared libraries of every ELF binary put in, collected automatically.
//!
//! Shared libraries are looked up (RUNPATH first, then the standard
//! directories) in the extracted packages; a library none of them has is
//! traced to the Debian package that owns it on the build machine
//! (`dpkg -S`), which is then downloaded into the cache and used, so the
//! image holds files from downloaded packages only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::debian::{self, Cache};
use crate::Context;
use crate::{elf, Error, Result};

/// `/bin/x` -> `/usr/bin/x` and the like (the root is usr-merged).
pub fn usrmerge(path: &str) -> String {
    for top in ["/bin/", "/sbin/", "/lib/", "/lib64/"] {
        if let Some(rest) = path.strip_prefix(top) {
            return format!("/usr{top}{rest}");
        }
    }
    path.to_string()
}

const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Resolves `path` inside `root`, following symlinks as if `root` were `/`.
pub fn resolve_in(root: &Path, path: &str) -> Option<PathBuf> {
    let mut current = path.to_string();
    for _ in 0..40 {
        // resolve parent directories' symlinks one component at a time
        let mut resolved = String::new();
        let mut comps = current.trim_start_matches('/').split('/').peekable();
        let mut restart = None;
        while let Some(c) = comps.next() {
            let candidate = format!("{resolved}/{c}");
            let host = root.join(candidate.trim_start_matches('/'));
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = fs::read_link(&host).ok()?;
                    let target = target.to_string_lossy();
                    let base = if target.starts_with('/') {
                        target.to_string()
                    } else {
                        format!("{resolved}/{target}")
                    };
                    let rest: Vec<&str> = comps.collect();
                    restart = Some(if rest.is_empty() {
                        base
                    } else {
                        format!("{base}/{}", rest.join("/"))
                    });
                    break;
                }
                Ok(_) => resolved = candidate,
                Err(_) => return None,
            }
        }
        match restart {
            Some(next) => current = normalize(&next),
            None => return Some(root.join(resolved.trim_start_matches('/'))),
        }
    }
    None
}

fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// A root directory being filled.
pub struct Tree<'c> {
    pub root: PathBuf,
    /// Extracted packages searched for shared libraries.
    pub search: Vec<PathBuf>,
    /// Where each file came from (destination -> source), for the build report.
    pub provenance: BTreeMap<String, String>,
    /// Libraries only from `search` (a Buildroot target directory), never
    /// from this machine.
    pub strict: bool,
    cache: Option<&'c Cache>,
    libs_done: BTreeSet<String>,
}

impl<'c> Tree<'c> {
    /// A fresh, empty root at `root` (emptied first), not usr-merged.
    pub fn plain(root: &Path, cache: Option<&'c Cache>) -> Result<Tree<'c>> {
        let _ = fs::remove_dir_all(root);
        fs::create_dir_all(root).ctx(|| format!("mkdir {}", root.display()))?;
        Ok(Tree {
            root: root.to_path_buf(),
            search: Vec::new(),
            provenance: BTreeMap::new(),
            strict: false,
            cache,
            libs_done: BTreeSet::new(),
        })
    }

    /// A fresh, usr-merged root at `root` (emptied first).
    pub fn new(root: &Path, cache: Option<&'c Cache>) -> Result<Tree<'c>> {
        let _ = fs::remove_dir_all(root);
        fs::create_dir_all(root.join("usr")).ctx(|| format!("mkdir {}", root.display()))?;
        let mut t = Tree {
            root: root.to_path_buf(),
            search: Vec::new(),
            provenance: BTreeMap::new(),
            strict: false,
            cache,
            libs_done: BTreeSet::new(),
        };
        for d in ["bin", "sbin", "lib", "lib64"] {
            t.dir(&format!("/usr/{d}"), 0o755)?;
            t.symlink(&format!("usr/{d}"), &format!("/{d}"))?;
        }
        Ok(t)
    }

    fn host(&self, dest: &str) -> PathBuf {
        self.root.join(dest.trim_start_matches('/'))
    }

    pub fn dir(&mut self, dest: &str, mode: u32) -> Result<()> {
        let p = self.host(dest);
        fs::create_dir_all(&p).ctx(|| format!("mkdir {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", p.display()))
    }

    pub fn write(&mut self, dest: &str, contents: &[u8], mode: u32) -> Result<()> {
        let p = self.host(dest);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        fs::write(&p, contents).ctx(|| format!("write {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", p.display()))?;
        self.provenance.insert(dest.to_string(), "generated".into());
        Ok(())
    }

    pub fn symlink(&mut self, target: &str, dest: &str) -> Result<()> {
        let p = self.host(dest);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).ctx(|| format!("symlink {}", p.display()))
    }

    /// Copies a file (its content, following symlinks) to `dest`. Setuid and
    /// setgid bits are never kept.
    pub fn copy(&mut self, src: &Path, dest: &str, mode: Option<u32>) -> Result<()> {
        let p = self.host(dest);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        let _ = fs::remove_file(&p);
        fs::copy(src, &p).ctx(|| format!("copy {} to {}", src.display(), dest))?;
        let src_mode = fs::metadata(src)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o644);
        let mode = mode.unwrap_or(src_mode) & 0o1777 & !0o6000;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", p.display()))?;
        self.provenance
            .insert(dest.to_string(), src.display().to_string());
        Ok(())
    }

    /// Copies a file from an extracted package (path as in the package),
    /// at its usr-merged place, with its shared libraries.
    pub fn add_from_package(&mut self, pkg_root: &Path, path: &str) -> Result<String> {
        let src = resolve_in(pkg_root, path)
            .filter(|p| p.is_file())
            .ok_or_else(|| Error::Missing(format!("{path} is not in {}", pkg_root.display())))?;
        let dest = usrmerge(path);
        self.copy(&src, &dest, None)?;
        self.add_libraries_of(&src)?;
        Ok(dest)
    }

    fn find_in_search(&self, dir: &str, name: &str) -> Option<PathBuf> {
        let path = format!("{dir}/{name}");
        let alt = usrmerge(&path);
        for root in &self.search {
            for p in [&path, &alt] {
                if let Some(found) = resolve_in(root, p).filter(|f| f.is_file()) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Finds a library: in the extracted packages, else through the Debian
    /// package owning it on this machine (downloaded into the cache).
    fn locate(&mut self, name: &str, dirs: &[String]) -> Result<(PathBuf, String)> {
        for d in dirs {
            if let Some(src) = self.find_in_search(d, name) {
                return Ok((src, usrmerge(&format!("{d}/{name}"))));
            }
        }
        for d in dirs.iter().filter(|_| !self.strict) {
            let host = format!("{d}/{name}");
            if !Path::new(&host).exists() {
                continue;
            }
            if let (Some(cache), Some(pkg)) = (self.cache, debian::owner_of(&host)) {
                let x = cache.extract(&pkg)?;
                self.search.push(x.root);
                if let Some(src) = self.find_in_search(d, name) {
                    return Ok((src, usrmerge(&host)));
                }
            }
            if self.cache.is_none() {
                // no package cache (tests, quick tools): take the machine's file
                return Ok((PathBuf::from(&host), usrmerge(&host)));
            }
        }
        let where_ = if self.strict {
            "in the target directory"
        } else {
            "in the packages nor on this machine"
        };
        Err(Error::Missing(format!(
            "shared library {name} not found {where_} (looked in {})",
            dirs.join(", ")
        )))
    }

    /// Copies the interpreter and every shared library `bin` needs,
    /// recursively.
    pub fn add_libraries_of(&mut self, bin: &Path) -> Result<()> {
        let Some(needs) = elf::needs(bin)? else {
            return Ok(());
        };
        if let Some(interp) = &needs.interpreter {
            if self.libs_done.insert(interp.clone()) {
                let (dir, name) = interp.rsplit_once('/').unwrap_or(("/lib64", interp));
                let (src, _) = self.locate(name, &[dir.to_string()])?;
                self.copy(&src, &usrmerge(interp), None)?;
            }
        }
        let mut dirs: Vec<String> = needs
            .runpath
            .iter()
            .filter(|r| r.starts_with('/'))
            .cloned()
            .collect();
        dirs.extend(LIB_DIRS.iter().map(|s| s.to_string()));
        for lib in needs.needed {
            if !self.libs_done.insert(lib.clone()) {
                continue;
            }
            let (src, dest) = self.locate(&lib, &dirs)?;
            self.copy(&src, &dest, None)?;
            self.add_libraries_of(&src)?;
        }
        Ok(())
    }

    /// Refuses what the appliance must not have: shells, setuid/setgid
    /// files, package managers, getty.
    pub fn check_policy(&self) -> Result<()> {
        let forbidden = [
            "sh", "bash", "dash", "ash", "busybox", "getty", "agetty", "login", "su", "sudo",
            "apt", "apt-get", "dpkg",
        ];
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).ctx(|| format!("read {}", d.display()))? {
                let e = e.ctx(|| format!("read {}", d.display()))?;
                let m = e
                    .path()
                    .symlink_metadata()
                    .ctx(|| format!("stat {}", e.path().display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if m.is_dir() {
                    stack.push(e.path());
                    continue;
                }
                if m.permissions().mode() & 0o6000 != 0 {
                    return Err(Error::Policy(format!(
                        "{} is setuid/setgid",
                        e.path().display()
                    )));
                }
                if forbidden.contains(&name.as_str()) {
                    return Err(Error::Policy(format!(
                        "{} must not be in the image",
                        e.path().display()
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usrmerge_paths() {
        assert_eq!(usrmerge("/sbin/mke2fs"), "/usr/sbin/mke2fs");
        assert_eq!(
            usrmerge("/lib64/ld-linux-x86-64.so.2"),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(usrmerge("/usr/bin/x"), "/usr/bin/x");
    }

    #[test]
    fn resolves_symlinks_inside_a_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(r.join("lib64")).unwrap();
        fs::write(r.join("lib/x86_64-linux-gnu/ld.so"), "x").unwrap();
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/ld.so", r.join("lib64/ld")).unwrap();
        std::os::unix::fs::symlink("../lib/x86_64-linux-gnu/ld.so", r.join("lib64/rel")).unwrap();
        assert_eq!(
            resolve_in(r, "/lib64/ld").unwrap(),
            r.join("lib/x86_64-linux-gnu/ld.so")
        );
        assert_eq!(
            resolve_in(r, "/lib64/rel").unwrap(),
            r.join("lib/x86_64-linux-gnu/ld.so")
        );
        assert!(resolve_in(r, "/lib64/none").is_none());
    }

    #[test]
    fn collects_libraries_of_a_real_binary_and_enforces_policy() {
        let t = tempfile::tempdir().unwrap();
        let mut tree = Tree::new(&t.path().join("root"), None).unwrap();
        tree.copy(Path::new("/usr/bin/cpio"), "/usr/bin/cpio", None)
            .unwrap();
        tree.add_libraries_of(Path::new("/usr/bin/cpio")).unwrap();
        assert!(t
            .path()
            .join("root/usr/lib/x86_64-linux-gnu/libc.so.6")
            .is_file());
        assert!(t
            .path()
            .join("root/usr/lib64/ld-linux-x86-64.so.2")
            .is_file());
        tree.check_policy().unwrap();
        tree.write("/usr/bin/sh", b"#!", 0o755).unwrap();
        assert!(tree
            .check_policy()
            .unwrap_err()
            .to_string()
            .contains("must not be in the image"));
        fs::remove_file(t.path().join("root/usr/bin/sh")).unwrap();
        tree.write("/usr/bin/x", b"x", 0o755).unwrap();
        fs::set_permissions(
            t.path().join("root/usr/bin/x"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        assert!(tree
            .check_policy()
            .unwrap_err()
            .to_string()
            .contains("setuid"));
    }
}
