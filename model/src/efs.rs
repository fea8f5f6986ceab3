// SPDX-License-Identifier: MIT
//! Amazon EFS: what an EFS location may say, and the mount target's name.
//!
//! An EFS file system is NFS 4.1 at `FS.efs.REGION.amazonaws.com`, port
//! 2049, exported as `/`. With `TLS1_2` (DataSync's
//! `InTransitEncryption`), the agent carries NFS through a TLS tunnel of
//! its own, as the EFS mount helper does with stunnel, and checks the
//! server's certificate against that name. An access point is named in the
//! tunnel's client certificate, so it needs TLS (as with DataSync).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// EFS's NFS port.
pub const PORT: u16 = 2049;

/// The largest file EFS stores: 47.9 TiB (its quotas).
pub const FILE_SIZE_MAX: u64 = 52_673_613_135_872;

/// DataSync's `InTransitEncryption`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InTransitEncryption {
    #[default]
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "TLS1_2")]
    Tls1_2,
}

impl std::str::FromStr for InTransitEncryption {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "NONE" => Ok(InTransitEncryption::None),
            "TLS1_2" => Ok(InTransitEncryption::Tls1_2),
            _ => Err(format!(
                "{s:?} is not an encryption in transit: NONE or TLS1_2"
            )),
        }
    }
}

/// The mount target's DNS name, as the EFS mount helper forms it (China's
/// regions have their own suffix).
pub fn mount_target_name(file_system_id: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("{file_system_id}.efs.{region}.{suffix}")
}

