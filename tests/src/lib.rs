//! A small QEMU harness for end-to-end tests: boot a disk image under TCG
//! with UEFI (OVMF) or BIOS (SeaBIOS), user-mode networking, the serial
//! console in a file, and a monitor socket; wait for console markers with a
//! timeout; press the ACPI power button; inspect the disk afterwards.
//!
//! The benchmark and NFS end-to-end tests reuse it for their test guests.

pub mod ovf;

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// OVMF built as one file (code + variables), from Debian's `ovmf`.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {secs} s waiting for {pattern:?}; console tail:\n{tail}")]
    Timeout {
        pattern: String,
        secs: u64,
        tail: String,
    },
    #[error("QEMU exited ({status}) while waiting for {pattern:?}; console tail:\n{tail}")]
    Exited {
        status: String,
        pattern: String,
        tail: String,
    },
    #[error("{0}")]
    Missing(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// OVMF with Secure Boot on and Debian's test ("snakeoil") key enrolled
/// in PK, KEK and db; the key and certificate ship with it.
pub const OVMF_SECURE_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd";
pub const OVMF_SECURE_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
pub const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
/// The (public, test-only) passphrase of the snakeoil key.
pub const SNAKEOIL_PASSPHRASE: &str = "snakeoil";

/// Boot firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Uefi,
    /// UEFI with Secure Boot enforcing (snakeoil keys).
    UefiSecureBoot,
    Bios,
}

/// The workspace root (the parent of this crate).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// `out/ferry.raw`, or an error saying how to build it.
pub fn appliance_image() -> Result<PathBuf, Error> {
    let p = workspace().join("out/ferry.raw");
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::Missing(format!(
            "{} is missing: build it with `scripts/build-image` (scripts/test does this before cargo test)",
            p.display()
        )))
    }
}

/// A scratch directory for one test (removed on drop).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Result<Scratch, Error> {
        let base = std::env::var_os("FERRY_E2E_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!("ferry-e2e-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).map_err(io_err(format!("mkdir {}", p.display())))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Copies a (sparse) disk image, keeping it sparse.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<(), Error> {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(dst)
        .status()
        .map_err(io_err("run cp"))?;
    if !st.success() {
        return Err(Error::Missing(format!("cp {} failed", src.display())));
    }
    Ok(())
}

/// A partition of a disk image, by label.
pub fn partition(image: &Path, label: &str) -> Result<ferry_gpt::Partition, Error> {
    let mut f = File::open(image).map_err(io_err(format!("open {}", image.display())))?;
    let t = ferry_gpt::Table::read(&mut f)
        .map_err(|e| Error::Missing(format!("GPT of {}: {e}", image.display())))?;
    t.find(label)
        .map(|(_, p)| p.clone())
        .ok_or_else(|| Error::Missing(format!("no partition {label} in {}", image.display())))
}

/// Flips one byte of a file.
pub fn flip_byte(path: &Path, offset: u64) -> Result<(), Error> {
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open"))?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).map_err(io_err("seek"))?;
    f.read_exact(&mut b).map_err(io_err("read"))?;
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset)).map_err(io_err("seek"))?;
    f.write_all(&b).map_err(io_err("write"))
}

/// What the ext4 superblock of a partition inside an image says:
/// `Some(true)` cleanly unmounted, `Some(false)` needs journal recovery,
/// `None` no ext4 there.
pub fn ext4_clean(image: &Path, part: &ferry_gpt::Partition) -> Result<Option<bool>, Error> {
    let mut f = File::open(image).map_err(io_err("open"))?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(part.offset() + 1024))
        .map_err(io_err("seek"))?;
    f.read_exact(&mut sb).map_err(io_err("read superblock"))?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Ok(None);
    }
    let incompat = u32::from_le_bytes(sb[0x60..0x64].try_into().expect("4"));
    Ok(Some(incompat & 0x4 == 0))
}

/// A kernel booted directly (`-kernel`, `-initrd`, `-append`).
#[derive(Debug, Clone)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
}

