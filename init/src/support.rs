// SPDX-License-Identifier: GPL-2.0-only
//! The support channel: for a limited time, a support engineer's SSH key
//! reaches a restricted diagnostic console (`ferry-init diag`), never a
//! shell.
//!
//! - Off by default. Opened from the console menu ([`open`],
//!   [`open_outbound`]) or by the configuration document
//!   (`support.open_hours` / `open_minutes`), closed by [`close`], at
//!   expiry, and at reboot: the open session is kept in /run only.
//! - Inbound mode: dropbear listens on port 22 (the firewall opens it,
//!   optionally only from `allow_from`), accepts only that key, passwords
//!   off. Outbound mode: dbclient connects to the support host and forwards
//!   its `tunnel_port` back to dropbear, which then listens on 127.0.0.1
//!   only. The support host must present the key the configuration pins
//!   (`outbound.host_key`, checked by dbclient against a known_hosts file
//!   written for it, see [`Tunnel`]): whoever could answer in its place
//!   would otherwise be offered the console's login.
//! - The session runs as the unprivileged user `support`, whose login shell
//!   is ferry-init itself: whatever command a client asks for, it gets the
//!   diagnostic console (and authorized_keys forces it too).
//!
//! Expiry is decided on CLOCK_BOOTTIME, so an NTP step at boot neither
//! shortens nor lengthens the window; the wall-clock time shown is derived.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::accounts::{SUPPORT_HOME, SUPPORT_SHELL};
use crate::config::document::Document;
use crate::config::network::parse_cidr;
use crate::config::support::{check_host_key, SupportOutbound, SUPPORT_MAX_MINUTES};
use crate::firewall::SupportAccess;
use crate::hostkey::{self, HostKey, HostKeyPin};
use crate::services::Service;

/// The open session, if any (tmpfs: gone at reboot).
pub const STATE: &str = "/run/ferry/support.json";
/// Keys kept across boots: dropbear's host key and the client key of the
/// outbound mode.
pub const KEYS: &str = "/data/ferry/support";
pub const DROPBEAR: &str = "/usr/sbin/dropbear";
pub const DBCLIENT: &str = "/usr/bin/dbclient";
pub const DROPBEARKEY: &str = "/usr/bin/dropbearkey";
/// dbclient's HOME in the outbound mode: `.ssh/known_hosts` with the
/// support host's pinned key, rewritten at each start of the tunnel.
pub const CLIENT_HOME: &str = "/run/ferry/support-client";
/// How long the key scan of a host pinned by fingerprint waits.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(20);
/// Supervised process names.
pub const SERVER: &str = "support-dropbear";
pub const CLIENT: &str = "support-tunnel";
/// Default time limit from the console.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    #[error("support channel: public key: {0}")]
    Key(String),
    #[error("support channel: time limit: give 1 minute to {} hours", SUPPORT_MAX_MINUTES / 60)]
    Duration,
    #[error("support channel: allow_from {0:?} is not an IPv4 network (a.b.c.d/n)")]
    AllowFrom(String),
    #[error("support channel: the support host's key (outbound.host_key): {0}")]
    HostKey(String),
    #[error("support channel: reading the key of the support host {host}:{port}: {source}")]
    Scan {
        host: String,
        port: u16,
        #[source]
        source: crate::hostkey::ScanError,
    },
    #[error("support channel: the support host {host}:{port} presents the {kind} key {found}, not the configured {want}: refused")]
    HostKeyMismatch {
        host: String,
        port: u16,
        kind: String,
        found: String,
        want: String,
    },
    #[error("support channel: support-tunnel: {0}")]
    TunnelArgs(String),
    #[error("support channel: {what} (exit {code}): {stderr}")]
    Tool {
        what: String,
        code: i32,
        stderr: String,
    },
    #[error("support channel: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SupportError {
    let what = what.into();
    move |source| SupportError::Io { what, source }
}

