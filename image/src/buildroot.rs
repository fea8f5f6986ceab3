// SPDX-License-Identifier: MIT
//! The Buildroot build (`buildroot/`, a BR2_EXTERNAL tree) described by the
//! same manifest as the Debian one: the kernel configuration fragment
//! generated from `[kconfig]`, where each of our binaries is installed, and
//! the drift check between the manifest and the tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::manifest::Manifest;
use crate::Context;
use crate::{Error, Result};

/// Where the fragment lives in the tree.
pub const FRAGMENT: &str = "board/ferry/linux.fragment";
/// The defconfig of the tree.
pub const DEFCONFIG: &str = "configs/ferry_x86_64_defconfig";
/// The post-image script: it must hand the image to ferry-image and ferry-ovf.
pub const POST_IMAGE: &str = "board/ferry/post-image.sh";
pub const POST_BUILD: &str = "board/ferry/post-build.sh";

/// Kconfig lines: every option built in (`=y`), each once, in manifest order
/// (builtin first, then per module), then the disabled ones.
pub fn kernel_options(m: &Manifest) -> (Vec<String>, Vec<String>) {
    let mut seen = BTreeSet::new();
    let mut on = Vec::new();
    let k = &m.kconfig;
    let modules = m
        .modules
        .load
        .iter()
        .filter_map(|name| k.modules.get(&crate::kmod::normalize(name)));
    for sym in k.builtin.iter().chain(modules.flatten()) {
        if seen.insert(sym.clone()) {
            on.push(sym.clone());
        }
    }
    (on, k.disabled.clone())
}

/// The kernel configuration fragment (`buildroot/board/ferry/linux.fragment`).
pub fn kernel_fragment(m: &Manifest) -> String {
    let mut out = String::from(
        "# Generated from image/manifest.toml ([kconfig], [modules]) by\n\
         #   ferry-image kernel-fragment > buildroot/board/ferry/linux.fragment\n\
         # Do not edit: a test fails when this file and the manifest differ.\n",
    );
    let k = &m.kconfig;
    let mut seen = BTreeSet::new();
    out.push_str("\n# built in whatever the hardware\n");
    for sym in &k.builtin {
        if seen.insert(sym.clone()) {
            writeln!(out, "CONFIG_{sym}=y").ok();
        }
    }
    for name in &m.modules.load {
        let name = crate::kmod::normalize(name);
        let syms: Vec<&String> = k
            .modules
            .get(&name)
            .map(|v| v.iter().filter(|s| seen.insert((*s).clone())).collect())
            .unwrap_or_default();
        if syms.is_empty() {
            continue;
        }
        writeln!(out, "\n# module {name} (a module in the Debian kernel)").ok();
        for sym in syms {
            writeln!(out, "CONFIG_{sym}=y").ok();
        }
    }
    out.push_str("\n# left out (hardening)\n");
    for sym in &k.disabled {
        writeln!(out, "# CONFIG_{sym} is not set").ok();
    }
    out
}

/// Values of a `.config` or defconfig: `SYM=value` and `# SYM is not set`
/// (as `n`).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(sym) = rest.strip_suffix(" is not set") {
                v.insert(sym.to_string(), "n".to_string());
            }
        } else if let Some((sym, val)) = line.split_once('=') {
            if !line.starts_with('#') {
                v.insert(sym.to_string(), val.to_string());
            }
        }
    }
    v
}

