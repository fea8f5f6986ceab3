// SPDX-License-Identifier: GPL-2.0-only
//! The ACPI power button: the kernel's `button` driver turns it into a
//! KEY_POWER key press on an input device named "Power Button" (evdev).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

/// Finds the power button's event device under `<sysfs>/class/input`.
pub fn find(sysfs: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(sysfs.join("class/input"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("event"))
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let name =
            fs::read_to_string(sysfs.join("class/input").join(&n).join("device/name")).ok()?;
        (name.trim() == "Power Button").then(|| format!("/dev/input/{n}"))
    })
}

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16), type, code, value.
pub const EVENT_SIZE: usize = 24;

/// True if a buffer of input events holds a power key press.
pub fn has_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE).any(|e| {
        let kind = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes(e[20..24].try_into().expect("4"));
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Reads what is pending on the (non-blocking) device.
pub fn pressed(dev: &mut File) -> bool {
    let mut buf = [0u8; EVENT_SIZE * 16];
    match dev.read(&mut buf) {
        Ok(n) => has_power_press(&buf[..n - n % EVENT_SIZE]),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn recognises_a_power_key_press() {
        let mut b = event(EV_KEY, KEY_POWER, 1);
        b.extend(event(0, 0, 0));
        assert!(has_power_press(&b));
        assert!(!has_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!has_power_press(&event(EV_KEY, 30, 1)), "another key");
    }

    #[test]
    fn finds_the_power_button_device() {
        let t = tempfile::tempdir().unwrap();
        for (n, name) in [
            ("event0", "AT Translated Set 2 keyboard"),
            ("event1", "Power Button"),
        ] {
            let d = t.path().join("class/input").join(n).join("device");
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(find(t.path()).as_deref(), Some("/dev/input/event1"));
    }
}