/// Now, on both clocks (injected in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Seconds since the epoch (for display).
    pub wall: u64,
    /// Seconds since boot, CLOCK_BOOTTIME (for decisions).
    pub boot: u64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            boot: crate::sys::uptime() as u64,
        }
    }
}

/// How the engineer reaches the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Inbound { allow_from: Option<String> },
    Outbound(SupportOutbound),
}

/// An open support session, as kept in [`STATE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub public_key: String,
    pub mode: Mode,
    /// Wall clock, for display.
    pub opened_at: u64,
    pub expires_at: u64,
    /// CLOCK_BOOTTIME seconds at which it closes.
    pub expires_boot: u64,
    /// Who opened it: "console", "configuration document".
    pub origin: String,
}

impl Session {
    /// Validates and makes a session that starts now.
    pub fn new(
        public_key: &str,
        duration: Duration,
        mode: Mode,
        origin: &str,
        now: Clock,
    ) -> Result<Session, SupportError> {
        crate::validate::check_public_key(public_key).map_err(SupportError::Key)?;
        let secs = duration.as_secs();
        if secs < 60 || secs > u64::from(SUPPORT_MAX_MINUTES) * 60 {
            return Err(SupportError::Duration);
        }
        match &mode {
            Mode::Inbound {
                allow_from: Some(a),
            } => {
                if parse_cidr(a).is_none() {
                    return Err(SupportError::AllowFrom(a.clone()));
                }
            }
            Mode::Inbound { allow_from: None } => {}
            Mode::Outbound(o) => {
                check_host_key(o.host_key.as_deref()).map_err(SupportError::HostKey)?;
            }
        }
        Ok(Session {
            public_key: public_key.trim().to_string(),
            mode,
            opened_at: now.wall,
            expires_at: now.wall + secs,
            expires_boot: now.boot + secs,
            origin: origin.to_string(),
        })
    }

    pub fn expired(&self, now: Clock) -> bool {
        now.boot >= self.expires_boot
    }

    /// Time left.
    pub fn remaining(&self, now: Clock) -> Duration {
        Duration::from_secs(self.expires_boot.saturating_sub(now.boot))
    }

    /// What the firewall must let through.
    pub fn access(&self) -> SupportAccess {
        match &self.mode {
            Mode::Inbound { allow_from } => SupportAccess::Inbound {
                allow_from: allow_from.as_deref().and_then(parse_cidr),
            },
            Mode::Outbound(o) => SupportAccess::Outbound { port: o.port },
        }
    }

    /// The authorized_keys line: only this key, only the diagnostic
    /// console, no forwarding, no terminal (the console reads lines).
    pub fn authorized_keys(&self) -> String {
        format!(
            "command=\"{SUPPORT_SHELL} diag\",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty {}\n",
            self.public_key
        )
    }
}

/// Whether the channel is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
}

/// What [`status`] reports (for the console menu and the diagnostic
/// console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Seconds since the epoch.
    pub expires_at: Option<u64>,
    pub remaining: Option<Duration>,
    pub mode: Option<Mode>,
    /// The appliance's public key for the outbound mode, to install on the
    /// support host (`~user/.ssh/authorized_keys`); once generated.
    pub client_key: Option<String>,
}

/// Where the session is kept (a scratch directory in tests).
#[derive(Debug, Clone)]
pub struct Store {
    pub state: PathBuf,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            state: STATE.into(),
        }
    }
}

