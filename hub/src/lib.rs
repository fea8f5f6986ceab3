// SPDX-License-Identifier: MIT
//! `ferry-hub`: the hub, `ferry-agent` with `role: hub`. It keeps its own
//! certificate authority, serves the daemon's API and the agents' endpoints
//! over HTTPS (TLS 1.3, clients authenticated by a certificate from its CA
//! or, for operators, a token), and writes what agents send into its
//! locations. Built on `ferry-daemon` (store, API, dispatch board) and
//! `ferry-wire`.
//!
//! | module | does |
//! | --- | --- |
//! | [`server`] | the hub's HTTPS routes: activation, operators, agents |
//! | [`state`] | the hub's agents and pending activations (`hub.json`) |
//! | [`fs`] | the hub doing the wire's operations on its locations |

pub mod fs;
pub mod server;
pub mod state;
