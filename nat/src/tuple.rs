//! A connection's 5-tuple as conntrack keys it: IPv4 addresses and ports (for ICMP echo both
//! ports hold the identifier, so a request and its reply are each other's inverse), and the
//! direction a packet travels relative to the connection's first packet.
//!
//! Plain values: usable from any thread.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;
use xvs_stage::wire::ipproto;

use xvs_stage::hash::hash2;

/// Which way a packet travels on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// As the connection's first packet did.
    Original,
    /// The other way.
    Reply,
}

impl Dir {
    /// The other direction.
    #[inline]
    pub fn flip(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
}

/// A packet's addresses, ports and protocol (IPv4; addresses as host-order `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tuple {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (ICMP echo: the identifier).
    pub sport: u16,
    /// Destination port (ICMP echo: the identifier).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

impl Tuple {
    /// A tuple from addresses and ports.
    pub fn new(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
        Tuple {
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
            proto,
        }
    }

    /// The tuple of a packet going the other way.
    #[inline]
    pub fn inverse(self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    /// Source address.
    pub fn src_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src)
    }

    /// Destination address.
    pub fn dst_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst)
    }

    /// The protocol's name as conntrack listings print it.
    pub fn proto_name(&self) -> &'static str {
        proto_name(self.proto)
    }

    /// Seeded hash (the table's index key).
    #[inline]
    pub(crate) fn hash(&self, seed: u64) -> u64 {
        hash2(
            seed,
            (u64::from(self.src) << 32) | u64::from(self.dst),
            (u64::from(self.sport) << 32) | (u64::from(self.dport) << 8) | u64::from(self.proto),
        )
    }
}

/// `tcp`, `udp`, `icmp`, or the number.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        ipproto::TCP => "tcp",
        ipproto::UDP => "udp",
        ipproto::ICMP => "icmp",
        _ => "other",
    }
}

impl fmt::Display for Tuple {
    /// `src=10.0.0.2,dst=1.1.1.1,sport=40000,dport=80` (ICMP: `id=7`), as
    /// `ovs-appctl dpctl/dump-conntrack` prints a tuple.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src={},dst={}", self.src_ip(), self.dst_ip())?;
        if self.proto == ipproto::ICMP {
            write!(f, ",id={}", self.sport)
        } else {
            write!(f, ",sport={},dport={}", self.sport, self.dport)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_is_an_involution_and_display_matches_dpctl() {
        let t = Tuple::new(
            6,
            Ipv4Addr::new(10, 0, 0, 2),
            40000,
            Ipv4Addr::new(1, 1, 1, 1),
            80,
        );
        assert_eq!(t.inverse().inverse(), t);
        assert_eq!(t.inverse().src_ip(), Ipv4Addr::new(1, 1, 1, 1));
        assert_eq!(
            t.to_string(),
            "src=10.0.0.2,dst=1.1.1.1,sport=40000,dport=80"
        );
        assert_ne!(t.hash(1), t.inverse().hash(1));
        assert_eq!(Dir::Original.flip(), Dir::Reply);
    }
}