/// How to start a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The disk (none for a direct-kernel guest).
    pub disk: Option<PathBuf>,
    /// Boot this kernel instead of the disk's boot loader.
    pub direct: Option<DirectKernel>,
    pub firmware: Firmware,
    pub memory_mib: u32,
    /// Files offered through QEMU fw_cfg, as (name, path).
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// Directory for the console log and monitor socket.
    pub dir: PathBuf,
    /// The disk's format as QEMU names it (`raw`, `vmdk`).
    pub disk_format: &'static str,
    /// Where the disk hangs.
    pub disk_bus: DiskBus,
    /// Writes go to a temporary overlay, the disk file stays as it is
    /// (QEMU cannot write a streamOptimized VMDK in place).
    pub snapshot: bool,
    /// The network adapter's QEMU device (`virtio-net-pci`, `vmxnet3`).
    pub nic: &'static str,
    /// An ISO image in a CD-ROM drive on the disk's SCSI controller (PVSCSI),
    /// else on SATA.
    pub cdrom: Option<PathBuf>,
    /// `guestfwd` rules for user-mode networking, e.g.
    /// `tcp:10.0.2.100:80-cmd:nc 127.0.0.1 8080` (each guest connection to
    /// that address runs the command, its stdin/stdout being the
    /// connection). The address must be inside the user network
    /// (see `user_net`) and not the host's nor the DNS server's: slirp
    /// refuses others ("Conflicting/invalid host:port").
    pub guestfwd: Vec<String>,
    /// Extra `-netdev user` options, e.g.
    /// `net=169.254.169.0/24,host=169.254.169.2,dhcpstart=169.254.169.15`
    /// (a user network around EC2's metadata address).
    pub user_net: Option<String>,
    /// `-smbios` options, e.g. `type=1,manufacturer=Amazon EC2` (what the
    /// guest reads in /sys/class/dmi/id).
    pub smbios: Vec<String>,
}

/// The disk controller a VM's disk is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    /// VMware ParaVirtual SCSI (`pvscsi` + `scsi-hd`).
    Pvscsi,
}

impl VmConfig {
    /// A test guest: kernel and initramfs, no disk, SeaBIOS.
    pub fn direct(kernel: DirectKernel, dir: &Path) -> VmConfig {
        VmConfig {
            disk: None,
            direct: Some(kernel),
            firmware: Firmware::Bios,
            memory_mib: 1024,
            fw_cfg: Vec::new(),
            dir: dir.to_path_buf(),
            disk_format: "raw",
            disk_bus: DiskBus::Virtio,
            snapshot: false,
            nic: "virtio-net-pci",
            cdrom: None,
            guestfwd: Vec::new(),
            user_net: None,
            smbios: Vec::new(),
        }
    }

    pub fn new(disk: &Path, firmware: Firmware, dir: &Path) -> VmConfig {
        VmConfig {
            disk: Some(disk.to_path_buf()),
            direct: None,
            firmware,
            memory_mib: 1024,
            fw_cfg: Vec::new(),
            dir: dir.to_path_buf(),
            disk_format: "raw",
            disk_bus: DiskBus::Virtio,
            snapshot: false,
            nic: "virtio-net-pci",
            cdrom: None,
            guestfwd: Vec::new(),
            user_net: None,
            smbios: Vec::new(),
        }
    }
}

/// A running QEMU.
pub struct Vm {
    child: Child,
    pub serial: PathBuf,
    pub monitor: PathBuf,
    pub started: Instant,
    exit: Option<ExitStatus>,
}

