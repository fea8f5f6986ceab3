// SPDX-License-Identifier: GPL-2.0-only
//! DHCPv4 client (RFC 2131) with dhcproto messages. Acquiring (INIT:
//! DISCOVER, OFFER, REQUEST, ACK) goes in IPv4/UDP frames over an AF_PACKET
//! socket: it needs no address on the interface and is not affected by
//! rp_filter, as every real DHCP client does it. Once bound, the lease is
//! RENEWED at T1 by a REQUEST unicast to its server and REBOUND at T2 by a
//! broadcast one, both from the leased address over a UDP socket; at expiry
//! the address is given up and the client starts again.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
    /// T1 and T2 when the server gave them (options 58 and 59).
    pub renew_secs: Option<u32>,
    pub rebind_secs: Option<u32>,
    /// NTP servers (option 42).
    pub ntp: Vec<Ipv4Addr>,
}

/// What a bound client does next, from the time since the lease was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing until then.
    Wait(Duration),
    /// Past T1: ask the server that granted the lease.
    Renew,
    /// Past T2: ask any server.
    Rebind,
    /// The lease ran out: give the address up and start again.
    Expired,
}

impl Lease {
    /// T1: the server's, else half the lease (RFC 2131, 4.4.5).
    pub fn t1(&self) -> Duration {
        Duration::from_secs(u64::from(self.renew_secs.unwrap_or(self.lease_secs / 2)))
    }

    /// T2: the server's, else seven eighths of the lease.
    pub fn t2(&self) -> Duration {
        let default = (u64::from(self.lease_secs) * 7 / 8) as u32;
        Duration::from_secs(u64::from(self.rebind_secs.unwrap_or(default)))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_secs))
    }

    /// The next step, `elapsed` after the lease was granted. While renewing
    /// or rebinding, retries come at half the time left to the next limit,
    /// at least a minute apart (RFC 2131, 4.4.5), never past the limit.
    pub fn next(&self, elapsed: Duration, last_try: Option<Duration>) -> Next {
        let (t1, t2, end) = (self.t1(), self.t2(), self.duration());
        if elapsed >= end {
            return Next::Expired;
        }
        if elapsed < t1 {
            return Next::Wait(t1 - elapsed);
        }
        let (start, limit) = if elapsed < t2 { (t1, t2) } else { (t2, end) };
        // a try of the previous phase (renewing) does not delay rebinding
        if let Some(tried) = last_try.filter(|t| *t >= start) {
            let gap = ((limit.saturating_sub(tried)) / 2).max(Duration::from_secs(60));
            let due = (tried + gap).min(limit);
            if elapsed < due {
                return Next::Wait(due - elapsed);
            }
        }
        if elapsed < t2 {
            Next::Renew
        } else {
            Next::Rebind
        }
    }
}

fn base(xid: u32, mac: &[u8; 6], kind: MessageType) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_chaddr(mac)
        .set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    m.opts_mut().insert(DhcpOption::ClientIdentifier(client_id));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
        OptionCode::NtpServers,
    ]));
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf))
        .expect("encoding a DHCP message into a Vec cannot fail");
    buf
}

/// DHCPDISCOVER.
pub fn discover(xid: u32, mac: &[u8; 6]) -> Vec<u8> {
    encode(&base(xid, mac, MessageType::Discover))
}

/// DHCPREQUEST for an offered address.
pub fn request(xid: u32, mac: &[u8; 6], address: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut m = base(xid, mac, MessageType::Request);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(address));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&m)
}

/// DHCPREQUEST of a bound client (RENEWING or REBINDING): its address in
/// `ciaddr`, no requested address, no server identifier; broadcast only
/// when rebinding.
pub fn request_bound(xid: u32, mac: &[u8; 6], address: Ipv4Addr, broadcast: bool) -> Vec<u8> {
    let mut m = base(xid, mac, MessageType::Request);
    m.set_ciaddr(address);
    if !broadcast {
        m.set_flags(Flags::default());
    }
    encode(&m)
}

