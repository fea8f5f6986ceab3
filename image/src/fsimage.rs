// SPDX-License-Identifier: MIT
//! File system images: erofs (reproducible: fixed timestamps, owner root,
//! fixed UUID) and the dm-verity hash tree over it.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::Context;
use crate::{run, Error, Result};

/// Builds an erofs image of `dir` (lz4hc). `uuid` makes it reproducible.
pub fn erofs(dir: &Path, out: &Path, uuid: &str) -> Result<()> {
    let _ = std::fs::remove_file(out);
    run(Command::new("mkfs.erofs")
        .arg("-zlz4hc")
        .arg("-T0")
        .arg("--all-root")
        .arg(format!("-U{uuid}"))
        .arg("--quiet")
        .arg(out)
        .arg(dir)
        .env("SOURCE_DATE_EPOCH", "0"))?;
    Ok(())
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    let bytes = std::fs::read(p).ctx(|| format!("read {}", p.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the kernel needs to check a verity device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    pub roothash: String,
    pub salt: String,
    pub data_blocks: u64,
}

/// Builds the dm-verity hash tree of `data` into `hash` (no superblock,
/// 4 KiB blocks, sha256, the given salt).
pub fn verity(data: &Path, hash: &Path, salt: &str) -> Result<Verity> {
    let size = std::fs::metadata(data)
        .ctx(|| format!("stat {}", data.display()))?
        .len();
    if size % 4096 != 0 {
        return Err(Error::Policy(format!(
            "{} is not a whole number of 4 KiB blocks",
            data.display()
        )));
    }
    let _ = std::fs::remove_file(hash);
    let out = run(Command::new("veritysetup")
        .args([
            "format",
            "--no-superblock",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ])
        .arg(format!("--salt={salt}"))
        .arg(data)
        .arg(hash))?;
    let roothash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| Error::Missing(format!("no root hash in veritysetup output: {out}")))?;
    Ok(Verity {
        roothash,
        salt: salt.to_string(),
        data_blocks: size / 4096,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn erofs_is_reproducible_and_verity_detects_a_flip() {
        let t = tempfile::tempdir().unwrap();
        let build = |name: &str, order: &[&str]| {
            let d = t.path().join(name);
            for f in order {
                let p = d.join(f);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, format!("content of {f}").repeat(200)).unwrap();
            }
            let img = t.path().join(format!("{name}.erofs"));
            erofs(&d, &img, "5d2f1c3e-8d2b-4a7e-9f00-0123456789ab").unwrap();
            img
        };
        let a = build("a", &["x/1", "x/2", "y"]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = build("b", &["y", "x/2", "x/1"]);
        assert_eq!(
            sha256_file(&a).unwrap(),
            sha256_file(&b).unwrap(),
            "same tree, same image"
        );

        let v = verity(&a, &t.path().join("a.hash"), "00ff").unwrap();
        assert_eq!(v.roothash.len(), 64);
        let v2 = verity(&b, &t.path().join("b.hash"), "00ff").unwrap();
        assert_eq!(v, v2);
        // one flipped byte changes the root hash
        let mut bytes = fs::read(&b).unwrap();
        bytes[2000] ^= 1;
        fs::write(&b, &bytes).unwrap();
        assert_ne!(
            verity(&b, &t.path().join("b.hash"), "00ff")
                .unwrap()
                .roothash,
            v.roothash
        );
    }
}
