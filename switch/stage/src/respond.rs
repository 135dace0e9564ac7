//! Answers a stage sends back in place of the frame it was given, for an address it answers
//! for (a load balancer's virtual IP): an ARP reply (RFC 826), an ICMP echo reply (RFC 792)
//! and a TCP reset (RFC 793, "Reset Generation"). Each turns the request's own bytes around:
//! no allocation, no new frame; the caller sends the result back out of the port it came in
//! on.
//!
//! Pure byte logic on an untagged Ethernet frame and the offsets classification found: callable
//! from any thread. On `Err` the frame is unchanged; no input makes these panic.

use std::net::Ipv4Addr;

use crate::checksum::{Csum, update};
use crate::icmp_error::{Ipv4Header, ipv4_header, unicast_destination, valid_source};
use crate::wire::{Mac, ethertype, ipproto};

/// TTL of the answers (Linux's default).
pub const ANSWER_TTL: u8 = 64;

/// Length of the IPv4 and TCP headers of a reset (no options).
pub const RESET_HEADERS_LEN: usize = 40;

/// TCP flags (byte 13 of the TCP header).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Why a frame was not answered (it is left unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoAnswer {
    /// shorter than its headers say, or a header field out of range
    #[error("frame shorter than its headers, or a malformed header")]
    Malformed,
    /// not the request this answer is for (an ARP reply, an ICMP type other than echo, an ARP
    /// for another hardware or protocol type)
    #[error("not a request this answers")]
    NotRequest,
    /// from a group MAC, or from or to an address that is not one host's (RFC 1812 4.3.2.7)
    #[error("sent from or to a broadcast, multicast or invalid address")]
    NotUnicast,
    /// a fragment: only whole datagrams are answered
    #[error("a fragment")]
    Fragment,
    /// a TCP reset, which is never answered (RFC 793)
    #[error("a TCP reset is never answered")]
    Reset,
}

#[inline]
fn get<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[inline]
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at.saturating_add(v.len())) {
        d.copy_from_slice(v);
    }
}

/// The target address of the Ethernet/IPv4 ARP request at `l3`, or `None` when the frame is
/// not one.
#[inline]
pub fn arp_request_target(frame: &[u8], l3: usize) -> Option<Ipv4Addr> {
    let hdr: [u8; 8] = get(frame, l3)?;
    if hdr != [0, 1, 8, 0, 6, 4, 0, 1] {
        return None;
    }
    get::<4>(frame, l3 + 24).map(Ipv4Addr::from)
}

/// Turns the ARP request at `l3` into the reply that its target address is at `mac`, sent to
/// the requester (Ethernet destination = the sender's hardware address, source = `mac`).
pub fn arp_reply(frame: &mut [u8], l3: usize, mac: Mac) -> Result<(), NoAnswer> {
    if arp_request_target(frame, l3).is_none() {
        return Err(if frame.len() < l3 + 28 {
            NoAnswer::Malformed
        } else {
            NoAnswer::NotRequest
        });
    }
    let sender: [u8; 10] = get(frame, l3 + 8).ok_or(NoAnswer::Malformed)?;
    let target: [u8; 4] = get(frame, l3 + 24).ok_or(NoAnswer::Malformed)?;
    if Mac([
        sender[0], sender[1], sender[2], sender[3], sender[4], sender[5],
    ])
    .is_multicast()
    {
        return Err(NoAnswer::NotUnicast);
    }
    put(frame, l3 + 6, &[0, 2]);
    put(frame, l3 + 8, &mac.0);
    put(frame, l3 + 14, &target);
    put(frame, l3 + 18, &sender);
    put(frame, 0, &sender[..6]);
    put(frame, 6, &mac.0);
    Ok(())
}

