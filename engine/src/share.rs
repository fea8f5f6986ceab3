// SPDX-License-Identifier: MIT
//! Several agents on one execution: its tree is cut into work units, one
//! directory each, which a coordinator (the hub) leases to the agents.
//!
//! An agent's [`Execution`](crate::Execution) run with a [`WorkShare`]
//! takes units instead of walking from the root. For each it lists both
//! sides of that one directory and carries out its entries, as a walk
//! would; a subdirectory is made (at its final name: another agent may
//! fill it) and handed back to the coordinator as a new unit, not walked.
//! Once the unit's changes are done at the destination, the unit is done.
//! When every unit of the execution is done, the coordinator leases them
//! again for VERIFYING: each directory's entries, and the directory's own
//! attributes, compared.
//!
//! A unit done twice (its agent lost, the unit leased again) changes
//! nothing the second time: a copy is idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Condvar, Mutex};

/// One directory of the tree, as a unit of work.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unit {
    /// From the roots, `/`-rooted (`/` is the root itself).
    pub path: Vec<u8>,
    /// The filters included the directory itself (everything below is
    /// included), rather than only letting the walk through it.
    pub included: bool,
    /// Its attributes are kept as they are (OverwriteMode NEVER on a
    /// directory the destination had).
    pub keep_meta: bool,
    /// The unit is one large file of its directory (`path` the file's),
    /// not a directory: large files go to several agents at once. Checked
    /// in VERIFYING with its directory.
    pub entry: bool,
}

impl Unit {
    /// The unit of the whole tree's root, which every execution starts with.
    pub fn root(included: bool) -> Unit {
        Unit {
            path: b"/".to_vec(),
            included,
            keep_meta: false,
            entry: false,
        }
    }

    /// The names from the root down to the directory; an error naming the
    /// problem for a path that is not `/`-rooted, names an empty, `.` or
    /// `..` component, or holds a NUL. Units come from the network: each
    /// is checked before it is opened.
    pub fn names(&self) -> Result<Vec<&OsStr>, String> {
        check_path(&self.path)?;
        Ok(self
            .path
            .split(|&b| b == b'/')
            .skip(1)
            .filter(|n| !n.is_empty())
            .map(OsStr::from_bytes)
            .collect())
    }
}

/// Longest unit path taken (Linux's `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// Whether `path` is a unit's path: `/`, or `/`-separated names without
/// `.`, `..`, empty ones or NUL, at most [`PATH_MAX`] bytes.
pub fn check_path(path: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(path);
    if path.len() > PATH_MAX {
        return Err(format!("a unit's path is longer than {PATH_MAX} bytes"));
    }
    if path == b"/" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix(b"/") else {
        return Err(format!("the unit {shown:?} does not start at the root (/)"));
    };
    for name in rest.split(|&b| b == b'/') {
        if name.is_empty() || name == b"." || name == b".." || name.contains(&0) {
            return Err(format!(
                "the unit {shown:?} names {:?}, which is not a directory's name",
                String::from_utf8_lossy(name)
            ));
        }
    }
    Ok(())
}

/// The two phases units go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedPhase {
    Transferring,
    Verifying,
}

/// What the coordinator answers an agent asking for units.
#[derive(Debug, PartialEq, Eq)]
pub enum Lease {
    /// Units for this agent (at most as many as asked for).
    Units(Vec<Unit>),
    /// None free now, but the phase goes on (units still leased may find
    /// more): ask again.
    Wait,
    /// The phase is over for the whole execution (or it was cancelled).
    Over,
}

/// The coordinator of a shared execution, as an agent's engine sees it.
/// Calls may block on the network; an implementation batches what it can
/// (found units and units done go with the next lease).
pub trait WorkShare: Send + Sync {
    /// Up to `max` units of `phase` for this agent; blocks a while (not
    /// forever) when there are none yet.
    fn lease(&self, phase: SharedPhase, max: usize) -> Lease;
    /// The unit `from` (still in work here) found the subdirectory or
    /// file `unit`, there at the destination already: a unit for any
    /// agent, to hand over soon.
    fn found(&self, from: &Unit, unit: Unit);
    /// `unit` of `phase` is done here, its changes done at the destination.
    fn done(&self, phase: SharedPhase, unit: &Unit);
}

