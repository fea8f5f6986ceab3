// SPDX-License-Identifier: MIT
//! The appliance disk, `out/ferry.raw`: GPT with an ESP (unified kernel
//! image for UEFI, syslinux for BIOS), the erofs root, its dm-verity hash
//! tree, and a small data partition that ferry-init grows on first boot.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_gpt::{align_up, types, Guid, Partition, Table, ATTR_LEGACY_BIOS_BOOTABLE, SECTOR};
use sha2::{Digest, Sha256};

use crate::cpio::{self, Node};
use crate::debian::Cache;
use crate::fsimage::{self, hex};
use crate::kmod::Kernel;
use crate::manifest::Manifest;
use crate::tree::Tree;
use crate::Context;
use crate::{elf, run, Error, Result};

/// systemd-boot's EFI stub (Debian `systemd-boot-efi`), the UKI's loader.
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// syslinux's GPT boot code (Debian `syslinux`).
pub const GPTMBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";

/// Where the kernel, the packages' files and our binaries come from.
pub enum Source {
    /// Debian packages (downloaded into [`Options::cache`]), the kernel's
    /// modules loaded by the initramfs, our static binaries from
    /// [`Options::binaries`].
    Debian,
    /// A Buildroot build (`buildroot/`): its target directory holds the
    /// packages' files and our binaries (at their manifest destinations),
    /// the kernel has every module built in.
    Buildroot {
        /// `$(TARGET_DIR)`
        target: PathBuf,
        /// The kernel image (`$(BINARIES_DIR)/bzImage`).
        kernel: PathBuf,
        /// The kernel's final `.config`, checked against `[kconfig]`.
        kernel_config: PathBuf,
    },
}

pub struct Options {
    pub source: Source,
    /// Directory with the static binaries (target/x86_64-unknown-linux-musl/release).
    pub binaries: PathBuf,
    /// Output directory (`out`).
    pub out: PathBuf,
    /// Debian package cache.
    pub cache: PathBuf,
    /// Secure Boot signing key and certificate (PEM) for the UKI, if any.
    pub sign: Option<(PathBuf, PathBuf)>,
    /// The EFI stub of the UKI ([`STUB`] by default).
    pub efi_stub: PathBuf,
    /// The GPT boot code for BIOS ([`GPTMBR`] by default).
    pub gptmbr: PathBuf,
}

/// Signs a PE image (the UKI) for Secure Boot with `sbsign`. The key must
/// not be passphrase-protected.
pub fn sign_efi(key: &Path, cert: &Path, input: &Path, output: &Path) -> Result<()> {
    run(Command::new("sbsign")
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .arg("--output")
        .arg(output)
        .arg(input))?;
    Ok(())
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    pub raw: PathBuf,
    pub roothash: String,
    pub root_sha256: String,
    pub root_bytes: u64,
    pub cmdline: String,
    pub report: PathBuf,
}

fn guid(seed: &str) -> Guid {
    Guid::from_hash(&Sha256::digest(seed.as_bytes()))
}

/// Where ferry-init is in the root (the manifest checks it is listed).
const INIT: &str = "/usr/sbin/ferry-init";

/// Checks a listed binary exists and, unless `dynamic_ok`, is static.
fn check_binary(src: &Path, bin: &str, package: &str, dynamic_ok: bool) -> Result<()> {
    if !src.is_file() {
        return Err(Error::Missing(format!(
            "binary {bin} (cargo package {package}) is listed in image/manifest.toml but missing at {}: \
             build it with `scripts/build-image` (cargo build --release --target x86_64-unknown-linux-musl -p {package} --bin {bin})",
            src.display()
        )));
    }
    if let Some(n) = elf::needs(src)? {
        if !dynamic_ok && (n.interpreter.is_some() || !n.needed.is_empty()) {
            return Err(Error::Policy(format!(
                "{} is dynamically linked; the image takes static (musl) binaries",
                src.display()
            )));
        }
    }
    Ok(())
}

