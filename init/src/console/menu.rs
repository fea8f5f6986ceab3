// SPDX-License-Identifier: GPL-2.0-only
//! The console's screens as a state machine over a line terminal: a login,
//! the forced password change, the main menu and its items. Everything the
//! screens do to the system goes through [`Host`], so tests drive the real
//! menu with scripted input and a recording host.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::auth::{self, Login};
use super::input;
use crate::validate;

/// A line-oriented terminal.
pub trait Term {
    /// Reads a line (without its end); `None` at end of input.
    fn read_line(&mut self, prompt: &str) -> Option<String>;
    /// Reads a line without echo.
    fn read_secret(&mut self, prompt: &str) -> Option<String>;
    fn write(&mut self, text: &str);
    fn pause(&mut self, d: std::time::Duration);
}

/// Resource check results: one line per check, each fine or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub text: String,
}

/// The network settings the console edits (one adapter: the default one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSettings {
    pub interface: Option<String>,
    /// `None`: DHCP.
    pub static_address: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    /// Further adapters, addresses only: `None` is DHCP.
    pub others: BTreeMap<String, Option<(Ipv4Addr, u8)>>,
}

/// What the console needs from the appliance.
pub trait Host {
    fn banner(&self) -> String;
    fn login(&mut self, user: &str, password: &str) -> Result<Login, String>;
    fn set_password(&mut self, password: &str) -> Result<(), String>;
    /// Adapters: MAC, link, addresses, routes.
    fn describe_network(&mut self) -> String;
    fn adapters(&mut self) -> Vec<String>;
    fn network_settings(&mut self) -> NetworkSettings;
    /// Saves the settings in the configuration document and applies them.
    fn apply_network(&mut self, settings: &NetworkSettings) -> Result<String, String>;
    /// Endpoints from the configuration, as (what, host, port or none).
    fn endpoints(&mut self) -> Vec<(String, String, Option<u16>)>;
    /// Resolves a name; the addresses or why not.
    fn resolve(&mut self, host: &str) -> Result<Vec<String>, String>;
    fn connect(&mut self, host: &str, port: u16) -> Result<(), String>;
    /// Mounts, lists and unmounts an export; a line per step.
    fn test_storage(
        &mut self,
        server: &str,
        export: &str,
        version: &str,
        options: &str,
    ) -> Vec<(String, Result<String, String>)>;
    fn resources(&mut self) -> Vec<Check>;
    fn time_status(&mut self) -> String;
    /// Steps the clock to chronyd's estimate now (chronyd's makestep).
    fn step_clock(&mut self) -> Result<String, String>;
    fn support_status(&mut self) -> String;
    fn support_open(
        &mut self,
        key: &str,
        hours: f64,
        allow_from: Option<&str>,
    ) -> Result<String, String>;
    fn support_close(&mut self) -> Result<String, String>;
    /// Journal lines, newest first, of one unit or all.
    fn logs(&mut self, unit: Option<&str>) -> Result<Vec<String>, String>;
    fn tasks(&mut self) -> String;
    /// Whether the agent is activated, with which hub, or which key waits.
    fn activation_status(&mut self) -> String;
    /// Registers the agent with a hub; the activation key to confirm there.
    fn activate(&mut self, hub: &str, fingerprint: Option<&str>) -> Result<String, String>;
    fn reboot(&mut self);
    fn power_off(&mut self);
}

const LOG_PAGE: usize = 20;

pub struct Console<'a, T: Term, H: Host> {
    pub term: &'a mut T,
    pub host: &'a mut H,
}

fn counts(checks: &[Check]) -> (usize, usize) {
    (
        checks.iter().filter(|c| c.level == Level::Error).count(),
        checks.iter().filter(|c| c.level == Level::Warning).count(),
    )
}

