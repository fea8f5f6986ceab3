// SPDX-License-Identifier: MIT
//! Hard links, kept within the task: the first occurrence of a link group
//! (source entries sharing a device and inode) is copied, later ones wait
//! for it and become links to the copy; when the first copy fails, the
//! others are copied on their own.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{DirNode, EntryJob, Job, Transfer};
use crate::child_path;
use crate::counters::Counters;
use crate::location::{Kind, Location, Meta};
use crate::options::OverwriteMode;
use crate::plan::{self, Decision};
use crate::report::Phase;
use crate::sched::Slot;

/// Where the first copy of a hard-link group landed.
pub(super) struct LinkTarget<S: Location, D: Location> {
    pub(super) dir: Arc<DirNode<S, D>>,
    pub(super) name: OsString,
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl<S: Location, D: Location> Clone for LinkTarget<S, D> {
    fn clone(&self) -> Self {
        LinkTarget {
            dir: self.dir.clone(),
            name: self.name.clone(),
            dev: self.dev,
            ino: self.ino,
        }
    }
}

/// Where a link group stands.
enum LinkState<J, T> {
    /// The first occurrence is being copied; later ones wait for it.
    Pending(Vec<J>),
    /// The first occurrence is copied (or was already there) at `T`.
    Done(T),
    /// The first occurrence was not copied: the others are copied on their own.
    Broken,
}

struct LinkGroup<J, T> {
    state: LinkState<J, T>,
    /// Occurrences claimed so far (parked ones are counted when they come back).
    seen: u64,
}

/// What to do with one occurrence of a hard-linked entry.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim<J, T> {
    /// Copy it: the first occurrence, or the group is broken.
    Copy(J),
    /// Parked until the first occurrence is settled.
    Parked,
    /// Link it to the first copy.
    LinkTo(J, T),
}

/// The link groups of a run, by the source's (device, inode): a state
/// machine apart from the file system, so every transition has a test.
///
/// ```text
///            claim (1st)            settle(Some(t))
///   (none) ──────────────► Pending ─────────────────► Done(t) ──► claim: LinkTo(t)
///                          │  ▲ claim: Parked          ▲
///                          │  └────────────┘           │ settle(Some(t)) (a copy alone)
///                          └──────────────────────► Broken ──► claim: Copy
///                              settle(None)
/// ```
///
/// A group is forgotten once as many occurrences were claimed as the
/// occurrence at hand says the inode has links (its `nlink` at the scan):
/// an occurrence found after that starts a new group.
pub(super) struct Links<J, T> {
    groups: Mutex<HashMap<(u64, u64), LinkGroup<J, T>>>,
}

impl<J, T: Clone> Links<J, T> {
    pub(super) fn new() -> Self {
        Links {
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// Registers an occurrence of the inode `key`, which had `nlink` links
    /// when the scan saw this occurrence.
    pub(super) fn claim(&self, key: (u64, u64), nlink: u64, job: J) -> Claim<J, T> {
        let mut links = self.groups.lock().unwrap();
        let group = links.entry(key).or_insert_with(|| LinkGroup {
            state: LinkState::Pending(Vec::new()),
            seen: 0,
        });
        group.seen += 1;
        let claim = match &mut group.state {
            LinkState::Pending(_) if group.seen == 1 => return Claim::Copy(job),
            LinkState::Pending(waiters) => {
                // Counted again when it comes back.
                group.seen -= 1;
                waiters.push(job);
                return Claim::Parked;
            }
            LinkState::Done(target) => Claim::LinkTo(job, target.clone()),
            LinkState::Broken => Claim::Copy(job),
        };
        if group.seen >= nlink {
            links.remove(&key);
        }
        claim
    }

    /// An occurrence that was to be copied is settled: copied (or found
    /// there) at `target`, or not (`None`). Returns the occurrences that
    /// waited for the first one, to be claimed again.
    pub(super) fn settle(&self, key: (u64, u64), nlink: u64, target: Option<T>) -> Vec<J> {
        let mut links = self.groups.lock().unwrap();
        let Some(group) = links.get_mut(&key) else {
            return Vec::new();
        };
        let new_state = match target {
            Some(t) => LinkState::Done(t),
            None => LinkState::Broken,
        };
        let old = std::mem::replace(&mut group.state, new_state);
        match old {
            LinkState::Pending(waiters) => {
                if group.seen >= nlink {
                    links.remove(&key);
                }
                waiters
            }
            _ => Vec::new(),
        }
    }

    /// Groups not yet forgotten.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.lock().unwrap().len()
    }
}

impl<S: Location, D: Location> Transfer<'_, S, D> {
    /// Registers an occurrence of a hard-linked entry.
    pub(super) fn claim(&self, job: EntryJob<S, D>) -> Claim<EntryJob<S, D>, LinkTarget<S, D>> {
        let (key, nlink) = ((job.src.dev, job.src.ino), job.src.nlink);
        self.links.claim(key, nlink, job)
    }

