// SPDX-License-Identifier: GPL-2.0-only
//! The system stage: PID 1 of the running appliance.
//!
//! Boot is a list of units run in order (mounts, sysctls, data, identity,
//! config, /etc, hostname, journald, support, firewall, network, services,
//! ready); a unit that
//! fails is logged and the boot goes on as far as it can. Then the main loop
//! reaps children, restarts services, keeps the support channel and the
//! firewall in step with their state, and waits for a reason to shut down:
//! the ACPI power button, SIGTERM, SIGUSR1/SIGUSR2, Ctrl-Alt-Del (SIGINT).
//! PID 1 never exits: a panic in a unit or in the loop is caught and logged.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::config::store::Store;
use crate::config::{document::DocRole, Config};
use crate::dmi::{self, Platform};
use crate::error::{Context, Result};
use crate::firewall::{self, Firewall, FirewallState, Role};
use crate::network;
use crate::providers::{self, Phase};
use crate::reaper::{self, Exit};
use crate::services::{self, Service};
use crate::supervisor::Supervisor;
use crate::support::{self, Session};
use crate::sys::{uptime, Halt, Sys};
use crate::{datapart, etc, guestinfo, logging, mounts, sysctl};

const JOURNALD: &str = "/usr/lib/systemd/systemd-journald";
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
const JOURNAL_DIR: &str = "/data/log/journal";

/// Everything PID 1 keeps track of.
pub struct State {
    pub sup: Supervisor<Service>,
    pub config: Config,
    pub network: Option<network::Handle>,
    pub data_mounted: bool,
    pub started: Vec<String>,
    pub firewall: Firewall,
    /// The support session whose processes run.
    pub support: Option<Session>,
    /// From DMI: which platform providers run.
    pub platform: Platform,
    /// When VMware guestinfo is read again.
    pub next_poll: Option<Instant>,
}

type Unit = (&'static str, fn(&dyn Sys, &mut State) -> Result<()>);

/// The boot units, in order.
pub const UNITS: &[Unit] = &[
    ("mounts", unit_mounts),
    ("sysctl", unit_sysctl),
    ("data", unit_data),
    ("identity", unit_identity),
    ("config", unit_config),
    ("etc", unit_etc),
    ("hostname", unit_hostname),
    ("journald", unit_journald),
    ("support", unit_support),
    ("firewall", unit_firewall),
    ("network", unit_network),
    ("providers", unit_providers),
    ("services", unit_services),
];

fn unit_mounts(sys: &dyn Sys, _: &mut State) -> Result<()> {
    let dev_mounted = Path::new("/dev/null").exists();
    mounts::mount_all(sys, &mounts::table(dev_mounted))?;
    logging::reopen_kmsg();
    Ok(())
}

fn unit_sysctl(sys: &dyn Sys, _: &mut State) -> Result<()> {
    // the kernel's lockdown mode, as set by lockdown= on the command line
    if let Ok(l) = fs::read_to_string("/sys/kernel/security/lockdown") {
        log::info!("lockdown: {}", l.trim());
    }
    let failed = sysctl::apply(sys, sysctl::HARDENING);
    log::info!(
        "sysctl: {} hardening settings applied{}",
        sysctl::HARDENING.len() - failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({} not available)", failed.len())
        }
    );
    Ok(())
}

fn unit_data(sys: &dyn Sys, st: &mut State) -> Result<()> {
    datapart::prepare(sys)?;
    st.data_mounted = true;
    for d in ["/data/config", "/data/ferry", JOURNAL_DIR] {
        sys.mkdir(d, 0o755).ctx(|| format!("mkdir {d}"))?;
    }
    Ok(())
}

