// SPDX-License-Identifier: GPL-2.0-only
//! The `support:` section: the support engineer's key, how long the
//! channel opens for, and where from (inbound) or to (outbound).

use serde::{Deserialize, Serialize};

use super::network::parse_cidr;
use crate::hostkey::HostKeyPin;

/// ```yaml
/// support:
///   public_key: "ssh-ed25519 AAAA... engineer@example"  # the engineer's key
///   open_hours: 4            # or open_minutes: 30; opened when applied
///   allow_from: 198.51.100.0/24                  # inbound 22 from here only
///   outbound:                # instead of allow_from: the appliance connects out
///     host: support.example.org
///     host_key: "ssh-ed25519 AAAA..."   # or SHA256:... (ssh-keygen -lf)
///     port: 22
///     user: ferry
///     tunnel_port: 2222
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SupportSection {
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub open_hours: Option<u32>,
    #[serde(default)]
    pub open_minutes: Option<u32>,
    #[serde(default)]
    pub allow_from: Option<String>,
    #[serde(default)]
    pub outbound: Option<SupportOutbound>,
}

/// The reverse-tunnel mode: the appliance connects to `user@host:port` and
/// asks the support host to forward its `tunnel_port` (on its loopback) to
/// the appliance's restricted console.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupportOutbound {
    pub host: String,
    /// The support host's public key line, or its SHA-256 fingerprint
    /// (`SHA256:...`, as `ssh-keygen -lf` prints it): the tunnel goes to
    /// that host only. Required (an `Option` so that its absence gets a
    /// message naming it).
    #[serde(default)]
    pub host_key: Option<String>,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    #[serde(default = "default_support_user")]
    pub user: String,
    #[serde(default = "default_tunnel_port")]
    pub tunnel_port: u16,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_support_user() -> String {
    "ferry".into()
}
fn default_tunnel_port() -> u16 {
    2222
}

/// Longest time the support channel stays open: a week.
pub const SUPPORT_MAX_MINUTES: u32 = 7 * 24 * 60;

impl SupportSection {
    /// How long the channel opens for when the document is applied.
    pub fn open_for(&self) -> Option<std::time::Duration> {
        let minutes = self.open_minutes.or(self.open_hours.map(|h| h * 60))?;
        Some(std::time::Duration::from_secs(u64::from(minutes) * 60))
    }
}

/// The outbound mode's pin of the support host's key: required, a public
/// key line or a SHA-256 fingerprint.
pub fn check_host_key(k: Option<&str>) -> Result<HostKeyPin, String> {
    let k = k.ok_or(
        "the outbound mode needs the support host's key: its public key line (the host's /etc/ssh/ssh_host_ed25519_key.pub) or its SHA-256 fingerprint (ssh-keygen -lf)",
    )?;
    HostKeyPin::parse(k)
}

