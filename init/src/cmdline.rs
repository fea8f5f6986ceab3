// SPDX-License-Identifier: GPL-2.0-only
//! The kernel command line: `ferry.*` parameters set by the image builder
//! (inside the UKI, so covered by its signature): `ferry.root` and
//! `ferry.root.hash` (the partitions, by PARTUUID), `ferry.verity.*`.

use std::fmt;

use ferry_gpt::Guid;

use crate::error::{Error, Result};

/// How the command line names a partition: `PARTUUID=<guid>` (the GPT
/// entry's unique GUID, what the image builder writes) or `PARTLABEL=<label>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartRef {
    Uuid(Guid),
    Label(String),
}

impl fmt::Display for PartRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartRef::Uuid(g) => write!(f, "PARTUUID={}", g.to_string().to_lowercase()),
            PartRef::Label(l) => write!(f, "PARTLABEL={l}"),
        }
    }
}

/// Reads `key=PARTUUID=...` or `key=PARTLABEL=...`; `None` when absent.
pub fn partition(cmdline: &str, key: &str) -> Result<Option<PartRef>> {
    let Some(v) = param(cmdline, key) else {
        return Ok(None);
    };
    if let Some(g) = v.strip_prefix("PARTUUID=") {
        return g
            .parse()
            .map(|g| Some(PartRef::Uuid(g)))
            .map_err(|_| Error::Cmdline(format!("{key}={v}: {g:?} is not a GUID")));
    }
    match v.strip_prefix("PARTLABEL=") {
        Some(l) if !l.is_empty() => Ok(Some(PartRef::Label(l.to_string()))),
        _ => Err(Error::Cmdline(format!(
            "{key}={v}: give PARTUUID=<guid> or PARTLABEL=<label>"
        ))),
    }
}

/// What the initramfs needs to assemble the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    /// Root hash (hex) of the dm-verity tree over the root partition.
    pub roothash: String,
    /// Salt (hex) used when the tree was built.
    pub salt: String,
    /// Number of 4 KiB data blocks the tree covers.
    pub data_blocks: u64,
}

/// Looks up `key=value` in a command line.
pub fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Verity {
    /// Reads `ferry.verity.roothash`, `ferry.verity.salt` and
    /// `ferry.verity.blocks`.
    pub fn from_cmdline(cmdline: &str) -> Result<Verity> {
        let get =
            |k: &str| param(cmdline, k).ok_or_else(|| Error::Cmdline(format!("{k}= is missing")));
        let roothash = get("ferry.verity.roothash")?.to_ascii_lowercase();
        let salt = get("ferry.verity.salt")?.to_ascii_lowercase();
        let blocks = get("ferry.verity.blocks")?;
        if !is_hex(&roothash) || roothash.len() != 64 {
            return Err(Error::Cmdline(format!(
                "ferry.verity.roothash={roothash} is not a sha256 hash"
            )));
        }
        if !is_hex(&salt) {
            return Err(Error::Cmdline(format!(
                "ferry.verity.salt={salt} is not hex"
            )));
        }
        let data_blocks = blocks
            .parse::<u64>()
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                Error::Cmdline(format!("ferry.verity.blocks={blocks} is not a count"))
            })?;
        Ok(Verity {
            roothash,
            salt,
            data_blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_verity_parameters() {
        let c = format!("console=ttyS0 ferry.verity.roothash={H} ferry.verity.salt=00ff ferry.verity.blocks=42 quiet");
        let v = Verity::from_cmdline(&c).unwrap();
        assert_eq!(v.roothash, H);
        assert_eq!(v.salt, "00ff");
        assert_eq!(v.data_blocks, 42);
        assert_eq!(param(&c, "console"), Some("ttyS0"));
        assert_eq!(param(&c, "quiet"), None);
    }

    #[test]
    fn reads_partitions_by_uuid_or_label() {
        let g = "0fc63daf-8483-4772-8e79-3d69d8477de4";
        let c = format!("ferry.root=PARTUUID={g} ferry.root.hash=PARTLABEL=ferry-verity");
        let root = partition(&c, "ferry.root").unwrap().unwrap();
        assert_eq!(root, PartRef::Uuid(g.to_uppercase().parse().unwrap()));
        assert_eq!(root.to_string(), format!("PARTUUID={g}"));
        assert_eq!(
            partition(&c, "ferry.root.hash").unwrap(),
            Some(PartRef::Label("ferry-verity".into()))
        );
        assert_eq!(partition("quiet", "ferry.root").unwrap(), None);
        let e = partition("ferry.root=/dev/vda2", "ferry.root")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("give PARTUUID=<guid> or PARTLABEL=<label>"),
            "{e}"
        );
        let e = partition("ferry.root=PARTUUID=xyz", "ferry.root")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a GUID"), "{e}");
    }

    #[test]
    fn refuses_missing_or_bad_values() {
        let e = Verity::from_cmdline("console=ttyS0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ferry.verity.roothash= is missing"), "{e}");
        let c = format!("ferry.verity.roothash={H} ferry.verity.salt=zz ferry.verity.blocks=1");
        assert!(Verity::from_cmdline(&c)
            .unwrap_err()
            .to_string()
            .contains("not hex"));
        let c = format!("ferry.verity.roothash={H} ferry.verity.salt=00 ferry.verity.blocks=0");
        assert!(Verity::from_cmdline(&c)
            .unwrap_err()
            .to_string()
            .contains("not a count"));
    }
}
