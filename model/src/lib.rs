// SPDX-License-Identifier: MIT
//! Ferry's model: what ferry-init (PID 1, GPL-2.0-only) and ferry-agent (the
//! daemon, the hub, the CLI) must agree on, defined once.
//!
//! | module | what |
//! |---|---|
//! | [`api`] | the API's records (locations, tasks, executions), in its JSON shape: DataSync's names |
//! | [`counters`] | an execution's counters, with DataSync's names |
//! | [`config`] | the configuration document: its version and top-level keys, `role:`, `daemon:` ([`config::daemon`]) and `agent:` ([`config::agent`]), with their checks |
//! | [`options`] | a task's options, with AWS DataSync's names and values, and their checks |
//! | [`filter`] | the options' include and exclude filters (DataSync SIMPLE_PATTERN) |
//! | [`schedule`] | a task's schedule: standard five-field cron, checked |
//! | [`nfs`] | what an NFS location may say, and the options the agent mounts it with |
//! | [`efs`] | what an EFS location may say, and its mount target's name |
//! | [`paths`] | the appliance's paths both name |
//!
//! MIT, with serde, serde_json, thiserror, chrono and croner only (README.md):
//! ferry-init links it, so nothing here may bring an async runtime, HTTP,
//! TLS, a database or a thread pool into PID 1.

pub mod api;
pub mod config;
pub mod counters;
pub mod efs;
pub mod filter;
pub mod nfs;
pub mod options;
pub mod paths;
pub mod schedule;
