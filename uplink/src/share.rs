// SPDX-License-Identifier: MIT
//! The agent's side of an execution several agents share: the engine's
//! [`WorkShare`] over the hub's units route
//! (`POST /agent/v1/executions/{id}/units`, answered by
//! `ferry_daemon::dispatch::Board::wait_for_units`).
//!
//! Units found and units done go to the hub at once, in the background,
//! one request at a time for all that waited meanwhile (so that what a
//! unit found always arrives before the unit's end): one round trip per
//! directory at most, none per file. The engine's asks for units go apart
//! and are held by the hub while none is free; what a unit found reaches
//! the hub meanwhile and wakes them. A unit is reported done
//! only after its changes are done at the hub (the engine waits for
//! them), so a unit the hub holds as done is done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;

use ferry_daemon::dispatch::{DoneUnit, FoundUnit, UnitsAnswer, UnitsRequest, UNITS_MAX};
use ferry_engine::share::{Lease, SharedPhase, Unit, WorkShare};
use ferry_wire::client::{HubClient, HubError};

/// How long to wait before asking again when the hub had no unit free
/// (it holds the ask a while first: `ferry_daemon::dispatch::UNITS_WAIT`).
const ASK_AGAIN: Duration = Duration::from_millis(50);
/// How long to wait after a failed request (the link retries it).
const AFTER_FAILURE: Duration = Duration::from_secs(1);

type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What waits for the next request.
#[derive(Default)]
struct Pending {
    found: Vec<FoundUnit>,
    done: Vec<DoneUnit>,
}

struct Inner {
    client: HubClient,
    path: String,
    /// This run of the job (a restarted agent's units are free again).
    session: String,
    pending: Mutex<Pending>,
    /// A background request sends what waits.
    flushing: AtomicBool,
    log: Log,
}

pub struct HubShare {
    inner: Arc<Inner>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl HubShare {
    pub fn new(
        client: HubClient,
        rt: Arc<tokio::runtime::Runtime>,
        hub_execution_id: &str,
        log: Log,
    ) -> HubShare {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let inner = Inner {
            client,
            path: format!("/agent/v1/executions/{hub_execution_id}/units"),
            session: format!("{:x}-{:x}", now.as_nanos(), std::process::id()),
            pending: Mutex::new(Pending::default()),
            flushing: AtomicBool::new(false),
            log,
        };
        HubShare {
            inner: Arc::new(inner),
            rt,
        }
    }

    /// Sends what waits in the background, unless a request doing it is
    /// on its way already.
    fn flush_soon(&self) {
        if !self.inner.flushing.swap(true, Ordering::AcqRel) {
            self.rt.spawn(flush(self.inner.clone()));
        }
    }
}

impl Inner {
    /// The request with what waits (at most [`UNITS_MAX`] of each): units
    /// done go only once all they found has gone before them.
    fn take_request(&self) -> UnitsRequest {
        let mut p = self.pending.lock().unwrap();
        let found: Vec<FoundUnit> = {
            let n = p.found.len().min(UNITS_MAX);
            p.found.drain(..n).collect()
        };
        let done = if p.found.is_empty() {
            let n = p.done.len().min(UNITS_MAX);
            p.done.drain(..n).collect()
        } else {
            Vec::new()
        };
        UnitsRequest {
            session: self.session.clone(),
            found,
            done,
            lease: None,
        }
    }

    /// Puts back what a failed request carried, ahead of what came since.
    fn put_back(&self, request: UnitsRequest) {
        let mut p = self.pending.lock().unwrap();
        let mut found = request.found;
        found.append(&mut p.found);
        p.found = found;
        let mut done = request.done;
        done.append(&mut p.done);
        p.done = done;
    }

    fn is_empty(&self) -> bool {
        let p = self.pending.lock().unwrap();
        p.found.is_empty() && p.done.is_empty()
    }

    async fn send(&self, request: &UnitsRequest) -> Result<UnitsAnswer, HubError> {
        let body = serde_json::to_value(request).expect("serializable");
        let v = self
            .client
            .json(Method::POST, &self.path, Some(&body))
            .await?;
        serde_json::from_value(v).map_err(|e| HubError::Garbled {
            what: format!("POST {}", self.path),
            source: e.into(),
        })
    }
}

/// Sends what waits until nothing does.
async fn flush(inner: Arc<Inner>) {
    loop {
        let request = inner.take_request();
        if request.found.is_empty() && request.done.is_empty() {
            inner.flushing.store(false, Ordering::Release);
            // Something came between the look and the flag: go on with it,
            // unless another request took over.
            if inner.is_empty() || inner.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
            continue;
        }
        match inner.send(&request).await {
            Ok(_) => {}
            // The hub forgot the execution: nothing more to tell it.
            Err(HubError::Refused { status: 404, .. }) => {}
            Err(e) => {
                (inner.log)(&format!("hub: units: {e}"));
                inner.put_back(request);
                tokio::time::sleep(AFTER_FAILURE).await;
            }
        }
    }
}

impl WorkShare for HubShare {
    fn lease(&self, phase: SharedPhase, max: usize) -> Lease {
        let inner = &self.inner;
        let request = UnitsRequest {
            session: inner.session.clone(),
            lease: Some((phase.into(), max.min(UNITS_MAX) as u32)),
            ..UnitsRequest::default()
        };
        match self.rt.block_on(inner.send(&request)) {
            Ok(answer) if !answer.units.is_empty() => {
                Lease::Units(answer.units.into_iter().map(Unit::from).collect())
            }
            Ok(answer) if answer.over => Lease::Over,
            Ok(_) => {
                std::thread::sleep(ASK_AGAIN);
                Lease::Wait
            }
            // The hub forgot the execution (it ended, or the hub lost it):
            // nothing more to do here.
            Err(HubError::Refused { status: 404, .. }) => Lease::Over,
            Err(e) => {
                (inner.log)(&format!("hub: units: {e}"));
                std::thread::sleep(AFTER_FAILURE);
                Lease::Wait
            }
        }
    }

    fn found(&self, from: &Unit, unit: Unit) {
        self.inner.pending.lock().unwrap().found.push(FoundUnit {
            from: from.path.clone(),
            unit: unit.into(),
        });
        self.flush_soon();
    }

    fn done(&self, phase: SharedPhase, unit: &Unit) {
        self.inner.pending.lock().unwrap().done.push(DoneUnit {
            phase: phase.into(),
            path: unit.path.clone(),
        });
        self.flush_soon();
    }
}
