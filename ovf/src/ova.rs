// SPDX-License-Identifier: MIT
//! The OVA: a POSIX (ustar) tar of the descriptor (first, as OVF requires),
//! the manifest and the disk.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::descriptor::{self, DiskFile, Product};
use crate::{vmdk, Context, Error};

/// What was built.
#[derive(Debug, Clone)]
pub struct Built {
    pub ova: PathBuf,
    pub vmdk: vmdk::VmdkInfo,
    /// Member names in tar order.
    pub members: Vec<String>,
}

/// Builds `out` (the .ova) from the raw `image`, using `work` for the
/// members before they are packed. Member names derive from `base`
/// (`ferry.ovf`, `ferry.mf`, `ferry-disk1.vmdk`).
pub fn build(
    image: &Path,
    out: &Path,
    work: &Path,
    base: &str,
    product: &Product,
) -> Result<Built, Error> {
    fs::create_dir_all(work).ctx(|| format!("create {}", work.display()))?;
    let vmdk_name = format!("{base}-disk1.vmdk");
    let ovf_name = format!("{base}.ovf");
    let mf_name = format!("{base}.mf");
    let vmdk_path = work.join(&vmdk_name);
    let info = vmdk::write_stream_optimized(image, &vmdk_path, &vmdk_name)?;
    let ovf = descriptor::render(
        product,
        &DiskFile {
            href: vmdk_name.clone(),
            file_size: info.file_size,
            capacity_bytes: info.capacity,
            populated_bytes: info.populated,
        },
    )?;
    let ovf_path = work.join(&ovf_name);
    fs::write(&ovf_path, &ovf).ctx(|| format!("write {}", ovf_path.display()))?;
    let manifest = format!(
        "SHA256({ovf_name})= {}\nSHA256({vmdk_name})= {}\n",
        sha256_file(&ovf_path)?,
        sha256_file(&vmdk_path)?
    );
    let mf_path = work.join(&mf_name);
    fs::write(&mf_path, &manifest).ctx(|| format!("write {}", mf_path.display()))?;

    let members = vec![ovf_name, mf_name, vmdk_name];
    let tmp = out.with_extension("ova.partial");
    {
        let file = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        let mut tar = BufWriter::with_capacity(1 << 20, file);
        for name in &members {
            append(&mut tar, &work.join(name), name)?;
        }
        // End of archive: two zero records.
        tar.write_all(&[0u8; 1024])
            .ctx(|| format!("write {}", tmp.display()))?;
        let file = tar
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| format!("write {}", tmp.display()))?;
        file.sync_all().ctx(|| format!("sync {}", tmp.display()))?;
    }
    fs::rename(&tmp, out).ctx(|| format!("rename into place {}", out.display()))?;
    Ok(Built {
        ova: out.to_path_buf(),
        vmdk: info,
        members,
    })
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A ustar header for a regular file: owner root, mode 0644, mtime 0 so the
/// archive is reproducible.
pub fn ustar_header(name: &str, size: u64) -> Result<[u8; 512], Error> {
    if name.len() > 100 {
        return Err(Error::TarNameTooLong(name.to_string()));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let digits = field.len() - 1;
        let s = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

fn append(tar: &mut impl Write, path: &Path, name: &str) -> Result<(), Error> {
    let archive = || format!("archive {}", path.display());
    let size = fs::metadata(path).ctx(archive)?.len();
    let header = ustar_header(name, size)?;
    tar.write_all(&header).ctx(archive)?;
    let copied = io::copy(&mut File::open(path).ctx(archive)?, tar).ctx(archive)?;
    if copied != size {
        return Err(Error::Changed(path.to_path_buf()));
    }
    let pad = (512 - size % 512) % 512;
    tar.write_all(&vec![0u8; pad as usize]).ctx(archive)
}
