// SPDX-License-Identifier: GPL-2.0-only
//! The nfnetlink messages: expressions encoded as netlink-packet-netfilter's
//! attributes (`ct` and `reject`, which that crate does not model, as raw
//! ones), the batch that replaces our table atomically, and the chains and
//! rules the kernel dumps decoded back ([`KernelChain`]), to be compared
//! with what was meant.

use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook as NlHook, HookNumber, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, TableAttribute,
    TableMessage, Verdict as NlVerdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use nfcore::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_REQUEST,
};

use super::lower::{lower, policy_code, Expr};
use super::rules::{Chain, Hook, Ruleset};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
// nf_tables.h
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
/// libnftnl's rule comment in the rule's user data, so `nft` shows it.
const UDATA_RULE_COMMENT: u8 = 0;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn meta_key(k: MetaKey) -> u32 {
    k.into()
}

fn expr_attribute(e: &Expr) -> ListAttribute<ExpressionAttribute> {
    let r1 = Register::Reg1;
    let ex = match e {
        Expr::Meta { key } => Expressions::Meta(vec![
            Meta::Key(MetaKey::from(*key)),
            Meta::DestinationRegister(r1),
        ]),
        Expr::Payload { base, offset, len } => Expressions::Payload(vec![
            Payload::DestinationRegister(r1),
            Payload::Base(*base),
            Payload::Offset(*offset),
            Payload::Len(*len),
        ]),
        Expr::Cmp { op, data } => Expressions::Cmp(vec![
            Cmp::SourceRegister(r1),
            Cmp::Op(Operator::from(*op)),
            Cmp::Data(DataAttribute::Value(data.clone())),
        ]),
        Expr::Mask { len, mask } => Expressions::Bitwise(vec![
            Bitwise::SourceRegister(r1),
            Bitwise::DestinationRegister(r1),
            Bitwise::Length(*len),
            Bitwise::Mask(DataAttribute::Value(mask.clone())),
            Bitwise::Xor(DataAttribute::Value(vec![0; *len as usize])),
        ]),
        Expr::Ct { key } => Expressions::Other {
            expression_type: "ct".into(),
            attributes: vec![
                DefaultNla::new(NFTA_CT_DREG, u32::from(r1).to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_CT_KEY, key.to_be_bytes().to_vec()),
            ],
        },
        Expr::Verdict(code) => Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                NlVerdict::from(*code),
            )])),
        ]),
        Expr::Reject { kind, code } => {
            let mut attributes = vec![DefaultNla::new(
                NFTA_REJECT_TYPE,
                kind.to_be_bytes().to_vec(),
            )];
            if let Some(c) = code {
                attributes.push(DefaultNla::new(NFTA_REJECT_ICMP_CODE, vec![*c]));
            }
            Expressions::Other {
                expression_type: "reject".into(),
                attributes,
            }
        }
    };
    ListAttribute::from(ex)
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// Reads one expression back; registers must be the ones we write.
fn decode_expr(attrs: &[ExpressionAttribute]) -> Result<Expr, String> {
    let data = attrs
        .iter()
        .find_map(|a| match a {
            ExpressionAttribute::Data(d) => Some(d),
            _ => None,
        })
        .ok_or("an expression without data")?;
    let bad = || format!("unexpected expression {data:?}");
    let value = |d: &DataAttribute| match d {
        DataAttribute::Value(v) => Some(v.clone()),
        _ => None,
    };
    Ok(match data {
        Expressions::Meta(m) => {
            let mut key = None;
            for a in m {
                match a {
                    Meta::Key(k) => key = Some(meta_key(*k)),
                    Meta::DestinationRegister(Register::Reg1) => {}
                    _ => return Err(bad()),
                }
            }
            Expr::Meta {
                key: key.ok_or_else(bad)?,
            }
        }
        Expressions::Payload(p) => {
            let (mut base, mut offset, mut len) = (None, None, None);
            for a in p {
                match a {
                    Payload::Base(b) => base = Some(*b),
                    Payload::Offset(o) => offset = Some(*o),
                    Payload::Len(l) => len = Some(*l),
                    Payload::DestinationRegister(Register::Reg1) => {}
                    _ => return Err(bad()),
                }
            }
            Expr::Payload {
                base: base.ok_or_else(bad)?,
                offset: offset.ok_or_else(bad)?,
                len: len.ok_or_else(bad)?,
            }
        }
        Expressions::Cmp(c) => {
            let (mut op, mut v) = (None, None);
            for a in c {
                match a {
                    Cmp::Op(o) => op = Some(u32::from(*o)),
                    Cmp::Data(d) => v = value(d),
                    Cmp::SourceRegister(Register::Reg1) => {}
                    _ => return Err(bad()),
                }
            }
            Expr::Cmp {
                op: op.ok_or_else(bad)?,
                data: v.ok_or_else(bad)?,
            }
        }
        Expressions::Bitwise(b) => {
            let (mut len, mut mask, mut xor) = (None, None, None);
            for a in b {
                match a {
                    Bitwise::Length(l) => len = Some(*l),
                    Bitwise::Mask(d) => mask = value(d),
                    Bitwise::Xor(d) => xor = value(d),
                    // NFT_BITWISE_BOOL, the kernel's default, dumped by newer kernels
                    Bitwise::Op(0) => {}
                    Bitwise::SourceRegister(Register::Reg1)
                    | Bitwise::DestinationRegister(Register::Reg1) => {}
                    _ => return Err(bad()),
                }
            }
            if xor.as_ref().is_none_or(|x| x.iter().any(|b| *b != 0)) {
                return Err(bad());
            }
            Expr::Mask {
                len: len.ok_or_else(bad)?,
                mask: mask.ok_or_else(bad)?,
            }
        }
        Expressions::Immediate(i) => {
            let mut code = None;
            for a in i {
                match a {
                    Immediate::DestinationRegister(Register::Verdict) => {}
                    Immediate::Data(DataAttribute::Verdict(v)) => {
                        for va in v {
                            if let VerdictAttribute::Code(c) = va {
                                code = Some(u32::from(*c));
                            }
                        }
                    }
                    _ => return Err(bad()),
                }
            }
            Expr::Verdict(code.ok_or_else(bad)?)
        }
        Expressions::Other {
            expression_type,
            attributes,
        } => {
            let get = |k: u16| {
                attributes
                    .iter()
                    .find(|a| a.kind() & NLA_TYPE_MASK == k)
                    .map(|a| {
                        let mut v = vec![0; a.value_len()];
                        a.emit_value(&mut v);
                        v
                    })
            };
            match expression_type.as_str() {
                "ct" => {
                    if get(NFTA_CT_DREG).and_then(|v| be32(&v)) != Some(u32::from(Register::Reg1)) {
                        return Err(bad());
                    }
                    Expr::Ct {
                        key: get(NFTA_CT_KEY).and_then(|v| be32(&v)).ok_or_else(bad)?,
                    }
                }
                "reject" => Expr::Reject {
                    kind: get(NFTA_REJECT_TYPE)
                        .and_then(|v| be32(&v))
                        .ok_or_else(bad)?,
                    code: get(NFTA_REJECT_ICMP_CODE).and_then(|v| v.first().copied()),
                },
                _ => return Err(bad()),
            }
        }
        _ => return Err(bad()),
    })
}