/// The IPv4 header at `l3`, checked: (header length, total length, source, destination).
fn ipv4(frame: &[u8], l3: usize) -> Result<(usize, usize, [u8; 4], [u8; 4]), NoAnswer> {
    let h: [u8; 20] = get(frame, l3).ok_or(NoAnswer::Malformed)?;
    if get::<2>(frame, 12) != Some(ethertype::IPV4.to_be_bytes()) || h[0] >> 4 != 4 {
        return Err(NoAnswer::Malformed);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if ihl < 20 || total < ihl || frame.len() < l3 + total {
        return Err(NoAnswer::Malformed);
    }
    // More fragments, or an offset: a piece of a datagram.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(NoAnswer::Fragment);
    }
    let src = [h[12], h[13], h[14], h[15]];
    let dst = [h[16], h[17], h[18], h[19]];
    let src_mac: [u8; 6] = get(frame, 6).ok_or(NoAnswer::Malformed)?;
    if Mac(src_mac).is_multicast() || !valid_source(src) || !unicast_destination(dst) {
        return Err(NoAnswer::NotUnicast);
    }
    Ok((ihl, total, src, dst))
}

/// Swaps the Ethernet addresses so the frame goes back to its sender from `mac`.
fn turn_ethernet(frame: &mut [u8], mac: Mac) {
    if let Some(src) = get::<6>(frame, 6) {
        put(frame, 0, &src);
        put(frame, 6, &mac.0);
    }
}

/// Turns the ICMP echo request at `l3`/`l4` into its echo reply from its destination address
/// and `mac`: addresses swapped, TTL [`ANSWER_TTL`], type 0, the IPv4 and ICMP checksums
/// updated incrementally (RFC 1624; a request with a wrong checksum gets a reply with a wrong
/// one, which its sender discards). The checksum must be complete: a caller holding a frame
/// with a partial checksum completes it first.
pub fn echo_reply(frame: &mut [u8], l3: usize, l4: usize, mac: Mac) -> Result<(), NoAnswer> {
    let (ihl, total, src, dst) = ipv4(frame, l3)?;
    if frame.get(l3 + 9) != Some(&ipproto::ICMP) || l4 != l3 + ihl {
        return Err(NoAnswer::NotRequest);
    }
    if total < ihl + 8 {
        return Err(NoAnswer::Malformed);
    }
    let ty_code: [u8; 2] = get(frame, l4).ok_or(NoAnswer::Malformed)?;
    if ty_code[0] != 8 {
        return Err(NoAnswer::NotRequest);
    }
    let ttl_proto: [u8; 2] = get(frame, l3 + 8).ok_or(NoAnswer::Malformed)?;
    let new_ttl_proto = [ANSWER_TTL, ttl_proto[1]];
    let ip_ck = get(frame, l3 + 10).ok_or(NoAnswer::Malformed)?;
    let icmp_ck = get(frame, l4 + 2).ok_or(NoAnswer::Malformed)?;
    let new_ty_code = [0, ty_code[1]];
    turn_ethernet(frame, mac);
    put(frame, l3 + 8, &new_ttl_proto);
    put(frame, l3 + 10, &update(ip_ck, &ttl_proto, &new_ttl_proto));
    // Swapping the addresses changes no sum.
    put(frame, l3 + 12, &dst);
    put(frame, l3 + 16, &src);
    put(frame, l4, &new_ty_code);
    put(frame, l4 + 2, &update(icmp_ck, &ty_code, &new_ty_code));
    Ok(())
}

/// Turns the TCP segment at `l3`/`l4` into the reset its destination sends back (RFC 793,
/// "Reset Generation", for a closed port): from its destination address and port and `mac`,
/// to its sender. A segment with ACK gets `<SEQ=SEG.ACK><CTL=RST>`; one without (a SYN) gets
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, SYN and FIN counting one each in SEG.LEN.
///
/// The reset is a 20-byte IPv4 header (DF, TTL [`ANSWER_TTL`], no options) and a 20-byte TCP
/// header with full checksums, at `l3`: its TCP header starts at `l3 + 20`, and the frame's
/// new length (`l3 +` [`RESET_HEADERS_LEN`]) is returned for the caller to set, with its
/// offload state cleared (the checksums are complete). Never answers a reset.
pub fn tcp_reset(frame: &mut [u8], l3: usize, l4: usize, mac: Mac) -> Result<usize, NoAnswer> {
    let seg = Segment::read(frame, l3, l4)?;
    let (r_seq, r_ack, r_flags) = if seg.flags & tcp_flags::ACK != 0 {
        (seg.ack, 0, tcp_flags::RST)
    } else {
        let len = seg.data
            + u32::from(seg.flags & tcp_flags::SYN != 0)
            + u32::from(seg.flags & tcp_flags::FIN != 0);
        (
            0,
            seg.seq.wrapping_add(len),
            tcp_flags::RST | tcp_flags::ACK,
        )
    };
    turn_ethernet(frame, mac);
    let back = Segment {
        src: seg.dst,
        dst: seg.src,
        sport: seg.dport,
        dport: seg.sport,
        ..seg
    };
    Ok(write_reset(frame, l3, &back, r_seq, r_ack, r_flags))
}

