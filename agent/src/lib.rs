//! Ferry's agent: the pieces of the `ferry` command and the `ferry-agent`
//! daemon that are not the engine. The engine and its locations are the
//! `ferry-engine` crate ([`ferry_engine`]), which knows nothing of these.
//!
//! - [`daemon`]: `ferry-agent`, which keeps locations, tasks and executions.
//! - [`hub`]: the hub role, activation, and the remote writer over mutual TLS.

pub mod daemon;
pub mod hub;
#[cfg(test)]
mod import_cycles;
