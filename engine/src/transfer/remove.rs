// SPDX-License-Identifier: MIT
//! Deletion: an entry of the destination, and for a directory everything
//! below it (what the source no longer has, or what a new entry replaces).

use std::ffi::{OsStr, OsString};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{DirNode, Transfer};
use crate::child_path;
use crate::counters::Counters;
use crate::location::{Kind, Location};
use crate::report::{Outcome, Phase, Record};

impl<S: Location, D: Location> Transfer<'_, S, D> {
    /// An entry the source no longer has (PreserveDeletedFiles REMOVE).
    pub(super) fn delete(&self, dir: Arc<DirNode<S, D>>, name: OsString, kind: Kind) {
        let path = child_path(&dir.rel, &name);
        if !self.ctx.cancelled() {
            self.remove_tree(&dir.dst, &name, kind, &path, true);
            dir.modified.store(true, Ordering::Relaxed);
        }
        self.release(dir);
    }

    /// Removes an entry and, for a directory, everything below it.
    /// `count`: whether removals count as FilesDeleted (not for replacements).
    pub(super) fn remove_tree(
        &self,
        dir: &D::Dir,
        name: &OsStr,
        kind: Kind,
        path: &[u8],
        count: bool,
    ) {
        let ctx = self.ctx;
        if kind == Kind::Dir {
            match ctx.dst.open_dir(dir, name).and_then(|sub| {
                let entries = ctx.dst.list(&sub)?;
                Ok((sub, entries))
            }) {
                Ok((sub, entries)) => {
                    for e in entries {
                        let child = child_path(path, &e.name);
                        self.remove_tree(&sub, &e.name, e.meta.kind, &child, count);
                    }
                }
                Err(e) => {
                    return ctx.fail(
                        Phase::Transferring,
                        path,
                        kind,
                        "open directory to delete",
                        &e,
                    );
                }
            }
        }
        match ctx.dst.remove(dir, name, kind) {
            Ok(()) if count => {
                Counters::inc(&ctx.counters.files_deleted);
                ctx.record(|| Record::new(path, kind, Outcome::Deleted, Phase::Transferring));
            }
            Ok(()) => {}
            // Gone already: removed meanwhile (by another agent doing the
            // same unit again, say); what was wanted holds.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                Counters::inc(&ctx.counters.files_failed_delete);
                ctx.record(|| {
                    Record::new(path, kind, Outcome::Failed, Phase::Transferring)
                        .error("delete", &e)
                });
            }
        }
    }
}
