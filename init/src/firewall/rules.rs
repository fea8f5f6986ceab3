// SPDX-License-Identifier: GPL-2.0-only
//! The rule set as data: a pure function of the appliance's state.
//!
//! One `inet` table, `ferry`, with an `input` and an `output` chain, both
//! with policy drop. [`ruleset`] decides which rules exist; [`super::lower`]
//! turns them into nf_tables expressions. The text form ([`Ruleset`]'s `Display`)
//! is what `nft list table inet ferry` would print, near enough to read.

use std::fmt;
use std::net::Ipv4Addr;

/// The name of our table (family `inet`: IPv4 and IPv6 alike).
pub const TABLE: &str = "ferry";

/// Interface index of the loopback device (always 1 in a network namespace).
pub const LOOPBACK: u32 = 1;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// What the appliance serves as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Agent,
    /// Serves the hub's API on port 443.
    Hub,
}

/// How a support engineer reaches the appliance while the channel is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupportAccess {
    /// dropbear listens on port 22, optionally only for this source range.
    Inbound { allow_from: Option<(Ipv4Addr, u8)> },
    /// dbclient connects out to a support host on this port.
    Outbound { port: u16 },
}

/// Everything the rule set depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FirewallState {
    /// Port 80 (activation) is open until the appliance is activated.
    pub activated: bool,
    pub role: Role,
    /// The support channel, while open.
    pub support: Option<SupportAccess>,
}

/// A condition of a rule. Conditions on ports and ICMP types follow a
/// condition on the layer-4 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Arrived on this interface index.
    Iif(u32),
    /// Leaves through this interface index.
    Oif(u32),
    /// Connection tracking state: any of these bits.
    CtState(u32),
    L4Proto(u8),
    /// IPv4 source address within this network.
    Saddr4(Ipv4Addr, u8),
    /// IPv4 destination address within this network.
    Daddr4(Ipv4Addr, u8),
    Sport(u16),
    Dport(u16),
    /// Source port below this one (privileged ports: below 1024).
    SportBelow(u16),
    /// ICMP or ICMPv6 type within this range (inclusive).
    IcmpType(u8, u8),
}

/// Connection tracking state bits, as the kernel numbers them.
pub const CT_INVALID: u32 = 1;
pub const CT_ESTABLISHED: u32 = 1 << 1;
pub const CT_RELATED: u32 = 1 << 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Answer a TCP segment with a reset ("connection refused").
    TcpReset,
    /// Answer with ICMP port unreachable (ICMPv6 for IPv6).
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
    /// Why the rule exists; stored in the kernel as the rule's comment.
    pub comment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Output,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub hook: Hook,
    /// Accept or Drop.
    pub policy: Verdict,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: &'static str,
    pub chains: Vec<Chain>,
}

fn rule(matches: &[Match], verdict: Verdict, comment: &str) -> Rule {
    Rule {
        matches: matches.to_vec(),
        verdict,
        comment: comment.to_string(),
    }
}

/// EC2's instance metadata service (link-local; plain HTTP).
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Ports the appliance connects to, by protocol and purpose.
const OUTBOUND: &[(u8, u16, &str)] = &[
    (UDP, 67, "DHCP"),
    (UDP, 53, "DNS"),
    (TCP, 53, "DNS"),
    (UDP, 123, "NTP"),
    (TCP, 443, "HTTPS"),
    (TCP, 111, "NFS: rpcbind"),
    (UDP, 111, "NFS: rpcbind"),
    (TCP, 2049, "NFS"),
    (UDP, 2049, "NFS"),
];

