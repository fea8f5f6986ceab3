// SPDX-License-Identifier: MIT
//! The VMDK and OVA checked by readers that are not the writer: qemu-img
//! (check, convert back to raw), libvmdk (vmdkinfo, and its Python binding
//! reading the data), GNU tar, sha256sum, and an XML parser for the
//! descriptor.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use ferry_e2e::ovf::read_hardware;
use ferry_ovf::descriptor::Product;
use ferry_ovf::vmdk;

const GIB: u64 = 1 << 30;

/// A sparse 1 GiB image with data in several grain tables, a grain written
/// as zeros (must be skipped), a write across a grain boundary, and the
/// last sector.
fn test_image(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let f = File::create(path).unwrap();
    f.set_len(GIB).unwrap();
    let pattern = |seed: u64, len: usize| -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let writes = vec![
        (0, pattern(1, 4096)),
        (65536 - 100, pattern(2, 300)), // crosses the first grain boundary
        (3 * 65536, vec![0u8; 65536]),  // allocated but zero: skipped
        (100 << 20, pattern(3, 1 << 20)), // grain table 3
        (700 << 20, b"compressible ".repeat(10_000)),
        (GIB - 512, pattern(4, 512)), // last sector
    ];
    for (off, data) in &writes {
        f.write_all_at(data, *off).unwrap();
    }
    writes
}

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

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn stream_optimized_vmdk_reads_back_equal_in_qemu_img_and_libvmdk() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    test_image(&raw);
    let vmdk_path = dir.path().join("disk.vmdk");
    let info = vmdk::write_stream_optimized(&raw, &vmdk_path, "disk.vmdk").unwrap();
    assert_eq!(info.capacity, GIB);
    // grains 0, 1, 1600..1616, 11200..(+2), 16383 (the zero grain is skipped)
    assert_eq!(info.grains, 2 + 16 + 2 + 1);
    assert_eq!(info.file_size, fs::metadata(&vmdk_path).unwrap().len());

    // Header, footer and end-of-stream marker as VMware lays them out.
    let bytes = fs::read(&vmdk_path).unwrap();
    assert_eq!(&bytes[0..4], b"KDMV");
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        0x30001
    );
    assert_eq!(read_u64(&bytes, 12), GIB / 512);
    assert_eq!(read_u64(&bytes, 20), 128, "grain size");
    assert_eq!(read_u64(&bytes, 56), u64::MAX, "GD at end in the header");
    assert_eq!(read_u64(&bytes, 64), 128, "overhead");
    assert_eq!(&bytes[73..77], b"\n \r\n");
    let n = bytes.len();
    assert!(
        bytes[n - 512..].iter().all(|&b| b == 0),
        "end-of-stream marker"
    );
    let footer_marker = &bytes[n - 1536..n - 1024];
    assert_eq!(read_u64(footer_marker, 0), 1);
    assert_eq!(
        u32::from_le_bytes(footer_marker[12..16].try_into().unwrap()),
        3
    );
    let footer = &bytes[n - 1024..n - 512];
    assert_eq!(&footer[0..4], b"KDMV");
    let gd_offset = read_u64(footer, 56);
    assert!(gd_offset > 128 && gd_offset * 512 < n as u64);
    let descriptor = String::from_utf8_lossy(&bytes[512..512 * 21]);
    assert!(descriptor.contains("createType=\"streamOptimized\""));
    assert!(descriptor.contains(&format!("RW {} SPARSE \"disk.vmdk\"", GIB / 512)));

    // qemu-img: consistency check, then a round trip back to raw.
    let check = run(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(&vmdk_path));
    assert!(check.contains("No errors"), "{check}");
    let back = dir.path().join("back.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&vmdk_path)
        .arg(&back));
    assert!(
        fs::read(&back).unwrap() == fs::read(&raw).unwrap(),
        "qemu-img's raw copy differs from the original"
    );

    // libvmdk: vmdkinfo reads the header and descriptor; its Python binding
    // reads every byte.
    let info_text = run(Command::new("vmdkinfo").arg(&vmdk_path));
    assert!(info_text.contains("Stream optimized"), "{info_text}");
    assert!(info_text.contains("(1073741824 bytes)"), "{info_text}");
    let digest = run(Command::new("/usr/bin/python3").arg("-c").arg(format!(
        "import hashlib, pyvmdk\n\
         h = pyvmdk.handle(); h.open('{}'); h.open_extent_data_files()\n\
         d = hashlib.sha256()\n\
         for off in range(0, h.get_media_size(), 1 << 24):\n    h.seek(off); d.update(h.read(1 << 24))\n\
         print(d.hexdigest())",
        vmdk_path.display()
    )));
    assert_eq!(
        digest.trim(),
        ferry_ovf::ova::sha256_file(&raw).unwrap(),
        "libvmdk reads different data"
    );
}