fn random_hex16() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom into a 16-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 16, 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The machine id (kept on /data) and the boot counter.
fn unit_identity(sys: &dyn Sys, st: &mut State) -> Result<()> {
    let id_path = "/data/ferry/machine-id";
    let id = match fs::read_to_string(id_path) {
        Ok(s) if s.trim().len() == 32 => s.trim().to_string(),
        _ => {
            let id = random_hex16();
            if st.data_mounted {
                sys.write_file(id_path, format!("{id}\n").as_bytes(), 0o444)
                    .ctx(|| format!("write {id_path}"))?;
            }
            id
        }
    };
    let count_path = "/data/ferry/boot-count";
    let boots = fs::read_to_string(count_path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    if st.data_mounted {
        sys.write_file(count_path, format!("{boots}\n").as_bytes(), 0o644)
            .ctx(|| format!("write {count_path}"))?;
    }
    log::info!("identity: machine-id {id}, boot {boots}");
    st.started.push(id);
    Ok(())
}

/// Finds the platform, runs the early configuration providers (VMware
/// guestinfo, the OVF environment on a CD-ROM, QEMU fw_cfg) and loads the
/// configuration in force.
fn unit_config(sys: &dyn Sys, st: &mut State) -> Result<()> {
    st.platform = Platform::detect(Path::new(dmi::DMI));
    log::info!("platform: {:?} (from DMI)", st.platform);
    let store = Store::default();
    providers::run(sys, &store, Phase::Early, st.platform, st.data_mounted);
    let loaded = store.load();
    for e in &loaded.refused {
        log::error!("config: refused: {e}");
        log::error!(
            "config: keeping the last good configuration ({})",
            loaded.config.origin
        );
    }
    st.config = loaded.config;
    log::info!(
        "config: in force from {} (hostname {}, network {:?})",
        st.config.origin,
        st.config.hostname(),
        st.config.doc.network.mode
    );
    Ok(())
}

fn unit_etc(sys: &dyn Sys, st: &mut State) -> Result<()> {
    let id = st.started.first().cloned().unwrap_or_else(random_hex16);
    etc::generate(sys, &st.config, &id)
}

fn unit_hostname(sys: &dyn Sys, st: &mut State) -> Result<()> {
    sys.sethostname(st.config.hostname())
        .ctx(|| "sethostname".into())?;
    log::info!("hostname: {}", st.config.hostname());
    Ok(())
}

/// The journal belongs to the group systemd-journal (setgid directories,
/// as systemd-tmpfiles would make them), so the support console's
/// journalctl can read it.
fn journal_group(sys: &dyn Sys) {
    use std::os::unix::fs::PermissionsExt;
    const GID: u32 = 102;
    let mut dirs = vec![std::path::PathBuf::from(JOURNAL_DIR)];
    if let Ok(rd) = fs::read_dir(JOURNAL_DIR) {
        dirs.extend(
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    for d in &dirs {
        let _ = sys.chown(&d.display().to_string(), 0, GID);
        let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o2755));
        if d.as_os_str() != JOURNAL_DIR {
            for f in fs::read_dir(d).into_iter().flatten().flatten() {
                let _ = sys.chown(&f.path().display().to_string(), 0, GID);
            }
        }
    }
}

fn unit_journald(sys: &dyn Sys, st: &mut State) -> Result<()> {
    if st.data_mounted {
        let id = st.started.first().cloned().unwrap_or_default();
        let kept = fs::read_dir(format!("{JOURNAL_DIR}/{id}"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".journal"))
                    .count()
            })
            .unwrap_or(0);
        log::info!("journal: {kept} journal file(s) on /data from earlier boots");
        journal_group(sys);
        // journald writes to /var/log/journal only once "flushed" (what
        // systemd-journal-flush.service asks for); /var is ready now
        sys.write_file("/run/systemd/journal/flushed", b"", 0o644)
            .ctx(|| "write /run/systemd/journal/flushed".into())?;
        sys.mkdir("/var/log/journal", 0o755)
            .ctx(|| "mkdir /var/log/journal".into())?;
        sys.mount(
            JOURNAL_DIR,
            "/var/log/journal",
            None,
            MsFlags::MS_BIND,
            None,
        )
        .ctx(|| "bind the journal from /data".into())?;
    }
    let spec = Service {
        name: "systemd-journald".into(),
        exec: vec![JOURNALD.into()],
        user: None,
        capabilities: vec![],
        environment: Default::default(),
        tty: None,
        open_files: None,
        seccomp: None,
    };
    st.sup
        .start("systemd-journald", spec, Instant::now(), &mut |s| {
            services::spawn(s)
        });
    let t = Instant::now();
    while !Path::new(JOURNAL_SOCKET).exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !st.sup.is_running("systemd-journald") || !logging::use_journal() {
        return Err(crate::error::Error::Service {
            name: "systemd-journald".into(),
            why: "did not come up; logging to the kernel log".into(),
        });
    }
    log::info!(
        "journald: running, journal on {} (capped at 64 MiB), up in {} ms",
        if st.data_mounted {
            JOURNAL_DIR
        } else {
            "/run (volatile)"
        },
        t.elapsed().as_millis()
    );
    Ok(())
}

/// Opens the support channel if the configuration says so (/run is new at
/// every boot, so it is closed otherwise).
fn unit_support(_: &dyn Sys, st: &mut State) -> Result<()> {
    match support::open_from_config(
        &st.config.doc,
        &support::Store::default(),
        support::Clock::now(),
    ) {
        Ok(true) => log::info!("support: channel opened by the configuration document"),
        Ok(false) => log::info!("support: channel closed"),
        Err(e) => log::error!("support: not opened: {e}"),
    }
    support_sync(st);
    Ok(())
}

