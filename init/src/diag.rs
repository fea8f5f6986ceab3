// SPDX-License-Identifier: GPL-2.0-only
//! `ferry-init diag`: the restricted diagnostic console a support session
//! gets (the `support` user's login shell is ferry-init, and its
//! authorized_keys forces this command). Read-only: it shows state and runs
//! tests, one command per line on stdin, answers on stdout. No shell, no
//! file access, no way to change anything.
//!
//! `ssh support@appliance status` runs one command (SSH_ORIGINAL_COMMAND)
//! and ends.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support;

const JOURNALCTL: &str = "/usr/bin/journalctl";
/// The agent's read-only socket (GET only; group support).
const AGENT_SOCKET: &str = ferry_model::paths::AGENT_READ_ONLY_SOCKET;

const HELP: &str = "commands:
  status              host name, addresses, routes, uptime, support channel
  logs [N] [UNIT]     the last N lines of the journal (default 40), of one unit
  connect HOST PORT   TCP connection test
  agent               the agent's executions (GET /v1/executions)
  help                this list
  quit                end the session
";

/// Runs the console on stdin/stdout until `quit` or end of input.
pub fn run() -> i32 {
    let mut out = io::stdout();
    // confined before reading a byte of input; no console without it
    if let Err(e) = crate::seccomp::confine(crate::seccomp::Profile::Diag) {
        let _ = writeln!(out, "the support console cannot confine itself: {e}");
        return 1;
    }
    if let Ok(cmd) = std::env::var("SSH_ORIGINAL_COMMAND") {
        if !cmd.trim().is_empty() {
            let _ = command(cmd.trim(), &mut out);
            return 0;
        }
    }
    let _ = writeln!(
        out,
        "Ferry support console (restricted, read-only). Type a command; 'help' lists them.\n"
    );
    let _ = command("status", &mut out);
    let stdin = io::stdin();
    loop {
        let _ = write!(out, "ferry-diag> ");
        let _ = out.flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = writeln!(out);
                return 0;
            }
            Ok(_) => {}
        }
        if line.len() > 512 {
            let _ = writeln!(out, "line too long");
            continue;
        }
        let _ = writeln!(out, "{}", line.trim());
        match command(line.trim(), &mut out) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
            }
        }
    }
}

/// Runs one command; `Ok(false)` ends the session.
pub fn command(line: &str, out: &mut dyn Write) -> io::Result<bool> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => {}
        ["help"] | ["?"] => write!(out, "{HELP}")?,
        ["quit"] | ["exit"] | ["logout"] => return Ok(false),
        ["status"] => status(out)?,
        ["logs", rest @ ..] => logs(rest, out)?,
        ["connect", host, port] => connect(host, port, out)?,
        ["agent"] => agent(out)?,
        _ => writeln!(out, "unknown command {line:?}; 'help' lists the commands")?,
    }
    Ok(true)
}

fn status(out: &mut dyn Write) -> io::Result<()> {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    writeln!(out, "hostname: {host}")?;
    writeln!(out, "time:     {} (UTC)", utc(now))?;
    let up = crate::sys::uptime() as u64;
    writeln!(
        out,
        "uptime:   {}d {:02}:{:02}:{:02}",
        up / 86400,
        up / 3600 % 24,
        up / 60 % 60,
        up % 60
    )?;
    writeln!(out, "addresses:")?;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                let prefix = a
                    .netmask
                    .and_then(|m| m.as_sockaddr_in().map(|m| m.ip().to_bits().count_ones()))
                    .unwrap_or(32);
                writeln!(out, "  {:<10} {}/{prefix}", a.interface_name, v4.ip())?;
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                writeln!(out, "  {:<10} {}", a.interface_name, v6.ip())?;
            }
        }
    }
    writeln!(out, "routes (IPv4):")?;
    for r in routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default()) {
        writeln!(out, "  {r}")?;
    }
    let s = support::status();
    match (s.state, s.expires_at, s.remaining) {
        (support::State::Open, Some(at), Some(left)) => writeln!(
            out,
            "support:  open until {} (UTC), {} min left",
            utc(at),
            left.as_secs().div_ceil(60)
        )?,
        _ => writeln!(out, "support:  closed")?,
    }
    Ok(())
}