/// `fs-…` and its region from a file system's ARN
/// (`arn:aws:elasticfilesystem:REGION:ACCOUNT:file-system/fs-…`, DataSync's
/// `EfsFilesystemArn`), or `None` when `s` is not one.
pub fn parse_arn(s: &str) -> Option<(String, String)> {
    let mut parts = s.splitn(6, ':');
    let (arn, _partition, service, region, _account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let id = resource.strip_prefix("file-system/")?;
    (arn == "arn" && service == "elasticfilesystem").then(|| (id.to_string(), region.to_string()))
}

/// An access point's id from its ARN (`…:access-point/fsap-…`), or `s` itself.
pub fn access_point_id(s: &str) -> &str {
    s.rsplit_once(":access-point/").map_or(s, |(_, id)| id)
}

/// `prefix-` and 8 to 40 lowercase hexadecimal digits, as EFS's ids are.
fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        (8..=40).contains(&hex.len()) && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A region's shape (`us-east-1`, `cn-north-1`, `us-gov-west-1`).
pub fn is_region(r: &str) -> bool {
    (1..=32).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-')
}

/// The mount target's address when its name does not resolve where the
/// agent runs (the mount helper's `mounttargetip`).
pub fn parse_mount_target_address(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Checks what can be checked of an EFS location before anything is
/// mounted; `Err((field, why))`, the field as the configuration document
/// names it.
pub fn check(
    file_system_id: &str,
    region: &str,
    access_point_id: Option<&str>,
    subdirectory: Option<&str>,
    in_transit_encryption: InTransitEncryption,
    mount_target_address: Option<&str>,
) -> Result<(), (&'static str, String)> {
    if !is_id(file_system_id, "fs-") {
        return Err((
            "file_system_id",
            format!("{file_system_id:?} is not an EFS file system id (fs- and 8 to 40 hexadecimal digits, such as fs-0123456789abcdef0)"),
        ));
    }
    if !is_region(region) {
        return Err((
            "region",
            format!("{region:?} is not an AWS region (such as us-east-1)"),
        ));
    }
    if let Some(ap) = access_point_id {
        if !is_id(ap, "fsap-") {
            return Err((
                "access_point_id",
                format!(
                    "{ap:?} is not an EFS access point id (fsap- and 8 to 40 hexadecimal digits)"
                ),
            ));
        }
        if in_transit_encryption != InTransitEncryption::Tls1_2 {
            return Err((
                "in_transit_encryption",
                "an access point is named over TLS: give TLS1_2 with an access point".into(),
            ));
        }
    }
    if let Some(sub) = subdirectory {
        if sub.contains(|c: char| c.is_control())
            || sub.split('/').any(|c| c == "..")
            || sub.contains(',')
        {
            return Err((
                "subdirectory",
                format!("the subdirectory {sub:?} has '..', ',' or control characters: give a plain path"),
            ));
        }
    }
    if let Some(a) = mount_target_address {
        if parse_mount_target_address(a).is_none() {
            return Err((
                "mount_target_address",
                format!("{a:?} is not the IP address of a mount target"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_formed_as_the_mount_helper_forms_them() {
        assert_eq!(
            mount_target_name("fs-12345678", "eu-west-1"),
            "fs-12345678.efs.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            mount_target_name("fs-12345678", "cn-north-1"),
            "fs-12345678.efs.cn-north-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn an_efs_location_knows_the_largest_file() {
        let efs = crate::api::LocationSpec::Efs {
            file_system_id: "fs-12345678".into(),
            region: "us-east-1".into(),
            access_point_id: None,
            subdirectory: None,
            in_transit_encryption: InTransitEncryption::None,
            mount_target_address: None,
        };
        assert_eq!(efs.file_size_max(), Some(FILE_SIZE_MAX));
        assert_eq!(efs.uri(), "efs://us-east-1.fs-12345678/");
        assert_eq!(crate::api::LocationSpec::local("/a").file_size_max(), None);
    }

    #[test]
    fn arns_give_the_id_and_the_region() {
        assert_eq!(
            parse_arn(
                "arn:aws:elasticfilesystem:us-east-2:111122223333:file-system/fs-0123456789abcdef0"
            ),
            Some(("fs-0123456789abcdef0".into(), "us-east-2".into()))
        );
        assert_eq!(parse_arn("fs-12345678"), None);
        assert_eq!(parse_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(
            access_point_id(
                "arn:aws:elasticfilesystem:us-east-2:1:access-point/fsap-0123456789abcdef0"
            ),
            "fsap-0123456789abcdef0"
        );
        assert_eq!(access_point_id("fsap-12345678"), "fsap-12345678");
    }

    #[test]
    fn what_efs_would_refuse_is_named() {
        let ok = |ap, sub, enc, addr| check("fs-12345678", "us-east-1", ap, sub, enc, addr);
        ok(None, Some("/data"), InTransitEncryption::None, None).unwrap();
        ok(
            Some("fsap-0123456789abcdef0"),
            None,
            InTransitEncryption::Tls1_2,
            Some("10.0.2.101"),
        )
        .unwrap();
        let field = |r: Result<(), (&'static str, String)>| r.unwrap_err().0;
        assert_eq!(
            field(check(
                "fs-XYZ",
                "us-east-1",
                None,
                None,
                Default::default(),
                None
            )),
            "file_system_id"
        );
        assert_eq!(
            field(check(
                "fs-12345678",
                "US East",
                None,
                None,
                Default::default(),
                None
            )),
            "region"
        );
        assert_eq!(
            field(ok(
                Some("fsap-12345678"),
                None,
                InTransitEncryption::None,
                None
            )),
            "in_transit_encryption"
        );
        assert_eq!(
            field(ok(None, Some("a/../b"), InTransitEncryption::None, None)),
            "subdirectory"
        );
        assert_eq!(
            field(ok(
                None,
                None,
                InTransitEncryption::None,
                Some("mount.example")
            )),
            "mount_target_address"
        );
        assert_eq!(
            field(ok(
                None,
                None,
                InTransitEncryption::None,
                Some("10.0.2.101:2049")
            )),
            "mount_target_address"
        );
        assert_eq!(
            "TLS1_2".parse::<InTransitEncryption>(),
            Ok(InTransitEncryption::Tls1_2)
        );
    }
}