/// The root file system tree.
fn rootfs(
    m: &Manifest,
    opt: &Options,
    cache: Option<&Cache>,
    dir: &Path,
    report: &mut String,
) -> Result<()> {
    let mut t = Tree::new(dir, cache)?;
    for (d, mode) in [
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
        ("/run", 0o755),
        ("/tmp", 0o1777),
        ("/etc", 0o755),
        ("/var", 0o755),
        ("/data", 0o755),
        ("/root", 0o700),
        ("/usr/lib/ferry", 0o755),
    ] {
        t.dir(d, mode)?;
    }
    match (&opt.source, cache) {
        (Source::Buildroot { target, .. }, _) => buildroot_files(m, &mut t, target, report)?,
        (Source::Debian, Some(cache)) => debian_files(m, opt, &mut t, cache, report)?,
        (Source::Debian, None) => unreachable!("the Debian build has a package cache"),
    }
    let version = env!("CARGO_PKG_VERSION");
    t.write(
        "/usr/lib/os-release",
        format!(
            "NAME=\"Ferry\"\nPRETTY_NAME=\"{} {version}\"\nID=ferry\nVERSION_ID={version}\nHOME_URL=\"https://github.com/ferry-sync/ferry\"\n",
            m.image.pretty_name
        )
        .as_bytes(),
        0o644,
    )?;
    let services =
        serde_yaml::to_string(&m.services).map_err(|e| Error::Manifest(e.to_string()))?;
    t.write("/usr/lib/ferry/services.yaml", services.as_bytes(), 0o644)?;
    t.check_policy()?;
    for (dest, src) in &t.provenance {
        writeln!(report, "file {dest} <- {src}").ok();
    }
    Ok(())
}

/// Our binaries and the packages' files from a Buildroot target directory;
/// shared libraries from there too, never from this machine.
fn buildroot_files(m: &Manifest, t: &mut Tree, target: &Path, report: &mut String) -> Result<()> {
    t.search.push(target.to_path_buf());
    t.strict = true;
    for b in &m.binaries {
        let src = crate::tree::resolve_in(target, &b.dest).unwrap_or_else(|| target.join(&b.dest));
        // ferry-init is also the initramfs' /init, where there are no libraries
        let dynamic_ok = b.dest != INIT;
        check_binary(&src, &b.bin, &b.package, dynamic_ok)?;
        t.copy(&src, &b.dest, Some(0o755))?;
        t.add_libraries_of(&src)?;
    }
    for p in &m.packages {
        if p.buildroot.is_empty() {
            writeln!(
                report,
                "package {}: not in the Buildroot build ({})",
                p.name,
                p.buildroot_note.as_deref().unwrap_or("")
            )
            .ok();
            continue;
        }
        writeln!(report, "package {} from {}", p.name, p.buildroot.join(" ")).ok();
        for f in &p.files {
            t.add_from_package(target, f)?;
        }
    }
    Ok(())
}

/// Our static binaries, and the packages' files from Debian packages.
fn debian_files(
    m: &Manifest,
    opt: &Options,
    t: &mut Tree,
    cache: &Cache,
    report: &mut String,
) -> Result<()> {
    for b in &m.binaries {
        let src = opt.binaries.join(&b.bin);
        check_binary(&src, &b.bin, &b.package, false)?;
        t.copy(&src, &b.dest, Some(0o755))?;
    }
    for p in &m.packages {
        let x = cache.extract(&p.name)?;
        writeln!(report, "package {} {}", x.name, x.version).ok();
        t.search.push(x.root.clone());
        for lib in cache.library_depends(&p.name)? {
            let l = cache.extract(&lib)?;
            writeln!(
                report,
                "package {} {} (library of {})",
                l.name, l.version, p.name
            )
            .ok();
            t.search.push(l.root);
        }
        for f in &p.files {
            t.add_from_package(&x.root, f)?;
        }
    }
    Ok(())
}

/// The kernel's modules to put in the initramfs, in load order.
struct Modules<'k> {
    release: String,
    kernel: Option<&'k Kernel>,
    order: Vec<String>,
}

