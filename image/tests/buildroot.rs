// SPDX-License-Identifier: MIT
//! The Buildroot tree (`buildroot/`) and the manifest describe one image:
//! these tests fail when they drift apart. (Buildroot's own Kconfig checks
//! need a Buildroot source tree: `scripts/check-buildroot`.)

use std::fs;
use std::path::{Path, PathBuf};

use ferry_image::buildroot::{self, check_tree, kernel_fragment};
use ferry_image::manifest::Manifest;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifest() -> Manifest {
    Manifest::load(&root().join("image/manifest.toml")).unwrap()
}

/// A copy of buildroot/ to break.
fn copy_tree() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("buildroot");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(root().join("buildroot"))
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success());
    (t, dest)
}

fn edit(tree: &Path, rel: &str, from: &str, to: &str) {
    let p = tree.join(rel);
    let text = fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{rel} has no {from:?}");
    fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_buildroot_tree_matches_the_manifest() {
    let problems = check_tree(&manifest(), &root().join("buildroot")).unwrap();
    assert!(
        problems.is_empty(),
        "buildroot/ and image/manifest.toml differ:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_fragment_in_the_tree_is_the_generated_one() {
    let on_disk = fs::read_to_string(root().join("buildroot").join(buildroot::FRAGMENT)).unwrap();
    assert_eq!(
        on_disk,
        kernel_fragment(&manifest()),
        "regenerate: cargo run -q -p ferry-image -- kernel-fragment > buildroot/{}",
        buildroot::FRAGMENT
    );
}

#[test]
fn drift_is_caught() {
    let m = manifest();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            buildroot::FRAGMENT,
            "CONFIG_DM_VERITY=y\n",
            "",
            "linux.fragment differs from the manifest",
        ),
        (
            buildroot::DEFCONFIG,
            "BR2_PACKAGE_CHRONY=y\n",
            "",
            "BR2_PACKAGE_CHRONY=y missing (package chrony",
        ),
        (
            buildroot::DEFCONFIG,
            "# BR2_PACKAGE_BUSYBOX is not set\n",
            "",
            "BR2_PACKAGE_BUSYBOX is not set` missing",
        ),
        (
            buildroot::DEFCONFIG,
            "BR2_INIT_NONE=y",
            "BR2_INIT_BUSYBOX=y",
            "BR2_INIT_NONE=y missing",
        ),
        (
            "Config.in",
            "\tsource \"$BR2_EXTERNAL_FERRY_PATH/package/ferry-agent/Config.in\"\n",
            "",
            "Config.in does not source package/ferry-agent/Config.in",
        ),
        (
            buildroot::POST_IMAGE,
            "\"$HOST_DIR/bin/ferry-ovf\"",
            "qemu-img convert -O vmdk",
            "does not call `ferry-ovf`",
        ),
        (
            buildroot::POST_IMAGE,
            "set -euo pipefail\n",
            "set -euo pipefail\nmkfs.erofs x y\n",
            "runs mkfs. itself",
        ),
    ];
    for (file, from, to, expect) in cases {
        let (_t, tree) = copy_tree();
        edit(&tree, file, from, to);
        let problems = check_tree(&m, &tree).unwrap();
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "{file}: {from:?} -> {to:?}: expected {expect:?}, got {problems:?}"
        );
    }
    // a module added to the Debian build only is refused by the manifest itself
    let text = fs::read_to_string(root().join("image/manifest.toml")).unwrap();
    let added = text.replace("\"qemu_fw_cfg\",", "\"qemu_fw_cfg\", \"vfat\",");
    assert!(Manifest::parse(&added).is_err());
}

/// A static executable standing in for our binaries (musl-gcc, from
/// musl-tools, as the offline build uses).
fn static_binary(dir: &Path) -> PathBuf {
    let src = dir.join("stub.c");
    fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let out = dir.join("stub");
    let status = std::process::Command::new("musl-gcc")
        .arg("-static")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("musl-gcc (Debian musl-tools, see scripts/apt-packages)");
    assert!(status.success());
    out
}

