// SPDX-License-Identifier: GPL-2.0-only
//! The firewall: a small controller in the manner of Talos. The desired
//! rule set is a pure function of the appliance's state ([`rules`]); when
//! the state changes its rules are lowered to nf_tables expressions
//! ([`lower`]), encoded in one batch that replaces our table atomically
//! ([`codec`]) and sent over nfnetlink ([`kernel`]), then read back from the
//! kernel, decoded and compared. No `nft` binary is needed.

pub mod codec;
pub mod kernel;
pub mod lower;
pub mod rules;

use std::path::Path;

pub use rules::{FirewallState, Role, SupportAccess};

/// Activation does not exist yet: the appliance counts as activated once
/// this file exists (the hub's activation replaces it).
pub const ACTIVATED_MARKER: &str = ferry_model::paths::ACTIVATED_MARKER;

pub fn activated() -> bool {
    Path::new(ACTIVATED_MARKER).exists()
}

/// A failed load is tried again after this long (not at every turn).
const RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Keeps the state last loaded, so an unchanged state costs nothing.
#[derive(Default)]
pub struct Firewall {
    applied: Option<FirewallState>,
    failed: Option<(FirewallState, std::time::Instant)>,
}

impl Firewall {
    /// Loads the rule set for `st` unless it is already in force. Errors
    /// are logged; the previous rule set (or none) then stays in force.
    pub fn apply(&mut self, st: FirewallState) {
        if self.applied == Some(st) {
            return;
        }
        if let Some((f, at)) = self.failed {
            if f == st && at.elapsed() < RETRY {
                return;
            }
        }
        let rs = rules::ruleset(&st);
        let count: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
        let result = kernel::Nft::open().and_then(|mut n| {
            n.apply(&rs)?;
            n.read_back(rs.table)
        });
        match result {
            Ok(got) => {
                self.applied = Some(st);
                log::info!(
                    "firewall: rule set loaded ({count} rules; activated: {}, role: {:?}, support: {})",
                    st.activated,
                    st.role,
                    match st.support {
                        None => "closed".to_string(),
                        Some(SupportAccess::Inbound { allow_from: None }) => "port 22 open".into(),
                        Some(SupportAccess::Inbound {
                            allow_from: Some((a, l)),
                        }) => format!("port 22 open to {a}/{l}"),
                        Some(SupportAccess::Outbound { port }) => format!("SSH out to port {port}"),
                    }
                );
                let diff = codec::differences(&codec::expected(&rs), &got);
                if diff.is_empty() {
                    log::info!("firewall: read back from the kernel: matches");
                } else {
                    log::error!(
                        "firewall: read back from the kernel: MISMATCH ({} differences): {}",
                        diff.len(),
                        diff.join("; ")
                    );
                }
                log::debug!("firewall:\n{rs}");
            }
            Err(e) => {
                self.failed = Some((st, std::time::Instant::now()));
                log::error!(
                    "firewall: loading the rule set failed: {e}; the previous one stays in force"
                )
            }
        }
    }
}
