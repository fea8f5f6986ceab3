// SPDX-License-Identifier: MIT
//! The firewall and the support channel on the real image, through QEMU's
//! user-mode network with a host port forwarded to the guest's port 22.
//! Build the image first: `scripts/build-image` (scripts/test does).
//! Needs `ssh` and `ssh-keygen` (package openssh-client); the outbound
//! test also `dropbear` and `dropbearkey` (package dropbear-bin) and root.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_e2e::free_port;
use ferry_e2e::ssh::{keygen, port_22, ssh};
use ferry_e2e::{appliance_image, copy_sparse, guestfwd_relay, Firmware, Scratch, Vm, VmConfig};

static ONE_VM: Mutex<()> = Mutex::new(());

const BOOT: Duration = Duration::from_secs(120);
const MATCHES: &str = "firewall: read back from the kernel: matches";

fn boot(disk: &Path, dir: &Path, doc: &Path, port: u16) -> Vm {
    let mut cfg = VmConfig::new(disk, Firmware::Bios, dir);
    cfg.fw_cfg
        .push(("opt/ferry/config".into(), doc.to_path_buf()));
    cfg.hostfwd.push(format!("tcp:127.0.0.1:{port}-:22"));
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("ferry-init: ready in ", BOOT).unwrap();
    vm
}

