//! DHCPv4 client messages (dhcproto) carried in IPv4/UDP frames over an
//! AF_PACKET socket: it needs no address on the interface and is not
//! affected by rp_filter, as every real DHCP client does it.

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
}

impl Lease {
    /// When to renew (T1): half the lease, as RFC 2131 says.
    pub fn renew_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_secs / 2).max(30))
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
    Some((
        kind,
        Lease {
            address: m.yiaddr(),
            prefix: u32::from(mask).count_ones() as u8,
            router,
            dns,
            server,
            lease_secs,
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

/// Renews a lease (a REQUEST for the same address).
pub fn renew(ifindex: u32, mac: &[u8; 6], lease: &Lease) -> io::Result<Lease> {
    let sock = PacketSocket::open(ifindex)?;
    let xid = u32::from_be_bytes(rand_bytes());
    sock.send_broadcast(&frame(&request(xid, mac, lease.address, lease.server)))?;
    wait_for(&sock, xid, MessageType::Ack, Duration::from_secs(4))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer to the renewal"))
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
            }
        );
        assert_eq!(lease.renew_after(), Duration::from_secs(43200));
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
}
