// SPDX-License-Identifier: MIT
//! Activation, the hub's only unauthenticated input: the certificate
//! request an agent registers (`POST /activation/v1/register`, checked as
//! `State::register` does, then signed as when an operator confirms the
//! key: `Ca::sign_agent`), and, on the agent's side, the certificates the
//! hub answers with (`ca::cert_from_pem`).
//!
//! Input: PEM text (the request's `Csr`, or a certificate).
#![no_main]

use std::sync::OnceLock;

use ferry_wire::ca::{self, Ca};
use libfuzzer_sys::fuzz_target;

fn hub_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-ca-{}", std::process::id()));
        let ca = Ca::load_or_create(&dir, &["hub.example".into()]).expect("a CA");
        let _ = std::fs::remove_dir_all(&dir);
        ca
    })
}

fuzz_target!(|pem: &str| {
    if rcgen::CertificateSigningRequestParams::from_pem(pem).is_ok() {
        let _ = hub_ca().sign_agent(pem, "agent-0123456789abcdef");
    }
    let _ = ca::cert_from_pem(pem, "the hub's answer");
});
