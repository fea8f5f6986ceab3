// SPDX-License-Identifier: MIT
//! GUID partition tables: read, write and grow.
//!
//! One small implementation shared by the image builder (which lays out the
//! disk), `ferry-init` (which grows the data partition to the end of the disk
//! on first boot) and the end-to-end tests (which find partitions inside
//! `out/ferry.raw`). Sector size is 512 bytes; the table holds 128 entries of
//! 128 bytes, as every tool writes them.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::str::FromStr;

/// Bytes per logical sector.
pub const SECTOR: u64 = 512;
/// Number of partition entries in the table.
pub const ENTRIES: usize = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: usize = 128;
/// Sectors taken by the partition entry array (128 * 128 / 512).
pub const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;
/// Partitions start and end on 1 MiB boundaries.
pub const ALIGN: u64 = 2048;

/// Well-known partition type GUIDs.
pub mod types {
    /// EFI system partition.
    pub const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    /// Linux root (x86-64), from the Discoverable Partitions Specification.
    pub const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
    /// Linux root verity (x86-64).
    pub const ROOT_X86_64_VERITY: &str = "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5";
    /// Generic Linux data.
    pub const LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
}

/// Attribute bit 2: legacy BIOS bootable (read by syslinux's gptmbr.bin).
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Errors reading or writing a table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o on the disk: {0}")]
    Io(#[from] io::Error),
    #[error("no GPT header at LBA 1 (signature {0:02x?})")]
    NoHeader([u8; 8]),
    #[error("GPT header checksum mismatch (stored {stored:#x}, computed {computed:#x})")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("GPT partition array checksum mismatch")]
    EntriesCrc,
    #[error("unsupported GPT layout: {0}")]
    Unsupported(String),
    #[error("invalid GUID {0:?}")]
    BadGuid(String),
    #[error("partitions do not fit a disk of {sectors} sectors: {why}")]
    DoesNotFit { sectors: u64, why: String },
}

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID marks an unused entry.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// A GUID derived from 16 bytes of some hash: deterministic builds use it.
    /// Sets the version (4) and variant bits so it is a valid RFC 4122 GUID.
    pub fn from_hash(bytes: &[u8]) -> Guid {
        let mut b = [0u8; 16];
        b.copy_from_slice(&bytes[..16]);
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }
}

impl FromStr for Guid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Guid, Error> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || s.len() != 36 {
            return Err(Error::BadGuid(s.to_string()));
        }
        let mut raw = [0u8; 16];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| Error::BadGuid(s.to_string()))?;
        }
        // first three fields are little-endian on disk
        let mut b = raw;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Ok(Guid(b))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// First sector (inclusive).
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    pub attributes: u64,
    /// The partition label (`PARTNAME=` in sysfs, `PARTLABEL` in udev).
    pub name: String,
}

impl Partition {
    /// Offset of the partition in bytes.
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    /// Size of the partition in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }

    fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut e = [0u8; ENTRY_SIZE];
        e[0..16].copy_from_slice(&self.type_guid.0);
        e[16..32].copy_from_slice(&self.unique_guid.0);
        e[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        for (i, unit) in self.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        e
    }

    fn decode(e: &[u8]) -> Option<Partition> {
        let mut type_guid = Guid::default();
        type_guid.0.copy_from_slice(&e[0..16]);
        if type_guid.is_zero() {
            return None;
        }
        let mut unique_guid = Guid::default();
        unique_guid.0.copy_from_slice(&e[16..32]);
        let u64_at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().expect("8 bytes"));
        let units: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        Some(Partition {
            type_guid,
            unique_guid,
            first_lba: u64_at(32),
            last_lba: u64_at(40),
            attributes: u64_at(48),
            name: String::from_utf16_lossy(&units),
        })
    }
}

/// A partition table: the disk GUID and the used entries, in slot order
/// (slot 0 is the kernel's partition 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
}

/// First usable sector with a standard 128-entry array.
pub const FIRST_USABLE: u64 = 2 + ENTRY_SECTORS;

/// Last usable sector of a disk of `sectors` sectors.
pub fn last_usable(sectors: u64) -> u64 {
    sectors - 2 - ENTRY_SECTORS
}

