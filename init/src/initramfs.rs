// SPDX-License-Identifier: GPL-2.0-only
//! The initramfs stage: load the modules the hardware needs, assemble the
//! dm-verity root over the erofs partition, check all of it, mount it
//! read-only and switch to it, where ferry-init runs again as the system
//! stage.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use crate::block;
use crate::cmdline::{self, PartRef, Verity};
use crate::dm;
use crate::error::{Context, Error, Result};
use crate::sys::{Halt, Sys};

/// Present only in the initramfs; holds the kernel release.
pub const MARKER: &str = "/etc/ferry-initramfs";
/// Module load list written by the image builder.
pub const MODULE_LIST: &str = "/etc/ferry/modules";
/// Where the verified root is mounted before the switch.
pub const NEW_ROOT: &str = "/newroot";
/// ferry-init inside the root file system.
pub const SYSTEM_INIT: &str = "/usr/sbin/ferry-init";

/// Partition labels the image builder gives the disk (used when the command
/// line does not name the partitions by PARTUUID).
pub const ROOT_LABEL: &str = "ferry-root";
pub const VERITY_LABEL: &str = "ferry-verity";

/// Mounts /dev, /proc and /sys in the initramfs.
pub fn early_mounts(sys: &dyn Sys) -> Result<()> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    for (src, dir, fstype, flags, data) in [
        ("devtmpfs", "/dev", "devtmpfs", nse, Some("mode=0755")),
        ("proc", "/proc", "proc", nse | MsFlags::MS_NODEV, None),
        ("sysfs", "/sys", "sysfs", nse | MsFlags::MS_NODEV, None),
    ] {
        sys.mkdir(dir, 0o755).ctx(|| format!("mkdir {dir}"))?;
        sys.mount(src, dir, Some(fstype), flags, data)
            .ctx(|| format!("mount {fstype} on {dir}"))?;
    }
    Ok(())
}

/// Makes /dev/console fds 0, 1 and 2 (the kernel may have found no console
/// node before devtmpfs was mounted).
pub fn open_console() {
    if let Ok(c) = File::options().read(true).write(true).open("/dev/console") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(c.as_raw_fd(), fd) };
        }
    }
}

/// Reads the whole dm-verity device so any tampered block is found now,
/// before anything from the root runs (dm-verity answers EIO for it).
pub fn verify_all(dev: &str) -> Result<u64> {
    let mut f = File::open(dev).ctx(|| format!("open {dev}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) => {
                return Err(Error::RootTampered(format!(
                    "reading {dev} near byte {total}: {e}"
                )))
            }
        }
    }
}

