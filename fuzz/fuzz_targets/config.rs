// SPDX-License-Identifier: MIT
//! The configuration document (`/data/config/ferry.yaml`, and whatever a
//! provider offers): ferry-init's parse and checks, then the parts
//! ferry-agent reads (`role:`, `daemon:`, `agent:`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = ferry_init::config::parse(text, "fuzz");
    if let Ok(doc) = ferry_daemon::config::parse(text) {
        let _ = doc.check();
    }
});