/// Leases units for an agent's workers and keeps `target` of them in
/// work at once: enough to keep every worker busy, few enough that the
/// others find units to take.
pub(crate) struct Feeder {
    in_work: Mutex<usize>,
    room: Condvar,
    target: usize,
}

impl Feeder {
    pub fn new(target: usize) -> Feeder {
        Feeder {
            in_work: Mutex::new(0),
            room: Condvar::new(),
            target: target.max(1),
        }
    }

    /// Leases units of `phase` and hands each to `start` until the phase
    /// is over (or `cancelled`).
    pub fn run(
        &self,
        share: &dyn WorkShare,
        phase: SharedPhase,
        cancelled: impl Fn() -> bool,
        mut start: impl FnMut(Unit),
    ) {
        while !cancelled() {
            let room = {
                let mut n = self.in_work.lock().unwrap();
                while *n >= self.target {
                    n = self.room.wait(n).unwrap();
                }
                self.target - *n
            };
            match share.lease(phase, room) {
                Lease::Units(units) => {
                    *self.in_work.lock().unwrap() += units.len();
                    units.into_iter().for_each(&mut start);
                }
                Lease::Wait => {}
                Lease::Over => return,
            }
        }
    }

    /// One unit started by [`Feeder::run`] is done.
    pub fn finished_one(&self) {
        let mut n = self.in_work.lock().unwrap();
        *n = n.saturating_sub(1);
        self.room.notify_one();
    }
}

pub use ferry_model::api::{AgentShare, ReleasedUnit};

/// A unit an agent sent that cannot be one.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("{0}")]
    Path(String),
    #[error("{unit:?} is not a directory right below the unit {from:?}")]
    NotBelow { unit: String, from: String },
}

/// Released units listed at most per execution (all are counted).
pub const RELEASED_LISTED: usize = 1000;

/// The coordinator's side: the units of one execution, queued, leased to
/// an agent, or done, in the phase they are in. An agent that asks for
/// units holds them until it says they are done or is lost
/// ([`Units::release`]); a lost agent's units are queued again.
pub struct Units {
    phase: SharedPhase,
    /// A VERIFYING phase follows TRANSFERRING.
    verify: bool,
    over: bool,
    queued: VecDeque<Unit>,
    /// Leased units by path, with their agent.
    leased: HashMap<Vec<u8>, (Unit, String)>,
    /// Every unit of the execution, each once: the units of VERIFYING.
    all: Vec<Unit>,
    known: HashSet<Vec<u8>>,
    agents: BTreeMap<String, AgentShare>,
    released: Vec<ReleasedUnit>,
}

impl Units {
    /// An execution whose tree starts at `root`.
    pub fn new(root: Unit, verify: bool) -> Units {
        Units {
            phase: SharedPhase::Transferring,
            verify,
            over: false,
            known: HashSet::from([root.path.clone()]),
            all: vec![root.clone()],
            queued: VecDeque::from([root]),
            leased: HashMap::new(),
            agents: BTreeMap::new(),
            released: Vec::new(),
        }
    }

    /// Up to `max` units of `phase` for `agent`.
    pub fn lease(&mut self, agent: &str, phase: SharedPhase, max: usize) -> Lease {
        if self.over || (phase == SharedPhase::Transferring && self.phase == SharedPhase::Verifying)
        {
            return Lease::Over;
        }
        if phase != self.phase || self.queued.is_empty() {
            return Lease::Wait;
        }
        let n = max.min(self.queued.len());
        let units: Vec<Unit> = self.queued.drain(..n).collect();
        for u in &units {
            self.leased
                .insert(u.path.clone(), (u.clone(), agent.to_string()));
        }
        self.agents
            .entry(agent.to_string())
            .or_default()
            .units_leased += n as u64;
        Lease::Units(units)
    }