fn firewall_state(st: &State) -> FirewallState {
    FirewallState {
        activated: firewall::activated(),
        role: match st.config.doc.role {
            DocRole::Agent => Role::Agent,
            DocRole::Hub => Role::Hub,
        },
        support: st.support.as_ref().map(Session::access),
    }
}

fn unit_firewall(_: &dyn Sys, st: &mut State) -> Result<()> {
    let fw = firewall_state(st);
    st.firewall.apply(fw);
    Ok(())
}

/// Makes the support processes match the session in /run: starts dropbear
/// (and the tunnel) when it opens, stops them when it closes or expires.
fn support_sync(st: &mut State) {
    let want = support::Store::default().current(support::Clock::now());
    if want == st.support {
        return;
    }
    for name in [support::SERVER, support::CLIENT] {
        if let Some(pid) = st.sup.remove(name) {
            // the listener and every session it forked: the firewall keeps
            // established connections, so they must end here
            let tree = descendants(
                pid,
                &fs::read_dir("/proc").map(proc_parents).unwrap_or_default(),
            );
            for p in std::iter::once(pid).chain(tree) {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
            }
            log::info!("support: {name} stopped, with its sessions");
        }
    }
    st.support = None;
    let Some(s) = want else {
        log::info!("support: channel closed; port 22 closed");
        return;
    };
    match support::prepare(&s) {
        Ok(list) => {
            for svc in list {
                let name = svc.name.clone();
                st.sup
                    .start(&name, svc, Instant::now(), &mut |s| services::spawn(s));
            }
            let mins = s.remaining(support::Clock::now()).as_secs().div_ceil(60);
            log::info!(
                "support: channel open ({}), closes in {mins} min",
                match &s.mode {
                    support::Mode::Inbound { allow_from: None } => "port 22".to_string(),
                    support::Mode::Inbound {
                        allow_from: Some(a),
                    } => format!("port 22 from {a}"),
                    support::Mode::Outbound(o) => format!("outbound to {}:{}", o.host, o.port),
                }
            );
            st.support = Some(s);
        }
        Err(e) => {
            log::error!("support: cannot open the channel: {e}; it stays closed");
            let _ = support::Store::default().remove();
        }
    }
}

/// (pid, parent pid) of every process in /proc.
fn proc_parents(rd: fs::ReadDir) -> Vec<(u32, u32)> {
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // the command name may hold spaces and parentheses: after the last ')'
            let ppid = stat[stat.rfind(')')? + 2..]
                .split(' ')
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// Every descendant of `root`, given (pid, parent) pairs.
pub fn descendants(root: u32, procs: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, _) in procs.iter().filter(|(c, pp)| *pp == p && *c != root) {
            if !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

fn unit_network(_: &dyn Sys, st: &mut State) -> Result<()> {
    st.network = Some(network::start(network::Spec::from_config(&st.config)));
    Ok(())
}

/// The providers that need the network (EC2's metadata service); a
/// document they bring is applied at once, before the services start.
fn unit_providers(sys: &dyn Sys, st: &mut State) -> Result<()> {
    let store = Store::default();
    if providers::run(sys, &store, Phase::Network, st.platform, st.data_mounted) > 0 {
        apply(sys, st);
    }
    if st.platform == Platform::Vmware {
        if guestinfo::no_backdoor() {
            log::warn!("guestinfo: no VMware backdoor answers here; not reading guestinfo again");
        } else {
            st.next_poll = Some(Instant::now() + guestinfo::POLL);
        }
    }
    Ok(())
}

fn unit_services(_: &dyn Sys, st: &mut State) -> Result<()> {
    let text =
        fs::read_to_string(services::SERVICES).ctx(|| format!("read {}", services::SERVICES))?;
    let list = services::parse(&text).map_err(|why| crate::error::Error::Service {
        name: services::SERVICES.into(),
        why,
    })?;
    for s in list {
        let name = s.name.clone();
        // A VM without a serial port still has /dev/ttyS0, which then
        // refuses to open: no console there, rather than a crash loop.
        if let Some(tty) = &s.tty {
            let open = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(tty);
            if let Err(e) = open {
                log::info!("service {name}: not started: {tty}: {e}");
                continue;
            }
        }
        st.sup
            .start(&name, s, Instant::now(), &mut |s| services::spawn(s));
    }
    Ok(())
}

fn run_units(sys: &dyn Sys, st: &mut State) {
    for (name, unit) in UNITS {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| unit(sys, st))) {
            Ok(Ok(())) => log::debug!("unit {name}: done in {} ms", t.elapsed().as_millis()),
            Ok(Err(e)) => log::error!("unit {name} failed: {e}"),
            Err(_) => log::error!("unit {name} panicked; continuing"),
        }
    }
}