impl Vm {
    /// Starts QEMU (TCG, q35, virtio disk and NIC, user-mode networking
    /// restricted to the guest and host).
    pub fn start(cfg: &VmConfig) -> Result<Vm, Error> {
        let serial = cfg.dir.join(format!("console-{}.log", cfg.firmware_name()));
        let monitor = cfg.dir.join("monitor.sock");
        let _ = fs::remove_file(&serial);
        let _ = fs::remove_file(&monitor);
        let mut cmd = Command::new("qemu-system-x86_64");
        let machine = if cfg.firmware == Firmware::UefiSecureBoot {
            "q35,smm=on"
        } else {
            "q35"
        };
        cmd.args([
            "-accel", "tcg", "-machine", machine, "-cpu", "max", "-smp", "1",
        ])
        .args(["-m", &cfg.memory_mib.to_string()])
        .args(["-display", "none", "-no-reboot"])
        .arg("-netdev")
        .arg(
            std::iter::once("user,id=n0,restrict=on".to_string())
                .chain(cfg.user_net.clone())
                .chain(cfg.guestfwd.iter().map(|g| format!("guestfwd={g}")))
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg("-device")
        .arg(format!("{},netdev=n0", cfg.nic))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", monitor.display()));
        if let Some(disk) = &cfg.disk {
            let snapshot = if cfg.snapshot { ",snapshot=on" } else { "" };
            let drive = format!(
                "file={},format={}{snapshot}",
                disk.display(),
                cfg.disk_format
            );
            match cfg.disk_bus {
                DiskBus::Virtio => {
                    cmd.arg("-drive").arg(format!("{drive},if=virtio"));
                }
                DiskBus::Pvscsi => {
                    cmd.args(["-device", "pvscsi,id=scsi0"])
                        .arg("-drive")
                        .arg(format!("{drive},if=none,id=disk0"))
                        .args(["-device", "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0"]);
                }
            }
        }
        if let Some(iso) = &cfg.cdrom {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,media=cdrom,readonly=on,if=none,id=cd0",
                iso.display()
            ));
            let device = match cfg.disk_bus {
                DiskBus::Pvscsi => "scsi-cd,drive=cd0,bus=scsi0.0",
                DiskBus::Virtio => "ide-cd,drive=cd0",
            };
            cmd.args(["-device", device]);
        }
        if let Some(k) = &cfg.direct {
            cmd.arg("-kernel")
                .arg(&k.kernel)
                .arg("-initrd")
                .arg(&k.initrd)
                .arg("-append")
                .arg(&k.append);
        }
        match cfg.firmware {
            Firmware::Uefi => {
                cmd.args(["-bios", OVMF]);
            }
            Firmware::UefiSecureBoot => {
                let vars = cfg.dir.join("ovmf-vars.fd");
                fs::copy(OVMF_SECURE_VARS, &vars)
                    .map_err(io_err(format!("copy {OVMF_SECURE_VARS}")))?;
                cmd.args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SECURE_CODE}"
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        vars.display()
                    ));
            }
            Firmware::Bios => {}
        }
        for t in &cfg.smbios {
            cmd.arg("-smbios").arg(t);
        }
        for (name, path) in &cfg.fw_cfg {
            cmd.arg("-fw_cfg")
                .arg(format!("name={name},file={}", path.display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::create(cfg.dir.join("qemu.stderr")).map_err(io_err("create qemu.stderr"))?,
            )
            .spawn()
            .map_err(io_err("start qemu-system-x86_64 (package qemu-system-x86)"))?;
        Ok(Vm {
            child,
            serial,
            monitor,
            started: Instant::now(),
            exit: None,
        })
    }

    /// Everything the console printed so far (escape codes and all).
    pub fn console(&self) -> String {
        fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn tail(&self) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Has QEMU exited?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits for a console line containing `pattern`; returns the line.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String, Error> {
        let t = Instant::now();
        loop {
            if let Some(line) = self.console().lines().find(|l| l.contains(pattern)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.exited() {
                // read once more: the line may have come with the exit
                if let Some(line) = self.console().lines().find(|l| l.contains(pattern)) {
                    return Ok(line.to_string());
                }
                return Err(Error::Exited {
                    status: status.to_string(),
                    pattern: pattern.into(),
                    tail: self.tail(),
                });
            }
            if t.elapsed() > timeout {
                return Err(Error::Timeout {
                    pattern: pattern.into(),
                    secs: timeout.as_secs(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a human monitor command.
    pub fn monitor(&self, command: &str) -> Result<(), Error> {
        let mut s =
            UnixStream::connect(&self.monitor).map_err(io_err("connect to the QEMU monitor"))?;
        s.write_all(format!("{command}\n").as_bytes())
            .map_err(io_err("write to the QEMU monitor"))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Presses the ACPI power button.
    pub fn powerdown(&self) -> Result<(), Error> {
        self.monitor("system_powerdown")
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let t = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return Ok(s);
            }
            if t.elapsed() > timeout {
                return Err(Error::Timeout {
                    pattern: "QEMU to exit".into(),
                    secs: timeout.as_secs(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl VmConfig {
    fn firmware_name(&self) -> &'static str {
        match self.firmware {
            Firmware::Uefi => "uefi",
            Firmware::UefiSecureBoot => "uefi-secure-boot",
            Firmware::Bios => "bios",
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The seconds in a line like `ferry-init: ready in 4.21 s: ...`.
pub fn seconds_after(line: &str, marker: &str) -> Option<f64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_time() {
        assert_eq!(
            seconds_after("ferry-init: ready in 4.21 s: running journald", "ready in "),
            Some(4.21)
        );
        assert_eq!(seconds_after("nothing here", "ready in "), None);
    }
}