/// Checks a kernel's final `.config` against the manifest: every option
/// the fragment asks for is built in, none of the disabled ones is on. An
/// option the kernel's Kconfig dropped (a dependency unmet, a renamed
/// symbol) is caught here rather than at boot.
pub fn check_kernel_config(m: &Manifest, config: &str) -> Result<()> {
    let v = parse_config(config);
    let (on, off) = kernel_options(m);
    let missing: Vec<String> = on
        .iter()
        .filter(|s| v.get(&format!("CONFIG_{s}")).map(String::as_str) != Some("y"))
        .map(|s| format!("CONFIG_{s}"))
        .collect();
    let unwanted: Vec<String> = off
        .iter()
        .filter(|s| {
            matches!(
                v.get(&format!("CONFIG_{s}")).map(String::as_str),
                Some("y" | "m")
            )
        })
        .map(|s| format!("CONFIG_{s}"))
        .collect();
    if missing.is_empty() && unwanted.is_empty() {
        return Ok(());
    }
    let mut why = String::from("the kernel configuration does not match image/manifest.toml:");
    if !missing.is_empty() {
        write!(why, " not built in: {} (a dependency is missing or the symbol was renamed: fix [kconfig] in the manifest, then regenerate {FRAGMENT});", missing.join(", ")).ok();
    }
    if !unwanted.is_empty() {
        write!(why, " on although disabled: {};", unwanted.join(", ")).ok();
    }
    Err(Error::Policy(why.trim_end_matches(';').to_string()))
}

/// `(bin, dest)` of the binaries a cargo package installs into the image.
pub fn install_list(m: &Manifest, package: &str) -> Vec<(String, String)> {
    m.binaries
        .iter()
        .filter(|b| b.package == package)
        .map(|b| (b.bin.clone(), b.dest.clone()))
        .collect()
}

fn read(tree: &Path, rel: &str) -> Result<String> {
    let p = tree.join(rel);
    fs::read_to_string(&p).ctx(|| format!("read {}", p.display()))
}

