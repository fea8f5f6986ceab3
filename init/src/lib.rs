// SPDX-License-Identifier: GPL-2.0-only
//! ferry-init, PID 1 of the Ferry appliance.
//!
//! Two stages in one static binary:
//! - [`initramfs`]: load the kernel modules from the manifest, set up
//!   dm-verity over the erofs root through device-mapper ioctls ([`dm`]),
//!   check the whole root, mount it read-only and switch to it;
//! - [`system`]: mounts, hardening sysctls, the data partition, the
//!   configuration document, a generated /etc, hostname, journald, the
//!   network controller, supervised services, and an ordered shutdown.
//!
//! System calls with side effects go through [`sys::Sys`], so units are
//! tested against a recorder ([`sys::Recorder`]) that writes a transcript.

pub mod accounts;
pub mod block;
pub mod cmdline;
pub mod config;
pub mod console;
pub mod datapart;
pub mod diag;
pub mod dm;
pub mod dmi;
pub mod error;
pub mod etc;
pub mod firewall;
pub mod guestinfo;
pub mod hostkey;
pub mod imds;
#[cfg(test)]
mod import_cycles;
pub mod initramfs;
pub mod logging;
pub mod modules;
pub mod mounts;
pub mod network;
pub mod ovfenv;
pub mod power;
pub mod providers;
pub mod reaper;
pub mod seccomp;
pub mod services;
pub mod supervisor;
pub mod support;
pub mod sys;
pub mod sysctl;
pub mod system;
pub mod validate;
