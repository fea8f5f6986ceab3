// SPDX-License-Identifier: GPL-2.0-only
//! The `daemon:` section: ferry-agent's ports and paths. Its type, its
//! defaults and its checks are ferry-model's
//! (`ferry_model::config::daemon`), as ferry-agent reads and checks it. The
//! tests here go through ferry-init's parse (errors name key and line).

pub use ferry_model::config::daemon::*;

#[cfg(test)]
mod tests {
    use crate::config::document::DocRole;
    use crate::config::parse;

    #[test]
    fn role_and_daemon_are_ferry_agents() {
        let d = parse(
            "version: 2\nrole: hub\ndaemon:\n  https_listen: 0.0.0.0:8443\n",
            "t",
        )
        .unwrap();
        assert_eq!(d.role, DocRole::Hub);
        assert_eq!(d.daemon.https_listen.port(), 8443);
        assert_eq!(parse("version: 2\n", "t").unwrap().role, DocRole::Agent);
        assert!(parse("version: 2\nrole: gateway\n", "t").is_err());
    }

    #[test]
    fn the_daemon_section_is_checked_as_the_agent_checks_it() {
        let bad = |daemon: &str| {
            parse(&format!("version: 2\ndaemon:\n{daemon}"), "f")
                .unwrap_err()
                .to_string()
        };
        let e = bad("  activation_lisen: 127.0.0.1:8080\n");
        assert!(e.contains("unknown field `activation_lisen`"), "{e}");
        let e = bad("  activation_key_seconds: 18446744073709551615\n");
        assert!(
            e.contains("daemon.activation_key_seconds")
                && e.contains("out of range")
                && e.contains("line 3"),
            "{e}"
        );
        assert!(bad("  poll_seconds: 0\n").contains("daemon.poll_seconds"));
        assert!(bad("  history_days: 0\n").contains("daemon.history_days"));
        assert!(bad("  data_dir: data\n").contains("daemon.data_dir"));
        assert!(bad("  https_listen: 0.0.0.0:0\n").contains("daemon.https_listen"));
        assert!(bad("  operator_token: short\n").contains("daemon.operator_token"));
        assert!(bad("  hub_names: [\"a b\"]\n").contains("daemon.hub_names"));
        let d = parse(
            "version: 2\ndaemon:\n  https_listen: 0.0.0.0:8443\n  activation_key_seconds: 2\n",
            "t",
        )
        .unwrap();
        assert_eq!(d.daemon.activation_key_seconds, 2);
        // a misspelt top-level key: refused, not left to the defaults
        let e = parse("version: 2\ndeamon:\n  https_listen: 0.0.0.0:8443\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `deamon`"), "{e}");
    }
}
