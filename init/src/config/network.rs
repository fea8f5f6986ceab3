// SPDX-License-Identifier: GPL-2.0-only
//! The `network:` section: the default adapter (DHCP or a static address,
//! its gateway, DNS) and further adapters (addresses only).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Dhcp,
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Search domains for /etc/resolv.conf.
    #[serde(default)]
    pub search: Vec<String>,
    /// Further adapters, by name: addresses only (the default adapter above
    /// carries the default route and DNS).
    #[serde(default)]
    pub adapters: BTreeMap<String, Adapter>,
}

/// An adapter besides the default one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Adapter {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub address: Option<String>,
}

fn valid_interface(i: &str) -> bool {
    !(i.is_empty() || i.len() > 15 || i.contains('/') || i.contains(char::is_whitespace))
}

/// Parses an IPv4 address with its prefix length, `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (1..=32).contains(&len).then_some(())?;
    Some((ip.parse().ok()?, len))
}

/// Checks the `network:` section; `Err((key, why))`.
pub fn check(n: &Network) -> Result<(), (String, String)> {
    let invalid = |key: &str, why: String| (key.to_string(), why);
    match n.mode {
        Mode::Static => {
            let Some(addr) = &n.address else {
                return Err(invalid(
                    "network.mode",
                    "static needs network.address".into(),
                ));
            };
            // the console's checks: what it refuses, a document cannot bring in
            let net = crate::validate::address_prefix(addr)
                .map_err(|why| invalid("network.address", why))?;
            if let Some(g) = n.gateway {
                crate::validate::gateway(&g.to_string(), net)
                    .map_err(|why| invalid("network.gateway", why))?;
            }
        }
        Mode::Dhcp => {
            if n.address.is_some() || n.gateway.is_some() {
                return Err(invalid(
                    "network.mode",
                    "address and gateway are only for mode: static".into(),
                ));
            }
        }
    }
    if let Some(i) = &n.interface {
        if !valid_interface(i) {
            return Err(invalid(
                "network.interface",
                format!("{i:?} is not an interface name"),
            ));
        }
    }
    for (name, a) in &n.adapters {
        let key = format!("network.adapters.{name}");
        if !valid_interface(name) {
            return Err(invalid(&key, format!("{name:?} is not an interface name")));
        }
        if n.interface.as_deref() == Some(name.as_str()) {
            return Err(invalid(
                &key,
                format!("{name} is the default adapter (network.interface); configure it there"),
            ));
        }
        match (a.mode, &a.address) {
            (Mode::Static, None) => {
                return Err(invalid(&key, "static needs an address".into()));
            }
            (Mode::Static, Some(addr)) => {
                crate::validate::address_prefix(addr)
                    .map_err(|why| invalid(&format!("{key}.address"), why))?;
            }
            (Mode::Dhcp, Some(_)) => {
                return Err(invalid(&key, "an address is only for mode: static".into()));
            }
            (Mode::Dhcp, None) => {}
        }
    }
    for d in &n.search {
        crate::validate::dns_name(d).map_err(|why| invalid("network.search", why))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn further_adapters_get_addresses_only_and_are_checked() {
        let d = parse(
            "version: 1\nnetwork:\n  interface: eth0\n  adapters:\n    eth1: { mode: static, address: 198.51.100.5/24 }\n    eth2: { mode: dhcp }\n",
            "f",
        )
        .unwrap();
        assert_eq!(d.network.adapters.len(), 2);
        assert_eq!(d.network.adapters["eth1"].mode, Mode::Static);
        let bad = |text: &str| parse(text, "f").unwrap_err().to_string();
        let e =
            bad("version: 1\nnetwork:\n  interface: eth0\n  adapters:\n    eth0: { mode: dhcp }\n");
        assert!(
            e.contains("network.adapters.eth0") && e.contains("the default adapter"),
            "{e}"
        );
        let e = bad("version: 1\nnetwork:\n  adapters:\n    eth1: { mode: static }\n");
        assert!(e.contains("static needs an address"), "{e}");
        let e = bad("version: 1\nnetwork:\n  adapters:\n    eth1: { mode: static, address: 198.51.100.5/33 }\n");
        assert!(
            e.contains("network.adapters.eth1.address") && e.contains("between 1 and 32"),
            "{e}"
        );
        let e =
            bad("version: 1\nnetwork:\n  adapters:\n    eth1: { mode: dhcp, gateway: 10.0.0.1 }\n");
        assert!(e.contains("unknown field `gateway`"), "{e}");
        let e = bad(
            "version: 1\nnetwork:\n  mode: static\n  address: 10.0.0.5/24\n  gateway: 10.1.0.1\n",
        );
        assert!(
            e.contains("network.gateway") && e.contains("outside the subnet"),
            "{e}"
        );
    }
}
