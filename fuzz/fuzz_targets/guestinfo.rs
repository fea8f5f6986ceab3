// SPDX-License-Identifier: MIT
//! VMware guestinfo: the reader child's JSON answer (variables to values),
//! the document the variables make (an embedded OVF environment overridden
//! by the plain `guestinfo.ferry.*` variables), and that document's checks.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|answer: &str| {
    // as read_isolated takes the child's stdout
    let Ok(vars) = serde_json::from_str::<BTreeMap<String, String>>(answer) else {
        return;
    };
    if let Some(doc) = ferry_init::guestinfo::document(&vars) {
        let _ = ferry_init::config::parse(&doc, "guestinfo");
    }
});
