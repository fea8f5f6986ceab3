// SPDX-License-Identifier: GPL-2.0-only
//! Logging: to the journal through systemd-journal-logger once journald runs,
//! to /dev/kmsg before that (or whenever the journal refuses a message), and
//! every message of level info and above also to the console, so a crash loop
//! is visible on the VM console.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

struct Logger {
    journal: Mutex<Option<JournalLog>>,
    kmsg: Mutex<Option<File>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger (kmsg + console). Safe to call more than once.
pub fn init() {
    let logger = LOGGER.get_or_init(|| Logger {
        journal: Mutex::new(None),
        kmsg: Mutex::new(OpenOptions::new().write(true).open("/dev/kmsg").ok()),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

/// Reopens /dev/kmsg (after /dev was mounted).
pub fn reopen_kmsg() {
    if let Some(l) = LOGGER.get() {
        if let Ok(mut k) = l.kmsg.lock() {
            *k = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        }
    }
}

/// Sends further messages to journald. Returns false when the journal socket
/// cannot be used (messages keep going to /dev/kmsg).
pub fn use_journal() -> bool {
    let Some(l) = LOGGER.get() else { return false };
    match JournalLog::new() {
        Ok(j) => {
            let j = j.with_syslog_identifier("ferry-init".to_string());
            if let Ok(mut slot) = l.journal.lock() {
                *slot = Some(j);
            }
            true
        }
        Err(_) => false,
    }
}

/// Stops using the journal (before journald is stopped at shutdown).
pub fn stop_journal() {
    if let Some(l) = LOGGER.get() {
        if let Ok(mut slot) = l.journal.lock() {
            *slot = None;
        }
    }
}

fn kmsg_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // netlink-packet-* warn about kernel attributes newer than they know
        if metadata.target().starts_with("netlink_packet") {
            return metadata.level() <= Level::Error;
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        let line = format!("ferry-init: {prefix}{}\n", record.args());
        // console: fd 2 is /dev/console for PID 1
        let _ = std::io::stderr().write_all(line.as_bytes());

        let sent = match self.journal.lock() {
            Ok(j) => j.as_ref().is_some_and(|j| j.journal_send(record).is_ok()),
            Err(_) => false,
        };
        if !sent {
            if let Ok(mut k) = self.kmsg.lock() {
                if let Some(k) = k.as_mut() {
                    // the console already has it; kmsg keeps it in dmesg/journal
                    let _ = k.write_all(
                        format!("<{}>{}", kmsg_priority(record.level()), line).as_bytes(),
                    );
                }
            }
        }
    }

    fn flush(&self) {}
}
