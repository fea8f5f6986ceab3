// SPDX-License-Identifier: MIT
//! The remote writer: a [`Location`] on the hub, reached over several
//! mutual-TLS connections. Operations go in batches through the lanes of
//! [`crate::lanes`], each directory's in order; once the engine lets it
//! ([`Location::defer_changes`]), changes are acknowledged at once and
//! their failures reported when it settles, so a tree of small files costs
//! a few round trips, not several per file. A large file's chunks spread
//! over all lanes; its end waits for them.

use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::Range;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Runtime;

use ferry_engine::location::{
    DeferredFailure, Entry, Kind, Location, Meta, MetaUpdate, Reader, WireCounters, Writer,
};
use ferry_wire::client::HubClient;
use ferry_wire::proto::{Op, Reply, WireUpdate, MAX_CHUNK};

use crate::lanes::Lanes;

/// A file whose first write is at most this large and that gets no second
/// write goes in one operation with its attributes.
const SMALL: usize = MAX_CHUNK;

struct Inner {
    client: HubClient,
    compress: bool,
    lanes: Lanes,
    /// Changes are cast, not called (see [`Location::defer_changes`]).
    deferring: AtomicBool,
    location: String,
    // Last: the lanes' tasks run on it (kept by the link between
    // executions, with its connections).
    _rt: Arc<Runtime>,
}

/// A location of the hub, written by an agent.
pub struct RemoteLocation {
    inner: Arc<Inner>,
}

fn unexpected(r: Reply) -> io::Error {
    io::Error::other(format!("unexpected answer from the hub: {r:?}"))
}

fn join(dir: &[u8], name: impl AsRef<[u8]>) -> Vec<u8> {
    crate::lanes::join(dir, name.as_ref())
}

impl Inner {
    fn call(&self, op: Op) -> io::Result<Reply> {
        self.lanes.call(op)
    }

