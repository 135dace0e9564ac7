//! Timeouts per connection state, and how long a NAT mapping outlives its last connection.
//! Defaults are netfilter's (`/proc/sys/net/netfilter/nf_conntrack_*_timeout`); names are
//! those of OVS timeout policies (`tcp_syn_sent`, `udp_first`, `icmp_reply`, ...), and
//! netfilter's sysctl names are accepted too (`nf_conntrack_tcp_timeout_established`,
//! `udp_stream`, `icmp`). Mapping times may not go below RFC 4787 / 5382 / 5508 minimums.
//!
//! Plain values: the control plane builds one and moves it to the worker that owns a table.

use std::fmt;

use crate::state::ConnState;

/// One settable timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Timeout {
    /// TCP after the first SYN.
    TcpSynSent,
    /// TCP after the SYN/ACK.
    TcpSynRecv,
    /// TCP established.
    TcpEstablished,
    /// TCP after the first FIN.
    TcpFinWait,
    /// TCP after the first FIN was acknowledged.
    TcpCloseWait,
    /// TCP after both FINs.
    TcpLastAck,
    /// TCP after the last FIN was acknowledged.
    TcpTimeWait,
    /// TCP after a RST.
    TcpClose,
    /// TCP simultaneous open (SYN seen both ways).
    TcpSynSent2,
    /// UDP before any reply.
    UdpFirst,
    /// UDP once replied (netfilter's `udp_stream`).
    UdpMultiple,
    /// ICMP echo before a reply.
    IcmpFirst,
    /// ICMP echo once replied.
    IcmpReply,
    /// A TCP mapping's life after its last connection ended.
    MappingTcp,
    /// A UDP mapping's life after its last connection ended.
    MappingUdp,
    /// An ICMP query mapping's life after its last connection ended.
    MappingIcmp,
}

/// Every timeout: canonical name, default seconds, minimum seconds.
const TABLE: [(Timeout, &str, u32, u32); 16] = [
    (Timeout::TcpSynSent, "tcp_syn_sent", 120, 1),
    (Timeout::TcpSynRecv, "tcp_syn_recv", 60, 1),
    (Timeout::TcpEstablished, "tcp_established", 432_000, 1),
    (Timeout::TcpFinWait, "tcp_fin_wait", 120, 1),
    (Timeout::TcpCloseWait, "tcp_close_wait", 60, 1),
    (Timeout::TcpLastAck, "tcp_last_ack", 30, 1),
    (Timeout::TcpTimeWait, "tcp_time_wait", 120, 1),
    (Timeout::TcpClose, "tcp_close", 10, 1),
    (Timeout::TcpSynSent2, "tcp_syn_sent2", 120, 1),
    (Timeout::UdpFirst, "udp_first", 30, 1),
    (Timeout::UdpMultiple, "udp_multiple", 120, 1),
    (Timeout::IcmpFirst, "icmp_first", 30, 1),
    (Timeout::IcmpReply, "icmp_reply", 30, 1),
    // RFC 5382 REQ-5: transitory TCP idle timeout at least 4 minutes.
    (Timeout::MappingTcp, "nat_mapping_tcp", 240, 240),
    // RFC 4787 REQ-5: a UDP mapping lives at least 2 minutes.
    (Timeout::MappingUdp, "nat_mapping_udp", 120, 120),
    // RFC 5508 REQ-1: an ICMP query mapping lives at least 60 seconds.
    (Timeout::MappingIcmp, "nat_mapping_icmp", 60, 60),
];

/// Other names users know, and what they set.
const ALIASES: [(&str, &[Timeout]); 5] = [
    ("udp", &[Timeout::UdpFirst]),
    ("udp_single", &[Timeout::UdpFirst]),
    ("udp_stream", &[Timeout::UdpMultiple]),
    ("icmp", &[Timeout::IcmpFirst, Timeout::IcmpReply]),
    ("tcp_syn_recv2", &[Timeout::TcpSynRecv]),
];

/// Why a timeout could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeoutError {
    /// The name is not a timeout.
    #[error("unknown timeout {0:?} (known: {known})", known = Timeouts::names().collect::<Vec<_>>().join(", "))]
    UnknownName(String),
    /// Zero seconds.
    #[error("timeout {0} must be at least 1 second")]
    Zero(&'static str),
    /// Below the RFC minimum for a NAT mapping.
    #[error("timeout {name} must be at least {min} seconds (RFC 4787/5382/5508 minimum)")]
    BelowMinimum {
        /// The timeout.
        name: &'static str,
        /// Its minimum, seconds.
        min: u32,
    },
}

/// Every timeout's current value, in seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct Timeouts {
    secs: [u32; TABLE.len()],
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            secs: TABLE.map(|(_, _, d, _)| d),
        }
    }
}

impl fmt::Debug for Timeouts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Timeouts {
    /// The value of `t`, in milliseconds.
    #[inline]
    pub fn ms(&self, t: Timeout) -> u64 {
        u64::from(self.secs[t as usize]) * 1000
    }