fn put(target: &Path, dest: &str, src: &Path) {
    let p = target.join(dest.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::copy(src, &p).unwrap();
}

/// `ferry-image assemble` on a directory laid out as Buildroot's target
/// directory (merged /usr; dynamic programs with their libraries inside it):
/// the root holds the manifest's files, libraries come from the target
/// directory only, the kernel .config is checked, the disk is written.
#[test]
fn assemble_from_a_buildroot_target_directory() {
    use ferry_image::appliance::{self, Options, Source};
    let m = manifest();
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    for d in ["bin", "sbin", "lib"] {
        fs::create_dir_all(target.join("usr").join(d)).unwrap();
        std::os::unix::fs::symlink(format!("usr/{d}"), target.join(d)).unwrap();
    }
    let stub = static_binary(t.path());
    for b in &m.binaries {
        put(&target, &b.dest, &stub);
    }
    // the packages' programs: any dynamic executable will do
    let program = Path::new("/usr/bin/true");
    for p in m.packages.iter().filter(|p| !p.buildroot.is_empty()) {
        for f in &p.files {
            put(&target, &ferry_image::tree::usrmerge(f), program);
        }
    }
    let linux = t.path().join("linux-6.18.33");
    fs::create_dir_all(linux.join("include/config")).unwrap();
    fs::write(linux.join("include/config/kernel.release"), "6.18.33\n").unwrap();
    let (on, off) = buildroot::kernel_options(&m);
    let mut config: String = on.iter().map(|s| format!("CONFIG_{s}=y\n")).collect();
    config.extend(off.iter().map(|s| format!("# CONFIG_{s} is not set\n")));
    fs::write(linux.join(".config"), &config).unwrap();
    let bzimage = t.path().join("bzImage");
    fs::write(&bzimage, vec![0u8; 4096]).unwrap();
    let out = t.path().join("images");
    let opts = Options {
        source: Source::Buildroot {
            target: target.clone(),
            kernel: bzimage,
            kernel_config: linux.join(".config"),
        },
        binaries: PathBuf::from("/nonexistent"),
        out: out.clone(),
        cache: PathBuf::from("/nonexistent"),
        sign: None,
        efi_stub: appliance::STUB.into(),
        gptmbr: appliance::GPTMBR.into(),
    };

    // the C library is on this machine but not in the target: refused
    let e = appliance::build(&m, &opts).unwrap_err().to_string();
    assert!(e.contains("not found in the target directory"), "{e}");

    for lib in [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/ld-linux-x86-64.so.2",
    ] {
        put(&target, lib, Path::new(lib));
    }
    // a kernel that lost an option the manifest asks for: refused
    fs::write(
        linux.join(".config"),
        config.replace("CONFIG_DM_INIT=y\n", ""),
    )
    .unwrap();
    let e = appliance::build(&m, &opts).unwrap_err().to_string();
    assert!(e.contains("not built in: CONFIG_DM_INIT"), "{e}");

    fs::write(linux.join(".config"), &config).unwrap();
    let built = appliance::build(&m, &opts).unwrap();
    let report = fs::read_to_string(&built.report).unwrap();
    assert!(report.contains("kernel 6.18.33 from"), "{report}");
    assert!(report.contains("modules 0"), "{report}");
    assert!(
        report.contains("package systemd: not in the Buildroot build"),
        "{report}"
    );
    let chronyd = format!(
        "file /usr/sbin/chronyd <- {}",
        target.join("usr/sbin/chronyd").display()
    );
    assert!(report.contains(&chronyd), "{report}");
    let libc = format!(
        "file /usr/lib/x86_64-linux-gnu/libc.so.6 <- {}",
        target.join("usr/lib/x86_64-linux-gnu/libc.so.6").display()
    );
    assert!(report.contains(&libc), "{report}");
    for label in ["esp", "ferry-root", "ferry-verity", "ferry-data"] {
        assert!(
            report.contains(&format!("partition {label} ")),
            "{label}: {report}"
        );
    }
    let rootfs = out.join("work/rootfs");
    assert!(rootfs.join("usr/sbin/ferry-init").is_file());
    assert!(!rootfs.join("usr/lib/systemd/systemd-journald").exists());
    assert!(rootfs.join("usr/lib/ferry/services.yaml").is_file());
    assert_eq!(
        fs::metadata(&built.raw).unwrap().len(),
        m.image.disk_size_gib << 30
    );
}