/// The initramfs: ferry-init (`init`) as /init, the modules, their load order.
fn initramfs(init: &Path, modules: &Modules, dir: &Path, out: &Path) -> Result<()> {
    let mut t = Tree::plain(dir, None)?;
    for d in ["/dev", "/proc", "/sys", "/newroot", "/etc/ferry"] {
        t.dir(d, 0o755)?;
    }
    t.copy(init, "/init", Some(0o755))?;
    t.write(
        "/etc/ferry-initramfs",
        format!("{}\n", modules.release).as_bytes(),
        0o644,
    )?;
    let order = &modules.order;
    t.write(
        "/etc/ferry/modules",
        format!("{}\n", order.join("\n")).as_bytes(),
        0o644,
    )?;
    for rel in order {
        let kernel = modules.kernel.expect("modules come with their kernel");
        t.copy(
            &kernel.dir.join(rel),
            &format!("/lib/modules/{}/{rel}", kernel.release),
            Some(0o644),
        )?;
    }
    cpio::write(dir, &[Node::console()], out)
}

/// A unified kernel image: systemd-boot's stub with kernel, initrd, command
/// line and os-release as PE sections (one file to sign).
fn uki(
    stub: &Path,
    vmlinuz: &Path,
    initrd: &Path,
    cmdline: &str,
    work: &Path,
    out: &Path,
) -> Result<()> {
    let osrel = work.join("uki-os-release");
    fs::write(&osrel, "NAME=\"Ferry\"\nID=ferry\n").ctx(|| format!("write {}", osrel.display()))?;
    let cmd = work.join("uki-cmdline");
    fs::write(&cmd, format!("{cmdline}\0")).ctx(|| format!("write {}", cmd.display()))?;
    let linux_size = fs::metadata(vmlinuz)
        .ctx(|| format!("stat {}", vmlinuz.display()))?
        .len();
    let linux_vma: u64 = 0x200_0000;
    let initrd_vma = (linux_vma + linux_size).div_ceil(0x10_0000) * 0x10_0000 + 0x10_0000;
    let _ = fs::remove_file(out);
    run(Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".osrel={}", osrel.display()))
        .args(["--change-section-vma", ".osrel=0x20000"])
        .arg("--add-section")
        .arg(format!(".cmdline={}", cmd.display()))
        .args(["--change-section-vma", ".cmdline=0x30000"])
        .arg("--add-section")
        .arg(format!(".linux={}", vmlinuz.display()))
        .args(["--change-section-vma", &format!(".linux={linux_vma:#x}")])
        .arg("--add-section")
        .arg(format!(".initrd={}", initrd.display()))
        .args(["--change-section-vma", &format!(".initrd={initrd_vma:#x}")])
        .arg(stub)
        .arg(out))?;
    Ok(())
}

/// The ESP: FAT with the UKI as the default UEFI loader, and syslinux with
/// the same kernel, initrd and command line for BIOS.
fn esp(
    m: &Manifest,
    uki: &Path,
    vmlinuz: &Path,
    initrd: &Path,
    cmdline: &str,
    work: &Path,
) -> Result<PathBuf> {
    let img = work.join("esp.vfat");
    let _ = fs::remove_file(&img);
    File::create(&img)
        .and_then(|f| f.set_len(m.partitions.esp_mib << 20))
        .ctx(|| format!("create the ESP image {}", img.display()))?;
    run(Command::new("mkfs.vfat")
        .args(["--invariant", "-i", "46455259", "-n", "FERRY-ESP"])
        .arg(&img))?;
    let cfg = work.join("syslinux.cfg");
    fs::write(
        &cfg,
        format!("DEFAULT ferry\nPROMPT 0\nTIMEOUT 0\nLABEL ferry\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {cmdline}\n"),
    )
    .ctx(|| format!("write {}", cfg.display()))?;
    let i = img.to_string_lossy().into_owned();
    run(Command::new("mmd").args(["-i", &i, "::/EFI", "::/EFI/BOOT"]))?;
    for (src, dest) in [
        (uki, "::/EFI/BOOT/BOOTX64.EFI"),
        (vmlinuz, "::/vmlinuz"),
        (initrd, "::/initrd.img"),
        (cfg.as_path(), "::/syslinux.cfg"),
    ] {
        run(Command::new("mcopy").args(["-i", &i]).arg(src).arg(dest))?;
    }
    run(Command::new("syslinux").args(["--install", &i]))?;
    Ok(img)
}

fn copy_at(disk: &mut File, src: &Path, offset: u64) -> Result<()> {
    let mut f = File::open(src).ctx(|| format!("open the partition image {}", src.display()))?;
    disk.seek(SeekFrom::Start(offset))
        .ctx(|| format!("seek to {offset} in the disk image"))?;
    io::copy(&mut f, disk).ctx(|| format!("copy {} into the disk image", src.display()))?;
    Ok(())
}

