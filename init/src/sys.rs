// SPDX-License-Identifier: GPL-2.0-only
//! The system calls ferry-init makes, behind a trait.
//!
//! Units take `&dyn Sys`; the real implementation calls the kernel, the
//! [`Recorder`] writes each call as a line of text so unit tests compare the
//! sequence with a golden transcript (erlinit's fixture, in Rust).

use std::cell::RefCell;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

/// What to do at the end of shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    PowerOff,
    Reboot,
    Halt,
}

/// Seconds since the kernel started (CLOCK_BOOTTIME). A read of the clock
/// without side effects, so not one of [`Sys`]'s calls.
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// System calls with side effects on the machine.
pub trait Sys {
    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &str) -> io::Result<()>;
    fn mkdir(&self, path: &str, mode: u32) -> io::Result<()>;
    fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> io::Result<()>;
    fn symlink(&self, target: &str, link: &str) -> io::Result<()>;
    /// Writes a value into an existing kernel file (/proc/sys, /sys).
    fn set(&self, path: &str, value: &str) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    fn chown(&self, path: &str, uid: u32, gid: u32) -> io::Result<()>;
    /// Loads a kernel module from a file; already loaded is success.
    fn load_module(&self, path: &str) -> io::Result<()>;
    fn sync(&self);
    fn reboot(&self, how: Halt) -> io::Result<()>;
}

/// The kernel.
pub struct RealSys;

impl Sys for RealSys {
    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(Some(source), target, fstype, flags, data).map_err(io::Error::from)
    }

    fn umount(&self, target: &str) -> io::Result<()> {
        nix::mount::umount2(target, MntFlags::empty()).map_err(io::Error::from)
    }

    fn mkdir(&self, path: &str, mode: u32) -> io::Result<()> {
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        f.write_all(contents)?;
        f.set_permissions(fs::Permissions::from_mode(mode))
    }

    fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
        if Path::new(link).symlink_metadata().is_ok() {
            fs::remove_file(link)?;
        }
        std::os::unix::fs::symlink(target, link)
    }

    fn set(&self, path: &str, value: &str) -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn chown(&self, path: &str, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn load_module(&self, path: &str) -> io::Result<()> {
        let f = fs::File::open(path)?;
        match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn sync(&self) {
        nix::unistd::sync();
    }

    fn reboot(&self, how: Halt) -> io::Result<()> {
        use nix::sys::reboot::{reboot, RebootMode};
        let mode = match how {
            Halt::PowerOff => RebootMode::RB_POWER_OFF,
            Halt::Reboot => RebootMode::RB_AUTOBOOT,
            Halt::Halt => RebootMode::RB_HALT_SYSTEM,
        };
        reboot(mode).map(|_| ()).map_err(io::Error::from)
    }
}

/// Records calls instead of making them (for tests). Writes can be
/// redirected into a scratch directory with [`Recorder::with_root`], so file
/// contents can be checked too.
#[derive(Default)]
pub struct Recorder {
    pub calls: RefCell<Vec<String>>,
    /// When set, files are really written under this directory.
    pub root: Option<std::path::PathBuf>,
    /// Calls whose text starts with this fail with EIO.
    pub fail: Option<String>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    pub fn with_root(root: &Path) -> Recorder {
        Recorder {
            root: Some(root.to_path_buf()),
            ..Recorder::default()
        }
    }

    pub fn transcript(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let fail = self.fail.as_deref().is_some_and(|f| line.starts_with(f));
        self.calls.borrow_mut().push(line);
        if fail {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    fn under(&self, path: &str) -> Option<std::path::PathBuf> {
        self.root
            .as_ref()
            .map(|r| r.join(path.trim_start_matches('/')))
    }
}

impl Sys for Recorder {
    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        let flags = format!("{flags:?}");
        let flags = flags.trim_start_matches("MsFlags(").trim_end_matches(')');
        self.record(format!(
            "mount {source} {target} {} {flags} {}",
            fstype.unwrap_or("-"),
            data.unwrap_or("-")
        ))
    }
    fn umount(&self, target: &str) -> io::Result<()> {
        self.record(format!("umount {target}"))
    }
    fn mkdir(&self, path: &str, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir {path} {mode:o}"))?;
        if let Some(p) = self.under(path) {
            fs::create_dir_all(p)?;
        }
        Ok(())
    }
    fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> io::Result<()> {
        self.record(format!("write {path} {mode:o} {} bytes", contents.len()))?;
        if let Some(p) = self.under(path) {
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(p, contents)?;
        }
        Ok(())
    }
    fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
        self.record(format!("symlink {link} -> {target}"))
    }
    fn set(&self, path: &str, value: &str) -> io::Result<()> {
        self.record(format!("set {path} {value}"))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("sethostname {name}"))
    }
    fn chown(&self, path: &str, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("chown {path} {uid}:{gid}"))
    }
    fn load_module(&self, path: &str) -> io::Result<()> {
        self.record(format!("finit_module {path}"))
    }
    fn sync(&self) {
        let _ = self.record("sync".into());
    }
    fn reboot(&self, how: Halt) -> io::Result<()> {
        self.record(format!("reboot {how:?}"))
    }
}
