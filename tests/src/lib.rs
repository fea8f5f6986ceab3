// SPDX-License-Identifier: MIT
//! A small QEMU harness for end-to-end tests: boot a disk image under TCG
//! with UEFI (OVMF) or BIOS (SeaBIOS), user-mode networking, the serial
//! console in a file, and a monitor socket; wait for console markers with a
//! timeout; press the ACPI power button; inspect the disk afterwards.
//!
//! The benchmark and NFS end-to-end tests reuse it for their test guests.

pub mod netns;
pub mod nfs;
pub mod ovf;
pub mod ssh;
pub mod stunnel;

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
    #[error("{what}: {source}")]
    Gpt {
        what: String,
        #[source]
        source: ferry_gpt::Error,
    },
    #[error("{0}")]
    Missing(String),
}

/// Says what was being done, and on which path, when an I/O call failed:
/// `File::open(p).ctx(|| format!("open {}", p.display()))?`.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
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
        fs::create_dir_all(&p).ctx(|| format!("mkdir {}", p.display()))?;
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
        .ctx(|| "run cp".into())?;
    if !st.success() {
        return Err(Error::Missing(format!("cp {} failed", src.display())));
    }
    Ok(())
}

/// A partition of a disk image, by label.
pub fn partition(image: &Path, label: &str) -> Result<ferry_gpt::Partition, Error> {
    let mut f = File::open(image).ctx(|| format!("open {}", image.display()))?;
    let t = ferry_gpt::Table::read(&mut f).map_err(|source| Error::Gpt {
        what: format!("read the GPT of {}", image.display()),
        source,
    })?;
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
        .ctx(|| format!("open {}", path.display()))?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset))
        .ctx(|| format!("seek byte {offset} of {}", path.display()))?;
    f.read_exact(&mut b)
        .ctx(|| format!("read byte {offset} of {}", path.display()))?;
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset))
        .ctx(|| format!("seek byte {offset} of {}", path.display()))?;
    f.write_all(&b)
        .ctx(|| format!("write byte {offset} of {}", path.display()))
}

