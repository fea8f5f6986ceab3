//! The `daemon:` section: ferry-agent's ports and paths, checked here as
//! ferry-agent checks them.

use std::path::PathBuf;

use serde::Deserialize;

/// `daemon:`, as ferry-agent reads it; every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub history_days: Option<u32>,
    #[serde(default)]
    pub cloudwatch_emf: Option<bool>,
    #[serde(default)]
    pub console: Option<PathBuf>,
    #[serde(default)]
    pub activation_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub activated_marker: Option<PathBuf>,
    #[serde(default)]
    pub poll_seconds: Option<u64>,
    #[serde(default)]
    pub https_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub hub_names: Option<Vec<String>>,
    #[serde(default)]
    pub operator_token_file: Option<PathBuf>,
    #[serde(default)]
    pub operator_token: Option<String>,
    #[serde(default)]
    pub activation_key_seconds: Option<u64>,
}

/// The agent's bounds (agent/src/daemon/config.rs): each number becomes a
/// duration there.
const HISTORY_DAYS: (u64, u64) = (1, 36_500);
const POLL_SECONDS: (u64, u64) = (1, 3_600);
const ACTIVATION_KEY_SECONDS: (u64, u64) = (1, 30 * 86_400);
const MIN_TOKEN_LEN: usize = 16;

/// Checks the `daemon:` section; `Err((key, why))`.
pub fn check(d: &DaemonSection) -> Result<(), (String, String)> {
    let key = |k: &str| format!("daemon.{k}");
    for (k, p) in [
        ("data_dir", &d.data_dir),
        ("socket", &d.socket),
        ("console", &d.console),
        ("activated_marker", &d.activated_marker),
        ("operator_token_file", &d.operator_token_file),
    ] {
        if let Some(p) = p {
            if !p.is_absolute() {
                return Err((
                    key(k),
                    format!("{:?} is not an absolute path", p.display().to_string()),
                ));
            }
        }
    }
    for (k, v, (lo, hi), unit) in [
        (
            "history_days",
            d.history_days.map(u64::from),
            HISTORY_DAYS,
            "days",
        ),
        ("poll_seconds", d.poll_seconds, POLL_SECONDS, "seconds"),
        (
            "activation_key_seconds",
            d.activation_key_seconds,
            ACTIVATION_KEY_SECONDS,
            "seconds",
        ),
    ] {
        if let Some(v) = v {
            if !(lo..=hi).contains(&v) {
                return Err((
                    key(k),
                    format!("{v} is out of range: give {lo} to {hi} {unit}"),
                ));
            }
        }
    }
    for (k, a) in [
        ("activation_listen", d.activation_listen),
        ("https_listen", d.https_listen),
    ] {
        if a.is_some_and(|a| a.port() == 0) {
            return Err((key(k), "give a port from 1 to 65535".into()));
        }
    }
    for n in d.hub_names.iter().flatten() {
        let ok = !n.is_empty()
            && n.len() <= 253
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b));
        if !ok {
            return Err((
                key("hub_names"),
                format!("{n:?} is not a host name or address"),
            ));
        }
    }
    if let Some(t) = &d.operator_token {
        if t.chars().count() < MIN_TOKEN_LEN
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err((
                key("operator_token"),
                format!("give at least {MIN_TOKEN_LEN} characters without spaces"),
            ));
        }
    }
    Ok(())
}

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
        assert!(d.daemon.is_some());
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
        assert_eq!(d.daemon.unwrap().activation_key_seconds, Some(2));
        // a misspelt top-level key: refused, not left to the defaults
        let e = parse("version: 2\ndeamon:\n  https_listen: 0.0.0.0:8443\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `deamon`"), "{e}");
    }
}
