// SPDX-License-Identifier: MIT
//! DHCP replies: an IPv4/UDP frame off the AF_PACKET socket (acquiring) or
//! a UDP payload (renewing, rebinding), parsed into a lease, and the
//! client's timing (T1, T2, retries) from that lease at its edges.
//!
//! Input: the packet (tried both as a frame and as a payload).
#![no_main]

use std::time::Duration;

use ferry_init::network::dhcp;
use libfuzzer_sys::fuzz_target;

fn lease_steps(payload: &[u8]) {
    // the reply's own transaction id, so parsing goes past the xid check
    let Some(xid) = payload.get(4..8) else { return };
    let xid = u32::from_be_bytes(xid.try_into().expect("4 bytes"));
    let Some((_, lease)) = dhcp::parse_reply(payload, xid) else {
        return;
    };
    let (t1, t2, end) = (lease.t1(), lease.t2(), lease.duration());
    let second = Duration::from_secs(1);
    for at in [
        Duration::ZERO,
        t1,
        t2,
        end,
        end.saturating_sub(second),
        t1 + second,
    ] {
        for tried in [None, Some(t1), Some(t2), Some(at)] {
            let _ = lease.next(at, tried);
        }
    }
}

fuzz_target!(|packet: &[u8]| {
    if let Some(payload) = dhcp::unframe(packet) {
        lease_steps(payload);
    }
    lease_steps(packet);
});
