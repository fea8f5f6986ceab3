// SPDX-License-Identifier: GPL-2.0-only
//! The menu driven by scripted input against a host that records what it
//! was asked to do.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::auth::Login;
use super::menu::{Check, Console, Host, Level, NetworkSettings, Term};

struct Script {
    input: VecDeque<String>,
    output: String,
    paused: Vec<Duration>,
}

impl Script {
    fn new(lines: &[&str]) -> Script {
        Script {
            input: lines.iter().map(|l| l.to_string()).collect(),
            output: String::new(),
            paused: Vec::new(),
        }
    }
}

impl Term for Script {
    fn read_line(&mut self, prompt: &str) -> Option<String> {
        self.output.push_str(prompt);
        let l = self.input.pop_front()?;
        self.output.push_str(&format!("{l}\n"));
        Some(l)
    }
    fn read_secret(&mut self, prompt: &str) -> Option<String> {
        self.output.push_str(prompt);
        let l = self.input.pop_front()?;
        self.output.push_str("(hidden)\n");
        Some(l)
    }
    fn write(&mut self, text: &str) {
        self.output.push_str(text);
    }
    fn pause(&mut self, d: Duration) {
        self.paused.push(d);
    }
}

#[derive(Default)]
struct Recorder {
    password: Option<String>,
    settings: NetworkSettings,
    applied: Vec<NetworkSettings>,
    actions: Vec<String>,
}

impl Host for Recorder {
    fn banner(&self) -> String {
        "Ferry appliance test".into()
    }
    fn login(&mut self, user: &str, password: &str) -> Result<Login, String> {
        Ok(match (&self.password, user) {
            (_, u) if u != "admin" => Login::Refused,
            (None, _) if password == "password" => Login::MustChange,
            (Some(p), _) if p == password => Login::Accepted,
            _ => Login::Refused,
        })
    }
    fn set_password(&mut self, password: &str) -> Result<(), String> {
        self.password = Some(password.into());
        Ok(())
    }
    fn describe_network(&mut self) -> String {
        "  eth0: MAC 52:54:00:12:34:56, link up".into()
    }
    fn adapters(&mut self) -> Vec<String> {
        vec!["eth0".into(), "eth1".into()]
    }
    fn network_settings(&mut self) -> NetworkSettings {
        self.settings.clone()
    }
    fn apply_network(&mut self, s: &NetworkSettings) -> Result<String, String> {
        self.applied.push(s.clone());
        self.settings = s.clone();
        Ok("applied".into())
    }
    fn endpoints(&mut self) -> Vec<(String, String, Option<u16>)> {
        vec![("NFS location nas".into(), "nas.example".into(), Some(2049))]
    }
    fn resolve(&mut self, host: &str) -> Result<Vec<String>, String> {
        if host == "nas.example" {
            Ok(vec!["192.0.2.20".into()])
        } else {
            Err("no such name".into())
        }
    }
    fn connect(&mut self, host: &str, port: u16) -> Result<(), String> {
        self.actions.push(format!("connect {host}:{port}"));
        Err("connection refused".into())
    }
    fn test_storage(
        &mut self,
        server: &str,
        export: &str,
        version: &str,
        options: &str,
    ) -> Vec<(String, Result<String, String>)> {
        self.actions
            .push(format!("storage {server} {export} {version} {options:?}"));
        vec![
            ("mount".into(), Ok("done".into())),
            ("list".into(), Ok("3 entries".into())),
        ]
    }
    fn resources(&mut self) -> Vec<Check> {
        vec![
            Check {
                level: Level::Warning,
                text: "1 vCPU(s) (recommended: 4)".into(),
            },
            Check {
                level: Level::Ok,
                text: "CPU feature 64-bit mode".into(),
            },
        ]
    }
    fn time_status(&mut self) -> String {
        "Synchronised: no".into()
    }
    fn step_clock(&mut self) -> Result<String, String> {
        self.actions.push("step clock".into());
        Ok("stepped".into())
    }
    fn support_status(&mut self) -> String {
        "closed".into()
    }
    fn support_open(
        &mut self,
        key: &str,
        hours: f64,
        allow_from: Option<&str>,
    ) -> Result<String, String> {
        self.actions
            .push(format!("support open {key} {hours} {allow_from:?}"));
        Ok("open".into())
    }
    fn support_close(&mut self) -> Result<String, String> {
        self.actions.push("support close".into());
        Ok("closed".into())
    }
    fn logs(&mut self, unit: Option<&str>) -> Result<Vec<String>, String> {
        Ok((0..45).map(|i| format!("line {i} of {unit:?}")).collect())
    }
    fn tasks(&mut self) -> String {
        "EXECUTION  STATUS".into()
    }
    fn activation_status(&mut self) -> String {
        "not activated".into()
    }
    fn activate(&mut self, hub: &str, fingerprint: Option<&str>) -> Result<String, String> {
        self.actions.push(format!("activate {hub} {fingerprint:?}"));
        Ok("ABCDE-FGHJK-LMNPQ-RSTUV-WXYZ2".into())
    }
    fn reboot(&mut self) {
        self.actions.push("reboot".into());
    }
    fn power_off(&mut self) {
        self.actions.push("power off".into());
    }
}