    /// `agent` found `unit` in the unit `from` it holds; false when it
    /// holds it no longer (leased to another since). A path seen before
    /// is taken once.
    pub fn found(&mut self, agent: &str, from: &[u8], unit: Unit) -> Result<bool, UnitError> {
        check_path(&unit.path).map_err(UnitError::Path)?;
        if self
            .leased
            .get(from)
            .is_none_or(|(_, holder)| holder != agent)
        {
            return Ok(false);
        }
        let name = match from {
            b"/" => unit.path.get(1..),
            _ => unit
                .path
                .strip_prefix(from)
                .and_then(|rest| rest.strip_prefix(b"/")),
        };
        if name.is_none_or(|n| n.is_empty() || n.contains(&b'/')) {
            return Err(UnitError::NotBelow {
                unit: String::from_utf8_lossy(&unit.path).into_owned(),
                from: String::from_utf8_lossy(from).into_owned(),
            });
        }
        if self.phase == SharedPhase::Transferring && self.known.insert(unit.path.clone()) {
            // A file is checked with its directory.
            if !unit.entry {
                self.all.push(unit.clone());
            }
            self.queued.push_back(unit);
        }
        Ok(true)
    }

    /// `agent` did the unit `path` of `phase`. Whether it held it (a unit
    /// leased again since is the new holder's to finish).
    pub fn done(&mut self, agent: &str, phase: SharedPhase, path: &[u8]) -> bool {
        if phase != self.phase || self.leased.get(path).is_none_or(|(_, a)| a != agent) {
            return false;
        }
        self.leased.remove(path);
        self.agents.entry(agent.to_string()).or_default().units_done += 1;
        if self.queued.is_empty() && self.leased.is_empty() {
            match self.phase {
                SharedPhase::Transferring if self.verify => {
                    self.phase = SharedPhase::Verifying;
                    self.queued = self.all.iter().cloned().collect();
                }
                _ => self.over = true,
            }
        }
        true
    }

    /// `agent` is lost: the units it holds are queued again, first.
    /// Returns how many.
    pub fn release(&mut self, agent: &str) -> usize {
        let mut lost: Vec<Vec<u8>> = self
            .leased
            .iter()
            .filter(|(_, (_, a))| a == agent)
            .map(|(p, _)| p.clone())
            .collect();
        // Queued in path order, ahead of the rest.
        lost.sort_unstable();
        for path in lost.iter().rev() {
            let (unit, _) = self.leased.remove(path).expect("listed");
            if self.released.len() < RELEASED_LISTED {
                self.released.push(ReleasedUnit {
                    path: String::from_utf8_lossy(&unit.path).into_owned(),
                    agent_id: agent.to_string(),
                    phase: match self.phase {
                        SharedPhase::Transferring => "TRANSFERRING",
                        SharedPhase::Verifying => "VERIFYING",
                    }
                    .into(),
                });
            }
            self.queued.push_front(unit);
        }
        if !lost.is_empty() {
            self.agents
                .entry(agent.to_string())
                .or_default()
                .units_released += lost.len() as u64;
        }
        lost.len()
    }

    /// Ends the execution's units (cancelled): every lease answers
    /// [`Lease::Over`].
    pub fn cancel(&mut self) {
        self.over = true;
    }

    /// Whether every unit of every phase is done (or it was cancelled).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The agents that hold units now.
    pub fn holders(&self) -> BTreeSet<&str> {
        self.leased.values().map(|(_, a)| a.as_str()).collect()
    }

    /// What each agent did, and the units leased again.
    pub fn agents(&self) -> (&BTreeMap<String, AgentShare>, &[ReleasedUnit]) {
        (&self.agents, &self.released)
    }

    /// The phase the units are in.
    pub fn phase(&self) -> SharedPhase {
        self.phase
    }

