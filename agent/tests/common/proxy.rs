// SPDX-License-Identifier: MIT
//! A fault-injecting TCP proxy for the tests: added delay, a bandwidth cap,
//! connections killed at random points (a FIN or a reset), and outages
//! during which every connection is cut and new ones are refused.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added to every piece of data, each way.
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
    faults: Mutex<Faults>,
    stats: Stats,
    up: Mutex<Option<Bucket>>,
    down: Mutex<Option<Bucket>>,
    live: Mutex<Vec<(TcpStream, TcpStream)>>,
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
    pub fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            stats: Stats::default(),
            up: Mutex::new(None),
            down: Mutex::new(None),
            live: Mutex::new(Vec::new()),
            refuse_until: Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        let proxy = Proxy { addr, shared };
        proxy.set(faults);
        let shared = proxy.shared.clone();
        std::thread::spawn(move || {
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
                std::thread::spawn(move || connection(shared, client));
            }
        });
        proxy
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
        for (a, b) in self.shared.live.lock().unwrap().drain(..) {
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
        for (a, b) in self.shared.live.lock().unwrap().drain(..) {
            cut(&a, &b, false);
        }
        let _ = TcpStream::connect(self.addr);
    }
}

fn connection(shared: Arc<Shared>, client: TcpStream) {
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
    shared
        .live
        .lock()
        .unwrap()
        .push((client.try_clone().unwrap(), server.try_clone().unwrap()));
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
    cut(&client, &server, false);
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
    // The queue is bounded (1 MiB) so that a slow link pushes back on the
    // sender as a real one does, rather than buffering without end.
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(64);
    let shared2 = shared.clone();
    let writer = std::thread::spawn(move || {
        for (due, data) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            Bucket::take(if up { &shared2.up } else { &shared2.down }, data.len());
            if to.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 16 << 10];
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
        if tx
            .send((Instant::now() + faults.delay, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}
