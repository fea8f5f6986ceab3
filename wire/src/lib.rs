// SPDX-License-Identifier: MIT
//! `ferry-wire`: what both ends of the agent ↔ hub link share. The hub's
//! server (`ferry-hub`) and the agent's uplink (`ferry-uplink`) are built on
//! it; it knows neither, nor the daemon.
//!
//! | module | does |
//! | --- | --- |
//! | [`activation`] | the activation exchange's messages (register, certificate) |
//! | [`proto`] | the remote writer's operations and answers on the wire |
//! | [`ca`] | the hub's CA, agent certificate requests and signatures, fingerprints |
//! | [`tls`] | rustls configurations; the TLS listener with connection caps that tells who a client is (the hub's API and the agent's activation port) |
//! | [`client`] | HTTPS to the hub, with retries and backoff |

pub mod activation;
pub mod ca;
pub mod client;
pub mod proto;
pub mod tls;