/// Parses a server reply for our transaction.
pub fn parse_reply(bytes: &[u8], xid: u32) -> Option<(MessageType, Lease)> {
    let m = Message::decode(&mut Decoder::new(bytes)).ok()?;
    if m.opcode() != Opcode::BootReply || m.xid() != xid {
        return None;
    }
    let kind = match m.opts().get(OptionCode::MessageType)? {
        DhcpOption::MessageType(k) => *k,
        _ => return None,
    };
    let mask = match m.opts().get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => *mask,
        _ => Ipv4Addr::new(255, 255, 255, 0),
    };
    let router = match m.opts().get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match m.opts().get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let server = match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => m.siaddr(),
    };
    let lease_secs = match m.opts().get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    let renew_secs = match m.opts().get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => Some(*t),
        _ => None,
    };
    let rebind_secs = match m.opts().get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => Some(*t),
        _ => None,
    };
    let ntp = match m.opts().get(OptionCode::NtpServers) {
        Some(DhcpOption::NtpServers(n)) => n.clone(),
        _ => Vec::new(),
    };
    Some((
        kind,
        Lease {
            address: m.yiaddr(),
            prefix: u32::from(mask).count_ones() as u8,
            router,
            dns,
            server,
            lease_secs,
            renew_secs,
            rebind_secs,
            ntp,
        },
    ))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Wraps a DHCP payload in IPv4 + UDP, 0.0.0.0:68 -> 255.255.255.255:67.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64; // ttl
    p[9] = 17; // udp
    p[16..20].copy_from_slice(&[255, 255, 255, 255]);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    p[22..24].copy_from_slice(&SERVER_PORT.to_be_bytes());
    p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    // UDP checksum 0: none (allowed over IPv4)
    p[28..].copy_from_slice(payload);
    p
}

/// The UDP payload of an IPv4 packet to port 68, if that is what it is.
pub fn unframe(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < 28 || packet[0] >> 4 != 4 || packet[9] != 17 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let udp = packet.get(ihl..total)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != CLIENT_PORT {
        return None;
    }
    Some(&udp[8..])
}

/// An AF_PACKET socket on one interface, for IPv4 frames.
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

const ETH_P_IP: u16 = 0x0800;