impl Store {
    pub fn load(&self) -> Option<Session> {
        let text = fs::read_to_string(&self.state).ok()?;
        match serde_json::from_str(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!(
                    "support: {} is unreadable ({e}); closing the channel",
                    self.state.display()
                );
                let _ = fs::remove_file(&self.state);
                None
            }
        }
    }

    pub fn save(&self, s: &Session) -> Result<(), SupportError> {
        let what = format!("write {}", self.state.display());
        if let Some(d) = self.state.parent() {
            fs::create_dir_all(d).map_err(io_err(what.clone()))?;
        }
        let tmp = self.state.with_extension("tmp");
        fs::write(&tmp, serde_json::to_string_pretty(s).unwrap_or_default())
            .map_err(io_err(what.clone()))?;
        fs::rename(&tmp, &self.state).map_err(io_err(what))
    }

    pub fn remove(&self) -> Result<bool, SupportError> {
        match fs::remove_file(&self.state) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(format!("remove {}", self.state.display()))(e)),
        }
    }

    /// The session in force at `now`; an expired one is removed.
    pub fn current(&self, now: Clock) -> Option<Session> {
        let s = self.load()?;
        if s.expired(now) {
            let _ = self.remove();
            log::info!(
                "support: channel closed: its time limit passed (opened by the {})",
                s.origin
            );
            return None;
        }
        Some(s)
    }

    pub fn status(&self, now: Clock) -> Status {
        let client_key = client_public_key();
        match self.load().filter(|s| !s.expired(now)) {
            None => Status {
                state: State::Closed,
                expires_at: None,
                remaining: None,
                mode: None,
                client_key,
            },
            Some(s) => Status {
                state: State::Open,
                expires_at: Some(s.expires_at),
                remaining: Some(s.remaining(now)),
                mode: Some(s.mode.clone()),
                client_key,
            },
        }
    }
}

/// Asks PID 1 to act now (SIGHUP: it re-reads the configuration and the
/// support state); does nothing outside PID 1.
fn notify() {
    if std::process::id() == 1 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(1),
            nix::sys::signal::Signal::SIGHUP,
        );
    }
}

/// Opens the channel in inbound mode (dropbear on port 22) for `duration`,
/// optionally only from `allow_from` (`a.b.c.d/n`). Replaces an open one.
pub fn open(
    public_key: &str,
    duration: Duration,
    allow_from: Option<&str>,
) -> Result<Status, SupportError> {
    let now = Clock::now();
    let s = Session::new(
        public_key,
        duration,
        Mode::Inbound {
            allow_from: allow_from.map(str::to_string),
        },
        "console",
        now,
    )?;
    let store = Store::default();
    store.save(&s)?;
    log::info!(
        "support: channel opened from the console for {} min",
        duration.as_secs() / 60
    );
    notify();
    Ok(store.status(now))
}

/// Opens the channel in outbound mode: the appliance connects to the
/// support host and offers the console through a reverse tunnel.
pub fn open_outbound(
    public_key: &str,
    duration: Duration,
    outbound: &SupportOutbound,
) -> Result<Status, SupportError> {
    let now = Clock::now();
    let s = Session::new(
        public_key,
        duration,
        Mode::Outbound(outbound.clone()),
        "console",
        now,
    )?;
    let store = Store::default();
    store.save(&s)?;
    log::info!(
        "support: channel opened from the console for {} min (outbound to {}:{})",
        duration.as_secs() / 60,
        outbound.host,
        outbound.port
    );
    notify();
    Ok(store.status(now))
}

/// Closes the channel (a no-op when it is closed).
pub fn close() -> Result<(), SupportError> {
    if Store::default().remove()? {
        log::info!("support: channel closed from the console");
    }
    notify();
    Ok(())
}

/// State, expiry and mode of the channel.
pub fn status() -> Status {
    Store::default().status(Clock::now())
}

/// Opens the channel as the configuration document says (at boot, or when
/// a changed document is applied). Returns whether it opened.
pub fn open_from_config(doc: &Document, store: &Store, now: Clock) -> Result<bool, SupportError> {
    let Some(sec) = &doc.support else {
        return Ok(false);
    };
    let (Some(key), Some(duration)) = (&sec.public_key, sec.open_for()) else {
        return Ok(false);
    };
    let mode = match &sec.outbound {
        Some(o) => Mode::Outbound(o.clone()),
        None => Mode::Inbound {
            allow_from: sec.allow_from.clone(),
        },
    };
    let s = Session::new(key, duration, mode, "configuration document", now)?;
    store.save(&s)?;
    Ok(true)
}

