// SPDX-License-Identifier: GPL-2.0-only
//! The OVF environment (`ovf-env.xml`): the OVF properties filled in when
//! the OVA is deployed, which vSphere hands over on a CD-ROM (the OVF ISO
//! transport). It becomes a configuration document, offered at first boot
//! and again whenever the environment changes.
//!
//! Property keys are those of ferry-ovf's descriptor: `ferry.hostname`,
//! `ferry.ipv4.address` (`a.b.c.d/len`; empty: DHCP), `ferry.ipv4.gateway`,
//! `ferry.dns`, `ferry.ntp` (comma-separated), `ferry.support.public_key`.

use std::fs;
use std::io;
use std::path::Path;

use nix::mount::MsFlags;

use crate::sys::Sys;

/// Where the CD-ROM is mounted while the environment is read.
pub const MOUNT_POINT: &str = "/run/ferry/ovf-env";
/// The environment last applied (to apply a changed one only).
pub const LAST_APPLIED: &str = "/data/config/ovf-env.last.xml";
/// Names the file has on the ISO (Rock Ridge/Joliet keep the dash; plain
/// ISO 9660 turns it into an underscore).
const FILE_NAMES: &[&str] = &["ovf-env.xml", "ovf_env.xml", "OVF_ENV.XML"];

/// The `(key, value)` pairs of the environment's `Property` elements, in
/// order. Namespace prefixes are ignored.
pub fn properties(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        rest = &rest[end..];
        let name = tag.split_whitespace().next().unwrap_or("");
        if name.rsplit(':').next() != Some("Property") {
            continue;
        }
        if let (Some(k), Some(v)) = (attribute(tag, "key"), attribute(tag, "value")) {
            out.push((k, v));
        }
    }
    out
}

/// The value of attribute `name` (any prefix) in a tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let before = rest[..eq].trim_end();
        let attr = before
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("");
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let close = after[1..].find(quote)? + 1;
        if attr.rsplit(':').next() == Some(name) {
            return Some(unescape(&after[1..close]));
        }
        rest = &after[close + 1..];
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let Some(semi) = rest[amp..].find(';') else {
            break;
        };
        let entity = &rest[amp + 1..amp + semi];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..amp + semi + 1]),
        }
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    out
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(s: &str) -> String {
    let items: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(quoted)
        .collect();
    format!("[{}]", items.join(", "))
}

