// SPDX-License-Identifier: MIT
//! The operator's first minutes, on the serial console of the real image:
//! log in, change the default password, run the resource check (warnings
//! for this small VM), read the time status from chronyd, see the DHCP
//! address from QEMU's user network, set a static address and see it
//! applied, give the second adapter an address of its own, open the support
//! channel with a key (ssh gets the diagnostic console) and close it (port
//! 22 refused again), test an endpoint and an NFS export on the host (a
//! real mount and listing), read the logs and the tasks, log out and in again, shut down.
//! Build the image first: `scripts/build-image` (scripts/test does).

use std::time::Duration;

use ferry_e2e::free_port;
use ferry_e2e::nfs::Ganesha;
use ferry_e2e::ssh::{keygen, port_22, ssh};
use ferry_e2e::{appliance_image, copy_sparse, Firmware, Scratch, Vm, VmConfig};

const STEP: Duration = Duration::from_secs(60);
const NEW_PASSWORD: &str = "harbour-pilot-7";

fn menu(vm: &mut Vm) -> String {
    vm.expect("Choose an option: ", STEP).unwrap()
}

fn choose(vm: &mut Vm, option: &str) {
    vm.send(&format!("{option}\r")).unwrap();
}

#[test]
fn operator_session_on_the_serial_console() {
    let image = appliance_image().unwrap();
    let scratch = Scratch::new("console").unwrap();
    let disk = scratch.0.join("ferry.raw");
    copy_sparse(&image, &disk).unwrap();
    let mut cfg = VmConfig::new(&disk, Firmware::Uefi, &scratch.0);
    cfg.interactive = true;
    cfg.second_nic = true;
    // an NFS export on the host for the storage test (reached as 10.0.2.2)
    let export = scratch.0.join("export");
    std::fs::create_dir_all(export.join("projects")).unwrap();
    std::fs::write(export.join("readme.txt"), "hello\n").unwrap();
    let _nfs = Ganesha::start(&scratch.0, &[("export", &export)], 2049, 20048).unwrap();
    cfg.restrict = false;
    let ssh_port = free_port();
    // to the static address the session gives eth0 before it opens port 22
    cfg.hostfwd
        .push(format!("tcp:127.0.0.1:{ssh_port}-10.0.2.99:22"));
    let key_file = scratch.0.join("engineer");
    let public_key = keygen(&key_file);
    let mut vm = Vm::start(&cfg).unwrap();

    // DHCP from QEMU's user network, before anyone logs in
    vm.wait_for("(dhcp from 10.0.2.2", Duration::from_secs(120))
        .unwrap();
    vm.expect("login: ", Duration::from_secs(60)).unwrap();
    vm.send("admin\r").unwrap();
    vm.expect("password: ", STEP).unwrap();
    vm.send("password\r").unwrap();
    vm.expect("default password: choose a new one", STEP)
        .unwrap();
    vm.expect("new password: ", STEP).unwrap();
    vm.send("short\r").unwrap();
    vm.expect("at least 8 characters", STEP).unwrap();
    vm.expect("new password: ", STEP).unwrap();
    vm.send(&format!("{NEW_PASSWORD}\r")).unwrap();
    vm.expect("repeat the new password: ", STEP).unwrap();
    vm.send(&format!("{NEW_PASSWORD}\r")).unwrap();
    vm.expect("Password changed.", STEP).unwrap();
    let main = menu(&mut vm);
    assert!(
        main.contains("System resource check: 0 error(s),"),
        "{main}"
    );

    choose(&mut vm, "4");
    let check = menu(&mut vm);
    assert!(
        check.contains("WARNING 1 vCPU(s) (recommended: 4)"),
        "{check}"
    );
    assert!(
        check.contains("GiB of memory (recommended: 32 GiB)"),
        "{check}"
    );
    assert!(
        check.contains("ok      80 GB disk") || check.contains("ok      85 GB disk"),
        "{check}"
    );

    choose(&mut vm, "5");
    let time = vm.expect("s: step the clock now", STEP).unwrap();
    vm.send("s\r").unwrap();
    vm.expect("done: chronyd stepped the clock to its estimate", STEP)
        .unwrap();
    menu(&mut vm);
    assert!(time.contains("NTP servers:"), "{time}");
    assert!(
        time.contains("Synchronised: "),
        "chronyd did not answer: {time}"
    );

    // a static address, validated where typed, applied live
    choose(&mut vm, "1");
    menu(&mut vm);
    choose(&mut vm, "3");
    vm.expect("Adapter (eth0, eth1) [eth0, the default one]: ", STEP)
        .unwrap();
    vm.send("\r").unwrap();
    vm.expect("IPv4 address/prefix", STEP).unwrap();
    vm.send("10.0.2.300/24\r").unwrap();
    vm.expect("is not an IPv4 address", STEP).unwrap();
    vm.send("10.0.2.99/24\r").unwrap();
    vm.expect("Gateway (empty: none): ", STEP).unwrap();
    vm.send("192.0.2.1\r").unwrap();
    vm.expect("is outside the subnet 10.0.2.0/24", STEP)
        .unwrap();
    vm.send("10.0.2.2\r").unwrap();
    vm.expect("Apply and save? [y/N]: ", STEP).unwrap();
    vm.send("y\r").unwrap();
    vm.expect("saved to /data/config/ferry.yaml and applied", STEP)
        .unwrap();
    menu(&mut vm);
    vm.wait_for("network: eth0 10.0.2.99/24 gateway 10.0.2.2 (static)", STEP)
        .unwrap();
    choose(&mut vm, "1");
    let described = menu(&mut vm);
    assert!(described.contains("address 10.0.2.99/24"), "{described}");
    assert!(
        !described.contains("address 10.0.2.15/24"),
        "the DHCP address stayed: {described}"
    );
    assert!(
        described.contains("route default via 10.0.2.2"),
        "{described}"
    );
    // the second adapter: an address, no route
    choose(&mut vm, "3");
    vm.expect("Adapter (eth0, eth1)", STEP).unwrap();
    vm.send("eth1\r").unwrap();
    vm.expect("IPv4 address/prefix of eth1", STEP).unwrap();
    vm.send("192.168.77.5/24\r").unwrap();
    vm.expect("eth1: static 192.168.77.5/24", STEP).unwrap();
    vm.expect("Apply and save? [y/N]: ", STEP).unwrap();
    vm.send("y\r").unwrap();
    vm.expect("saved to /data/config/ferry.yaml and applied", STEP)
        .unwrap();
    menu(&mut vm);
    vm.wait_for("network: eth1 192.168.77.5/24 (static)", STEP)
        .unwrap();
    choose(&mut vm, "1");
    let described = menu(&mut vm);
    assert!(described.contains("address 192.168.77.5/24"), "{described}");
    assert!(described.contains("address 10.0.2.99/24"), "{described}");
    choose(&mut vm, "b");
    menu(&mut vm);

    // the support channel, opened and closed from the menu
    assert_eq!(
        port_22(ssh_port),
        None,
        "port 22 answers before the channel is opened"
    );
    choose(&mut vm, "6");
    vm.expect("Support channel: closed", STEP).unwrap();
    vm.expect("Choose an option: ", STEP).unwrap();
    vm.send("1\r").unwrap();
    vm.expect("public key (ssh-ed25519 ...): ", STEP).unwrap();
    vm.send(&format!("{public_key}\r")).unwrap();
    vm.expect("Hours to stay open [4]: ", STEP).unwrap();
    vm.send("1\r").unwrap();
    vm.expect("(e.g. 198.51.100.0/24; empty: any): ", STEP)
        .unwrap();
    vm.send("\r").unwrap();
    vm.expect("open: port 22 open, closes in 60 min", STEP)
        .unwrap();
    menu(&mut vm);
    let t = std::time::Instant::now();
    while port_22(ssh_port).is_none() {
        assert!(t.elapsed() < STEP, "dropbear did not start on port 22");
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = ssh(ssh_port, &key_file, &[], &["status"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("10.0.2.99"),
        "the diagnostic console's status: {text}"
    );
    let out = ssh(ssh_port, &key_file, &[], &["agent"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("200 OK") && text.contains("Executions"),
        "the agent's state through its read-only socket: {text}"
    );
    choose(&mut vm, "6");
    vm.expect("Support channel: open", STEP).unwrap();
    vm.expect("Choose an option: ", STEP).unwrap();
    vm.send("2\r").unwrap();
    vm.expect("  closed", STEP).unwrap();
    menu(&mut vm);
    let t = std::time::Instant::now();
    while port_22(ssh_port).is_some() {
        assert!(t.elapsed() < STEP, "port 22 still answers after closing");
        std::thread::sleep(Duration::from_secs(1));
    }

    // connectivity to an endpoint, then the storage test: a real NFS mount
    choose(&mut vm, "2");
    vm.expect("Endpoint host:port", STEP).unwrap();
    vm.send("10.0.2.2:2049\r").unwrap();
    let reach = menu(&mut vm);
    assert!(
        reach.contains("PASSED  given 10.0.2.2:2049: TCP connection made"),
        "{reach}"
    );
    choose(&mut vm, "3");
    vm.expect("NFS server (name or address): ", STEP).unwrap();
    vm.send("10.0.2.2\r").unwrap();
    vm.expect("Export path (e.g. /exports/data): ", STEP)
        .unwrap();
    vm.send("/export\r").unwrap();
    vm.expect("NFS version 3, 4.0 or 4.1 [4.1]: ", STEP)
        .unwrap();
    vm.send("\r").unwrap();
    vm.expect("Extra mount options (empty: none): ", STEP)
        .unwrap();
    vm.send("\r").unwrap();
    let storage = menu(&mut vm);
    assert!(
        storage.contains("2 entries: projects readme.txt"),
        "{storage}"
    );
    assert!(storage.contains("ok      unmount: done"), "{storage}");
    assert!(storage.contains("PASSED"), "{storage}");

    choose(&mut vm, "t");
    let tasks = menu(&mut vm);
    assert!(
        tasks.contains("no executions yet") || tasks.contains("EXECUTION"),
        "{tasks}"
    );

    choose(&mut vm, "7");
    vm.expect("Logs of which unit", STEP).unwrap();
    vm.send("ferry-console\r").unwrap();
    // one page ends "-- 20 of N lines, newest first; Enter: older, q: back --",
    // the last "-- end (N lines, newest first) --"
    let mut logs = vm.expect("newest first", STEP).unwrap();
    assert!(!logs.contains("journalctl:"), "{logs}");
    if logs.contains("lines, newest first") && !logs.contains("-- end (") {
        vm.send("q\r").unwrap();
    }
    logs += &menu(&mut vm);
    assert!(
        logs.contains("support: channel closed from the console"),
        "{logs}"
    );

    // out, and in again with the new password only
    choose(&mut vm, "x");
    vm.expect("Logged out.", STEP).unwrap();
    vm.expect("login: ", STEP).unwrap();
    vm.send("admin\r").unwrap();
    vm.expect("password: ", STEP).unwrap();
    vm.send("password\r").unwrap();
    vm.expect("Login incorrect.", STEP).unwrap();
    vm.expect("login: ", STEP).unwrap();
    vm.send("admin\r").unwrap();
    vm.expect("password: ", STEP).unwrap();
    vm.send(&format!("{NEW_PASSWORD}\r")).unwrap();
    menu(&mut vm);

    choose(&mut vm, "9");
    vm.expect("Shut the appliance down? [y/N]: ", STEP).unwrap();
    vm.send("y\r").unwrap();
    vm.expect(
        "shutdown: data partition unmounted cleanly",
        Duration::from_secs(120),
    )
    .unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(
        !vm.console().contains(NEW_PASSWORD),
        "the password was echoed on the console"
    );
}
