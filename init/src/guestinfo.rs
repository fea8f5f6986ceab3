// SPDX-License-Identifier: GPL-2.0-only
//! VMware guestinfo: the OVF environment vSphere hands over through the
//! `com.vmware.guestInfo` transport (`guestinfo.ovfEnv`), and plain
//! `guestinfo.ferry.*` variables (set with `govc vm.change -e` or in the
//! VM's advanced settings) named like the OVF properties:
//! `guestinfo.ferry.hostname`, `guestinfo.ferry.ipv4.address`, ...
//! A plain variable wins over the same property in `guestinfo.ovfEnv`.
//!
//! They are read through the VMware backdoor (crate `vmw_backdoor`), only
//! where DMI says VMware, and never inside PID 1: a port read that is not
//! trapped by a VMware hypervisor faults (SIGSEGV) in the reading process,
//! so PID 1 runs `ferry-init guestinfo` as a child with a time limit and
//! takes its JSON output ([`read_isolated`]). The child first asks for I/O
//! privilege (`iopl`, refused under `lockdown=integrity`), then uses the
//! backdoor unprivileged, as VMware lets any process do.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ovfenv;

/// The OVF environment (the guestInfo transport).
pub const OVF_ENV_KEY: &str = "guestinfo.ovfEnv";
/// Plain variables read besides the environment: the OVF property keys.
pub const FERRY_KEYS: &[&str] = &[
    "ferry.hostname",
    "ferry.ipv4.address",
    "ferry.ipv4.gateway",
    "ferry.dns",
    "ferry.ntp",
    "ferry.support.public_key",
];
/// The document last offered from guestinfo (offered again when it changes).
pub const LAST_APPLIED: &str = "/data/config/guestinfo.last.yaml";
/// How often the running system looks for changed guestinfo.
pub const POLL: Duration = Duration::from_secs(60);
/// How long the reading child may take.
const CHILD_LIMIT: Duration = Duration::from_secs(10);

/// Set once a reader was killed by a signal: no VMware hypervisor trapped
/// the backdoor port, and none will later, so polling stops (each try would
/// also log a general protection fault in the kernel log).
static NO_BACKDOOR: AtomicBool = AtomicBool::new(false);

/// True once a reader found no backdoor (see [`NO_BACKDOOR`]).
pub fn no_backdoor() -> bool {
    NO_BACKDOOR.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum GuestinfoError {
    #[error("the VMware backdoor: {0}")]
    Backdoor(String),
    #[error("the guestinfo reader ({exe}): {why}")]
    Child { exe: String, why: String },
}

/// Reads the guestinfo variables in this process. **Faults where no VMware
/// hypervisor traps the backdoor port**: run it in a child
/// (`ferry-init guestinfo`), never in PID 1.
pub fn read_here() -> Result<BTreeMap<String, String>, GuestinfoError> {
    let bd = |e: vmw_backdoor::VmwError| GuestinfoError::Backdoor(e.to_string());
    let mut guard = match vmw_backdoor::access_backdoor_privileged() {
        Ok(g) => g,
        // lockdown refuses iopl; VMware traps the port for any process
        Err(_) => vmw_backdoor::access_backdoor().map_err(bd)?,
    };
    guard.probe_vmware_backdoor().map_err(bd)?;
    let mut chan = guard.open_enhanced_chan().map_err(bd)?;
    let mut out = BTreeMap::new();
    let keys = std::iter::once(OVF_ENV_KEY.to_string())
        .chain(FERRY_KEYS.iter().map(|k| format!("guestinfo.{k}")));
    for key in keys {
        if let Some(v) = chan.get_guestinfo(key.as_bytes()).map_err(bd)? {
            out.insert(key, String::from_utf8_lossy(&v).into_owned());
        }
    }
    let _ = chan.close();
    Ok(out)
}

/// Runs `exe guestinfo` and takes its JSON answer; a child that faults,
/// hangs or fails is an error, PID 1 carries on.
pub fn read_isolated(exe: &str) -> Result<BTreeMap<String, String>, GuestinfoError> {
    let err = |why: String| GuestinfoError::Child {
        exe: exe.to_string(),
        why,
    };
    // the reaper stays off this child until it is waited for
    let _held = crate::reaper::hold();
    let mut child = Command::new(exe)
        .arg("guestinfo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot start: {e}")))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > CHILD_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!(
                    "no answer in {} s; killed",
                    CHILD_LIMIT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(err(format!("wait: {e}"))),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        NO_BACKDOOR.store(true, Ordering::Relaxed);
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| sig.to_string());
        return Err(err(format!(
            "killed by {name} (no VMware backdoor answered)"
        )));
    }
    if !status.success() {
        return Err(err(stderr.trim().to_string()));
    }
    serde_json::from_str(&stdout).map_err(|e| err(format!("unreadable answer: {e}")))
}

