// SPDX-License-Identifier: MIT
//! The image manifest (`image/manifest.toml`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::kmod::normalize;
use crate::Context;
use crate::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub image: ImageInfo,
    pub kernel: Kernel,
    pub modules: Modules,
    pub partitions: Partitions,
    pub kconfig: Kconfig,
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub binaries: Vec<Binary>,
    #[serde(default)]
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    pub name: String,
    pub pretty_name: String,
    pub disk_size_gib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub package: String,
    pub cmdline: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    pub load: Vec<String>,
}

/// Kconfig symbols (without `CONFIG_`) for kernels built from source: the
/// Buildroot build's `linux.fragment` (see [`crate::buildroot`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kconfig {
    /// Built in (`=y`) whatever the modules.
    pub builtin: Vec<String>,
    /// Left out (`is not set`).
    #[serde(default)]
    pub disabled: Vec<String>,
    /// For each module of `[modules] load`, the options that build it in.
    pub modules: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub esp_mib: u64,
    pub data_mib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub files: Vec<String>,
    /// Buildroot options (`BR2_PACKAGE_...`) that build these files.
    #[serde(default)]
    pub buildroot: Vec<String>,
    /// Why the Buildroot build has no equivalent (when `buildroot` is empty).
    #[serde(default)]
    pub buildroot_note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// Cargo package that builds it.
    pub package: String,
    /// Cargo binary target name.
    pub bin: String,
    /// Path in the root file system.
    pub dest: String,
    /// The Buildroot option of the package that installs it there.
    pub buildroot: String,
}

/// A service for ferry-init (written to /usr/lib/ferry/services.yaml).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// The terminal the service runs on (the console menu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    /// Open-file limit ferry-init sets (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// The seccomp allow-list ferry-init confines it to (a profile of
    /// ferry-init's `seccomp` module: agent, console, diag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<String>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, Error> {
        let m: Manifest = toml::from_str(text).map_err(|e| Error::Manifest(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Manifest, Error> {
        let text = std::fs::read_to_string(path).ctx(|| format!("read {}", path.display()))?;
        Manifest::parse(&text).map_err(|e| Error::Manifest(format!("{}: {e}", path.display())))
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |s: String| Err(Error::Manifest(s));
        for s in &self.services {
            if s.exec.first().is_none_or(|p| !p.starts_with('/')) {
                return bad(format!(
                    "service {}: exec must start with an absolute path",
                    s.name
                ));
            }
            let provided = self.binaries.iter().any(|b| b.dest == s.exec[0])
                || self.packages.iter().any(|p| {
                    p.files
                        .iter()
                        .any(|f| crate::tree::usrmerge(f) == s.exec[0])
                });
            if !provided {
                return bad(format!(
                    "service {} runs {}, which no [[binaries]] or [[packages]] entry provides",
                    s.name, s.exec[0]
                ));
            }
        }
        if !self
            .binaries
            .iter()
            .any(|b| b.dest == "/usr/sbin/ferry-init")
        {
            return bad("the image needs ferry-init at /usr/sbin/ferry-init".into());
        }
        for p in &self.packages {
            if p.buildroot.is_empty() && p.buildroot_note.is_none() {
                return bad(format!(
                    "package {}: name its Buildroot options (buildroot = [...]) or say why there are none (buildroot_note)",
                    p.name
                ));
            }
        }
        let k = &self.kconfig;
        for sym in k
            .builtin
            .iter()
            .chain(&k.disabled)
            .chain(k.modules.values().flatten())
        {
            if sym.is_empty()
                || sym.starts_with("CONFIG_")
                || !sym
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                return bad(format!(
                    "[kconfig]: {sym:?} is not a Kconfig symbol (upper case, without CONFIG_)"
                ));
            }
        }
        let listed: BTreeSet<String> = self.modules.load.iter().map(|m| normalize(m)).collect();
        for m in &listed {
            if k.modules.get(m).is_none_or(|s| s.is_empty()) {
                return bad(format!(
                    "module {m} is loaded by the Debian build but [kconfig.modules] has no options that build it in"
                ));
            }
        }
        for m in k.modules.keys() {
            if !listed.contains(&normalize(m)) {
                return bad(format!(
                    "[kconfig.modules] {m} is not in [modules] load (remove it or load it in both builds)"
                ));
            }
        }
        for c in &self.kernel.cmdline {
            if c.starts_with("ferry.verity.") {
                return bad(format!("{c}: the builder sets ferry.verity.* itself"));
            }
        }
        Ok(())
    }

    /// `-p PKG --bin BIN` arguments for cargo, one pair per binary.
    pub fn cargo_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for b in &self.binaries {
            v.extend([
                "-p".into(),
                b.package.clone(),
                "--bin".into(),
                b.bin.clone(),
            ]);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_manifest_parses() {
        let m =
            Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.toml")).unwrap();
        assert_eq!(m.image.disk_size_gib, 80);
        assert!(m.kernel.cmdline.iter().any(|c| c == "lockdown=integrity"));
        assert!(m.modules.load.iter().any(|c| c == "dm_verity"));
        assert!(m
            .cargo_args()
            .windows(2)
            .any(|w| w == ["--bin", "ferry-init"]));
    }

    #[test]
    fn services_must_run_something_the_image_has() {
        let base =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.toml"))
                .unwrap();
        let bad = format!("{base}\n[[services]]\nname = \"x\"\nexec = [\"/usr/bin/missing\"]\n");
        let e = Manifest::parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("no [[binaries]] or [[packages]] entry provides"),
            "{e}"
        );
        let bad = base.replace("\"quiet\",", "\"quiet\", \"ferry.verity.blocks=1\",");
        assert!(Manifest::parse(&bad).is_err());
        let unknown = format!("{base}\n[extra]\nx = 1\n");
        assert!(Manifest::parse(&unknown).is_err());
    }

    #[test]
    fn every_module_has_kconfig_options_in_both_directions() {
        let base =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.toml"))
                .unwrap();
        let missing = base.replace("\"qemu_fw_cfg\",", "\"qemu_fw_cfg\", \"vfat\",");
        let e = Manifest::parse(&missing).unwrap_err().to_string();
        assert!(e.contains("module vfat is loaded"), "{e}");
        let extra = base.replace(
            "qemu_fw_cfg = [\"FW_CFG_SYSFS\"]",
            "qemu_fw_cfg = [\"FW_CFG_SYSFS\"]\nvfat = [\"VFAT_FS\"]",
        );
        let e = Manifest::parse(&extra).unwrap_err().to_string();
        assert!(e.contains("vfat is not in [modules] load"), "{e}");
        let prefixed = base.replace("\"DM_INIT\"", "\"CONFIG_DM_INIT\"");
        assert!(Manifest::parse(&prefixed).is_err());
        let silent = base.replace("buildroot = [\"BR2_PACKAGE_CHRONY\"]", "");
        let e = Manifest::parse(&silent).unwrap_err().to_string();
        assert!(
            e.contains("package chrony: name its Buildroot options"),
            "{e}"
        );
    }
}
