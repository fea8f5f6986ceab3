// SPDX-License-Identifier: GPL-2.0-only
//! The rule set's rules lowered to nf_tables expressions, as `nft` would
//! generate them (`nft -d netlink` shows the same): what [`super::codec`]
//! encodes and what the kernel's read-back is compared with.

use super::rules::{Match, Rule, Verdict};

const NFPROTO_IPV4: u8 = 2;
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
// nf_tables.h
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_REJECT_TCP_RST: u32 = 1;
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
const NFT_REJECT_ICMPX_PORT_UNREACH: u8 = 1;

/// One nf_tables expression, as far as the appliance uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    /// `(reg & mask) ^ 0`, then compared.
    Mask {
        len: u32,
        mask: Vec<u8>,
    },
    Ct {
        key: u32,
    },
    Verdict(u32),
    Reject {
        kind: u32,
        code: Option<u8>,
    },
}

const EQ: u32 = 0;
const NEQ: u32 = 1;
const LT: u32 = 2;
const GTE: u32 = 5;
const LE: u32 = 3;

const META_IIF: u32 = 4;
const META_OIF: u32 = 5;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;

/// The expressions of one rule, as `nft` would generate them.
pub fn lower(rule: &Rule) -> Vec<Expr> {
    let mut out = Vec::new();
    let tport = |offset| Expr::Payload {
        base: NFT_PAYLOAD_TRANSPORT_HEADER,
        offset,
        len: 2,
    };
    for m in &rule.matches {
        match *m {
            Match::Iif(i) | Match::Oif(i) => {
                let key = if matches!(m, Match::Iif(_)) {
                    META_IIF
                } else {
                    META_OIF
                };
                out.push(Expr::Meta { key });
                out.push(Expr::Cmp {
                    op: EQ,
                    data: i.to_ne_bytes().to_vec(),
                });
            }
            Match::CtState(bits) => {
                out.push(Expr::Ct { key: NFT_CT_STATE });
                out.push(Expr::Mask {
                    len: 4,
                    mask: bits.to_ne_bytes().to_vec(),
                });
                out.push(Expr::Cmp {
                    op: NEQ,
                    data: vec![0; 4],
                });
            }
            Match::L4Proto(p) => {
                out.push(Expr::Meta { key: META_L4PROTO });
                out.push(Expr::Cmp {
                    op: EQ,
                    data: vec![p],
                });
            }
            Match::Saddr4(net, len) | Match::Daddr4(net, len) => {
                out.push(Expr::Meta { key: META_NFPROTO });
                out.push(Expr::Cmp {
                    op: EQ,
                    data: vec![NFPROTO_IPV4],
                });
                // the IPv4 header: source address at 12, destination at 16
                out.push(Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: if matches!(m, Match::Saddr4(..)) {
                        12
                    } else {
                        16
                    },
                    len: 4,
                });
                let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                if len < 32 {
                    out.push(Expr::Mask {
                        len: 4,
                        mask: mask.to_be_bytes().to_vec(),
                    });
                }
                out.push(Expr::Cmp {
                    op: EQ,
                    data: (u32::from(net) & mask).to_be_bytes().to_vec(),
                });
            }
            Match::Sport(p) | Match::Dport(p) => {
                out.push(tport(if matches!(m, Match::Sport(_)) { 0 } else { 2 }));
                out.push(Expr::Cmp {
                    op: EQ,
                    data: p.to_be_bytes().to_vec(),
                });
            }
            Match::SportBelow(p) => {
                out.push(tport(0));
                out.push(Expr::Cmp {
                    op: LT,
                    data: p.to_be_bytes().to_vec(),
                });
            }
            Match::IcmpType(a, b) => {
                out.push(Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: 0,
                    len: 1,
                });
                if a == b {
                    out.push(Expr::Cmp {
                        op: EQ,
                        data: vec![a],
                    });
                } else {
                    out.push(Expr::Cmp {
                        op: GTE,
                        data: vec![a],
                    });
                    out.push(Expr::Cmp {
                        op: LE,
                        data: vec![b],
                    });
                }
            }
        }
    }
    out.push(match rule.verdict {
        Verdict::Accept => Expr::Verdict(NF_ACCEPT),
        Verdict::Drop => Expr::Verdict(NF_DROP),
        Verdict::TcpReset => Expr::Reject {
            kind: NFT_REJECT_TCP_RST,
            code: None,
        },
        Verdict::Unreachable => Expr::Reject {
            kind: NFT_REJECT_ICMPX_UNREACH,
            code: Some(NFT_REJECT_ICMPX_PORT_UNREACH),
        },
    });
    out
}

/// A chain's policy as a verdict code.
pub fn policy_code(v: Verdict) -> u32 {
    if v == Verdict::Accept {
        NF_ACCEPT
    } else {
        NF_DROP
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::{ruleset, sample_state};
    use super::*;

    #[test]
    fn lowering_matches_what_nft_generates() {
        let rs = ruleset(&sample_state());
        let ssh = rs.chains[0]
            .rules
            .iter()
            .find(|r| r.comment.contains("support"))
            .unwrap();
        // nft -d netlink: ip saddr 198.51.100.0/24 tcp dport 22 accept
        assert_eq!(
            lower(ssh),
            vec![
                Expr::Meta { key: META_NFPROTO },
                Expr::Cmp {
                    op: EQ,
                    data: vec![2]
                },
                Expr::Payload {
                    base: 1,
                    offset: 12,
                    len: 4
                },
                Expr::Mask {
                    len: 4,
                    mask: vec![255, 255, 255, 0]
                },
                Expr::Cmp {
                    op: EQ,
                    data: vec![198, 51, 100, 0]
                },
                Expr::Meta { key: META_L4PROTO },
                Expr::Cmp {
                    op: EQ,
                    data: vec![6]
                },
                Expr::Payload {
                    base: 2,
                    offset: 2,
                    len: 2
                },
                Expr::Cmp {
                    op: EQ,
                    data: vec![0, 22]
                },
                Expr::Verdict(NF_ACCEPT),
            ]
        );
        let ct = &rs.chains[0].rules[1];
        assert_eq!(
            lower(ct),
            vec![
                Expr::Ct { key: NFT_CT_STATE },
                Expr::Mask {
                    len: 4,
                    mask: 6u32.to_ne_bytes().to_vec()
                },
                Expr::Cmp {
                    op: NEQ,
                    data: vec![0; 4]
                },
                Expr::Verdict(NF_ACCEPT),
            ]
        );
    }
}