/// The system stage. Never returns.
pub fn run(sys: &dyn Sys) -> ! {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
    ] {
        mask.add(s);
    }
    let _ = mask.thread_block();
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of an immediate reboot
    let _ = nix::sys::reboot::set_cad_enabled(false);

    log::info!(
        "system stage ({}), {:.2} s after kernel start",
        env!("CARGO_PKG_VERSION"),
        uptime()
    );
    let mut st = State {
        sup: Supervisor::new(),
        config: Config::first_boot(),
        network: None,
        data_mounted: false,
        started: Vec::new(),
        firewall: Firewall::default(),
        support: None,
        platform: Platform::Other,
        next_poll: None,
    };
    crate::seccomp::watch_denials();
    run_units(sys, &mut st);
    // every supervised service, in the order they started
    let mut names: Vec<String> = st
        .sup
        .running_for_stop()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.reverse();
    log::info!("ready in {:.2} s: running {}", uptime(), names.join(", "));

    let mut button = power_button();
    loop {
        let r = catch_unwind(AssertUnwindSafe(|| {
            step(sys, &mut st, sfd.as_ref(), &mut button)
        }));
        if r.is_err() {
            log::error!("main loop panicked; carrying on");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn power_button() -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dev = crate::power::find(Path::new("/sys"))?;
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&dev)
        .ok()?;
    log::info!("power: listening to the ACPI power button on {dev}");
    Some(f)
}

fn on_exit(st: &mut State, pid: Pid, how: Exit) {
    if !st.sup.exited(pid.as_raw() as u32, how, Instant::now()) {
        log::debug!("reaped process {pid} ({how})");
    }
}

/// One turn of the main loop.
fn step(sys: &dyn Sys, st: &mut State, sfd: Option<&SignalFd>, button: &mut Option<File>) {
    let support_left = st
        .support
        .as_ref()
        .map(|s| s.remaining(support::Clock::now()) + Duration::from_millis(500));
    let timeout = st
        .sup
        .next_deadline()
        .into_iter()
        .chain(st.next_poll)
        .min()
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::from_secs(60))
        .min(support_left.unwrap_or(Duration::MAX));
    let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32 + 1)
        .unwrap_or(PollTimeout::MAX);
    let mut halt = None;
    {
        let mut fds = Vec::new();
        if let Some(s) = sfd {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        if let Some(b) = button.as_ref() {
            fds.push(PollFd::new(b.as_fd(), PollFlags::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout.min(Duration::from_secs(1)));
            reaper::reap(|pid, how| on_exit(st, pid, how));
        } else {
            let _ = poll(&mut fds, ms);
        }
    }
    if let Some(s) = sfd {
        while let Ok(Some(info)) = s.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => reaper::reap(|pid, how| on_exit(st, pid, how)),
                Ok(Signal::SIGTERM) => halt = Some((Halt::Reboot, "SIGTERM")),
                Ok(Signal::SIGINT) => halt = Some((Halt::Reboot, "Ctrl-Alt-Del")),
                Ok(Signal::SIGUSR1) => halt = Some((Halt::Halt, "SIGUSR1")),
                Ok(Signal::SIGUSR2) => halt = Some((Halt::PowerOff, "SIGUSR2")),
                Ok(Signal::SIGPWR) => halt = Some((Halt::PowerOff, "SIGPWR")),
                Ok(Signal::SIGHUP) => reload(sys, st),
                _ => {}
            }
        }
    }
    if let Some(b) = button.as_mut() {
        if crate::power::pressed(b) {
            halt = Some((Halt::PowerOff, "the ACPI power button"));
        }
    }
    if let Some((how, why)) = halt {
        shutdown(sys, st, how, why);
    }
    // the support channel's expiry, and changes made from the console
    support_sync(st);
    let fw = firewall_state(st);
    st.firewall.apply(fw);
    if st.next_poll.is_some_and(|t| Instant::now() >= t) && poll_guestinfo(sys, st) {
        apply(sys, st);
    }
    st.sup.tick(Instant::now(), &mut |s| services::spawn(s));
}