impl<T: Term, H: Host> Console<'_, T, H> {
    fn say(&mut self, text: &str) {
        self.term.write(&format!("{text}\n"));
    }

    /// Asks until the answer passes `check`; `None` when the operator gives
    /// up (an empty line when `allow_empty` is false means: back).
    fn ask<V>(&mut self, prompt: &str, check: impl Fn(&str) -> Result<V, String>) -> Option<V> {
        loop {
            let line = self.term.read_line(prompt)?;
            if line.trim().is_empty() {
                return None;
            }
            match check(&line) {
                Ok(v) => return Some(v),
                Err(why) => self.say(&format!("  invalid: {why}")),
            }
        }
    }

    fn confirm(&mut self, prompt: &str) -> bool {
        matches!(
            self.term
                .read_line(&format!("{prompt} [y/N]: "))
                .as_deref()
                .map(str::trim),
            Some("y" | "Y" | "yes")
        )
    }

    /// One session: login, then the menu until logout. Returns false at
    /// end of input.
    pub fn session(&mut self) -> bool {
        let mut failures = 0;
        loop {
            self.say("");
            self.say(&self.host.banner());
            let user = loop {
                let Some(line) = self.term.read_line("login: ") else {
                    return false;
                };
                if let Some(user) = input::user_name(&line) {
                    break user.to_string();
                }
            };
            let Some(password) = self.term.read_secret("password: ") else {
                return false;
            };
            match self.host.login(&user, &password) {
                Ok(Login::Accepted) => break,
                Ok(Login::MustChange) => {
                    self.say("You are using the default password: choose a new one now.");
                    if !self.change_password() {
                        continue;
                    }
                    break;
                }
                Ok(Login::Refused) => {
                    failures += 1;
                    self.say("Login incorrect.");
                    self.term.pause(auth::delay_after_failures(failures));
                }
                Err(e) => self.say(&format!("Login impossible: {e}")),
            }
        }
        self.main_menu()
    }

    fn change_password(&mut self) -> bool {
        loop {
            let Some(new) = self.term.read_secret("new password: ") else {
                return false;
            };
            if let Err(why) = input::new_password(&new) {
                self.say(&format!("  invalid: {why}"));
                continue;
            }
            let Some(again) = self.term.read_secret("repeat the new password: ") else {
                return false;
            };
            if again != new {
                self.say("  the two passwords differ; again");
                continue;
            }
            match self.host.set_password(&new) {
                Ok(()) => {
                    self.say("Password changed.");
                    return true;
                }
                Err(e) => {
                    self.say(&format!("  cannot store the password: {e}"));
                    return false;
                }
            }
        }
    }

    fn main_menu(&mut self) -> bool {
        loop {
            let (errors, warnings) = counts(&self.host.resources());
            self.say("");
            self.say(&self.host.banner());
            self.say(&format!(
                "System resource check: {errors} error(s), {warnings} warning(s)"
            ));
            self.say(
                "  1: Network configuration\n  2: Test network connectivity\n  \
                 3: Test connectivity to storage\n  4: System resource check\n  \
                 5: System time\n  6: Support channel\n  7: Logs\n  \
                 8: Reboot\n  9: Shut down\n  t: Tasks\n  \
                 a: Activation\n  p: Change the password\n  x: Log out",
            );
            let Some(choice) = self.term.read_line("Choose an option: ") else {
                return false;
            };
            match choice.trim() {
                "1" => self.network_menu(),
                "2" => self.connectivity(),
                "3" => self.storage(),
                "4" => self.resource_check(),
                "5" => {
                    let s = self.host.time_status();
                    self.say(&s);
                    let step = self
                        .term
                        .read_line("s: step the clock now (when far off), Enter: back: ");
                    if matches!(step.as_deref().map(str::trim), Some("s" | "S")) {
                        match self.host.step_clock() {
                            Ok(m) => self.say(&format!("  {m}")),
                            Err(e) => self.say(&format!("  {e}")),
                        }
                    }
                }
                "6" => self.support(),
                "7" => self.logs(),
                "8" if self.confirm("Reboot the appliance?") => {
                    self.say("Rebooting.");
                    self.host.reboot();
                    return true;
                }
                "9" if self.confirm("Shut the appliance down?") => {
                    self.say("Shutting down.");
                    self.host.power_off();
                    return true;
                }
                "8" | "9" => self.say("Cancelled."),
                "t" | "T" => {
                    let s = self.host.tasks();
                    self.say(&s);
                }
                "a" | "A" => self.activation(),
                "p" | "P" => {
                    self.change_password();
                }
                "x" | "X" => {
                    self.say("Logged out.");
                    return true;
                }
                other => self.say(&format!("  {other:?} is not an option")),
            }
        }
    }

    fn network_menu(&mut self) {
        loop {
            self.say("\nNetwork configuration");
            self.say(
                "  1: Describe adapters\n  2: Use DHCP\n  3: Static IPv4 address\n  \
                 4: DNS servers and search domain\n  5: Default adapter\n  \
                 6: Reset to DHCP\n  b: Back",
            );
            let Some(choice) = self.term.read_line("Choose an option: ") else {
                return;
            };
            let mut s = self.host.network_settings();
            let changed = match choice.trim() {
                "1" => {
                    let d = self.host.describe_network();
                    self.say(&d);
                    None
                }
                "2" => match self.which_adapter(&s) {
                    None => None,
                    Some(None) => {
                        s.static_address = None;
                        s.gateway = None;
                        Some(s)
                    }
                    Some(Some(other)) => {
                        s.others.insert(other, None);
                        Some(s)
                    }
                },
                "3" => match self.which_adapter(&s) {
                    None => None,
                    Some(None) => self.static_settings(s),
                    Some(Some(other)) => self
                        .ask(
                            &format!(
                                "IPv4 address/prefix of {other} (no gateway: only the default adapter has one): "
                            ),
                            validate::address_prefix,
                        )
                        .map(|net| {
                            s.others.insert(other, Some(net));
                            s
                        }),
                },
                "4" => self.dns_settings(s),
                "5" => {
                    let adapters = self.host.adapters();
                    self.say(&format!("  adapters: {}", adapters.join(", ")));
                    self.ask("Default adapter (empty: back): ", |a| {
                        let a = a.trim();
                        if adapters.iter().any(|x| x == a) {
                            Ok(a.to_string())
                        } else {
                            Err(format!("there is no adapter {a:?}"))
                        }
                    })
                    .map(|a| {
                        // the default adapter is configured at the top level
                        s.others.remove(&a);
                        NetworkSettings {
                            interface: Some(a),
                            ..s
                        }
                    })
                }
                "6" => Some(NetworkSettings::default()),
                "b" | "B" | "" => return,
                other => {
                    self.say(&format!("  {other:?} is not an option"));
                    None
                }
            };
            if let Some(new) = changed {
                self.say(&format!("  new settings: {}", describe(&new)));
                if self.confirm("Apply and save?") {
                    match self.host.apply_network(&new) {
                        Ok(msg) => self.say(&format!("  {msg}")),
                        Err(e) => self.say(&format!("  not applied: {e}")),
                    }
                } else {
                    self.say("  nothing changed");
                }
            }
        }
    }

    /// Which adapter a change is for: `Some(None)` is the default one,
    /// `None` means back. Asked only when there are several.
    fn which_adapter(&mut self, s: &NetworkSettings) -> Option<Option<String>> {
        let adapters = self.host.adapters();
        if adapters.len() < 2 {
            return Some(None);
        }
        let default = s.interface.clone().unwrap_or_else(|| adapters[0].clone());
        loop {
            let line = self.term.read_line(&format!(
                "Adapter ({}) [{default}, the default one]: ",
                adapters.join(", ")
            ))?;
            let a = line.trim();
            if a.is_empty() || a == default {
                return Some(None);
            }
            if adapters.iter().any(|x| x == a) {
                return Some(Some(a.to_string()));
            }
            self.say(&format!("  invalid: there is no adapter {a:?}"));
        }
    }

    fn static_settings(&mut self, mut s: NetworkSettings) -> Option<NetworkSettings> {
        let net = self.ask(
            "IPv4 address/prefix (e.g. 192.0.2.10/24): ",
            validate::address_prefix,
        )?;
        let gateway = loop {
            let line = self.term.read_line("Gateway (empty: none): ")?;
            if line.trim().is_empty() {
                break None;
            }
            match validate::gateway(&line, net) {
                Ok(g) => break Some(g),
                Err(why) => self.say(&format!("  invalid: {why}")),
            }
        };
        s.static_address = Some(net);
        s.gateway = gateway;
        Some(s)
    }

    fn dns_settings(&mut self, mut s: NetworkSettings) -> Option<NetworkSettings> {
        let keep = |v: &[Ipv4Addr]| {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let dns = loop {
            let line = self.term.read_line(&format!(
                "DNS servers, comma separated (empty: keep [{}], '-': from DHCP): ",
                keep(&s.dns)
            ))?;
            match line.trim() {
                "" => break s.dns.clone(),
                "-" => break Vec::new(),
                l => match input::address_list(l) {
                    Ok(v) => break v,
                    Err(why) => self.say(&format!("  invalid: {why}")),
                },
            }
        };
        let search = loop {
            let line = self.term.read_line(&format!(
                "Search domains (empty: keep [{}], '-': none): ",
                s.search.join(", ")
            ))?;
            match line.trim() {
                "" => break s.search.clone(),
                "-" => break Vec::new(),
                l => match l
                    .split([',', ' '])
                    .filter(|d| !d.is_empty())
                    .map(validate::dns_name)
                    .collect()
                {
                    Ok(v) => break v,
                    Err(why) => self.say(&format!("  invalid: {why}")),
                },
            }
        };
        s.dns = dns;
        s.search = search;
        Some(s)
    }

    fn connectivity(&mut self) {
        let mut targets = self.host.endpoints();
        self.say("Test network connectivity: the configured endpoints, or one you give.");
        if let Some(line) = self
            .term
            .read_line("Endpoint host:port (empty: the configured ones): ")
        {
            if !line.trim().is_empty() {
                match input::endpoint(&line) {
                    Ok((h, p)) => targets = vec![("given".into(), h, Some(p))],
                    Err(why) => return self.say(&format!("  invalid: {why}")),
                }
            }
        }
        if targets.is_empty() {
            return self.say("  nothing configured to test: give an endpoint");
        }
        for (what, host, port) in targets {
            let resolved = self.host.resolve(&host);
            let line = match (resolved, port) {
                (Err(e), _) => format!("FAILED  {what} {host}: DNS: {e}"),
                (Ok(a), None) => format!("PASSED  {what} {host}: resolves to {}", a.join(", ")),
                (Ok(_), Some(p)) => match self.host.connect(&host, p) {
                    Ok(()) => format!("PASSED  {what} {host}:{p}: TCP connection made"),
                    Err(e) => format!("FAILED  {what} {host}:{p}: {e}"),
                },
            };
            self.say(&format!("  {line}"));
        }
    }

    fn storage(&mut self) {
        self.say("Test connectivity to storage (NFS): port, a test mount, a listing, unmount.");
        let Some(server) = self.ask("NFS server (name or address): ", input::host) else {
            return;
        };
        let Some(export) = self.ask("Export path (e.g. /exports/data): ", input::export) else {
            return;
        };
        let version = loop {
            let Some(line) = self.term.read_line("NFS version 3, 4.0 or 4.1 [4.1]: ") else {
                return;
            };
            match input::nfs_version(&line) {
                Ok(v) => break v,
                Err(why) => self.say(&format!("  invalid: {why}")),
            }
        };
        let options = self
            .term
            .read_line("Extra mount options (empty: none): ")
            .unwrap_or_default();
        let steps = self
            .host
            .test_storage(&server, &export, version, options.trim());
        let passed = steps.iter().all(|(_, r)| r.is_ok());
        for (step, result) in steps {
            match result {
                Ok(s) => self.say(&format!("  ok      {step}: {s}")),
                Err(e) => self.say(&format!("  FAILED  {step}: {e}")),
            }
        }
        self.say(if passed { "PASSED" } else { "FAILED" });
    }

    fn resource_check(&mut self) {
        let checks = self.host.resources();
        let (errors, warnings) = counts(&checks);
        self.say(&format!(
            "System resource check: {errors} error(s), {warnings} warning(s)"
        ));
        for c in checks {
            let tag = match c.level {
                Level::Ok => "ok     ",
                Level::Warning => "WARNING",
                Level::Error => "ERROR  ",
            };
            self.say(&format!("  {tag} {}", c.text));
        }
    }

    /// Pairs this agent with a hub: what `GET /?hub=` on port 80 does.
    fn activation(&mut self) {
        let s = self.host.activation_status();
        self.say(&format!("Activation: {s}"));
        self.say("  1: Activate with a hub\n  b: Back");
        if self
            .term
            .read_line("Choose an option: ")
            .as_deref()
            .map(str::trim)
            != Some("1")
        {
            return;
        }
        let Some(hub) = self.ask("Hub address (HOST[:PORT], 443 by default): ", |h| {
            let h = h.trim();
            if h.is_empty() || h.contains(['/', ' ', '?', '@']) {
                Err("a host name or address, with :PORT when not 443".into())
            } else {
                Ok(h.to_string())
            }
        }) else {
            return;
        };
        // Not `ask`: an empty answer here means "no fingerprint", not "back".
        let fingerprint = loop {
            let Some(line) = self.term.read_line(
                "Hub CA fingerprint (sha256:HEX, as the hub logs it; empty: trust the hub on first contact): ",
            ) else {
                return;
            };
            let f = line.trim();
            let hex = f.strip_prefix("sha256:").unwrap_or("");
            if f.is_empty() {
                break None;
            } else if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                break Some(f.to_string());
            }
            self.say("  invalid: sha256: followed by 64 hexadecimal digits");
        };
        match self.host.activate(&hub, fingerprint.as_deref()) {
            Ok(key) => {
                self.say(&format!(
                    "Activation key: {key}\nConfirm it on the hub: ferry agent activate {key} --name NAME, \
                     or its page https://{hub}/activate?activationKey={key}\n\
                     The agent then picks up its certificate by itself and closes port 80."
                ));
                if fingerprint.is_none() {
                    // Whoever answered at that address is now trusted as the hub.
                    self.say(
                        "WARNING: the hub was not verified by its fingerprint: this agent trusts the CA \
                         of whatever answered at that address. Compare the fingerprint shown under \
                         Activation with the one the hub logs before confirming the key.",
                    );
                }
            }
            Err(e) => self.say(&format!("Activation failed: {e}")),
        }
    }

    fn support(&mut self) {
        let s = self.host.support_status();
        self.say(&format!("Support channel: {s}"));
        self.say("  1: Open\n  2: Close\n  b: Back");
        match self
            .term
            .read_line("Choose an option: ")
            .as_deref()
            .map(str::trim)
        {
            Some("1") => {
                let Some(key) = self.ask("Support engineer's public key (ssh-ed25519 ...): ", |k| {
                    let k = k.trim();
                    if k.starts_with("ssh-") || k.starts_with("ecdsa-") {
                        Ok(k.to_string())
                    } else {
                        Err("an OpenSSH public key line starts with ssh-ed25519, ssh-rsa or ecdsa-".into())
                    }
                }) else {
                    return;
                };
                let hours = loop {
                    let Some(line) = self.term.read_line("Hours to stay open [4]: ") else {
                        return;
                    };
                    match line.trim() {
                        "" => break 4.0,
                        l => match l.parse::<f64>() {
                            Ok(h) if h > 0.0 && h <= 72.0 => break h,
                            _ => self.say("  invalid: a number of hours from 0.1 to 72"),
                        },
                    }
                };
                let allow = self
                    .term
                    .read_line("Only from this address range (e.g. 198.51.100.0/24; empty: any): ")
                    .unwrap_or_default();
                let allow = allow.trim();
                // the range is checked by the support channel itself
                let allow = (!allow.is_empty()).then_some(allow);
                match self.host.support_open(&key, hours, allow) {
                    Ok(m) => self.say(&format!("  {m}")),
                    Err(e) => self.say(&format!("  not opened: {e}")),
                }
            }
            Some("2") => match self.host.support_close() {
                Ok(m) => self.say(&format!("  {m}")),
                Err(e) => self.say(&format!("  {e}")),
            },
            _ => {}
        }
    }

    fn logs(&mut self) {
        let unit = self
            .term
            .read_line("Logs of which unit (e.g. ferry-agent, ferry-init; empty: all): ")
            .unwrap_or_default();
        let unit = unit.trim();
        let lines = match self.host.logs((!unit.is_empty()).then_some(unit)) {
            Ok(l) => l,
            Err(e) => return self.say(&format!("  {e}")),
        };
        if lines.is_empty() {
            return self.say("  no log lines");
        }
        for (n, page) in lines.chunks(LOG_PAGE).enumerate() {
            for l in page {
                self.say(l);
            }
            let shown = (n * LOG_PAGE + page.len()).min(lines.len());
            if shown == lines.len() {
                self.say(&format!("-- end ({} lines, newest first) --", lines.len()));
                break;
            }
            let more = self.term.read_line(&format!(
                "-- {shown} of {} lines, newest first; Enter: older, q: back -- ",
                lines.len()
            ));
            if !matches!(more.as_deref().map(str::trim), Some("")) {
                break;
            }
        }
    }
}

/// One line for a settings summary.
pub fn describe(s: &NetworkSettings) -> String {
    let adapter = s
        .interface
        .as_deref()
        .unwrap_or("the first Ethernet adapter");
    let addressing = match s.static_address {
        None => "DHCP".to_string(),
        Some((a, p)) => format!(
            "static {a}/{p}{}",
            s.gateway
                .map(|g| format!(" gateway {g}"))
                .unwrap_or_default()
        ),
    };
    let dns = if s.dns.is_empty() {
        "from DHCP".to_string()
    } else {
        s.dns
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let search = if s.search.is_empty() {
        String::new()
    } else {
        format!(", search {}", s.search.join(" "))
    };
    let others: String = s
        .others
        .iter()
        .map(|(name, a)| match a {
            None => format!("; {name}: DHCP"),
            Some((ip, p)) => format!("; {name}: static {ip}/{p}"),
        })
        .collect();
    format!("{adapter}: {addressing}, DNS {dns}{search}{others}")
}
