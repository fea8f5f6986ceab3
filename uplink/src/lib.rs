// SPDX-License-Identifier: MIT
//! `ferry-uplink`: an agent's connection to its hub. Built on
//! `ferry-daemon` (which names nothing here: the `ferry-agent` binary hands
//! the link to the daemon) and `ferry-wire`.
//!
//! | module | does |
//! | --- | --- |
//! | [`link`] | the activation port, certificate pickup, heartbeats, polling for work and reporting; the API's activation routes ([`link::routes`]); the runner's way to the hub ([`ferry_daemon::runner::Destinations`]) |
//! | [`remote`] | the remote writer: a [`ferry_engine::location::Location`] on the hub |
//! | [`share`] | an execution several agents share: its work units, leased from the hub |

mod lanes;
pub mod link;
pub mod remote;
pub mod share;
