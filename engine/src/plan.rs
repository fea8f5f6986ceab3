// SPDX-License-Identifier: MIT
//! The comparison at the heart of PREPARING: what to do with one entry, given
//! what the scan found on both sides. Pure functions, so every rule has a test.

use std::ffi::OsStr;

use super::options::{
    Atime, IdMode, Mtime, Options, OverwriteMode, PosixPermissions, PreserveDevices, TransferMode,
};
use crate::location::{Kind, Meta, MetaUpdate};

/// Why an entry's data is (re)written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyReason {
    New,
    ContentChanged,
    TypeChanged,
    TransferAll,
}

/// Why an entry is left alone although it differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    OverwriteNever,
    DeviceNotPreserved,
    /// Named in the manifest, and not at the source.
    NotAtSource,
}

impl SkipReason {
    pub fn text(self) -> &'static str {
        match self {
            SkipReason::OverwriteNever => "destination differs and OverwriteMode is NEVER",
            SkipReason::DeviceNotPreserved => "special file and PreserveDevices is NONE",
            SkipReason::NotAtSource => "named in the manifest, not at the source",
        }
    }
}

/// The decision for a source entry that is not a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Unchanged,
    Skip(SkipReason),
    /// Write the entry anew (under a temporary name, then renamed into place).
    Copy(CopyReason),
    /// Only attributes differ.
    UpdateMeta(MetaUpdate),
}

/// The decision for a source directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirDecision {
    /// Walk into it. `create`: it must be made; `clear`: a non-directory
    /// stands at its name and goes first; `keep_meta`: leave its attributes.
    Walk {
        create: bool,
        clear: Option<Kind>,
        keep_meta: bool,
    },
    Skip(SkipReason),
}

/// The ids new entries get without a chown: ours, unless the directory is setgid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creator {
    pub uid: u32,
    pub gid: u32,
}

