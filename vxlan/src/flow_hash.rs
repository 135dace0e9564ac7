//! The outer UDP source port: a hash of the inner frame's flow, so the underlay's ECMP and RSS
//! spread tunnels by inner flow while each flow keeps one path (RFC 7348 §5), mapped into the
//! dynamic range 49152..=65535. Fixed keys: the port is the same in every process and after
//! a restart, so a flow does not move paths when xvsd does.
//!
//! Pure byte logic, no state: callable from any thread.

use xvs_stage::wire::{ethertype, ipproto};

/// Lowest source port used (IANA dynamic range, as RFC 7348 §5 recommends).
pub const SOURCE_PORT_MIN: u16 = 49152;
/// Highest source port used.
pub const SOURCE_PORT_MAX: u16 = 65535;

use xvs_stage::hash::hash2;

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Up to 8 bytes of `b` from `at` as a big-endian word (missing bytes zero).
#[inline]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..) {
        let n = s.len().min(8);
        w[..n].copy_from_slice(&s[..n]);
    }
    u64::from_be_bytes(w)
}

/// The ports of a TCP, UDP or SCTP header at `l4` with protocol `proto` (0 for any other
/// protocol, a header cut short, or a fragment).
#[inline]
fn ports(b: &[u8], l4: usize, proto: u8) -> u64 {
    const SCTP: u8 = 132;
    match proto {
        ipproto::TCP | ipproto::UDP | SCTP => b.get(l4..l4 + 4).map_or(0, |p| {
            u64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        }),
        _ => 0,
    }
}

/// A 64-bit hash of the inner frame's flow: for IPv4 and IPv6 the addresses, the protocol
/// and, for TCP, UDP and SCTP, the ports (all fragments of an IPv4 datagram hash alike: no
/// ports); for anything else the MACs and the ethertype. One 802.1Q tag is skipped. Bytes the
/// frame does not have count as zero: short or garbage input hashes what there is. Never
/// panics, never allocates.
#[inline]
pub fn flow_hash(inner: &[u8]) -> u64 {
    let mut l3 = 14;
    let mut et = be16(inner, 12).unwrap_or(0);
    if et == ethertype::VLAN {
        et = be16(inner, 16).unwrap_or(0);
        l3 = 18;
    }
    let tag = u64::from(et) << 48;
    match et {
        ethertype::IPV4 if inner.len() >= l3 + 20 => {
            let ihl = usize::from(inner[l3] & 0x0f) * 4;
            let proto = inner[l3 + 9];
            let fragment = be16(inner, l3 + 6).unwrap_or(0) & 0x3fff != 0;
            let p = if fragment || ihl < 20 {
                0
            } else {
                ports(inner, l3 + ihl, proto)
            };
            hash2(0, word(inner, l3 + 12), tag | u64::from(proto) << 32 | p)
        }
        ethertype::IPV6 if inner.len() >= l3 + 40 => {
            let proto = inner[l3 + 6];
            let h = hash2(0, word(inner, l3 + 8), word(inner, l3 + 16));
            let h = hash2(h, word(inner, l3 + 24), word(inner, l3 + 32));
            hash2(
                h,
                tag | u64::from(proto) << 32 | ports(inner, l3 + 40, proto),
                0,
            )
        }
        // MACs and ethertype (or whatever bytes a runt has).
        _ => hash2(0, word(inner, 0), word(inner, 8) & !0xffff | u64::from(et)),
    }
}

