// SPDX-License-Identifier: MIT
//! A streamOptimized VMDK (monolithic sparse extent, version 3, compressed
//! grains with markers), laid out the way VMware's exporters write it:
//!
//! ```text
//! sector 0        header (gdOffset = GD_AT_END: the real one is in the footer)
//! sector 1..21    embedded descriptor
//! sector 128..    for each grain table that has data:
//!                   grain marker (LBA, compressed size) + zlib data, sector padded
//!                   ... (all non-zero grains of the table, ascending)
//!                   GT marker + grain table (512 entries, 4 sectors)
//!                 GD marker + grain directory
//!                 footer marker + footer (the header with the real gdOffset)
//!                 end-of-stream marker
//! ```
//!
//! All-zero grains are not written (their table entry stays 0, which every
//! reader takes as zeros); a grain table with no grain is not written either
//! (directory entry 0).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::write::ZlibEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use crate::{sparse, Context, Error};

pub const SECTOR: u64 = 512;
/// Sectors per grain (64 KiB grains, as VMware writes them).
pub const GRAIN_SECTORS: u64 = 128;
pub const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per grain table.
pub const GTES_PER_GT: u64 = 512;
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const MAGIC: u32 = 0x564d_444b; // "KDMV" little-endian
const VERSION: u32 = 3;
const FLAG_VALID_NEWLINE_TEST: u32 = 1;
const FLAG_COMPRESSED_GRAINS: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESSION_DEFLATE: u16 = 1;
const GD_AT_END: u64 = u64::MAX;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain: header, descriptor, padding.
const OVERHEAD_SECTORS: u64 = 128;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkInfo {
    /// Virtual disk size in bytes.
    pub capacity: u64,
    /// Bytes of the grains that hold data (OVF `populatedSize`).
    pub populated: u64,
    /// Size of the .vmdk file.
    pub file_size: u64,
    /// Grains written (non-zero).
    pub grains: u64,
}

/// Fields of the sparse extent header, in the order of the on-disk layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub capacity_sectors: u64,
    pub gd_offset: u64,
}