/// libnftnl's user data with a comment (type, length, text with its NUL).
fn comment_udata(c: &str) -> Vec<u8> {
    let mut text = c.as_bytes()[..c.len().min(250)].to_vec();
    text.push(0);
    let mut v = vec![UDATA_RULE_COMMENT, text.len() as u8];
    v.extend(text);
    v
}

fn udata_comment(u: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 2 <= u.len() {
        let (t, l) = (u[i], u[i + 1] as usize);
        let v = u.get(i + 2..i + 2 + l)?;
        if t == UDATA_RULE_COMMENT {
            return Some(
                String::from_utf8_lossy(v)
                    .trim_end_matches('\0')
                    .to_string(),
            );
        }
        i += 2 + l;
    }
    None
}

fn hook_number(h: Hook) -> InetHookNumber {
    match h {
        Hook::Input => InetHookNumber::LocalIn,
        Hook::Output => InetHookNumber::LocalOut,
    }
}

pub(super) fn nft(
    family: NetfilterProtoFamily,
    m: NfTablesMessage,
    flags: u16,
) -> NetlinkMessage<NetfilterMessage> {
    let mut nl = NetlinkMessage::from(NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), m));
    nl.header.flags = NLM_F_REQUEST | flags;
    nl
}

/// The batch that replaces our table: add it (a no-op if it exists), delete
/// it, add it anew with its chains and rules. The kernel applies all of it
/// or none.
pub fn batch(rs: &Ruleset) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let inet = NetfilterProtoFamily::Inet;
    let table = || vec![TableAttribute::Name(rs.table.into())];
    let control = |c: ControlMessage| {
        let mut nl = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            c,
        ));
        nl.header.flags = NLM_F_REQUEST;
        nl
    };
    let mut out = vec![control(ControlMessage::BatchBegin)];
    let t = |attributes| TableMessage { attributes };
    out.push(nft(
        inet,
        NfTablesMessage::NewTable(t(table())),
        NLM_F_CREATE | NLM_F_ACK,
    ));
    out.push(nft(
        inet,
        NfTablesMessage::DeleteTable(t(table())),
        NLM_F_ACK,
    ));
    out.push(nft(
        inet,
        NfTablesMessage::NewTable(t(table())),
        NLM_F_CREATE | NLM_F_ACK,
    ));
    for c in &rs.chains {
        out.push(nft(
            inet,
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(rs.table.into()),
                    ChainAttribute::Name(c.name.into()),
                    ChainAttribute::Hook(vec![
                        NlHook::Number(HookNumber::Inet(hook_number(c.hook))),
                        NlHook::Priority(0),
                    ]),
                    ChainAttribute::Policy(policy_code(c.policy)),
                    ChainAttribute::Type("filter".into()),
                ],
            }),
            NLM_F_CREATE | NLM_F_ACK,
        ));
        for r in &c.rules {
            out.push(nft(
                inet,
                NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(rs.table.into()),
                        RuleAttribute::Chain(c.name.into()),
                        RuleAttribute::Expressions(lower(r).iter().map(expr_attribute).collect()),
                        RuleAttribute::UserData(comment_udata(&r.comment)),
                    ],
                }),
                NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
            ));
        }
    }
    out.push(control(ControlMessage::BatchEnd));
    out
}

