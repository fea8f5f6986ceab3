// SPDX-License-Identifier: MIT
//! The OVF environment (`ovf-env.xml` from the deployment's CD-ROM): its
//! properties, the document they make, and that document's checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|xml: &str| {
    let props = ferry_init::ovfenv::properties(xml);
    let doc = ferry_init::ovfenv::document(&props);
    let _ = ferry_init::config::parse(&doc, "ovf-env.xml");
});
