// SPDX-License-Identifier: GPL-2.0-only
//! The data partition: found by its label, grown to the end of the disk,
//! formatted ext4 on first boot, checked on later boots, mounted on /data
//! with nosuid, nodev and noexec.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::process::Command;
use std::time::Duration;

use ferry_gpt::Table;
use nix::mount::MsFlags;

use crate::block::{self, Found};
use crate::error::{Context, Error, Result};
use crate::sys::Sys;

pub const LABEL: &str = "ferry-data";
pub const MOUNTPOINT: &str = "/data";
const MKE2FS: &str = "/usr/sbin/mke2fs";
const E2FSCK: &str = "/usr/sbin/e2fsck";
const RESIZE2FS: &str = "/usr/sbin/resize2fs";

/// What an ext4 superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4 {
    pub size: u64,
    /// The journal has to be replayed: the last shutdown was not clean.
    pub needs_recovery: bool,
    /// Errors were recorded.
    pub has_errors: bool,
}

/// Reads the ext4 superblock at byte 1024, if there is one.
pub fn read_superblock<R: Read + Seek>(dev: &mut R) -> io::Result<Option<Ext4>> {
    let mut sb = [0u8; 1024];
    dev.seek(SeekFrom::Start(1024))?;
    dev.read_exact(&mut sb)?;
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4"));
    if u16_at(0x38) != 0xEF53 {
        return Ok(None);
    }
    let incompat = u32_at(0x60);
    let mut blocks = u32_at(0x4) as u64;
    if incompat & 0x80 != 0 {
        blocks |= (u32_at(0x150) as u64) << 32;
    }
    let block_size = 1024u64 << u32_at(0x18).min(16);
    Ok(Some(Ext4 {
        size: blocks * block_size,
        needs_recovery: incompat & 0x4 != 0,
        has_errors: u16_at(0x3A) & 0x2 != 0,
    }))
}

/// Grows the data partition to the end of the disk when it is the last
/// partition and space follows it. Returns (old, new) sizes in bytes.
pub fn grow(part: &Found) -> Result<Option<(u64, u64)>> {
    let disk_dev = part.disk_dev();
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&disk_dev)
        .ctx(|| format!("open {disk_dev}"))?;
    let sectors =
        block::size_bytes(&disk).ctx(|| format!("size of {disk_dev}"))? / ferry_gpt::SECTOR;
    let mut table = Table::read(&mut disk).map_err(|source| Error::Gpt {
        what: format!("read the GPT of {disk_dev}"),
        source,
    })?;
    let Some((slot, _)) = table.find(LABEL) else {
        return Ok(None);
    };
    if slot + 1 != table.partitions.len() {
        log::warn!("data: {LABEL} is not the last partition; not grown");
        return Ok(None);
    }
    let Some((old, new)) = table.grow_last(sectors) else {
        return Ok(None);
    };
    let first = table.partitions[slot].first_lba;
    table
        .write(&mut disk, sectors)
        .map_err(|source| Error::Gpt {
            what: format!("write the GPT of {disk_dev}"),
            source,
        })?;
    disk.sync_all().ctx(|| format!("sync {disk_dev}"))?;
    let sz = |last: u64| (last + 1 - first) * ferry_gpt::SECTOR;
    block::resize_partition(&disk, part.number, first * ferry_gpt::SECTOR, sz(new))
        .ctx(|| format!("tell the kernel {} grew", part.dev()))?;
    Ok(Some((sz(old), sz(new))))
}

fn run_tool(args: &[&str], ok_codes: &[i32]) -> Result<()> {
    let out = crate::reaper::run(Command::new(args[0]).args(&args[1..]))
        .ctx(|| format!("run {}", args[0]))?;
    let code = out.status.code().unwrap_or(-1);
    if ok_codes.contains(&code) {
        Ok(())
    } else {
        Err(Error::Tool {
            what: args.join(" "),
            code,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Finds, grows, formats or checks, and mounts the data partition.
pub fn prepare(sys: &dyn Sys) -> Result<()> {
    let part = block::wait_partition(LABEL, Duration::from_secs(10))?;
    let dev = part.dev();
    if let Some((old, new)) = grow(&part)? {
        log::info!(
            "data: partition {dev} grown from {} to {}",
            gib(old),
            gib(new)
        );
    }
    let psize = block::size_bytes(&File::open(&dev).ctx(|| format!("open {dev}"))?)
        .ctx(|| format!("size of {dev}"))?;
    let sb = read_superblock(&mut File::open(&dev).ctx(|| format!("open {dev}"))?)
        .ctx(|| format!("read superblock of {dev}"))?;
    match sb {
        None => {
            log::info!(
                "data: no file system on {dev}: creating ext4 ({})",
                gib(psize)
            );
            run_tool(
                &[
                    MKE2FS,
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-L",
                    LABEL,
                    "-m",
                    "1",
                    "-E",
                    "lazy_itable_init=1,lazy_journal_init=1",
                    &dev,
                ],
                &[0],
            )?;
        }
        Some(fs) => {
            if fs.needs_recovery {
                log::warn!("data: {dev} was not unmounted cleanly last time: checking it");
            } else {
                log::info!("data: {dev} was unmounted cleanly last time");
            }
            // 0: clean, 1: errors fixed
            run_tool(&[E2FSCK, "-p", &dev], &[0, 1])?;
            if fs.size + (16 << 20) < psize {
                log::info!(
                    "data: growing the file system from {} to {}",
                    gib(fs.size),
                    gib(psize)
                );
                run_tool(&[RESIZE2FS, &dev], &[0])?;
            }
        }
    }
    sys.mkdir(MOUNTPOINT, 0o755)
        .ctx(|| format!("mkdir {MOUNTPOINT}"))?;
    sys.mount(
        &dev,
        MOUNTPOINT,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("noinit_itable,errors=remount-ro"),
    )
    .ctx(|| format!("mount {dev} on {MOUNTPOINT}"))?;
    log::info!("data: {dev} mounted on {MOUNTPOINT} ({})", gib(psize));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_ext4_superblock() {
        let mkfs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(mkfs) = mkfs else {
            panic!("mke2fs (e2fsprogs) is needed by this test");
        };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        File::create(&img).unwrap().set_len(32 << 20).unwrap();
        let st = Command::new(mkfs)
            .args(["-q", "-F", "-t", "ext4", "-b", "4096"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        let sb = read_superblock(&mut File::open(&img).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(sb.size, 32 << 20);
        assert!(!sb.needs_recovery);
        assert!(!sb.has_errors);

        // set the needs_recovery feature bit as a crashed kernel leaves it
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[1024 + 0x60] |= 0x4;
        std::fs::write(&img, &bytes).unwrap();
        assert!(
            read_superblock(&mut File::open(&img).unwrap())
                .unwrap()
                .unwrap()
                .needs_recovery
        );

        // not ext4
        let blank = dir.path().join("blank");
        File::create(&blank).unwrap().set_len(1 << 20).unwrap();
        assert_eq!(
            read_superblock(&mut File::open(&blank).unwrap()).unwrap(),
            None
        );
    }
}