/// What the kernel holds for one chain, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelChain {
    pub name: String,
    pub hook: Option<u32>,
    pub priority: Option<u32>,
    pub policy: Option<u32>,
    pub rules: Vec<(Vec<Expr>, Option<String>)>,
}

/// What `rs` should look like when read back.
pub fn expected(rs: &Ruleset) -> Vec<KernelChain> {
    rs.chains
        .iter()
        .map(|c: &Chain| KernelChain {
            name: c.name.into(),
            hook: Some(u32::from(hook_number(c.hook))),
            priority: Some(0),
            policy: Some(policy_code(c.policy)),
            rules: c
                .rules
                .iter()
                .map(|r| (lower(r), Some(r.comment.chars().take(250).collect())))
                .collect(),
        })
        .collect()
}

/// Chains and rules of table `table` (family inet) among dumped messages.
pub fn collect(table: &str, msgs: &[NfTablesMessage]) -> Result<Vec<KernelChain>, String> {
    let mut chains: Vec<KernelChain> = Vec::new();
    for m in msgs {
        if let NfTablesMessage::NewChain(c) = m {
            let mut k = KernelChain {
                name: String::new(),
                hook: None,
                priority: None,
                policy: None,
                rules: vec![],
            };
            let mut ours = false;
            for a in &c.attributes {
                match a {
                    ChainAttribute::Table(t) => ours = t == table,
                    ChainAttribute::Name(n) => k.name = n.clone(),
                    ChainAttribute::Policy(p) => k.policy = Some(*p),
                    ChainAttribute::Hook(h) => {
                        for x in h {
                            match x {
                                NlHook::Number(n) => k.hook = Some(u32::from(*n)),
                                NlHook::Priority(p) => k.priority = Some(*p),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if ours {
                chains.push(k);
            }
        }
    }
    for m in msgs {
        if let NfTablesMessage::NewRule(r) = m {
            let (mut t, mut c, mut exprs, mut comment) = (None, None, Vec::new(), None);
            for a in &r.attributes {
                match a {
                    RuleAttribute::Table(x) => t = Some(x.as_str()),
                    RuleAttribute::Chain(x) => c = Some(x.as_str()),
                    RuleAttribute::UserData(u) => comment = udata_comment(u),
                    RuleAttribute::Expressions(list) => {
                        for e in list {
                            match e {
                                ListAttribute::Element(attrs) => exprs.push(decode_expr(attrs)?),
                                other => return Err(format!("unexpected list entry {other:?}")),
                            }
                        }
                    }
                    _ => {}
                }
            }
            if t != Some(table) {
                continue;
            }
            let chain = chains
                .iter_mut()
                .find(|k| Some(k.name.as_str()) == c)
                .ok_or_else(|| format!("a rule in chain {c:?}, which was not listed"))?;
            chain.rules.push((exprs, comment));
        }
    }
    Ok(chains)
}

/// Differences between what should be and what the kernel holds, as text.
pub fn differences(want: &[KernelChain], got: &[KernelChain]) -> Vec<String> {
    let mut d = Vec::new();
    for w in want {
        let Some(g) = got.iter().find(|g| g.name == w.name) else {
            d.push(format!("chain {} is missing", w.name));
            continue;
        };
        if (g.hook, g.priority, g.policy) != (w.hook, w.priority, w.policy) {
            d.push(format!(
                "chain {}: hook/priority/policy {:?} instead of {:?}",
                w.name,
                (g.hook, g.priority, g.policy),
                (w.hook, w.priority, w.policy)
            ));
        }
        if g.rules.len() != w.rules.len() {
            d.push(format!(
                "chain {}: {} rules instead of {}",
                w.name,
                g.rules.len(),
                w.rules.len()
            ));
        }
        for (i, (wr, gr)) in w.rules.iter().zip(&g.rules).enumerate() {
            if wr != gr {
                d.push(format!(
                    "chain {} rule {}: {:?} instead of {:?}",
                    w.name,
                    i + 1,
                    gr,
                    wr
                ));
            }
        }
    }
    for g in got {
        if !want.iter().any(|w| w.name == g.name) {
            d.push(format!("unexpected chain {}", g.name));
        }
    }
    d
}

pub(super) fn emit(m: &mut NetlinkMessage<NetfilterMessage>, seq: u32, out: &mut Vec<u8>) {
    m.header.sequence_number = seq;
    m.finalize();
    let start = out.len();
    out.resize(start + m.buffer_len(), 0);
    m.serialize(&mut out[start..]);
}

/// What a message of the batch does, for an error message.
pub(super) fn describe(m: &NetlinkMessage<NetfilterMessage>) -> String {
    match &m.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(n),
            ..
        }) => match n {
            NfTablesMessage::NewTable(_) => "adding the table".into(),
            NfTablesMessage::DeleteTable(_) => "deleting the table".into(),
            NfTablesMessage::NewChain(c) => format!(
                "adding chain {}",
                c.attributes
                    .iter()
                    .find_map(|a| match a {
                        ChainAttribute::Name(n) => Some(n.as_str()),
                        _ => None,
                    })
                    .unwrap_or("?")
            ),
            NfTablesMessage::NewRule(r) => format!(
                "the rule {:?}",
                r.attributes
                    .iter()
                    .find_map(|a| match a {
                        RuleAttribute::UserData(u) => udata_comment(u),
                        _ => None,
                    })
                    .unwrap_or_default()
            ),
            other => format!("{other:?}"),
        },
        _ => "a message".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::{ruleset, sample_state};
    use super::*;
    use nfcore::NetlinkBuffer;

    /// Every message of the batch survives serialization and parsing, and
    /// the parsed rules read back equal to what was meant.
    #[test]
    fn batch_round_trips_through_the_wire_format() {
        let rs = ruleset(&sample_state());
        let msgs = batch(&rs);
        assert_eq!(
            msgs.len(),
            4 + 2 + rs.chains.iter().map(|c| c.rules.len()).sum::<usize>() + 1
        );
        let mut parsed = Vec::new();
        for (i, mut m) in msgs.into_iter().enumerate() {
            let mut buf = Vec::new();
            emit(&mut m, i as u32, &mut buf);
            let back = NetlinkMessage::<NetfilterMessage>::deserialize(&buf).unwrap();
            let NetlinkBuffer { .. } = NetlinkBuffer::new(&buf[..]);
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::NfTables(n),
                ..
            }) = back.payload
            {
                parsed.push(n);
            }
        }
        // a dump answers with NewChain/NewRule, as the batch sends them
        let got = collect(TABLE_FOR_TEST, &parsed).unwrap();
        assert_eq!(differences(&expected(&rs), &got), Vec::<String>::new());
        // and a difference is found
        let mut other = sample_state();
        other.support = None;
        let d = differences(&expected(&ruleset(&other)), &got);
        assert!(
            d[0].contains("chain input: 12 rules instead of 11"),
            "{d:?}"
        );
    }

    const TABLE_FOR_TEST: &str = super::super::rules::TABLE;

    #[test]
    fn comments_are_in_libnftnl_format() {
        let u = comment_udata("loopback");
        assert_eq!(u, b"\x00\x09loopback\x00");
        assert_eq!(udata_comment(&u).as_deref(), Some("loopback"));
    }
}
