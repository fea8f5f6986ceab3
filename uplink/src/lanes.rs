// SPDX-License-Identifier: MIT
//! Lanes: the remote writer's operations, queued and sent in batches.
//!
//! Every operation goes into the lane of its directory (a hash of the
//! path), and each lane sends what queued while its previous batch was on
//! the way as one batch, which the hub does in order. So the operations of
//! one directory are done in the order they were asked (a read sees every
//! change before it), many files cost one round trip, and several lanes
//! keep several connections and hub threads busy.
//!
//! An operation is either *called* (the caller waits for its answer) or
//! *cast* (acknowledged at once; a failure is kept for [`Lanes::settle`]).
//! The hub answers a small file's `Put` with the SHA-256 of the file as it
//! reads it back; the lanes keep it under the file's final name (following
//! its rename) for verification, which then costs no round trip.
//! A lane holds at most [`LANE_BYTES`] of data queued or in flight, all of
//! them [`TOTAL_BYTES`]: a slow hub or link slows the agent's workers
//! instead of filling its memory.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use tokio::runtime::Runtime;
use tokio::sync::Notify;

use ferry_engine::location::{DeferredFailure, Kind};
use ferry_wire::client::{HubClient, HubError};
use ferry_wire::proto::{Batch, Op, Reply, Response, WireMeta, MAX_BATCH_OPS};

/// Encoded bytes of one batch at most: within the hub's body limit
/// (2 MiB) with room for one more operation of the largest kind.
const BATCH_BYTES: usize = 1 << 20;
/// Data queued or in flight in one lane at most: a batch on the way and
/// the next one filling (64 lanes: 128 MiB at most).
pub const LANE_BYTES: usize = 2 << 20;
/// Data queued or in flight in all lanes at most: about twice what a
/// gigabit link holds over a 100 ms round trip.
const TOTAL_BYTES: usize = 24 << 20;
/// Operations queued or in flight in one lane at most (those without data
/// are counted here).
const LANE_OPS: usize = 2 * MAX_BATCH_OPS;

/// What a cast change does to the digests kept for verification.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Track {
    /// Nothing (attributes, directories, links).
    Nothing,
    /// The file at the path was written whole: its digest is the answer.
    Written,
    /// The entry was renamed from this path to the path.
    Renamed { from: Vec<u8> },
    /// The file's data changed or it went: a kept digest is dropped.
    Invalidates,
    /// The directory at the path was being created (see
    /// [`Lanes::cast_make_dir`]).
    MadeDir,
}

/// Digests kept at most (about 120 bytes each): beyond, verification asks
/// the hub.
const DIGESTS_KEPT: usize = 500_000;

/// Directory listings asked for ahead, kept or on the way, at most: each
/// one taken makes room for the next wanted, so the scan of a level costs
/// about one round trip, not one per directory.
const LISTINGS_AHEAD: usize = 256;

/// Bytes of listings kept ahead (names and attributes) beyond which no
/// more are asked for: a level of huge directories does not fill memory.
const LISTINGS_KEPT_BYTES: usize = 32 << 20;

/// Directories whose listings are wanted next, at most; those beyond are
/// listed when opened.
const LISTINGS_WANTED: usize = 4096;

/// What happens with an operation's answer.
enum Done {
    /// A caller waits for it.
    Wait(mpsc::SyncSender<io::Result<Reply>>),
    /// A digest asked for ahead of its use: kept, or forgotten on failure
    /// (the caller then asks again, and sees the error).
    Prefetch { path: Vec<u8> },
    /// A directory's listing asked for ahead: kept, whatever the answer,
    /// until asked for.
    Listing { dir: Vec<u8> },
    /// Acknowledged already: a failure is kept, and the directory's count
    /// of changes in flight goes down.
    Later {
        dir: Vec<u8>,
        path: Vec<u8>,
        kind: Kind,
        what: &'static str,
        track: Track,
    },
}

struct Queued {
    op: Op,
    /// Its size on the wire at most ([`Op::encoded_bound`]).
    size: usize,
    done: Done,
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<Queued>,
    /// Bytes queued or in flight (data, names and paths).
    bytes: usize,
    /// Operations in flight (taken, not yet answered).
    sent: usize,
    closed: bool,
}

struct Lane {
    queue: Mutex<Queue>,
    /// Wakes the lane's sender.
    work: Notify,
    /// Wakes workers waiting for room.
    room: Condvar,
}

