// SPDX-License-Identifier: MIT
//! A thread that sends metrics, log events and report uploads to AWS, so
//! that the caller (an execution's workers, the runner) never waits on the
//! network. What it is handed goes into a bounded queue; when the queue is
//! full, or AWS stays unreachable through the retries, the item is dropped
//! and counted ([`Counts`]) rather than held: a transfer never slows down
//! for CloudWatch.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cloudwatch::{self, Datum};
use crate::logs::{self, Event};
use crate::{s3, sts, AwsError, Client};

/// Items waiting to be sent; beyond this they are dropped.
pub const QUEUE: usize = 10_000;
/// Log events wait at most this long for a batch to fill.
pub const LOG_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Tries of one call before its items are dropped (waits 0.5, 1, 2 s).
const TRIES: u32 = 4;
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Where metrics and logs go; either may be off.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The metrics' namespace; `None`: no metrics.
    pub namespace: Option<String>,
    /// The log group; `None`: no logs.
    pub log_group: Option<String>,
    /// This machine's stream in the log group.
    pub log_stream: String,
}

/// A file to put in S3, and whom to tell how it went.
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub path: PathBuf,
    pub content_type: &'static str,
    /// A role to assume for the upload (DataSync's `BucketAccessRoleArn`).
    pub role_arn: Option<String>,
    pub done: Box<dyn FnOnce(Result<(), AwsError>) + Send>,
}

enum Item {
    Log(Event),
    Metrics(Vec<Datum>),
    Upload(Upload),
}

/// What was sent and what was dropped, since the start.
#[derive(Debug, Default)]
pub struct Counts {
    pub log_events_sent: AtomicU64,
    pub log_events_dropped: AtomicU64,
    pub metrics_sent: AtomicU64,
    pub metrics_dropped: AtomicU64,
}

pub struct Publisher {
    tx: SyncSender<Item>,
    pub counts: Arc<Counts>,
    settings: Settings,
}

impl Publisher {
    /// Starts the sending thread.
    pub fn start(client: Client, settings: Settings) -> Publisher {
        let (tx, rx) = sync_channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let worker = Worker {
            client,
            settings: settings.clone(),
            counts: counts.clone(),
            events: Vec::new(),
            events_bytes: 0,
            stream_ready: Cell::new(false),
        };
        std::thread::Builder::new()
            .name("ferry-aws".into())
            .spawn(move || worker.run(rx))
            .expect("a thread for the AWS publisher");
        Publisher {
            tx,
            counts,
            settings,
        }
    }

    /// Queues a log event (when logs are on); never waits.
    pub fn log(&self, timestamp_ms: i64, message: String) {
        if self.settings.log_group.is_none() {
            return;
        }
        if self
            .tx
            .try_send(Item::Log(Event::new(timestamp_ms, message)))
            .is_err()
        {
            self.counts
                .log_events_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues metrics (when metrics are on); never waits.
    pub fn metrics(&self, data: Vec<Datum>) {
        if self.settings.namespace.is_none() {
            return;
        }
        let n = data.len() as u64;
        if self.tx.try_send(Item::Metrics(data)).is_err() {
            self.counts.metrics_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Queues an upload; never waits (a full queue fails it at once).
    pub fn upload(&self, upload: Upload) {
        if let Err(
            TrySendError::Full(Item::Upload(u)) | TrySendError::Disconnected(Item::Upload(u)),
        ) = self.tx.try_send(Item::Upload(upload))
        {
            (u.done)(Err(AwsError::BadAnswer {
                action: "S3 PutObject",
                why: "the AWS publisher's queue is full".into(),
            }))
        }
    }
}

/// Calls `f` until it succeeds, fails for good, or [`TRIES`] are spent.
fn with_retries<T>(mut f: impl FnMut() -> Result<T, AwsError>) -> Result<T, AwsError> {
    let mut wait = FIRST_WAIT;
    let mut tries = 1;
    loop {
        match f() {
            Err(e) if e.transient() && tries < TRIES => {
                std::thread::sleep(wait);
                wait *= 2;
                tries += 1;
            }
            other => return other,
        }
    }
}

struct Worker {
    client: Client,
    settings: Settings,
    counts: Arc<Counts>,
    events: Vec<Event>,
    events_bytes: usize,
    /// The log group and stream are made.
    stream_ready: Cell<bool>,
}

impl Worker {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Item>) {
        let mut flush_at: Option<Instant> = None;
        loop {
            // Due whether or not more items keep arriving: a steady stream
            // of them must not hold the batch back.
            if flush_at.is_some_and(|t| Instant::now() >= t) {
                self.flush_logs();
                flush_at = None;
            }
            let wait = flush_at.map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(wait) {
                Ok(Item::Log(e)) => {
                    if self.events_bytes + e.size() > logs::MAX_BATCH_BYTES
                        || self.events.len() == logs::MAX_EVENTS
                    {
                        self.flush_logs();
                    }
                    self.events_bytes += e.size();
                    self.events.push(e);
                    flush_at.get_or_insert_with(|| Instant::now() + LOG_FLUSH_EVERY);
                }
                Ok(Item::Metrics(data)) => self.put_metrics(&data),
                Ok(Item::Upload(u)) => self.upload(u),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_logs();
                    return;
                }
            }
        }
    }

    fn put_metrics(&self, data: &[Datum]) {
        let Some(namespace) = &self.settings.namespace else {
            return;
        };
        let n = data.len() as u64;
        match with_retries(|| cloudwatch::put_metric_data(&self.client, namespace, data)) {
            Ok(()) => self.counts.metrics_sent.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                eprintln!("ferry-aws: {n} metrics dropped: {e}");
                self.counts.metrics_dropped.fetch_add(n, Ordering::Relaxed)
            }
        };
    }

    fn flush_logs(&mut self) {
        let Some(group) = self.settings.log_group.clone() else {
            return;
        };
        if self.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        self.events_bytes = 0;
        // PutLogEvents takes a batch in time order only.
        events.sort_by_key(|e| e.timestamp_ms);
        let stream = self.settings.log_stream.clone();
        let put = || {
            self.ensure_stream(&group, &stream)?;
            with_retries(|| logs::put_log_events(&self.client, &group, &stream, &events))
        };
        let mut sent = put();
        if matches!(&sent, Err(e) if e.is_api("ResourceNotFoundException")) {
            // Deleted since it was made: once more, from the start.
            self.stream_ready.set(false);
            sent = put();
        }
        let n = events.len() as u64;
        match sent {
            Ok(()) => self.counts.log_events_sent.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                eprintln!("ferry-aws: {n} log events dropped: {e}");
                self.counts
                    .log_events_dropped
                    .fetch_add(n, Ordering::Relaxed)
            }
        };
    }

    /// Makes the log group and stream, once (again after
    /// `stream_ready` is cleared).
    fn ensure_stream(&self, group: &str, stream: &str) -> Result<(), AwsError> {
        if !self.stream_ready.get() {
            with_retries(|| logs::ensure_stream(&self.client, group, stream))?;
            self.stream_ready.set(true);
        }
        Ok(())
    }

    fn upload(&self, u: Upload) {
        let result = (|| {
            let assumed;
            let client = match &u.role_arn {
                Some(role) => {
                    assumed = self
                        .client
                        .as_other(with_retries(|| sts::assume_role(&self.client, role))?);
                    &assumed
                }
                None => &self.client,
            };
            with_retries(|| s3::put_file(client, &u.bucket, &u.key, &u.path, u.content_type))
        })();
        (u.done)(result);
    }
}