#[test]
fn a_changed_byte_shows_in_the_round_trip() {
    // The comparison above must be able to fail: flip a byte in a grain's
    // compressed data and qemu-img no longer reads the original.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    test_image(&raw);
    let vmdk_path = dir.path().join("disk.vmdk");
    vmdk::write_stream_optimized(&raw, &vmdk_path, "disk.vmdk").unwrap();
    let f = OpenOptions::new().write(true).open(&vmdk_path).unwrap();
    // first grain marker at sector 128: 12 bytes of marker, then zlib data
    f.write_all_at(&[0xff, 0xff, 0xff, 0xff], 128 * 512 + 40)
        .unwrap();
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "raw"])
        .arg(&vmdk_path)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a damaged grain compared equal");
}

#[test]
fn ova_has_descriptor_first_valid_manifest_and_the_hardware() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    test_image(&raw);
    let ova = dir.path().join("ferry.ova");
    let built = ferry_ovf::ova::build(
        &raw,
        &ova,
        &dir.path().join("work"),
        "ferry",
        &Product::default(),
    )
    .unwrap();
    assert_eq!(built.members, ["ferry.ovf", "ferry.mf", "ferry-disk1.vmdk"]);

    // GNU tar lists and extracts it.
    let listing = run(Command::new("tar").arg("-tf").arg(&ova));
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        ["ferry.ovf", "ferry.mf", "ferry-disk1.vmdk"]
    );
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    run(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x));

    // Manifest: `SHA256(name)= hex`, checked by sha256sum.
    let mf = fs::read_to_string(x.join("ferry.mf")).unwrap();
    let mut names = Vec::new();
    for line in mf.lines() {
        let (name, hex) = line
            .strip_prefix("SHA256(")
            .and_then(|l| l.split_once(")= "))
            .unwrap_or_else(|| panic!("manifest line {line:?}"));
        let sum = run(Command::new("sha256sum").arg(x.join(name)));
        assert_eq!(sum.split_whitespace().next().unwrap(), hex, "{name}");
        names.push(name.to_string());
    }
    assert_eq!(names, ["ferry.ovf", "ferry-disk1.vmdk"]);

    let ovf = fs::read_to_string(x.join("ferry.ovf")).unwrap();
    let hw = read_hardware(&ovf);
    assert_eq!(hw.family, "vmx-14");
    assert_eq!(hw.cpus, 4);
    assert_eq!(hw.memory_mib, 32768);
    assert_eq!(hw.scsi_controller, "VirtualSCSI");
    assert_eq!(hw.disk_capacity_bytes, GIB);
    assert!(
        hw.disk_parent_is_scsi,
        "the disk hangs off the SCSI controller"
    );
    assert_eq!(hw.adapter, "VmxNet3");
    assert_eq!(hw.firmware, "efi");
    assert_eq!(hw.transports, ["com.vmware.guestInfo", "iso"]);
    assert_eq!(
        hw.properties,
        [
            "ferry.hostname",
            "ferry.ipv4.address",
            "ferry.ipv4.gateway",
            "ferry.dns",
            "ferry.ntp",
            "ferry.support.public_key"
        ]
    );
    assert_eq!(
        hw.file_size,
        fs::metadata(x.join("ferry-disk1.vmdk")).unwrap().len()
    );
    assert!(hw.product.contains("Ferry"), "{}", hw.product);
    assert!(!hw.annotation.is_empty());
}