/// Cast changes not yet done, by directory; failures of those done.
#[derive(Default)]
struct Pending {
    by_dir: HashMap<Vec<u8>, usize>,
    failures: Vec<DeferredFailure>,
    /// SHA-256 of files written whole, by path, as the hub read them back
    /// (ordered: a directory's renamed with everything below it), and of
    /// files whose digests were asked for ahead.
    digests: BTreeMap<Vec<u8>, [u8; 32]>,
    /// Digests asked for ahead and not answered yet.
    fetching: HashSet<Vec<u8>>,
    /// Directories whose creation is cast and not answered yet.
    creating: HashSet<Vec<u8>>,
    /// Listings asked for ahead: answered, on the way, and on the way but
    /// older than a change since (dropped when answered).
    listings: HashMap<Vec<u8>, io::Result<Reply>>,
    listing: HashSet<Vec<u8>>,
    /// About the bytes `listings` hold.
    listed_bytes: usize,
    stale: HashSet<Vec<u8>>,
    /// Listings wanted ahead, not asked for yet: in the order they will be
    /// opened (the next first), and as a set (one opened meanwhile is no
    /// longer wanted).
    wanted_order: VecDeque<Vec<u8>>,
    wanted: HashSet<Vec<u8>>,
}

impl Pending {
    /// A change in `dir`: a listing of it asked for ahead is out of date.
    fn changed(&mut self, dir: &[u8]) {
        if self.take_listing(dir).is_none() && self.listing.contains(dir) {
            self.stale.insert(dir.to_vec());
        }
    }

    /// Whether `dir`'s listing may be asked for ahead now (marked on the
    /// way if so): not while changes cast in it (or directories made in
    /// it, from their own lanes) are on the way, as the listing could miss
    /// them (one asked for before them is marked stale by them instead);
    /// not twice.
    fn may_list(&mut self, dir: &[u8]) -> bool {
        !self.by_dir.contains_key(dir)
            && !self.creating.iter().any(|c| parent_of(c) == dir)
            && !self.listings.contains_key(dir)
            && self.listing.insert(dir.to_vec())
    }

    /// Whether there is room for one more listing ahead.
    fn room_to_list(&self) -> bool {
        self.listings.len() + self.listing.len() < LISTINGS_AHEAD
            && self.listed_bytes < LISTINGS_KEPT_BYTES
    }

    fn keep_listing(&mut self, dir: Vec<u8>, answer: io::Result<Reply>) {
        self.listed_bytes += listing_bytes(&answer);
        self.listings.insert(dir, answer);
    }

    fn take_listing(&mut self, dir: &[u8]) -> Option<io::Result<Reply>> {
        let answer = self.listings.remove(dir)?;
        self.listed_bytes -= listing_bytes(&answer);
        Some(answer)
    }
}

/// About the bytes a listing's answer holds.
fn listing_bytes(answer: &io::Result<Reply>) -> usize {
    const ENTRY: usize = std::mem::size_of::<(Vec<u8>, WireMeta, Option<[u8; 32]>)>();
    match answer {
        Ok(Reply::List(entries)) => entries.iter().map(|(n, _)| ENTRY + n.len()).sum(),
        Ok(Reply::ListDigests(entries)) => entries.iter().map(|(n, _, _)| ENTRY + n.len()).sum(),
        _ => 0,
    }
}

struct Shared {
    lanes: Vec<Lane>,
    /// Data bytes queued or in flight in all lanes, and its waiters.
    total: Mutex<usize>,
    total_room: Condvar,
    pending: Mutex<Pending>,
    settled: Condvar,
    /// Listings are asked for with digests ([`Lanes::list_with_digests`]).
    with_digests: AtomicBool,
    location: String,
    ids: Box<dyn Fn() -> u64 + Send + Sync>,
}

pub struct Lanes {
    shared: Arc<Shared>,
}

impl Shared {
    /// One more cast change in flight in `dir`.
    fn in_flight(&self, dir: &[u8]) {
        let mut p = self.pending.lock().unwrap();
        *p.by_dir.entry(dir.to_vec()).or_default() += 1;
        p.changed(dir);
    }
}

pub(crate) fn hub_io(e: &HubError) -> io::Error {
    match e {
        HubError::Refused { status: 404, .. } => {
            io::Error::new(io::ErrorKind::NotFound, e.to_string())
        }
        HubError::Refused {
            status: 401 | 403, ..
        } => io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()),
        _ => io::Error::other(e.to_string()),
    }
}

