// SPDX-License-Identifier: MIT
//! A userspace TCP proxy for tests and benchmarks: a fixed one-way delay
//! each way, a bandwidth cap, connections killed at random points (a FIN
//! or a reset), and outages during which every connection is cut and new
//! ones are refused.
//!
//! The delay is a link's, not a per-read sleep: each piece read is stamped
//! with the time it is due and delivered then, in order, so the stream stays
//! pipelined (data arrives `delay` after it was sent, whatever its size).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added to every piece of data, each way (a one-way delay).
    pub delay: Duration,
    /// Bytes a second, each way, shared by all connections.
    pub bytes_per_second: Option<u64>,
    /// Kill a connection after a random number of bytes in this range...
    pub kill_after: Option<(u64, u64)>,
    /// ...at most this many times in all.
    pub kills: u64,
    /// Kill with a reset (SO_LINGER 0) rather than a FIN.
    pub reset: bool,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub killed: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// How the proxy buffers, apart from the faults.
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    /// Bytes read at most at once.
    pub read: usize,
    /// Bytes in flight per connection and direction: the link's window.
    /// A full queue stops reading, so a slow link pushes back on the sender
    /// as a real one does; at `delay` one way a connection carries at most
    /// `queue / delay` a second.
    pub queue: usize,
}

impl Default for Buffers {
    /// What the process tests were written against: 16 KiB reads, 1 MiB in
    /// flight.
    fn default() -> Self {
        Buffers {
            read: 16 << 10,
            queue: 1 << 20,
        }
    }
}

/// A token bucket.
struct Bucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(bucket: &Mutex<Option<Bucket>>, n: usize) {
        let wait = {
            let mut b = bucket.lock().unwrap();
            let Some(b) = b.as_mut() else { return };
            let now = Instant::now();
            let rate = b.rate as f64;
            b.tokens =
                (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate / 10.0);
            b.last = now;
            b.tokens -= n as f64;
            if b.tokens < 0.0 {
                Duration::from_secs_f64(-b.tokens / rate)
            } else {
                Duration::ZERO
            }
        };
        std::thread::sleep(wait);
    }
}

