// SPDX-License-Identifier: MIT
//! The appliance on "EC2": QEMU tells the guest it is an Amazon EC2 machine
//! through SMBIOS, and the guest's connections to 169.254.169.254:80 reach
//! an IMDSv2-only metadata service run here on the host's loopback (a
//! thread of this test; slirp's guestfwd runs a small relay per
//! connection). Requests without the session token are refused with 401,
//! as on an instance registered with `ImdsSupport v2.0`.
//!
//! Two boots of one disk: user data that sets the hostname is applied;
//! then bad user data is refused naming the key, and the last good
//! configuration stays in force.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_e2e::{appliance_image, copy_sparse, guestfwd_relay, Firmware, Scratch, Vm, VmConfig};

const TOKEN: &str = "AQAEAFerryE2eToken-0001==";
const INSTANCE: &str = "i-0feedfacecafe0001";

#[derive(Default)]
struct Imds {
    user_data: Vec<u8>,
    /// "METHOD PATH token=<token or ->" -> status
    log: Vec<(String, u16)>,
}

/// Serves IMDSv2 on 127.0.0.1; returns its port.
fn serve(state: Arc<Mutex<Imds>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).into_owned();
            let mut first = text.lines().next().unwrap_or("").split_whitespace();
            let (method, path) = (
                first.next().unwrap_or("").to_string(),
                first.next().unwrap_or("").to_string(),
            );
            let header = |name: &str| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            let token = header("X-aws-ec2-metadata-token");
            let mut st = state.lock().unwrap();
            let (status, body): (u16, Vec<u8>) = match (method.as_str(), path.as_str()) {
                ("PUT", "/latest/api/token") => {
                    match header("X-aws-ec2-metadata-token-ttl-seconds") {
                        Some(_) => (200, TOKEN.into()),
                        None => (400, vec![]),
                    }
                }
                _ if token.as_deref() != Some(TOKEN) => (401, vec![]),
                ("GET", "/latest/meta-data/instance-id") => (200, INSTANCE.into()),
                ("GET", "/latest/meta-data/local-ipv4") => (200, "169.254.169.15".into()),
                ("GET", "/latest/user-data") => (200, st.user_data.clone()),
                // no key pair: its support.public_key is checked by
                // ferry-init's unit tests on the document text
                _ => (404, b"Not Found".to_vec()),
            };
            st.log.push((
                format!("{method} {path} token={}", token.as_deref().unwrap_or("-")),
                status,
            ));
            drop(st);
            let reason = match status {
                200 => "OK",
                401 => "Unauthorized",
                404 => "Not Found",
                _ => "Bad Request",
            };
            let mut answer = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nServer: EC2ws\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            answer.extend_from_slice(&body);
            let _ = s.write_all(&answer);
        }
    });
    port
}

fn boot(disk: &std::path::Path, dir: &std::path::Path, port: u16) -> Vm {
    let mut cfg = VmConfig::new(disk, Firmware::Uefi, dir);
    // 169.254.169.254 must lie inside slirp's network for a guestfwd rule
    cfg.user_net = Some("net=169.254.169.0/24,host=169.254.169.2,dhcpstart=169.254.169.15".into());
    cfg.guestfwd = vec![guestfwd_relay(dir, "169.254.169.254:80", port).unwrap()];
    cfg.smbios = vec![
        "type=1,manufacturer=Amazon EC2,product=m7i.xlarge".into(),
        format!("type=2,manufacturer=Amazon EC2,asset={INSTANCE}"),
    ];
    Vm::start(&cfg).unwrap()
}

#[test]
fn user_data_from_imdsv2_configures_the_appliance_and_bad_user_data_is_refused() {
    let image = appliance_image().unwrap();
    let s = Scratch::new("imds").unwrap();
    let disk = s.0.join("disk.raw");
    copy_sparse(&image, &disk).unwrap();
    let user_data = b"version: 1\nhostname: ferry-ec2\n";
    let state = Arc::new(Mutex::new(Imds {
        user_data: user_data.to_vec(),
        ..Imds::default()
    }));
    let port = serve(state.clone());

    // boot 1: the user data is applied
    let mut vm = boot(&disk, &s.0, port);
    vm.wait_for("ferry-init: ready in ", Duration::from_secs(180))
        .unwrap();
    vm.wait_for("platform: Ec2", Duration::from_secs(1))
        .unwrap();
    let line = vm
        .wait_for(
            &format!("imds: instance {INSTANCE}"),
            Duration::from_secs(1),
        )
        .unwrap();
    assert!(line.contains("local address 169.254.169.15"), "{line}");
    assert!(
        line.contains(&format!("user data {} bytes", user_data.len())),
        "{line}"
    );
    vm.wait_for("config: accepted the EC2 user data", Duration::from_secs(1))
        .unwrap();
    vm.wait_for("hostname: ferry-ec2", Duration::from_secs(1))
        .unwrap();
    assert!(vm.power_off().unwrap().success());
    drop(vm);

    let log = std::mem::take(&mut state.lock().unwrap().log);
    let lines: Vec<String> = log.iter().map(|(l, st)| format!("{l} -> {st}")).collect();
    // the token first (PUT with a TTL), then every read with it, none refused
    let first_read = log
        .iter()
        .position(|(l, _)| l.starts_with("GET "))
        .expect("reads");
    assert!(
        log[..first_read]
            .iter()
            .all(|(l, st)| l.starts_with("PUT /latest/api/token ") && *st == 200),
        "{lines:#?}"
    );
    for path in [
        "/latest/meta-data/instance-id",
        "/latest/meta-data/local-ipv4",
        "/latest/meta-data/public-keys/0/openssh-key",
        "/latest/user-data",
    ] {
        assert!(
            log.iter()
                .any(|(l, _)| *l == format!("GET {path} token={TOKEN}")),
            "{path} not read with the token: {lines:#?}"
        );
    }
    assert!(
        log.iter().all(|(_, st)| *st != 401 && *st != 400),
        "a request without the token: {lines:#?}"
    );

    // boot 2: bad user data is refused, the hostname from boot 1 stays
    state.lock().unwrap().user_data = b"version: 1\nhostnme: typo\n".to_vec();
    let mut vm = boot(&disk, &s.0, port);
    vm.wait_for("ferry-init: ready in ", Duration::from_secs(180))
        .unwrap();
    let refused = vm
        .wait_for("config: refused: EC2 user data", Duration::from_secs(1))
        .unwrap();
    assert!(refused.contains("hostnme"), "{refused}");
    vm.wait_for(
        "config: the configuration in force is unchanged (from /data/config/ferry.yaml, hostname ferry-ec2)",
        Duration::from_secs(1),
    )
    .unwrap();
    vm.wait_for("hostname: ferry-ec2", Duration::from_secs(1))
        .unwrap();
    assert!(vm.power_off().unwrap().success());
}
