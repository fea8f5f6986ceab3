//! The hub and activation, built on [`crate::daemon`] (which names nothing
//! here: the `ferry-agent` binary hands the link to the daemon).
//!
//! The same `ferry-agent` runs as an **agent** (the default) or as the
//! **hub** (`role: hub`). The hub keeps its own certificate authority, serves
//! the daemon's API and the agents' endpoints over HTTPS (TLS 1.3, clients
//! authenticated by a certificate from its CA or, for operators, a token),
//! and writes what agents send into its locations.
//!
//! | module | does |
//! | --- | --- |
//! | [`ca`] | the hub's CA, agent certificate requests and signatures |
//! | [`tls`] | rustls configurations; the TLS listener that tells who a client is |
//! | [`state`] | the hub's agents and pending activations |
//! | [`server`] | the hub's HTTPS routes: activation, operators, agents |
//! | [`link`] | the agent side: the activation port, certificate pickup, heartbeats; the API's activation routes ([`link::routes`]); the runner's way to the hub ([`crate::daemon::runner::Destinations`]) |
//! | [`proto`] | the remote writer's operations on the wire |
//! | [`fs`] | the hub doing those operations on its locations |
//! | [`client`] | HTTPS to the hub, with retries and backoff |
//! | [`remote`] | the remote writer: a [`ferry_engine::location::Location`] on the hub |

pub mod ca;
pub mod client;
pub mod fs;
pub mod link;
pub mod proto;
pub mod remote;
pub mod server;
pub mod state;
pub mod tls;
