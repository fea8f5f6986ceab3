// SPDX-License-Identifier: MIT
//! The shipped OVA (out/ferry.ova, built by `scripts/build-image`): its
//! members, manifest and descriptor, its VMDK read by qemu-img and libvmdk
//! and compared with out/ferry.raw, and the appliance booted from that VMDK
//! on VMware's virtual hardware as QEMU emulates it (PVSCSI disk, VMXNET3
//! adapter), with an ISO in the CD-ROM drive as vSphere attaches for
//! the OVF ISO transport.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_e2e::ovf::read_hardware;
use ferry_e2e::{appliance_image, workspace, DiskBus, Firmware, Scratch, Vm, VmConfig};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compares every data extent of the raw image (and a sample of its holes)
/// with what libvmdk's Python binding reads from the VMDK.
fn libvmdk_reads_the_raw_image(vmdk: &Path, raw: &Path) {
    let script = r#"
import os, sys, pyvmdk
vmdk, raw = sys.argv[1], sys.argv[2]
h = pyvmdk.handle(); h.open(vmdk); h.open_extent_data_files()
size = os.path.getsize(raw)
assert h.get_media_size() == size, (h.get_media_size(), size)
fd = os.open(raw, os.O_RDONLY)
pos, compared = 0, 0
while pos < size:
    try:
        start = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(fd, start, os.SEEK_HOLE)
    off = start
    while off < end:
        n = min(1 << 20, end - off)
        h.seek(off)
        if h.read(n) != os.pread(fd, n, off):
            sys.exit("differs at offset %d" % off)
        off += n; compared += n
    pos = end
for i in range(64):
    off = (size // 64) * i + 4096
    h.seek(off)
    if h.read(4096) != os.pread(fd, 4096, off):
        sys.exit("differs at sampled offset %d" % off)
print(compared)
"#;
    let compared = run(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(vmdk)
        .arg(raw));
    let compared: u64 = compared.trim().parse().unwrap();
    assert!(compared > 10 << 20, "only {compared} bytes compared");
}

/// As vSphere writes it, with the properties a user would fill in.
const OVF_ENV: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" xmlns:ve="http://www.vmware.com/schema/ovfenv" oe:id="" ve:vCenterId="vm-1">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>8.0.2</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
         <Property oe:key="ferry.dns" oe:value="10.0.2.3"/>
         <Property oe:key="ferry.hostname" oe:value="ferry-ova"/>
         <Property oe:key="ferry.ipv4.address" oe:value="10.0.2.50/24"/>
         <Property oe:key="ferry.ipv4.gateway" oe:value="10.0.2.2"/>
         <Property oe:key="ferry.ntp" oe:value=""/>
         <Property oe:key="ferry.support.public_key" oe:value=""/>
   </PropertySection>
</Environment>
"#;

#[test]
fn ova_reads_back_and_its_vmdk_boots_on_pvscsi_and_vmxnet3_with_ovf_properties_from_an_iso() {
    let raw = appliance_image().unwrap();
    let ova = workspace().join("out/ferry.ova");
    assert!(
        ova.is_file(),
        "{} is missing: build it with scripts/build-image",
        ova.display()
    );
    let scratch = Scratch::new("ova").unwrap();
    let x = scratch.0.join("x");
    fs::create_dir_all(&x).unwrap();

    let listing = run(Command::new("tar").arg("-tf").arg(&ova));
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        ["ferry.ovf", "ferry.mf", "ferry-disk1.vmdk"],
        "members, descriptor first"
    );
    run(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x));
    let mf = fs::read_to_string(x.join("ferry.mf")).unwrap();
    assert_eq!(mf.lines().count(), 2, "{mf}");
    for line in mf.lines() {
        let (name, hex) = line
            .strip_prefix("SHA256(")
            .and_then(|l| l.split_once(")= "))
            .unwrap_or_else(|| panic!("manifest line {line:?}"));
        let sum = run(Command::new("sha256sum").arg(x.join(name)));
        assert_eq!(sum.split_whitespace().next(), Some(hex), "{name}");
    }

    let hw = read_hardware(&fs::read_to_string(x.join("ferry.ovf")).unwrap());
    assert_eq!(
        (hw.cpus, hw.memory_mib, hw.family.as_str()),
        (4, 32768, "vmx-14")
    );
    assert_eq!(hw.scsi_controller, "VirtualSCSI");
    assert!(hw.disk_parent_is_scsi);
    assert_eq!(hw.disk_capacity_bytes, fs::metadata(&raw).unwrap().len());
    assert_eq!(hw.disk_capacity_bytes, 80 << 30);
    assert_eq!(hw.adapter, "VmxNet3");
    assert_eq!(hw.firmware, "efi");
    assert_eq!(hw.transports, ["com.vmware.guestInfo", "iso"]);

    let vmdk = x.join("ferry-disk1.vmdk");
    assert_eq!(hw.file_size, fs::metadata(&vmdk).unwrap().len());
    let check = run(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(&vmdk));
    assert!(check.contains("No errors"), "{check}");
    let compare = run(Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "raw"])
        .arg(&vmdk)
        .arg(&raw));
    assert!(compare.contains("identical"), "{compare}");
    let info = run(Command::new("vmdkinfo").arg(&vmdk));
    assert!(info.contains("Stream optimized"), "{info}");
    assert!(info.contains("(85899345920 bytes)"), "{info}");
    libvmdk_reads_the_raw_image(&vmdk, &raw);

    // The OVF environment vSphere would put on the CD-ROM (ISO transport)
    // after the user filled in the properties at import.
    let env_dir = scratch.0.join("ovf-env");
    fs::create_dir_all(&env_dir).unwrap();
    fs::write(env_dir.join("ovf-env.xml"), OVF_ENV).unwrap();
    let iso = scratch.0.join("ovf-env.iso");
    run(Command::new("genisoimage")
        .args(["-quiet", "-r", "-J", "-V", "OVF ENV", "-o"])
        .arg(&iso)
        .arg(&env_dir));

    // Boot the VMDK itself (writes go to a throw-away overlay). SeaBIOS:
    // Debian's OVMF has no PVSCSI driver (VMware's EFI firmware has one);
    // the UEFI path of the same disk is what boot.rs boots.
    let mut cfg = VmConfig::new(&vmdk, Firmware::Bios, &scratch.0);
    cfg.disk_format = "vmdk";
    cfg.disk_bus = DiskBus::Pvscsi;
    cfg.snapshot = true;
    cfg.nic = "vmxnet3";
    cfg.cdrom = Some(iso);
    // DMI says VMware as on vSphere, so ferry-init reads guestinfo through
    // the backdoor; QEMU's vmport answers no guestinfo RPC (and lockdown
    // refuses iopl), so the reading child fails, PID 1 carries on.
    cfg.smbios = vec!["type=1,manufacturer=VMware,, Inc.,product=VMware20,,1".into()];
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("ferry-init: ready in ", Duration::from_secs(180))
        .unwrap();
    vm.wait_for("data: partition /dev/sda4 grown", Duration::from_secs(1))
        .unwrap();
    // the same PARTUUIDs, now behind PVSCSI
    let root = vm
        .wait_for("root: PARTUUID=", Duration::from_secs(1))
        .unwrap();
    assert!(root.contains(" is /dev/sda2, PARTUUID="), "{root}");
    vm.wait_for("platform: Vmware", Duration::from_secs(1))
        .unwrap();
    let refused = vm
        .wait_for("config: vmware-guestinfo: ", Duration::from_secs(1))
        .unwrap();
    assert!(refused.contains("killed by SIG"), "{refused}");
    vm.wait_for(
        "guestinfo: no VMware backdoor answers here; not reading guestinfo again",
        Duration::from_secs(60),
    )
    .unwrap();
    vm.wait_for(
        "config: accepted the OVF environment on /dev/sr0",
        Duration::from_secs(1),
    )
    .unwrap();
    vm.wait_for("hostname: ferry-ova", Duration::from_secs(1))
        .unwrap();
    // the static address from the properties, not DHCP's 10.0.2.15
    vm.wait_for("network: eth0 10.0.2.50/24", Duration::from_secs(60))
        .unwrap();
    let status = vm.power_off().unwrap();
    assert!(status.success(), "QEMU exit status {status}");
}
