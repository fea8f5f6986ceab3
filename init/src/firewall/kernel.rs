// SPDX-License-Identifier: GPL-2.0-only
//! The nfnetlink socket: the batch sent and acknowledged message by
//! message (the kernel applies all of it or none), and our table's chains
//! and rules dumped back from the kernel.

use std::io;

use netlink_packet_netfilter::nftables::{
    ChainMessage, NfTablesMessage, RuleAttribute, RuleMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nfcore::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP};

use super::codec::{batch, collect, describe, emit, nft, KernelChain};
use super::rules::Ruleset;

/// nf_tables messages received, and errors as (sequence number, errno).
type Replies = (Vec<NfTablesMessage>, Vec<(u32, i32)>);

/// An nfnetlink socket.
pub struct Nft {
    sock: Socket,
    seq: u32,
}

impl Nft {
    pub fn open() -> io::Result<Nft> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // PID 1 must not hang on a kernel that never answers
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the right size on our socket.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Nft {
            sock,
            seq: (std::process::id() << 8) ^ 0x5eed,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Reads replies until `done` says so; returns the messages of type
    /// nf_tables and the errors, by sequence number.
    fn receive(
        &mut self,
        mut done: impl FnMut(&NetlinkPayload<NetfilterMessage>, u32) -> bool,
    ) -> io::Result<Replies> {
        let mut msgs = Vec::new();
        let mut errors = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    io::Error::new(io::ErrorKind::TimedOut, "no answer from nf_tables in 5 s")
                } else {
                    e
                }
            })?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let m = NetlinkMessage::<NetfilterMessage>::deserialize(&data[off..])
                    .map_err(|e| io::Error::other(format!("nfnetlink decode: {e}")))?;
                let len = (m.header.length as usize).max(16);
                let seq = m.header.sequence_number;
                if let NetlinkPayload::Error(e) = &m.payload {
                    if let Some(code) = e.code {
                        errors.push((seq, -code.get()));
                    }
                }
                let stop = done(&m.payload, seq);
                if let NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(n),
                    ..
                }) = m.payload
                {
                    msgs.push(n);
                }
                if stop {
                    return Ok((msgs, errors));
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Sends the batch; Ok once the kernel acknowledged every message.
    pub fn apply(&mut self, rs: &Ruleset) -> io::Result<()> {
        self.send_batch(batch(rs))
    }

    fn send_batch(&mut self, msgs: Vec<NetlinkMessage<NetfilterMessage>>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut acked = Vec::new();
        let mut names = Vec::new();
        for mut m in msgs {
            let seq = self.next_seq();
            if m.header.flags & NLM_F_ACK != 0 {
                acked.push(seq);
                names.push((seq, describe(&m)));
            }
            emit(&mut m, seq, &mut buf);
        }
        self.sock.send(&buf, 0)?;
        let mut pending = acked.clone();
        let (_, errors) = self.receive(|p, seq| {
            if matches!(p, NetlinkPayload::Error(_)) {
                pending.retain(|s| *s != seq);
            }
            pending.is_empty()
        })?;
        if let Some((seq, errno)) = errors.first() {
            let what = names
                .iter()
                .find(|(s, _)| s == seq)
                .map(|(_, n)| n.as_str())
                .unwrap_or("a message");
            return Err(io::Error::new(
                io::Error::from_raw_os_error(*errno).kind(),
                format!(
                    "nf_tables refused {what}: {} (nothing was changed)",
                    io::Error::from_raw_os_error(*errno)
                ),
            ));
        }
        Ok(())
    }

    fn dump(&mut self, m: NfTablesMessage) -> io::Result<Vec<NfTablesMessage>> {
        let seq = self.next_seq();
        let mut m = nft(NetfilterProtoFamily::Inet, m, NLM_F_DUMP);
        let mut buf = Vec::new();
        emit(&mut m, seq, &mut buf);
        self.sock.send(&buf, 0)?;
        let (msgs, errors) = self.receive(|p, s| {
            s == seq && matches!(p, NetlinkPayload::Done(_) | NetlinkPayload::Error(_))
        })?;
        if let Some((_, errno)) = errors.first() {
            return Err(io::Error::from_raw_os_error(*errno));
        }
        Ok(msgs)
    }

    /// Reads our table's chains and rules back from the kernel.
    pub fn read_back(&mut self, table: &str) -> io::Result<Vec<KernelChain>> {
        let mut msgs = self.dump(NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![],
        }))?;
        msgs.extend(self.dump(NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(table.into())],
        }))?);
        collect(table, &msgs).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{differences, expected};
    use super::super::rules::{ruleset, sample_state, FirewallState, TABLE};
    use super::*;

    /// Loads the rule set into a real kernel, in a network namespace of its
    /// own, and reads it back. Needs root (CI is root); skipped otherwise.
    #[test]
    fn the_kernel_takes_the_batch_and_reads_back_the_same() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // a network namespace for this thread only
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut n = Nft::open().unwrap();
            for st in [sample_state(), FirewallState::default(), sample_state()] {
                let rs = ruleset(&st);
                n.apply(&rs).unwrap();
                let got = n.read_back(rs.table).unwrap();
                assert_eq!(differences(&expected(&rs), &got), Vec::<String>::new());
            }
            // a refused batch changes nothing
            let mut bad = batch(&ruleset(&FirewallState::default()));
            let i = bad.len() - 2;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(r)),
                ..
            }) = &mut bad[i].payload
            {
                r.attributes[1] = RuleAttribute::Chain("nonexistent".into());
            }
            let e = n.send_batch(bad).unwrap_err().to_string();
            assert!(e.contains("nf_tables refused the rule"), "{e}");
            let got = n.read_back(TABLE).unwrap();
            assert_eq!(
                differences(&expected(&ruleset(&sample_state())), &got),
                Vec::<String>::new()
            );
        })
        .join()
        .unwrap();
    }
}
