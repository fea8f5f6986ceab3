// SPDX-License-Identifier: GPL-2.0-only
//! Hardening sysctls, applied early in the system stage.

use crate::sys::Sys;

/// Key, value. Keys the kernel lacks are reported and skipped.
pub const HARDENING: &[(&str, &str)] = &[
    ("kernel.kptr_restrict", "2"),
    ("kernel.dmesg_restrict", "1"),
    ("kernel.unprivileged_bpf_disabled", "1"),
    ("net.core.bpf_jit_harden", "2"),
    ("kernel.yama.ptrace_scope", "2"),
    ("kernel.kexec_load_disabled", "1"),
    ("kernel.perf_event_paranoid", "3"),
    ("kernel.sysrq", "0"),
    ("kernel.unprivileged_userns_clone", "0"),
    ("fs.protected_hardlinks", "1"),
    ("fs.protected_symlinks", "1"),
    ("fs.protected_fifos", "2"),
    ("fs.protected_regular", "2"),
    ("fs.suid_dumpable", "0"),
    ("net.ipv4.ip_forward", "0"),
    ("net.ipv6.conf.all.forwarding", "0"),
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.conf.default.rp_filter", "1"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.all.accept_source_route", "0"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
];

/// `/proc/sys/...` path of a dotted key.
pub fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Applies the table; returns the keys that could not be set.
pub fn apply(sys: &dyn Sys, table: &[(&str, &str)]) -> Vec<String> {
    let mut failed = Vec::new();
    for (k, v) in table {
        if let Err(e) = sys.set(&path(k), v) {
            log::warn!("sysctl {k}={v}: {e}");
            failed.push(k.to_string());
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    #[test]
    fn writes_each_key_and_keeps_going() {
        let mut r = Recorder::new();
        r.fail = Some("set /proc/sys/kernel/dmesg_restrict".into());
        let failed = apply(&r, &HARDENING[..3]);
        assert_eq!(failed, vec!["kernel.dmesg_restrict".to_string()]);
        assert_eq!(
            r.transcript(),
            vec![
                "set /proc/sys/kernel/kptr_restrict 2",
                "set /proc/sys/kernel/dmesg_restrict 1",
                "set /proc/sys/kernel/unprivileged_bpf_disabled 1",
            ]
        );
        assert_eq!(
            path("net.ipv4.conf.all.rp_filter"),
            "/proc/sys/net/ipv4/conf/all/rp_filter"
        );
    }

    #[test]
    fn forwarding_is_off_and_rp_filter_on() {
        let get = |k: &str| HARDENING.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert_eq!(get("net.ipv4.ip_forward"), Some("0"));
        assert_eq!(get("net.ipv4.conf.all.rp_filter"), Some("1"));
        assert_eq!(get("kernel.unprivileged_bpf_disabled"), Some("1"));
    }
}
