//! Helpers for other crates' tests (feature `test-support`, dev-dependencies only): checking
//! a frame's checksums against a full recomputation by etherparse.

use etherparse::{SlicedPacket, TransportSlice};

use crate::checksum::internet_checksum;

/// Whether every checksum of Ethernet frame `f` (IPv4, then TCP, UDP or ICMP) is what a full
/// recomputation gives. A zero UDP checksum is "none"; 0xffff and 0 are the same
/// ones'-complement zero for TCP (a completed partial checksum writes a computed zero as
/// 0xffff, as Linux does).
pub fn checksums_ok(f: &[u8]) -> bool {
    let Ok(p) = SlicedPacket::from_ethernet(f) else {
        return false;
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        return false;
    };
    let h = ip.header().to_header();
    if h.header_checksum != h.calc_header_checksum() {
        return false;
    }
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            u.checksum() == 0
                || Ok(u.checksum()) == u.to_header().calc_checksum_ipv4(&h, u.payload())
        }
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload());
            Ok(t.checksum()) == want || (t.checksum() == 0xffff && want == Ok(0))
        }
        Some(TransportSlice::Icmpv4(i)) => internet_checksum(i.slice()) == [0, 0],
        _ => false,
    }
}