/// The directory an operation works in: its lane.
fn dir_of(op: &Op) -> &[u8] {
    match op {
        Op::StatDir { dir }
        | Op::List { dir }
        | Op::ListDigests { dir }
        | Op::UpdateDir { dir, .. } => dir,
        Op::HardLink { to_dir, .. } => to_dir,
        Op::Stat { dir, .. }
        | Op::ReadLink { dir, .. }
        | Op::MakeDir { dir, .. }
        | Op::MakeSymlink { dir, .. }
        | Op::MakeNode { dir, .. }
        | Op::Rename { dir, .. }
        | Op::Remove { dir, .. }
        | Op::Update { dir, .. }
        | Op::Create { dir, .. }
        | Op::Write { dir, .. }
        | Op::Finish { dir, .. }
        | Op::Put { dir, .. }
        | Op::Digest { dir, .. } => dir,
    }
}

fn track_of(op: &Op) -> Track {
    match op {
        Op::Put { .. } => Track::Written,
        Op::Rename { dir, from, .. } => Track::Renamed {
            from: join(dir, from),
        },
        Op::Create { .. } | Op::Write { .. } | Op::Finish { .. } | Op::Remove { .. } => {
            Track::Invalidates
        }
        Op::MakeDir { .. } => Track::MadeDir,
        _ => Track::Nothing,
    }
}

/// `dir/name` (`name` in the root when `dir` is empty).
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The directory `path` is in (`` for a name in the root).
fn parent_of(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|&b| b == b'/')
        .map_or(&[][..], |i| &path[..i])
}

/// Whether `path` is `top` or below it (everything is below the root, ``).
fn within(path: &[u8], top: &[u8]) -> bool {
    top.is_empty() || path.starts_with(top) && (path.len() == top.len() || path[top.len()] == b'/')
}

