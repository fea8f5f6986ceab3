//! The OVA: a POSIX (ustar) tar of the descriptor (first, as OVF requires),
//! the manifest and the disk.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::descriptor::{self, DiskFile, Product};
use crate::{io_err, vmdk, Error};

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
    fs::create_dir_all(work).map_err(io_err("create", work))?;
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
    fs::write(&ovf_path, &ovf).map_err(io_err("write", &ovf_path))?;
    let manifest = format!(
        "SHA256({ovf_name})= {}\nSHA256({vmdk_name})= {}\n",
        sha256_file(&ovf_path)?,
        sha256_file(&vmdk_path)?
    );
    let mf_path = work.join(&mf_name);
    fs::write(&mf_path, &manifest).map_err(io_err("write", &mf_path))?;

    let members = vec![ovf_name, mf_name, vmdk_name];
    let tmp = out.with_extension("ova.partial");
    {
        let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        let mut tar = BufWriter::with_capacity(1 << 20, file);
        for name in &members {
            append(&mut tar, &work.join(name), name).map_err(io_err("write", &tmp))?;
        }
        // End of archive: two zero records.
        tar.write_all(&[0u8; 1024]).map_err(io_err("write", &tmp))?;
        let file = tar.into_inner().map_err(|e| Error::Io {
            context: "write",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
    }
    fs::rename(&tmp, out).map_err(io_err("rename into place", out))?;
    Ok(Built {
        ova: out.to_path_buf(),
        vmdk: info,
        members,
    })
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
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

fn append(tar: &mut impl Write, path: &Path, name: &str) -> io::Result<()> {
    let size = fs::metadata(path)?.len();
    let header = ustar_header(name, size).map_err(io::Error::other)?;
    tar.write_all(&header)?;
    let copied = io::copy(&mut File::open(path)?, tar)?;
    if copied != size {
        return Err(io::Error::other(format!(
            "{}: changed while being archived",
            path.display()
        )));
    }
    let pad = (512 - size % 512) % 512;
    tar.write_all(&vec![0u8; pad as usize])
}
