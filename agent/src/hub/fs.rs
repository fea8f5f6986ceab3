//! The hub's side of the remote writer: each operation an agent sends is
//! done on a location of the hub with the same code the engine uses locally.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use sha2::{Digest, Sha256};

use super::proto::{Op, Reply, Response, WireError, WireMeta};
use crate::location::local::LocalLocation;
use crate::location::{Location, MetaUpdate, Reader, Writer};

/// Opens `path` (relative, `/`-separated) one component at a time without
/// following symlinks, so nothing an agent sends reaches outside the location.
fn open_path(loc: &LocalLocation, path: &[u8]) -> io::Result<OwnedFd> {
    let mut dir = loc.root()?;
    for part in path.split(|b| *b == b'/') {
        if part.is_empty() {
            continue;
        }
        check_name(part)?;
        dir = loc.open_dir(&dir, OsStr::from_bytes(part))?;
    }
    Ok(dir)
}

fn check_name(name: &[u8]) -> io::Result<&OsStr> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a file name: {:?}", String::from_utf8_lossy(name)),
        ));
    }
    Ok(OsStr::from_bytes(name))
}

fn decode(zstd: bool, data: Vec<u8>) -> io::Result<Vec<u8>> {
    if zstd {
        zstd::stream::decode_all(&data[..])
    } else {
        Ok(data)
    }
}

fn write_all(w: &impl Writer, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = w.write_at(buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

fn finish(w: impl Writer, len: Option<u64>, update: &MetaUpdate) -> io::Result<()> {
    if let Some(len) = len {
        w.set_len(len)?;
    }
    if !update.is_empty() {
        w.update(update)?;
    }
    w.finish()
}

/// Does one operation on `loc`.
pub fn execute(loc: &LocalLocation, op: Op) -> Response {
    run(loc, op).map_err(|e| WireError::from(&e))
}

fn run(loc: &LocalLocation, op: Op) -> io::Result<Reply> {
    Ok(match op {
        Op::StatDir { dir } => Reply::Meta(WireMeta::from(&loc.stat_dir(&open_path(loc, &dir)?)?)),
        Op::List { dir } => {
            let d = open_path(loc, &dir)?;
            let entries = loc.list(&d)?;
            Reply::List(
                entries
                    .into_iter()
                    .map(|e| (e.name.into_vec(), WireMeta::from(&e.meta)))
                    .collect(),
            )
        }
        Op::Stat { dir, name } => {
            let d = open_path(loc, &dir)?;
            Reply::Meta(WireMeta::from(&loc.stat(&d, check_name(&name)?)?))
        }
        Op::ReadLink { dir, name } => {
            let d = open_path(loc, &dir)?;
            Reply::Target(loc.read_link(&d, check_name(&name)?)?.into_vec())
        }
        Op::MakeDir { dir, name, mode } => {
            let d = open_path(loc, &dir)?;
            loc.make_dir(&d, check_name(&name)?, mode)?;
            Reply::Done
        }
        Op::MakeSymlink { dir, name, target } => {
            let d = open_path(loc, &dir)?;
            loc.make_symlink(&d, check_name(&name)?, OsStr::from_bytes(&target))?;
            Reply::Done
        }
        Op::MakeNode {
            dir,
            name,
            kind,
            mode,
            rdev,
        } => {
            let d = open_path(loc, &dir)?;
            loc.make_node(&d, check_name(&name)?, kind, mode, rdev)?;
            Reply::Done
        }
        Op::HardLink {
            from_dir,
            from,
            to_dir,
            to,
        } => {
            let a = open_path(loc, &from_dir)?;
            let b = open_path(loc, &to_dir)?;
            loc.hard_link(&a, check_name(&from)?, &b, check_name(&to)?)?;
            Reply::Done
        }
        Op::Rename { dir, from, to } => {
            let d = open_path(loc, &dir)?;
            loc.rename(&d, check_name(&from)?, check_name(&to)?)?;
            Reply::Done
        }
        Op::Remove { dir, name, kind } => {
            let d = open_path(loc, &dir)?;
            loc.remove(&d, check_name(&name)?, kind)?;
            Reply::Done
        }
        Op::Update { dir, name, update } => {
            let d = open_path(loc, &dir)?;
            loc.update(&d, check_name(&name)?, &MetaUpdate::from(&update))?;
            Reply::Done
        }
        Op::UpdateDir { dir, update } => {
            let d = open_path(loc, &dir)?;
            loc.update_dir(&d, &MetaUpdate::from(&update))?;
            Reply::Done
        }
        Op::Create { dir, name, mode } => {
            let d = open_path(loc, &dir)?;
            loc.create_file(&d, check_name(&name)?, mode)?.finish()?;
            Reply::Done
        }
        Op::Write {
            dir,
            name,
            offset,
            zstd,
            data,
        } => {
            let d = open_path(loc, &dir)?;
            let w = loc.open_write(&d, check_name(&name)?)?;
            write_all(&w, &decode(zstd, data)?, offset)?;
            w.finish()?;
            Reply::Done
        }
        Op::Finish {
            dir,
            name,
            len,
            update,
        } => {
            let d = open_path(loc, &dir)?;
            let w = loc.open_write(&d, check_name(&name)?)?;
            finish(w, len, &MetaUpdate::from(&update))?;
            Reply::Done
        }
        Op::Put {
            dir,
            name,
            mode,
            zstd,
            data,
            len,
            update,
        } => {
            let d = open_path(loc, &dir)?;
            let w = loc.create_file(&d, check_name(&name)?, mode)?;
            write_all(&w, &decode(zstd, data)?, 0)?;
            finish(w, len, &MetaUpdate::from(&update))?;
            Reply::Done
        }
        Op::Digest { dir, name } => {
            let d = open_path(loc, &dir)?;
            let r = loc.open_file(&d, check_name(&name)?)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut offset = 0u64;
            loop {
                let n = r.read_at(&mut buf, offset)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
            Reply::Digest(hasher.finalize().into())
        }
    })
}