impl Lanes {
    /// `count` lanes, each with a sender task on `rt` sending batches to
    /// `location` through `client`; `ids` gives each batch its id.
    pub fn start(
        client: &HubClient,
        rt: &Runtime,
        location: String,
        count: usize,
        ids: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Lanes {
        let lanes = (0..count.max(1))
            .map(|_| Lane {
                queue: Mutex::new(Queue::default()),
                work: Notify::new(),
                room: Condvar::new(),
            })
            .collect();
        let shared = Arc::new(Shared {
            lanes,
            total: Mutex::new(0),
            total_room: Condvar::new(),
            pending: Mutex::new(Pending::default()),
            settled: Condvar::new(),
            with_digests: AtomicBool::new(false),
            location,
            ids: Box::new(ids),
        });
        for index in 0..shared.lanes.len() {
            // The task holds the client and the shared state, never the
            // runtime it runs on.
            rt.spawn(send_loop(shared.clone(), client.clone(), index));
        }
        Lanes { shared }
    }

    /// Sends `op` in its directory's lane and waits for its answer.
    pub fn call(&self, op: Op) -> io::Result<Reply> {
        self.call_many(vec![op])
            .pop()
            .expect("one answer per operation")
    }

    /// Sends each of `ops` in its directory's lane, all before waiting, and
    /// waits for their answers (in their order).
    pub fn call_many(&self, ops: Vec<Op>) -> Vec<io::Result<Reply>> {
        let answers: Vec<_> = ops
            .into_iter()
            .map(|op| {
                if op.changes() {
                    self.shared.pending.lock().unwrap().changed(dir_of(&op));
                }
                let (tx, rx) = mpsc::sync_channel(1);
                let lane = self.lane(dir_of(&op));
                self.push(lane, op, Done::Wait(tx));
                rx
            })
            .collect();
        answers
            .into_iter()
            .map(|rx| {
                rx.recv()
                    .unwrap_or_else(|_| Err(io::Error::other("the hub link was closed")))
            })
            .collect()
    }

    /// Queues `op`, a change to the entry `path`, in its directory's lane;
    /// its failure, if any, comes from [`Lanes::settle`]. `reserved`: the
    /// bytes of the budget taken for it already ([`Lanes::reserve`]).
    pub fn cast(&self, op: Op, path: Vec<u8>, kind: Kind, what: &'static str, reserved: usize) {
        let dir = dir_of(&op).to_vec();
        let lane = self.lane(&dir);
        self.cast_in(lane, dir, op, path, kind, what, reserved);
    }

    /// [`Lanes::cast`] in lane `lane`, counted as in flight in `dir` (the
    /// chunks of a large file go in many lanes, counted under the file's
    /// own path, so that its end waits for them); `reserved`: the bytes of
    /// the budget taken for it already ([`Lanes::reserve`]).
    #[allow(clippy::too_many_arguments)]
    pub fn cast_in(
        &self,
        lane: usize,
        dir: Vec<u8>,
        op: Op,
        path: Vec<u8>,
        kind: Kind,
        what: &'static str,
        reserved: usize,
    ) {
        let track = track_of(&op);
        self.shared.in_flight(&dir);
        self.push_reserved(
            lane,
            op,
            Done::Later {
                dir,
                path,
                kind,
                what,
                track,
            },
            reserved,
        );
    }

    /// Takes `size` bytes of the link's budget, waiting for room. A writer
    /// takes it before copying the data of an operation: workers waiting
    /// for room then hold no copies, and memory stays within the budget.
    pub fn reserve(&self, size: usize) {
        let mut total = self.shared.total.lock().unwrap();
        while *total > 0 && *total + size > TOTAL_BYTES {
            total = self.shared.total_room.wait(total).unwrap();
        }
        *total += size;
        // Woken one at a time: the next waiter, while there is room.
        if *total < TOTAL_BYTES {
            self.shared.total_room.notify_one();
        }
    }

    /// Gives back budget taken and not used.
    pub fn release(&self, size: usize) {
        if size == 0 {
            return;
        }
        *self.shared.total.lock().unwrap() -= size;
        self.shared.total_room.notify_one();
    }

    /// Queues `op`, the creation of the directory `path`, in the lane of
    /// `path` itself: ahead of everything then written in it, so that no
    /// round trip waits for it. Its parent, when its own creation is still
    /// on the way in another lane, is waited for first.
    pub fn cast_make_dir(&self, op: Op, path: Vec<u8>) {
        let lane = self.lane(&path);
        let parent = dir_of(&op);
        {
            let mut p = self.shared.pending.lock().unwrap();
            if self.lane(parent) != lane {
                while p.creating.contains(parent) {
                    p = self.shared.settled.wait(p).unwrap();
                }
            }
            p.creating.insert(path.clone());
            // Made from another lane: a listing of the parent on the way
            // may come before it.
            p.changed(parent);
        }
        self.cast_in(
            lane,
            path.clone(),
            op,
            path,
            Kind::Dir,
            "create directory",
            0,
        );
    }

    /// Waits until the directories being made in `dir` from other lanes
    /// are made: making one changes `dir`'s times, which are set after.
    pub fn wait_subdirs_made(&self, dir: &[u8]) {
        let lane = self.lane(dir);
        let mut p = self.shared.pending.lock().unwrap();
        while p
            .creating
            .iter()
            .any(|c| parent_of(c) == dir && self.lane(c) != lane)
        {
            p = self.shared.settled.wait(p).unwrap();
        }
    }

    /// The SHA-256 the hub read back when it wrote the file at `path` in
    /// this execution, or answered when asked ahead (once every change is
    /// done, waiting for it if asked ahead), if kept; given once.
    pub fn take_digest(&self, path: &[u8]) -> Option<[u8; 32]> {
        let mut p = self.shared.pending.lock().unwrap();
        // Changes still in flight could yet rename or rewrite it.
        if !p.by_dir.is_empty() {
            return None;
        }
        while p.fetching.contains(path) {
            p = self.shared.settled.wait(p).unwrap();
        }
        p.digests.remove(path)
    }

    /// Asks for the digests of `names` in `dir` ahead, in one batch of the
    /// directory's lane, skipping those kept already.
    pub fn prefetch_digests(&self, dir: &[u8], names: &[&[u8]]) {
        let lane = self.lane(dir);
        for name in names {
            let path = join(dir, name);
            {
                let mut p = self.shared.pending.lock().unwrap();
                if p.digests.contains_key(&path) || !p.fetching.insert(path.clone()) {
                    continue;
                }
            }
            let op = Op::Digest {
                dir: dir.to_vec(),
                name: name.to_vec(),
            };
            self.push(lane, op, Done::Prefetch { path });
        }
    }

    /// Wants the listings of the directories `dirs` ahead, the first to be
    /// opened first: they go before those wanted earlier, as the scan
    /// opens the subdirectories of the last directory it listed first.
    pub fn prefetch_listings(&self, dirs: Vec<Vec<u8>>) {
        {
            let mut p = self.shared.pending.lock().unwrap();
            // Those opened meanwhile are left in the order: dropped now and then.
            if p.wanted_order.len() >= 2 * LISTINGS_WANTED {
                let Pending {
                    wanted_order,
                    wanted,
                    ..
                } = &mut *p;
                wanted_order.retain(|d| wanted.contains(d));
            }
            for dir in dirs.into_iter().rev() {
                if p.wanted.len() < LISTINGS_WANTED && p.wanted.insert(dir.clone()) {
                    p.wanted_order.push_front(dir);
                }
            }
        }
        self.ask_listings();
    }

    /// Asks for wanted listings, each in its directory's lane, as long as
    /// there is room ([`LISTINGS_AHEAD`], [`LISTINGS_KEPT_BYTES`]). Those
    /// of one lane are queued together: one batch, not one alone and the
    /// others a round trip later.
    fn ask_listings(&self) {
        let mut by_lane: HashMap<usize, Vec<(Op, Done)>> = HashMap::new();
        {
            let mut p = self.shared.pending.lock().unwrap();
            while p.room_to_list() {
                let Some(dir) = p.wanted_order.pop_front() else {
                    break;
                };
                if p.wanted.remove(&dir) && p.may_list(&dir) {
                    by_lane
                        .entry(self.lane(&dir))
                        .or_default()
                        .push((self.list_op(dir.clone()), Done::Listing { dir }));
                }
            }
        }
        for (lane, ops) in by_lane {
            self.push_all(lane, ops, 0);
        }
    }

    /// Sends `op` (on a directory) and waits for its answer, with the
    /// directory's listing asked for in the same batch and kept for
    /// [`Lanes::take_listing`]: a location's root is listed right after
    /// it is opened, with no round trip of its own.
    pub fn call_and_list(&self, op: Op) -> io::Result<Reply> {
        let dir = dir_of(&op).to_vec();
        let (tx, rx) = mpsc::sync_channel(1);
        let mut ops = vec![(op, Done::Wait(tx))];
        {
            let mut p = self.shared.pending.lock().unwrap();
            p.wanted.remove(&dir);
            // One kept from an earlier call is older than this one.
            p.take_listing(&dir);
            if p.may_list(&dir) {
                ops.push((
                    self.list_op(dir.clone()),
                    Done::Listing { dir: dir.clone() },
                ));
            }
        }
        self.push_all(self.lane(&dir), ops, 0);
        rx.recv()
            .unwrap_or_else(|_| Err(io::Error::other("the hub link was closed")))
    }

    /// From now on listings come with the digests the hub keeps
    /// (verification: a directory's listing and digests in one batch).
    pub fn list_with_digests(&self) {
        self.shared.with_digests.store(true, Ordering::Relaxed);
    }

    /// The operation that lists `dir`.
    pub fn list_op(&self, dir: Vec<u8>) -> Op {
        if self.shared.with_digests.load(Ordering::Relaxed) {
            Op::ListDigests { dir }
        } else {
            Op::List { dir }
        }
    }

    /// Keeps the digests a listing of `dir` came with, for
    /// [`Lanes::take_digest`].
    pub fn keep_digests<'a>(
        &self,
        dir: &[u8],
        digests: impl Iterator<Item = (&'a [u8], [u8; 32])>,
    ) {
        let mut p = self.shared.pending.lock().unwrap();
        for (name, d) in digests {
            if p.digests.len() >= DIGESTS_KEPT {
                break;
            }
            p.digests.insert(join(dir, name), d);
        }
    }

    /// The answer to the listing of `dir` asked for ahead (waiting for it
    /// if on the way), given once; `None` if it was not asked for (nor will
    /// it be). Each taken makes room for another wanted.
    pub fn take_listing(&self, dir: &[u8]) -> Option<io::Result<Reply>> {
        let taken = {
            let mut p = self.shared.pending.lock().unwrap();
            p.wanted.remove(dir);
            while p.listing.contains(dir) {
                p = self.shared.settled.wait(p).unwrap();
            }
            p.take_listing(dir)
        };
        self.ask_listings();
        taken
    }

    /// Waits until no cast change is in flight in `top` or below it (before
    /// `top` is renamed or removed, or linked to from elsewhere).
    pub fn wait_within(&self, top: &[u8]) {
        let mut p = self.shared.pending.lock().unwrap();
        while p.by_dir.keys().any(|d| within(d, top)) {
            p = self.shared.settled.wait(p).unwrap();
        }
    }

    /// Waits until no cast change is in flight in `dir` itself (its
    /// entries, a large file's chunks, directories made in it).
    pub fn wait_in(&self, dir: &[u8]) {
        let mut p = self.shared.pending.lock().unwrap();
        while p.by_dir.keys().any(|d| d == dir || parent_of(d) == dir)
            || p.creating.iter().any(|c| parent_of(c) == dir)
        {
            p = self.shared.settled.wait(p).unwrap();
        }
    }

    /// Waits until every cast change is done; the failures.
    pub fn settle(&self) -> Vec<DeferredFailure> {
        let mut p = self.shared.pending.lock().unwrap();
        while !p.by_dir.is_empty() {
            p = self.shared.settled.wait(p).unwrap();
        }
        std::mem::take(&mut p.failures)
    }

    /// The lane of `key` (a directory's path, or any bytes).
    pub fn lane(&self, key: &[u8]) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.shared.lanes.len() as u64) as usize
    }

    fn push(&self, lane: usize, op: Op, done: Done) {
        self.push_reserved(lane, op, done, 0)
    }

    /// Queues `op`, with `reserved` bytes of the budget taken for it.
    fn push_reserved(&self, lane: usize, op: Op, done: Done, reserved: usize) {
        self.push_all(lane, vec![(op, done)], reserved)
    }

    /// Queues `ops` together (so the lane's sender takes them in one
    /// batch), with `reserved` bytes of the budget taken for them.
    fn push_all(&self, lane: usize, ops: Vec<(Op, Done)>, reserved: usize) {
        let lane = &self.shared.lanes[lane];
        // Names and paths count as data does: a deep tree's fill memory too.
        let queued: Vec<_> = ops
            .into_iter()
            .map(|(op, done)| Queued {
                size: op.encoded_bound(),
                op,
                done,
            })
            .collect();
        let size: usize = queued.iter().map(|q| q.size).sum();
        // The whole link's budget first (freed by any lane's answers), then
        // the lane's own. What was taken ahead is set right, not waited for.
        if reserved == 0 {
            self.reserve(size);
        } else {
            let mut total = self.shared.total.lock().unwrap();
            *total = (*total + size).saturating_sub(reserved);
        }
        let mut q = lane.queue.lock().unwrap();
        // Always room for one group, however large, in an empty lane.
        let count = queued.len();
        while q.ops.len() + q.sent > 0
            && (q.bytes + size > LANE_BYTES || q.ops.len() + q.sent + count > LANE_OPS)
            && !q.closed
        {
            q = lane.room.wait(q).unwrap();
        }
        q.bytes += size;
        q.ops.extend(queued);
        let room = q.bytes < LANE_BYTES && q.ops.len() + q.sent < LANE_OPS;
        drop(q);
        if room {
            lane.room.notify_one();
        }
        lane.work.notify_one();
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in &self.shared.lanes {
            lane.queue.lock().unwrap().closed = true;
            lane.work.notify_one();
            lane.room.notify_all();
        }
    }
}

