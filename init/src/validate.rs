// SPDX-License-Identifier: GPL-2.0-only
//! Checks of values that come both from the configuration document and
//! from the console (and the support channel's API): what one refuses,
//! the other cannot bring in. Each returns the value or a message that says
//! what is wrong with it.

use std::net::Ipv4Addr;

/// An IPv4 address ("192.0.2.10").
pub fn address(text: &str) -> Result<Ipv4Addr, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("{t:?} is not an IPv4 address (four numbers 0-255 separated by dots)"))
}

/// An address with its prefix length ("192.0.2.10/24").
pub fn address_prefix(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let t = text.trim();
    let (a, p) = t
        .split_once('/')
        .ok_or_else(|| format!("{t:?} has no prefix length: write it as 192.0.2.10/24"))?;
    let ip = address(a)?;
    let prefix: u8 = p
        .parse()
        .map_err(|_| format!("the prefix length {p:?} is not a number"))?;
    if !(1..=32).contains(&prefix) {
        return Err(format!(
            "the prefix length {prefix} is not between 1 and 32"
        ));
    }
    let host = if prefix == 32 { 0 } else { u32::MAX >> prefix };
    let bits = u32::from(ip);
    if prefix < 31 && (bits & host == 0 || bits & host == host) {
        return Err(format!(
            "{ip} is the network or broadcast address of {}/{prefix}, not a host address",
            Ipv4Addr::from(bits & !host)
        ));
    }
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || ip.is_broadcast() {
        return Err(format!("{ip} cannot be the address of an adapter"));
    }
    Ok((ip, prefix))
}

/// A gateway, which must be a host in the adapter's subnet.
pub fn gateway(text: &str, (ip, prefix): (Ipv4Addr, u8)) -> Result<Ipv4Addr, String> {
    let gw = address(text)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    if u32::from(gw) & mask != u32::from(ip) & mask {
        return Err(format!(
            "the gateway {gw} is outside the subnet {}/{prefix}",
            Ipv4Addr::from(u32::from(ip) & mask)
        ));
    }
    if gw == ip {
        return Err(format!("the gateway {gw} is the adapter's own address"));
    }
    Ok(gw)
}

/// A DNS name (a host or a search domain).
pub fn dns_name(text: &str) -> Result<String, String> {
    let t = text.trim().trim_end_matches('.');
    let ok = !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(format!(
            "{t:?} is not a DNS name (letters, digits and hyphens, separated by dots)"
        ))
    }
}

/// OpenSSH public key types dropbear accepts.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks an OpenSSH public key line (`type base64 [comment]`): a known
/// type, and a key blob that starts with that same type.
pub fn check_public_key(line: &str) -> Result<(), String> {
    use base64::Engine;
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("give an OpenSSH public key line: TYPE BASE64 [COMMENT]".into());
    };
    if line.contains(['\n', '\r', '"']) {
        return Err("a public key is one line without quotes".into());
    }
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "{kind:?} is not a key type dropbear accepts ({})",
            KEY_TYPES.join(", ")
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("the key is not base64: {e}"))?;
    let n = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
    if n.and_then(|n| bytes.get(4..4 + n)) != Some(kind.as_bytes()) {
        return Err(format!("the key data is not a {kind} key"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_prefixes() {
        assert_eq!(
            address_prefix("192.0.2.10/24"),
            Ok((Ipv4Addr::new(192, 0, 2, 10), 24))
        );
        assert!(address("192.0.2.300")
            .unwrap_err()
            .contains("not an IPv4 address"));
        assert!(address_prefix("192.0.2.10")
            .unwrap_err()
            .contains("no prefix length"));
        assert!(address_prefix("192.0.2.10/33")
            .unwrap_err()
            .contains("not between 1 and 32"));
        assert!(address_prefix("192.0.2.10/x")
            .unwrap_err()
            .contains("not a number"));
        assert!(address_prefix("192.0.2.0/24")
            .unwrap_err()
            .contains("network or broadcast"));
        assert!(address_prefix("192.0.2.255/24")
            .unwrap_err()
            .contains("network or broadcast"));
        assert!(address_prefix("127.0.0.2/8")
            .unwrap_err()
            .contains("cannot be the address"));
        assert!(address_prefix("10.1.2.3/32").is_ok());
    }

    #[test]
    fn gateway_must_be_in_the_subnet() {
        let net = (Ipv4Addr::new(192, 0, 2, 10), 24);
        assert_eq!(gateway("192.0.2.1", net), Ok(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(
            gateway("198.51.100.1", net).unwrap_err(),
            "the gateway 198.51.100.1 is outside the subnet 192.0.2.0/24"
        );
        assert!(gateway("192.0.2.10", net)
            .unwrap_err()
            .contains("own address"));
    }

    #[test]
    fn public_keys() {
        assert!(check_public_key("ssh-ed25519").is_err());
    }

    #[test]
    fn dns_names() {
        assert_eq!(dns_name("Corp.Example.COM."), Ok("corp.example.com".into()));
        assert!(dns_name("bad_name").is_err());
        assert!(dns_name("-a.example").is_err());
    }
}
