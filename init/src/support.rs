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
//!   only.
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

use crate::config::{self, SupportOutbound};
use crate::firewall::SupportAccess;
use crate::services::Service;

/// The open session, if any (tmpfs: gone at reboot).
pub const STATE: &str = "/run/ferry/support.json";
/// Keys kept across boots: dropbear's host key and the client key of the
/// outbound mode.
pub const KEYS: &str = "/data/ferry/support";
/// Home of the `support` user: `.ssh/authorized_keys`, owned by root.
pub const HOME: &str = "/run/ferry/support-home";
/// The account sessions run as; its login shell is ferry-init.
pub const USER: &str = "support";
pub const SHELL: &str = "/usr/sbin/ferry-init";
pub const DROPBEAR: &str = "/usr/sbin/dropbear";
pub const DBCLIENT: &str = "/usr/bin/dbclient";
pub const DROPBEARKEY: &str = "/usr/bin/dropbearkey";
/// Supervised process names.
pub const SERVER: &str = "support-dropbear";
pub const CLIENT: &str = "support-tunnel";
/// Default time limit from the console.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    #[error("support channel: public key: {0}")]
    Key(String),
    #[error("support channel: time limit: give 1 minute to {} hours", config::SUPPORT_MAX_MINUTES / 60)]
    Duration,
    #[error("support channel: allow_from {0:?} is not an IPv4 network (a.b.c.d/n)")]
    AllowFrom(String),
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
            boot: crate::system::uptime() as u64,
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
        config::check_public_key(public_key).map_err(SupportError::Key)?;
        let secs = duration.as_secs();
        if secs < 60 || secs > u64::from(config::SUPPORT_MAX_MINUTES) * 60 {
            return Err(SupportError::Duration);
        }
        if let Mode::Inbound {
            allow_from: Some(a),
        } = &mode
        {
            if config::parse_cidr(a).is_none() {
                return Err(SupportError::AllowFrom(a.clone()));
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
                allow_from: allow_from.as_deref().and_then(config::parse_cidr),
            },
            Mode::Outbound(o) => SupportAccess::Outbound { port: o.port },
        }
    }

    /// The authorized_keys line: only this key, only the diagnostic
    /// console, no forwarding, no terminal (the console reads lines).
    pub fn authorized_keys(&self) -> String {
        format!(
            "command=\"{SHELL} diag\",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty {}\n",
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
pub fn open_from_config(
    doc: &config::Document,
    store: &Store,
    now: Clock,
) -> Result<bool, SupportError> {
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
            return Err(SupportError::Io {
                what: format!("{DROPBEARKEY} -t ed25519 -f {}", path.display()),
                source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
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
    let ssh = Path::new(HOME).join(".ssh");
    fs::create_dir_all(&ssh).map_err(io_err(format!("mkdir {}", ssh.display())))?;
    for d in [Path::new(HOME), ssh.as_path()] {
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
        out.push(Service {
            name: CLIENT.into(),
            // -N no command, -T no terminal, -K keepalive. -y: the support
            // host's key is not checked. The tunnel carries the engineer's
            // own SSH session to dropbear, authenticated end to end with the
            // engineer's key, so a false support host gains nothing but a
            // login prompt it cannot pass.
            exec: vec![
                DBCLIENT.into(),
                "-N".into(),
                "-T".into(),
                "-y".into(),
                "-K".into(),
                "30".into(),
                "-i".into(),
                key.display().to_string(),
                "-p".into(),
                o.port.to_string(),
                "-R".into(),
                format!("127.0.0.1:{}:127.0.0.1:22", o.tunnel_port),
                format!("{}@{}", o.user, o.host),
            ],
            user: Some("root".into()),
            capabilities: vec![],
            environment: [("HOME".to_string(), KEYS.to_string())].into(),
            tty: None,
        });
    }
    Ok(out)
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
        let doc = config::parse(&text, "t").unwrap();
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
        let doc = config::parse("version: 1\n", "t").unwrap();
        store.remove().unwrap();
        assert!(!open_from_config(&doc, &store, at(5)).unwrap());
        assert!(store.load().is_none());
        // outbound
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/config/v1-support-outbound.yaml"),
        )
        .unwrap();
        let doc = config::parse(&text, "t").unwrap();
        assert!(open_from_config(&doc, &store, at(5)).unwrap());
        assert_eq!(
            store.load().unwrap().access(),
            SupportAccess::Outbound { port: 22 }
        );
    }
}
