// SPDX-License-Identifier: MIT
//! Kernel modules: the load order (dependencies first) of the modules a
//! manifest names, from the kernel package's modules.dep (made with
//! `depmod -b` when the package lacks it).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Context;
use crate::{run, Error, Result};

/// `dm-verity`, `dm_verity`: one name.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches(".ko").replace('-', "_")
}

fn module_name(path: &str) -> String {
    normalize(path.rsplit('/').next().unwrap_or(path))
}

/// The modules of one kernel release.
pub struct Kernel {
    pub release: String,
    /// `<root>/lib/modules/<release>`
    pub dir: PathBuf,
    deps: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

impl Kernel {
    /// Reads the kernel tree extracted at `root`.
    pub fn open(root: &Path) -> Result<Kernel> {
        let mods = root.join("lib/modules");
        let release = fs::read_dir(&mods)
            .ctx(|| format!("read {}", mods.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .ok_or_else(|| Error::Missing(format!("no kernel release in {}", mods.display())))?;
        let dir = mods.join(&release);
        if !dir.join("modules.dep").exists() {
            run(Command::new("depmod").arg("-b").arg(root).arg(&release))?;
        }
        let text = fs::read_to_string(dir.join("modules.dep"))
            .ctx(|| format!("read {}", dir.join("modules.dep").display()))?;
        Ok(Kernel {
            deps: parse_dep(&text),
            builtin: fs::read_to_string(dir.join("modules.builtin"))
                .unwrap_or_default()
                .lines()
                .map(module_name)
                .collect(),
            release,
            dir,
        })
    }

    /// Module files (relative to `dir`) in load order for `wanted`.
    /// Built-in modules are skipped; unknown ones are an error.
    pub fn load_order(&self, wanted: &[String]) -> Result<Vec<String>> {
        order(&self.deps, &self.builtin, wanted)
    }
}

/// name -> (path, dependency paths) from modules.dep.
pub fn parse_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                module_name(m),
                (
                    m.trim().to_string(),
                    d.split_whitespace().map(String::from).collect(),
                ),
            )
        })
        .collect()
}

fn order(
    deps: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
    wanted: &[String],
) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some((path, ds)) = deps.get(name) {
            // modules.dep lists dependencies so the last loads first
            for d in ds.iter().rev() {
                visit(&module_name(d), deps, seen, out);
            }
            out.push(path.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        let n = normalize(w);
        if deps.contains_key(&n) {
            visit(&n, deps, &mut seen, &mut out);
        } else if !builtin.contains(&n) {
            return Err(Error::Missing(format!(
                "kernel module {w} is neither a module nor built in"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/md/dm-mod.ko:\nkernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko\nkernel/lib/reed_solomon/reed_solomon.ko:\nkernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/reed_solomon/reed_solomon.ko\nkernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko\nkernel/lib/libcrc32c.ko:\n";

    #[test]
    fn dependencies_come_first_once() {
        let deps = parse_dep(DEP);
        let builtin: BTreeSet<String> = ["ext4".to_string()].into();
        let o = order(
            &deps,
            &builtin,
            &[
                "dm-verity".into(),
                "erofs".into(),
                "ext4".into(),
                "dm_mod".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            o,
            vec![
                "kernel/lib/reed_solomon/reed_solomon.ko",
                "kernel/drivers/md/dm-mod.ko",
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/drivers/md/dm-verity.ko",
                "kernel/lib/libcrc32c.ko",
                "kernel/fs/erofs/erofs.ko",
            ]
        );
        assert!(order(&deps, &builtin, &["nosuch".into()]).is_err());
    }
}
