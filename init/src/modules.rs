// SPDX-License-Identifier: GPL-2.0-only
//! Kernel modules: loaded in the order the image builder computed from
//! `modules.dep` (dependencies first). The list is `/etc/ferry/modules`, one
//! path relative to `/lib/modules/<release>/` per line.

use crate::sys::Sys;

/// Loads every module in the list. A module that fails to load is logged
/// and skipped (a driver for hardware this machine lacks is harmless);
/// returns how many loaded and the failures.
pub fn load_all(sys: &dyn Sys, base: &str, list: &str) -> (usize, Vec<String>) {
    let mut loaded = 0;
    let mut failed = Vec::new();
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let path = format!("{base}/{line}");
        match sys.load_module(&path) {
            Ok(()) => loaded += 1,
            Err(e) => {
                log::warn!("module {line}: {e}");
                failed.push(line.to_string());
            }
        }
    }
    (loaded, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    #[test]
    fn loads_in_list_order_and_keeps_going_after_a_failure() {
        let mut r = Recorder::new();
        r.fail = Some("finit_module /m/kernel/b.ko".into());
        let (n, failed) = load_all(
            &r,
            "/m",
            "# comment\nkernel/a.ko\n\nkernel/b.ko\nkernel/c.ko\n",
        );
        assert_eq!(n, 2);
        assert_eq!(failed, vec!["kernel/b.ko".to_string()]);
        assert_eq!(
            r.transcript(),
            vec![
                "finit_module /m/kernel/a.ko",
                "finit_module /m/kernel/b.ko",
                "finit_module /m/kernel/c.ko"
            ]
        );
    }
}