/// Builds everything; returns where and what.
pub fn build(m: &Manifest, opt: &Options) -> Result<Built> {
    let work = opt.out.join("work");
    fs::create_dir_all(&work).ctx(|| format!("mkdir {}", work.display()))?;
    let mut report = String::new();

    // kernel and modules
    let cache;
    let debian_kernel;
    let (vmlinuz, modules) = match &opt.source {
        Source::Debian => {
            cache = Some(Cache::new(&opt.cache)?);
            let c = cache.as_ref().expect("just set");
            let kpkg = c.kernel(&m.kernel.package)?;
            writeln!(report, "package {} {}", kpkg.name, kpkg.version).ok();
            debian_kernel = Kernel::open(&kpkg.root)?;
            let vmlinuz = kpkg
                .root
                .join(format!("boot/vmlinuz-{}", debian_kernel.release));
            if !vmlinuz.is_file() {
                return Err(Error::Missing(format!("{} has no kernel", kpkg.name)));
            }
            let order = debian_kernel.load_order(&m.modules.load)?;
            let modules = Modules {
                release: debian_kernel.release.clone(),
                kernel: Some(&debian_kernel),
                order,
            };
            (vmlinuz, modules)
        }
        Source::Buildroot {
            kernel,
            kernel_config,
            ..
        } => {
            cache = None;
            let config = fs::read_to_string(kernel_config)
                .ctx(|| format!("read {}", kernel_config.display()))?;
            crate::buildroot::check_kernel_config(m, &config)?;
            // Buildroot's kernel build dir has the release next to .config
            let release = kernel_config
                .parent()
                .map(|d| d.join("include/config/kernel.release"))
                .and_then(|p| fs::read_to_string(p).ok())
                .map(|r| r.trim().to_string())
                .unwrap_or_else(|| "unknown".into());
            writeln!(
                report,
                "kernel {release} from {}, every module built in",
                kernel.display()
            )
            .ok();
            let modules = Modules {
                release,
                kernel: None,
                order: Vec::new(),
            };
            (kernel.clone(), modules)
        }
    };
    writeln!(report, "modules {}", modules.order.len()).ok();

    // root file system, erofs, dm-verity
    let root_dir = work.join("rootfs");
    rootfs(m, opt, cache.as_ref(), &root_dir, &mut report)?;
    let root_img = work.join("root.erofs");
    let uuid = guid(&format!("{}-root", m.image.name))
        .to_string()
        .to_lowercase();
    fsimage::erofs(&root_dir, &root_img, &uuid)?;
    let root_sha256 = fsimage::sha256_file(&root_img)?;
    let hash_img = work.join("root.verity");
    let salt = root_sha256.clone();
    let verity = fsimage::verity(&root_img, &hash_img, &salt)?;
    // Partitions get unique GUIDs derived from the root hash (a new build,
    // new GUIDs; the same build, the same ones); the initramfs finds root
    // and hash tree by these, not by device name or label.
    let part_guid = |name: &str| guid(&format!("{name}-{}", verity.roothash));
    let cmdline = format!(
        "{} ferry.root=PARTUUID={} ferry.root.hash=PARTUUID={} ferry.verity.roothash={} ferry.verity.salt={} ferry.verity.blocks={}",
        m.kernel.cmdline.join(" "),
        part_guid("ferry-root").to_string().to_lowercase(),
        part_guid("ferry-verity").to_string().to_lowercase(),
        verity.roothash,
        verity.salt,
        verity.data_blocks
    );

    // initramfs, UKI, ESP
    let initrd = work.join("initrd.cpio");
    // the checked copy in the root: the same ferry-init in both stages
    let init = root_dir.join(INIT.trim_start_matches('/'));
    initramfs(&init, &modules, &work.join("initramfs"), &initrd)?;
    let uki_path = opt.out.join(format!("{}.efi", m.image.name));
    uki(&opt.efi_stub, &vmlinuz, &initrd, &cmdline, &work, &uki_path)?;
    if let Some((key, cert)) = &opt.sign {
        let unsigned = work.join("ferry-unsigned.efi");
        fs::rename(&uki_path, &unsigned)
            .ctx(|| format!("rename {} to {}", uki_path.display(), unsigned.display()))?;
        sign_efi(key, cert, &unsigned, &uki_path)?;
        writeln!(report, "uki signed with {}", cert.display()).ok();
    }
    let esp_img = esp(m, &uki_path, &vmlinuz, &initrd, &cmdline, &work)?;

    // the disk
    let size = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.len())
            .ctx(|| format!("stat {}", p.display()))
    };
    let sectors = (m.image.disk_size_gib << 30) / SECTOR;
    let mut next = 2048u64;
    let mut parts = Vec::new();
    let mut place = |name: &str, type_guid: &str, bytes: u64, attrs: u64| -> Result<u64> {
        let first = next;
        let count = align_up(bytes.div_ceil(SECTOR));
        parts.push(Partition {
            type_guid: type_guid.parse()?,
            unique_guid: part_guid(name),
            first_lba: first,
            last_lba: first + count - 1,
            attributes: attrs,
            name: name.to_string(),
        });
        next = first + count;
        Ok(first * SECTOR)
    };
    let esp_off = place(
        "esp",
        types::ESP,
        size(&esp_img)?,
        ATTR_LEGACY_BIOS_BOOTABLE,
    )?;
    let root_off = place("ferry-root", types::ROOT_X86_64, size(&root_img)?, 0)?;
    let hash_off = place(
        "ferry-verity",
        types::ROOT_X86_64_VERITY,
        size(&hash_img)?,
        0,
    )?;
    place(
        "ferry-data",
        types::LINUX_DATA,
        m.partitions.data_mib << 20,
        0,
    )?;
    let table = Table {
        disk_guid: guid(&format!("{}-disk-{}", m.image.name, verity.roothash)),
        partitions: parts,
    };

    let raw = opt.out.join(format!("{}.raw", m.image.name));
    let tmp = opt.out.join(format!("{}.raw.tmp", m.image.name));
    let _ = fs::remove_file(&tmp);
    let mut disk = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&tmp)
        .ctx(|| format!("create the disk image {}", tmp.display()))?;
    disk.set_len(sectors * SECTOR)
        .ctx(|| format!("size the disk image {}", tmp.display()))?;
    let mbr =
        fs::read(&opt.gptmbr).ctx(|| format!("read the GPT boot code {}", opt.gptmbr.display()))?;
    disk.write_all(&mbr[..mbr.len().min(440)])
        .ctx(|| format!("write the GPT boot code into {}", tmp.display()))?;
    copy_at(&mut disk, &esp_img, esp_off)?;
    copy_at(&mut disk, &root_img, root_off)?;
    copy_at(&mut disk, &hash_img, hash_off)?;
    table.write(&mut disk, sectors)?;
    disk.sync_all()
        .ctx(|| format!("sync the disk image {}", tmp.display()))?;
    drop(disk);
    fs::rename(&tmp, &raw).ctx(|| format!("rename {} to {}", tmp.display(), raw.display()))?;

    let root_bytes = size(&root_img)?;
    writeln!(report, "cmdline {cmdline}").ok();
    writeln!(
        report,
        "root.erofs sha256 {root_sha256} ({root_bytes} bytes)"
    )
    .ok();
    writeln!(report, "roothash {}", verity.roothash).ok();
    writeln!(
        report,
        "initrd {} bytes, uki {} bytes",
        size(&initrd)?,
        size(&uki_path)?
    )
    .ok();
    for p in &table.partitions {
        writeln!(
            report,
            "partition {} {} offset {} size {}",
            p.name,
            p.type_guid,
            p.offset(),
            p.size()
        )
        .ok();
    }
    let report_path = opt.out.join(format!("{}.report.txt", m.image.name));
    fs::write(&report_path, &report)
        .ctx(|| format!("write the build report {}", report_path.display()))?;
    let roothash_path = opt.out.join(format!("{}.roothash", m.image.name));
    fs::write(&roothash_path, format!("{}\n", verity.roothash))
        .ctx(|| format!("write the root hash {}", roothash_path.display()))?;
    Ok(Built {
        raw,
        roothash: verity.roothash,
        root_sha256,
        root_bytes,
        cmdline,
        report: report_path,
    })
}

/// Hex sha256 of bytes (for callers that hash small things).
pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}