/// One lane's sender: what queued, as one batch, until the lane closes.
async fn send_loop(shared: Arc<Shared>, client: HubClient, index: usize) {
    let lane = &shared.lanes[index];
    loop {
        let taken = {
            let mut q = lane.queue.lock().unwrap();
            if q.ops.is_empty() && q.closed {
                return;
            }
            let taken = take_batch(&mut q);
            q.sent = taken.len();
            taken
        };
        if taken.is_empty() {
            lane.work.notified().await;
            continue;
        }
        // The operations move into the batch (no second copy of their
        // data); what is not answered moves back to the queue.
        let (ops, waiting): (Vec<Op>, Vec<(usize, Done)>) =
            taken.into_iter().map(|t| (t.op, (t.size, t.done))).unzip();
        let batch = Batch {
            batch_id: (shared.ids)(),
            ops,
        };
        let answers = client.fs_batch(&shared.location, &batch).await;
        let mut answers: VecDeque<Response> = match answers {
            Ok(a) => a.into(),
            Err(e) => {
                // Refused, or the hub stayed unreachable: every operation
                // of the batch fails with that.
                let e = hub_io(&e);
                waiting
                    .iter()
                    .map(|_| Err(ferry_wire::proto::WireError::from(&e)))
                    .collect()
            }
        };
        let mut freed = 0;
        let mut again = Vec::new();
        for (op, (size, done)) in batch.ops.into_iter().zip(waiting) {
            match answers.pop_front() {
                Some(answer) => {
                    freed += size;
                    finish(&shared, done, answer.map_err(io::Error::from));
                }
                // The hub's time for the batch ran out first.
                None => again.push(Queued { op, size, done }),
            }
        }
        // Waiters are woken once per batch, not per operation.
        shared.settled.notify_all();
        *shared.total.lock().unwrap() -= freed;
        shared.total_room.notify_one();
        let mut q = lane.queue.lock().unwrap();
        q.bytes -= freed;
        q.sent = 0;
        for t in again.into_iter().rev() {
            q.ops.push_front(t);
        }
        drop(q);
        lane.room.notify_one();
    }
}