/// `/proc/net/route` as `destination/len via gateway dev iface`.
pub fn routes(table: &str) -> Vec<String> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| std::net::Ipv4Addr::from(v.to_le_bytes()))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, dst, gw, mask) = (
                f.first()?,
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                hex(f.get(7)?)?,
            );
            let len = u32::from(mask).count_ones();
            let dst = if len == 0 {
                "default".to_string()
            } else {
                format!("{dst}/{len}")
            };
            Some(if gw.is_unspecified() {
                format!("{dst} dev {dev}")
            } else {
                format!("{dst} via {gw} dev {dev}")
            })
        })
        .collect()
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn valid_unit(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

fn logs(args: &[&str], out: &mut dyn Write) -> io::Result<()> {
    let mut lines = 40u32;
    let mut unit = None;
    for a in args {
        match a.parse::<u32>() {
            Ok(n) if (1..=2000).contains(&n) => lines = n,
            Ok(_) => return writeln!(out, "give 1 to 2000 lines"),
            Err(_) if valid_unit(a) => unit = Some(*a),
            Err(_) => return writeln!(out, "{a:?} is neither a line count nor a unit name"),
        }
    }
    if !Path::new(JOURNALCTL).exists() {
        return writeln!(out, "journalctl is not in this image");
    }
    let mut cmd = Command::new(JOURNALCTL);
    cmd.args(["--no-pager", "-q", "-o", "short-iso", "-n"])
        .arg(lines.to_string())
        .env("SYSTEMD_COLORS", "0");
    if let Some(u) = unit {
        cmd.args(["-t", u]);
    }
    match cmd.output() {
        Ok(o) => {
            out.write_all(&o.stdout)?;
            if !o.status.success() {
                writeln!(
                    out,
                    "journalctl: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )?;
            }
            Ok(())
        }
        Err(e) => writeln!(out, "cannot run journalctl: {e}"),
    }
}

fn connect(host: &str, port: &str, out: &mut dyn Write) -> io::Result<()> {
    let Ok(port) = port.parse::<u16>() else {
        return writeln!(out, "FAILED: {port:?} is not a port (1-65535)");
    };
    if host.len() > 253 || host.contains(char::is_whitespace) {
        return writeln!(out, "FAILED: {host:?} is not a host name or address");
    }
    let addrs: Vec<_> = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return writeln!(out, "FAILED: cannot resolve {host}: {e}"),
    };
    let mut last = None;
    for a in &addrs {
        let t = Instant::now();
        match TcpStream::connect_timeout(a, Duration::from_secs(5)) {
            Ok(_) => {
                return writeln!(
                    out,
                    "PASSED: connected to {host} ({a}) in {} ms",
                    t.elapsed().as_millis()
                )
            }
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    writeln!(
        out,
        "FAILED: {}",
        last.unwrap_or_else(|| format!("{host} has no address"))
    )
}

fn agent(out: &mut dyn Write) -> io::Result<()> {
    let mut s = match UnixStream::connect(AGENT_SOCKET) {
        Ok(s) => s,
        Err(e) => return writeln!(out, "the agent does not answer on {AGENT_SOCKET}: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /v1/executions HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = Vec::new();
    let _ = s.take(256 * 1024).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    writeln!(out, "{}", head.lines().next().unwrap_or(""))?;
    let shown: String = match serde_json::from_str::<serde_json::Value>(rest) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => rest.to_string(),
    };
    for l in shown.lines().take(200) {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_cmd(line: &str) -> (bool, String) {
        let mut out = Vec::new();
        let go_on = command(line, &mut out).unwrap();
        (go_on, String::from_utf8(out).unwrap())
    }

    #[test]
    fn commands_and_refusals() {
        assert!(run_cmd("help").1.contains("connect HOST PORT"));
        assert!(!run_cmd("quit").0);
        let (_, t) = run_cmd("sh -c id");
        assert!(t.starts_with("unknown command \"sh -c id\""), "{t}");
        assert!(run_cmd("logs 0").1.contains("give 1 to 2000"));
        assert!(run_cmd("logs ../x;y").1.contains("neither a line count"));
        assert!(run_cmd("connect host notaport").1.contains("is not a port"));
        let s = run_cmd("status").1;
        assert!(
            s.contains("hostname: ") && s.contains("routes (IPv4):"),
            "{s}"
        );
        assert!(s.contains("support:  closed"), "{s}");
    }

    #[test]
    fn connect_reports_passed_and_failed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = run_cmd(&format!("connect 127.0.0.1 {port}")).1;
        assert!(t.starts_with("PASSED: connected to 127.0.0.1"), "{t}");
        drop(l);
        let t = run_cmd(&format!("connect 127.0.0.1 {port}")).1;
        assert!(
            t.starts_with("FAILED: 127.0.0.1:") && t.contains("refused"),
            "{t}"
        );
    }

    #[test]
    fn routes_and_dates_read_well() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            routes(table),
            ["default via 10.0.2.2 dev eth0", "10.0.2.0/24 dev eth0"]
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_800_000_000), "2027-01-15 08:00:00");
    }
}