/// Compares the Buildroot tree at `tree` with the manifest; returns every
/// difference found (empty: in step). Buildroot's own Kconfig checks (are
/// the symbols real, do their dependencies hold) are scripts/check-buildroot's
/// job; this one needs no Buildroot source.
pub fn check_tree(m: &Manifest, tree: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();

    let fragment = read(tree, FRAGMENT)?;
    let want = kernel_fragment(m);
    if fragment != want {
        let line = fragment
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| fragment.lines().count().min(want.lines().count()))
            + 1;
        problems.push(format!(
            "{FRAGMENT} differs from the manifest (from line {line}): run `cargo run -q -p ferry-image -- kernel-fragment > buildroot/{FRAGMENT}`"
        ));
    }

    let defconfig = parse_config(&read(tree, DEFCONFIG)?);
    let mut need_on = |sym: &str, why: String| {
        if defconfig.get(sym).map(String::as_str) != Some("y") {
            problems.push(format!("{DEFCONFIG}: {sym}=y missing ({why})"));
        }
    };
    for p in &m.packages {
        for sym in &p.buildroot {
            need_on(sym, format!("package {} in the manifest", p.name));
        }
    }
    for b in &m.binaries {
        need_on(&b.buildroot, format!("binary {} in the manifest", b.bin));
    }
    need_on("BR2_INIT_NONE", "ferry-init is the init".into());
    need_on("BR2_SYSTEM_BIN_SH_NONE", "the image has no shell".into());
    for (sym, what) in [
        ("BR2_PACKAGE_BUSYBOX", "busybox is a shell"),
        ("BR2_TARGET_GENERIC_GETTY", "the image has no getty"),
    ] {
        if defconfig.get(sym).map(String::as_str) != Some("n") {
            problems.push(format!(
                "{DEFCONFIG}: `# {sym} is not set` missing ({what})"
            ));
        }
    }
    for (sym, path) in [
        ("BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES", FRAGMENT),
        ("BR2_ROOTFS_POST_BUILD_SCRIPT", POST_BUILD),
        ("BR2_ROOTFS_POST_IMAGE_SCRIPT", POST_IMAGE),
    ] {
        let want = format!("\"$(BR2_EXTERNAL_FERRY_PATH)/{path}\"");
        if defconfig.get(sym) != Some(&want) {
            problems.push(format!("{DEFCONFIG}: {sym} must be {want}"));
        }
    }

    // every package the manifest names is in the tree and in its menu
    let menu = read(tree, "Config.in")?;
    let mut ours: BTreeSet<&str> = BTreeSet::new();
    for b in &m.binaries {
        ours.insert(&b.buildroot);
    }
    for sym in ours {
        let dir = sym
            .strip_prefix("BR2_PACKAGE_")
            .unwrap_or(sym)
            .to_lowercase()
            .replace('_', "-");
        let config = format!("package/{dir}/Config.in");
        match read(tree, &config) {
            Ok(text) if text.contains(&format!("config {sym}\n")) => {}
            Ok(_) => problems.push(format!("{config} does not define {sym}")),
            Err(_) => problems.push(format!("{sym}: no {config} in the tree")),
        }
        if !menu.contains(&format!("$BR2_EXTERNAL_FERRY_PATH/{config}")) {
            problems.push(format!("Config.in does not source {config}"));
        }
        if !tree.join(format!("package/{dir}/{dir}.mk")).is_file() {
            problems.push(format!("{sym}: no package/{dir}/{dir}.mk in the tree"));
        }
    }

    // the scripts hand the work to ferry-image/ferry-ovf instead of repeating it
    for script in [POST_BUILD, POST_IMAGE] {
        let p = tree.join(script);
        match fs::metadata(&p) {
            Ok(md) if md.permissions().mode() & 0o111 != 0 => {}
            _ => problems.push(format!("{script} is missing or not executable")),
        }
    }
    let post_image = read(tree, POST_IMAGE)?;
    let unquoted = post_image.replace(['"', '\''], "");
    for needed in ["ferry-image assemble", "ferry-ovf"] {
        if !unquoted.contains(needed) {
            problems.push(format!("{POST_IMAGE} does not call `{needed}`"));
        }
    }
    for tool in [
        "genimage",
        "mkfs.",
        "veritysetup",
        "sgdisk",
        "sfdisk",
        "objcopy",
        "qemu-img",
    ] {
        if post_image.contains(tool) {
            problems.push(format!(
                "{POST_IMAGE} runs {tool} itself: the layout belongs to ferry-image (image/manifest.toml)"
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.toml")).unwrap()
    }

    #[test]
    fn fragment_builds_every_module_in_and_leaves_modules_out() {
        let m = manifest();
        let f = kernel_fragment(&m);
        for sym in [
            "DM_INIT",
            "DM_VERITY",
            "EROFS_FS",
            "VIRTIO_NET",
            "VMXNET3",
            "ENA_ETHERNET",
        ] {
            assert!(f.contains(&format!("\nCONFIG_{sym}=y\n")), "{sym}:\n{f}");
        }
        assert!(f.contains("# CONFIG_MODULES is not set\n"));
        // each option once, even when two modules share a menu
        let lines: Vec<&str> = f.lines().filter(|l| l.starts_with("CONFIG_")).collect();
        let unique: BTreeSet<&&str> = lines.iter().collect();
        assert_eq!(lines.len(), unique.len());
    }

    #[test]
    fn kernel_config_check_names_what_was_dropped() {
        let m = manifest();
        let (on, off) = kernel_options(&m);
        let mut good: String = on.iter().map(|s| format!("CONFIG_{s}=y\n")).collect();
        for s in &off {
            good.push_str(&format!("# CONFIG_{s} is not set\n"));
        }
        check_kernel_config(&m, &good).unwrap();
        let dropped = good.replace("CONFIG_DM_INIT=y\n", "# CONFIG_DM_INIT is not set\n");
        let e = check_kernel_config(&m, &dropped).unwrap_err().to_string();
        assert!(e.contains("not built in: CONFIG_DM_INIT"), "{e}");
        let modules = format!("{good}CONFIG_MODULES=y\n");
        let e = check_kernel_config(&m, &modules).unwrap_err().to_string();
        assert!(e.contains("on although disabled: CONFIG_MODULES"), "{e}");
    }

    #[test]
    fn install_list_follows_the_manifest() {
        let m = manifest();
        assert_eq!(
            install_list(&m, "ferry-init"),
            vec![("ferry-init".to_string(), "/usr/sbin/ferry-init".to_string())]
        );
        let agent = install_list(&m, "ferry");
        assert!(agent.contains(&("ferry-agent".into(), "/usr/bin/ferry-agent".into())));
    }
}
