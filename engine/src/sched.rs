// SPDX-License-Identifier: MIT
//! The work queue shared by the engine's workers.
//!
//! Three kinds of work: directory scans (a stack, so the walk goes depth
//! first and keeps few directories open), per-directory entry jobs, and
//! global jobs (ranges of large files). The NFS client serializes creates and
//! renames inside one directory, so entry jobs are taken round-robin across
//! directories with a cap on how many of one directory are in flight: the
//! work in flight spreads over many directories. Scans run when few entry
//! jobs are queued, which bounds memory by the work in flight, not by the
//! size of the tree.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};

/// Where a job was queued; handed back to [`Scheduler::done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Scan,
    Global,
    Dir(usize),
}

struct DirQueue<J> {
    key: usize,
    jobs: VecDeque<J>,
}

struct State<J> {
    scans: Vec<J>,
    global: VecDeque<J>,
    dirs: VecDeque<DirQueue<J>>,
    in_flight: HashMap<usize, usize>,
    queued_entries: usize,
    active: usize,
    /// Workers blocked in `next`: only then is a wake-up worth a system call.
    waiting: usize,
    finished: bool,
}

pub struct Scheduler<J> {
    state: Mutex<State<J>>,
    wake: Condvar,
    per_dir: usize,
    low_water: usize,
    high_water: usize,
}

impl<J> Scheduler<J> {
    /// `per_dir`: entry jobs of one directory in flight at once;
    /// `workers`: how many threads take jobs.
    pub fn new(per_dir: usize, workers: usize) -> Self {
        Scheduler {
            state: Mutex::new(State {
                scans: Vec::new(),
                global: VecDeque::new(),
                dirs: VecDeque::new(),
                in_flight: HashMap::new(),
                queued_entries: 0,
                active: 0,
                waiting: 0,
                finished: false,
            }),
            wake: Condvar::new(),
            per_dir: per_dir.max(1),
            low_water: workers * 4,
            high_water: (workers * 256).max(16_384),
        }
    }

    /// Lets scans run as long as fewer than `entries` entry jobs are
    /// queued (instead of four per worker): the work of directories
    /// opened ahead (their digests asked for) waits while more open.
    pub fn with_lookahead(mut self, entries: usize) -> Self {
        self.low_water = entries;
        self.high_water = self.high_water.max(entries);
        self
    }

    pub fn push(&self, slot: Slot, job: J) {
        let mut s = self.state.lock().unwrap();
        match slot {
            Slot::Scan => s.scans.push(job),
            Slot::Global => s.global.push_back(job),
            Slot::Dir(key) => {
                s.queued_entries += 1;
                match s.dirs.iter_mut().find(|q| q.key == key) {
                    Some(q) => q.jobs.push_back(job),
                    None => s.dirs.push_back(DirQueue {
                        key,
                        jobs: VecDeque::from([job]),
                    }),
                }
            }
        }
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Queues the entry jobs of one directory at once.
    pub fn push_dir(&self, key: usize, jobs: Vec<J>) {
        if jobs.is_empty() {
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.queued_entries += jobs.len();
        s.dirs.push_back(DirQueue {
            key,
            jobs: jobs.into(),
        });
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.wake.notify_all();
        }
    }

    /// The next job, waiting for one; `None` once all work is done.
    pub fn next(&self) -> Option<(Slot, J)> {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.finished {
                return None;
            }
            if let Some(job) = self.take(&mut s) {
                s.active += 1;
                return Some(job);
            }
            if s.active == 0 {
                s.finished = true;
                self.wake.notify_all();
                return None;
            }
            s.waiting += 1;
            s = self.wake.wait(s).unwrap();
            s.waiting -= 1;
        }
    }

