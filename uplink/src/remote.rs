// SPDX-License-Identifier: MIT
//! The remote writer: a [`Location`] on the hub, reached over several
//! mutual-TLS connections. Each operation is a request; the chunks of a
//! file are sent without waiting for one another (a window per file) and
//! each answer acknowledges its chunk, so a broken connection costs at most
//! the chunks in flight, which are sent again on a new connection.

use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::Range;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use ferry_engine::location::{
    Entry, Kind, Location, Meta, MetaUpdate, Reader, WireCounters, Writer,
};
use ferry_wire::client::{HubClient, HubError};
use ferry_wire::proto::{Op, Reply, Request, Response, WireUpdate, MAX_CHUNK};

/// Chunks of one file in flight at once.
const WINDOW: usize = 4;
/// A file whose first write is at most this large and that gets no second
/// write goes in one request with its attributes.
const SMALL: usize = MAX_CHUNK;

struct Inner {
    client: HubClient,
    rt: Runtime,
    location: String,
    compress: bool,
    op_salt: u64,
    op_seq: AtomicU64,
}

/// A location of the hub, written by an agent.
pub struct RemoteLocation {
    inner: Arc<Inner>,
}

fn hub_io(e: HubError) -> io::Error {
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

fn unexpected(r: Reply) -> io::Error {
    io::Error::other(format!("unexpected answer from the hub: {r:?}"))
}

fn join(dir: &[u8], name: &OsStr) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name.as_bytes());
    p
}

impl Inner {
    fn request(&self, op: Op) -> Request {
        Request {
            op_id: self.op_salt ^ self.op_seq.fetch_add(1, Ordering::Relaxed),
            op,
        }
    }

    fn call(&self, op: Op) -> io::Result<Reply> {
        let req = self.request(op);
        let resp: Response = self
            .rt
            .block_on(self.client.fs(&self.location, &req))
            .map_err(hub_io)?;
        resp.map_err(io::Error::from)
    }

    fn done(&self, op: Op) -> io::Result<()> {
        match self.call(op)? {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// The data as sent: compressed when that helps; at most [`MAX_CHUNK`]
    /// bytes, whose length the hub is told (`raw_len`).
    fn encode(&self, data: &[u8]) -> (bool, Vec<u8>) {
        debug_assert!(data.len() <= MAX_CHUNK);
        if !self.compress {
            return (false, data.to_vec());
        }
        let packed = zstd::bulk::compress(data, 3)
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
                (false, data.to_vec())
            }
        }
    }
}

