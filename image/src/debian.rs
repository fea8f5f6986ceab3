// SPDX-License-Identifier: MIT
//! Debian packages: `apt-get download` into a cache directory (kept between
//! builds, so a rebuild needs no network), `dpkg-deb -x` into per-package
//! directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Context;
use crate::{run, Error, Result};

/// A cache of downloaded and extracted packages.
pub struct Cache {
    pub dir: PathBuf,
}

/// One extracted package.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub name: String,
    pub version: String,
    pub root: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path) -> Result<Cache> {
        for d in ["debs", "x"] {
            fs::create_dir_all(dir.join(d)).ctx(|| format!("mkdir {}", dir.display()))?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The default cache: `$FERRY_CACHE` or `~/.cache/ferry/debian`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("FERRY_CACHE") {
            return PathBuf::from(d);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp".into());
        home.join(".cache/ferry/debian")
    }

    fn find_deb(&self, name: &str) -> Option<PathBuf> {
        let prefix = format!("{}_", name.replace(':', "%3a"));
        let mut found: Vec<PathBuf> = fs::read_dir(self.dir.join("debs"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .collect();
        found.sort();
        found.pop()
    }

    /// The .deb of a package, downloading it if the cache lacks it.
    pub fn deb(&self, name: &str) -> Result<PathBuf> {
        if let Some(p) = self.find_deb(name) {
            return Ok(p);
        }
        run(Command::new("apt-get")
            .args(["download", "-q", name])
            .current_dir(self.dir.join("debs")))
        .map_err(|e| {
            Error::Missing(format!(
                "Debian package {name}: {e} (run `apt-get update` first?)"
            ))
        })?;
        self.find_deb(name)
            .ok_or_else(|| Error::Missing(format!("apt-get download {name} left no .deb")))
    }

    /// A control field of a .deb (`Depends`, `Version`...).
    pub fn field(deb: &Path, field: &str) -> Result<String> {
        Ok(run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))?
            .trim()
            .to_string())
    }

    /// Downloads (if needed) and extracts a package.
    pub fn extract(&self, name: &str) -> Result<Extracted> {
        let deb = self.deb(name)?;
        let stem = deb
            .file_stem()
            .expect("a .deb file name")
            .to_string_lossy()
            .into_owned();
        let root = self.dir.join("x").join(&stem);
        if !root.join(".complete").exists() {
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).ctx(|| format!("mkdir {}", root.display()))?;
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            fs::write(root.join(".complete"), "")
                .ctx(|| format!("mark {} extracted", root.display()))?;
        }
        Ok(Extracted {
            name: name.to_string(),
            version: Cache::field(&deb, "Version")?,
            root,
        })
    }

    /// The library packages (`lib*`) a package depends or pre-depends on: where
    /// its binaries' shared libraries come from.
    pub fn library_depends(&self, name: &str) -> Result<Vec<String>> {
        let deb = self.deb(name)?;
        let depends = format!(
            "{}, {}",
            Cache::field(&deb, "Pre-Depends")?,
            Cache::field(&deb, "Depends")?
        );
        Ok(parse_depends(&depends)
            .into_iter()
            .filter(|d| d.starts_with("lib"))
            .collect())
    }

    /// Follows a kernel metapackage (`linux-image-cloud-amd64`) to the
    /// versioned image package it depends on, and extracts that.
    pub fn kernel(&self, meta: &str) -> Result<Extracted> {
        let deb = self.deb(meta)?;
        let depends = Cache::field(&deb, "Depends")?;
        let image = depends
            .split(',')
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .find(|d| d.starts_with("linux-image-"))
            .ok_or_else(|| Error::Missing(format!("{meta} depends on no linux-image-* package")))?
            .to_string();
        self.extract(&image)
    }
}

/// Package names of a Depends field (first of each alternative).
pub fn parse_depends(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|d| d.split('|').next())
        .filter_map(|d| d.split_whitespace().next())
        .map(|d| d.split(':').next().unwrap_or(d).to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// The Debian package that installed a file on this machine (`dpkg -S`),
/// trying the merged and unmerged spellings of the path.
pub fn owner_of(path: &str) -> Option<String> {
    let mut candidates = vec![path.to_string()];
    for (a, b) in [("/usr/lib/", "/lib/"), ("/lib/", "/usr/lib/")] {
        if let Some(rest) = path.strip_prefix(a) {
            candidates.push(format!("{b}{rest}"));
        }
    }
    for c in candidates {
        if let Ok(out) = run(Command::new("dpkg").args(["-S", &c])) {
            if let Some(line) = out.lines().next() {
                if let Some((pkg, _)) = line.split_once(": ") {
                    let pkg = pkg.split(',').next()?.trim();
                    let pkg = pkg.split(':').next().unwrap_or(pkg);
                    return Some(pkg.to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_depends_fields() {
        assert_eq!(
            super::parse_depends(
                "libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), zlib1g | libz-ng, foo:any"
            ),
            vec!["libc6", "libcrypt1", "zlib1g", "foo"]
        );
    }
}
