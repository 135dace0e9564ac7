//! One endpoint of an IPv4 TCP or UDP packet rewritten in place: the destination of a client's
//! packet to its backend (DNAT), the source of the backend's reply back to the virtual IP.
//! The rewrite itself (incremental checksums, partial sums, zero UDP checksums) is the one
//! NAT uses, [`xvs_stage::rewrite`]; this reads the packet's fields and changes one end.
//!
//! Pure byte logic: callable from any thread.

use xvs_stage::offload::Offload;
use xvs_stage::rewrite::{Fields, translate};
use xvs_stage::wire::ipproto;

/// Which end of the packet is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Source address and port.
    Source,
    /// Destination address and port.
    Destination,
}

/// Why a packet cannot be rewritten (it is left unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

#[inline]
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Rewrites `end` of the TCP or UDP packet at `l3`/`l4` of `frame` to `ip` and `port`,
/// checksums kept right. `offload` says whether its L4 checksum is partial.
#[inline]
pub(crate) fn rewrite(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    offload: &Offload,
    end: End,
    ip: [u8; 4],
    port: u16,
) -> Result<(), Malformed> {
    let proto = *frame.get(l3 + 9).ok_or(Malformed)?;
    if !matches!(proto, ipproto::TCP | ipproto::UDP) || l4 < l3 + 20 {
        return Err(Malformed);
    }
    let from = Fields {
        src: u32_at(frame, l3 + 12).ok_or(Malformed)?,
        dst: u32_at(frame, l3 + 16).ok_or(Malformed)?,
        sport: u16_at(frame, l4).ok_or(Malformed)?,
        dport: u16_at(frame, l4 + 2).ok_or(Malformed)?,
        proto,
    };
    let ip = u32::from_be_bytes(ip);
    let to = match end {
        End::Source => Fields {
            src: ip,
            sport: port,
            ..from
        },
        End::Destination => Fields {
            dst: ip,
            dport: port,
            ..from
        },
    };
    translate(frame, l3, l4, offload, &from, &to)
        .map(|_| ())
        .map_err(|_| Malformed)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;
    use xvs_stage::checksum::{complete_checksum, internet_checksum};

    pub(crate) use xvs_stage::testing::checksums_ok;

    fn frame(tcp: bool, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
        let mut f = Vec::new();
        if tcp {
            b.tcp(40000, 80, 1, 1000)
                .syn()
                .write(&mut f, payload)
                .unwrap();
        } else {
            b.udp(40000, 53).write(&mut f, payload).unwrap();
        }
        f
    }

    /// Turns `f`'s L4 checksum into the pseudo-header sum a `NEEDS_CSUM` frame carries.
    pub(crate) fn make_partial(f: &mut [u8]) -> Offload {
        let proto = f[23];
        let ck_at = if proto == ipproto::TCP { 50 } else { 40 };
        let mut ph = f[26..34].to_vec();
        ph.extend_from_slice(&[0, proto]);
        ph.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        let sum = !u16::from_be_bytes(internet_checksum(&ph));
        f[ck_at..ck_at + 2].copy_from_slice(&sum.to_be_bytes());
        Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: (ck_at - 34) as u16,
            ..Offload::NONE
        }
    }

    proptest! {
        #[test]
        fn rewrites_keep_checksums_right(
            tcp in any::<bool>(), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            ip in any::<[u8; 4]>(), port in any::<u16>(), source in any::<bool>(),
            partial in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut f = frame(tcp, src, dst, &payload);
            let off = if partial { make_partial(&mut f) } else { Offload::NONE };
            let end = if source { End::Source } else { End::Destination };
            prop_assert!(rewrite(&mut f, 14, 34, &off, end, ip, port).is_ok());
            let (ip_at, port_at) = if source { (26, 34) } else { (30, 36) };
            prop_assert_eq!(&f[ip_at..ip_at + 4], &ip);
            prop_assert_eq!(&f[port_at..port_at + 2], &port.to_be_bytes());
            prop_assert!(complete_checksum(&mut f, &off).is_ok());
            prop_assert!(checksums_ok(&f));
        }
    }

    #[test]
    fn a_zero_udp_checksum_stays_zero_and_short_frames_are_refused() {
        let mut f = frame(false, [10, 0, 0, 5], [10, 0, 0, 100], b"q");
        f[40..42].fill(0);
        rewrite(
            &mut f,
            14,
            34,
            &Offload::NONE,
            End::Destination,
            [10, 0, 0, 3],
            5353,
        )
        .unwrap();
        assert_eq!([f[40], f[41]], [0, 0]);
        assert!(checksums_ok(&f));
        let g = frame(true, [10, 0, 0, 5], [10, 0, 0, 100], b"");
        for cut in 0..52 {
            let mut h = g[..cut].to_vec();
            let r = rewrite(&mut h, 14, 34, &Offload::NONE, End::Source, [1; 4], 1);
            assert_eq!(r, Err(Malformed));
            assert_eq!(h, g[..cut]);
        }
    }
}
