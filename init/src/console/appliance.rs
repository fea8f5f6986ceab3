// SPDX-License-Identifier: GPL-2.0-only
//! The console's [`Host`] on the appliance: netlink, the configuration
//! store, chronyd's command socket, the journal, the agent's CLI, mount(2).

use std::ffi::CString;
use std::fs;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrony_candm::reply::ReplyBody;
use chrony_candm::request::{RequestBody, SourceData};
use chrony_candm::{blocking_query_uds, ClientOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::auth::{Accounts, Login};
use super::menu::{Check, Host, Level, NetworkSettings};
use crate::config::network::{parse_cidr, Mode};
use crate::config::store::Store;
use crate::network::netlink::Netlink;

/// Where the journal lives (journald writes it there, see `system`).
const JOURNAL_DIR: &str = "/data/log/journal";
const AGENT_SOCKET: &str = ferry_model::paths::AGENT_SOCKET;
const STORAGE_TEST_MOUNT: &str = "/run/ferry/storage-test";

/// What the appliance is sized for (DataSync's agent asks the same).
const WANT_CPUS: usize = 4;
const WANT_MEMORY_GIB: u64 = 32;
const WANT_DISK_GB: u64 = 80;

#[derive(Default)]
pub struct Appliance {
    accounts: Accounts,
    store: Store,
}

fn timeout_connect(host: &str, port: u16) -> Result<(), String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("DNS: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

fn meminfo_kib(key: &str) -> Option<u64> {
    fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Size in bytes of the whole disk that holds `/data`.
fn data_disk_bytes() -> Option<u64> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let devno = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/data"))?
        .split_whitespace()
        .nth(2)?
        .to_string();
    // /sys/dev/block/M:m is the partition; its parent directory is the disk
    let part = fs::canonicalize(format!("/sys/dev/block/{devno}")).ok()?;
    let disk = if part.join("partition").exists() {
        part.parent()?.to_path_buf()
    } else {
        part
    };
    let sectors: u64 = fs::read_to_string(disk.join("size"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(sectors * 512)
}

/// The resource checks, from /proc and /sys.
pub fn resource_checks(cpus: usize, mem_kib: u64, disk: Option<u64>, flags: &[&str]) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |level, text: String| out.push(Check { level, text });
    push(
        if cpus >= WANT_CPUS {
            Level::Ok
        } else {
            Level::Warning
        },
        format!("{cpus} vCPU(s) (recommended: {WANT_CPUS})"),
    );
    let gib = mem_kib as f64 / (1 << 20) as f64;
    // MemTotal is a little under what the VM was given
    let mem_level = if mem_kib < 512 << 10 {
        Level::Error
    } else if gib < WANT_MEMORY_GIB as f64 * 0.95 {
        Level::Warning
    } else {
        Level::Ok
    };
    push(
        mem_level,
        format!("{gib:.1} GiB of memory (recommended: {WANT_MEMORY_GIB} GiB)"),
    );
    match disk {
        Some(b) => {
            let gb = b / 1_000_000_000;
            let level = if b < 8 << 30 {
                Level::Error
            } else if gb < WANT_DISK_GB {
                Level::Warning
            } else {
                Level::Ok
            };
            push(
                level,
                format!("{gb} GB disk (recommended: {WANT_DISK_GB} GB)"),
            );
        }
        None => push(Level::Error, "the data disk was not found".into()),
    }
    for (flag, why, level) in [
        ("lm", "64-bit mode", Level::Error),
        ("sse4_2", "SSE4.2 (checksums)", Level::Warning),
        ("aes", "AES-NI (encryption in transit)", Level::Warning),
        ("pclmulqdq", "carry-less multiply (AES-GCM)", Level::Warning),
        ("avx2", "AVX2 (SHA-256 and copies)", Level::Warning),
    ] {
        if flags.contains(&flag) {
            push(Level::Ok, format!("CPU feature {why}"));
        } else {
            push(level, format!("CPU feature {why} missing"));
        }
    }
    out
}

/// One line for the support channel's state.
fn describe_support(s: &crate::support::Status) -> String {
    use crate::support::{Mode, State};
    if s.state == State::Closed {
        return "closed".into();
    }
    let left = s
        .remaining
        .map(|r| format!(", closes in {} min", r.as_secs().div_ceil(60)))
        .unwrap_or_default();
    let mode = match &s.mode {
        Some(Mode::Inbound {
            allow_from: Some(a),
        }) => format!("port 22 open to {a}"),
        Some(Mode::Inbound { allow_from: None }) => "port 22 open".to_string(),
        Some(Mode::Outbound(o)) => format!("tunnel out to {}:{}", o.host, o.port),
        None => "open".to_string(),
    };
    format!("open: {mode}{left}")
}

fn chrony(request: RequestBody) -> Result<ReplyBody, String> {
    let options = ClientOptions {
        timeout: Duration::from_secs(2),
        n_tries: 2,
    };
    blocking_query_uds(request, options)
        .map(|r| r.body)
        .map_err(|e| format!("chronyd does not answer on its command socket: {e}"))
}

impl Appliance {
    fn document_value(&self) -> serde_yaml::Mapping {
        fs::read_to_string(&self.store.document)
            .ok()
            .and_then(|t| serde_yaml::from_str::<serde_yaml::Mapping>(&t).ok())
            .unwrap_or_default()
    }
}

impl Host for Appliance {
    fn banner(&self) -> String {
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let addrs = Netlink::open()
            .and_then(|mut nl| nl.addresses())
            .map(|a| {
                a.iter()
                    .filter(|(_, ip, _)| !ip.is_loopback())
                    .map(|(_, ip, p)| format!("{ip}/{p}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        format!(
            "Ferry appliance {} - {} - {}",
            env!("CARGO_PKG_VERSION"),
            host.trim(),
            if addrs.is_empty() {
                "no address"
            } else {
                &addrs
            }
        )
    }

    fn login(&mut self, user: &str, password: &str) -> Result<Login, String> {
        let r = self
            .accounts
            .check(user, password)
            .map_err(|e| e.to_string());
        match &r {
            Ok(Login::Refused) => log::warn!("console: login refused for {user:?}"),
            Ok(_) => log::info!("console: {user} logged in"),
            Err(e) => log::error!("console: {e}"),
        }
        r
    }

    fn set_password(&mut self, password: &str) -> Result<(), String> {
        self.accounts.set(password).map_err(|e| e.to_string())?;
        log::info!("console: the admin password was changed");
        Ok(())
    }

    fn describe_network(&mut self) -> String {
        let mut nl = match Netlink::open() {
            Ok(n) => n,
            Err(e) => return format!("netlink: {e}"),
        };
        let links = nl.links().unwrap_or_default();
        let addrs = nl.addresses().unwrap_or_default();
        let routes = nl.routes().unwrap_or_default();
        let mut out = String::new();
        for l in links.iter().filter(|l| l.name != "lo") {
            let mac = l
                .mac
                .map(|m| {
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                })
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "  {}: MAC {mac}, link {}\n",
                l.name,
                if l.running { "up" } else { "down" }
            ));
            for (_, ip, p) in addrs.iter().filter(|(i, _, _)| *i == l.index) {
                out.push_str(&format!("    address {ip}/{p}\n"));
            }
            for r in routes.iter().filter(|r| r.oif == Some(l.index)) {
                out.push_str(&format!("    route {}\n", r.describe()));
            }
        }
        let resolv = fs::read_to_string(crate::network::RESOLV_CONF).unwrap_or_default();
        for l in resolv.lines().filter(|l| !l.starts_with('#')) {
            out.push_str(&format!("  {l}\n"));
        }
        out.trim_end().to_string()
    }

    fn adapters(&mut self) -> Vec<String> {
        Netlink::open()
            .and_then(|mut nl| nl.links())
            .map(|l| {
                l.into_iter()
                    .filter(|l| l.ethernet && l.name != "lo")
                    .map(|l| l.name)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn network_settings(&mut self) -> NetworkSettings {
        let n = self.store.load().config.doc.network;
        NetworkSettings {
            interface: n.interface,
            static_address: match n.mode {
                Mode::Static => n.address.as_deref().and_then(parse_cidr),
                Mode::Dhcp => None,
            },
            gateway: n.gateway,
            dns: n.dns,
            search: n.search,
            others: n
                .adapters
                .into_iter()
                .map(|(name, a)| {
                    let net = match a.mode {
                        Mode::Static => a.address.as_deref().and_then(parse_cidr),
                        Mode::Dhcp => None,
                    };
                    (name, net)
                })
                .collect(),
        }
    }

    fn apply_network(&mut self, s: &NetworkSettings) -> Result<String, String> {
        use serde_yaml::Value;
        let mut doc = self.document_value();
        if !doc.contains_key("version") {
            doc.insert("version".into(), 1.into());
        }
        let mut net = serde_yaml::Mapping::new();
        if let Some(i) = &s.interface {
            net.insert("interface".into(), i.as_str().into());
        }
        match s.static_address {
            Some((a, p)) => {
                net.insert("mode".into(), "static".into());
                net.insert("address".into(), format!("{a}/{p}").into());
                if let Some(g) = s.gateway {
                    net.insert("gateway".into(), g.to_string().into());
                }
            }
            None => {
                net.insert("mode".into(), "dhcp".into());
            }
        }
        if !s.dns.is_empty() {
            let list = s.dns.iter().map(|d| Value::from(d.to_string())).collect();
            net.insert("dns".into(), Value::Sequence(list));
        }
        if !s.search.is_empty() {
            let list = s.search.iter().map(|d| Value::from(d.as_str())).collect();
            net.insert("search".into(), Value::Sequence(list));
        }
        if !s.others.is_empty() {
            let mut adapters = serde_yaml::Mapping::new();
            for (name, a) in &s.others {
                let mut m = serde_yaml::Mapping::new();
                match a {
                    None => {
                        m.insert("mode".into(), "dhcp".into());
                    }
                    Some((ip, p)) => {
                        m.insert("mode".into(), "static".into());
                        m.insert("address".into(), format!("{ip}/{p}").into());
                    }
                }
                adapters.insert(name.as_str().into(), Value::Mapping(m));
            }
            net.insert("adapters".into(), Value::Mapping(adapters));
        }
        doc.insert("network".into(), Value::Mapping(net));
        let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
        self.store
            .offer(&text, "the console")
            .map_err(|e| e.to_string())?;
        // PID 1 re-reads the document and hands the network controller the change
        kill(Pid::from_raw(1), Signal::SIGHUP).map_err(|e| format!("signal ferry-init: {e}"))?;
        log::info!("console: network settings saved and applied");
        Ok(format!(
            "saved to {} and applied (1: Describe adapters shows the result)",
            self.store.document.display()
        ))
    }

    fn endpoints(&mut self) -> Vec<(String, String, Option<u16>)> {
        let doc = self.store.load().config.doc;
        let mut out: Vec<(String, String, Option<u16>)> = doc
            .time
            .servers
            .iter()
            .map(|s| ("NTP server".to_string(), s.clone(), None))
            .collect();
        if let Some(agent) = &doc.agent {
            for (name, loc) in &agent.locations {
                if let Some(nfs) = &loc.nfs {
                    out.push((
                        format!("NFS location {name}"),
                        nfs.server.clone(),
                        Some(2049),
                    ));
                }
            }
        }
        out
    }

    fn resolve(&mut self, host: &str) -> Result<Vec<String>, String> {
        let addrs: Vec<String> = (host, 0)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .map(|a| a.ip().to_string())
            .collect();
        if addrs.is_empty() {
            return Err("no address".into());
        }
        Ok(addrs)
    }

    fn connect(&mut self, host: &str, port: u16) -> Result<(), String> {
        timeout_connect(host, port)
    }

    fn test_storage(
        &mut self,
        server: &str,
        export: &str,
        version: &str,
        options: &str,
    ) -> Vec<(String, Result<String, String>)> {
        let mut steps = Vec::new();
        // what the agent would refuse of a location, refused here too
        let options = Some(options).filter(|o| !o.is_empty());
        if let Err((field, why)) = ferry_model::nfs::check(server, export, None, options) {
            steps.push((field.replace('_', " "), Err(why)));
            return steps;
        }
        let addr = match (server, 0).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a.ip(),
            Ok(None) => {
                steps.push(("resolve".into(), Err(format!("{server} has no address"))));
                return steps;
            }
            Err(e) => {
                steps.push(("resolve".into(), Err(format!("{server}: {e}"))));
                return steps;
            }
        };
        steps.push(("resolve".into(), Ok(format!("{server} is {addr}"))));
        let port = options
            .unwrap_or("")
            .split(',')
            .find_map(|o| o.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(2049u16);
        let reach =
            timeout_connect(&addr.to_string(), port).map(|_| format!("TCP port {port} answers"));
        let reachable = reach.is_ok();
        steps.push(("port".into(), reach));
        if !reachable {
            return steps;
        }
        // the agent's own options (ferry-model), so the test mounts what
        // the agent will mount; read-only here
        let data = ferry_model::nfs::mount_options(version, options, addr);
        let _ = fs::create_dir_all(STORAGE_TEST_MOUNT);
        let source = format!("{server}:{export}");
        let mounted = nix::mount::mount(
            Some(source.as_str()),
            STORAGE_TEST_MOUNT,
            Some(ferry_model::nfs::fstype(version)),
            nix::mount::MsFlags::MS_RDONLY
                | nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some(CString::new(data.clone()).unwrap_or_default().as_c_str()),
        );
        match mounted {
            Ok(()) => steps.push(("mount".into(), Ok(format!("{source} read-only, {data}")))),
            Err(e) => {
                steps.push(("mount".into(), Err(format!("{source} ({data}): {e}"))));
                return steps;
            }
        }
        let listing = fs::read_dir(STORAGE_TEST_MOUNT)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map(|mut names| {
                names.sort();
                let shown: Vec<_> = names.iter().take(8).cloned().collect();
                format!(
                    "{} entries: {}{}",
                    names.len(),
                    shown.join(" "),
                    if names.len() > 8 { " ..." } else { "" }
                )
            })
            .map_err(|e| e.to_string());
        steps.push(("list".into(), listing));
        steps.push((
            "unmount".into(),
            nix::mount::umount2(STORAGE_TEST_MOUNT, nix::mount::MntFlags::MNT_DETACH)
                .map(|_| "done".to_string())
                .map_err(|e| e.to_string()),
        ));
        steps
    }

    fn resources(&mut self) -> Vec<Check> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, f)| f.split_whitespace().collect())
            .unwrap_or_default();
        resource_checks(
            cpus,
            meminfo_kib("MemTotal:").unwrap_or(0),
            data_disk_bytes(),
            &flags,
        )
    }

    fn time_status(&mut self) -> String {
        let servers = self.store.load().config.doc.time.servers;
        let mut out = format!(
            "NTP servers: {}\n",
            if servers.is_empty() {
                "none configured".to_string()
            } else {
                servers.join(", ")
            }
        );
        match chrony(RequestBody::Tracking) {
            Ok(ReplyBody::Tracking(t)) => {
                let synced = t.stratum > 0 && t.stratum < 16 && t.ref_id != 0;
                out.push_str(&format!(
                    "Synchronised: {}\nReference: {} (stratum {})\nOffset: {:+.6} s (last), RMS {:.6} s\nFrequency: {:+.3} ppm\n",
                    if synced { "yes" } else { "no" },
                    t.ip_addr,
                    t.stratum,
                    f64::from(t.last_offset),
                    f64::from(t.rms_offset),
                    f64::from(t.freq_ppm),
                ));
            }
            Ok(other) => out.push_str(&format!("chronyd: unexpected reply {other:?}\n")),
            Err(e) => return out + &e,
        }
        let n = match chrony(RequestBody::NSources) {
            Ok(ReplyBody::NSources(n)) => n.n_sources,
            _ => 0,
        };
        out.push_str(&format!("Sources: {n}\n"));
        for index in 0..n as i32 {
            if let Ok(ReplyBody::SourceData(s)) =
                chrony(RequestBody::SourceData(SourceData { index }))
            {
                out.push_str(&format!(
                    "  {} stratum {} {:?} reach {:o}\n",
                    s.ip_addr, s.stratum, s.state, s.reachability
                ));
            }
        }
        out.trim_end().to_string()
    }

    fn step_clock(&mut self) -> Result<String, String> {
        match chrony(RequestBody::MakeStep)? {
            ReplyBody::Null => {
                log::info!("console: clock stepped to chronyd's estimate");
                Ok("done: chronyd stepped the clock to its estimate".into())
            }
            other => Err(format!("chronyd: unexpected reply {other:?}")),
        }
    }

    fn support_status(&mut self) -> String {
        describe_support(&crate::support::status())
    }

    fn support_open(
        &mut self,
        key: &str,
        hours: f64,
        allow_from: Option<&str>,
    ) -> Result<String, String> {
        let duration = Duration::from_secs_f64(hours * 3600.0);
        crate::support::open(key, duration, allow_from)
            .map(|s| describe_support(&s))
            .map_err(|e| e.to_string())
    }

    fn support_close(&mut self) -> Result<String, String> {
        crate::support::close()
            .map(|()| "closed".to_string())
            .map_err(|e| e.to_string())
    }

    fn logs(&mut self, unit: Option<&str>) -> Result<Vec<String>, String> {
        let mut cmd = Command::new("/bin/journalctl");
        cmd.args([
            "-D",
            JOURNAL_DIR,
            "-r",
            "-n",
            "2000",
            "--no-pager",
            "-q",
            "-o",
            "short-iso",
        ]);
        if let Some(u) = unit {
            cmd.args(["-t", u]);
        }
        let out = cmd.output().map_err(|e| format!("journalctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "journalctl: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn tasks(&mut self) -> String {
        if !Path::new(AGENT_SOCKET).exists() {
            return "the agent is not running (no socket at /run/ferry/agent.sock)".into();
        }
        match Command::new("/usr/bin/ferry")
            .args(["execution", "list", "--agent", AGENT_SOCKET])
            .output()
        {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout).trim_end().to_string();
                if text.is_empty() {
                    "no executions yet".into()
                } else {
                    text
                }
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("ferry: {e}"),
        }
    }

    fn activation_status(&mut self) -> String {
        match Command::new("/usr/bin/ferry")
            .args(["activation", "show", "--agent", AGENT_SOCKET])
            .output()
        {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("ferry: {e}"),
        }
    }

    fn activate(&mut self, hub: &str, fingerprint: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new("/usr/bin/ferry");
        cmd.args(["activation", "start", "--agent", AGENT_SOCKET, "--hub", hub]);
        if let Some(f) = fingerprint {
            cmd.args(["--hub-fingerprint", f]);
        }
        log::info!("console: activation with the hub {hub} requested");
        match cmd.output() {
            Ok(o) if o.status.success() => {
                Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("ferry: {e}")),
        }
    }

    fn reboot(&mut self) {
        log::info!("console: reboot requested");
        let _ = kill(Pid::from_raw(1), Signal::SIGTERM);
    }

    fn power_off(&mut self) {
        log::info!("console: shutdown requested");
        let _ = kill(Pid::from_raw(1), Signal::SIGUSR2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_vm_gets_warnings_not_errors() {
        let checks = resource_checks(1, 2_000_000, Some(80 << 30), &["lm", "sse4_2"]);
        let warn: Vec<_> = checks
            .iter()
            .filter(|c| c.level == Level::Warning)
            .map(|c| c.text.as_str())
            .collect();
        assert!(warn.iter().any(|t| t.starts_with("1 vCPU")), "{warn:?}");
        assert!(warn.iter().any(|t| t.contains("GiB of memory")), "{warn:?}");
        assert!(warn.iter().any(|t| t.contains("AES-NI")), "{warn:?}");
        assert!(
            !checks.iter().any(|c| c.level == Level::Error),
            "{checks:?}"
        );
        let right = resource_checks(
            4,
            32 * 1024 * 1024 - 200_000,
            Some(85_899_345_920),
            &["lm", "sse4_2", "aes", "pclmulqdq", "avx2"],
        );
        assert!(right.iter().all(|c| c.level == Level::Ok), "{right:?}");
        let tiny = resource_checks(1, 400_000, Some(1 << 30), &[]);
        assert_eq!(
            tiny.iter().filter(|c| c.level == Level::Error).count(),
            3,
            "{tiny:?}"
        );
    }
}
