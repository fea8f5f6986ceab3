//! Validation of what an operator types, where it is typed: each parser
//! returns the value or a message that says what is wrong with it.

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

/// A comma- or space-separated list of IPv4 addresses (at most three, as
/// resolv.conf reads).
pub fn address_list(text: &str) -> Result<Vec<Ipv4Addr>, String> {
    let list = text
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(address)
        .collect::<Result<Vec<_>, _>>()?;
    if list.len() > 3 {
        return Err(format!(
            "{} name servers given; the resolver uses at most 3",
            list.len()
        ));
    }
    Ok(list)
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

/// A host name or an address.
pub fn host(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.parse::<Ipv4Addr>().is_ok() {
        return Ok(t.to_string());
    }
    dns_name(t)
}

/// `host:port`.
pub fn endpoint(text: &str) -> Result<(String, u16), String> {
    let t = text.trim();
    let (h, p) = t
        .rsplit_once(':')
        .ok_or_else(|| format!("{t:?} has no port: write it as host:port"))?;
    let port: u16 = p
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("the port {p:?} is not a number from 1 to 65535"))?;
    Ok((host(h)?, port))
}

/// An NFS export path.
pub fn export(text: &str) -> Result<String, String> {
    let t = text.trim();
    if !t.starts_with('/') || t.contains(['\0', ',', ' ']) {
        return Err(format!(
            "{t:?} is not an export path (absolute, e.g. /exports/data)"
        ));
    }
    Ok(t.to_string())
}

/// An NFS version as the console offers them.
pub fn nfs_version(text: &str) -> Result<&'static str, String> {
    match text.trim() {
        "3" => Ok("3"),
        "4.0" | "4" => Ok("4.0"),
        "4.1" | "" => Ok("4.1"),
        other => Err(format!("NFS version {other:?} is not one of 3, 4.0, 4.1")),
    }
}

/// A new password: long enough and not the default.
/// A name typed at the login prompt: `None` for an empty line (then the
/// prompt comes again, as login(1) does: no password is asked for nothing).
pub fn user_name(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

pub fn new_password(text: &str) -> Result<(), String> {
    if text.chars().count() < 8 {
        return Err("the password must have at least 8 characters".into());
    }
    if text == super::auth::DEFAULT_PASSWORD {
        return Err("the new password must not be the default one".into());
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
    fn lists_names_endpoints() {
        assert_eq!(address_list("10.0.0.1, 10.0.0.2").unwrap().len(), 2);
        assert!(address_list("1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4")
            .unwrap_err()
            .contains("at most 3"));
        assert_eq!(dns_name("Corp.Example.COM."), Ok("corp.example.com".into()));
        assert!(dns_name("bad_name").is_err());
        assert!(dns_name("-a.example").is_err());
        assert_eq!(
            endpoint("nas.example:2049"),
            Ok(("nas.example".into(), 2049))
        );
        assert!(endpoint("nas.example").unwrap_err().contains("no port"));
        assert!(endpoint("nas:0").unwrap_err().contains("1 to 65535"));
        assert!(export("exports").is_err());
        assert_eq!(nfs_version(""), Ok("4.1"));
        assert!(nfs_version("4.2").is_err());
        assert!(new_password("short").is_err());
        assert!(new_password("password").is_err());
        assert!(new_password("correct horse").is_ok());
    }
}