struct Shared {
    upstream: SocketAddr,
    buffers: Buffers,
    faults: Mutex<Faults>,
    stats: Stats,
    up: Mutex<Option<Bucket>>,
    down: Mutex<Option<Bucket>>,
    live: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    refuse_until: Mutex<Option<Instant>>,
    stopped: AtomicBool,
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn cut(a: &TcpStream, b: &TcpStream, with_reset: bool) {
    if with_reset {
        reset(a);
        reset(b);
    }
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

impl Proxy {
    /// On a free port of 127.0.0.1, with the default buffers; panics if it
    /// cannot bind (a test helper).
    pub fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Proxy::bind(listen, upstream, faults, Buffers::default()).expect("bind the proxy")
    }

    /// Listens on `listen` and forwards every connection to `upstream`.
    pub fn bind(
        listen: SocketAddr,
        upstream: SocketAddr,
        faults: Faults,
        buffers: Buffers,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            buffers,
            faults: Mutex::new(Faults::default()),
            stats: Stats::default(),
            up: Mutex::new(None),
            down: Mutex::new(None),
            live: Mutex::new(HashMap::new()),
            refuse_until: Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        let proxy = Proxy { addr, shared };
        proxy.set(faults);
        let shared = proxy.shared.clone();
        std::thread::spawn(move || {
            let mut next_id = 0u64;
            for client in listener.incoming() {
                if shared.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let refusing = shared
                    .refuse_until
                    .lock()
                    .unwrap()
                    .is_some_and(|t| Instant::now() < t);
                if refusing {
                    reset(&client);
                    drop(client);
                    continue;
                }
                let shared = shared.clone();
                next_id += 1;
                let id = next_id;
                std::thread::spawn(move || connection(shared, client, id));
            }
        });
        Ok(proxy)
    }

    /// Changes the faults from now on.
    pub fn set(&self, faults: Faults) {
        let bucket = |f: &Faults| {
            f.bytes_per_second.map(|rate| Bucket {
                rate,
                tokens: 0.0,
                last: Instant::now(),
            })
        };
        *self.shared.up.lock().unwrap() = bucket(&faults);
        *self.shared.down.lock().unwrap() = bucket(&faults);
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Cuts every connection and refuses new ones for `d`.
    pub fn outage(&self, d: Duration) {
        *self.shared.refuse_until.lock().unwrap() = Some(Instant::now() + d);
        for (_, (a, b)) in self.shared.live.lock().unwrap().drain() {
            cut(&a, &b, true);
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        for (_, (a, b)) in self.shared.live.lock().unwrap().drain() {
            cut(&a, &b, false);
        }
        let _ = TcpStream::connect(self.addr);
    }
}

fn connection(shared: Arc<Shared>, client: TcpStream, id: u64) {
    let Ok(server) = TcpStream::connect(shared.upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let faults = shared.faults.lock().unwrap().clone();
    // This connection dies after `budget` bytes, if kills are left.
    let budget = match faults.kill_after {
        Some((lo, hi)) if shared.stats.killed.load(Ordering::Relaxed) < faults.kills => {
            Some(rand::rng().random_range(lo..=hi.max(lo)))
        }
        _ => None,
    };
    shared.live.lock().unwrap().insert(
        id,
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
    );
    let passed = Arc::new(AtomicU64::new(0));
    let pump = |from: TcpStream, to: TcpStream, up: bool| {
        let shared = shared.clone();
        let passed = passed.clone();
        let faults = faults.clone();
        let (a, b) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || pump(shared, from, to, up, faults, budget, passed, a, b))
    };
    let t1 = pump(
        client.try_clone().unwrap(),
        server.try_clone().unwrap(),
        true,
    );
    let t2 = pump(
        server.try_clone().unwrap(),
        client.try_clone().unwrap(),
        false,
    );
    let _ = t1.join();
    let _ = t2.join();
    // Its copies closed too: a long run opens many connections.
    shared.live.lock().unwrap().remove(&id);
    cut(&client, &server, false);
}

/// What is in flight one way on one connection: pieces with the time each
/// is due, bounded in bytes.
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
    limit: usize,
}

struct QueueState {
    pieces: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    /// The reader is done: deliver what is left, then stop.
    closed: bool,
    /// The writer failed: the reader stops.
    broken: bool,
}

impl Queue {
    fn new(limit: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                pieces: VecDeque::new(),
                bytes: 0,
                closed: false,
                broken: false,
            }),
            changed: Condvar::new(),
            limit,
        }
    }

    /// Waits for room; false if the writer has gone.
    fn push(&self, due: Instant, data: Vec<u8>) -> bool {
        let mut s = self.state.lock().unwrap();
        // An empty queue takes anything, so a piece larger than the limit passes.
        while !s.broken && s.bytes > 0 && s.bytes + data.len() > self.limit {
            s = self.changed.wait(s).unwrap();
        }
        if s.broken {
            return false;
        }
        s.bytes += data.len();
        s.pieces.push_back((due, data));
        self.changed.notify_all();
        true
    }

    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.changed.notify_all();
    }

    fn break_off(&self) {
        self.state.lock().unwrap().broken = true;
        self.changed.notify_all();
    }

    /// The next piece, or None once closed and empty.
    fn pop(&self) -> Option<(Instant, Vec<u8>)> {
        let mut s = self.state.lock().unwrap();
        loop {
            if let Some(piece) = s.pieces.pop_front() {
                s.bytes -= piece.1.len();
                self.changed.notify_all();
                return Some(piece);
            }
            if s.closed {
                return None;
            }
            s = self.changed.wait(s).unwrap();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn pump(
    shared: Arc<Shared>,
    mut from: TcpStream,
    mut to: TcpStream,
    up: bool,
    faults: Faults,
    budget: Option<u64>,
    passed: Arc<AtomicU64>,
    a: TcpStream,
    b: TcpStream,
) {
    // A second thread delivers what the first reads, each piece when due.
    let queue = Arc::new(Queue::new(shared.buffers.queue));
    let shared2 = shared.clone();
    let queue2 = queue.clone();
    let writer = std::thread::spawn(move || {
        while let Some((due, data)) = queue2.pop() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            Bucket::take(if up { &shared2.up } else { &shared2.down }, data.len());
            if to.write_all(&data).is_err() {
                queue2.break_off();
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; shared.buffers.read];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let total = passed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let stat = if up {
            &shared.stats.bytes_up
        } else {
            &shared.stats.bytes_down
        };
        stat.fetch_add(n as u64, Ordering::Relaxed);
        if budget.is_some_and(|limit| total >= limit) {
            let previous = shared.stats.killed.fetch_add(1, Ordering::Relaxed);
            if previous < faults.kills {
                cut(&a, &b, faults.reset);
                break;
            }
            shared.stats.killed.fetch_sub(1, Ordering::Relaxed);
        }
        if !queue.push(Instant::now() + faults.delay, buf[..n].to_vec()) {
            break;
        }
    }
    queue.close();
    let _ = writer.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    #[test]
    fn data_passes_intact_both_ways() {
        let proxy = Proxy::start(
            echo(),
            Faults {
                delay: Duration::from_millis(5),
                ..Faults::default()
            },
        );
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut r = s.try_clone().unwrap();
        let expect = data.clone();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; expect.len()];
            r.read_exact(&mut got).unwrap();
            assert!(got == expect, "the echo differs");
        });
        s.write_all(&data).unwrap();
        reader.join().unwrap();
        assert_eq!(proxy.stats().bytes_up.load(Ordering::Relaxed), 3_000_000);
        assert_eq!(proxy.stats().bytes_down.load(Ordering::Relaxed), 3_000_000);
    }

    #[test]
    fn nothing_arrives_before_the_delay_each_way() {
        // Nothing comes back before a round trip: 50 ms each way.
        let delay = Duration::from_millis(50);
        let proxy = Proxy::start(
            echo(),
            Faults {
                delay,
                ..Faults::default()
            },
        );
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_nodelay(true).unwrap();
        let started = Instant::now();
        for _ in 0..100 {
            s.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut got = [0u8; 100];
        s.read_exact(&mut got).unwrap();
        let took = started.elapsed();
        assert!(took >= 2 * delay, "{took:?}");
    }
}