/// The front of the queue, up to a batch's size.
fn take_batch(q: &mut Queue) -> Vec<Queued> {
    let mut taken = Vec::new();
    let mut bytes = 0;
    while let Some(next) = q.ops.front() {
        let size = next.size;
        if !taken.is_empty() && (bytes + size > BATCH_BYTES || taken.len() == MAX_BATCH_OPS) {
            break;
        }
        bytes += size;
        taken.push(q.ops.pop_front().expect("front"));
    }
    taken
}

/// Gives `answer` to whoever waits for it or keeps it; the caller then
/// wakes the waiters of `settled`.
fn finish(shared: &Shared, done: Done, answer: io::Result<Reply>) {
    match done {
        Done::Prefetch { path } => {
            let mut p = shared.pending.lock().unwrap();
            p.fetching.remove(&path);
            if let Ok(Reply::Digest(d)) = answer {
                p.digests.insert(path, d);
            }
        }
        Done::Listing { dir } => {
            let mut p = shared.pending.lock().unwrap();
            p.listing.remove(&dir);
            if !p.stale.remove(&dir) {
                p.keep_listing(dir, answer);
            }
        }
        Done::Wait(tx) => {
            let _ = tx.send(answer);
        }
        Done::Later {
            dir,
            path,
            kind,
            what,
            track,
        } => {
            let mut p = shared.pending.lock().unwrap();
            if track == Track::MadeDir {
                p.creating.remove(&path);
            }
            match answer {
                Ok(reply @ (Reply::Done | Reply::Digest(_))) => match (track, reply) {
                    (Track::Written, Reply::Digest(d)) if p.digests.len() < DIGESTS_KEPT => {
                        p.digests.insert(path, d);
                    }
                    (Track::Renamed { from }, _) => {
                        // The entry, or a directory and what was written in it.
                        for (old, d) in take_within(&mut p.digests, &from) {
                            let mut new = path.clone();
                            new.extend_from_slice(&old[from.len()..]);
                            p.digests.insert(new, d);
                        }
                    }
                    (Track::Invalidates | Track::Written, _) => {
                        take_within(&mut p.digests, &path);
                    }
                    (Track::Nothing | Track::MadeDir, _) => {}
                },
                Ok(other) => p.failures.push(DeferredFailure {
                    path,
                    kind,
                    what,
                    error: io::Error::other(format!("unexpected answer from the hub: {other:?}")),
                }),
                Err(error) => p.failures.push(DeferredFailure {
                    path,
                    kind,
                    what,
                    error,
                }),
            }
            if let Some(n) = p.by_dir.get_mut(&dir) {
                *n -= 1;
                if *n == 0 {
                    p.by_dir.remove(&dir);
                }
            }
        }
    }
}

