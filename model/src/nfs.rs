// SPDX-License-Identifier: MIT
//! NFS: what a location may say, and the options the agent mounts an export
//! with. The console's storage test mounts with the same options
//! ([`mount_options`]), so it tests what the agent will mount.
//!
//! Default options are chosen for throughput over long round trips: several
//! TCP connections per server (`nconnect`), 1 MiB reads and writes, and
//! `hard` mounts that ride out a link that drops for a while.

use std::net::IpAddr;
use std::path::{Component, Path};

/// Options every NFS mount of the agent starts from. The NFS client opens one
/// TCP connection per server by default, window-limited on a long round trip;
/// `nconnect` spreads the traffic over several.
pub const DEFAULT_OPTIONS: &str = "nconnect=8,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2";

/// v3 without rpcbind or lockd on the appliance: no locks, no ACL side protocol.
pub const V3_OPTIONS: &str = "nolock,noacl,proto=tcp,mountproto=tcp";

/// A location's `version`: the first tries 4.1, then 4.0, then 3.
pub const VERSIONS: [&str; 4] = ["automatic", "3", "4.0", "4.1"];

/// The file system type mount(2) is given for protocol version `vers`
/// (`3`, `4.0`, `4.1`).
pub fn fstype(vers: &str) -> &'static str {
    if vers == "3" {
        "nfs"
    } else {
        "nfs4"
    }
}

/// The mount(2) data string for protocol version `vers` (`3`, `4.0`, `4.1`)
/// of the server at `addr`: the defaults, then the location's own options
/// (which override them), then the version and the address (the agent's).
pub fn mount_options(vers: &str, user: Option<&str>, addr: IpAddr) -> String {
    merge_options(&[
        DEFAULT_OPTIONS,
        if vers == "3" { V3_OPTIONS } else { "" },
        user.unwrap_or(""),
        &format!("vers={vers},addr={addr}"),
    ])
}

/// `a=1,b,c=2` merged: later keys replace earlier ones, order kept.
pub fn merge_options(layers: &[&str]) -> String {
    let mut out: Vec<(String, String)> = Vec::new();
    for layer in layers {
        for opt in layer.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let key = opt.split('=').next().unwrap_or(opt).to_string();
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = opt.to_string(),
                None => out.push((key, opt.to_string())),
            }
        }
    }
    out.into_iter()
        .map(|(_, o)| o)
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks what can be checked of an NFS location before anything is
/// mounted; `Err((field, why))`, the field as the document names it
/// (`server`, `export`, `subdirectory`, `mount_options`).
pub fn check(
    server: &str,
    export: &str,
    subdirectory: Option<&str>,
    mount_options: Option<&str>,
) -> Result<(), (&'static str, String)> {
    if server.is_empty() || server.contains(['/', ',', ' ']) {
        return Err((
            "server",
            format!("the NFS server {server:?} is not a host name or address"),
        ));
    }
    if !export.starts_with('/') {
        return Err((
            "export",
            format!("the export {export:?} must be an absolute path, such as /exports/data"),
        ));
    }
    for (what, p) in [("export", Some(export)), ("subdirectory", subdirectory)] {
        if let Some(p) = p {
            if p.contains(|c: char| c.is_control())
                || Path::new(p).components().any(|c| c == Component::ParentDir)
            {
                return Err((
                    what,
                    format!("the {what} {p:?} has '..' or control characters: give a plain path"),
                ));
            }
        }
    }
    if let Some(opts) = mount_options {
        if opts.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err((
                "mount_options",
                format!(
                    "the mount options {opts:?} contain spaces or control characters: give key=value,flag"
                ),
            ));
        }
        for opt in opts.split(',').map(str::trim) {
            let key = opt.split('=').next().unwrap_or(opt);
            if matches!(key, "vers" | "nfsvers" | "addr") {
                return Err((
                    "mount_options",
                    format!(
                        "the mount option {key} is set by the agent: give the protocol version as the location's version (--version; version: in the configuration document)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_a_location_may_say_parses() {
        use crate::api::NfsVersion;
        let parsed: Vec<NfsVersion> = VERSIONS.iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(
            parsed,
            [
                NfsVersion::Automatic,
                NfsVersion::Nfs3,
                NfsVersion::Nfs4_0,
                NfsVersion::Nfs4_1
            ]
        );
        let e = "4.2".parse::<NfsVersion>().unwrap_err();
        assert!(e.contains("automatic, 3, 4.0, 4.1"), "{e}");
    }

    #[test]
    fn user_options_override_defaults() {
        assert_eq!(
            merge_options(&[DEFAULT_OPTIONS, "nconnect=4,noatime", "vers=3"]),
            "nconnect=4,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noatime,vers=3"
        );
    }

    #[test]
    fn the_version_and_the_address_are_the_agents() {
        let addr: IpAddr = "192.0.2.20".parse().unwrap();
        assert_eq!(
            mount_options("3", Some("nconnect=4,port=2050"), addr),
            "nconnect=4,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,nolock,noacl,proto=tcp,mountproto=tcp,port=2050,vers=3,addr=192.0.2.20"
        );
        assert_eq!(
            mount_options("4.1", None, addr),
            format!("{DEFAULT_OPTIONS},vers=4.1,addr=192.0.2.20")
        );
        assert_eq!(
            (fstype("3"), fstype("4.0"), fstype("4.1")),
            ("nfs", "nfs4", "nfs4")
        );
    }

    #[test]
    fn refuses_what_the_agent_sets() {
        let validate = |s, e, o| check(s, e, None, o);
        assert!(validate("nas", "/export", Some("vers=3")).is_err());
        assert!(validate("nas", "export", None).is_err());
        assert!(validate("", "/export", None).is_err());
        assert!(validate("nas.example", "/export", Some("nconnect=16")).is_ok());
        assert_eq!(
            check("nas", "/e", Some("../x"), None).unwrap_err().0,
            "subdirectory"
        );
        assert_eq!(check("nas", "/e/../f", None, None).unwrap_err().0, "export");
        assert_eq!(
            check("nas", "/e", None, Some("a b")).unwrap_err().0,
            "mount_options"
        );
    }
}
