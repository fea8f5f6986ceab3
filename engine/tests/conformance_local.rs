// SPDX-License-Identifier: MIT
//! The Location conformance suite against the local location.

use ferry_engine::location::conformance::{self, Capabilities, Harness};
use ferry_engine::location::local::LocalLocation;

fn harness() -> Harness<LocalLocation> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let mut unsupported = vec!["digest"];
    if !rustix::process::geteuid().is_root() {
        unsupported.extend(["device_nodes", "owner"]);
    }
    Harness {
        location: LocalLocation::open(&root).unwrap(),
        root,
        outside,
        caps: Capabilities {
            read: true,
            deferred_create: false,
            special_files: true,
            unsupported,
        },
        keep: Box::new(dir),
    }
}

#[test]
fn the_local_location_conforms() {
    let outcomes = conformance::run_all(&harness);
    assert!(outcomes.len() >= 20);
}
