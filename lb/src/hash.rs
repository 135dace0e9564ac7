//! Stable hashes: the same value on every host, every run and every Rust release (no
//! per-process random keys, unlike `std`'s hashers), so that hosts sharing a service build the
//! same Maglev table and send a flow to the same backend. A seed (a service setting) picks
//! the hash family.
//!
//! Pure functions, usable from any thread; the flow hash is on the hot path (a few multiplies).

use std::net::{IpAddr, SocketAddr};

use xvs_stage::classify::FlowKey;

/// The seed services use unless configured otherwise.
pub const DEFAULT_SEED: u64 = 0x78_76_73_2d_6c_62_00_01; // "xvs-lb", 1

const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline]
fn absorb(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(K).rotate_left(31)
}

/// The hash of a flow's 5-tuple: protocol, addresses (16 bytes each, IPv4 as v4-mapped IPv6,
/// as [`FlowKey`] holds them) and ports.
#[inline]
pub fn flow_hash(
    seed: u64,
    proto: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
) -> u64 {
    let word = |b: &[u8; 16], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let mut h = seed;
    h = absorb(h, word(src, 0));
    h = absorb(h, word(src, 8));
    h = absorb(h, word(dst, 0));
    h = absorb(h, word(dst, 8));
    h = absorb(
        h,
        u64::from(proto) << 32 | u64::from(sport) << 16 | u64::from(dport),
    );
    mix64(h)
}

/// The hash of a classified frame's 5-tuple (see [`flow_hash`]).
#[inline]
pub fn flow_key_hash(seed: u64, key: &FlowKey) -> u64 {
    flow_hash(
        seed,
        key.nw_proto,
        &key.nw_src,
        &key.nw_dst,
        key.tp_src,
        key.tp_dst,
    )
}

/// An address as [`FlowKey`] holds it: IPv6, or IPv4 mapped into IPv6.
pub fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The hash of a 5-tuple given as addresses (for the control plane and tests; equal to
/// [`flow_key_hash`] of the same flow's key).
pub fn socket_flow_hash(seed: u64, proto: u8, src: SocketAddr, dst: SocketAddr) -> u64 {
    flow_hash(
        seed,
        proto,
        &ip16(src.ip()),
        &ip16(dst.ip()),
        src.port(),
        dst.port(),
    )
}

/// Two independent hashes of a backend's address: Maglev's `offset` and `skip` come from them.
pub fn backend_hashes(seed: u64, addr: SocketAddr) -> (u64, u64) {
    let ip = ip16(addr.ip());
    let port = u64::from(addr.port());
    let one = |s: u64| {
        let h = flow_hash(s, 0, &ip, &[0; 16], addr.port(), 0);
        mix64(h ^ port)
    };
    (one(seed), one(mix64(seed ^ K)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_are_fixed_values() {
        // Hosts must agree: a change here changes every Maglev table.
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let (h1, h2) = backend_hashes(DEFAULT_SEED, a);
        assert_ne!(h1, h2);
        assert_eq!(backend_hashes(DEFAULT_SEED, a), (h1, h2));
        assert_ne!(backend_hashes(DEFAULT_SEED + 1, a), (h1, h2));
    }

    #[test]
    fn flow_key_and_socket_forms_agree() {
        let src: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.100:80".parse().unwrap();
        let key = FlowKey {
            dl_type: xvs_stage::wire::ethertype::IPV4,
            nw_proto: 6,
            nw_src: ip16(src.ip()),
            nw_dst: ip16(dst.ip()),
            tp_src: src.port(),
            tp_dst: dst.port(),
            ..FlowKey::default()
        };
        assert_eq!(
            flow_key_hash(7, &key),
            socket_flow_hash(7, 6, src, dst),
            "one flow, one hash"
        );
        let other: SocketAddr = "10.0.0.9:40001".parse().unwrap();
        assert_ne!(
            socket_flow_hash(7, 6, src, dst),
            socket_flow_hash(7, 6, other, dst)
        );
    }

    #[test]
    fn flow_hashes_spread_over_buckets() {
        // Consecutive source ports (the common case) fill 64 buckets evenly.
        let dst: SocketAddr = "10.0.0.100:80".parse().unwrap();
        let mut buckets = [0u32; 64];
        for port in 0..64_000u16 {
            let src = SocketAddr::new("10.0.0.9".parse().unwrap(), port);
            buckets[(socket_flow_hash(DEFAULT_SEED, 6, src, dst) % 64) as usize] += 1;
        }
        let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*min > 900 && *max < 1100, "{min}..{max}");
    }
}
