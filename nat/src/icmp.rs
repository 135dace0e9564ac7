//! ICMP errors (destination unreachable, including fragmentation needed; time exceeded;
//! parameter problem) belong to the connection whose packet they quote: the quoted header is
//! found, its connection looked up, and the error translated as that connection's packets
//! are: the outer destination (and the outer source when it is the quoted packet's
//! destination, not a router on the way), the quoted IP header with its checksum, the quoted
//! ports or echo identifier with the quoted L4 checksum when it was quoted, and the ICMP
//! checksum over the whole message.
//!
//! Pure byte logic: callable from any thread.

use xvs_stage::checksum::internet_checksum;
use xvs_stage::wire::ipproto;

use crate::drop::NatDrop;
use crate::rewrite::translate_fields;
use crate::tuple::Tuple;

/// ICMP types.
pub mod icmp_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4: fragmentation needed).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Whether an ICMP type is an error quoting a packet.
#[inline]
pub fn is_error(ty: u8) -> bool {
    matches!(
        ty,
        icmp_type::DEST_UNREACHABLE | icmp_type::TIME_EXCEEDED | icmp_type::PARAMETER_PROBLEM
    )
}

/// The packet an ICMP error quotes: where its headers are, and its tuple as quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IPv4 header in the frame.
    pub l3: usize,
    /// Offset of the quoted L4 header.
    pub l4: usize,
    /// The quoted packet's tuple.
    pub tuple: Tuple,
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

#[inline]
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds the packet quoted by the ICMP error whose header is at `l4`.
pub fn quoted(frame: &[u8], l4: usize) -> Result<Quoted, NatDrop> {
    let l3 = l4 + 8;
    let &vihl = frame.get(l3).ok_or(NatDrop::Malformed)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(NatDrop::Malformed);
    }
    let frag = be16(frame, l3 + 6).ok_or(NatDrop::Malformed)?;
    if frag & 0x1fff != 0 {
        // A later fragment carries no ports.
        return Err(NatDrop::UnrelatedIcmp);
    }
    let proto = *frame.get(l3 + 9).ok_or(NatDrop::Malformed)?;
    let src = be32(frame, l3 + 12).ok_or(NatDrop::Malformed)?;
    let dst = be32(frame, l3 + 16).ok_or(NatDrop::Malformed)?;
    let il4 = l3 + ihl;
    let (sport, dport) = match proto {
        ipproto::TCP | ipproto::UDP => (
            be16(frame, il4).ok_or(NatDrop::Malformed)?,
            be16(frame, il4 + 2).ok_or(NatDrop::Malformed)?,
        ),
        ipproto::ICMP => {
            let ty = *frame.get(il4).ok_or(NatDrop::Malformed)?;
            if !matches!(ty, icmp_type::ECHO_REQUEST | icmp_type::ECHO_REPLY) {
                return Err(NatDrop::UnrelatedIcmp);
            }
            let id = be16(frame, il4 + 4).ok_or(NatDrop::Malformed)?;
            (id, id)
        }
        _ => return Err(NatDrop::UnsupportedProtocol),
    };
    Ok(Quoted {
        l3,
        l4: il4,
        tuple: Tuple {
            src,
            dst,
            sport,
            dport,
            proto,
        },
    })
}