/// The rule set for a state.
pub fn ruleset(st: &FirewallState) -> Ruleset {
    use Match::*;
    use Verdict::*;
    let mut input = vec![
        rule(&[Iif(LOOPBACK)], Accept, "loopback"),
        rule(
            &[CtState(CT_ESTABLISHED | CT_RELATED)],
            Accept,
            "replies to the appliance's own connections",
        ),
        rule(&[CtState(CT_INVALID)], Drop, "invalid packets"),
        rule(&[L4Proto(ICMP), IcmpType(8, 8)], Accept, "ping"),
        rule(
            &[L4Proto(ICMPV6), IcmpType(128, 128)],
            Accept,
            "ping (IPv6)",
        ),
        rule(
            &[L4Proto(ICMPV6), IcmpType(133, 136)],
            Accept,
            "IPv6 neighbour and router discovery",
        ),
        rule(
            &[L4Proto(UDP), Sport(67), Dport(68)],
            Accept,
            "DHCP server replies",
        ),
    ];
    if !st.activated {
        input.push(rule(
            &[L4Proto(TCP), Dport(80)],
            Accept,
            "activation (until the appliance is activated)",
        ));
    }
    if st.role == Role::Hub {
        input.push(rule(&[L4Proto(TCP), Dport(443)], Accept, "hub API"));
    }
    if let Some(SupportAccess::Inbound { allow_from }) = st.support {
        let mut m = vec![];
        if let Some((net, len)) = allow_from {
            m.push(Saddr4(net, len));
        }
        m.extend([L4Proto(TCP), Dport(22)]);
        input.push(rule(&m, Accept, "support channel (SSH)"));
    }
    input.extend([
        rule(&[L4Proto(TCP)], TcpReset, "closed TCP ports are refused"),
        rule(&[L4Proto(UDP)], Unreachable, "closed UDP ports are refused"),
    ]);

    let mut output = vec![
        rule(&[Oif(LOOPBACK)], Accept, "loopback"),
        rule(
            &[CtState(CT_ESTABLISHED | CT_RELATED)],
            Accept,
            "established connections",
        ),
        rule(&[L4Proto(ICMP)], Accept, "ICMP"),
        rule(&[L4Proto(ICMPV6)], Accept, "ICMPv6"),
    ];
    for (proto, port, why) in OUTBOUND {
        output.push(rule(&[L4Proto(*proto), Dport(*port)], Accept, why));
    }
    for proto in [TCP, UDP] {
        output.push(rule(
            &[L4Proto(proto), SportBelow(1024)],
            Accept,
            "the kernel's NFS client (reserved source ports): NFSv3 mountd and NFS on any port",
        ));
    }
    output.push(rule(
        &[Daddr4(METADATA, 32), L4Proto(TCP), Dport(80)],
        Accept,
        "EC2 instance metadata (IMDSv2)",
    ));
    if let Some(SupportAccess::Outbound { port }) = st.support {
        output.push(rule(
            &[L4Proto(TCP), Dport(port)],
            Accept,
            "support channel (SSH to the support host)",
        ));
    }
    output.extend([
        rule(&[L4Proto(TCP)], TcpReset, "other destinations are refused"),
        rule(
            &[L4Proto(UDP)],
            Unreachable,
            "other destinations are refused",
        ),
    ]);
    Ruleset {
        table: TABLE,
        chains: vec![
            Chain {
                name: "input",
                hook: Hook::Input,
                policy: Drop,
                rules: input,
            },
            Chain {
                name: "output",
                hook: Hook::Output,
                policy: Drop,
                rules: output,
            },
        ],
    }
}