    /// A change, waited for (a `Put` is answered with the digest of the
    /// file written).
    fn done(&self, op: Op) -> io::Result<()> {
        match self.call(op)? {
            Reply::Done | Reply::Digest(_) => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// A change to the entry `path`: sent and waited for, or (deferring)
    /// queued, its failure reported when the location settles.
    fn change(&self, op: Op, path: Vec<u8>, kind: Kind, what: &'static str) -> io::Result<()> {
        self.change_reserved(op, path, kind, what, 0)
    }

    /// [`Inner::change`] of an operation whose room in the budget was
    /// taken already (`reserved` bytes).
    fn change_reserved(
        &self,
        op: Op,
        path: Vec<u8>,
        kind: Kind,
        what: &'static str,
        reserved: usize,
    ) -> io::Result<()> {
        if self.deferring.load(Ordering::Relaxed) {
            self.lanes.cast(op, path, kind, what, reserved);
            Ok(())
        } else {
            self.lanes.release(reserved);
            self.done(op)
        }
    }

    /// The data as sent: compressed when that helps; at most [`MAX_CHUNK`]
    /// bytes, whose length the hub is told (`raw_len`).
    fn encode(&self, data: Vec<u8>) -> (bool, Vec<u8>) {
        debug_assert!(data.len() <= MAX_CHUNK);
        if !self.compress {
            return (false, data);
        }
        let packed = zstd::bulk::compress(&data, 3)
            .ok()
            .filter(|p| p.len() < data.len());
        let stats = &self.client.stats;
        match packed {
            Some(p) => {
                stats
                    .bytes_compressed
                    .fetch_add(p.len() as u64, Ordering::Relaxed);
                (true, p)
            }
            None => {
                stats
                    .bytes_compressed
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                (false, data)
            }
        }
    }
}

impl RemoteLocation {
    /// `location` is the id of a location of the hub. The client's
    /// connections live on a runtime of their own, driven by `rt`; one lane
    /// per connection.
    pub fn new(
        client: HubClient,
        rt: Arc<Runtime>,
        location: String,
        compress: bool,
    ) -> RemoteLocation {
        let salt = u64::from_le_bytes(ferry_wire::ca::random_bytes(8).try_into().expect("8 bytes"));
        let seq = AtomicU64::new(0);
        let lanes = Lanes::start(
            &client,
            &rt,
            location.clone(),
            client.connections(),
            move || salt ^ seq.fetch_add(1, Ordering::Relaxed),
        );
        RemoteLocation {
            inner: Arc::new(Inner {
                client,
                compress,
                lanes,
                deferring: AtomicBool::new(false),
                location,
                _rt: rt,
            }),
        }
    }

    pub fn stats(&self) -> Arc<ferry_wire::client::WireStats> {
        self.inner.client.stats.clone()
    }
}

impl Location for RemoteLocation {
    type Dir = Vec<u8>;
    type Reader = RemoteReader;
    type Writer = RemoteWriter;

    fn describe(&self) -> String {
        format!("{}/{} (hub)", self.inner.client.base(), self.inner.location)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn root(&self) -> io::Result<Vec<u8>> {
        // The scan lists the root next: its listing comes in the same batch.
        self.inner
            .lanes
            .call_and_list(Op::StatDir { dir: Vec::new() })?;
        Ok(Vec::new())
    }

    fn open_dir(&self, parent: &Vec<u8>, name: &OsStr) -> io::Result<Vec<u8>> {
        // One name: joined into the path, an empty one would name the
        // parent itself and `a/b` a directory below it.
        ferry_wire::proto::name_ok(name.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let path = join(parent, name.as_bytes());
        if self.inner.deferring.load(Ordering::Relaxed) {
            // Checked by the hub with the first operation in it (a
            // listing, or what a new directory gets): no round trip.
            return Ok(path);
        }
        match self.inner.call(Op::StatDir { dir: path.clone() })? {
            Reply::Meta(m) if m.kind == Kind::Dir => Ok(path),
            Reply::Meta(_) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            r => Err(unexpected(r)),
        }
    }

    fn list(&self, dir: &Vec<u8>) -> io::Result<Vec<Entry>> {
        let answer = match self.inner.lanes.take_listing(dir) {
            Some(asked_ahead) => asked_ahead?,
            None => {
                // Directories made in it go in their own lanes.
                self.inner.lanes.wait_subdirs_made(dir);
                self.inner.call(self.inner.lanes.list_op(dir.clone()))?
            }
        };
        let entries = match answer {
            Reply::List(entries) => entries,
            Reply::ListDigests(entries) => {
                let digests = entries
                    .iter()
                    .filter_map(|(name, _, d)| Some((name.as_slice(), (*d)?)));
                self.inner.lanes.keep_digests(dir, digests);
                entries
                    .into_iter()
                    .map(|(name, meta, _)| (name, meta))
                    .collect()
            }
            r => return Err(unexpected(r)),
        };
        entries
            .into_iter()
            .map(|(name, meta)| {
                // A name the engine would join into a path: one name,
                // whatever the hub says.
                ferry_wire::proto::name_ok(&name).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("the hub listed {e}"))
                })?;
                Ok(Entry {
                    name: OsString::from_vec(name),
                    meta: meta.into(),
                })
            })
            .collect()
    }

    fn stat_dir(&self, dir: &Vec<u8>) -> io::Result<Meta> {
        match self.inner.call(Op::StatDir { dir: dir.clone() })? {
            Reply::Meta(m) => Ok(m.into()),
            r => Err(unexpected(r)),
        }
    }

    fn stat(&self, dir: &Vec<u8>, name: &OsStr) -> io::Result<Meta> {
        let op = Op::Stat {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
        };
        match self.inner.call(op)? {
            Reply::Meta(m) => Ok(m.into()),
            r => Err(unexpected(r)),
        }
    }

    fn stat_many(&self, dir: &Vec<u8>, names: &[&OsStr]) -> Vec<io::Result<Meta>> {
        let ops = names
            .iter()
            .map(|name| Op::Stat {
                dir: dir.clone(),
                name: name.as_bytes().to_vec(),
            })
            .collect();
        self.inner
            .lanes
            .call_many(ops)
            .into_iter()
            .map(|answer| match answer? {
                Reply::Meta(m) => Ok(m.into()),
                r => Err(unexpected(r)),
            })
            .collect()
    }

    fn open_file(&self, _dir: &Vec<u8>, _name: &OsStr) -> io::Result<RemoteReader> {
        // Data flows agent → hub; the hub hashes its files itself (digest).
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a hub location is only written to",
        ))
    }

    fn read_link(&self, dir: &Vec<u8>, name: &OsStr) -> io::Result<OsString> {
        let op = Op::ReadLink {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
        };
        match self.inner.call(op)? {
            Reply::Target(t) => Ok(OsString::from_vec(t)),
            r => Err(unexpected(r)),
        }
    }

    fn make_dir(&self, parent: &Vec<u8>, name: &OsStr, mode: u32) -> io::Result<()> {
        let op = Op::MakeDir {
            dir: parent.clone(),
            name: name.as_bytes().to_vec(),
            mode,
        };
        if self.inner.deferring.load(Ordering::Relaxed) {
            self.inner
                .lanes
                .cast_make_dir(op, join(parent, name.as_bytes()));
            Ok(())
        } else {
            self.inner.done(op)
        }
    }

    fn create_file(&self, dir: &Vec<u8>, name: &OsStr, mode: u32) -> io::Result<RemoteWriter> {
        // Nothing is sent yet: a small file goes in one operation at its end.
        Ok(RemoteWriter {
            inner: self.inner.clone(),
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            mode,
            state: Mutex::new(WriteState::default()),
        })
    }

    fn make_symlink(&self, dir: &Vec<u8>, name: &OsStr, target: &OsStr) -> io::Result<()> {
        let op = Op::MakeSymlink {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            target: target.as_bytes().to_vec(),
        };
        self.inner.change(
            op,
            join(dir, name.as_bytes()),
            Kind::Symlink,
            "create symlink",
        )
    }

    fn make_node(
        &self,
        dir: &Vec<u8>,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        rdev: u64,
    ) -> io::Result<()> {
        let op = Op::MakeNode {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            kind,
            mode,
            rdev,
        };
        self.inner
            .change(op, join(dir, name.as_bytes()), kind, "create special file")
    }

    fn hard_link(
        &self,
        from_dir: &Vec<u8>,
        from: &OsStr,
        to_dir: &Vec<u8>,
        to: &OsStr,
    ) -> io::Result<()> {
        // The link's target may still be on its way, in another lane.
        self.inner.lanes.wait_within(from_dir);
        let op = Op::HardLink {
            from_dir: from_dir.clone(),
            from: from.as_bytes().to_vec(),
            to_dir: to_dir.clone(),
            to: to.as_bytes().to_vec(),
        };
        self.inner.change(
            op,
            join(to_dir, to.as_bytes()),
            Kind::File,
            "create hard link",
        )
    }

    fn rename(&self, dir: &Vec<u8>, from: &OsStr, to: &OsStr) -> io::Result<()> {
        // A directory is renamed once what is written in it is done.
        self.inner.lanes.wait_within(&join(dir, from.as_bytes()));
        let op = Op::Rename {
            dir: dir.clone(),
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        };
        self.inner.change(
            op,
            join(dir, to.as_bytes()),
            Kind::File,
            "rename into place",
        )
    }

    fn remove(&self, dir: &Vec<u8>, name: &OsStr, kind: Kind) -> io::Result<()> {
        let path = join(dir, name.as_bytes());
        self.inner.lanes.wait_within(&path);
        let op = Op::Remove {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            kind,
        };
        self.inner.change(op, path, kind, "delete")
    }

    fn update(&self, dir: &Vec<u8>, name: &OsStr, update: &MetaUpdate) -> io::Result<()> {
        let op = Op::Update {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            update: WireUpdate::from(update),
        };
        self.inner
            .change(op, join(dir, name.as_bytes()), Kind::File, "set attributes")
    }

    fn update_dir(&self, dir: &Vec<u8>, update: &MetaUpdate) -> io::Result<()> {
        self.inner.lanes.wait_subdirs_made(dir);
        let op = Op::UpdateDir {
            dir: dir.clone(),
            update: WireUpdate::from(update),
        };
        self.inner
            .change(op, dir.clone(), Kind::Dir, "set directory attributes")
    }

    fn digest(&self, dir: &Vec<u8>, name: &OsStr) -> Option<io::Result<[u8; 32]>> {
        // Written in this execution (the hub read it back then), or asked
        // for ahead with the rest of its directory.
        if let Some(d) = self.inner.lanes.take_digest(&join(dir, name.as_bytes())) {
            return Some(Ok(d));
        }
        let op = Op::Digest {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
        };
        Some(match self.inner.call(op) {
            Ok(Reply::Digest(d)) => Ok(d),
            Ok(r) => Err(unexpected(r)),
            Err(e) => Err(e),
        })
    }

    fn prefetch_listings(&self, dir: &Vec<u8>, names: &[&OsStr]) {
        let dirs = names
            .iter()
            .filter(|n| ferry_wire::proto::name_ok(n.as_bytes()).is_ok())
            .map(|n| join(dir, n.as_bytes()))
            .collect();
        self.inner.lanes.prefetch_listings(dirs);
    }

    fn list_with_digests(&self) {
        self.inner.lanes.list_with_digests();
    }

    fn prefetch_digests(&self, dir: &Vec<u8>, names: &[&OsStr]) {
        let names: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        self.inner.lanes.prefetch_digests(dir, &names);
    }

    fn defer_changes(&self) {
        self.inner.deferring.store(true, Ordering::Relaxed);
    }

    fn wait_settled(&self, dir: &Vec<u8>) {
        self.inner.lanes.wait_in(dir);
    }

    fn settle(&self) -> Vec<DeferredFailure> {
        self.inner.lanes.settle()
    }

    fn wire_counters(&self) -> WireCounters {
        let s = &self.inner.client.stats;
        WireCounters {
            bytes_compressed: s.bytes_compressed.load(Ordering::Relaxed),
            bytes_resent: s.bytes_resent.load(Ordering::Relaxed),
            requests_retried: s.retries.load(Ordering::Relaxed),
        }
    }
}

