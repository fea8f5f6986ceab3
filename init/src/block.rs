// SPDX-License-Identifier: GPL-2.0-only
//! Block devices: finding partitions by their GPT unique GUID (PARTUUID)
//! or label through sysfs and the disks' partition tables (no udev in the
//! appliance), and telling the kernel a partition grew.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_gpt::{Guid, Table};

use crate::cmdline::PartRef;
use crate::error::{Error, Result};

/// A partition found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Kernel name of the partition, e.g. `vda4`.
    pub name: String,
    /// Partition number, e.g. 4.
    pub number: u32,
    /// Kernel name of the whole disk, e.g. `vda`.
    pub disk: String,
}

impl Found {
    pub fn dev(&self) -> String {
        format!("/dev/{}", self.name)
    }
    pub fn disk_dev(&self) -> String {
        format!("/dev/{}", self.disk)
    }
}

/// Looks through `<sysfs>/class/block/*/uevent` for `PARTNAME=<label>`.
pub fn find_partition(sysfs: &Path, label: &str) -> Option<Found> {
    let dir = fs::read_dir(sysfs.join("class/block")).ok()?;
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let base = sysfs.join("class/block").join(&name);
        let Ok(uevent) = fs::read_to_string(base.join("uevent")) else {
            continue;
        };
        let mut partname = None;
        let mut partn = None;
        for line in uevent.lines() {
            if let Some(v) = line.strip_prefix("PARTNAME=") {
                partname = Some(v.to_string());
            }
            if let Some(v) = line.strip_prefix("PARTN=") {
                partn = v.parse().ok();
            }
        }
        if partname.as_deref() != Some(label) {
            continue;
        }
        // the parent directory of the partition's real sysfs path is the disk
        let disk = fs::canonicalize(&base)
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))?;
        return Some(Found {
            name,
            number: partn?,
            disk,
        });
    }
    None
}

