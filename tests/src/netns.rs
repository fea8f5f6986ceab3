// SPDX-License-Identifier: MIT
//! A test network of our own: a network namespace holding a bridge with
//! an address, and tap devices that QEMU guests attach to. Programs run
//! inside the namespace ([`TapNet::command`]) see the guests as hosts on
//! one Ethernet segment, as a second machine on the customer's network
//! would; nothing in it is routed anywhere else. Needs root and
//! `/dev/net/tun`; `ip` from iproute2.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Context, Error};

/// Runs `ip ARGS`, failing with what it printed.
fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .ctx(|| "run ip (package iproute2)".into())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Missing(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A tap device for one guest adapter, with the MAC address that adapter
/// gets (guests on one bridge need different ones; QEMU's default is the
/// same for every guest).
#[derive(Debug, Clone)]
pub struct Tap {
    pub name: String,
    pub mac: String,
}

/// The namespace, its bridge and the taps made for it; all removed on drop.
pub struct TapNet {
    namespace: String,
    taps: Vec<String>,
}

const BRIDGE: &str = "br0";

impl TapNet {
    /// A namespace named after `tag` and this process, its bridge holding
    /// `address` (`a.b.c.d/n`).
    pub fn new(tag: &str, address: &str) -> Result<TapNet, Error> {
        let namespace = format!("ferry-{tag}-{}", std::process::id());
        ip(&["netns", "add", &namespace])?;
        let net = TapNet {
            namespace,
            taps: Vec::new(),
        };
        let ns = net.namespace.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", ns, "addr", "add", address, "dev", BRIDGE])?;
        ip(&["-n", ns, "link", "set", BRIDGE, "up"])?;
        Ok(net)
    }

    /// A new tap device in the host's namespace, for a guest's
    /// [`crate::VmConfig::tap`]; [`TapNet::attach`] it once QEMU holds it.
    pub fn add_tap(&mut self) -> Result<Tap, Error> {
        let (pid, n) = (std::process::id(), self.taps.len());
        // Interface names have 15 characters at most.
        let name = format!("ft{}x{n}", pid % 100_000);
        ip(&["tuntap", "add", "dev", &name, "mode", "tap"])?;
        self.taps.push(name.clone());
        let mac = format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            (pid >> 8) & 0xff,
            pid & 0xff,
            n
        );
        Ok(Tap { name, mac })
    }

    /// Moves a tap into the namespace, onto the bridge, once QEMU holds it:
    /// moved before, QEMU would find no device of that name and make a new
    /// one, connected to nothing.
    pub fn attach(&self, tap: &str) -> Result<(), Error> {
        ip(&["link", "set", tap, "up"])?;
        // An up tap has carrier once a program has it open.
        let carrier = format!("/sys/class/net/{tap}/carrier");
        let deadline = Instant::now() + Duration::from_secs(60);
        while fs::read_to_string(&carrier).map_or(true, |c| c.trim() != "1") {
            if Instant::now() > deadline {
                return Err(Error::Missing(format!("no program opened the tap {tap}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ns = self.namespace.as_str();
        ip(&["link", "set", tap, "netns", ns])?;
        ip(&["-n", ns, "link", "set", tap, "master", BRIDGE])?;
        ip(&["-n", ns, "link", "set", tap, "up"])
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace, program]);
        cmd
    }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes what was moved into it; a tap that
        // never was (QEMU failed first) stays behind in the host's namespace.
        let _ = ip(&["netns", "delete", &self.namespace]);
        for tap in &self.taps {
            let _ = ip(&["tuntap", "del", "dev", tap, "mode", "tap"]);
        }
    }
}
