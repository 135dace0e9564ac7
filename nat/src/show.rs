//! Listings for `xvsctl conntrack/show`, in the style of `ovs-appctl dpctl/dump-conntrack`:
//! protocol, original and reply tuples, zone, state, NAT, age and remaining timeout. Text
//! (`Display`) and JSON (`Serialize`).
//!
//! Built on the worker that owns the table when the control plane asks (control path: may
//! allocate); the entries are plain values sent back to the control thread.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::state::ConnState;
use crate::table::{NO_ZONE, Session};
use crate::tuple::{Tuple, proto_name};

/// A tuple as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TupleView {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (ICMP: identifier).
    pub sport: u16,
    /// Destination port (ICMP: identifier).
    pub dport: u16,
}

impl From<Tuple> for TupleView {
    fn from(t: Tuple) -> TupleView {
        TupleView {
            src: t.src_ip(),
            dst: t.dst_ip(),
            sport: t.sport,
            dport: t.dport,
        }
    }
}

/// Which translations a connection has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatKind {
    /// None.
    None,
    /// The source (masquerade).
    Snat,
    /// The destination (a published port).
    Dnat,
    /// Both (hairpin).
    Both,
}

/// One connection as `conntrack/show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnEntry {
    /// `tcp`, `udp`, `icmp`.
    pub proto: &'static str,
    /// The first packet's tuple.
    pub orig: TupleView,
    /// The tuple replies arrive with.
    pub reply: TupleView,
    /// The inside endpoint's zone.
    pub zone: Option<u16>,
    /// The state.
    pub state: ConnState,
    /// The translation.
    pub nat: NatKind,
    /// Seconds since the connection was made.
    pub age_s: u64,
    /// Seconds left before it expires unless a packet refreshes it.
    pub timeout_s: u64,
}

impl ConnEntry {
    pub(crate) fn new(s: &Session, now_ms: u64) -> ConnEntry {
        let (o, r) = (s.orig, s.reply);
        let snat = r.dst != o.src || r.dport != o.sport;
        // An ICMP echo's identifier stands for both ports: a new one is source NAT only.
        let dnat =
            r.src != o.dst || (o.proto != xvs_stage::wire::ipproto::ICMP && r.sport != o.dport);
        let zone = [s.orig_zone, s.reply_zone]
            .into_iter()
            .find(|&z| z != NO_ZONE);
        ConnEntry {
            proto: proto_name(o.proto),
            orig: o.into(),
            reply: r.into(),
            zone,
            state: s.state,
            nat: match (snat, dnat) {
                (false, false) => NatKind::None,
                (true, false) => NatKind::Snat,
                (false, true) => NatKind::Dnat,
                (true, true) => NatKind::Both,
            },
            age_s: now_ms.saturating_sub(s.created_ms) / 1000,
            timeout_s: s.expires_ms.saturating_sub(now_ms).div_ceil(1000),
        }
    }
}

impl fmt::Display for ConnEntry {
    /// `tcp,orig=(src=10.0.0.2,dst=1.1.1.1,sport=40000,dport=80),reply=(src=1.1.1.1,
    /// dst=198.18.0.1,sport=80,dport=40000),zone=1,age=3,timeout=431997,nat=snat,
    /// protoinfo=(state=ESTABLISHED)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |v: &TupleView| {
            if self.proto == "icmp" {
                format!("src={},dst={},id={}", v.src, v.dst, v.sport)
            } else {
                format!(
                    "src={},dst={},sport={},dport={}",
                    v.src, v.dst, v.sport, v.dport
                )
            }
        };
        write!(
            f,
            "{},orig=({}),reply=({})",
            self.proto,
            t(&self.orig),
            t(&self.reply)
        )?;
        if let Some(z) = self.zone {
            write!(f, ",zone={z}")?;
        }
        write!(f, ",age={},timeout={}", self.age_s, self.timeout_s)?;
        if self.nat != NatKind::None {
            let n = match self.nat {
                NatKind::Snat => "snat",
                NatKind::Dnat => "dnat",
                _ => "snat+dnat",
            };
            write!(f, ",nat={n}")?;
        }
        if self.proto == "tcp" {
            write!(f, ",protoinfo=(state={})", self.state)
        } else {
            write!(f, ",state={}", self.state)
        }
    }
}