/// Finds a partition by its unique GUID. The kernel does not show
/// partition GUIDs in sysfs (upstream uevents carry only PARTN and
/// PARTNAME), so the GPT of each whole disk in `<sysfs>/block` is read from
/// `<dev>/<disk>`; the partition's kernel name is the disk's child whose
/// `partition` file holds the entry's number.
pub fn find_by_uuid(sysfs: &Path, dev: &Path, uuid: &Guid) -> Option<Found> {
    let mut disks: Vec<String> = fs::read_dir(sysfs.join("block"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "zram", "dm-", "sr", "md"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    disks.sort();
    for disk in disks {
        let Ok(mut f) = fs::File::open(dev.join(&disk)) else {
            continue;
        };
        let Ok(table) = Table::read(&mut f) else {
            continue;
        };
        let Some(slot) = table.partitions.iter().position(|p| p.unique_guid == *uuid) else {
            continue;
        };
        let number = slot as u32 + 1;
        let children = fs::read_dir(sysfs.join("block").join(&disk)).ok()?;
        for child in children.filter_map(|e| e.ok()) {
            let n = fs::read_to_string(child.path().join("partition")).unwrap_or_default();
            if n.trim().parse::<u32>().ok() == Some(number) {
                return Some(Found {
                    name: child.file_name().to_string_lossy().into_owned(),
                    number,
                    disk,
                });
            }
        }
    }
    None
}

/// Finds a partition named the command line's way.
pub fn find(part: &PartRef) -> Option<Found> {
    match part {
        PartRef::Uuid(g) => find_by_uuid(Path::new("/sys"), Path::new("/dev"), g),
        PartRef::Label(l) => find_partition(Path::new("/sys"), l),
    }
}

/// Waits until a partition shows up (drivers probe asynchronously).
pub fn wait_for(part: &PartRef, timeout: Duration) -> Result<Found> {
    let start = Instant::now();
    loop {
        if let Some(f) = find(part) {
            if Path::new(&f.dev()).exists() {
                return Ok(f);
            }
        }
        if start.elapsed() > timeout {
            return Err(Error::PartitionMissing {
                label: part.to_string(),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a partition with this label shows up.
pub fn wait_partition(label: &str, timeout: Duration) -> Result<Found> {
    wait_for(&PartRef::Label(label.into()), timeout)
}

/// Size of a block device in bytes (BLKGETSIZE64).
pub fn size_bytes(dev: &fs::File) -> io::Result<u64> {
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`.
    unsafe { blkgetsize64(dev.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut libc::c_void,
}

/// Tells the kernel partition `pno` of this disk now spans these bytes
/// (BLKPG_RESIZE_PARTITION: works while other partitions are in use).
pub fn resize_partition(disk: &fs::File, pno: u32, start: u64, length: u64) -> io::Result<()> {
    const BLKPG: libc::c_ulong = 0x1269;
    const BLKPG_RESIZE_PARTITION: i32 = 3;
    let mut part = BlkpgPartition {
        start: start as i64,
        length: length as i64,
        pno: pno as i32,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: arg points to a valid blkpg_ioctl_arg whose data points to a
    // blkpg_partition that outlives the call.
    let r = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_partition_by_label_in_a_sysfs_tree() {
        let t = tempfile::tempdir().unwrap();
        let devices = t.path().join("devices/pci0/virtio1/block/vda");
        for (n, label) in [(1, "esp"), (4, "ferry-data")] {
            let p = devices.join(format!("vda{n}"));
            fs::create_dir_all(&p).unwrap();
            fs::write(
                p.join("uevent"),
                format!("MAJOR=254\nMINOR={n}\nDEVNAME=vda{n}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={label}\n"),
            )
            .unwrap();
        }
        fs::write(devices.join("uevent"), "DEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        let class = t.path().join("class/block");
        fs::create_dir_all(&class).unwrap();
        for n in ["vda", "vda1", "vda4"] {
            let target = if n == "vda" {
                devices.clone()
            } else {
                devices.join(n)
            };
            std::os::unix::fs::symlink(target, class.join(n)).unwrap();
        }
        let f = find_partition(t.path(), "ferry-data").unwrap();
        assert_eq!(
            f,
            Found {
                name: "vda4".into(),
                number: 4,
                disk: "vda".into()
            }
        );
        assert_eq!(f.dev(), "/dev/vda4");
        assert_eq!(f.disk_dev(), "/dev/vda");
        assert!(find_partition(t.path(), "ferry-root").is_none());
    }

    #[test]
    fn finds_partition_by_uuid_in_the_disks_gpt() {
        use ferry_gpt::{types, Partition};
        let t = tempfile::tempdir().unwrap();
        let guid = |n: u8| Guid::from_hash(&[n; 32]);
        let part = |n: u8, first: u64| Partition {
            type_guid: types::LINUX_DATA.parse().unwrap(),
            unique_guid: guid(n),
            first_lba: first,
            last_lba: first + 2047,
            attributes: 0,
            name: format!("p{n}"),
        };
        // /dev/vdb: a disk image with two partitions; /dev/vda: no GPT
        let dev = t.path().join("dev");
        fs::create_dir_all(&dev).unwrap();
        let sectors = 16384;
        let mut img = fs::File::create(dev.join("vdb")).unwrap();
        img.set_len(sectors * 512).unwrap();
        Table {
            disk_guid: guid(9),
            partitions: vec![part(1, 2048), part(2, 4096)],
        }
        .write(&mut img, sectors)
        .unwrap();
        fs::write(dev.join("vda"), vec![0u8; 4096]).unwrap();
        for (disk, parts) in [
            ("vda", &["vda1"][..]),
            ("vdb", &["vdb1", "vdb2"][..]),
            ("loop0", &[][..]),
        ] {
            let d = t.path().join("block").join(disk);
            fs::create_dir_all(&d).unwrap();
            for (i, p) in parts.iter().enumerate() {
                fs::create_dir_all(d.join(p)).unwrap();
                fs::write(d.join(p).join("partition"), format!("{}\n", i + 1)).unwrap();
            }
        }
        let f = find_by_uuid(t.path(), &dev, &guid(2)).unwrap();
        assert_eq!(
            f,
            Found {
                name: "vdb2".into(),
                number: 2,
                disk: "vdb".into()
            }
        );
        assert!(find_by_uuid(t.path(), &dev, &guid(3)).is_none());
    }

    #[test]
    fn blkpg_structs_have_the_kernel_layout() {
        assert_eq!(
            std::mem::size_of::<BlkpgPartition>(),
            8 + 8 + 4 + 64 + 64 + 4
        );
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }
}