fn proto_name(p: u8) -> String {
    match p {
        TCP => "tcp".into(),
        UDP => "udp".into(),
        ICMP => "icmp".into(),
        ICMPV6 => "ipv6-icmp".into(),
        n => n.to_string(),
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Match::Iif(LOOPBACK) => write!(f, "iif lo"),
            Match::Iif(i) => write!(f, "iif {i}"),
            Match::Oif(LOOPBACK) => write!(f, "oif lo"),
            Match::Oif(i) => write!(f, "oif {i}"),
            Match::CtState(bits) => {
                let names: Vec<&str> = [
                    (CT_INVALID, "invalid"),
                    (CT_ESTABLISHED, "established"),
                    (CT_RELATED, "related"),
                ]
                .iter()
                .filter(|(b, _)| bits & b != 0)
                .map(|(_, n)| *n)
                .collect();
                write!(f, "ct state {}", names.join(","))
            }
            Match::L4Proto(p) => write!(f, "meta l4proto {}", proto_name(p)),
            Match::Saddr4(a, l) => write!(f, "ip saddr {a}/{l}"),
            Match::Daddr4(a, l) => write!(f, "ip daddr {a}/{l}"),
            Match::Sport(p) => write!(f, "th sport {p}"),
            Match::Dport(p) => write!(f, "th dport {p}"),
            Match::SportBelow(p) => write!(f, "th sport < {p}"),
            Match::IcmpType(a, b) if a == b => write!(f, "icmp type {a}"),
            Match::IcmpType(a, b) => write!(f, "icmp type {a}-{b}"),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::TcpReset => "reject with tcp reset",
            Verdict::Unreachable => "reject",
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        write!(f, "{} comment {:?}", self.verdict, self.comment)
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {} {{", self.table)?;
        for c in &self.chains {
            let hook = match c.hook {
                Hook::Input => "input",
                Hook::Output => "output",
            };
            writeln!(f, "  chain {} {{", c.name)?;
            writeln!(
                f,
                "    type filter hook {hook} priority 0; policy {};",
                c.policy
            )?;
            for r in &c.rules {
                writeln!(f, "    {r}")?;
            }
            writeln!(f, "  }}")?;
        }
        writeln!(f, "}}")
    }
}

/// A hub with the support channel open inbound from a network: the state
/// the lowering, the codec and the kernel's read-back are tested with.
#[cfg(test)]
pub(super) fn sample_state() -> FirewallState {
    FirewallState {
        activated: false,
        role: Role::Hub,
        support: Some(SupportAccess::Inbound {
            allow_from: Some(("198.51.100.7".parse().unwrap(), 24)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(st: &FirewallState, chain: &str) -> Vec<String> {
        ruleset(st)
            .chains
            .iter()
            .find(|c| c.name == chain)
            .unwrap()
            .rules
            .iter()
            .map(|r| {
                let s = r.to_string();
                s[..s.find(" comment").unwrap()].to_string()
            })
            .collect()
    }

    #[test]
    fn fresh_appliance_opens_only_activation() {
        let st = FirewallState::default();
        assert_eq!(
            lines(&st, "input"),
            [
                "iif lo accept",
                "ct state established,related accept",
                "ct state invalid drop",
                "meta l4proto icmp icmp type 8 accept",
                "meta l4proto ipv6-icmp icmp type 128 accept",
                "meta l4proto ipv6-icmp icmp type 133-136 accept",
                "meta l4proto udp th sport 67 th dport 68 accept",
                "meta l4proto tcp th dport 80 accept",
                "meta l4proto tcp reject with tcp reset",
                "meta l4proto udp reject",
            ]
        );
        let rs = ruleset(&st);
        assert!(rs.chains.iter().all(|c| c.policy == Verdict::Drop));
        assert_eq!(rs.chains[0].hook, Hook::Input);
        assert_eq!(rs.chains[1].hook, Hook::Output);
    }

    #[test]
    fn activated_hub_closes_80_and_opens_443() {
        let st = FirewallState {
            activated: true,
            role: Role::Hub,
            support: None,
        };
        let l = lines(&st, "input");
        assert!(!l.iter().any(|r| r.contains("dport 80")), "{l:?}");
        assert!(l.contains(&"meta l4proto tcp th dport 443 accept".to_string()));
        assert!(!l.iter().any(|r| r.contains("dport 22")));
        let agent = FirewallState {
            role: Role::Agent,
            ..st
        };
        assert!(!lines(&agent, "input").iter().any(|r| r.contains("443")));
    }

    #[test]
    fn port_22_only_while_support_is_open_inbound() {
        let closed = FirewallState {
            activated: true,
            ..Default::default()
        };
        assert!(!lines(&closed, "input").iter().any(|r| r.contains("22")));
        let open = FirewallState {
            support: Some(SupportAccess::Inbound { allow_from: None }),
            ..closed
        };
        let l = lines(&open, "input");
        let i = l
            .iter()
            .position(|r| r == "meta l4proto tcp th dport 22 accept")
            .unwrap();
        // before the final refusals
        assert!(i < l.len() - 2);
        let from = FirewallState {
            support: Some(SupportAccess::Inbound {
                allow_from: Some(("198.51.100.0".parse().unwrap(), 24)),
            }),
            ..closed
        };
        assert!(lines(&from, "input")
            .contains(&"ip saddr 198.51.100.0/24 meta l4proto tcp th dport 22 accept".to_string()));
        // outbound mode: nothing inbound, SSH out to the support port
        let out = FirewallState {
            support: Some(SupportAccess::Outbound { port: 2222 }),
            ..closed
        };
        assert!(!lines(&out, "input").iter().any(|r| r.contains("22")));
        assert!(
            lines(&out, "output").contains(&"meta l4proto tcp th dport 2222 accept".to_string())
        );
        assert!(!lines(&closed, "output").iter().any(|r| r.contains("2222")));
    }

    #[test]
    fn outbound_allows_what_the_appliance_needs() {
        let l = lines(&FirewallState::default(), "output");
        for want in [
            "oif lo accept",
            "ct state established,related accept",
            "meta l4proto udp th dport 53 accept",
            "meta l4proto tcp th dport 53 accept",
            "meta l4proto udp th dport 123 accept",
            "meta l4proto tcp th dport 443 accept",
            "meta l4proto tcp th dport 2049 accept",
            "meta l4proto tcp th dport 111 accept",
            "meta l4proto tcp th sport < 1024 accept",
            "meta l4proto udp th dport 67 accept",
            "ip daddr 169.254.169.254/32 meta l4proto tcp th dport 80 accept",
        ] {
            assert!(l.contains(&want.to_string()), "missing {want}: {l:?}");
        }
        assert_eq!(l[l.len() - 2], "meta l4proto tcp reject with tcp reset");
        assert!(!l.iter().any(|r| r.contains("dport 22 ")));
    }

    #[test]
    fn text_form_reads_like_nft() {
        let t = ruleset(&FirewallState::default()).to_string();
        assert!(t.starts_with("table inet ferry {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    iif lo accept comment \"loopback\"\n"), "{t}");
    }
}