fn run(host: &mut Recorder, lines: &[&str]) -> (Script, bool) {
    let mut term = Script::new(lines);
    let more = Console {
        term: &mut term,
        host,
    }
    .session();
    (term, more)
}

#[test]
fn first_login_forces_a_password_change_before_the_menu() {
    let mut host = Recorder::default();
    let (t, more) = run(
        &mut host,
        &[
            "admin",
            "password",
            "short",
            "password",
            "new secret 1",
            "different",
            "new secret 1",
            "new secret 1",
            "x",
        ],
    );
    assert!(more);
    let o = &t.output;
    assert!(o.contains("default password: choose a new one"), "{o}");
    assert!(
        o.contains("invalid: the password must have at least 8 characters"),
        "{o}"
    );
    assert!(
        o.contains("invalid: the new password must not be the default one"),
        "{o}"
    );
    assert!(o.contains("the two passwords differ"), "{o}");
    // the menu comes only after the change
    let changed = o.find("Password changed.").unwrap();
    assert!(o.find("Choose an option").unwrap() > changed, "{o}");
    assert!(
        o.contains("System resource check: 0 error(s), 1 warning(s)"),
        "{o}"
    );
    assert_eq!(host.password.as_deref(), Some("new secret 1"));
    assert!(!o.contains("new secret 1"), "a password was echoed: {o}");
}

#[test]
fn an_empty_user_name_asks_again_without_a_password_or_a_delay() {
    let mut host = Recorder {
        password: Some("right one".into()),
        ..Default::default()
    };
    let (t, _) = run(&mut host, &["", "   ", "admin", "right one", "x"]);
    let o = &t.output;
    assert_eq!(o.matches("login: ").count(), 3, "{o}");
    assert_eq!(o.matches("password: ").count(), 1, "{o}");
    assert!(!o.contains("Login incorrect."), "{o}");
    assert!(t.paused.is_empty(), "{:?}", t.paused);
    assert!(o.contains("Logged out."), "{o}");
}

#[test]
fn failed_logins_slow_down() {
    let mut host = Recorder {
        password: Some("right one".into()),
        ..Default::default()
    };
    let (t, _) = run(
        &mut host,
        &[
            "admin",
            "a",
            "admin",
            "b",
            "root",
            "right one",
            "admin",
            "right one",
            "x",
        ],
    );
    assert_eq!(t.output.matches("Login incorrect.").count(), 3);
    assert_eq!(
        t.paused,
        [
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4)
        ]
    );
    assert!(t.output.contains("Logged out."));
}

#[test]
fn static_address_is_validated_where_typed_and_applied_once_confirmed() {
    let mut host = Recorder {
        password: Some("right one".into()),
        ..Default::default()
    };
    let (t, _) = run(
        &mut host,
        &[
            "admin",
            "right one",
            "1",
            "3",
            "",
            "192.0.2.300/24",
            "192.0.2.10/33",
            "192.0.2.10/24",
            "198.51.100.1",
            "192.0.2.1",
            "y",
            "b",
            "x",
        ],
    );
    let o = &t.output;
    assert!(
        o.contains("invalid: \"192.0.2.300\" is not an IPv4 address"),
        "{o}"
    );
    assert!(
        o.contains("invalid: the prefix length 33 is not between 1 and 32"),
        "{o}"
    );
    assert!(
        o.contains("invalid: the gateway 198.51.100.1 is outside the subnet 192.0.2.0/24"),
        "{o}"
    );
    assert!(o.contains("new settings: the first Ethernet adapter: static 192.0.2.10/24 gateway 192.0.2.1, DNS from DHCP"), "{o}");
    assert_eq!(host.applied.len(), 1);
    assert_eq!(
        host.applied[0].static_address,
        Some((Ipv4Addr::new(192, 0, 2, 10), 24))
    );
}

#[test]
fn nothing_is_applied_when_not_confirmed_or_abandoned() {
    let mut host = Recorder {
        password: Some("right one".into()),
        ..Default::default()
    };
    let (_, _) = run(
        &mut host,
        &[
            "admin",
            "right one",
            "1",
            "3",
            "",
            "10.0.0.5/8",
            "",
            "n",
            "3",
            "",
            "",
            "4",
            "9.9.9.9, nonsense",
            "-",
            "-",
            "n",
            "b",
            "x",
        ],
    );
    assert!(host.applied.is_empty());
}