/// Translates the ICMP error at `l3`/`l4` quoting `q`, travelling on its connection in the
/// direction whose packets are rewritten to `target` (what such a packet reads after NAT).
pub fn translate_error(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    q: &Quoted,
    target: &Tuple,
) -> Result<(), NatDrop> {
    // The quoted packet went the other way: it must read as the inverse of the target.
    translate_fields(frame, q.l3, q.l4, &q.tuple, &target.inverse(), false, true)?;
    let src = be32(frame, l3 + 12).ok_or(NatDrop::Malformed)?;
    let dst = be32(frame, l3 + 16).ok_or(NatDrop::Malformed)?;
    let outer = Tuple {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto: ipproto::ICMP,
    };
    let new_outer = Tuple {
        src: if src == q.tuple.dst { target.src } else { src },
        dst: target.dst,
        ..outer
    };
    translate_fields(frame, l3, l4, &outer, &new_outer, false, false)?;
    let total = usize::from(be16(frame, l3 + 2).ok_or(NatDrop::Malformed)?);
    let end = (l3 + total).min(frame.len());
    if end < l4 + 8 {
        return Err(NatDrop::Malformed);
    }
    frame[l4 + 2..l4 + 4].fill(0);
    let ck = internet_checksum(&frame[l4..end]);
    frame[l4 + 2..l4 + 4].copy_from_slice(&ck);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{checksums_ok, frame, tuple_of};
    use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};

    /// An ICMP error from `from` to `to` quoting `inner` (an IPv4 packet, Ethernet stripped),
    /// cut to `quote` bytes.
    pub(crate) fn error(from: [u8; 4], to: [u8; 4], inner: &[u8], quote: usize) -> Vec<u8> {
        let mut f = Vec::new();
        let r = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
            .ipv4(from, to, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::Port,
            ))
            .write(&mut f, &inner[..quote.min(inner.len())]);
        assert!(r.is_ok());
        f
    }

    #[test]
    fn a_port_unreachable_is_translated_back_to_the_inside_host() {
        // 10.0.0.2:40000 -> 1.1.1.1:53 left as 198.18.0.1:50000; 1.1.1.1 answers unreachable.
        let out = frame(
            ipproto::UDP,
            [198, 18, 0, 1],
            50000,
            [1, 1, 1, 1],
            53,
            b"query",
        );
        let mut f = error([1, 1, 1, 1], [198, 18, 0, 1], &out[14..], 576);
        let q = quoted(&f, 34).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.tuple, tuple_of(ipproto::UDP, &out));
        // A reply of the connection reads 1.1.1.1:53 -> 10.0.0.2:40000 after NAT.
        let target = Tuple {
            src: 0x0101_0101,
            dst: 0x0a00_0002,
            sport: 53,
            dport: 40000,
            proto: ipproto::UDP,
        };
        assert_eq!(translate_error(&mut f, 14, 34, &q, &target), Ok(()));
        assert_eq!(&f[30..34], &[10, 0, 0, 2], "outer destination");
        assert_eq!(
            &f[26..30],
            &[1, 1, 1, 1],
            "outer source is the peer itself: unchanged here"
        );
        let inner = &f[42..];
        assert_eq!(&inner[12..16], &[10, 0, 0, 2], "quoted source");
        assert_eq!(
            u16::from_be_bytes([inner[20], inner[21]]),
            40000,
            "quoted port"
        );
        assert!(checksums_ok(&f), "outer IP and ICMP checksums");
        // The quoted packet's own checksums are right too.
        let mut quoted_pkt = vec![0u8; 12];
        quoted_pkt.extend_from_slice(&[0x08, 0x00]);
        quoted_pkt.extend_from_slice(inner);
        assert!(checksums_ok(&quoted_pkt), "quoted IP and UDP checksums");
    }

    #[test]
    fn a_router_s_time_exceeded_keeps_its_source_and_a_short_quote_is_enough() {
        let out = frame(ipproto::TCP, [198, 18, 0, 1], 50000, [1, 1, 1, 1], 80, b"");
        // Only 8 bytes of TCP quoted (RFC 792): ports, no checksum.
        let mut f = error([192, 0, 2, 254], [198, 18, 0, 1], &out[14..], 28);
        let q = quoted(&f, 34).unwrap_or_else(|e| panic!("{e}"));
        let target = Tuple {
            src: 0x0101_0101,
            dst: 0x0a00_0002,
            sport: 80,
            dport: 40000,
            proto: ipproto::TCP,
        };
        assert_eq!(translate_error(&mut f, 14, 34, &q, &target), Ok(()));
        assert_eq!(&f[26..30], &[192, 0, 2, 254], "a router's address is kept");
        assert_eq!(&f[30..34], &[10, 0, 0, 2]);
        assert!(checksums_ok(&f));
    }

    #[test]
    fn quoted_echo_and_malformed_quotes() {
        let ping = frame(
            ipproto::ICMP,
            [198, 18, 0, 1],
            77,
            [1, 1, 1, 1],
            77,
            b"abcdefgh",
        );
        let f = error([1, 1, 1, 1], [198, 18, 0, 1], &ping[14..], 576);
        assert_eq!(
            quoted(&f, 34).map(|q| (q.tuple.sport, q.tuple.dport)),
            Ok((77, 77))
        );
        assert_eq!(quoted(&f[..50], 34), Err(NatDrop::Malformed));
        let mut bad = f.clone();
        bad[42] = 0x65;
        assert_eq!(quoted(&bad, 34), Err(NatDrop::Malformed));
        assert!(is_error(3) && is_error(11) && !is_error(8));
    }
}
