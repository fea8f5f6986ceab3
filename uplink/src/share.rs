// SPDX-License-Identifier: MIT
//! The agent's side of an execution several agents share: the engine's
//! [`WorkShare`] over the hub's units route
//! (`POST /agent/v1/executions/{id}/units`, answered by
//! `ferry_daemon::dispatch::Board::units`).
//!
//! Units found and units done wait here and go with the next ask for
//! units, which the engine makes as soon as a unit ends: one round trip
//! per directory at most, none per file. A unit is reported done only
//! after its changes are done at the hub (the engine waits for them), so
//! a unit the hub holds as done is done.

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

pub struct HubShare {
    client: HubClient,
    rt: Arc<tokio::runtime::Runtime>,
    path: String,
    /// This run of the job (a restarted agent's units are free again).
    session: String,
    pending: Mutex<Pending>,
    log: Log,
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
        HubShare {
            client,
            rt,
            path: format!("/agent/v1/executions/{hub_execution_id}/units"),
            session: format!("{:x}-{:x}", now.as_nanos(), std::process::id()),
            pending: Mutex::new(Pending::default()),
            log,
        }
    }

    /// The request with what waits (at most [`UNITS_MAX`] of each): units
    /// done go only once all they found has gone before them.
    fn take_request(&self, lease: Option<(SharedPhase, usize)>) -> UnitsRequest {
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
            lease: lease.map(|(phase, max)| (phase.into(), max.min(UNITS_MAX) as u32)),
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

    fn send(&self, request: &UnitsRequest) -> Result<UnitsAnswer, HubError> {
        let body = serde_json::to_value(request).expect("serializable");
        let v = self
            .rt
            .block_on(self.client.json(Method::POST, &self.path, Some(&body)))?;
        serde_json::from_value(v).map_err(|e| HubError::Garbled {
            what: format!("POST {}", self.path),
            source: e.into(),
        })
    }
}

impl WorkShare for HubShare {
    fn lease(&self, phase: SharedPhase, max: usize) -> Lease {
        let request = self.take_request(Some((phase, max)));
        match self.send(&request) {
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
                (self.log)(&format!("hub: units: {e}"));
                self.put_back(request);
                std::thread::sleep(AFTER_FAILURE);
                Lease::Wait
            }
        }
    }

    fn found(&self, from: &Unit, unit: Unit) {
        self.pending.lock().unwrap().found.push(FoundUnit {
            from: from.path.clone(),
            unit: unit.into(),
        });
    }

    fn done(&self, phase: SharedPhase, unit: &Unit) {
        self.pending.lock().unwrap().done.push(DoneUnit {
            phase: phase.into(),
            path: unit.path.clone(),
        });
    }
}