#[test]
fn dns_default_adapter_and_reset() {
    let mut host = Recorder {
        password: Some("right one".into()),
        ..Default::default()
    };
    let (t, _) = run(
        &mut host,
        &[
            "admin",
            "right one",
            "1",
            "4",
            "192.0.2.53, 192.0.2.54",
            "corp.example bad_domain",
            "corp.example",
            "y",
            "5",
            "eth9",
            "eth1",
            "y",
            "6",
            "y",
            "b",
            "x",
        ],
    );
    assert!(
        t.output
            .contains("invalid: \"bad_domain\" is not a DNS name"),
        "{}",
        t.output
    );
    assert!(
        t.output.contains("invalid: there is no adapter \"eth9\""),
        "{}",
        t.output
    );
    assert_eq!(host.applied.len(), 3);
    assert_eq!(host.applied[0].dns.len(), 2);
    assert_eq!(host.applied[0].search, ["corp.example"]);
    assert_eq!(host.applied[1].interface.as_deref(), Some("eth1"));
    assert_eq!(host.applied[1].dns.len(), 2, "the adapter change keeps DNS");
    assert_eq!(host.applied[2], NetworkSettings::default());
}

#[test]
fn tests_resources_time_logs_tasks_support_and_power() {
    let mut host = Recorder {
        password: Some("right one".into()),
        ..Default::default()
    };
    let (t, more) = run(
        &mut host,
        &[
            "admin",
            "right one",
            "2",
            "",
            "2",
            "nas.example",
            "3",
            "nas.example",
            "exports",
            "/exports",
            "4.2",
            "3",
            "port=12049",
            "4",
            "5",
            "s",
            "t",
            "7",
            "ferry-agent",
            "",
            "q",
            "6",
            "1",
            "not a key",
            "ssh-ed25519 AAAA test",
            "100",
            "0.5",
            "",
            "6",
            "2",
            "a",
            "1",
            "hub.example/x",
            "hub.example:8443",
            "sha256:zz",
            "",
            "8",
            "n",
            "9",
            "y",
        ],
    );
    assert!(more);
    let o = &t.output;
    assert!(
        o.contains("FAILED  NFS location nas nas.example:2049: connection refused"),
        "{o}"
    );
    assert!(o.contains("invalid: \"nas.example\" has no port"), "{o}");
    assert!(
        o.contains("invalid: \"exports\" is not an export path"),
        "{o}"
    );
    assert!(
        o.contains("invalid: NFS version \"4.2\" is not one of 3, 4.0, 4.1"),
        "{o}"
    );
    assert!(o.contains("PASSED"), "{o}");
    assert!(o.contains("WARNING 1 vCPU(s)"), "{o}");
    assert!(o.contains("Synchronised: no"), "{o}");
    assert!(o.contains("EXECUTION  STATUS"), "{o}");
    assert!(
        o.contains("line 0 of Some(\"ferry-agent\")") && o.contains("line 39 of"),
        "{o}"
    );
    assert!(!o.contains("line 40 of"), "paging stopped at q: {o}");
    assert!(
        o.contains("invalid: a number of hours from 0.1 to 72"),
        "{o}"
    );
    assert!(o.contains("Activation: not activated"), "{o}");
    assert!(o.contains("invalid: a host name or address"), "{o}");
    assert!(o.contains("invalid: sha256: followed by 64"), "{o}");
    assert!(
        o.contains("Activation key: ABCDE-FGHJK-LMNPQ-RSTUV-WXYZ2"),
        "{o}"
    );
    assert!(
        o.contains("WARNING: the hub was not verified by its fingerprint"),
        "{o}"
    );
    assert!(o.contains("Cancelled."), "{o}");
    assert_eq!(
        host.actions,
        [
            "connect nas.example:2049",
            "storage nas.example /exports 3 \"port=12049\"",
            "step clock",
            "support open ssh-ed25519 AAAA test 0.5 None",
            "support close",
            "activate hub.example:8443 None",
            "power off",
        ]
    );
}

#[test]
fn further_adapters_get_an_address_or_dhcp_without_a_gateway() {
    let mut host = Recorder {
        password: Some("right one".into()),
        ..Default::default()
    };
    let (t, _) = run(
        &mut host,
        &[
            "admin",
            "right one",
            "1",
            "3",
            "eth9",
            "eth1",
            "198.51.100.5/24",
            "y",
            "2",
            "eth1",
            "y",
            "5",
            "eth1",
            "y",
            "b",
            "x",
        ],
    );
    let o = &t.output;
    assert!(o.contains("invalid: there is no adapter \"eth9\""), "{o}");
    assert!(
        o.contains("no gateway: only the default adapter has one"),
        "{o}"
    );
    assert!(o.contains("new settings: the first Ethernet adapter: DHCP, DNS from DHCP; eth1: static 198.51.100.5/24"), "{o}");
    assert_eq!(host.applied.len(), 3);
    assert_eq!(
        host.applied[0].others["eth1"],
        Some((Ipv4Addr::new(198, 51, 100, 5), 24))
    );
    assert_eq!(
        host.applied[0].static_address, None,
        "the default adapter is untouched"
    );
    assert_eq!(host.applied[1].others["eth1"], None);
    assert_eq!(host.applied[2].interface.as_deref(), Some("eth1"));
    assert!(
        host.applied[2].others.is_empty(),
        "the new default adapter left the others"
    );
}