/// Never made: a hub location is not read from the agent.
pub struct RemoteReader;

impl Reader for RemoteReader {
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn meta(&self) -> io::Result<Meta> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn data_segments(&self, _size: u64) -> io::Result<Vec<Range<u64>>> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[derive(Default)]
struct WriteState {
    created: bool,
    /// The first write, held back in case it is the whole file.
    first: Option<Vec<u8>>,
    /// The budget taken for `first` ([`Lanes::reserve`]).
    reserved: usize,
    len: Option<u64>,
    update: MetaUpdate,
}

/// A file being written on the hub.
pub struct RemoteWriter {
    inner: Arc<Inner>,
    dir: Vec<u8>,
    name: Vec<u8>,
    mode: u32,
    state: Mutex<WriteState>,
}

impl RemoteWriter {
    fn path(&self) -> Vec<u8> {
        join(&self.dir, &self.name)
    }

    /// Sends a chunk in a lane of its own choosing (chunks of one file
    /// need no order among them), counted under the file's path so that
    /// its end waits for it; waits for it when not deferring.
    /// `data` is copied only once there is room for it in flight (a
    /// `reserved` part of the budget is taken already).
    fn send_chunk(&self, data: &[u8], offset: u64, reserved: usize) -> io::Result<()> {
        let lanes = &self.inner.lanes;
        let deferring = self.inner.deferring.load(Ordering::Relaxed);
        let reserved = match (deferring, reserved) {
            (true, 0) => {
                lanes.reserve(data.len());
                data.len()
            }
            (true, r) => r,
            (false, r) => {
                lanes.release(r);
                0
            }
        };
        let raw_len = data.len() as u64;
        let (zstd, data) = self.inner.encode(data.to_vec());
        let op = Op::Write {
            dir: self.dir.clone(),
            name: self.name.clone(),
            offset,
            zstd,
            raw_len,
            data,
        };
        if !deferring {
            return self.inner.done(op);
        }
        let path = self.path();
        let lane = lanes.lane(&[path.as_slice(), &offset.to_le_bytes()].concat());
        lanes.cast_in(lane, path.clone(), op, path, Kind::File, "write", reserved);
        Ok(())
    }

