//! Ferry: a parallel, incremental file-sync engine with AWS DataSync's task
//! model, and the pieces of the `ferry` command and the `ferry-agent` daemon.
//!
//! - [`location`]: where the engine reads and writes (a POSIX tree, the hub).
//! - [`engine`]: one execution of a task: PREPARING, TRANSFERRING, VERIFYING.
//! - [`daemon`]: `ferry-agent`, which keeps locations, tasks and executions.
//! - [`hub`]: the hub role, activation, and the remote writer over mutual TLS.

pub mod daemon;
pub mod engine;
pub mod hub;
pub mod location;
