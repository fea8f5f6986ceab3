// SPDX-License-Identifier: MIT
//! The remote writer's batches, as the hub reads them from an agent: a run
//! of postcard `Batch`es (`POST /agent/v1/fs/{location}/batch` bodies),
//! each that `Batch::validate` accepts done by `hub::fs::execute_batch` as
//! the hub does it, on a fresh, empty location, one after the other, so
//! sequences (make a node, then write to it; put a file, then digest it)
//! are reached.
//!
//! The operations really happen, as root when the fuzzer runs as root, so
//! they run in a sandbox: a worker thread with its own root directory
//! (`unshare(CLONE_FS)` + `chroot` into a scratch directory) and without
//! CAP_MKNOD and CAP_SYS_CHROOT, so neither a symlink nor a device node
//! reaches outside the scratch directory, whatever the hub's code does with
//! them. libFuzzer's own thread keeps the real root (corpus, artifacts).
//! Where that sandbox cannot be made (not root), batches are only decoded.
//!
//! The scratch directory is `$FERRY_FUZZ_SCRATCH`, else one under the
//! temporary directory.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};

use ferry_engine::location::local::LocalLocation;
use ferry_hub::fs;
use ferry_wire::proto::Batch;
use libfuzzer_sys::fuzz_target;

/// Batches done per input at most.
const MAX_BATCHES: usize = 16;

/// The batches of one input.
type Job = Vec<Batch>;

struct Worker {
    jobs: SyncSender<Job>,
    done: Receiver<()>,
}

static WORKER: OnceLock<Option<Mutex<Worker>>> = OnceLock::new();

fn sandbox_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Confines the calling thread to `root`; see the module doc.
fn confine(root: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c_root = std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: plain system calls on this thread's own attributes.
    unsafe {
        if libc::unshare(libc::CLONE_FS) != 0 {
            return Err(sandbox_error("unshare(CLONE_FS)"));
        }
        if libc::chroot(c_root.as_ptr()) != 0 {
            return Err(sandbox_error("chroot"));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(sandbox_error("chdir"));
        }
        // capget/capset on this thread (pid 0), not the whole process
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        // linux/capability.h
        const CAP_SYS_CHROOT: u32 = 18;
        const CAP_MKNOD: u32 = 27;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(sandbox_error("capget"));
        }
        for cap in [CAP_MKNOD, CAP_SYS_CHROOT] {
            let bit = !(1u32 << cap);
            data[0].effective &= bit;
            data[0].permitted &= bit;
            data[0].inheritable &= bit;
        }
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(sandbox_error("capset"));
        }
    }
    Ok(())
}

fn run(batches: Job, n: u64) {
    let dir = PathBuf::from(format!("/w{n}"));
    if std::fs::create_dir(&dir).is_err() {
        return;
    }
    if let Ok(loc) = LocalLocation::open(&dir) {
        let budget = std::time::Duration::from_secs(5);
        for batch in batches {
            // Both ways: as first sent, and as sent again after a restart.
            let resent = batch.batch_id & 1 == 1;
            let _ = fs::execute_batch(&loc, batch.ops, &fs::Policy::default(), budget, resent);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn start() -> Option<Mutex<Worker>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("hub_request: not root, so no sandbox: batches are decoded, not done");
        return None;
    }
    let root = std::env::var_os("FERRY_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ferry-fuzz-hub-request"))
        .join(std::process::id().to_string());
    if let Err(e) = std::fs::create_dir_all(&root) {
        panic!("hub_request: scratch directory {}: {e}", root.display());
    }
    let (jobs, job_rx) = sync_channel::<Job>(0);
    let (done_tx, done) = sync_channel(0);
    let (ready_tx, ready) = sync_channel(0);
    std::thread::spawn(move || {
        let confined = confine(&root);
        let ok = confined.is_ok();
        ready_tx.send(confined).expect("main thread waits");
        if !ok {
            return;
        }
        let mut n = 0u64;
        for job in job_rx {
            run(job, n);
            n += 1;
            let _ = done_tx.send(());
        }
    });
    match ready.recv().expect("worker answers") {
        Ok(()) => Some(Mutex::new(Worker { jobs, done })),
        Err(e) => panic!("hub_request: cannot make the sandbox: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut batches = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && batches.len() < MAX_BATCHES {
        match postcard::take_from_bytes::<Batch>(rest) {
            Ok((batch, tail)) => {
                // Refused whole by the hub when not valid: never done.
                if batch.validate().is_ok() {
                    batches.push(batch);
                }
                rest = tail;
            }
            Err(_) => break,
        }
    }
    if batches.is_empty() {
        return;
    }
    if let Some(worker) = WORKER.get_or_init(start) {
        let w = worker.lock().unwrap();
        w.jobs.send(batches).expect("worker runs");
        w.done.recv().expect("worker runs");
    }
});