/// Rounds `lba` up to the partition alignment.
pub fn align_up(lba: u64) -> u64 {
    lba.div_ceil(ALIGN) * ALIGN
}

impl Table {
    /// Reads and checks the primary table of a disk.
    pub fn read<R: Read + Seek>(disk: &mut R) -> Result<Table, Error> {
        let mut hdr = [0u8; SECTOR as usize];
        disk.seek(SeekFrom::Start(SECTOR))?;
        disk.read_exact(&mut hdr)?;
        let sig: [u8; 8] = hdr[0..8].try_into().expect("8 bytes");
        if &sig != b"EFI PART" {
            return Err(Error::NoHeader(sig));
        }
        let hsize = u32::from_le_bytes(hdr[12..16].try_into().expect("4")) as usize;
        if !(92..=SECTOR as usize).contains(&hsize) {
            return Err(Error::Unsupported(format!("header size {hsize}")));
        }
        let stored = u32::from_le_bytes(hdr[16..20].try_into().expect("4"));
        let mut h = hdr[..hsize].to_vec();
        h[16..20].fill(0);
        let computed = crc32fast::hash(&h);
        if stored != computed {
            return Err(Error::HeaderCrc { stored, computed });
        }
        let entries_lba = u64::from_le_bytes(hdr[72..80].try_into().expect("8"));
        let count = u32::from_le_bytes(hdr[80..84].try_into().expect("4")) as usize;
        let esize = u32::from_le_bytes(hdr[84..88].try_into().expect("4")) as usize;
        let entries_crc = u32::from_le_bytes(hdr[88..92].try_into().expect("4"));
        if esize != ENTRY_SIZE || count == 0 || count > 1024 {
            return Err(Error::Unsupported(format!(
                "{count} entries of {esize} bytes"
            )));
        }
        let mut disk_guid = Guid::default();
        disk_guid.0.copy_from_slice(&hdr[56..72]);
        let mut arr = vec![0u8; count * esize];
        disk.seek(SeekFrom::Start(entries_lba * SECTOR))?;
        disk.read_exact(&mut arr)?;
        if crc32fast::hash(&arr) != entries_crc {
            return Err(Error::EntriesCrc);
        }
        let mut partitions = Vec::new();
        for chunk in arr.chunks(esize) {
            match Partition::decode(chunk) {
                Some(p) => partitions.push(p),
                None => break,
            }
        }
        Ok(Table {
            disk_guid,
            partitions,
        })
    }

    /// Finds a partition by its label; returns its slot (kernel number - 1).
    pub fn find(&self, name: &str) -> Option<(usize, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
    }

    fn check(&self, sectors: u64) -> Result<(), Error> {
        let fits = |why: String| Error::DoesNotFit { sectors, why };
        if sectors < FIRST_USABLE + 2 + ENTRY_SECTORS + 1 {
            return Err(fits("disk too small".into()));
        }
        let mut prev_end = FIRST_USABLE - 1;
        for p in &self.partitions {
            if p.first_lba <= prev_end || p.last_lba < p.first_lba {
                return Err(fits(format!("partition {:?} overlaps or is empty", p.name)));
            }
            if p.last_lba > last_usable(sectors) {
                return Err(fits(format!("partition {:?} ends past the disk", p.name)));
            }
            prev_end = p.last_lba;
        }
        if self.partitions.len() > ENTRIES {
            return Err(fits("too many partitions".into()));
        }
        Ok(())
    }

