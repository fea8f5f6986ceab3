// SPDX-License-Identifier: GPL-2.0-only
//! No import cycles between ferry-init's modules (issue #15): for each
//! source file under `src/`, the modules it names (`crate::…`, `super::…`,
//! `self::…`, a child module by its name) make a graph, which must have no
//! cycle, at two levels: between the top-level modules (`config`,
//! `console`, `support`…), where a file of one using a file of the other
//! counts, tests included; and between the files, tests left out (the unit
//! tests of a section of the configuration document go through
//! `config::parse`, which uses that section).
//!
//! A module that two others need goes where both can reach it (a constant
//! shared by `etc` and `support`, a validator shared by `config` and
//! `console`) instead of one of them importing the other back.

use std::path::Path;

use ferry_import_graph::{cycles_found, graphs, Root};

fn graphs_here() -> [ferry_import_graph::Graph; 2] {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    graphs(
        &src,
        |f| f.file_name().is_some_and(|n| n == "main.rs"),
        Root::LeftOut,
    )
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let [by_file, by_top] = graphs_here();
    // the reader finds what it must: a few known edges
    for (from, to) in [
        ("system", "support"),
        ("console::menu", "console::input"),
        ("firewall", "firewall::rules"),
    ] {
        assert!(
            by_file.get(from).is_some_and(|t| t.contains(to)),
            "{from} -> {to} not found: {by_file:?}"
        );
    }
    let found = cycles_found(&by_file, &by_top);
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}