    /// Creates the file (waiting for it: its chunks go in other lanes).
    fn ensure_created(&self, state: &mut WriteState) -> io::Result<()> {
        if state.created {
            return Ok(());
        }
        // No room is held while the creation waits for room of its own:
        // writers doing so could otherwise hold all of it, and wait on.
        self.inner
            .lanes
            .release(std::mem::take(&mut state.reserved));
        self.inner.done(Op::Create {
            dir: self.dir.clone(),
            name: self.name.clone(),
            mode: self.mode,
        })?;
        state.created = true;
        if let Some(first) = state.first.take() {
            self.send_chunk(&first, 0, 0)?;
        }
        Ok(())
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        // Abandoned before its data was sent.
        let reserved = std::mem::take(&mut self.state.get_mut().unwrap().reserved);
        self.inner.lanes.release(reserved);
    }
}

impl Writer for RemoteWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        // One chunk at most: the hub takes no more in an operation, and the
        // caller writes the rest (a short write).
        let buf = &buf[..buf.len().min(MAX_CHUNK)];
        let mut state = self.state.lock().unwrap();
        if !state.created && state.first.is_none() && offset == 0 && buf.len() <= SMALL {
            // Room first, then the copy (see `send_chunk`).
            if self.inner.deferring.load(Ordering::Relaxed) {
                self.inner.lanes.reserve(buf.len());
                state.reserved = buf.len();
            }
            state.first = Some(buf.to_vec());
            return Ok(buf.len());
        }
        self.ensure_created(&mut state)?;
        drop(state);
        self.send_chunk(buf, offset, 0)?;
        Ok(buf.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.lock().unwrap().len = Some(len);
        Ok(())
    }

