// SPDX-License-Identifier: MIT
//! Test guests: an initramfs with the Debian kernel's modules, files from
//! Debian packages (busybox, rsync, rclone... with their libraries) and
//! static binaries, booted directly with QEMU `-kernel`/`-initrd`. The
//! benchmark and NFS end-to-end tests build theirs with this.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cpio::{self, Node};
use crate::debian::Cache;
use crate::kmod::Kernel;
use crate::tree::Tree;
use crate::{Error, Result};

/// What goes into a test guest.
#[derive(Debug, Clone, Default)]
pub struct GuestSpec {
    /// Kernel package (metapackage followed), e.g. `linux-image-cloud-amd64`.
    pub kernel_package: String,
    /// Modules to include, dependencies added; their load order is written
    /// to `/etc/modules.order` (paths relative to `/lib/modules/<release>`).
    pub modules: Vec<String>,
    /// Debian packages and the files to take from each (with libraries).
    pub packages: Vec<(String, Vec<String>)>,
    /// Files from the build machine (static binaries...): (source, destination).
    pub files: Vec<(PathBuf, String)>,
    /// Symlinks: (target, link).
    pub symlinks: Vec<(String, String)>,
    /// The guest's `/init` (a script or a binary's bytes).
    pub init: Vec<u8>,
}

/// A built guest.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub release: String,
    pub modules: Vec<String>,
}

/// Builds the guest's initramfs under `work`.
pub fn build(spec: &GuestSpec, cache: &Cache, work: &Path) -> Result<Guest> {
    let kpkg = cache.kernel(&spec.kernel_package)?;
    let kernel = Kernel::open(&kpkg.root)?;
    let vmlinuz = kpkg.root.join(format!("boot/vmlinuz-{}", kernel.release));
    let order = kernel.load_order(&spec.modules)?;
    let root = work.join("guest-root");
    let mut t = Tree::new(&root, Some(cache))?;
    for d in ["/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/mnt"] {
        t.dir(d, 0o755)?;
    }
    for (pkg, files) in &spec.packages {
        let x = cache.extract(pkg)?;
        t.search.push(x.root.clone());
        for lib in cache.library_depends(pkg)? {
            t.search.push(cache.extract(&lib)?.root);
        }
        for f in files {
            t.add_from_package(&x.root, f)?;
        }
    }
    for (src, dest) in &spec.files {
        t.copy(src, dest, None)?;
        t.add_libraries_of(src)?;
    }
    for (target, link) in &spec.symlinks {
        t.symlink(target, link)?;
    }
    for rel in &order {
        t.copy(
            &kernel.dir.join(rel),
            &format!("/lib/modules/{}/{rel}", kernel.release),
            Some(0o644),
        )?;
    }
    let mut list = String::new();
    for rel in &order {
        writeln!(list, "{rel}").ok();
    }
    t.write("/etc/modules.order", list.as_bytes(), 0o644)?;
    t.write(
        "/etc/kernel-release",
        format!("{}\n", kernel.release).as_bytes(),
        0o644,
    )?;
    if spec.init.is_empty() {
        return Err(Error::Missing("a guest needs an /init".into()));
    }
    t.write("/init", &spec.init, 0o755)?;
    let initrd = work.join("guest-initrd.cpio");
    cpio::write(&root, &[Node::console()], &initrd)?;
    Ok(Guest {
        kernel: vmlinuz,
        initrd,
        release: kernel.release,
        modules: order,
    })
}
