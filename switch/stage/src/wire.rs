//! Wire types every stage shares: MAC addresses, ethertypes, IP protocol numbers, and the
//! datapath's numbers for ports and bridges.
//!
//! Plain values; safe to use from any thread.

use std::fmt;
use std::net::Ipv4Addr;

/// A port's number inside the datapath.
pub type PortId = u32;

/// A bridge's (a network's) number inside the datapath.
pub type BridgeId = u32;

/// Ethertypes the switch forwards.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag.
    pub const QINQ: u16 = 0x88a8;
    /// QinQ's old pre-standard outer tag.
    pub const VLAN_9100: u16 = 0x9100;
}

/// IP protocol numbers the key records ports for.
pub mod ipproto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// Length of an Ethernet II header.
pub const ETH_HEADER_LEN: usize = 14;

/// An IPv4 network: an address and a prefix length. The one mask and membership test, for
/// the daemon's IPAM and the datapath's route stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    /// Network address (host bits are ignored by [`Ipv4Net::contains`]).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32 (larger values count as 32).
    pub prefix: u8,
}

impl Ipv4Net {
    /// The netmask as a u32.
    #[inline]
    pub fn mask(self) -> u32 {
        match self.prefix.min(32) {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        }
    }

    /// Whether `ip` lies inside.
    #[inline]
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A MAC address. `Display` is the one formatter (`aa:bb:cc:dd:ee:ff`), `FromStr` the one
/// parser, for the datapath, the daemon and the CLI.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Group (multicast or broadcast) address.
    #[inline]
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The address as a u64 (upper 16 bits zero).
    #[inline]
    pub fn to_u64(self) -> u64 {
        let m = self.0;
        u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
    }

    /// A locally administered unicast MAC made from an IPv4 address: `02:TAG:a:b:c:d`. Stable,
    /// so a gateway or an uplink re-made at the same address keeps its neighbours' ARP entries
    /// valid; `tag` keeps uses apart (Docker's gateways use 0x42).
    #[inline]
    pub fn local_for_ipv4(tag: u8, ip: Ipv4Addr) -> Mac {
        let [a, b, c, d] = ip.octets();
        Mac([0x02, tag, a, b, c, d])
    }

    /// The address from the low 48 bits of a u64.
    #[inline]
    pub fn from_u64(v: u64) -> Mac {
        let b = v.to_be_bytes();
        Mac([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("invalid MAC address {s:?}: expected six hex bytes"))?;
            *b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("invalid MAC address {s:?}: {p:?} is not a hex byte"))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC address {s:?}: more than six bytes"));
        }
        Ok(Mac(out))
    }
}

/// As text (`aa:bb:cc:dd:ee:ff`) in state files and replies.
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text_roundtrip_and_errors() {
        let m: Mac = "02:00:0a:ff:00:01".parse().unwrap_or_default();
        assert_eq!(m, Mac([2, 0, 10, 0xff, 0, 1]));
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        assert_eq!(Mac::from_u64(m.to_u64()), m);
        assert!("02:00:0a".parse::<Mac>().is_err());
        assert!("02:00:0a:ff:00:01:07".parse::<Mac>().is_err());
        assert!("zz:00:0a:ff:00:01".parse::<Mac>().is_err());
        assert!(Mac::BROADCAST.is_multicast() && !m.is_multicast());
        let g = Mac::local_for_ipv4(0x42, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(g.to_string(), "02:42:0a:01:00:01");
        assert!(!g.is_multicast());
    }

    #[test]
    fn ipv4_net_membership() {
        let n = Ipv4Net {
            addr: Ipv4Addr::new(10, 1, 0, 0),
            prefix: 24,
        };
        assert!(n.contains(Ipv4Addr::new(10, 1, 0, 255)));
        assert!(!n.contains(Ipv4Addr::new(10, 1, 1, 0)));
        assert_eq!(n.mask(), 0xffff_ff00);
        assert_eq!(n.to_string(), "10.1.0.0/24");
        let all = Ipv4Net { prefix: 0, ..n };
        assert!(all.contains(Ipv4Addr::new(198, 18, 0, 1)));
        let host = Ipv4Net { prefix: 40, ..n };
        assert!(host.contains(n.addr) && !host.contains(Ipv4Addr::new(10, 1, 0, 1)));
    }
}