/// The outer UDP source port for `inner`: [`flow_hash`] mapped onto
/// [`SOURCE_PORT_MIN`]`..=`[`SOURCE_PORT_MAX`] (the hash's top bits, as Linux's
/// `udp_flow_src_port` scales its hash into the range).
#[inline]
pub fn source_port(inner: &[u8]) -> u16 {
    let span = u64::from(SOURCE_PORT_MAX - SOURCE_PORT_MIN) + 1;
    let h = flow_hash(inner) >> 32;
    SOURCE_PORT_MIN + ((h * span) >> 32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let r = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000)
            .write(&mut f, payload);
        assert!(r.is_ok());
        f
    }

    fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        let r = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(src, dst, 64)
            .udp(sport, dport)
            .write(&mut f, b"x");
        assert!(r.is_ok());
        f
    }

    #[test]
    fn stable_per_flow_whatever_the_payload_and_other_headers() {
        let a = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, b"first");
        let mut b = tcp4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            40000,
            80,
            b"a longer second segment",
        );
        // TTL, id, MACs do not matter to an IP flow.
        b[14 + 8] = 3;
        b[14 + 4] = 0x55;
        b[0] = 0x0e;
        assert_eq!(source_port(&a), source_port(&b));
        assert_ne!(
            flow_hash(&a),
            flow_hash(&tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40001, 80, b"first"))
        );
        let s = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let d = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(flow_hash(&udp6(s, d, 5, 6)), flow_hash(&udp6(s, d, 5, 6)));
        assert_ne!(flow_hash(&udp6(s, d, 5, 6)), flow_hash(&udp6(d, s, 5, 6)));
        assert_ne!(flow_hash(&udp6(s, d, 5, 6)), flow_hash(&udp6(s, d, 5, 7)));
    }

    #[test]
    fn fragments_of_a_datagram_share_a_port() {
        let mut first = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, b"abcdefgh");
        first[14 + 6] = 0x20; // MF
        let mut later = first.clone();
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x10; // offset 16 * 8
        later[34..38].copy_from_slice(&[9, 9, 9, 9]); // payload, not ports
        assert_eq!(source_port(&first), source_port(&later));
    }

    #[test]
    fn non_ip_hashes_macs_and_ethertype() {
        let mut arp = crate::encap::tests::arp_inner().to_vec();
        let p = source_port(&arp);
        arp[30] = 99; // ARP body: not part of the flow
        assert_eq!(source_port(&arp), p);
        arp[11] ^= 1; // source MAC
        assert_ne!(
            flow_hash(&arp),
            flow_hash(&crate::encap::tests::arp_inner())
        );
    }

    #[test]
    fn runts_and_garbage_hash_without_panicking() {
        let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"");
        for cut in 0..=f.len() {
            let p = source_port(&f[..cut]);
            assert!(p >= SOURCE_PORT_MIN);
        }
        // A bad IHL, an IPv6 header cut before its ports.
        let mut g = f.clone();
        g[14] = 0x41;
        let _ = source_port(&g);
        let v6 = udp6([1; 16], [2; 16], 1, 2);
        for cut in 0..=v6.len() {
            let _ = source_port(&v6[..cut]);
        }
    }

    #[test]
    fn ports_spread_across_flows() {
        // 1000 seeded random TCP flows into 16 equal bins of the range: a chi-square with 15
        // degrees of freedom is above 50 with probability about 1e-5 for a uniform hash; the
        // flows are fixed by the seed, so the test is deterministic, and a sound hash passes
        // it with a wide margin.
        let mut rng = xvs_stage::hash::SplitMix::new(0x5eed);
        let mut bins = [0u32; 16];
        let mut ports = std::collections::HashSet::new();
        for _ in 0..1000 {
            let r = rng.next_u64();
            let f = tcp4(
                [10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8],
                [10, 0, 0, (r >> 32) as u8],
                (r >> 40) as u16,
                80,
                b"",
            );
            let p = source_port(&f);
            assert!((SOURCE_PORT_MIN..=SOURCE_PORT_MAX).contains(&p));
            bins[usize::from((p - SOURCE_PORT_MIN) / 1024)] += 1;
            ports.insert(p);
        }
        let expect = 1000.0 / 16.0;
        let chi2: f64 = bins
            .iter()
            .map(|&n| (f64::from(n) - expect).powi(2) / expect)
            .sum();
        assert!(chi2 < 50.0, "chi-square {chi2:.1} over bins {bins:?}");
        assert!(
            ports.len() > 950,
            "{} distinct ports of 1000 flows",
            ports.len()
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics_and_stays_in_range(f in proptest::collection::vec(any::<u8>(), 0..100)) {
            let p = source_port(&f);
            prop_assert!(p >= SOURCE_PORT_MIN);
        }
    }
}
