// SPDX-License-Identifier: MIT
//! What an ELF file needs from the dynamic linker: interpreter, DT_NEEDED,
//! RUNPATH/RPATH.

use std::path::Path;

use goblin::elf::Elf;

use crate::Context;
use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
}

/// Reads an ELF file's dynamic needs; `None` if it is not ELF.
pub fn needs(path: &Path) -> Result<Option<Needs>> {
    let bytes = std::fs::read(path).ctx(|| format!("read {}", path.display()))?;
    if bytes.get(0..4) != Some(b"\x7fELF") {
        return Ok(None);
    }
    let elf = Elf::parse(&bytes)
        .map_err(|e| Error::Policy(format!("{}: bad ELF: {e}", path.display())))?;
    let mut runpath: Vec<String> = elf
        .runpaths
        .iter()
        .flat_map(|r| r.split(':'))
        .map(String::from)
        .collect();
    runpath.extend(
        elf.rpaths
            .iter()
            .flat_map(|r| r.split(':'))
            .map(String::from),
    );
    Ok(Some(Needs {
        interpreter: elf.interpreter.map(String::from),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        runpath,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_dynamic_binary() {
        // any dynamically linked binary of the build machine
        let n = needs(Path::new("/usr/bin/cpio")).unwrap().unwrap();
        assert_eq!(
            n.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(n.needed.iter().any(|l| l == "libc.so.6"), "{n:?}");
        assert_eq!(
            needs(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("manifest.toml")
                    .as_path()
            )
            .unwrap(),
            None
        );
    }
}