/// Checks the `support:` section; `Err((key, why))`.
pub fn check(s: &SupportSection) -> Result<(), (String, String)> {
    if let Some(k) = &s.public_key {
        crate::validate::check_public_key(k)
            .map_err(|why| ("support.public_key".to_string(), why))?;
    }
    if s.open_hours.is_some() && s.open_minutes.is_some() {
        return Err((
            "support.open_minutes".into(),
            "give open_hours or open_minutes, not both".into(),
        ));
    }
    for (key, v, unit) in [
        (
            "support.open_hours",
            s.open_hours.map(|h| h.saturating_mul(60)),
            60,
        ),
        ("support.open_minutes", s.open_minutes, 1),
    ] {
        if let Some(m) = v {
            if m == 0 || m > SUPPORT_MAX_MINUTES {
                return Err((
                    key.into(),
                    format!("give 1 to {} (at most a week)", SUPPORT_MAX_MINUTES / unit),
                ));
            }
            if s.public_key.is_none() {
                return Err((
                    key.into(),
                    "opening the channel needs support.public_key".into(),
                ));
            }
        }
    }
    if let Some(a) = &s.allow_from {
        if parse_cidr(a).is_none() {
            return Err((
                "support.allow_from".into(),
                format!("{a:?} is not an IPv4 network (a.b.c.d/n)"),
            ));
        }
        if s.outbound.is_some() {
            return Err((
                "support.allow_from".into(),
                "allow_from is for inbound connections; the outbound mode opens no port".into(),
            ));
        }
    }
    if let Some(o) = &s.outbound {
        // dbclient reads `user@host/port,user@host2...`
        if o.host.is_empty()
            || o.host.starts_with('-')
            || o.host
                .contains(|c: char| c.is_whitespace() || c == '@' || c == '/' || c == ',')
        {
            return Err((
                "support.outbound.host".into(),
                format!("{:?} is not a host name or address", o.host),
            ));
        }
        check_host_key(o.host_key.as_deref())
            .map_err(|why| ("support.outbound.host_key".to_string(), why))?;
        if o.port == 0 {
            return Err((
                "support.outbound.port".into(),
                "give a port from 1 to 65535".into(),
            ));
        }
        if o.tunnel_port == 0 {
            return Err((
                "support.outbound.tunnel_port".into(),
                "give a port from 1 to 65535".into(),
            ));
        }
        if o.user.is_empty()
            || !o
                .user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err((
                "support.outbound.user".into(),
                format!("{:?} is not a user name", o.user),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{fixture, parse};

    #[test]
    fn support_section_parses_and_validates() {
        let d = parse(&fixture("v1-support.yaml"), "t").unwrap();
        let s = d.support.unwrap();
        assert!(s.public_key.unwrap().starts_with("ssh-ed25519 AAAA"));
        assert_eq!(s.open_hours, Some(4));
        assert_eq!(s.allow_from.as_deref(), Some("198.51.100.0/24"));
        let d = parse(&fixture("v1-support-outbound.yaml"), "t").unwrap();
        let s = d.support.unwrap();
        assert_eq!(s.open_for(), Some(std::time::Duration::from_secs(30 * 60)));
        assert_eq!(
            s.outbound.unwrap(),
            SupportOutbound {
                host: "support.example.org".into(),
                host_key: Some("SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII".into()),
                port: 22,
                user: "ferry".into(),
                tunnel_port: 2222
            }
        );
        // closed by default
        assert_eq!(parse("version: 1\n", "t").unwrap().support, None);
    }

    #[test]
    fn support_errors_name_key_and_line() {
        let e = parse(&fixture("v1-support-bad-key.yaml"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("support.public_key")
                && e.contains("not a ssh-ed25519 key")
                && e.contains("line 4"),
            "{e}"
        );
        let key = fixture("v1-support.yaml")
            .lines()
            .find(|l| l.contains("public_key"))
            .unwrap()
            .to_string();
        let doc = |rest: &str| format!("version: 1\nsupport:\n{key}\n{rest}");
        let cases = [
            ("  open_hours: 0\n", "support.open_hours: give 1 to 168", 4),
            (
                "  open_minutes: 20000\n",
                "support.open_minutes: give 1 to 10080",
                4,
            ),
            ("  open_hours: 1\n  open_minutes: 5\n", "not both", 5),
            (
                "  allow_from: 198.51.100.0\n",
                "support.allow_from: \"198.51.100.0\" is not an IPv4 network",
                4,
            ),
            (
                "  outbound: { host: \"a b\", host_key: \"SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII\" }\n",
                "support.outbound.host",
                4,
            ),
            (
                "  outbound: { host: \"h,evil\", host_key: \"SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII\" }\n",
                "support.outbound.host",
                4,
            ),
            (
                "  outbound: { host: h, host_key: \"SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII\", user: \"x y\" }\n",
                "support.outbound.user",
                4,
            ),
            // the support host's key: required, and a key or a SHA-256 fingerprint
            (
                "  outbound: { host: h }\n",
                "support.outbound.host_key: the outbound mode needs the support host's key",
                4,
            ),
            (
                "  outbound:\n    host: h\n    host_key: \"MD5:21:0e:43:d3:10:1e:3b:cd:e8:5b:aa:89:cd:68:2d:10\"\n",
                "support.outbound.host_key: an MD5 fingerprint is too weak",
                6,
            ),
            (
                "  outbound:\n    host: h\n    host_key: \"ssh-ed25519 AAAA\"\n",
                "support.outbound.host_key: give the support host's public key or its SHA-256 fingerprint",
                6,
            ),
            (
                "  outbound: { host: h, prot: 22 }\n",
                "unknown field `prot`",
                4,
            ),
            ("  opne_hours: 1\n", "unknown field `opne_hours`", 4),
        ];
        for (rest, want, line) in cases {
            let e = parse(&doc(rest), "f").unwrap_err().to_string();
            assert!(e.contains(want), "{rest:?}: {e}");
            assert!(e.contains(&format!("line {line}")), "{rest:?}: {e}");
        }
        let e = parse("version: 1\nsupport:\n  open_hours: 2\n", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs support.public_key") && e.contains("line 3"),
            "{e}"
        );
        let e = parse(
            "version: 1\nsupport:\n  public_key: \"ssh-dss AAAA\"\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a key type"), "{e}");
    }
}
