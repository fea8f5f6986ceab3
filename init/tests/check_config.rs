// SPDX-License-Identifier: GPL-2.0-only
//! `ferry-init check-config FILE`: the validator operators run, on the
//! configuration fixtures.

use std::path::Path;
use std::process::Command;

fn check(name: &str) -> (bool, String) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data/config")
        .join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-init"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn good_documents_pass() {
    for f in ["v1-static.yaml", "v1-dhcp.yaml"] {
        let (ok, text) = check(f);
        assert!(ok, "{f}: {text}");
        assert!(text.trim_end().ends_with(": ok"), "{text}");
    }
}

#[test]
fn a_bad_document_is_refused_naming_key_and_line() {
    let (ok, text) = check("v1-unknown-key.yaml");
    assert!(!ok);
    assert!(text.contains("unknown field `adress`"), "{text}");
    assert!(text.contains("line 5"), "{text}");
}

#[test]
fn not_pid_1_without_a_command_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-init"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
