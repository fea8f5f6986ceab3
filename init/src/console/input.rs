// SPDX-License-Identifier: GPL-2.0-only
//! Validation of what an operator types, where it is typed: each parser
//! returns the value or a message that says what is wrong with it. The
//! checks the configuration document makes too (an address, a gateway, a
//! DNS name) are [`crate::validate`]'s.

use std::net::Ipv4Addr;

use crate::validate::{address, dns_name};

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
    fn lists_names_endpoints() {
        assert_eq!(address_list("10.0.0.1, 10.0.0.2").unwrap().len(), 2);
        assert!(address_list("1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4")
            .unwrap_err()
            .contains("at most 3"));
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
