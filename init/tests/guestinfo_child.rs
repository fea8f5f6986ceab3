// SPDX-License-Identifier: GPL-2.0-only
//! The real backdoor reader (`ferry-init guestinfo`) run as PID 1 runs it,
//! in a child, on this machine, which is not VMware: the port read faults
//! or the probe fails in the child, and the parent gets an error.

#[test]
fn the_backdoor_probe_off_vmware_fails_in_the_child_only() {
    if vmw_backdoor::is_vmware_cpu() {
        return; // a real VMware guest would answer
    }
    let exe = env!("CARGO_BIN_EXE_ferry-init");
    let e = ferry_init::guestinfo::read_isolated(exe)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("killed by SIGSEGV") || e.contains("the VMware backdoor"),
        "{e}"
    );
}