/// Turns the TCP segment at `l3`/`l4` into the reset its sender would send in its place to
/// abort the connection: the same addresses, ports and MACs, `<SEQ=SEG.SEQ><CTL=RST>` (in the
/// receiver's window, so it is accepted). For a middlebox ending a connection at both ends:
/// one end gets [`tcp_reset`] of a segment, the other this of a copy. Same headers, length
/// and offload rules as [`tcp_reset`]; never for a reset.
pub fn tcp_reset_onward(frame: &mut [u8], l3: usize, l4: usize) -> Result<usize, NoAnswer> {
    let seg = Segment::read(frame, l3, l4)?;
    Ok(write_reset(frame, l3, &seg, seg.seq, 0, tcp_flags::RST))
}

/// Writes into `buf` a whole reset frame, made from nothing (a middlebox ending an idle
/// connection): Ethernet from `src_mac` to `dst_mac`, IPv4 `src` → `dst`, TCP `sport` →
/// `dport` with `<SEQ=seq><CTL=RST>`, full checksums. Returns its length (14 +
/// [`RESET_HEADERS_LEN`]), or `None` if `buf` is shorter.
pub fn tcp_reset_frame(
    buf: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    (src, sport): ([u8; 4], u16),
    (dst, dport): ([u8; 4], u16),
    seq: u32,
) -> Option<usize> {
    let len = 14 + RESET_HEADERS_LEN;
    let frame = buf.get_mut(..len)?;
    frame[..6].copy_from_slice(&dst_mac.0);
    frame[6..12].copy_from_slice(&src_mac.0);
    frame[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    let seg = Segment {
        src,
        dst,
        sport: sport.to_be_bytes(),
        dport: dport.to_be_bytes(),
        seq,
        ack: 0,
        flags: tcp_flags::RST,
        data: 0,
    };
    Some(write_reset(frame, 14, &seg, seq, 0, tcp_flags::RST))
}

/// What a reset is made from: a TCP segment's addresses, ports, numbers and flags.
#[derive(Clone, Copy)]
struct Segment {
    src: [u8; 4],
    dst: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
    seq: u32,
    ack: u32,
    flags: u8,
    /// Payload bytes.
    data: u32,
}

impl Segment {
    /// The IPv4 TCP segment at `l3`/`l4`, unless malformed or a reset.
    fn read(frame: &[u8], l3: usize, l4: usize) -> Result<Segment, NoAnswer> {
        let (ihl, total, src, dst) = ipv4(frame, l3)?;
        if frame.get(l3 + 9) != Some(&ipproto::TCP) || l4 != l3 + ihl {
            return Err(NoAnswer::NotRequest);
        }
        let tcp: [u8; 20] = get(frame, l4).ok_or(NoAnswer::Malformed)?;
        let doff = usize::from(tcp[12] >> 4) * 4;
        if doff < 20 || ihl + doff > total {
            return Err(NoAnswer::Malformed);
        }
        if tcp[13] & tcp_flags::RST != 0 {
            return Err(NoAnswer::Reset);
        }
        Ok(Segment {
            src,
            dst,
            sport: [tcp[0], tcp[1]],
            dport: [tcp[2], tcp[3]],
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
            flags: tcp[13],
            data: (total - ihl - doff) as u32,
        })
    }
}

/// Writes at `l3` a reset from `s.src`:`s.sport` to `s.dst`:`s.dport` with `seq`, `ack` and
/// `flags` (full checksums, DF, TTL [`ANSWER_TTL`]); returns the frame's new length.
fn write_reset(frame: &mut [u8], l3: usize, s: &Segment, seq: u32, ack: u32, flags: u8) -> usize {
    let ip = ipv4_header(
        Ipv4Header {
            tos: 0,
            total: RESET_HEADERS_LEN as u16,
            id: 0,
            dont_fragment: true,
            ttl: ANSWER_TTL,
            proto: ipproto::TCP,
        },
        s.src,
        s.dst,
    );
    let [q0, q1, q2, q3] = seq.to_be_bytes();
    let [a0, a1, a2, a3] = ack.to_be_bytes();
    let [p0, p1] = s.sport;
    let [p2, p3] = s.dport;
    let mut rst = [
        p0, p1, p2, p3, q0, q1, q2, q3, a0, a1, a2, a3, 0x50, flags, 0, 0, 0, 0, 0, 0,
    ];
    let sum = Csum::default()
        .add_bytes(&ip[12..20])
        .add_be16(u16::from(ipproto::TCP))
        .add_be16(20)
        .add_bytes(&rst);
    [rst[16], rst[17]] = sum.field();
    put(frame, l3, &ip);
    put(frame, l3 + 20, &rst);
    l3 + RESET_HEADERS_LEN
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checksum::internet_checksum;
    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, Icmpv4Type,
        PacketBuilder, SlicedPacket, TransportSlice,
    };

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 5];
    const GW: Mac = Mac([2, 0x42, 10, 0, 0, 1]);
    const CLIENT: [u8; 4] = [10, 0, 0, 5];
    const VIP: [u8; 4] = [10, 0, 0, 100];

    fn arp_request(op: ArpOperation) -> Vec<u8> {
        let mut f = Vec::new();
        Ethernet2Header {
            source: CLIENT_MAC,
            destination: [0xff; 6],
            ether_type: EtherType::ARP,
        }
        .write(&mut f)
        .unwrap();
        ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &CLIENT_MAC,
            &CLIENT,
            &[0; 6],
            &VIP,
        )
        .unwrap()
        .write(&mut f)
        .unwrap();
        f
    }

    #[test]
    fn an_arp_request_becomes_its_reply() {
        let mut f = arp_request(ArpOperation::REQUEST);
        assert_eq!(arp_request_target(&f, 14), Some(Ipv4Addr::from(VIP)));
        arp_reply(&mut f, 14, GW).unwrap();
        let eth = Ethernet2Header::from_slice(&f).unwrap().0;
        assert_eq!((eth.destination, eth.source), (CLIENT_MAC, GW.0));
        let arp = ArpPacket::from_slice(&f[14..]).unwrap();
        assert_eq!(arp.operation, ArpOperation::REPLY);
        assert_eq!(arp.sender_hw_addr(), &GW.0);
        assert_eq!(arp.sender_protocol_addr(), &VIP);
        assert_eq!(arp.target_hw_addr(), &CLIENT_MAC);
        assert_eq!(arp.target_protocol_addr(), &CLIENT);

        let mut reply = arp_request(ArpOperation::REPLY);
        let before = reply.clone();
        assert_eq!(arp_reply(&mut reply, 14, GW), Err(NoAnswer::NotRequest));
        assert_eq!(reply, before);
        assert_eq!(
            arp_reply(&mut reply[..30], 14, GW),
            Err(NoAnswer::Malformed)
        );
    }

    fn ping() -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, GW.0)
            .ipv4(CLIENT, VIP, 3)
            .icmpv4_echo_request(7, 9)
            .write(&mut f, b"abcdefgh")
            .unwrap();
        f
    }

    #[test]
    fn a_ping_becomes_its_echo_reply_with_right_checksums() {
        let mut f = ping();
        echo_reply(&mut f, 14, 34, GW).unwrap();
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!()
        };
        assert_eq!((eth.destination(), eth.source()), (CLIENT_MAC, GW.0));
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!((h.source, h.destination, h.time_to_live), (VIP, CLIENT, 64));
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!()
        };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 9));
        assert_eq!(icmp.payload(), b"abcdefgh");
        assert_eq!(internet_checksum(icmp.slice()), [0, 0]);
    }

    #[test]
    fn no_answer_to_broadcasts_fragments_or_other_icmp() {
        let mut f = ping();
        f[6] = 1; // group source MAC
        assert_eq!(echo_reply(&mut f, 14, 34, GW), Err(NoAnswer::NotUnicast));
        let mut f = ping();
        f[14 + 6] = 0x20; // more fragments
        assert_eq!(echo_reply(&mut f, 14, 34, GW), Err(NoAnswer::Fragment));
        let mut f = ping();
        f[34] = 0; // an echo reply
        let before = f.clone();
        assert_eq!(echo_reply(&mut f, 14, 34, GW), Err(NoAnswer::NotRequest));
        assert_eq!(f, before);
        for cut in 0..f.len() {
            assert!(echo_reply(&mut f[..cut].to_vec(), 14, 34, GW).is_err());
        }
    }

    fn segment(syn: bool, ack: Option<u32>, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(CLIENT_MAC, GW.0)
            .ipv4(CLIENT, VIP, 64)
            .tcp(40000, 80, 1000, 64000);
        if syn {
            b = b.syn();
        }
        if fin {
            b = b.fin();
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f
    }

    /// The reset's (seq, ack, RST, ACK), with its checksums checked.
    fn reset_of(mut f: Vec<u8>) -> (u32, u32, bool, bool) {
        let n = tcp_reset(&mut f, 14, 34, GW).unwrap();
        f.truncate(n);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!((h.source, h.destination), (VIP, CLIENT));
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!()
        };
        assert_eq!((t.source_port(), t.destination_port()), (80, 40000));
        assert_eq!(
            Ok(t.checksum()),
            t.to_header().calc_checksum_ipv4(&h, t.payload())
        );
        assert!(!t.syn() && !t.fin() && t.payload().is_empty());
        assert_eq!(&f[..12], &[&CLIENT_MAC[..], &GW.0[..]].concat()[..]);
        (
            t.sequence_number(),
            t.acknowledgment_number(),
            t.rst(),
            t.ack(),
        )
    }

    #[test]
    fn resets_follow_rfc_793() {
        // A SYN: <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>.
        assert_eq!(
            reset_of(segment(true, None, false, b"")),
            (0, 1001, true, true)
        );
        // Data and FIN without ACK count in SEG.LEN.
        assert_eq!(
            reset_of(segment(false, None, true, b"xyz")),
            (0, 1004, true, true)
        );
        // With ACK: <SEQ=SEG.ACK><CTL=RST>.
        assert_eq!(
            reset_of(segment(false, Some(77), false, b"data")),
            (77, 0, true, false)
        );
        let mut rst = segment(false, Some(1), false, b"");
        rst[34 + 13] |= tcp_flags::RST;
        assert_eq!(tcp_reset(&mut rst, 14, 34, GW), Err(NoAnswer::Reset));
        let f = segment(true, None, false, b"");
        for cut in 0..f.len() {
            assert!(tcp_reset(&mut f[..cut].to_vec(), 14, 34, GW).is_err());
        }
    }

    #[test]
    fn onward_reset_keeps_the_direction_and_the_sequence() {
        let mut f = segment(false, Some(77), false, b"some data");
        let macs = f[..12].to_vec();
        let n = tcp_reset_onward(&mut f, 14, 34).unwrap();
        f.truncate(n);
        assert_eq!(&f[..12], &macs[..], "MACs are kept");
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!((h.source, h.destination), (CLIENT, VIP));
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!()
        };
        assert_eq!((t.source_port(), t.destination_port()), (40000, 80));
        assert_eq!(
            Ok(t.checksum()),
            t.to_header().calc_checksum_ipv4(&h, t.payload())
        );
        assert_eq!((t.sequence_number(), t.rst(), t.ack()), (1000, true, false));
        assert!(t.payload().is_empty());
        let mut rst = segment(false, Some(1), false, b"");
        rst[34 + 13] |= tcp_flags::RST;
        assert_eq!(tcp_reset_onward(&mut rst, 14, 34), Err(NoAnswer::Reset));
    }
}