/// Reads VMware guestinfo again (every [`guestinfo::POLL`] and on SIGHUP);
/// true when it brought a new document.
fn poll_guestinfo(sys: &dyn Sys, st: &mut State) -> bool {
    if st.platform != Platform::Vmware || guestinfo::no_backdoor() {
        return false;
    }
    st.next_poll = Some(Instant::now() + guestinfo::POLL);
    let p = providers::named("vmware-guestinfo").expect("a provider");
    let accepted = providers::run_one(sys, &Store::default(), p, st.data_mounted);
    if guestinfo::no_backdoor() {
        log::warn!("guestinfo: no VMware backdoor answers here; not reading guestinfo again");
        st.next_poll = None;
    }
    accepted
}

/// SIGHUP: read guestinfo and the configuration again, apply what changed.
fn reload(sys: &dyn Sys, st: &mut State) {
    poll_guestinfo(sys, st);
    apply(sys, st);
}

/// Loads the configuration in force and applies what can change live:
/// /etc, the hostname, the network.
fn apply(sys: &dyn Sys, st: &mut State) {
    let loaded = Store::default().load();
    for e in &loaded.refused {
        log::error!("config: refused: {e}; keeping {}", loaded.config.origin);
    }
    if loaded.config != st.config {
        let support_changed = loaded.config.doc.support != st.config.doc.support;
        st.config = loaded.config;
        if support_changed {
            match support::open_from_config(
                &st.config.doc,
                &support::Store::default(),
                support::Clock::now(),
            ) {
                Ok(true) => log::info!("support: channel opened by the configuration document"),
                Ok(false) => {}
                Err(e) => log::error!("support: not opened: {e}"),
            }
        }
        let id = st.started.first().cloned().unwrap_or_default();
        if let Err(e) = etc::generate(sys, &st.config, &id) {
            log::error!("config: {e}");
        }
        match sys.sethostname(st.config.hostname()) {
            Ok(()) => log::info!("hostname: {}", st.config.hostname()),
            Err(e) => log::error!("hostname: {e}"),
        }
        if let Some(n) = &st.network {
            let _ = n.updates.send(network::Spec::from_config(&st.config));
        }
        log::info!("config: reloaded from {}", st.config.origin);
    }
}

fn wait_gone(st: &mut State, pid: u32, limit: Duration) -> bool {
    let t = Instant::now();
    let mut gone = false;
    while t.elapsed() < limit {
        reaper::reap(|p, how| {
            if p.as_raw() as u32 == pid {
                gone = true;
            }
            on_exit(st, p, how)
        });
        if gone {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Stops everything in order and halts the machine. Never returns.
pub fn shutdown(sys: &dyn Sys, st: &mut State, how: Halt, why: &str) -> ! {
    log::info!("shutdown: {how:?} requested by {why}");
    st.sup.stop_all();
    st.network = None;
    for (name, pid) in st.sup.running_for_stop() {
        if name == "systemd-journald" {
            logging::stop_journal();
        }
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if !wait_gone(st, pid, Duration::from_secs(5)) {
            log::warn!("shutdown: {name} did not stop in 5 s; killing it");
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            wait_gone(st, pid, Duration::from_secs(2));
        }
    }
    logging::stop_journal();
    // everything else (there should be nothing)
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reaper::reap(|_, _| {});
    sys.sync();
    if st.data_mounted {
        let _ = sys.umount("/var/log/journal");
        match sys.umount(datapart::MOUNTPOINT) {
            Ok(()) => log::info!("shutdown: data partition unmounted cleanly"),
            Err(e) => {
                let ro = sys.mount(
                    "none",
                    datapart::MOUNTPOINT,
                    None,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None,
                );
                log::error!(
                    "shutdown: cannot unmount /data ({e}); remounted read-only: {}",
                    if ro.is_ok() { "ok" } else { "failed" }
                );
            }
        }
    }
    sys.sync();
    log::info!(
        "shutdown: {}",
        match how {
            Halt::PowerOff => "powering off",
            Halt::Reboot => "rebooting",
            Halt::Halt => "halting",
        }
    );
    if let Err(e) = sys.reboot(how) {
        log::error!("shutdown: reboot(2) failed: {e}");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Keeps the descriptor of the signalfd out of children (it is CLOEXEC);
/// exists so the compiler sees the import used on all paths.
#[allow(dead_code)]
fn _fd(s: &SignalFd) -> i32 {
    s.as_fd().as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_the_tree() {
        let procs = [(1, 0), (10, 1), (11, 10), (12, 11), (13, 1), (14, 12)];
        let mut d = descendants(10, &procs);
        d.sort();
        assert_eq!(d, [11, 12, 14]);
        assert!(descendants(13, &procs).is_empty());
        // this process's own children, read from /proc
        let me = std::process::id();
        let ps = proc_parents(fs::read_dir("/proc").unwrap());
        assert!(ps.iter().any(|(p, _)| *p == me));
    }
}