fn client_key_path() -> PathBuf {
    Path::new(KEYS).join("client_ed25519")
}

/// The outbound mode's public key, if generated.
pub fn client_public_key() -> Option<String> {
    fs::read_to_string(Path::new(KEYS).join("client_ed25519.pub"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Creates a key with dropbearkey unless it exists; returns its public line.
fn ensure_key(path: &Path) -> Result<String, SupportError> {
    if !path.exists() {
        let out = crate::reaper::run(
            Command::new(DROPBEARKEY)
                .args(["-t", "ed25519", "-f"])
                .arg(path),
        )
        .map_err(io_err(format!("run {DROPBEARKEY}")))?;
        if !out.status.success() {
            return Err(SupportError::Tool {
                what: format!("{DROPBEARKEY} -t ed25519 -f {}", path.display()),
                code: out.status.code().unwrap_or(-1),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    let out = crate::reaper::run(Command::new(DROPBEARKEY).arg("-y").arg("-f").arg(path))
        .map_err(io_err(format!("run {DROPBEARKEY} -y")))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ssh-"))
        .map(str::to_string)
        .ok_or_else(|| SupportError::Io {
            what: format!("read the public key of {}", path.display()),
            source: io::Error::other("dropbearkey printed none"),
        })
}

/// Writes the support user's authorized_keys (root-owned, as dropbear
/// wants), creates the keys, and returns the processes to supervise.
pub fn prepare(s: &Session) -> Result<Vec<Service>, SupportError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(KEYS).map_err(io_err(format!("mkdir {KEYS}")))?;
    let _ = fs::set_permissions(KEYS, fs::Permissions::from_mode(0o700));
    let ssh = Path::new(SUPPORT_HOME).join(".ssh");
    fs::create_dir_all(&ssh).map_err(io_err(format!("mkdir {}", ssh.display())))?;
    for d in [Path::new(SUPPORT_HOME), ssh.as_path()] {
        let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
    }
    let ak = ssh.join("authorized_keys");
    fs::write(&ak, s.authorized_keys()).map_err(io_err(format!("write {}", ak.display())))?;
    let _ = fs::set_permissions(&ak, fs::Permissions::from_mode(0o644));
    let host_key = Path::new(KEYS).join("dropbear_ed25519_host_key");
    let host_pub = ensure_key(&host_key)?;
    log::info!("support: host key {host_pub}");
    let listen = match &s.mode {
        Mode::Inbound { .. } => "22".to_string(),
        Mode::Outbound(_) => "127.0.0.1:22".to_string(),
    };
    let server = Service {
        name: SERVER.into(),
        // -F foreground, -E log to stderr (the journal), -s no passwords,
        // -w no root, -j/-k no port forwarding, -T 3 tries
        exec: [
            DROPBEAR, "-F", "-E", "-s", "-w", "-j", "-k", "-T", "3", "-p", &listen, "-r",
        ]
        .iter()
        .map(|x| x.to_string())
        .chain([host_key.display().to_string()])
        .collect(),
        user: Some("root".into()),
        // bind 22, switch to the support user
        capabilities: vec![
            "CAP_NET_BIND_SERVICE".into(),
            "CAP_SETUID".into(),
            "CAP_SETGID".into(),
        ],
        environment: Default::default(),
        tty: None,
        open_files: None,
        seccomp: None,
    };
    let mut out = vec![server];
    if let Mode::Outbound(o) = &s.mode {
        let key = client_key_path();
        let public = ensure_key(&key)?;
        let _ = fs::write(
            Path::new(KEYS).join("client_ed25519.pub"),
            format!("{public}\n"),
        );
        log::info!(
            "support: outbound to {}@{}:{}, tunnel port {}; the support host must accept the key {public}",
            o.user,
            o.host,
            o.port,
            o.tunnel_port
        );
        let tunnel = Tunnel::for_outbound(o, &key, Path::new(CLIENT_HOME))?;
        out.push(Service {
            name: CLIENT.into(),
            exec: [SUPPORT_SHELL.to_string(), "support-tunnel".to_string()]
                .into_iter()
                .chain(tunnel.args())
                .collect(),
            user: Some("root".into()),
            capabilities: vec![],
            environment: Default::default(),
            tty: None,
            open_files: None,
            seccomp: None,
        });
    }
    Ok(out)
}

/// The outbound tunnel's process, `ferry-init support-tunnel HOME HOST PORT
/// HOST_KEY -- DBCLIENT ARGS...`: it writes HOME/.ssh/known_hosts with the
/// support host's pinned key (a key pinned by fingerprint is first read
/// from the host and compared, see [`crate::hostkey`]), then becomes
/// dbclient, which refuses a host that presents another key.
///
/// dbclient runs without `-y` (which accepts any key it has no line for,
/// such as one of another type), and with "n" on its standard input: a key
/// it has no line for makes it ask on the terminal or, with none, on
/// standard input, and at end of input its prompt spins forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// dbclient's HOME.
    pub home: PathBuf,
    pub host: String,
    pub port: u16,
    /// As in the configuration: a public key line or `SHA256:...`.
    pub host_key: String,
    /// dbclient and its arguments.
    pub command: Vec<String>,
}

impl Tunnel {
    /// The tunnel of the outbound mode, with the client key `key`.
    pub fn for_outbound(
        o: &SupportOutbound,
        key: &Path,
        home: &Path,
    ) -> Result<Tunnel, SupportError> {
        let host_key = o
            .host_key
            .clone()
            .ok_or_else(|| SupportError::HostKey("none configured".into()))?;
        Ok(Tunnel {
            home: home.to_path_buf(),
            host: o.host.clone(),
            port: o.port,
            host_key,
            // -N no command, -T no terminal, -K keepalive; a refused
            // forward ends it, so supervision tries again
            command: vec![
                DBCLIENT.into(),
                "-N".into(),
                "-T".into(),
                "-K".into(),
                "30".into(),
                "-o".into(),
                "ExitOnForwardFailure=yes".into(),
                "-i".into(),
                key.display().to_string(),
                "-p".into(),
                o.port.to_string(),
                "-R".into(),
                format!("127.0.0.1:{}:127.0.0.1:22", o.tunnel_port),
                format!("{}@{}", o.user, o.host),
            ],
        })
    }

    /// The arguments after `support-tunnel`.
    pub fn args(&self) -> Vec<String> {
        [
            self.home.display().to_string(),
            self.host.clone(),
            self.port.to_string(),
            self.host_key.clone(),
            "--".into(),
        ]
        .into_iter()
        .chain(self.command.iter().cloned())
        .collect()
    }

    pub fn from_args(args: &[String]) -> Result<Tunnel, SupportError> {
        let bad = |why: &str| SupportError::TunnelArgs(why.to_string());
        let [home, host, port, host_key, sep, command @ ..] = args else {
            return Err(bad("usage: HOME HOST PORT HOST_KEY -- DBCLIENT ARGS..."));
        };
        if sep != "--" || command.is_empty() {
            return Err(bad("usage: HOME HOST PORT HOST_KEY -- DBCLIENT ARGS..."));
        }
        Ok(Tunnel {
            home: home.into(),
            host: host.clone(),
            port: port
                .parse()
                .map_err(|_| bad(&format!("{port:?} is not a port")))?,
            host_key: host_key.clone(),
            command: command.to_vec(),
        })
    }

    /// The key the support host must present: the pinned one, or the one
    /// it offers if that has the pinned fingerprint.
    pub fn expected_key(&self, timeout: Duration) -> Result<HostKey, SupportError> {
        match HostKeyPin::parse(&self.host_key).map_err(SupportError::HostKey)? {
            HostKeyPin::Key(k) => Ok(k),
            pin @ HostKeyPin::Fingerprint(_) => {
                let k = hostkey::scan(&self.host, self.port, timeout).map_err(|source| {
                    SupportError::Scan {
                        host: self.host.clone(),
                        port: self.port,
                        source,
                    }
                })?;
                if !pin.matches(&k) {
                    return Err(SupportError::HostKeyMismatch {
                        host: self.host.clone(),
                        port: self.port,
                        found: k.fingerprint(),
                        kind: k.kind,
                        want: pin.fingerprint(),
                    });
                }
                Ok(k)
            }
        }
    }

    /// Writes known_hosts for `key` and returns dbclient's command, ready
    /// to run (or exec).
    pub fn command(&self, key: &HostKey) -> Result<Command, SupportError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let ssh = self.home.join(".ssh");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&ssh)
            .map_err(io_err(format!("mkdir {}", ssh.display())))?;
        let file = ssh.join("known_hosts");
        let tmp = ssh.join("known_hosts.tmp");
        let what = format!("write {}", file.display());
        let _ = fs::remove_file(&tmp);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(hostkey::known_hosts_line(&self.host, key).as_bytes()))
            .map_err(io_err(what.clone()))?;
        fs::rename(&tmp, &file).map_err(io_err(what))?;
        let (r, w) = nix::unistd::pipe().map_err(|e| io_err("pipe")(e.into()))?;
        fs::File::from(w)
            .write_all(b"n\n")
            .map_err(io_err("write the answer to dbclient's prompt"))?;
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .env("HOME", &self.home)
            .stdin(std::process::Stdio::from(r));
        // no controlling terminal, or dbclient would ask there (a service
        // is a session leader already: then this fails, harmlessly)
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        Ok(cmd)
    }
}

/// `ferry-init support-tunnel ...` (a service of PID 1): becomes dbclient,
/// or ends with a message saying why not. Returns the exit status.
pub fn tunnel_main(args: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    let run = || -> Result<std::convert::Infallible, SupportError> {
        let t = Tunnel::from_args(args)?;
        let key = t.expected_key(SCAN_TIMEOUT)?;
        eprintln!(
            "support-tunnel: {}:{} must present the {} key {}",
            t.host,
            t.port,
            key.kind,
            key.fingerprint()
        );
        let e = t.command(&key)?.exec();
        Err(io_err(format!("run {}", t.command[0]))(e))
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAj9j9ewgHr33Af0NDvb6O2gdcak/0lKbrkSnE5YqbHj engineer@example";

    fn at(boot: u64) -> Clock {
        Clock {
            wall: 1_800_000_000 + boot,
            boot,
        }
    }

    #[test]
    fn a_session_opens_expires_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            state: dir.path().join("support.json"),
        };
        assert_eq!(store.status(at(100)).state, State::Closed);
        let s = Session::new(
            KEY,
            Duration::from_secs(3600),
            Mode::Inbound { allow_from: None },
            "console",
            at(100),
        )
        .unwrap();
        store.save(&s).unwrap();
        let st = store.status(at(160));
        assert_eq!(st.state, State::Open);
        assert_eq!(st.remaining, Some(Duration::from_secs(3540)));
        assert_eq!(st.expires_at, Some(1_800_000_000 + 3700));
        assert_eq!(store.current(at(3699)), Some(s.clone()));
        assert_eq!(s.access(), SupportAccess::Inbound { allow_from: None });
        // at expiry it closes itself and the state is gone
        assert_eq!(store.current(at(3700)), None);
        assert!(!store.state.exists());
        assert_eq!(store.status(at(3700)).state, State::Closed);
        // close: open again, then remove
        store.save(&s).unwrap();
        assert!(store.remove().unwrap());
        assert!(!store.remove().unwrap());
        assert_eq!(store.current(at(200)), None);
    }

    #[test]
    fn a_wall_clock_step_does_not_move_the_expiry() {
        let s = Session::new(
            KEY,
            Duration::from_secs(600),
            Mode::Inbound { allow_from: None },
            "console",
            at(10),
        )
        .unwrap();
        let jumped = Clock {
            wall: at(10).wall + 86_400,
            boot: 20,
        };
        assert!(!s.expired(jumped));
        assert!(s.expired(Clock { wall: 0, boot: 610 }));
    }

    #[test]
    fn bad_requests_are_refused() {
        let m = || Mode::Inbound { allow_from: None };
        let e = Session::new(
            "ssh-ed25519 AAAA",
            Duration::from_secs(600),
            m(),
            "c",
            at(0),
        );
        assert!(matches!(e, Err(SupportError::Key(_))), "{e:?}");
        let e = Session::new(KEY, Duration::from_secs(30), m(), "c", at(0));
        assert!(matches!(e, Err(SupportError::Duration)));
        let e = Session::new(KEY, Duration::from_secs(8 * 24 * 3600), m(), "c", at(0));
        assert!(matches!(e, Err(SupportError::Duration)));
        let e = Session::new(
            KEY,
            Duration::from_secs(600),
            Mode::Inbound {
                allow_from: Some("10.0.0.0".into()),
            },
            "c",
            at(0),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "support channel: allow_from \"10.0.0.0\" is not an IPv4 network (a.b.c.d/n)"
        );
    }

    fn outbound(host_key: Option<&str>) -> SupportOutbound {
        SupportOutbound {
            host: "127.0.0.1".into(),
            host_key: host_key.map(str::to_string),
            port: 22,
            user: "ferry".into(),
            tunnel_port: 2222,
        }
    }

    #[test]
    fn the_outbound_mode_needs_the_support_hosts_key() {
        let open = |k: Option<&str>| {
            Session::new(
                KEY,
                Duration::from_secs(600),
                Mode::Outbound(outbound(k)),
                "c",
                at(0),
            )
        };
        let e = open(None).unwrap_err().to_string();
        assert!(
            e.contains("outbound.host_key") && e.contains("needs the support host's key"),
            "{e}"
        );
        let e = open(Some("ssh-ed25519 AAAA")).unwrap_err().to_string();
        assert!(e.contains("outbound.host_key"), "{e}");
        open(Some(KEY)).unwrap();
        open(Some("SHA256:JMWG1RL0irfZS4s/RoRsOw3EGAK3LzXdOPHhXPtTlII")).unwrap();
    }

    #[test]
    fn the_tunnel_checks_the_host_key_and_passes_its_arguments_through() {
        let t = Tunnel::for_outbound(
            &outbound(Some(KEY)),
            Path::new("/k/client"),
            Path::new(CLIENT_HOME),
        )
        .unwrap();
        assert!(
            !t.command.iter().any(|a| a.starts_with("-y")),
            "-y accepts any key dbclient has no line for: {:?}",
            t.command
        );
        assert_eq!(
            t.command.last().map(String::as_str),
            Some("ferry@127.0.0.1")
        );
        let args = t.args();
        assert_eq!(args[..5], [CLIENT_HOME, "127.0.0.1", "22", KEY, "--"]);
        assert_eq!(Tunnel::from_args(&args).unwrap(), t);
        for bad in [&args[..4], &args[..5]] {
            assert!(matches!(
                Tunnel::from_args(bad),
                Err(SupportError::TunnelArgs(_))
            ));
        }
        let mut wrong_port = args.clone();
        wrong_port[2] = "x".into();
        assert!(Tunnel::from_args(&wrong_port).is_err());
        assert!(Tunnel::for_outbound(&outbound(None), Path::new("/k"), Path::new("/h")).is_err());
    }

    /// dbclient as the tunnel runs it, against a real dropbear support host
    /// (package dropbear-bin): a host with another key than the pinned one
    /// is refused in the key exchange, before anything is forwarded,
    /// whether the pin is a key or a fingerprint, and whatever type the
    /// pinned key is; the right key gets past it to authentication.
    #[test]
    fn dbclient_goes_only_to_the_pinned_support_host() {
        use crate::hostkey::tests::{dropbear_installed, server};
        if !dropbear_installed() {
            eprintln!("skipped: needs dropbear-bin");
            return;
        }
        let _t = crate::reaper::TEST_CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let host = server("ed25519");
        let client_key = host.dir.path().join("client");
        let out = Command::new(DROPBEARKEY)
            .args(["-t", "ed25519", "-f"])
            .arg(&client_key)
            .output()
            .unwrap();
        assert!(out.status.success());
        // another key of the same type, and one of another type
        let other = crate::hostkey::tests::server("ecdsa");
        let run = |pin: &str| -> Result<String, SupportError> {
            let mut o = outbound(Some(pin));
            o.port = host.port;
            let home = tempfile::tempdir().unwrap();
            let t = Tunnel::for_outbound(&o, &client_key, home.path())?;
            let key = t.expected_key(Duration::from_secs(20))?;
            let out = t.command(&key)?.output().unwrap();
            assert!(!out.status.success());
            Ok(String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let same_type_other_key = format!("ssh-ed25519 {}", KEY.split(' ').nth(1).unwrap());
        let err = run(&same_type_other_key).unwrap();
        assert!(err.contains("host key mismatch for 127.0.0.1"), "{err}");
        // dbclient has no line for the key type the host offers: it asks,
        // reads "n", and ends (with -y it went on)
        let err = run(&other.key.public_line()).unwrap();
        assert!(err.contains("Didn't validate host key"), "{err}");
        // a pinned fingerprint that is not the host's: refused before dbclient
        let e = run(&other.key.fingerprint()).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "presents the ssh-ed25519 key {}, not the configured {}",
                host.key.fingerprint(),
                other.key.fingerprint()
            )),
            "{e}"
        );
        // the host's own key, pinned either way: the key exchange passes
        // (our client key is not authorized there, so it ends at login)
        for pin in [host.key.public_line(), host.key.fingerprint()] {
            let err = run(&pin).unwrap();
            assert!(
                !err.contains("mismatch") && !err.contains("Didn't validate"),
                "{pin}: {err}"
            );
            assert!(
                err.contains("No auth methods could be used"),
                "{pin}: {err}"
            );
        }
    }

    #[test]
    fn the_configuration_opens_it_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            state: dir.path().join("support.json"),
        };
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/config/v1-support.yaml"),
        )
        .unwrap();
        let doc = crate::config::parse(&text, "t").unwrap();
        assert!(open_from_config(&doc, &store, at(5)).unwrap());
        let s = store.load().unwrap();
        assert_eq!(s.expires_boot, 5 + 4 * 3600);
        assert_eq!(s.origin, "configuration document");
        assert_eq!(
            s.access(),
            SupportAccess::Inbound {
                allow_from: Some(("198.51.100.0".parse().unwrap(), 24))
            }
        );
        assert!(s.authorized_keys().starts_with(
            "command=\"/usr/sbin/ferry-init diag\",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty ssh-ed25519 AAAA"
        ));
        // no open_hours: nothing opens
        let doc = crate::config::parse("version: 1\n", "t").unwrap();
        store.remove().unwrap();
        assert!(!open_from_config(&doc, &store, at(5)).unwrap());
        assert!(store.load().is_none());
        // outbound
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/config/v1-support-outbound.yaml"),
        )
        .unwrap();
        let doc = crate::config::parse(&text, "t").unwrap();
        assert!(open_from_config(&doc, &store, at(5)).unwrap());
        assert_eq!(
            store.load().unwrap().access(),
            SupportAccess::Outbound { port: 22 }
        );
    }
}