    fn update(&self, update: &MetaUpdate) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let u = &mut state.update;
        u.uid = update.uid.or(u.uid);
        u.gid = update.gid.or(u.gid);
        u.mode = update.mode.or(u.mode);
        u.atime = update.atime.or(u.atime);
        u.mtime = update.mtime.or(u.mtime);
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let path = self.path();
        if !state.created {
            let data = state.first.take().unwrap_or_default();
            let reserved = std::mem::take(&mut state.reserved);
            let raw_len = data.len() as u64;
            let (zstd, data) = self.inner.encode(data);
            let op = Op::Put {
                dir: self.dir.clone(),
                name: self.name.clone(),
                mode: self.mode,
                zstd,
                raw_len,
                data,
                len: state.len,
                update: WireUpdate::from(&state.update),
            };
            return self
                .inner
                .change_reserved(op, path, Kind::File, "write", reserved);
        }
        // Its chunks first, from whichever lanes they went in.
        self.inner.lanes.wait_within(&path);
        if state.len.is_none() && state.update.is_empty() {
            return Ok(());
        }
        let op = Op::Finish {
            dir: self.dir.clone(),
            name: self.name.clone(),
            len: state.len,
            update: WireUpdate::from(&state.update),
        };
        self.inner.change(op, path, Kind::File, "write")
    }
}
