// SPDX-License-Identifier: MIT
//! The support channel from outside: ports, keys and an `ssh` client
//! (package openssh-client) with a time limit.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What the guest's port 22 does, seen from the host through the forward:
/// `Some(banner)` when an SSH server answers; `None` when the connection is
/// closed at once (QEMU passes the guest's TCP reset on as a close).
pub fn port_22(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("QEMU listens on the forward");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("port 22 neither answered nor refused within 30 s (dropped instead of refused?)")
        }
        Err(_) => None,
    }
}

pub fn keygen(path: &Path) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "engineer@e2e", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (package openssh-client)");
    assert!(st.success());
    fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

pub fn ssh(port: u16, key: &Path, extra: &[&str], remote: &[&str], input: &str) -> Output {
    let mut cmd = Command::new("ssh");
    cmd.args(["-p", &port.to_string(), "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=60",
        ])
        .args(extra)
        .arg("support@127.0.0.1")
        .args(remote)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ssh (package openssh-client)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    // a hung session would hang the test: give it a limit
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ssh did not finish in 120 s: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
