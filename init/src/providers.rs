// SPDX-License-Identifier: GPL-2.0-only
//! Configuration providers: each reads a configuration document from one
//! place and offers it through [`Store::offer`], in a fixed order (as
//! Bottlerocket's early-boot-config does). A document that passes the checks
//! replaces the one in force, so a later provider wins over an earlier one;
//! a refused one changes nothing and the refusal is logged with its reason.
//!
//! | provider | when | where it reads |
//! | --- | --- | --- |
//! | `vmware-guestinfo` | DMI says VMware; at boot, every 60 s and on SIGHUP | `guestinfo.ovfEnv` and `guestinfo.ferry.*` ([`crate::guestinfo`]) |
//! | `ovf-iso` | at boot | `ovf-env.xml` on a CD-ROM ([`crate::ovfenv`]) |
//! | `fw_cfg` | at boot | QEMU fw_cfg `opt/ferry/config` |
//! | `ec2-imds` | DMI says EC2; at boot once the network is up | IMDSv2 user data and key pair ([`crate::imds`]) |
//!
//! Providers whose input can stay the same from boot to boot keep a stamp
//! of what they last offered and offer it again only when it changed, so a
//! change made another way (the console, fw_cfg) is not undone at every boot.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use crate::config::store::Store;
use crate::dmi::Platform;
use crate::sys::Sys;
use crate::{guestinfo, imds, ovfenv};

/// QEMU's fw_cfg: a configuration document offered by the hypervisor.
pub const FW_CFG_CONFIG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/ferry/config/raw";

/// A document a provider read.
pub struct Offer {
    /// Where it came from, for messages ("OVF environment on /dev/sr0").
    pub source: String,
    pub text: String,
    /// `(file, content)`: offered only when `file` does not already hold
    /// `content`; written once the document is accepted.
    pub stamp: Option<(&'static str, String)>,
}

/// When a provider runs at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before /etc and the network: local sources.
    Early,
    /// Once the network controller runs.
    Network,
}

type Read = fn(&dyn Sys) -> Result<Option<Offer>, String>;

pub struct Provider {
    pub name: &'static str,
    pub phase: Phase,
    /// Runs only on this platform.
    pub platform: Option<Platform>,
    pub read: Read,
}

/// The providers, in order.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        name: "vmware-guestinfo",
        phase: Phase::Early,
        platform: Some(Platform::Vmware),
        read: read_guestinfo,
    },
    Provider {
        name: "ovf-iso",
        phase: Phase::Early,
        platform: None,
        read: read_ovf_iso,
    },
    Provider {
        name: "fw_cfg",
        phase: Phase::Early,
        platform: None,
        read: read_fw_cfg,
    },
    Provider {
        name: "ec2-imds",
        phase: Phase::Network,
        platform: Some(Platform::Ec2),
        read: read_imds,
    },
];

fn read_guestinfo(_: &dyn Sys) -> Result<Option<Offer>, String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/sbin/ferry-init".into());
    let vars = guestinfo::read_isolated(&exe).map_err(|e| e.to_string())?;
    Ok(guestinfo::document(&vars).map(|text| Offer {
        source: "VMware guestinfo".into(),
        stamp: Some((guestinfo::LAST_APPLIED, text.clone())),
        text,
    }))
}

fn read_ovf_iso(sys: &dyn Sys) -> Result<Option<Offer>, String> {
    Ok(
        ovfenv::read_from_cdrom(sys, Path::new("/sys/block")).map(|(dev, xml)| Offer {
            source: format!("OVF environment on {dev}"),
            text: ovfenv::document(&ovfenv::properties(&xml)),
            stamp: Some((ovfenv::LAST_APPLIED, xml)),
        }),
    )
}

fn read_fw_cfg(_: &dyn Sys) -> Result<Option<Offer>, String> {
    Ok(fs::read_to_string(FW_CFG_CONFIG).ok().map(|text| Offer {
        source: "document offered through fw_cfg opt/ferry/config".into(),
        text,
        stamp: None,
    }))
}

fn read_imds(_: &dyn Sys) -> Result<Option<Offer>, String> {
    let addr: SocketAddr = imds::ENDPOINT.parse().expect("a socket address");
    let session = imds::Session::open(addr, imds::BOOT_WAIT).map_err(|e| e.to_string())?;
    let meta = session.metadata().map_err(|e| e.to_string())?;
    log::info!(
        "imds: instance {}, local address {}, key pair {}, user data {}",
        meta.instance_id,
        meta.local_ipv4.as_deref().unwrap_or("none"),
        if meta.public_key.is_some() {
            "given"
        } else {
            "none"
        },
        meta.user_data
            .as_ref()
            .map(|u| format!("{} bytes", u.len()))
            .unwrap_or_else(|| "none".into())
    );
    let text = imds::document(&meta).map_err(|why| format!("refused the EC2 user data: {why}"))?;
    Ok(text.map(|text| Offer {
        source: "EC2 user data".into(),
        stamp: Some((imds::LAST_APPLIED, text.clone())),
        text,
    }))
}