/// Removes and returns the digests of `top` and of everything below it.
fn take_within(digests: &mut BTreeMap<Vec<u8>, [u8; 32]>, top: &[u8]) -> Vec<(Vec<u8>, [u8; 32])> {
    let mut taken: Vec<_> = digests
        .remove(top)
        .map(|d| (top.to_vec(), d))
        .into_iter()
        .collect();
    // Below `top`: from `top/` up to `top0` (`0` follows `/`).
    let below = |end: u8| [top, &[end]].concat();
    let keys: Vec<Vec<u8>> = digests
        .range(below(b'/')..below(b'/' + 1))
        .map(|(k, _)| k.clone())
        .collect();
    for k in keys {
        let d = digests.remove(&k).expect("listed");
        taken.push((k, d));
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_path() {
        assert_eq!(parent_of(b"a/b/c"), b"a/b");
        assert_eq!(parent_of(b"a"), b"");
    }

    #[test]
    fn within_is_the_path_or_below_it() {
        assert!(within(b"a/b", b"a/b"));
        assert!(within(b"a/b/c", b"a/b"));
        assert!(!within(b"a/bc", b"a/b"));
        assert!(!within(b"a", b"a/b"));
        assert!(within(b"anything/below", b""));
    }

    #[test]
    fn a_put_digest_follows_its_rename_and_a_rewrite_drops_it() {
        let lanes = Lanes {
            shared: Arc::new(Shared {
                lanes: Vec::new(),
                total: Mutex::new(0),
                total_room: Condvar::new(),
                pending: Mutex::default(),
                settled: Condvar::new(),
                with_digests: AtomicBool::new(false),
                location: String::new(),
                ids: Box::new(|| 0),
            }),
        };
        let shared = &lanes.shared;
        let later = |op: &Op, path: &[u8]| {
            let dir = dir_of(op).to_vec();
            shared.in_flight(&dir);
            Done::Later {
                dir,
                path: path.to_vec(),
                kind: Kind::File,
                what: "write",
                track: track_of(op),
            }
        };
        let put = |name: &str| Op::Put {
            dir: b"d".to_vec(),
            name: name.as_bytes().to_vec(),
            mode: 0o644,
            zstd: false,
            raw_len: 0,
            data: Vec::new(),
            len: None,
            update: Default::default(),
        };
        let rename = Op::Rename {
            dir: b"d".to_vec(),
            from: b"tmp".to_vec(),
            to: b"f".to_vec(),
        };
        finish(
            shared,
            later(&put("tmp"), b"d/tmp"),
            Ok(Reply::Digest([7; 32])),
        );
        // Not given while a change is in flight.
        let pending = later(&rename, b"d/f");
        assert_eq!(lanes.take_digest(b"d/tmp"), None);
        finish(shared, pending, Ok(Reply::Done));
        assert_eq!(lanes.take_digest(b"d/tmp"), None);
        assert_eq!(lanes.take_digest(b"d/f"), Some([7; 32]));
        assert_eq!(lanes.take_digest(b"d/f"), None, "given once");
        // Written in a staged directory, which is then renamed into place.
        finish(shared, later(&put("x"), b"d/x"), Ok(Reply::Digest([9; 32])));
        let staged = Op::Rename {
            dir: Vec::new(),
            from: b"d".to_vec(),
            to: b"e".to_vec(),
        };
        finish(shared, later(&staged, b"e"), Ok(Reply::Done));
        assert_eq!(lanes.take_digest(b"d/x"), None);
        assert_eq!(lanes.take_digest(b"e/x"), Some([9; 32]));
        // Written whole, then its data changed: not kept.
        finish(shared, later(&put("g"), b"d/g"), Ok(Reply::Digest([8; 32])));
        let write = Op::Write {
            dir: b"d".to_vec(),
            name: b"g".to_vec(),
            offset: 0,
            zstd: false,
            raw_len: 1,
            data: vec![1],
        };
        finish(shared, later(&write, b"d/g"), Ok(Reply::Done));
        assert_eq!(lanes.take_digest(b"d/g"), None);
        assert!(shared.pending.lock().unwrap().failures.is_empty());
    }

    #[test]
    fn a_batch_stops_at_its_size_but_takes_one_large_operation() {
        let op = |n: usize| Queued {
            op: Op::Write {
                dir: vec![],
                name: b"f".to_vec(),
                offset: 0,
                zstd: false,
                raw_len: n as u64,
                data: vec![0; n],
            },
            size: n,
            done: Done::Later {
                dir: vec![],
                path: vec![],
                kind: Kind::File,
                what: "write",
                track: Track::Invalidates,
            },
        };
        let mut q = Queue::default();
        q.ops.extend([op(BATCH_BYTES), op(10), op(10)]);
        assert_eq!(take_batch(&mut q).len(), 1);
        assert_eq!(take_batch(&mut q).len(), 2);
        assert!(take_batch(&mut q).is_empty());
    }

    #[test]
    fn listings_kept_ahead_stop_the_asking_at_their_bytes() {
        let meta = WireMeta {
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            blocks: 0,
            nlink: 1,
            dev: 0,
            ino: 0,
            rdev: 0,
            atime: (0, 0),
            mtime: (0, 0),
            ctime: (0, 0),
        };
        let listing =
            |entries: usize| Ok(Reply::List(vec![(vec![b'n'; 1000], meta.clone()); entries]));
        let mut p = Pending::default();
        assert!(p.room_to_list());
        // Two listings of huge directories hold more than the limit.
        let huge = LISTINGS_KEPT_BYTES / 1000 / 2 + 1;
        p.keep_listing(b"a".to_vec(), listing(huge));
        assert!(p.room_to_list());
        p.keep_listing(b"b".to_vec(), listing(huge));
        assert!(!p.room_to_list(), "{} bytes kept", p.listed_bytes);
        // Taken (or dropped by a change), they make room again.
        assert!(p.take_listing(b"a").is_some());
        assert!(p.room_to_list());
        p.changed(b"b");
        assert_eq!(p.listed_bytes, 0);
        assert!(p.listings.is_empty());
    }
}