    fn header(&self, sectors: u64, backup: bool, entries_crc: u32) -> [u8; SECTOR as usize] {
        let (my, alt, entries) = if backup {
            (sectors - 1, 1, sectors - 1 - ENTRY_SECTORS)
        } else {
            (1, sectors - 1, 2)
        };
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&FIRST_USABLE.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable(sectors).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Writes the protective MBR's partition record (bytes 446..512; the
    /// boot code in bytes 0..440 is left alone), the primary table and the
    /// backup table at the end of a disk of `sectors` sectors.
    pub fn write<W: Write + Seek>(&self, disk: &mut W, sectors: u64) -> Result<(), Error> {
        self.check(sectors)?;
        let mut arr = vec![0u8; ENTRIES * ENTRY_SIZE];
        for (i, p) in self.partitions.iter().enumerate() {
            arr[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE].copy_from_slice(&p.encode());
        }
        let crc = crc32fast::hash(&arr);

        let mut mbr = [0u8; 66];
        // one record covering the disk, type 0xEE; CHS fields as tools write them
        let rec = &mut mbr[0..16];
        rec[0] = 0x00;
        rec[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        rec[4] = 0xEE;
        rec[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        rec[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = (sectors - 1).min(u32::MAX as u64) as u32;
        rec[12..16].copy_from_slice(&size.to_le_bytes());
        mbr[64] = 0x55;
        mbr[65] = 0xAA;
        disk.seek(SeekFrom::Start(446))?;
        disk.write_all(&mbr)?;

        disk.seek(SeekFrom::Start(SECTOR))?;
        disk.write_all(&self.header(sectors, false, crc))?;
        disk.write_all(&arr)?;
        disk.seek(SeekFrom::Start((sectors - 1 - ENTRY_SECTORS) * SECTOR))?;
        disk.write_all(&arr)?;
        disk.write_all(&self.header(sectors, true, crc))?;
        disk.flush()?;
        Ok(())
    }

    /// Extends the last partition to the end of a disk of `sectors` sectors
    /// (its end aligned down to 1 MiB). Returns the old and new last sector
    /// when it grew, `None` when it already fills the disk.
    pub fn grow_last(&mut self, sectors: u64) -> Option<(u64, u64)> {
        let end = ((last_usable(sectors) + 1) / ALIGN) * ALIGN - 1;
        let last = self.partitions.last_mut()?;
        if end <= last.last_lba {
            return None;
        }
        let old = last.last_lba;
        last.last_lba = end;
        Some((old, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn table() -> Table {
        let mk = |name: &str, t: &str, first: u64, last: u64| Partition {
            type_guid: t.parse().unwrap(),
            unique_guid: Guid::from_hash(&[name.len() as u8; 16]),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.into(),
        };
        Table {
            disk_guid: Guid::from_hash(&[7; 16]),
            partitions: vec![
                mk("esp", types::ESP, 2048, 4095),
                mk("ferry-data", types::LINUX_DATA, 4096, 6143),
            ],
        }
    }

    #[test]
    fn guid_text_round_trip_uses_mixed_endian() {
        let g: Guid = types::ESP.parse().unwrap();
        assert_eq!(g.0[0..4], [0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(g.to_string(), types::ESP);
        assert!("not-a-guid".parse::<Guid>().is_err());
    }

    #[test]
    fn write_read_grow_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let small = 8192;
        f.set_len(small * SECTOR).unwrap();
        let t = table();
        t.write(&mut f, small).unwrap();
        let back = Table::read(&mut f).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.find("ferry-data").unwrap().0, 1);

        // the disk gets bigger: grow the last partition and rewrite
        let big = 65536;
        f.set_len(big * SECTOR).unwrap();
        let mut grown = back.clone();
        let (old, new) = grown.grow_last(big).unwrap();
        assert_eq!(old, 6143);
        assert_eq!(new, 63487);
        assert!(grown.grow_last(big).is_none());
        grown.write(&mut f, big).unwrap();
        let again = Table::read(&mut f).unwrap();
        assert_eq!(again.partitions[1].last_lba, 63487);
        // backup header sits in the last sector
        let mut last = [0u8; 8];
        f.seek(SeekFrom::Start((big - 1) * SECTOR)).unwrap();
        f.read_exact(&mut last).unwrap();
        assert_eq!(&last, b"EFI PART");
    }

    #[test]
    fn corrupted_header_is_refused() {
        let mut disk = io::Cursor::new(vec![0u8; 8192 * SECTOR as usize]);
        table().write(&mut disk, 8192).unwrap();
        disk.get_mut()[SECTOR as usize + 40] ^= 1;
        assert!(matches!(
            Table::read(&mut disk),
            Err(Error::HeaderCrc { .. })
        ));
    }

    #[test]
    fn overlapping_partitions_are_refused() {
        let mut t = table();
        t.partitions[1].first_lba = 3000;
        let mut disk = io::Cursor::new(vec![0u8; 8192 * SECTOR as usize]);
        assert!(matches!(
            t.write(&mut disk, 8192),
            Err(Error::DoesNotFit { .. })
        ));
    }
}