/// Assembles and mounts the verified root at [`NEW_ROOT`].
pub fn assemble(sys: &dyn Sys) -> Result<()> {
    let t0 = Instant::now();
    let cmdline = fs::read_to_string("/proc/cmdline").ctx(|| "read /proc/cmdline".into())?;
    let verity = Verity::from_cmdline(&cmdline)?;
    let release = fs::read_to_string(MARKER).ctx(|| format!("read {MARKER}"))?;
    let list = fs::read_to_string(MODULE_LIST).ctx(|| format!("read {MODULE_LIST}"))?;
    let base = format!("/lib/modules/{}", release.trim());
    let (n, failed) = crate::modules::load_all(sys, &base, &list);
    log::info!(
        "modules: {n} loaded{} in {} ms",
        if failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed ({})", failed.len(), failed.join(", "))
        },
        t0.elapsed().as_millis()
    );

    let wait = Duration::from_secs(10);
    // by PARTUUID from the command line (inside the signed UKI); by label
    // only for a command line without them
    let root_ref = cmdline::partition(&cmdline, "ferry.root")?
        .unwrap_or_else(|| PartRef::Label(ROOT_LABEL.into()));
    let hash_ref = cmdline::partition(&cmdline, "ferry.root.hash")?
        .unwrap_or_else(|| PartRef::Label(VERITY_LABEL.into()));
    let root = block::wait_for(&root_ref, wait)?;
    let hash = block::wait_for(&hash_ref, wait)?;
    log::info!(
        "root: {root_ref} is {}, {hash_ref} is {}",
        root.dev(),
        hash.dev()
    );
    let target = dm::verity_target(&root.dev(), &hash.dev(), &verity);
    let dev = dm::create_readonly(ROOT_LABEL, &target).ctx(|| "dm-verity setup".into())?;
    let t1 = Instant::now();
    let bytes = verify_all(&dev)?;
    log::info!(
        "root: dm-verity {} over {} checked all {:.1} MiB in {} ms (root hash {}…)",
        root.dev(),
        hash.dev(),
        bytes as f64 / 1048576.0,
        t1.elapsed().as_millis(),
        &verity.roothash[..16]
    );
    sys.mkdir(NEW_ROOT, 0o755)
        .ctx(|| format!("mkdir {NEW_ROOT}"))?;
    sys.mount(
        &dev,
        NEW_ROOT,
        Some("erofs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None,
    )
    .ctx(|| format!("mount {dev} (erofs) on {NEW_ROOT}"))?;
    if !Path::new(&format!("{NEW_ROOT}{SYSTEM_INIT}")).exists() {
        return Err(Error::RootTampered(format!(
            "{SYSTEM_INIT} missing in the root"
        )));
    }
    Ok(())
}

/// Moves /dev into the new root, frees the initramfs, makes the new root `/`
/// and runs its ferry-init. Returns only on failure.
pub fn switch_root(sys: &dyn Sys) -> Error {
    let step = || -> Result<()> {
        sys.mount(
            "/dev",
            &format!("{NEW_ROOT}/dev"),
            None,
            MsFlags::MS_MOVE,
            None,
        )
        .ctx(|| "move /dev into the new root".into())?;
        sys.umount("/proc").ctx(|| "umount /proc".into())?;
        sys.umount("/sys").ctx(|| "umount /sys".into())?;
        // the initramfs is RAM: drop what is no longer needed
        let _ = fs::remove_dir_all("/lib");
        let _ = fs::remove_file("/init");
        nix::unistd::chdir(NEW_ROOT).ctx(|| format!("chdir {NEW_ROOT}"))?;
        sys.mount(".", "/", None, MsFlags::MS_MOVE, None)
            .ctx(|| "move the new root onto /".into())?;
        nix::unistd::chroot(".").ctx(|| "chroot".into())?;
        nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
        Ok(())
    };
    if let Err(e) = step() {
        return e;
    }
    let prog = CString::new(SYSTEM_INIT).expect("no NUL");
    let args = [prog.clone(), CString::new("system").expect("no NUL")];
    let env: [CString; 0] = [];
    match nix::unistd::execve(&prog, &args, &env) {
        Err(e) => Error::Io {
            what: format!("exec {SYSTEM_INIT}"),
            source: e.into(),
        },
        Ok(never) => match never {},
    }
}

/// The whole stage. Never returns: either it execs the system stage or it
/// refuses to boot and powers the machine off.
pub fn run(sys: &dyn Sys) -> ! {
    let _ = early_mounts(sys);
    open_console();
    crate::logging::reopen_kmsg();
    log::info!("initramfs stage ({})", env!("CARGO_PKG_VERSION"));
    let err = match assemble(sys) {
        Ok(()) => switch_root(sys),
        Err(e) => e,
    };
    refuse(sys, &err)
}

/// Logs why the system will not start and powers off. No shell, no retry:
/// a tampered or missing root must not run.
pub fn refuse(sys: &dyn Sys, err: &Error) -> ! {
    log::error!("{err}");
    log::error!(
        "refusing to boot: the root file system cannot be trusted or used; powering off in 5 s"
    );
    sys.sync();
    std::thread::sleep(Duration::from_secs(5));
    let _ = sys.reboot(Halt::PowerOff);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
