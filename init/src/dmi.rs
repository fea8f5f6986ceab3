// SPDX-License-Identifier: GPL-2.0-only
//! Which cloud or hypervisor this is, from the firmware's SMBIOS tables as
//! the kernel shows them in `/sys/class/dmi/id`. The configuration providers
//! that talk to a platform (EC2's metadata service, VMware's backdoor) run
//! only where the tables name that platform.

use std::fs;
use std::path::Path;

/// Where the kernel shows the SMBIOS strings.
pub const DMI: &str = "/sys/class/dmi/id";

/// The platforms with a provider of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Amazon EC2: Nitro (`sys_vendor` "Amazon EC2") or Xen
    /// (`product_uuid`/`product_serial` starting with "ec2",
    /// `bios_version` naming amazon).
    Ec2,
    /// VMware (ESXi, Workstation, Fusion): `sys_vendor` "VMware, Inc.".
    Vmware,
    Other,
}

impl Platform {
    /// Reads the platform from a `dmi/id` directory.
    pub fn detect(dmi: &Path) -> Platform {
        let read = |f: &str| {
            fs::read_to_string(dmi.join(f))
                .map(|s| s.trim().to_ascii_lowercase())
                .unwrap_or_default()
        };
        let vendor = read("sys_vendor");
        if vendor == "amazon ec2"
            || read("board_vendor") == "amazon ec2"
            || read("product_uuid").starts_with("ec2")
            || read("product_serial").starts_with("ec2")
            || read("bios_version").contains("amazon")
        {
            return Platform::Ec2;
        }
        if vendor.starts_with("vmware") || read("product_name").starts_with("vmware") {
            return Platform::Vmware;
        }
        Platform::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(t.path().join(name), format!("{text}\n")).unwrap();
        }
        t
    }

    #[test]
    fn tells_ec2_vmware_and_others_apart() {
        // a Nitro instance
        let t = tree(&[
            ("sys_vendor", "Amazon EC2"),
            ("board_asset_tag", "i-0123456789abcdef0"),
        ]);
        assert_eq!(Platform::detect(t.path()), Platform::Ec2);
        // a Xen instance (HVM): the vendor is Xen, the UUID starts with ec2
        let t = tree(&[
            ("sys_vendor", "Xen"),
            ("product_uuid", "EC2E1916-9099-7CAF-FD21-012345678901"),
            ("bios_version", "4.11.amazon"),
        ]);
        assert_eq!(Platform::detect(t.path()), Platform::Ec2);
        let t = tree(&[
            ("sys_vendor", "VMware, Inc."),
            ("product_name", "VMware20,1"),
        ]);
        assert_eq!(Platform::detect(t.path()), Platform::Vmware);
        let t = tree(&[
            ("sys_vendor", "QEMU"),
            ("product_name", "Standard PC (Q35 + ICH9, 2009)"),
        ]);
        assert_eq!(Platform::detect(t.path()), Platform::Other);
        // no DMI at all (unreadable, or no SMBIOS)
        assert_eq!(Platform::detect(Path::new("/nonexistent")), Platform::Other);
    }
}