    fn take(&self, s: &mut State<J>) -> Option<(Slot, J)> {
        if let Some(job) = s.global.pop_front() {
            return Some((Slot::Global, job));
        }
        if s.queued_entries < self.low_water {
            if let Some(job) = s.scans.pop() {
                return Some((Slot::Scan, job));
            }
        }
        for _ in 0..s.dirs.len() {
            let mut q = s.dirs.pop_front().expect("non-empty");
            let busy = s.in_flight.get(&q.key).copied().unwrap_or(0);
            if busy < self.per_dir {
                let job = q.jobs.pop_front().expect("queues are never empty");
                let key = q.key;
                if !q.jobs.is_empty() {
                    s.dirs.push_back(q);
                }
                *s.in_flight.entry(key).or_insert(0) += 1;
                s.queued_entries -= 1;
                return Some((Slot::Dir(key), job));
            }
            s.dirs.push_back(q);
        }
        // Every queued directory is at its cap: walk on to find more
        // directories to spread over, as long as memory allows.
        if s.queued_entries < self.high_water {
            if let Some(job) = s.scans.pop() {
                return Some((Slot::Scan, job));
            }
        }
        None
    }

    /// Keeps the workers from finishing while the guard lives, as a job
    /// running would: work may still come from elsewhere (a coordinator's
    /// units).
    pub fn hold(&self) -> Hold<'_, J> {
        self.state.lock().unwrap().active += 1;
        Hold(self)
    }

    /// Marks a job taken by [`Self::next`] as done.
    pub fn done(&self, slot: Slot) {
        let mut s = self.state.lock().unwrap();
        s.active -= 1;
        if let Slot::Dir(key) = slot {
            if let Some(n) = s.in_flight.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    s.in_flight.remove(&key);
                }
            }
        }
        // Waiting workers can only be unblocked by the end of all work or by
        // a directory dropping below its cap.
        let idle = s.active == 0;
        let freed = matches!(slot, Slot::Dir(_)) && s.queued_entries > 0 && s.waiting > 0;
        drop(s);
        if idle {
            self.wake.notify_all();
        } else if freed {
            self.wake.notify_one();
        }
    }
}

/// See [`Scheduler::hold`].
pub struct Hold<'a, J>(&'a Scheduler<J>);

impl<J> Drop for Hold<'_, J> {
    fn drop(&mut self) {
        self.0.done(Slot::Global);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn spreads_across_directories() {
        let s = Scheduler::new(1, 1);
        s.push_dir(1, vec!["a1", "a2"]);
        s.push_dir(2, vec!["b1", "b2"]);
        let (k1, j1) = s.next().unwrap();
        let (k2, j2) = s.next().unwrap();
        assert_eq!((j1, j2), ("a1", "b1"));
        // Both directories are at their cap of one: nothing more until a job ends.
        s.done(k1);
        assert_eq!(s.next().unwrap().1, "a2");
        s.done(k2);
    }

    #[test]
    fn finishes_when_idle_and_jobs_spawn_jobs() {
        let s = Arc::new(Scheduler::new(4, 4));
        let ran = Arc::new(AtomicUsize::new(0));
        s.push(Slot::Scan, 3u32);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (s, ran) = (s.clone(), ran.clone());
                scope.spawn(move || {
                    while let Some((slot, depth)) = s.next() {
                        ran.fetch_add(1, Ordering::Relaxed);
                        if depth > 0 {
                            s.push(Slot::Scan, depth - 1);
                            s.push(Slot::Scan, depth - 1);
                            s.push(Slot::Dir(depth as usize), 0);
                        }
                        s.done(slot);
                    }
                });
            }
        });
        // 1 + 2 + 4 + 8 scans and 1 + 2 + 4 entry jobs.
        assert_eq!(ran.load(Ordering::Relaxed), 15 + 7);
    }

    #[test]
    fn a_hold_keeps_idle_workers_waiting_for_work_to_come() {
        let s = Scheduler::new(1, 1);
        let hold = s.hold();
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let (slot, job) = s.next().expect("the job pushed later");
                s.done(slot);
                assert_eq!(s.next(), None);
                job
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            s.push(Slot::Scan, 7);
            drop(hold);
            assert_eq!(worker.join().unwrap(), 7);
        });
    }
}