    /// The first occurrence of a hard-link group is settled: release the others.
    pub(super) fn settle_group(&self, src: &Meta, target: Option<LinkTarget<S, D>>) {
        if src.nlink < 2 {
            return;
        }
        for job in self.links.settle((src.dev, src.ino), src.nlink, target) {
            let key = job.dir.key();
            self.sched.push(Slot::Dir(key), Job::Entry(job));
        }
    }

    /// For hard-linked entries only: where the first copy landed.
    pub(super) fn link_target(
        &self,
        dir: &Arc<DirNode<S, D>>,
        name: &OsStr,
        src: &Meta,
    ) -> Option<LinkTarget<S, D>> {
        if src.nlink < 2 {
            return None;
        }
        let meta = self.ctx.dst.stat(&dir.dst, name).ok()?;
        Some(LinkTarget {
            dir: dir.clone(),
            name: name.to_os_string(),
            dev: meta.dev,
            ino: meta.ino,
        })
    }

    /// Makes a later occurrence of a hard-link group a link to the first copy.
    pub(super) fn link(&self, job: EntryJob<S, D>, target: LinkTarget<S, D>) {
        let ctx = self.ctx;
        let path = child_path(&job.dir.rel, &job.name);
        if let Some(d) = &job.dst {
            if d.dev == target.dev && d.ino == target.ino {
                Counters::inc(&ctx.counters.files_unchanged);
                return self.release(job.dir);
            }
            if ctx.opts.overwrite_mode == OverwriteMode::Never {
                ctx.skip(&path, job.src.kind, plan::SkipReason::OverwriteNever);
                return self.release(job.dir);
            }
            if d.kind == Kind::Dir {
                self.remove_tree(&job.dir.dst, &job.name, Kind::Dir, &path, false);
            }
        }
        if !matches!(job.decision, Decision::Copy(_)) {
            Counters::inc(&ctx.counters.estimated_files_to_transfer);
        }
        let direct = self.clear_for_direct(&job);
        let tmp = if direct {
            job.name.clone()
        } else {
            ctx.temp_name()
        };
        let result = ctx
            .dst
            .hard_link(&target.dir.dst, &target.name, &job.dir.dst, &tmp)
            .map_err(|e| ("create hard link", e))
            .and_then(|_| match direct {
                true => Ok(()),
                false => ctx.dst.rename(&job.dir.dst, &tmp, &job.name).map_err(|e| {
                    let _ = ctx.dst.remove(&job.dir.dst, &tmp, job.src.kind);
                    ("rename into place", e)
                }),
            });
        match result {
            Ok(()) => {
                job.dir.modified.store(true, Ordering::Relaxed);
                ctx.transferred(&path, job.src.kind, 0);
            }
            Err((what, e)) => ctx.fail(Phase::Transferring, &path, job.src.kind, what, &e),
        }
        self.release(job.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An occurrence: its directory and name in the source.
    type Job = (&'static str, &'static str);
    /// Where a copy landed: a directory and a name of the destination.
    type Target = (&'static str, &'static str);

    const INODE: (u64, u64) = (1, 42);

    fn links() -> Links<Job, Target> {
        Links::new()
    }

    #[test]
    fn the_first_occurrence_is_copied_and_the_group_is_pending() {
        let l = links();
        assert_eq!(l.claim(INODE, 2, ("d", "a")), Claim::Copy(("d", "a")));
        assert_eq!(l.len(), 1);
        // Other inodes are groups of their own.
        assert_eq!(l.claim((1, 43), 2, ("d", "x")), Claim::Copy(("d", "x")));
        assert_eq!(l.claim((2, 42), 2, ("d", "y")), Claim::Copy(("d", "y")));
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn later_occurrences_wait_for_the_first_copy_then_link_to_it() {
        let l = links();
        assert_eq!(l.claim(INODE, 3, ("d", "a")), Claim::Copy(("d", "a")));
        assert_eq!(l.claim(INODE, 3, ("d", "b")), Claim::Parked);
        assert_eq!(l.claim(INODE, 3, ("d", "c")), Claim::Parked);
        // Settled: the parked ones come back, in the order they came.
        let waiters = l.settle(INODE, 3, Some(("d", "a")));
        assert_eq!(waiters, vec![("d", "b"), ("d", "c")]);
        // Parked occurrences were not counted: the group is still there.
        assert_eq!(l.len(), 1);
        assert_eq!(
            l.claim(INODE, 3, ("d", "b")),
            Claim::LinkTo(("d", "b"), ("d", "a"))
        );
        assert_eq!(l.len(), 1);
        assert_eq!(
            l.claim(INODE, 3, ("d", "c")),
            Claim::LinkTo(("d", "c"), ("d", "a"))
        );
        // All three links seen: the group is forgotten.
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn occurrences_after_the_first_copy_link_at_once() {
        let l = links();
        assert_eq!(l.claim(INODE, 2, ("d", "a")), Claim::Copy(("d", "a")));
        assert!(l.settle(INODE, 2, Some(("d", "a"))).is_empty());
        assert_eq!(
            l.claim(INODE, 2, ("d", "b")),
            Claim::LinkTo(("d", "b"), ("d", "a"))
        );
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn links_across_directories_link_to_where_the_first_copy_landed() {
        let l = links();
        assert_eq!(l.claim(INODE, 3, ("x/y", "a")), Claim::Copy(("x/y", "a")));
        assert_eq!(l.claim(INODE, 3, ("z", "b")), Claim::Parked);
        let waiters = l.settle(INODE, 3, Some(("x/y", "a")));
        assert_eq!(waiters, vec![("z", "b")]);
        assert_eq!(
            l.claim(INODE, 3, ("z", "b")),
            Claim::LinkTo(("z", "b"), ("x/y", "a"))
        );
        assert_eq!(
            l.claim(INODE, 3, ("", "c")),
            Claim::LinkTo(("", "c"), ("x/y", "a"))
        );
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn when_the_first_copy_fails_the_others_are_copied_on_their_own() {
        let l = links();
        assert_eq!(l.claim(INODE, 3, ("d", "a")), Claim::Copy(("d", "a")));
        assert_eq!(l.claim(INODE, 3, ("d", "b")), Claim::Parked);
        // The first copy failed: the waiter comes back and is copied.
        assert_eq!(l.settle(INODE, 3, None), vec![("d", "b")]);
        assert_eq!(l.claim(INODE, 3, ("d", "b")), Claim::Copy(("d", "b")));
        assert_eq!(l.len(), 1);
        // Its copy succeeded: the group is whole again from there on.
        assert!(l.settle(INODE, 3, Some(("d", "b"))).is_empty());
        assert_eq!(
            l.claim(INODE, 3, ("d", "c")),
            Claim::LinkTo(("d", "c"), ("d", "b"))
        );
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_broken_group_stays_broken_while_its_copies_fail() {
        let l = links();
        assert_eq!(l.claim(INODE, 3, ("d", "a")), Claim::Copy(("d", "a")));
        assert!(l.settle(INODE, 3, None).is_empty());
        assert_eq!(l.claim(INODE, 3, ("d", "b")), Claim::Copy(("d", "b")));
        assert!(l.settle(INODE, 3, None).is_empty());
        // The last occurrence is copied alone and the group forgotten...
        assert_eq!(l.claim(INODE, 3, ("d", "c")), Claim::Copy(("d", "c")));
        assert_eq!(l.len(), 0);
        // ...so settling it finds nothing to release.
        assert!(l.settle(INODE, 3, Some(("d", "c"))).is_empty());
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_link_count_that_grew_after_the_scan_starts_a_new_group() {
        // Two occurrences seen with nlink 2, a third link made meantime and
        // seen with nlink 3: the group was forgotten at the second, so the
        // third starts a group of its own (copied, not linked: correct data,
        // one link fewer, as the source changed during the run).
        let l = links();
        assert_eq!(l.claim(INODE, 2, ("d", "a")), Claim::Copy(("d", "a")));
        assert!(l.settle(INODE, 2, Some(("d", "a"))).is_empty());
        assert_eq!(
            l.claim(INODE, 2, ("d", "b")),
            Claim::LinkTo(("d", "b"), ("d", "a"))
        );
        assert_eq!(l.len(), 0);
        assert_eq!(l.claim(INODE, 3, ("d", "c")), Claim::Copy(("d", "c")));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_link_count_that_shrank_or_links_outside_the_task_leave_the_group() {
        // nlink 3 but only two occurrences in the task (a link outside the
        // tree, or one excluded, or removed since): the group is never
        // complete and stays until the run ends; both occurrences are right.
        let l = links();
        assert_eq!(l.claim(INODE, 3, ("d", "a")), Claim::Copy(("d", "a")));
        assert_eq!(l.claim(INODE, 3, ("d", "b")), Claim::Parked);
        assert_eq!(l.settle(INODE, 3, Some(("d", "a"))), vec![("d", "b")]);
        assert_eq!(
            l.claim(INODE, 3, ("d", "b")),
            Claim::LinkTo(("d", "b"), ("d", "a"))
        );
        assert_eq!(l.len(), 1);
        // A later occurrence that says 2 (the count dropped) closes it.
        assert_eq!(
            l.claim(INODE, 2, ("d", "c")),
            Claim::LinkTo(("d", "c"), ("d", "a"))
        );
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_group_settled_while_occurrences_are_parked_is_kept_until_they_return() {
        // With nlink 2, the first copy and one parked: seen is 1 at the
        // settle, so the group stays for the waiter to link.
        let l = links();
        assert_eq!(l.claim(INODE, 2, ("d", "a")), Claim::Copy(("d", "a")));
        assert_eq!(l.claim(INODE, 2, ("e", "b")), Claim::Parked);
        assert_eq!(l.settle(INODE, 2, Some(("d", "a"))), vec![("e", "b")]);
        assert_eq!(l.len(), 1);
        assert_eq!(
            l.claim(INODE, 2, ("e", "b")),
            Claim::LinkTo(("e", "b"), ("d", "a"))
        );
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn settling_an_unknown_group_releases_nothing() {
        let l = links();
        assert!(l.settle(INODE, 2, Some(("d", "a"))).is_empty());
        assert!(l.settle(INODE, 2, None).is_empty());
        assert_eq!(l.len(), 0);
    }
}
