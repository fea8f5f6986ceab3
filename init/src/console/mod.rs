// SPDX-License-Identifier: GPL-2.0-only
//! The console menu: `ferry-init console`, run by ferry-init on the VGA
//! console (tty1) and the serial console (ttyS0) at once, one process per
//! terminal, restarted when it ends (after a logout). No getty, no shell:
//! the operator logs in as `admin` and gets the menu of [`menu`].
//!
//! Changes go through the same paths as every other provider: network
//! settings are offered to the configuration store and ferry-init is told
//! to re-read it (SIGHUP); reboot and shutdown are signals to PID 1.

pub mod appliance;
pub mod auth;
pub mod input;
pub mod menu;

use std::io::{self, BufRead, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};

/// The process's own terminal (standard input and output).
struct Tty {
    input: io::StdinLock<'static>,
}

impl Tty {
    fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.input.read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s.trim_end_matches(['\n', '\r']).to_string()),
        }
    }
}

impl menu::Term for Tty {
    fn read_line(&mut self, prompt: &str) -> Option<String> {
        self.write(prompt);
        self.line()
    }

    fn read_secret(&mut self, prompt: &str) -> Option<String> {
        self.write(prompt);
        let stdin = io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet);
        }
        let line = self.line();
        if let Some(t) = &saved {
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, t);
        }
        self.write("\n");
        line
    }

    fn write(&mut self, text: &str) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn pause(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Runs sessions on this terminal until its input ends.
pub fn run() {
    // Log to the journal only: the terminal belongs to the menu.
    if let Ok(j) = systemd_journal_logger::JournalLog::new() {
        let _ = log::set_boxed_logger(Box::new(j.with_syslog_identifier("ferry-console".into())));
        log::set_max_level(log::LevelFilter::Info);
    }
    let mut term = Tty {
        input: io::stdin().lock(),
    };
    let mut host = appliance::Appliance::default();
    let mut console = menu::Console {
        term: &mut term,
        host: &mut host,
    };
    while console.session() {}
}

#[cfg(test)]
mod tests;