    /// The value of `t`, in seconds.
    pub fn secs(&self, t: Timeout) -> u32 {
        self.secs[t as usize]
    }

    /// The timeout that applies to a connection in `state`.
    #[inline]
    pub fn for_state(&self, state: ConnState, proto_icmp: bool) -> u64 {
        self.ms(match state {
            ConnState::SynSent => Timeout::TcpSynSent,
            ConnState::SynRecv => Timeout::TcpSynRecv,
            ConnState::Established => Timeout::TcpEstablished,
            ConnState::FinWait => Timeout::TcpFinWait,
            ConnState::CloseWait => Timeout::TcpCloseWait,
            ConnState::LastAck => Timeout::TcpLastAck,
            ConnState::TimeWait => Timeout::TcpTimeWait,
            ConnState::Close => Timeout::TcpClose,
            ConnState::SynSent2 => Timeout::TcpSynSent2,
            ConnState::Unreplied if proto_icmp => Timeout::IcmpFirst,
            ConnState::Replied if proto_icmp => Timeout::IcmpReply,
            ConnState::Unreplied => Timeout::UdpFirst,
            ConnState::Replied => Timeout::UdpMultiple,
        })
    }

    /// Sets the timeout called `name` (canonical, alias, or netfilter sysctl name) to `secs`.
    pub fn set(&mut self, name: &str, secs: u32) -> Result<(), TimeoutError> {
        let targets = Self::resolve(name).ok_or_else(|| TimeoutError::UnknownName(name.into()))?;
        for &t in targets {
            let (_, n, _, min) = TABLE[t as usize];
            if secs == 0 {
                return Err(TimeoutError::Zero(n));
            }
            if secs < min {
                return Err(TimeoutError::BelowMinimum { name: n, min });
            }
        }
        for &t in targets {
            self.secs[t as usize] = secs;
        }
        Ok(())
    }

    /// The timeouts a name sets.
    fn resolve(name: &str) -> Option<&'static [Timeout]> {
        // netfilter's sysctl names: nf_conntrack_tcp_timeout_syn_sent, nf_conntrack_udp_timeout.
        let n = name.strip_prefix("nf_conntrack_").unwrap_or(name);
        let n = n.replacen("_timeout", "", 1);
        TABLE
            .iter()
            .position(|(_, c, _, _)| *c == n)
            .map(|i| std::slice::from_ref(&TABLE[i].0))
            .or_else(|| ALIASES.iter().find(|(a, _)| *a == n).map(|(_, t)| *t))
    }

    /// Canonical names, in order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        TABLE.iter().map(|(_, n, _, _)| *n)
    }

    /// (canonical name, seconds) for every timeout.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        TABLE
            .iter()
            .map(|(t, n, _, _)| (*n, self.secs[*t as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_netfilters() {
        let t = Timeouts::default();
        assert_eq!(t.secs(Timeout::TcpEstablished), 432_000);
        assert_eq!(t.secs(Timeout::UdpFirst), 30);
        assert_eq!(t.for_state(ConnState::Replied, false), 120_000);
        assert_eq!(t.for_state(ConnState::Replied, true), 30_000);
        assert_eq!(Timeouts::names().count(), 16);
    }

    #[test]
    fn names_aliases_and_sysctl_names_set_values() {
        let mut t = Timeouts::default();
        t.set("tcp_established", 3600).unwrap_or_default();
        assert_eq!(t.secs(Timeout::TcpEstablished), 3600);
        assert_eq!(t.set("nf_conntrack_tcp_timeout_time_wait", 5), Ok(()));
        assert_eq!(t.secs(Timeout::TcpTimeWait), 5);
        assert_eq!(t.set("nf_conntrack_udp_timeout_stream", 99), Ok(()));
        assert_eq!(t.secs(Timeout::UdpMultiple), 99);
        assert_eq!(t.set("udp", 7), Ok(()));
        assert_eq!(t.secs(Timeout::UdpFirst), 7);
        assert_eq!(t.set("icmp", 9), Ok(()));
        assert_eq!(
            (t.secs(Timeout::IcmpFirst), t.secs(Timeout::IcmpReply)),
            (9, 9)
        );
    }

    #[test]
    fn bad_names_and_values_are_typed_errors() {
        let mut t = Timeouts::default();
        let before = t.clone();
        assert!(matches!(
            t.set("tcp_bogus", 5),
            Err(TimeoutError::UnknownName(_))
        ));
        assert_eq!(t.set("tcp_close", 0), Err(TimeoutError::Zero("tcp_close")));
        assert_eq!(
            t.set("nat_mapping_udp", 30),
            Err(TimeoutError::BelowMinimum {
                name: "nat_mapping_udp",
                min: 120
            })
        );
        assert_eq!(t, before, "a refused value changes nothing");
        assert!(
            TimeoutError::UnknownName("x".into())
                .to_string()
                .contains("tcp_syn_sent")
        );
    }
}