impl Header {
    pub fn to_bytes(self) -> [u8; SECTOR as usize] {
        let mut b = [0u8; SECTOR as usize];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        let flags = FLAG_VALID_NEWLINE_TEST | FLAG_COMPRESSED_GRAINS | FLAG_MARKERS;
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        b[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        b[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
        b[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
        b[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        b[48..56].copy_from_slice(&0u64.to_le_bytes()); // no redundant GD
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
        b[72] = 0; // clean shutdown
                   // newline detection characters: '\n', ' ', '\r', '\n'
        b[73..77].copy_from_slice(b"\n \r\n");
        b[77..79].copy_from_slice(&COMPRESSION_DEFLATE.to_le_bytes());
        b
    }
}

/// A metadata marker: a sector holding (sectors that follow, 0, type).
fn marker(sectors: u64, kind: u32) -> [u8; SECTOR as usize] {
    let mut b = [0u8; SECTOR as usize];
    b[0..8].copy_from_slice(&sectors.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

/// The embedded descriptor, as VMware's open-vmdk writes it. `ddb.adapterType`
/// is lsilogic in every VMware-exported stream disk; the OVF descriptor names
/// the real controller (ParaVirtual SCSI).
pub fn descriptor(capacity_sectors: u64, extent_name: &str, content_hash: &[u8; 32]) -> String {
    let mut cid = u32::from_le_bytes(content_hash[0..4].try_into().expect("4 bytes"));
    // 0xffffffff and 0xfffffffe mean "no parent" / special to some readers.
    if cid >= 0xffff_fffe {
        cid = 0x1234_5678;
    }
    let long_id: String = content_hash[4..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cylinders = capacity_sectors.div_ceil(255 * 63).min(65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{extent_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.longContentID = \"{long_id}\"\n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.toolsInstallType = \"4\"\n\
         ddb.toolsVersion = \"2147483647\"\n"
    )
}

struct StreamWriter<W: Write> {
    out: W,
    /// Current position in sectors.
    sector: u64,
    hash: Sha256,
}

impl<W: Write> StreamWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        debug_assert_eq!(bytes.len() as u64 % SECTOR, 0);
        self.out.write_all(bytes)?;
        self.hash.update(bytes);
        self.sector += bytes.len() as u64 / SECTOR;
        Ok(())
    }
}

fn pad_to_sector(buf: &mut Vec<u8>) {
    let rem = buf.len() as u64 % SECTOR;
    if rem != 0 {
        buf.resize(buf.len() + (SECTOR - rem) as usize, 0);
    }
}

/// Writes `image` (a raw disk image, sparse or not) as a streamOptimized VMDK
/// at `out`. `extent_name` is the file name recorded in the descriptor.
pub fn write_stream_optimized(
    image: &Path,
    out: &Path,
    extent_name: &str,
) -> Result<VmdkInfo, Error> {
    let input = File::open(image).ctx(|| format!("open image {}", image.display()))?;
    let capacity = input
        .metadata()
        .ctx(|| format!("stat image {}", image.display()))?
        .len();
    if capacity % SECTOR != 0 {
        return Err(Error::NotSectorAligned {
            path: image.to_path_buf(),
            size: capacity,
        });
    }
    let capacity_sectors = capacity / SECTOR;
    let grains_total = capacity_sectors.div_ceil(GRAIN_SECTORS);
    let gts_total = grains_total.div_ceil(GTES_PER_GT);
    let gd_sectors = (gts_total * 4).div_ceil(SECTOR);

    let file = File::create(out).ctx(|| format!("create vmdk {}", out.display()))?;
    let mut w = StreamWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        sector: 0,
        hash: Sha256::new(),
    };
    let werr = || format!("write vmdk {}", out.display());
    // Header and descriptor are rewritten at the end, once the content hash
    // (for CID) is known; the space is reserved now.
    w.out
        .write_all(&vec![0u8; (OVERHEAD_SECTORS * SECTOR) as usize])
        .ctx(werr)?;
    w.sector = OVERHEAD_SECTORS;

    let mut gd = vec![0u32; gts_total as usize];
    let mut gt = vec![0u32; GTES_PER_GT as usize];
    let mut current_gt: Option<u64> = None;
    let mut grains = 0u64;
    let mut grain = vec![0u8; GRAIN_BYTES as usize];
    let mut compressed = Vec::with_capacity(GRAIN_BYTES as usize + 1024);

    let flush_gt = |w: &mut StreamWriter<_>, gt: &mut Vec<u32>, index: u64, gd: &mut [u32]| {
        w.write(&marker(GT_SECTORS, MARKER_GT))?;
        gd[index as usize] = u32::try_from(w.sector).expect("VMDK offsets fit in 32 bits");
        let bytes: Vec<u8> = gt.iter().flat_map(|e| e.to_le_bytes()).collect();
        w.write(&bytes)?;
        gt.iter_mut().for_each(|e| *e = 0);
        std::io::Result::Ok(())
    };

    let extents = sparse::data_extents(&input, capacity)
        .ctx(|| format!("find data in {}", image.display()))?;
    let mut next_grain = 0u64; // grains below this were handled
    for extent in extents {
        let first = (extent.start / GRAIN_BYTES).max(next_grain);
        let last = extent.end.div_ceil(GRAIN_BYTES);
        for index in first..last {
            let offset = index * GRAIN_BYTES;
            let len = GRAIN_BYTES.min(capacity - offset) as usize;
            grain[len..].iter_mut().for_each(|b| *b = 0);
            input
                .read_exact_at(&mut grain[..len], offset)
                .ctx(|| format!("read image {}", image.display()))?;
            if grain[..len].iter().all(|&b| b == 0) {
                continue;
            }
            let gt_index = index / GTES_PER_GT;
            if current_gt != Some(gt_index) {
                if let Some(prev) = current_gt {
                    flush_gt(&mut w, &mut gt, prev, &mut gd).ctx(werr)?;
                }
                current_gt = Some(gt_index);
            }
            gt[(index % GTES_PER_GT) as usize] =
                u32::try_from(w.sector).expect("VMDK offsets fit in 32 bits");
            compressed.clear();
            compressed.extend_from_slice(&(index * GRAIN_SECTORS).to_le_bytes());
            compressed.extend_from_slice(&[0u8; 4]);
            let mut z = ZlibEncoder::new(compressed, Compression::default());
            z.write_all(&grain[..len]).ctx(werr)?;
            compressed = z.finish().ctx(werr)?;
            let size = (compressed.len() - 12) as u32;
            compressed[8..12].copy_from_slice(&size.to_le_bytes());
            pad_to_sector(&mut compressed);
            w.write(&compressed).ctx(werr)?;
            grains += 1;
        }
        next_grain = next_grain.max(last);
    }
    if let Some(prev) = current_gt {
        flush_gt(&mut w, &mut gt, prev, &mut gd).ctx(werr)?;
    }

    w.write(&marker(gd_sectors, MARKER_GD)).ctx(werr)?;
    let gd_offset = w.sector;
    let mut gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    pad_to_sector(&mut gd_bytes);
    w.write(&gd_bytes).ctx(werr)?;
    w.write(&marker(1, MARKER_FOOTER)).ctx(werr)?;
    w.write(
        &Header {
            capacity_sectors,
            gd_offset,
        }
        .to_bytes(),
    )
    .ctx(werr)?;
    w.write(&marker(0, MARKER_EOS)).ctx(werr)?;

    let content_hash: [u8; 32] = w.hash.clone().finalize().into();
    let file_size = w.sector * SECTOR;
    let mut file = w.out.into_inner().map_err(|e| e.into_error()).ctx(werr)?;
    file.seek(SeekFrom::Start(0)).ctx(werr)?;
    file.write_all(
        &Header {
            capacity_sectors,
            gd_offset: GD_AT_END,
        }
        .to_bytes(),
    )
    .ctx(werr)?;
    let text = descriptor(capacity_sectors, extent_name, &content_hash);
    assert!(text.len() as u64 <= DESCRIPTOR_SECTORS * SECTOR);
    file.write_all(text.as_bytes()).ctx(werr)?;
    file.sync_all().ctx(werr)?;
    Ok(VmdkInfo {
        capacity,
        populated: grains * GRAIN_BYTES,
        file_size,
        grains,
    })
}
