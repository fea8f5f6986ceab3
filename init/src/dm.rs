// SPDX-License-Identifier: GPL-2.0-only
//! Device-mapper through its ioctls (Debian's kernel has no `dm-mod.create=`).
//!
//! Only what the appliance needs: create a device, load a one-target table
//! read-only, resume it, and tell which `/dev/dm-N` it became.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

const DM_IOCTL: u8 = 0xfd;
const DM_IOCTL_SIZE: usize = 312;
const DM_NAME_LEN: usize = 128;
const DM_TARGET_SPEC_SIZE: usize = 40;
const DM_DEV_CREATE: u8 = 3;
const DM_DEV_REMOVE: u8 = 4;
const DM_DEV_SUSPEND: u8 = 6;
const DM_TABLE_LOAD: u8 = 9;
const DM_READONLY_FLAG: u32 = 1;
/// Room for the kernel's answers.
const BUF_SIZE: usize = 16 * 1024;

/// One target line of a table: `start length type params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub sectors: u64,
    pub kind: String,
    pub params: String,
}

/// Builds the `struct dm_ioctl` header plus payload for one command.
pub fn encode(name: &str, flags: u32, target: Option<&Target>) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() >= DM_NAME_LEN {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad dm name"));
    }
    let mut buf = vec![0u8; BUF_SIZE];
    let mut payload_end = DM_IOCTL_SIZE;
    if let Some(t) = target {
        if t.kind.len() >= 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad target type",
            ));
        }
        let spec = DM_IOCTL_SIZE;
        let params = spec + DM_TARGET_SPEC_SIZE;
        let params_len = t.params.len() + 1; // NUL
        let next = (DM_TARGET_SPEC_SIZE + params_len).div_ceil(8) * 8;
        if spec + next > BUF_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "table too long",
            ));
        }
        buf[spec..spec + 8].copy_from_slice(&t.start.to_ne_bytes());
        buf[spec + 8..spec + 16].copy_from_slice(&t.sectors.to_ne_bytes());
        // status (i32) stays 0
        buf[spec + 20..spec + 24].copy_from_slice(&(next as u32).to_ne_bytes());
        buf[spec + 24..spec + 24 + t.kind.len()].copy_from_slice(t.kind.as_bytes());
        buf[params..params + t.params.len()].copy_from_slice(t.params.as_bytes());
        payload_end = spec + next;
    }
    // version 4.0.0
    buf[0..4].copy_from_slice(&4u32.to_ne_bytes());
    buf[12..16].copy_from_slice(&(BUF_SIZE as u32).to_ne_bytes()); // data_size
    buf[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes()); // data_start
    buf[20..24].copy_from_slice(&(u32::from(target.is_some())).to_ne_bytes()); // target_count
    buf[28..32].copy_from_slice(&flags.to_ne_bytes());
    buf[48..48 + name.len()].copy_from_slice(name.as_bytes());
    debug_assert!(payload_end <= BUF_SIZE);
    Ok(buf)
}

fn dm_ioctl(ctl: &File, cmd: u8, buf: &mut [u8]) -> io::Result<()> {
    let req = nix::request_code_readwrite!(DM_IOCTL, cmd, DM_IOCTL_SIZE);
    // SAFETY: buf is BUF_SIZE bytes, starts with a valid dm_ioctl header whose
    // data_size says so; the kernel reads and writes within it.
    let r = unsafe { libc::ioctl(ctl.as_raw_fd(), req as _, buf.as_mut_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The device number the kernel returned in `dev`, as (major, minor).
pub fn decode_dev(buf: &[u8]) -> (u32, u32) {
    let dev = u64::from_ne_bytes(buf[40..48].try_into().expect("8 bytes"));
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// Creates a read-only device named `name` with one target and activates it.
/// Returns the path of its node (`/dev/dm-N`, made by devtmpfs).
pub fn create_readonly(name: &str, target: &Target) -> io::Result<String> {
    let ctl = File::options()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")?;
    let mut b = encode(name, 0, None)?;
    dm_ioctl(&ctl, DM_DEV_CREATE, &mut b)
        .map_err(|e| io::Error::new(e.kind(), format!("DM_DEV_CREATE {name}: {e}")))?;
    let mut b = encode(name, DM_READONLY_FLAG, Some(target))?;
    if let Err(e) = dm_ioctl(&ctl, DM_TABLE_LOAD, &mut b) {
        let mut r = encode(name, 0, None)?;
        let _ = dm_ioctl(&ctl, DM_DEV_REMOVE, &mut r);
        return Err(io::Error::new(
            e.kind(),
            format!(
                "DM_TABLE_LOAD {name} ({} {}): {e}",
                target.kind, target.params
            ),
        ));
    }
    let mut b = encode(name, 0, None)?;
    dm_ioctl(&ctl, DM_DEV_SUSPEND, &mut b)
        .map_err(|e| io::Error::new(e.kind(), format!("DM resume {name}: {e}")))?;
    let (_, minor) = decode_dev(&b);
    Ok(format!("/dev/dm-{minor}"))
}

/// The dm-verity table for a root built with `veritysetup format
/// --no-superblock` into a separate hash device, 4 KiB blocks, sha256.
pub fn verity_target(data_dev: &str, hash_dev: &str, v: &crate::cmdline::Verity) -> Target {
    Target {
        start: 0,
        sectors: v.data_blocks * 8,
        kind: "verity".into(),
        params: format!(
            "1 {data_dev} {hash_dev} 4096 4096 {} 0 sha256 {} {}",
            v.data_blocks, v.roothash, v.salt
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_struct_dm_ioctl() {
        let t = Target {
            start: 0,
            sectors: 16,
            kind: "verity".into(),
            params: "1 a b".into(),
        };
        let b = encode("ferry-root", DM_READONLY_FLAG, Some(&t)).unwrap();
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 4);
        assert_eq!(u32::from_ne_bytes(b[16..20].try_into().unwrap()), 312);
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(b[28..32].try_into().unwrap()), 1);
        assert_eq!(&b[48..58], b"ferry-root");
        assert_eq!(u64::from_ne_bytes(b[320..328].try_into().unwrap()), 16);
        // next: 40-byte spec + "1 a b\0" rounded up to 8
        assert_eq!(u32::from_ne_bytes(b[332..336].try_into().unwrap()), 48);
        assert_eq!(&b[336..342], b"verity");
        assert_eq!(&b[352..358], b"1 a b\0");
    }

    #[test]
    fn decodes_huge_dev_numbers() {
        let mut b = vec![0u8; 64];
        // major 254, minor 0x1234
        let dev: u64 = (0x34) | (254 << 8) | (0x12 << 20);
        b[40..48].copy_from_slice(&dev.to_ne_bytes());
        assert_eq!(decode_dev(&b), (254, 0x1234));
    }

    #[test]
    fn verity_table_line() {
        let v = crate::cmdline::Verity {
            roothash: "ab".repeat(32),
            salt: "cd".into(),
            data_blocks: 10,
        };
        let t = verity_target("/dev/vda2", "/dev/vda3", &v);
        assert_eq!(t.sectors, 80);
        assert_eq!(
            t.params,
            format!(
                "1 /dev/vda2 /dev/vda3 4096 4096 10 0 sha256 {} cd",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert!(encode("", 0, None).is_err());
        assert!(encode(&"x".repeat(128), 0, None).is_err());
    }
}