/// The configuration document (YAML, version 1) the properties describe.
/// Empty properties are left out; the document is validated by
/// [`crate::config::store::Store::offer`] like any other.
pub fn document(props: &[(String, String)]) -> String {
    let get = |key: &str| {
        props
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut doc = String::from("version: 1\n");
    if let Some(h) = get("ferry.hostname") {
        doc.push_str(&format!("hostname: {}\n", quoted(h)));
    }
    match get("ferry.ipv4.address") {
        Some(address) => {
            doc.push_str("network:\n  mode: static\n");
            doc.push_str(&format!("  address: {}\n", quoted(address)));
            if let Some(g) = get("ferry.ipv4.gateway") {
                doc.push_str(&format!("  gateway: {}\n", quoted(g)));
            }
            if let Some(d) = get("ferry.dns") {
                doc.push_str(&format!("  dns: {}\n", list(d)));
            }
        }
        None => doc.push_str("network:\n  mode: dhcp\n"),
    }
    if let Some(n) = get("ferry.ntp") {
        doc.push_str(&format!("time:\n  servers: {}\n", list(n)));
    }
    // the key only: the console opens the channel with it
    if let Some(k) = get("ferry.support.public_key") {
        doc.push_str(&format!("support:\n  public_key: {}\n", quoted(k)));
    }
    doc
}

/// Reads `ovf-env.xml` from the first CD-ROM drive that has one: mounts
/// each `sr*` device of `sys_block` read-only in turn. Returns the device
/// and the file's text.
pub fn read_from_cdrom(sys: &dyn Sys, sys_block: &Path) -> Option<(String, String)> {
    let mut drives: Vec<String> = fs::read_dir(sys_block)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sr"))
        .collect();
    drives.sort();
    for drive in drives {
        let dev = format!("/dev/{drive}");
        if let Err(e) = sys.mkdir(MOUNT_POINT, 0o700) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                log::warn!("ovf-env: mkdir {MOUNT_POINT}: {e}");
                return None;
            }
        }
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if let Err(e) = sys.mount(&dev, MOUNT_POINT, Some("iso9660"), flags, None) {
            // no medium, or not an ISO 9660 file system
            log::info!("ovf-env: {dev}: not mounted ({e})");
            continue;
        }
        let text = FILE_NAMES
            .iter()
            .find_map(|name| fs::read_to_string(Path::new(MOUNT_POINT).join(name)).ok());
        if let Err(e) = sys.umount(MOUNT_POINT) {
            log::warn!("ovf-env: umount {MOUNT_POINT}: {e}");
        }
        if let Some(text) = text {
            return Some((dev, text));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    /// As vSphere writes it (namespaces, platform section, escaped values).
    const ENV: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="vm-42">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>8.0.2</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
         <Property oe:key="ferry.dns" oe:value="192.0.2.53, 192.0.2.54"/>
         <Property oe:key="ferry.hostname" oe:value="ferry-01"/>
         <Property oe:key="ferry.ipv4.address" oe:value="192.0.2.10/24"/>
         <Property oe:key="ferry.ipv4.gateway" oe:value="192.0.2.1"/>
         <Property oe:key="ferry.ntp" oe:value="ntp.example.org"/>
         <Property oe:key="ferry.support.public_key" oe:value="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK2&#x2B;OyMq01UDrBpE73GjEzOgpUUMAboupQdmCzFOp1JL admin@example&amp;co"/>
   </PropertySection>
   <ve:EthernetAdapterSection>
      <ve:Adapter ve:mac="00:50:56:9a:00:01" ve:network="VM Network" ve:unitNumber="7"/>
   </ve:EthernetAdapterSection>
</Environment>"#;

    #[test]
    fn reads_the_properties_with_entities() {
        let p = properties(ENV);
        assert_eq!(p.len(), 6);
        assert_eq!(p[1], ("ferry.hostname".into(), "ferry-01".into()));
        assert_eq!(
            p[5].1,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK2+OyMq01UDrBpE73GjEzOgpUUMAboupQdmCzFOp1JL admin@example&co",
            "entities decoded"
        );
    }

    #[test]
    fn static_properties_make_a_valid_static_document() {
        let full = document(&properties(ENV));
        // the support section comes last
        let (_, support) = full.split_once("support:\n").unwrap();
        assert_eq!(
            support,
            "  public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK2+OyMq01UDrBpE73GjEzOgpUUMAboupQdmCzFOp1JL admin@example&co\"\n"
        );
        let doc = parse(&full, "ovf-env").unwrap_or_else(|e| panic!("{e}\n{full}"));
        assert_eq!(doc.hostname.as_deref(), Some("ferry-01"));
        assert_eq!(doc.network.mode, crate::config::network::Mode::Static);
        assert_eq!(doc.network.address.as_deref(), Some("192.0.2.10/24"));
        assert_eq!(doc.network.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            doc.network.dns,
            [
                "192.0.2.53".parse::<std::net::Ipv4Addr>().unwrap(),
                "192.0.2.54".parse().unwrap()
            ]
        );
        assert_eq!(doc.time.servers, ["ntp.example.org"]);
        // the key is configured; the channel stays closed until opened
        let support = doc.support.unwrap();
        assert!(support
            .public_key
            .as_deref()
            .unwrap()
            .ends_with("admin@example&co"));
        assert_eq!(support.open_for(), None);
    }

    #[test]
    fn empty_address_means_dhcp_and_empty_properties_are_left_out() {
        let env = r#"<Environment xmlns:oe="x"><PropertySection>
            <Property oe:key="ferry.hostname" oe:value=""/>
            <Property oe:key="ferry.ipv4.address" oe:value=""/>
            <Property oe:key="ferry.ipv4.gateway" oe:value="192.0.2.1"/>
        </PropertySection></Environment>"#;
        let text = document(&properties(env));
        assert_eq!(text, "version: 1\nnetwork:\n  mode: dhcp\n");
        assert!(parse(&text, "ovf-env").is_ok());
    }

    #[test]
    fn a_bad_address_is_refused_by_the_document_checks() {
        let env = r#"<Environment xmlns:oe="x"><PropertySection>
            <Property oe:key="ferry.ipv4.address" oe:value="192.0.2.300/24"/>
        </PropertySection></Environment>"#;
        let text = document(&properties(env));
        let err = parse(&text, "ovf-env").unwrap_err().to_string();
        assert!(err.contains("address"), "{err}");
    }

    #[test]
    fn quotes_in_values_cannot_inject_keys() {
        let env = r#"<Environment xmlns:oe="x"><PropertySection>
            <Property oe:key="ferry.hostname" oe:value="a&quot;&#10;network: {mode: static}"/>
        </PropertySection></Environment>"#;
        let text = document(&properties(env));
        // one hostname value, network still from the (absent) address: dhcp
        let doc = parse(&text, "ovf-env");
        if let Ok(doc) = doc {
            assert_eq!(doc.network.mode, crate::config::network::Mode::Dhcp);
        }
    }
}
