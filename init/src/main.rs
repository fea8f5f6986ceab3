// SPDX-License-Identifier: GPL-2.0-only
//! ferry-init: PID 1 of the Ferry appliance. See README.md.
//!
//! In the initramfs (where `/etc/ferry-initramfs` exists) it assembles the
//! verified root and switches to it; there it runs again as the system
//! stage. Run by hand, `ferry-init check-config FILE` validates a
//! configuration document; `ferry-init diag` is the support channel's
//! restricted console (also when started as a login shell, `-c COMMAND`);
//! `ferry-init guestinfo` reads VMware guestinfo (PID 1 runs it as a
//! child, see `guestinfo.rs`); `ferry-init support-tunnel ...` is the
//! outbound support channel's client (see `support.rs`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use ferry_init::sys::RealSys;
use ferry_init::{config, diag, initramfs, logging, system};

fn usage() -> ! {
    eprintln!(
        "usage: ferry-init check-config FILE | console | diag   (as PID 1 it takes no arguments)"
    );
    eprintln!("       ferry-init guestinfo            (prints VMware guestinfo variables as JSON)");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::process::id() != 1 {
        match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("check-config"), Some(file)) => {
                let text = std::fs::read_to_string(file).unwrap_or_else(|e| {
                    eprintln!("{file}: {e}");
                    std::process::exit(1)
                });
                match config::parse(&text, file) {
                    Ok(_) => println!("{file}: ok"),
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(1)
                    }
                }
                return;
            }
            (Some("console"), None) => {
                ferry_init::console::run();
                return;
            }
            // the support user's login shell: dropbear runs `SHELL -c CMD`;
            // whatever CMD is, the answer is the diagnostic console
            (Some("diag"), None) | (Some("-c"), _) => std::process::exit(diag::run()),
            (None, _) if args.first().is_some_and(|a| a.starts_with('-')) => {
                std::process::exit(diag::run())
            }
            // run by PID 1 as a child: the backdoor may fault off VMware
            (Some("guestinfo"), None) => match ferry_init::guestinfo::read_here() {
                Ok(vars) => {
                    println!("{}", serde_json::to_string(&vars).unwrap_or_default());
                    return;
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1)
                }
            },
            // the outbound support tunnel (a service of PID 1): checks
            // the support host's key, then becomes dbclient
            (Some("support-tunnel"), Some(_)) => {
                std::process::exit(ferry_init::support::tunnel_main(&args[2..]))
            }
            (Some("--version"), _) => {
                println!("ferry-init {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            _ => usage(),
        }
    }
    logging::init();
    let sys = RealSys;
    if Path::new(initramfs::MARKER).exists() {
        let r = catch_unwind(AssertUnwindSafe(|| initramfs::run(&sys)));
        if r.is_err() {
            initramfs::refuse(
                &sys,
                &ferry_init::error::Error::RootTampered("the initramfs stage panicked".into()),
            );
        }
    }
    let _ = catch_unwind(AssertUnwindSafe(|| system::run(&sys)));
    // system::run never returns; if it panicked past its own guards, do not exit
    log::error!("system stage ended unexpectedly; powering off");
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
