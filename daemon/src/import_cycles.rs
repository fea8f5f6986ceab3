// SPDX-License-Identifier: MIT
//! No import cycles between `ferry-daemon`'s files (issue #15): for each
//! source file under `src/`, the modules it names (`crate::…`, `super::…`,
//! `self::…`, a child module by its name) make a graph, which must have no
//! cycle, at two levels: between the files (`runner`, `agent`, the crate's
//! root `lib.rs` as `crate`), tests left out; and between the top-level
//! modules, tests included.
//!
//! [`crate::Agent`] is in `agent.rs`, which the runner, the scheduler, the
//! API and provisioning use, and the crate's root (`Agent::start`) starts
//! them.
//!
//! Between the crates, cargo refuses a cycle: the hub's server
//! (`ferry-hub`) and the agent's uplink (`ferry-uplink`) are built on the
//! daemon, which depends on neither nor on the wire (`ferry-wire`); what it
//! needs of a hub it reaches through a trait that the `ferry-agent` binary
//! injects ([`crate::runner::Destinations`]), and the link's activation
//! routes are the link's own router, which the binary merges into the
//! daemon's. The test checks the manifests say so.
//!
//! The reader is `ferry-import-graph`'s, shared with ferry-init's test
//! (`init/src/import_cycles.rs`).

use std::fs;
use std::path::Path;

use ferry_import_graph::{cycles_found, graphs, Root};

fn graphs_here() -> [ferry_import_graph::Graph; 2] {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    graphs(&src, |f| f.starts_with(src.join("bin")), Root::AsCrate)
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let [by_file, by_top] = graphs_here();
    // the reader finds what it must: a few known edges
    for (from, to) in [("crate", "runner"), ("runner", "nfs"), ("api", "agent")] {
        assert!(
            by_file.get(from).is_some_and(|t| t.contains(to)),
            "{from} -> {to} not found: {by_file:?}"
        );
    }
    let found = cycles_found(&by_file, &by_top);
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
    // and in the direction chosen: the hub's crates are built on the
    // daemon, which depends on none of them
    let manifest = |dir: &str| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap()
    };
    for built_on in ["hub", "uplink"] {
        assert!(
            manifest(built_on).contains("\nferry-daemon"),
            "{built_on}/Cargo.toml does not name ferry-daemon"
        );
    }
    let own = manifest("daemon");
    for hub in ["ferry-hub", "ferry-uplink", "ferry-wire", "ferry\""] {
        assert!(
            !own.contains(hub),
            "the daemon depends on {hub} (the hub is built on the daemon; give the daemon a trait the binary injects)"
        );
    }
}