impl RemoteLocation {
    /// `location` is the id of a location of the hub. The client's
    /// connections live on a runtime of their own, driven by `rt`.
    pub fn new(client: HubClient, rt: Runtime, location: String, compress: bool) -> RemoteLocation {
        let salt = u64::from_le_bytes(ferry_wire::ca::random_bytes(8).try_into().expect("8 bytes"));
        RemoteLocation {
            inner: Arc::new(Inner {
                client,
                rt,
                location,
                compress,
                op_salt: salt,
                op_seq: AtomicU64::new(0),
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
        self.inner.call(Op::StatDir { dir: Vec::new() })?;
        Ok(Vec::new())
    }

    fn open_dir(&self, parent: &Vec<u8>, name: &OsStr) -> io::Result<Vec<u8>> {
        // One name: joined into the path, an empty one would name the
        // parent itself and `a/b` a directory below it.
        ferry_wire::proto::name_ok(name.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let path = join(parent, name);
        match self.inner.call(Op::StatDir { dir: path.clone() })? {
            Reply::Meta(m) if m.kind == Kind::Dir => Ok(path),
            Reply::Meta(_) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            r => Err(unexpected(r)),
        }
    }

    fn list(&self, dir: &Vec<u8>) -> io::Result<Vec<Entry>> {
        match self.inner.call(Op::List { dir: dir.clone() })? {
            Reply::List(entries) => entries
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
                .collect(),
            r => Err(unexpected(r)),
        }
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
        self.inner.done(Op::MakeDir {
            dir: parent.clone(),
            name: name.as_bytes().to_vec(),
            mode,
        })
    }

    fn create_file(&self, dir: &Vec<u8>, name: &OsStr, mode: u32) -> io::Result<RemoteWriter> {
        // Nothing is sent yet: a small file goes in one request at its end.
        Ok(RemoteWriter {
            inner: self.inner.clone(),
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            mode,
            window: Arc::new(tokio::sync::Semaphore::new(WINDOW)),
            state: Mutex::new(WriteState::default()),
        })
    }

    fn make_symlink(&self, dir: &Vec<u8>, name: &OsStr, target: &OsStr) -> io::Result<()> {
        self.inner.done(Op::MakeSymlink {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            target: target.as_bytes().to_vec(),
        })
    }

    fn make_node(
        &self,
        dir: &Vec<u8>,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        rdev: u64,
    ) -> io::Result<()> {
        self.inner.done(Op::MakeNode {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            kind,
            mode,
            rdev,
        })
    }

    fn hard_link(
        &self,
        from_dir: &Vec<u8>,
        from: &OsStr,
        to_dir: &Vec<u8>,
        to: &OsStr,
    ) -> io::Result<()> {
        self.inner.done(Op::HardLink {
            from_dir: from_dir.clone(),
            from: from.as_bytes().to_vec(),
            to_dir: to_dir.clone(),
            to: to.as_bytes().to_vec(),
        })
    }

    fn rename(&self, dir: &Vec<u8>, from: &OsStr, to: &OsStr) -> io::Result<()> {
        self.inner.done(Op::Rename {
            dir: dir.clone(),
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        })
    }

    fn remove(&self, dir: &Vec<u8>, name: &OsStr, kind: Kind) -> io::Result<()> {
        self.inner.done(Op::Remove {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            kind,
        })
    }

    fn update(&self, dir: &Vec<u8>, name: &OsStr, update: &MetaUpdate) -> io::Result<()> {
        self.inner.done(Op::Update {
            dir: dir.clone(),
            name: name.as_bytes().to_vec(),
            update: WireUpdate::from(update),
        })
    }

    fn update_dir(&self, dir: &Vec<u8>, update: &MetaUpdate) -> io::Result<()> {
        self.inner.done(Op::UpdateDir {
            dir: dir.clone(),
            update: WireUpdate::from(update),
        })
    }

    fn digest(&self, dir: &Vec<u8>, name: &OsStr) -> Option<io::Result<[u8; 32]>> {
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
    in_flight: Vec<JoinHandle<io::Result<()>>>,
    len: Option<u64>,
    update: MetaUpdate,
}

/// A file being written on the hub.
pub struct RemoteWriter {
    inner: Arc<Inner>,
    dir: Vec<u8>,
    name: Vec<u8>,
    mode: u32,
    window: Arc<tokio::sync::Semaphore>,
    state: Mutex<WriteState>,
}

impl RemoteWriter {
    /// Sends a chunk without waiting for its acknowledgement; waits only
    /// while the window is full.
    fn send_chunk(&self, state: &mut WriteState, data: &[u8], offset: u64) -> io::Result<()> {
        self.reap(state, false)?;
        let permit = self
            .inner
            .rt
            .block_on(self.window.clone().acquire_owned())
            .expect("never closed");
        let raw_len = data.len() as u64;
        let (zstd, data) = self.inner.encode(data);
        let req = self.inner.request(Op::Write {
            dir: self.dir.clone(),
            name: self.name.clone(),
            offset,
            zstd,
            raw_len,
            data,
        });
        // The task holds the client, not `Inner`: were it the last holder
        // of `Inner` (the writer dropped after a failure while chunks are in
        // flight), it would drop the runtime it runs on, which panics.
        let client = self.inner.client.clone();
        let location = self.inner.location.clone();
        let task = self.inner.rt.spawn(async move {
            let r = client.fs(&location, &req).await;
            drop(permit);
            match r.map_err(hub_io)? {
                Ok(Reply::Done) => Ok(()),
                Ok(r) => Err(unexpected(r)),
                Err(e) => Err(io::Error::from(e)),
            }
        });
        state.in_flight.push(task);
        Ok(())
    }

    /// Collects acknowledged chunks (all of them when `all`); the first
    /// failure is returned.
    fn reap(&self, state: &mut WriteState, all: bool) -> io::Result<()> {
        let mut result = Ok(());
        let mut keep = Vec::new();
        for task in state.in_flight.drain(..) {
            if all || task.is_finished() {
                let r = self
                    .inner
                    .rt
                    .block_on(task)
                    .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
                if result.is_ok() {
                    result = r;
                }
            } else {
                keep.push(task);
            }
        }
        state.in_flight = keep;
        result
    }

    fn ensure_created(&self, state: &mut WriteState) -> io::Result<()> {
        if state.created {
            return Ok(());
        }
        self.inner.done(Op::Create {
            dir: self.dir.clone(),
            name: self.name.clone(),
            mode: self.mode,
        })?;
        state.created = true;
        if let Some(first) = state.first.take() {
            self.send_chunk(state, &first, 0)?;
        }
        Ok(())
    }
}

impl Writer for RemoteWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        // The lock is held while a chunk waits for room in the window: the
        // writes of one file are ordered by it anyway.
        // One chunk at most: the hub takes no more in a request, and the
        // caller writes the rest (a short write).
        let buf = &buf[..buf.len().min(MAX_CHUNK)];
        let mut state = self.state.lock().unwrap();
        if !state.created && state.first.is_none() && offset == 0 && buf.len() <= SMALL {
            state.first = Some(buf.to_vec());
            return Ok(buf.len());
        }
        self.ensure_created(&mut state)?;
        self.send_chunk(&mut state, buf, offset)?;
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
        if !state.created {
            let data = state.first.take().unwrap_or_default();
            let raw_len = data.len() as u64;
            let (zstd, data) = self.inner.encode(&data);
            return self.inner.done(Op::Put {
                dir: self.dir.clone(),
                name: self.name.clone(),
                mode: self.mode,
                zstd,
                raw_len,
                data,
                len: state.len,
                update: WireUpdate::from(&state.update),
            });
        }
        self.reap(&mut state, true)?;
        if state.len.is_none() && state.update.is_empty() {
            return Ok(());
        }
        self.inner.done(Op::Finish {
            dir: self.dir.clone(),
            name: self.name.clone(),
            len: state.len,
            update: WireUpdate::from(&state.update),
        })
    }
}