impl Creator {
    /// This process's effective ids.
    pub fn this_process() -> Creator {
        Creator {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }
}

/// The mode an entry is created with.
pub fn create_mode(src: &Meta, opts: &Options) -> u32 {
    match opts.posix_permissions {
        // Set-id bits are applied after the chown, which would clear them.
        PosixPermissions::Preserve => src.mode & 0o777,
        PosixPermissions::None if src.kind == Kind::Dir => 0o755,
        PosixPermissions::None => 0o644,
    }
}

/// Attributes to apply to an entry just created from `src`.
/// `dir_setgid`: new entries inherit the directory's group.
pub fn creation_update(
    src: &Meta,
    opts: &Options,
    creator: Creator,
    dir_setgid: bool,
) -> MetaUpdate {
    let mut update = MetaUpdate::default();
    if opts.uid == IdMode::IntValue && src.uid != creator.uid {
        update.uid = Some(src.uid);
    }
    if opts.gid == IdMode::IntValue && (src.gid != creator.gid || dir_setgid) {
        update.gid = Some(src.gid);
    }
    if opts.posix_permissions == PosixPermissions::Preserve && src.kind != Kind::Symlink {
        // Set-id bits go after the chown; a directory is created 0700 so we can fill it.
        if src.mode & 0o7000 != 0 || src.kind == Kind::Dir {
            update.mode = Some(src.mode);
        }
    }
    set_times(&mut update, src, opts);
    update
}

fn set_times(update: &mut MetaUpdate, src: &Meta, opts: &Options) {
    if opts.mtime == Mtime::Preserve {
        update.mtime = Some(src.mtime);
        if opts.atime == Atime::BestEffort {
            update.atime = Some(src.atime);
        }
    }
}

/// Attributes that differ between an existing destination entry and the
/// source, per the options. Access times are carried along but never
/// compared: reading a file changes them.
pub fn meta_update(src: &Meta, dst: &Meta, opts: &Options) -> MetaUpdate {
    let mut update = MetaUpdate::default();
    if opts.uid == IdMode::IntValue && src.uid != dst.uid {
        update.uid = Some(src.uid);
    }
    if opts.gid == IdMode::IntValue && src.gid != dst.gid {
        update.gid = Some(src.gid);
    }
    let mode_differs = opts.posix_permissions == PosixPermissions::Preserve
        && src.kind != Kind::Symlink
        && src.mode != dst.mode;
    // A chown clears set-id bits: put the mode back after it.
    let chown_clears = update.uid.is_some() || update.gid.is_some();
    if mode_differs
        || (chown_clears
            && src.mode & 0o6000 != 0
            && opts.posix_permissions == PosixPermissions::Preserve)
    {
        update.mode = Some(src.mode);
    }
    // A symlink's times are set when it is created, never compared: many
    // NFS servers (nfs-ganesha among them) accept them and keep their own.
    if opts.mtime == Mtime::Preserve && src.kind != Kind::Symlink && !same_mtime(src, dst) {
        set_times(&mut update, src, opts);
    }
    update
}

/// Modification times agree, allowing for a destination that keeps whole seconds only.
pub fn same_mtime(src: &Meta, dst: &Meta) -> bool {
    src.mtime == dst.mtime || (dst.mtime.nsec == 0 && src.mtime.sec == dst.mtime.sec)
}

/// Decides for a source entry that is not a directory. For symlinks present on
/// both sides, `links` holds both targets.
pub fn decide(
    src: &Meta,
    dst: Option<&Meta>,
    links: Option<(&OsStr, &OsStr)>,
    opts: &Options,
) -> Decision {
    if src.kind.is_special() && opts.preserve_devices == PreserveDevices::None {
        return Decision::Skip(SkipReason::DeviceNotPreserved);
    }
    let Some(dst) = dst else {
        return Decision::Copy(CopyReason::New);
    };
    let differs_in_content = dst.kind != src.kind
        || match src.kind {
            Kind::File => {
                src.size != dst.size || (opts.mtime == Mtime::Preserve && !same_mtime(src, dst))
            }
            Kind::Symlink => links.is_none_or(|(s, d)| s != d),
            Kind::CharDevice | Kind::BlockDevice => src.rdev != dst.rdev,
            _ => false,
        };
    let update = meta_update(src, dst, opts);
    if opts.overwrite_mode == OverwriteMode::Never {
        return if differs_in_content || !update.is_empty() {
            Decision::Skip(SkipReason::OverwriteNever)
        } else {
            Decision::Unchanged
        };
    }
    if opts.transfer_mode == TransferMode::All {
        return Decision::Copy(CopyReason::TransferAll);
    }
    if dst.kind != src.kind {
        return Decision::Copy(CopyReason::TypeChanged);
    }
    if differs_in_content {
        return Decision::Copy(CopyReason::ContentChanged);
    }
    if update.is_empty() {
        Decision::Unchanged
    } else {
        Decision::UpdateMeta(update)
    }
}

/// Decides for a source directory.
pub fn decide_dir(dst: Option<&Meta>, opts: &Options) -> DirDecision {
    match dst {
        None => DirDecision::Walk {
            create: true,
            clear: None,
            keep_meta: false,
        },
        Some(d) if d.kind == Kind::Dir => DirDecision::Walk {
            create: false,
            clear: None,
            keep_meta: opts.overwrite_mode == OverwriteMode::Never,
        },
        Some(_) if opts.overwrite_mode == OverwriteMode::Never => {
            DirDecision::Skip(SkipReason::OverwriteNever)
        }
        Some(d) => DirDecision::Walk {
            create: true,
            clear: Some(d.kind),
            keep_meta: false,
        },
    }
}

/// Whether a file changed between two looks at it (the scan's and one
/// after its copy, or verification's): its size, data time or change time
/// moved. TRANSFERRING and VERIFYING both ask.
pub fn changed(before: &Meta, after: &Meta) -> bool {
    before.size != after.size || before.mtime != after.mtime || before.ctime != after.ctime
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Timestamp;

    #[test]
    fn a_file_changed_when_its_size_data_time_or_change_time_moved() {
        let before = Meta {
            kind: Kind::File,
            mode: 0o644,
            uid: 1,
            gid: 1,
            size: 10,
            blocks: 8,
            nlink: 1,
            dev: 1,
            ino: 2,
            rdev: 0,
            atime: Timestamp { sec: 1, nsec: 0 },
            mtime: Timestamp { sec: 2, nsec: 5 },
            ctime: Timestamp { sec: 3, nsec: 0 },
        };
        assert!(!changed(&before, &before.clone()));
        // Access time, owner, mode alone: not a change of the data.
        let same = Meta {
            atime: Timestamp { sec: 9, nsec: 0 },
            ..before.clone()
        };
        assert!(!changed(&before, &same));
        for after in [
            Meta {
                size: 11,
                ..before.clone()
            },
            Meta {
                mtime: Timestamp { sec: 2, nsec: 6 },
                ..before.clone()
            },
            Meta {
                ctime: Timestamp { sec: 3, nsec: 1 },
                ..before.clone()
            },
        ] {
            assert!(changed(&before, &after), "{after:?}");
        }
    }

    fn file(size: u64, mtime: i64) -> Meta {
        Meta {
            kind: Kind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            size,
            blocks: size.div_ceil(512),
            nlink: 1,
            dev: 1,
            ino: 1,
            rdev: 0,
            atime: Timestamp { sec: 5, nsec: 0 },
            mtime: Timestamp {
                sec: mtime,
                nsec: 7,
            },
            ctime: Timestamp::default(),
        }
    }

    #[test]
    fn new_changed_unchanged() {
        let o = Options::new();
        let s = file(10, 100);
        assert_eq!(decide(&s, None, None, &o), Decision::Copy(CopyReason::New));
        assert_eq!(decide(&s, Some(&s), None, &o), Decision::Unchanged);
        assert_eq!(
            decide(&s, Some(&file(11, 100)), None, &o),
            Decision::Copy(CopyReason::ContentChanged)
        );
        assert_eq!(
            decide(&s, Some(&file(10, 99)), None, &o),
            Decision::Copy(CopyReason::ContentChanged)
        );
    }

    #[test]
    fn whole_second_destination_counts_as_same_time() {
        let o = Options::new();
        let s = file(10, 100);
        let mut d = s.clone();
        d.mtime.nsec = 0;
        assert_eq!(decide(&s, Some(&d), None, &o), Decision::Unchanged);
    }

    #[test]
    fn metadata_only() {
        let o = Options::new();
        let s = file(10, 100);
        let mut d = s.clone();
        d.mode = 0o600;
        d.uid = 0;
        let Decision::UpdateMeta(u) = decide(&s, Some(&d), None, &o) else {
            panic!("expected a metadata update")
        };
        assert_eq!(u.mode, Some(0o644));
        assert_eq!(u.uid, Some(1000));
        assert_eq!(u.gid, None);
        assert_eq!(u.mtime, None);
    }

    #[test]
    fn options_turn_comparisons_off() {
        let mut o = Options::new();
        o.posix_permissions = PosixPermissions::None;
        o.uid = IdMode::None;
        o.gid = IdMode::None;
        let s = file(10, 100);
        let mut d = s.clone();
        d.mode = 0o600;
        d.uid = 0;
        d.gid = 0;
        assert_eq!(decide(&s, Some(&d), None, &o), Decision::Unchanged);

        let mut o = Options::new();
        o.mtime = Mtime::None;
        o.atime = Atime::None;
        assert_eq!(
            decide(&s, Some(&file(10, 5)), None, &o),
            Decision::Unchanged
        );
    }

    #[test]
    fn overwrite_never_and_transfer_all() {
        let mut o = Options::new();
        o.overwrite_mode = OverwriteMode::Never;
        let s = file(10, 100);
        assert_eq!(
            decide(&s, Some(&file(11, 100)), None, &o),
            Decision::Skip(SkipReason::OverwriteNever)
        );
        assert_eq!(decide(&s, None, None, &o), Decision::Copy(CopyReason::New));

        let mut o = Options::new();
        o.transfer_mode = TransferMode::All;
        assert_eq!(
            decide(&s, Some(&s), None, &o),
            Decision::Copy(CopyReason::TransferAll)
        );
    }

    #[test]
    fn devices_and_types() {
        let o = Options::new();
        let mut fifo = file(0, 1);
        fifo.kind = Kind::Fifo;
        assert_eq!(
            decide(&fifo, None, None, &o),
            Decision::Skip(SkipReason::DeviceNotPreserved)
        );
        let mut o2 = Options::new();
        o2.preserve_devices = PreserveDevices::Preserve;
        assert_eq!(
            decide(&fifo, None, None, &o2),
            Decision::Copy(CopyReason::New)
        );
        assert_eq!(
            decide(&fifo, Some(&file(0, 1)), None, &o2),
            Decision::Copy(CopyReason::TypeChanged)
        );
        let mut link = file(3, 1);
        link.kind = Kind::Symlink;
        let a = OsStr::new("abc");
        let b = OsStr::new("abd");
        assert_eq!(
            decide(&link, Some(&link), Some((a, a)), &o),
            Decision::Unchanged
        );
        assert_eq!(
            decide(&link, Some(&link), Some((a, b)), &o),
            Decision::Copy(CopyReason::ContentChanged)
        );
    }

    #[test]
    fn setid_bits_survive_chown() {
        let o = Options::new();
        let mut s = file(1, 1);
        s.mode = 0o4755;
        let creator = Creator { uid: 0, gid: 0 };
        let u = creation_update(&s, &o, creator, false);
        assert_eq!(
            (u.uid, u.gid, u.mode),
            (Some(1000), Some(1000), Some(0o4755))
        );
        assert_eq!(create_mode(&s, &o), 0o755);
        let mut d = s.clone();
        d.uid = 0;
        let u = meta_update(&s, &d, &o);
        assert_eq!(u.mode, Some(0o4755));
    }

    #[test]
    fn directories() {
        let o = Options::new();
        let dir = Meta {
            kind: Kind::Dir,
            ..file(0, 0)
        };
        assert!(matches!(
            decide_dir(None, &o),
            DirDecision::Walk { create: true, .. }
        ));
        assert!(matches!(
            decide_dir(Some(&dir), &o),
            DirDecision::Walk {
                create: false,
                keep_meta: false,
                ..
            }
        ));
        assert_eq!(
            decide_dir(Some(&file(1, 1)), &o),
            DirDecision::Walk {
                create: true,
                clear: Some(Kind::File),
                keep_meta: false
            }
        );
    }
}