/// What the ext4 superblock of a partition inside an image says:
/// `Some(true)` cleanly unmounted, `Some(false)` needs journal recovery,
/// `None` no ext4 there.
pub fn ext4_clean(image: &Path, part: &ferry_gpt::Partition) -> Result<Option<bool>, Error> {
    let mut f = File::open(image).ctx(|| format!("open {}", image.display()))?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(part.offset() + 1024))
        .ctx(|| format!("seek to the ext4 superblock in {}", image.display()))?;
    f.read_exact(&mut sb)
        .ctx(|| format!("read the ext4 superblock in {}", image.display()))?;
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
    /// User-mode networking restricted to guest and host forwards (the
    /// default); unrestricted, the guest reaches the host's loopback as
    /// 10.0.2.2 (an NFS server there, say).
    pub restrict: bool,
    /// The serial console also takes input ([`Vm::send`]); its output
    /// still goes to the console log.
    pub interactive: bool,
    /// A second network adapter on a user network of its own (restricted).
    pub second_nic: bool,
    /// A further adapter on this existing tap device (see [`TapNet`]): the
    /// guest on a link of its own, reachable from a network namespace.
    pub tap: Option<netns::Tap>,
    /// `hostfwd` rules, e.g. `tcp:127.0.0.1:2222-:22` (connections to a
    /// host port reach a guest port).
    pub hostfwd: Vec<String>,
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
            restrict: true,
            interactive: false,
            second_nic: false,
            tap: None,
            hostfwd: Vec::new(),
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
            restrict: true,
            interactive: false,
            second_nic: false,
            tap: None,
            hostfwd: Vec::new(),
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
    /// The serial line's socket, when interactive.
    input: Option<UnixStream>,
    /// How far [`Vm::expect`] has read the console.
    cursor: usize,
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
            std::iter::once(format!(
                "user,id=n0,restrict={}",
                if cfg.restrict { "on" } else { "off" }
            ))
            .chain(cfg.user_net.clone())
            .chain(cfg.guestfwd.iter().map(|g| format!("guestfwd={g}")))
            .chain(cfg.hostfwd.iter().map(|h| format!("hostfwd={h}")))
            .collect::<Vec<_>>()
            .join(","),
        )
        .arg("-device")
        .arg(format!("{},netdev=n0", cfg.nic));
        if cfg.second_nic {
            cmd.args(["-netdev", "user,id=n1,restrict=on", "-device"])
                .arg(format!("{},netdev=n1", cfg.nic));
        }
        if let Some(tap) = &cfg.tap {
            cmd.arg("-netdev")
                .arg(format!(
                    "tap,id=t0,ifname={},script=no,downscript=no",
                    tap.name
                ))
                .arg("-device")
                .arg(format!("{},netdev=t0,mac={}", cfg.nic, tap.mac));
        }
        cmd.arg("-serial")
            .arg(if cfg.interactive {
                // QEMU waits for our connection before it starts the guest
                format!(
                    "unix:{},server=on,wait=on",
                    cfg.dir.join("serial.sock").display()
                )
            } else {
                format!("file:{}", serial.display())
            })
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
                fs::copy(OVMF_SECURE_VARS, &vars).ctx(|| format!("copy {OVMF_SECURE_VARS}"))?;
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
            .stderr(File::create(cfg.dir.join("qemu.stderr")).ctx(|| "create qemu.stderr".into())?)
            .spawn()
            .ctx(|| "start qemu-system-x86_64 (package qemu-system-x86)".into())?;
        let input = if cfg.interactive {
            Some(connect_serial(&cfg.dir.join("serial.sock"), &serial)?)
        } else {
            None
        };
        Ok(Vm {
            child,
            serial,
            monitor,
            started: Instant::now(),
            exit: None,
            input,
            cursor: 0,
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

    /// Waits until `count` console lines contain `pattern`; returns them.
    pub fn wait_for_lines(
        &mut self,
        pattern: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, Error> {
        let t = Instant::now();
        loop {
            let lines: Vec<String> = self
                .console()
                .lines()
                .filter(|l| l.contains(pattern))
                .map(str::to_string)
                .collect();
            if lines.len() >= count {
                return Ok(lines);
            }
            let what = || format!("{count} lines with {pattern:?} (saw {})", lines.len());
            if let Some(status) = self.exited() {
                return Err(Error::Exited {
                    status: status.to_string(),
                    pattern: what(),
                    tail: self.tail(),
                });
            }
            if t.elapsed() > timeout {
                return Err(Error::Timeout {
                    pattern: what(),
                    secs: timeout.as_secs(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types on the serial console (interactive VMs).
    pub fn send(&mut self, text: &str) -> Result<(), Error> {
        let input = self
            .input
            .as_mut()
            .ok_or_else(|| Error::Missing("the VM was not started interactive".into()))?;
        // one byte at a time, as a person types: the guest's UART has a
        // small FIFO and TCG is slow to drain it
        for b in text.bytes() {
            input
                .write_all(&[b])
                .ctx(|| "write to the serial console".into())?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Waits for `pattern` in what the console printed after the previous
    /// match; returns the text up to and including it.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, Error> {
        let t = Instant::now();
        loop {
            let c = self.console();
            if let Some(at) = c.get(self.cursor..).and_then(|rest| rest.find(pattern)) {
                let end = self.cursor + at + pattern.len();
                let text = c[self.cursor..end].to_string();
                self.cursor = end;
                return Ok(text);
            }
            let exited = self.exited();
            if exited.is_some() || t.elapsed() > timeout {
                let tail = c.get(self.cursor..).unwrap_or_default();
                let tail = tail[tail.len().saturating_sub(3000)..].to_string();
                return Err(match exited {
                    Some(status) => Error::Exited {
                        status: status.to_string(),
                        pattern: pattern.into(),
                        tail,
                    },
                    None => Error::Timeout {
                        pattern: pattern.into(),
                        secs: timeout.as_secs(),
                        tail,
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a human monitor command.
    pub fn monitor(&self, command: &str) -> Result<(), Error> {
        let mut s = UnixStream::connect(&self.monitor)
            .ctx(|| format!("connect to the QEMU monitor {}", self.monitor.display()))?;
        s.write_all(format!("{command}\n").as_bytes())
            .ctx(|| "write to the QEMU monitor".into())?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Presses the ACPI power button.
    pub fn powerdown(&self) -> Result<(), Error> {
        self.monitor("system_powerdown")
    }

    /// An ordered shutdown: waits until ferry-init watches the power
    /// button, presses it, and waits for QEMU to exit.
    pub fn power_off(&mut self) -> Result<ExitStatus, Error> {
        self.wait_for(
            "power: listening to the ACPI power button",
            Duration::from_secs(30),
        )?;
        self.powerdown()?;
        self.wait_exit(Duration::from_secs(90))
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

/// Connects to an interactive serial socket and copies what the guest
/// writes into `log` (the console log) from a thread; returns the socket
/// for input.
fn connect_serial(socket: &Path, log: &Path) -> Result<UnixStream, Error> {
    let t = Instant::now();
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if t.elapsed() > Duration::from_secs(10) => {
                return Err(e).ctx(|| format!("connect to {}", socket.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut reader = stream
        .try_clone()
        .ctx(|| "clone the serial socket".into())?;
    let mut out = File::create(log).ctx(|| format!("create {}", log.display()))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    Ok(stream)
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

impl Vm {
    /// What ferry-init reported of seccomp denials: each is a system call
    /// a program made that its allow-list lacks (init/src/seccomp.rs).
    pub fn seccomp_denials(&self) -> Vec<String> {
        self.console()
            .lines()
            .filter(|l| l.contains("seccomp: denied"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Vm {
    /// Stops QEMU; a test whose guest reported a seccomp denial fails here,
    /// whatever it checked itself (unless it is failing already).
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let denials = self.seccomp_denials();
        if !denials.is_empty() && !std::thread::panicking() {
            panic!(
                "the guest denied system calls (an allow-list lacks them):\n{}",
                denials.join("\n")
            );
        }
    }
}

/// How tree `b` differs from tree `a`: entries missing or extra, a
/// different kind, content, permission bits, owner, or file mtime, or a
/// different symlink target. Empty when they are the same.
pub fn tree_differences(a: &Path, b: &Path) -> Result<Vec<String>, Error> {
    use std::os::unix::fs::MetadataExt;
    fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>, Error> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .ctx(|| format!("list {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .ctx(|| format!("list {}", dir.display()))?;
        v.sort();
        Ok(v)
    }
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (da, db) = (a.join(&rel), b.join(&rel));
        let (na, nb) = (names(&da)?, names(&db)?);
        for extra in nb.iter().filter(|n| !na.contains(n)) {
            out.push(format!("extra: {}", rel.join(extra).display()));
        }
        for name in na {
            let r = rel.join(&name);
            let (pa, pb) = (a.join(&r), b.join(&r));
            let ma = fs::symlink_metadata(&pa).ctx(|| format!("stat {}", pa.display()))?;
            let Ok(mb) = fs::symlink_metadata(&pb) else {
                out.push(format!("missing: {}", r.display()));
                continue;
            };
            let what = r.display();
            if ma.file_type() != mb.file_type() {
                out.push(format!("{what}: a different kind of file"));
                continue;
            }
            if (ma.mode(), ma.uid(), ma.gid()) != (mb.mode(), mb.uid(), mb.gid()) {
                out.push(format!(
                    "{what}: mode/uid/gid {:o}/{}/{} instead of {:o}/{}/{}",
                    mb.mode(),
                    mb.uid(),
                    mb.gid(),
                    ma.mode(),
                    ma.uid(),
                    ma.gid()
                ));
            }
            if ma.is_dir() {
                stack.push(r);
            } else if ma.file_type().is_symlink() {
                if fs::read_link(&pa).ok() != fs::read_link(&pb).ok() {
                    out.push(format!("{what}: a different symlink target"));
                }
            } else {
                if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
                    out.push(format!("{what}: a different mtime"));
                }
                let ca = fs::read(&pa).ctx(|| format!("read {}", pa.display()))?;
                let cb = fs::read(&pb).ctx(|| format!("read {}", pb.display()))?;
                if ca != cb {
                    out.push(format!("{what}: different content"));
                }
            }
        }
    }
    Ok(out)
}

/// A free TCP port on the host's loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Run by QEMU for each guest connection of a `guestfwd ... -cmd:` rule:
/// stdin/stdout are the guest's socket, relayed to a port on the host.
const RELAY: &str = r#"
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        s.sendall(b)
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
threading.Thread(target=up, daemon=True).start()
while True:
    b = s.recv(65536)
    if not b:
        break
    os.write(1, b)
"#;

/// A `guestfwd` rule (see [`VmConfig::guestfwd`]) that carries each guest
/// connection to `guest` (`ADDR:PORT`) to `host_port` on the host's
/// loopback, through a relay script written into `dir`. slirp's plain
/// `tcp:` target takes one connection only; `cmd:` runs one per connection.
pub fn guestfwd_relay(dir: &Path, guest: &str, host_port: u16) -> Result<String, Error> {
    let script = dir.join("relay.py");
    fs::write(&script, RELAY).ctx(|| format!("write {}", script.display()))?;
    Ok(format!(
        "tcp:{guest}-cmd:python3 {} {host_port}",
        script.display()
    ))
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
