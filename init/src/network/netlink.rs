// SPDX-License-Identifier: GPL-2.0-only
//! rtnetlink over a blocking netlink-sys socket, with netlink-packet-route
//! messages: list links, set a link up, add an address, add a route.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub ethernet: bool,
    /// Carrier and up (IFF_RUNNING).
    pub running: bool,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

impl Route {
    pub fn describe(&self) -> String {
        let dst = if self.prefix == 0 {
            "default".to_string()
        } else {
            format!("{}/{}", self.destination, self.prefix)
        };
        match self.gateway {
            Some(g) => format!("{dst} via {g}"),
            None => format!("{dst} on link"),
        }
    }
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 1 })
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut nl =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        self.seq += 1;
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| io::Error::other(format!("netlink decode: {e}")))?;
                let len = m.header.length as usize;
                if m.header.sequence_number != self.seq {
                    off += len.max(16);
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
            if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                return Ok(out);
            }
        }
    }

    /// All interfaces, by index.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut links: Vec<Link> = msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .map(|l| {
                let mut name = String::new();
                let mut mac = None;
                for a in &l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = n.clone(),
                        LinkAttribute::Address(a) if a.len() == 6 => {
                            mac = Some(a.as_slice().try_into().expect("6 bytes"))
                        }
                        _ => {}
                    }
                }
                Link {
                    index: l.header.index,
                    name,
                    mac,
                    ethernet: l.header.link_layer_type == LinkLayerType::Ether,
                    running: l.header.flags.contains(LinkFlags::Running),
                }
            })
            .collect();
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// IPv4 addresses on the system, as (link index, address, prefix).
    pub fn addresses(&mut self) -> io::Result<Vec<(u32, Ipv4Addr, u8)>> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        let msgs = self.request(RouteNetlinkMessage::GetAddress(m), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for msg in msgs {
            if let RouteNetlinkMessage::NewAddress(a) = msg {
                for attr in &a.attributes {
                    if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                        out.push((a.header.index, *ip, a.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// IPv4 routes of the main table.
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        let msgs = self.request(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for msg in msgs {
            let RouteNetlinkMessage::NewRoute(r) = msg else {
                continue;
            };
            if r.header.table != 254 {
                continue;
            }
            let mut route = Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: r.header.destination_prefix_length,
                gateway: None,
                oif: None,
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => route.destination = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(*g),
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    _ => {}
                }
            }
            out.push(route);
        }
        Ok(out)
    }

    /// Removes an IPv4 address from a link.
    pub fn remove_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        self.request(RouteNetlinkMessage::DelAddress(m), NLM_F_ACK)
            .map(|_| ())
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(|_| ())
    }

    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        let bits = u32::from(ip);
        let host_mask = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        m.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                bits | host_mask,
            )));
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }

    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 0;
        m.header.table = 254; // main
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }
}

/// The interface to configure: the named one, or the first Ethernet adapter.
pub fn pick<'a>(links: &'a [Link], wanted: Option<&str>) -> Option<&'a Link> {
    match wanted {
        Some(name) => links.iter().find(|l| l.name == name),
        None => links
            .iter()
            .find(|l| l.ethernet && l.name != "lo" && l.mac.is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, ethernet: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            ethernet,
            running: true,
        }
    }

    #[test]
    fn picks_the_first_ethernet_adapter_or_the_named_one() {
        let links = vec![
            link(1, "lo", false),
            link(2, "eth0", true),
            link(3, "eth1", true),
        ];
        assert_eq!(pick(&links, None).unwrap().name, "eth0");
        assert_eq!(pick(&links, Some("eth1")).unwrap().index, 3);
        assert!(pick(&links, Some("eth9")).is_none());
        assert!(pick(&links[..1], None).is_none());
    }

    /// Talks to the real kernel: lists this machine's links (no changes).
    #[test]
    fn lists_real_links_over_netlink() {
        let mut nl = Netlink::open().unwrap();
        let links = nl.links().unwrap();
        assert!(
            links.iter().any(|l| l.name == "lo" && l.index == 1),
            "{links:?}"
        );
        let addrs = nl.addresses().unwrap();
        assert!(addrs.contains(&(1, Ipv4Addr::LOCALHOST, 8)), "{addrs:?}");
    }
}
