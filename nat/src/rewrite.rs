//! NAT's rewrites: a packet's addresses and ports (or ICMP echo identifier) changed in place
//! from one [`Tuple`] to another, checksums updated incrementally, by the shared
//! [`xvs_stage::rewrite`] (see there for the checksum rules: partial sums, zero UDP checksums).
//!
//! Pure byte logic: callable from any thread.

use xvs_stage::offload::Offload;
use xvs_stage::rewrite::{self, Fields, RewriteError};

use crate::drop::NatDrop;
use crate::tuple::Tuple;

fn fields(t: &Tuple) -> Fields {
    Fields {
        src: t.src,
        dst: t.dst,
        sport: t.sport,
        dport: t.dport,
        proto: t.proto,
    }
}

fn nat_drop(e: RewriteError) -> NatDrop {
    match e {
        RewriteError::Unsupported => NatDrop::UnsupportedProtocol,
        RewriteError::Malformed => NatDrop::Malformed,
    }
}

/// Rewrites the packet at `l3`/`l4` of `frame` whose fields read `from` so they read `to`
/// (addresses, ports or ICMP echo identifier), updating checksums incrementally. Returns
/// whether anything changed. `offload` says whether the L4 checksum is partial.
#[inline]
pub fn translate(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    offload: &Offload,
    from: &Tuple,
    to: &Tuple,
) -> Result<bool, NatDrop> {
    rewrite::translate(frame, l3, l4, offload, &fields(from), &fields(to)).map_err(nat_drop)
}

/// [`translate`] for a header quoted in an ICMP error (`quoted`: the L4 header may be cut
/// after its ports, its checksum then left alone). Shared by both.
#[inline]
pub(crate) fn translate_fields(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    from: &Tuple,
    to: &Tuple,
    partial: bool,
    quoted: bool,
) -> Result<bool, NatDrop> {
    rewrite::translate_fields(frame, l3, l4, &fields(from), &fields(to), partial, quoted)
        .map_err(nat_drop)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use xvs_stage::checksum::{complete_checksum, internet_checksum};
    use xvs_stage::wire::ipproto;

    /// An Ethernet + IPv4 + (TCP | UDP | ICMP echo) frame with correct checksums.
    pub(crate) fn frame(
        proto: u8,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
        let mut f = Vec::new();
        let r = match proto {
            ipproto::TCP => b.tcp(sport, dport, 1, 1000).ack(2).write(&mut f, payload),
            ipproto::UDP => b.udp(sport, dport).write(&mut f, payload),
            _ => b.icmpv4_echo_request(sport, 1).write(&mut f, payload),
        };
        assert!(r.is_ok());
        f
    }

    pub(crate) use xvs_stage::testing::checksums_ok;

    pub(crate) fn tuple_of(proto: u8, f: &[u8]) -> Tuple {
        let ip = |o: usize| u32::from_be_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]);
        let p = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
        let (sport, dport) = if proto == ipproto::ICMP {
            (p(38), p(38))
        } else {
            (p(34), p(36))
        };
        Tuple {
            src: ip(26),
            dst: ip(30),
            sport,
            dport,
            proto,
        }
    }

    fn proto() -> impl Strategy<Value = u8> {
        prop_oneof![Just(ipproto::TCP), Just(ipproto::UDP), Just(ipproto::ICMP)]
    }

    proptest! {
        #[test]
        fn incremental_updates_match_full_recomputation(
            proto in proto(),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            nsrc in any::<[u8; 4]>(), ndst in any::<[u8; 4]>(),
            nsport in any::<u16>(), ndport in any::<u16>(),
            which in 0u8..4,
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut f = frame(proto, src, sport, dst, dport, &payload);
            let from = tuple_of(proto, &f);
            let mut to = from;
            if which & 1 == 0 { to.src = u32::from_be_bytes(nsrc); to.sport = nsport; }
            if which & 2 == 0 { to.dst = u32::from_be_bytes(ndst); to.dport = ndport; }
            if proto == ipproto::ICMP { to.dport = to.sport; }
            let changed = translate(&mut f, 14, 34, &Offload::NONE, &from, &to);
            prop_assert_eq!(changed, Ok(from != to));
            prop_assert_eq!(tuple_of(proto, &f), to);
            prop_assert!(checksums_ok(&f), "{:02x?}", f);
        }

        #[test]
        fn zero_udp_checksums_stay_zero(
            src in any::<[u8; 4]>(), nsrc in any::<[u8; 4]>(), nsport in any::<u16>(),
        ) {
            let mut f = frame(ipproto::UDP, src, 1000, [1, 1, 1, 1], 53, b"q");
            f[40..42].fill(0);
            let from = tuple_of(ipproto::UDP, &f);
            let to = Tuple { src: u32::from_be_bytes(nsrc), sport: nsport, ..from };
            prop_assert!(translate(&mut f, 14, 34, &Offload::NONE, &from, &to).is_ok());
            prop_assert_eq!([f[40], f[41]], [0, 0]);
            prop_assert!(checksums_ok(&f));
        }

        #[test]
        fn partial_checksums_are_right_once_completed(
            udp in any::<bool>(),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            nsrc in any::<[u8; 4]>(), ndst in any::<[u8; 4]>(),
            nsport in any::<u16>(), ndport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            // A NEEDS_CSUM frame from a TAP: the L4 field holds the pseudo-header sum.
            let proto = if udp { ipproto::UDP } else { ipproto::TCP };
            let mut f = frame(proto, src, 40000, dst, 80, &payload);
            let ck_at = if udp { 40 } else { 50 };
            let l4_len = (f.len() - 34) as u16;
            let mut ph = f[26..34].to_vec();
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&l4_len.to_be_bytes());
            let sum = !u16::from_be_bytes(internet_checksum(&ph));
            f[ck_at..ck_at + 2].copy_from_slice(&sum.to_be_bytes());
            let off = Offload { flags: Offload::F_NEEDS_CSUM, csum_start: 34, csum_offset: (ck_at - 34) as u16, ..Offload::NONE };
            let from = tuple_of(proto, &f);
            let to = Tuple { src: u32::from_be_bytes(nsrc), dst: u32::from_be_bytes(ndst), sport: nsport, dport: ndport, proto };
            prop_assert!(translate(&mut f, 14, 34, &off, &from, &to).is_ok());
            prop_assert!(complete_checksum(&mut f, &off).is_ok());
            prop_assert!(checksums_ok(&f));
        }
    }

    #[test]
    fn short_frames_are_refused_not_panicked_on() {
        let f = frame(ipproto::TCP, [10, 0, 0, 2], 1, [1, 1, 1, 1], 2, b"");
        let from = tuple_of(ipproto::TCP, &f);
        let to = Tuple {
            src: Ipv4Addr::new(198, 18, 0, 1).into(),
            ..from
        };
        for cut in 0..34 + 18 {
            let mut g = f[..cut].to_vec();
            assert_eq!(
                translate(&mut g, 14, 34, &Offload::NONE, &from, &to),
                Err(NatDrop::Malformed)
            );
        }
        let mut g = f.clone();
        assert_eq!(
            translate(&mut g, 14, 34, &Offload::NONE, &from, &from),
            Ok(false)
        );
        assert_eq!(g, f);
    }
}