/// Last error of each provider, so a periodic poll logs a failure once.
static LAST_ERROR: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

/// Runs one provider; true when it offered a document that was accepted.
pub fn run_one(sys: &dyn Sys, store: &Store, p: &Provider, data_mounted: bool) -> bool {
    let offer = match (p.read)(sys) {
        Ok(o) => {
            LAST_ERROR
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(p.name);
            o
        }
        Err(why) => {
            let mut last = LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner());
            if last.get(p.name) != Some(&why) {
                log::error!("config: {}: {why}", p.name);
                last.insert(p.name, why);
            }
            return false;
        }
    };
    let Some(offer) = offer else {
        log::debug!("config: {}: nothing offered", p.name);
        return false;
    };
    if let Some((file, content)) = &offer.stamp {
        if fs::read_to_string(file).ok().as_deref() == Some(content.as_str()) {
            log::info!("config: {} unchanged since it was applied", offer.source);
            return false;
        }
    }
    let before = store.load().config;
    match store.offer(&offer.text, &offer.source) {
        Ok(_) => {
            log::info!("config: accepted the {}", offer.source);
            if let (Some((file, content)), true) = (&offer.stamp, data_mounted) {
                if let Err(e) = sys.write_file(file, content.as_bytes(), 0o600) {
                    log::warn!("config: write {file}: {e}");
                }
            }
            true
        }
        Err(e) => {
            log::error!("config: refused: {e}");
            log::error!(
                "config: the configuration in force is unchanged (from {}, hostname {})",
                before.origin,
                before.hostname()
            );
            false
        }
    }
}

/// Runs the providers of a phase that fit the platform, in order; returns
/// how many documents were accepted.
pub fn run(
    sys: &dyn Sys,
    store: &Store,
    phase: Phase,
    platform: Platform,
    data_mounted: bool,
) -> usize {
    PROVIDERS
        .iter()
        .filter(|p| p.phase == phase && p.platform.is_none_or(|want| want == platform))
        .filter(|p| run_one(sys, store, p, data_mounted))
        .count()
}

/// The provider of this name.
pub fn named(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    #[test]
    fn order_and_platforms() {
        let names: Vec<_> = PROVIDERS.iter().map(|p| p.name).collect();
        assert_eq!(names, ["vmware-guestinfo", "ovf-iso", "fw_cfg", "ec2-imds"]);
        assert_eq!(named("ec2-imds").unwrap().phase, Phase::Network);
        assert_eq!(
            named("vmware-guestinfo").unwrap().platform,
            Some(Platform::Vmware)
        );
    }

    fn offering(text: &'static str, stamp: Stamp) -> Provider {
        // a provider reading a fixed document (fn pointers cannot capture:
        // the text goes through a thread-local)
        OFFER.with(|o| *o.borrow_mut() = Some((text, stamp)));
        Provider {
            name: "test",
            phase: Phase::Early,
            platform: None,
            read: |_| {
                Ok(OFFER.with(|o| {
                    o.borrow().clone().map(|(text, stamp)| Offer {
                        source: "test provider".into(),
                        text: text.into(),
                        stamp,
                    })
                }))
            },
        }
    }

    type Stamp = Option<(&'static str, String)>;

    thread_local! {
        static OFFER: std::cell::RefCell<Option<(&'static str, Stamp)>> =
            const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn accepted_offers_are_stamped_refused_ones_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_dir(dir.path());
        let sys = Recorder::new();
        // the stamp file is written through Sys (here recorded, not written)
        let stamp: &'static str = Box::leak(
            dir.path()
                .join("stamp")
                .display()
                .to_string()
                .into_boxed_str(),
        );
        let p = offering(
            "version: 1\nhostname: one\n",
            Some((stamp, "input-1".into())),
        );
        assert!(run_one(&sys, &store, &p, true));
        assert_eq!(store.load().config.hostname(), "one");
        assert_eq!(sys.transcript(), [format!("write {stamp} 600 7 bytes")]);
        // the same input again, stamped: not offered
        fs::write(stamp, "input-1").unwrap();
        store
            .offer("version: 1\nhostname: other\n", "console")
            .unwrap();
        assert!(!run_one(&sys, &store, &p, true));
        assert_eq!(store.load().config.hostname(), "other", "not undone");
        // a bad document: refused, the last good stays, nothing stamped
        let p = offering(
            "version: 1\nhostname: bad_name\n",
            Some((stamp, "input-2".into())),
        );
        assert!(!run_one(&sys, &store, &p, true));
        assert_eq!(store.load().config.hostname(), "other");
        assert_eq!(fs::read_to_string(stamp).unwrap(), "input-1");
    }
}