/// Boot 1: the key is configured but the channel closed: port 22 refused.
/// Boot 2: `open_minutes: 3`: dropbear answers, the test key gets the
/// diagnostic console (never a shell), passwords and other keys are
/// refused; at expiry the channel closes and port 22 is refused again.
#[test]
fn support_channel_opens_with_the_key_only_and_closes_at_expiry() {
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let image = appliance_image().unwrap();
    let s = Scratch::new("support").unwrap();
    let disk = s.0.join("disk.raw");
    copy_sparse(&image, &disk).unwrap();
    let key = s.0.join("engineer");
    let public = keygen(&key);
    let other = s.0.join("stranger");
    keygen(&other);
    let port = free_port();

    // boot 1: closed
    let closed = s.0.join("closed.yaml");
    fs::write(
        &closed,
        format!("version: 1\nhostname: ferry-support\nsupport:\n  public_key: \"{public}\"\n"),
    )
    .unwrap();
    let mut vm = boot(&disk, &s.0, &closed, port);
    vm.wait_for("support: channel closed", Duration::from_secs(1))
        .unwrap();
    vm.wait_for(MATCHES, Duration::from_secs(1)).unwrap();
    vm.wait_for("network: eth0 10.0.2.15/24", Duration::from_secs(60))
        .unwrap();
    assert_eq!(port_22(port), None, "port 22 must be refused while closed");
    let c = vm.console();
    assert!(
        !c.contains("support-dropbear: started"),
        "dropbear ran while closed"
    );
    assert!(!c.contains("MISMATCH"), "{c}");
    vm.power_off().unwrap();
    drop(vm);

    // boot 2: opened by the document for 3 minutes
    let open = s.0.join("open.yaml");
    fs::write(
        &open,
        format!(
            "version: 1\nhostname: ferry-support\nsupport:\n  public_key: \"{public}\"\n  open_minutes: 3\n"
        ),
    )
    .unwrap();
    let mut vm = boot(&disk, &s.0, &open, port);
    let opened = vm
        .wait_for("support: channel open (port 22)", Duration::from_secs(1))
        .unwrap();
    eprintln!("{opened}");
    vm.wait_for("service support-dropbear: started", Duration::from_secs(1))
        .unwrap();
    vm.wait_for(MATCHES, Duration::from_secs(1)).unwrap();
    vm.wait_for("network: eth0 10.0.2.15/24", Duration::from_secs(60))
        .unwrap();
    let t_open = Instant::now();
    let banner = port_22(port).expect("dropbear answers while open");
    assert!(banner.starts_with("SSH-2.0-dropbear"), "{banner}");

    // the engineer's key: the diagnostic console
    let out = ssh(
        port,
        &key,
        &[],
        &[],
        "status\nlogs 5 ferry-init\nconnect 10.0.2.2 9\nfrobnicate\nquit\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "--- the diagnostic console:\n{text}\n--- ssh stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ssh: {:?}", out.status);
    for want in [
        "Ferry support console (restricted, read-only)",
        "hostname: ferry-support",
        "eth0       10.0.2.15/24",
        "10.0.2.0/24 dev eth0",
        "support:  open until",
        "ferry-diag> logs 5 ferry-init",
        "ferry-diag> connect 10.0.2.2 9",
        "FAILED: 10.0.2.2:9",
        "unknown command \"frobnicate\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // the support user reads the journal
    assert!(!text.contains("journalctl:"), "{text}");
    // asking for a command gets the console's answer, not a shell
    let out = ssh(port, &key, &[], &["cat", "/etc/shadow"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("unknown command \"cat /etc/shadow\""),
        "{text}"
    );
    let out = ssh(port, &key, &[], &["status"], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hostname: ferry-support"));

    // passwords are not even offered; another key is refused
    let out = ssh(
        port,
        &key,
        &[
            "-v",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ],
        &[],
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Authentications that can continue: publickey\n")
            || err.contains("Authentications that can continue: publickey\r\n"),
        "{err}"
    );
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    let out = ssh(port, &other, &[], &["status"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied (publickey)"));
    eprintln!(
        "ssh checks done {:.0} s after the channel was seen open",
        t_open.elapsed().as_secs_f64()
    );

    // a session still open at expiry
    let mut lingering = Command::new("ssh")
        .args(["-p", &port.to_string(), "-i"])
        .arg(&key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "support@127.0.0.1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut first = [0u8; 16];
        lingering
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        assert_eq!(&first, b"Ferry support co");
    }

    // expiry: closed by ferry-init's main loop, firewall reloaded
    vm.wait_for(
        "support: channel closed: its time limit passed",
        Duration::from_secs(300),
    )
    .unwrap();
    vm.wait_for(
        "support: channel closed; port 22 closed",
        Duration::from_secs(30),
    )
    .unwrap();
    let t = Instant::now();
    while vm.console().matches(MATCHES).count() < 2 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = vm.console();
    assert!(c.matches(MATCHES).count() >= 2, "no second read-back");
    assert!(!c.contains("MISMATCH"));
    assert_eq!(port_22(port), None, "port 22 must be refused after expiry");
    // and the session that was open has been ended
    let t = Instant::now();
    while lingering.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = lingering.kill();
            panic!("a support session outlived the channel");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    vm.power_off().unwrap();
}

/// A support host on this machine: Debian's dropbear (package dropbear-bin)
/// in a mount namespace of its own, where /etc/passwd has a user `ferry`
/// whose authorized_keys the test fills with the appliance's client key.
struct SupportHost {
    child: std::process::Child,
    /// Its host key's public line (`ssh-ed25519 AAAA...`).
    public: String,
}

impl Drop for SupportHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn support_host(dir: &Path, port: u16) -> SupportHost {
    let home = dir.join("ferry-home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    let mut passwd = fs::read_to_string("/etc/passwd").unwrap();
    passwd.push_str(&format!("ferry:x:0:0::{}:/bin/sh\n", home.display()));
    fs::write(dir.join("passwd"), passwd).unwrap();
    fs::write(dir.join("shells"), "/bin/sh\n").unwrap();
    let key = dir.join("support-host-key");
    let out = Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&key)
        .stderr(Stdio::null())
        .output()
        .expect("dropbearkey (package dropbear-bin)");
    assert!(out.status.success());
    let public = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .expect("dropbearkey prints the public key")
        .to_string();
    let script = format!(
        "mount --bind {d}/passwd /etc/passwd && mount --bind {d}/shells /etc/shells && exec dropbear -F -E -s -p 127.0.0.1:{port} -r {k}",
        d = dir.display(),
        k = key.display()
    );
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("support-host.log")).unwrap())
        .spawn()
        .expect("unshare (util-linux), as root");
    SupportHost { child, public }
}

/// `SHA256:...` of a public key line, as `ssh-keygen -lf` prints it.
fn fingerprint(dir: &Path, public: &str) -> String {
    let f = dir.join("fingerprint.pub");
    fs::write(&f, format!("{public}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen -lf: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// How many times the tunnel's process has ended so far.
fn tunnel_ends(console: &str) -> usize {
    console
        .lines()
        .filter(|l| l.contains("service support-tunnel: ") && l.contains("ended with"))
        .count()
}

/// The outbound mode: the appliance connects to a support host (reached
/// through a `guestfwd`, as the guest may reach nothing else) and forwards
/// the host's tunnel port back to its console; the engineer's `ssh` on the
/// support host gets the diagnostic console. The appliance's client key is
/// installed on the support host only after it was logged, so the tunnel's
/// first attempts fail and ferry-init's supervision retries.
///
/// Boot 1 pins another host key than the support host's (one of the same
/// type): the tunnel is refused at every attempt, also once the support
/// host accepts the appliance's key, and the console is not reached. Boot
/// 2 pins the support host's key by its SHA-256 fingerprint: the tunnel
/// comes up.
#[test]
fn outbound_support_channel_reaches_the_console_through_a_reverse_tunnel() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
    {
        panic!("this test runs a support host in a mount namespace: run it as root (CI is root)");
    }
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let image = appliance_image().unwrap();
    let s = Scratch::new("support-outbound").unwrap();
    let disk = s.0.join("disk.raw");
    copy_sparse(&image, &disk).unwrap();
    let key = s.0.join("engineer");
    let public = keygen(&key);
    let (host_port, tunnel_port) = (free_port(), free_port());
    let host = support_host(&s.0, host_port);
    let host_fingerprint = fingerprint(&s.0, &host.public);
    let boot = |host_key: &str, name: &str| {
        let doc = s.0.join(name);
        fs::write(
            &doc,
            format!(
                "version: 1\nhostname: ferry-outbound\nsupport:\n  public_key: \"{public}\"\n  open_minutes: 10\n  outbound: {{ host: 10.0.2.100, host_key: \"{host_key}\", port: 22, user: ferry, tunnel_port: {tunnel_port} }}\n"
            ),
        )
        .unwrap();
        let mut cfg = VmConfig::new(&disk, Firmware::Bios, &s.0);
        cfg.fw_cfg.push(("opt/ferry/config".into(), doc));
        // one relay per connection: the tunnel reconnects, and a support
        // host pinned by fingerprint is first scanned on a connection of its own
        cfg.guestfwd
            .push(guestfwd_relay(&s.0, "10.0.2.100:22", host_port).unwrap());
        let mut vm = Vm::start(&cfg).unwrap();
        let line = vm
            .wait_for("the support host must accept the key ", BOOT)
            .unwrap();
        let client_key = line
            .split("the support host must accept the key ")
            .nth(1)
            .unwrap()
            .trim()
            .to_string();
        assert!(client_key.starts_with("ssh-ed25519 "), "{client_key}");
        fs::write(
            s.0.join("ferry-home/.ssh/authorized_keys"),
            format!("{client_key}\n"),
        )
        .unwrap();
        vm.wait_for("support: channel open (outbound to 10.0.2.100:22)", BOOT)
            .unwrap();
        vm.wait_for("ferry-init: ready in ", BOOT).unwrap();
        vm.wait_for(MATCHES, Duration::from_secs(1)).unwrap();
        vm
    };

    // boot 1: another ed25519 key pinned (the engineer's): every attempt
    // ends in the key exchange, also those made after the support host
    // accepts the appliance's key
    let mut vm = boot(&public, "wrong-host-key.yaml");
    let before = tunnel_ends(&vm.console());
    let t = Instant::now();
    while tunnel_ends(&vm.console()) < before + 2 {
        if t.elapsed() > Duration::from_secs(300) {
            panic!(
                "the tunnel to a host with another key did not end twice in 300 s:\n{}",
                vm.console()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = ssh(tunnel_port, &key, &[], &["status"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !text.contains("hostname: ferry-outbound"),
        "the console was reached through a host with another key: {text}"
    );
    eprintln!(
        "--- support host log, boot 1:\n{}",
        fs::read_to_string(s.0.join("support-host.log")).unwrap_or_default()
    );
    vm.power_off().unwrap();
    drop(vm);

    // boot 2: the support host's key, pinned by its fingerprint
    let mut vm = boot(&host_fingerprint, "host-fingerprint.yaml");

    // the tunnel comes up once the key is accepted (supervised retries)
    let t = Instant::now();
    let text = loop {
        let out = ssh(tunnel_port, &key, &[], &["status"], "");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("hostname: ferry-outbound") {
            break text;
        }
        if t.elapsed() > Duration::from_secs(180) {
            panic!(
                "no console through the tunnel after 180 s: {text}{}\nsupport host: {}",
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(s.0.join("support-host.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    eprintln!(
        "--- the console through the reverse tunnel ({:.0} s after the key was installed):\n{text}",
        t.elapsed().as_secs_f64()
    );
    assert!(text.contains("support:  open until"), "{text}");
    vm.power_off().unwrap();
}