impl PacketSocket {
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let s = PacketSocket {
            fd,
            ifindex: ifindex as i32,
        };
        let mut sll = s.addr([0; 8]);
        // SAFETY: bind with a sockaddr_ll of the right size.
        let r = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&s.fd),
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    fn addr(&self, mac: [u8; 8]) -> libc::sockaddr_ll {
        libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: ETH_P_IP.to_be(),
            sll_ifindex: self.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: mac,
        }
    }

    /// Broadcasts a framed packet.
    pub fn send_broadcast(&self, packet: &[u8]) -> io::Result<()> {
        let sll = self.addr([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        // SAFETY: sendto with a valid buffer and sockaddr_ll.
        let r = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives one packet, waiting at most `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, ms).map_err(io::Error::from)? == 0 {
            return Ok(None);
        }
        // SAFETY: recv into a valid buffer.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(Some(n as usize))
        }
    }
}

/// Waits for a reply of `want` kind to transaction `xid`.
fn wait_for(
    sock: &PacketSocket,
    xid: u32,
    want: MessageType,
    timeout: Duration,
) -> io::Result<Option<Lease>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let Some(n) = sock.recv(&mut buf, left)? else {
            return Ok(None);
        };
        if let Some((kind, lease)) = unframe(&buf[..n]).and_then(|p| parse_reply(p, xid)) {
            if kind == want {
                return Ok(Some(lease));
            }
            if kind == MessageType::Nak {
                return Err(io::Error::other("server answered DHCPNAK"));
            }
        }
    }
}

/// DISCOVER, OFFER, REQUEST, ACK; a few tries with growing timeouts.
pub fn acquire(ifindex: u32, mac: &[u8; 6], tries: u32) -> io::Result<Lease> {
    let sock = PacketSocket::open(ifindex)?;
    let mut timeout = Duration::from_millis(1000);
    for attempt in 0..tries {
        let xid = u32::from_be_bytes(rand_bytes()) ^ attempt;
        sock.send_broadcast(&frame(&discover(xid, mac)))?;
        let Some(offer) = wait_for(&sock, xid, MessageType::Offer, timeout)? else {
            timeout = (timeout * 2).min(Duration::from_secs(8));
            continue;
        };
        sock.send_broadcast(&frame(&request(xid, mac, offer.address, offer.server)))?;
        if let Some(ack) = wait_for(&sock, xid, MessageType::Ack, timeout)? {
            return Ok(ack);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no DHCP lease after {tries} tries"),
    ))
}

/// Where a bound client's requests go: the server's port 67, from port 68
/// of the leased address (tests use other ports).
pub struct Ports {
    pub client: u16,
    pub server: u16,
}

pub const PORTS: Ports = Ports {
    client: CLIENT_PORT,
    server: SERVER_PORT,
};

/// RENEWING (unicast to the server that granted the lease) or REBINDING
/// (broadcast): one REQUEST and its answer, over UDP from the leased
/// address. A NAK is an error: the caller gives the lease up.
pub fn extend(
    mac: &[u8; 6],
    lease: &Lease,
    rebinding: bool,
    ports: &Ports,
    timeout: Duration,
) -> io::Result<Lease> {
    let sock = std::net::UdpSocket::bind((lease.address, ports.client))?;
    let to = if rebinding {
        sock.set_broadcast(true)?;
        Ipv4Addr::BROADCAST
    } else {
        lease.server
    };
    let xid = u32::from_be_bytes(rand_bytes());
    sock.send_to(
        &request_bound(xid, mac, lease.address, rebinding),
        (to, ports.server),
    )?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from {to} in {} s", timeout.as_secs()),
            ));
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        match parse_reply(&buf[..n], xid) {
            Some((MessageType::Ack, new)) => return Ok(new),
            Some((MessageType::Nak, _)) => return Err(io::Error::other("server answered DHCPNAK")),
            _ => {}
        }
    }
}

fn rand_bytes() -> [u8; 4] {
    let mut b = [0u8; 4];
    // SAFETY: getrandom into a 4-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn server_reply(xid: u32, kind: MessageType) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(xid)
            .set_chaddr(&MAC)
            .set_yiaddr(Ipv4Addr::new(10, 0, 2, 15))
            .set_siaddr(Ipv4Addr::new(10, 0, 2, 2));
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        encode(&m)
    }

    #[test]
    fn discover_is_a_broadcast_request_with_our_mac() {
        let d = Message::decode(&mut Decoder::new(&discover(0x1234, &MAC))).unwrap();
        assert_eq!(d.opcode(), Opcode::BootRequest);
        assert_eq!(d.xid(), 0x1234);
        assert_eq!(d.chaddr(), &MAC);
        assert!(d.flags().broadcast());
        assert_eq!(
            d.opts().get(OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Discover))
        );
        let r = Message::decode(&mut Decoder::new(&request(
            7,
            &MAC,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
        )))
        .unwrap();
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
    }

    #[test]
    fn parses_an_ack_into_a_lease() {
        let (kind, lease) = parse_reply(&server_reply(99, MessageType::Ack), 99).unwrap();
        assert_eq!(kind, MessageType::Ack);
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease_secs: 86400,
                renew_secs: None,
                rebind_secs: None,
                ntp: vec![],
            }
        );
        assert_eq!(lease.t1(), Duration::from_secs(43200));
        assert_eq!(lease.t2(), Duration::from_secs(75600));
        // another transaction's reply is not ours
        assert!(parse_reply(&server_reply(99, MessageType::Ack), 100).is_none());
    }

    #[test]
    fn frames_round_trip_with_a_valid_ip_checksum() {
        let payload = discover(5, &MAC);
        let f = frame(&payload);
        assert_eq!(checksum(&f[..20]), 0, "header checksum verifies to zero");
        // a reply comes back to port 68: swap the ports
        let mut reply = f.clone();
        reply[20..22].copy_from_slice(&SERVER_PORT.to_be_bytes());
        reply[22..24].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        assert_eq!(unframe(&reply), Some(&payload[..]));
        assert_eq!(unframe(&f), None, "to port 67: not for the client");
        assert_eq!(unframe(&f[..10]), None);
    }

    fn recorded(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/test_data/dhcp/qemu-slirp/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn a_recorded_exchange_with_qemus_server_parses() {
        let discover = Message::decode(&mut Decoder::new(&recorded("discover.bin"))).unwrap();
        let xid = discover.xid();
        let mac: [u8; 6] = discover.chaddr()[..6].try_into().unwrap();
        // what we sent then is what we send now (we ask for more options now)
        let now = Message::decode(&mut Decoder::new(&super::discover(xid, &mac))).unwrap();
        for code in [OptionCode::MessageType, OptionCode::ClientIdentifier] {
            assert_eq!(now.opts().get(code), discover.opts().get(code));
        }
        let (kind, offer) = parse_reply(&recorded("offer.bin"), xid).unwrap();
        assert_eq!(kind, MessageType::Offer);
        let request = Message::decode(&mut Decoder::new(&recorded("request.bin"))).unwrap();
        assert_eq!(
            request.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(offer.address))
        );
        let (kind, ack) = parse_reply(&recorded("ack.bin"), xid).unwrap();
        assert_eq!(kind, MessageType::Ack);
        assert_eq!((ack.address, ack.prefix), (Ipv4Addr::new(10, 0, 2, 15), 24));
        assert_eq!(ack.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(ack.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(
            (ack.server, ack.lease_secs),
            (Ipv4Addr::new(10, 0, 2, 2), 86400)
        );
        assert!(parse_reply(&recorded("ack.bin"), xid ^ 1).is_none());
    }

    fn lease(secs: u32) -> Lease {
        Lease {
            address: Ipv4Addr::LOCALHOST,
            prefix: 8,
            router: None,
            dns: vec![],
            server: Ipv4Addr::LOCALHOST,
            lease_secs: secs,
            renew_secs: None,
            rebind_secs: None,
            ntp: vec![],
        }
    }

    #[test]
    fn renew_at_t1_rebind_at_t2_expire_at_the_end() {
        let s = Duration::from_secs;
        let l = lease(3600);
        assert_eq!(l.next(s(0), None), Next::Wait(s(1800)));
        assert_eq!(l.next(s(1800), None), Next::Renew);
        // a failed renewal: again halfway to T2 (3150 s), at least 60 s later
        assert_eq!(l.next(s(1801), Some(s(1800))), Next::Wait(s(674)));
        assert_eq!(l.next(s(2475), Some(s(1800))), Next::Renew);
        assert_eq!(
            l.next(s(3100), Some(s(3090))),
            Next::Wait(s(50)),
            "never past T2"
        );
        assert_eq!(l.next(s(3150), Some(s(3090))), Next::Rebind);
        assert_eq!(l.next(s(3500), Some(s(3450))), Next::Wait(s(25)));
        assert_eq!(l.next(s(3600), Some(s(3590))), Next::Expired);
        let given = Lease {
            renew_secs: Some(100),
            rebind_secs: Some(200),
            ..lease(300)
        };
        assert_eq!(given.next(s(150), None), Next::Renew);
        assert_eq!(given.next(s(250), None), Next::Rebind);
    }

    /// A server on loopback answering a renewal with the recorded ACK
    /// (its transaction id replaced), or a NAK.
    fn renewal_server(nak: bool) -> (u16, std::thread::JoinHandle<Message>) {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let request = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
            let mut reply = Message::decode(&mut Decoder::new(&recorded("ack.bin"))).unwrap();
            reply.set_xid(request.xid());
            if nak {
                reply
                    .opts_mut()
                    .insert(DhcpOption::MessageType(MessageType::Nak));
            }
            server.send_to(&encode(&reply), from).unwrap();
            request
        });
        (port, handle)
    }

    #[test]
    fn renewal_is_a_unicast_request_from_the_leased_address() {
        let (port, server) = renewal_server(false);
        let client_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ports = Ports {
            client: client_port,
            server: port,
        };
        let renewed = extend(&MAC, &lease(3600), false, &ports, Duration::from_secs(5)).unwrap();
        assert_eq!(renewed.lease_secs, 86400);
        let request = server.join().unwrap();
        assert_eq!(request.ciaddr(), Ipv4Addr::LOCALHOST);
        assert!(!request.flags().broadcast());
        assert_eq!(
            request.opts().get(OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Request))
        );
        assert!(request.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert!(request.opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn a_refused_renewal_is_an_error() {
        let (port, server) = renewal_server(true);
        let client_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ports = Ports {
            client: client_port,
            server: port,
        };
        let e = extend(&MAC, &lease(3600), false, &ports, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("DHCPNAK"), "{e}");
        server.join().unwrap();
    }
}