    /// Units waiting for an agent in the current phase.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Directory units known so far (each once).
    pub fn count(&self) -> usize {
        self.all.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_from_the_network_are_checked() {
        let unit = |p: &[u8]| Unit {
            path: p.to_vec(),
            included: true,
            keep_meta: false,
            entry: false,
        };
        assert_eq!(unit(b"/").names().unwrap(), Vec::<&OsStr>::new());
        assert_eq!(
            unit(b"/a/b\xff").names().unwrap(),
            [OsStr::new("a"), OsStr::from_bytes(b"b\xff")]
        );
        for bad in [
            &b""[..],
            b"a",
            b"/a/../b",
            b"/..",
            b"/a//b",
            b"/a/",
            b"/./a",
            b"/a\0b",
        ] {
            assert!(unit(bad).names().is_err(), "{bad:?}");
        }
        assert!(unit(&[b'/'; PATH_MAX + 1]).names().is_err());
    }

    fn unit(path: &str) -> Unit {
        Unit {
            path: path.as_bytes().to_vec(),
            included: true,
            keep_meta: false,
            entry: false,
        }
    }

    fn leased(lease: Lease) -> Vec<String> {
        match lease {
            Lease::Units(u) => u
                .into_iter()
                .map(|u| String::from_utf8(u.path).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn units_go_through_both_phases_and_a_lost_agents_are_leased_again() {
        use SharedPhase::*;
        let mut units = Units::new(Unit::root(true), true);
        assert_eq!(leased(units.lease("a", Transferring, 8)), ["/"]);
        // Nothing free while the root is out; VERIFYING has not begun.
        assert_eq!(units.lease("b", Transferring, 8), Lease::Wait);
        assert_eq!(units.lease("b", Verifying, 8), Lease::Wait);
        // Only the holder adds below its unit, one level down.
        assert!(!units.found("b", b"/", unit("/x")).unwrap());
        assert!(units.found("a", b"/", unit("/x/y")).is_err());
        assert!(units.found("a", b"/", unit("/../x")).is_err());
        for d in ["/x", "/y", "/z", "/x"] {
            units.found("a", b"/", unit(d)).unwrap();
        }
        assert!(!units.done("b", Transferring, b"/"), "not b's");
        assert!(units.done("a", Transferring, b"/"));
        assert_eq!(leased(units.lease("a", Transferring, 1)), ["/x"]);
        assert_eq!(leased(units.lease("b", Transferring, 8)), ["/y", "/z"]);
        units.found("b", b"/y", unit("/y/deep")).unwrap();
        // b is lost: its two units go first to whoever asks next.
        assert_eq!(units.release("b"), 2);
        assert_eq!(units.holders(), BTreeSet::from(["a"]));
        assert!(!units.done("b", Transferring, b"/y"), "too late");
        assert_eq!(
            leased(units.lease("c", Transferring, 8)),
            ["/y", "/z", "/y/deep"]
        );
        for p in ["/z", "/y", "/y/deep"] {
            assert!(units.done("c", Transferring, p.as_bytes()));
        }
        // A large file of /z is a unit of its own, not checked apart.
        let mut big = unit("/z/big");
        big.entry = true;
        assert!(
            !units.found("c", b"/z", big.clone()).unwrap(),
            "/z is not c's yet"
        );
        // Found again by the second doing of /y: taken once.
        assert!(units.found("a", b"/x", unit("/x/1")).is_ok());
        assert!(units.done("a", Transferring, b"/x"));
        assert_eq!(leased(units.lease("a", Transferring, 8)), ["/x/1"]);
        assert!(units.done("a", Transferring, b"/x/1"));
        // Every unit is checked once more, then it is over.
        assert_eq!(units.lease("a", Transferring, 8), Lease::Over);
        let all = leased(units.lease("a", Verifying, 100));
        assert_eq!(all.len(), 6, "{all:?}");
        assert_eq!(units.count(), 6);
        for p in &all {
            assert!(units.done("a", Verifying, p.as_bytes()));
        }
        assert!(units.is_over());
        assert_eq!(units.lease("c", Verifying, 8), Lease::Over);
        let (agents, released) = units.agents();
        assert_eq!(agents["b"].units_released, 2);
        assert_eq!(agents["c"].units_done, 3);
        assert_eq!(released.len(), 2);
        assert_eq!(
            (released[1].path.as_str(), released[1].agent_id.as_str()),
            ("/y", "b")
        );
    }
}