/// The configuration document the variables describe: the OVF environment's
/// properties, overridden by the plain variables; `None` when there is
/// neither.
pub fn document(vars: &BTreeMap<String, String>) -> Option<String> {
    let mut props = vars
        .get(OVF_ENV_KEY)
        .map(|xml| ovfenv::properties(xml))
        .unwrap_or_default();
    let plain: Vec<(String, String)> = FERRY_KEYS
        .iter()
        .filter_map(|k| {
            vars.get(&format!("guestinfo.{k}"))
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    if props.is_empty() && plain.is_empty() {
        return None;
    }
    props.extend(plain);
    Some(ovfenv::document(&props))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="">
   <PropertySection>
         <Property oe:key="ferry.hostname" oe:value="from-ovfenv"/>
         <Property oe:key="ferry.ipv4.address" oe:value="192.0.2.10/24"/>
         <Property oe:key="ferry.ipv4.gateway" oe:value="192.0.2.1"/>
         <Property oe:key="ferry.support.public_key" oe:value="ssh-ed25519 AAAAenv env"/>
   </PropertySection>
</Environment>"#;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_ovf_environment_becomes_a_document_with_the_support_key() {
        let doc = document(&vars(&[(OVF_ENV_KEY, ENV)])).unwrap();
        assert!(doc.starts_with("version: 1\nhostname: \"from-ovfenv\"\nnetwork:\n  mode: static\n  address: \"192.0.2.10/24\"\n"), "{doc}");
        assert!(
            doc.ends_with("support:\n  public_key: \"ssh-ed25519 AAAAenv env\"\n"),
            "{doc}"
        );
    }

    #[test]
    fn plain_variables_win_over_the_environment() {
        let doc = document(&vars(&[
            (OVF_ENV_KEY, ENV),
            ("guestinfo.ferry.hostname", "from-plain"),
            ("guestinfo.ferry.ipv4.address", ""),
        ]))
        .unwrap();
        assert!(doc.contains("hostname: \"from-plain\"\n"), "{doc}");
        // an empty plain address means DHCP, whatever the environment said
        assert!(doc.contains("network:\n  mode: dhcp\n"), "{doc}");
        // plain variables alone
        let doc = document(&vars(&[("guestinfo.ferry.hostname", "only")])).unwrap();
        assert_eq!(
            doc,
            "version: 1\nhostname: \"only\"\nnetwork:\n  mode: dhcp\n"
        );
        assert_eq!(document(&vars(&[])), None);
    }

    #[test]
    fn a_reader_that_faults_is_an_error_not_a_crash() {
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        // stands in for `ferry-init guestinfo` on a machine whose port
        // read faults
        let exe = dir.path().join("reader");
        std::fs::write(&exe, "#!/bin/sh\nkill -SEGV $$\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = read_isolated(exe.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("killed by SIGSEGV"), "{e}");
        assert!(no_backdoor(), "polling stops after a fault");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho 'the VMware backdoor: no answer' >&2\nexit 1\n",
        )
        .unwrap();
        let e = read_isolated(exe.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("the VMware backdoor: no answer"), "{e}");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho '{\"guestinfo.ferry.hostname\":\"x\"}'\n",
        )
        .unwrap();
        let v = read_isolated(exe.to_str().unwrap()).unwrap();
        assert_eq!(v["guestinfo.ferry.hostname"], "x");
    }
}
