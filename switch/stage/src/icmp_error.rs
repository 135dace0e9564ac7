//! ICMPv4 errors a router sends back to a frame's sender (RFC 792, RFC 1812 4.3.2): "time
//! exceeded in transit" when a TTL runs out, and "fragmentation needed and DF set" with the
//! next-hop MTU (RFC 1191) when a frame is too large for the next hop and may not be cut.
//!
//! [`answer_in_place`] turns the offending frame itself into the error: the new IPv4 and ICMP
//! headers go in front of the original datagram (into the frame's headroom), the Ethernet
//! header moves back in front of them, and what the quote does not keep is cut off. No
//! allocation, no panic on any input; a frame that must not be answered (or cannot be, being
//! malformed) is left unchanged with the reason.
//!
//! Sans-IO byte logic over a frame the caller owns: callable from any worker thread.

use std::net::Ipv4Addr;

use crate::checksum::{Csum, internet_checksum};
use crate::classify::FlowKey;
use crate::frame::{Frame, FramePool};
use crate::offload::Offload;
use crate::wire::{ETH_HEADER_LEN, Mac, ethertype, ipproto};

/// Largest ICMP error datagram sent (IPv4 header, ICMP header and quote): 576 bytes, the
/// datagram every host must accept. RFC 1812 4.3.2.3 asks for as much of the original as fits
/// in it; Linux caps its errors the same way.
pub const MAX_ERROR_LEN: usize = 576;

/// Bytes an answer puts in front of the quoted datagram: its IPv4 header (20, no options) and
/// its ICMP header (8). The frame grows by this much at the front.
pub const ERROR_HEADERS_LEN: usize = IPV4_HEADER_LEN + ICMP_HEADER_LEN;

/// Longest quote of the original datagram (its IP header included): 548 bytes.
pub const MAX_QUOTE_LEN: usize = MAX_ERROR_LEN - ERROR_HEADERS_LEN;

/// TTL of the errors sent.
pub const ERROR_TTL: u8 = 64;

/// TOS of the errors sent: precedence 6, internetwork control (RFC 1812 4.3.2.5).
pub const ERROR_TOS: u8 = 0xc0;

const IPV4_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 11 code 0, "time to live exceeded in transit": the TTL ran out at this hop.
    TimeExceeded,
    /// Type 3 code 4, "fragmentation needed and DF set": the datagram is larger than the next
    /// hop's `mtu`, which goes in the low 16 bits of the ICMP header's unused field (RFC 1191).
    FragmentationNeeded {
        /// The next hop's MTU.
        mtu: u16,
    },
}

impl IcmpError {
    /// The ICMP type and code.
    #[inline]
    pub fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::TimeExceeded => (11, 0),
            IcmpError::FragmentationNeeded { .. } => (3, 4),
        }
    }

    /// Bytes 4..8 of the ICMP header (unused, or the next-hop MTU in the last two).
    #[inline]
    fn rest_of_header(self) -> [u8; 4] {
        match self {
            IcmpError::TimeExceeded => [0; 4],
            IcmpError::FragmentationNeeded { mtu } => {
                let [m0, m1] = mtu.to_be_bytes();
                [0, 0, m0, m1]
            }
        }
    }
}

/// Why a frame was not answered. The frame is left unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAnswered {
    /// not IPv4 (the key's ethertype, the ethertype in front of `l3_offset`, or the IP
    /// version says otherwise)
    #[error("not an IPv4 frame")]
    NotIpv4,
    /// shorter than its headers say, or an IPv4 header with an IHL below 5 or a total length
    /// below its header (classification refuses such frames; this covers a key that does not
    /// match the frame, or an ICMP datagram too short to hold its type)
    #[error("frame shorter than its headers, or a malformed IPv4 header")]
    Malformed,
    /// an ICMP error is never answered with one (RFC 1812 4.3.2.7). As Linux does, only ICMP
    /// types known to be queries or replies (0, 8, 13 to 18) are answered; every other type,
    /// unassigned and unknown ones included, counts as an error
    #[error("the frame is an ICMP error")]
    IcmpError,
    /// a fragment other than the first (fragment offset not 0) is never answered
    #[error("not the first fragment of its datagram")]
    NotFirstFragment,
    /// not sent by one host to one host (RFC 1812 4.3.2.7): link-layer destination or source
    /// is a group address; IP destination is multicast (224/4) or 255.255.255.255; IP source
    /// is not a valid unicast source (0/8, 127/8, 224/4 multicast, 240/4 including
    /// 255.255.255.255; RFC 1812 5.3.7). A directed broadcast (a subnet's broadcast address)
    /// can only be told by whoever knows the subnets: the caller
    #[error("sent to or from a broadcast, multicast or invalid address")]
    Broadcast,
    /// the frame's chunk cannot hold the answer: its headroom is smaller than
    /// [`ERROR_HEADERS_LEN`] and the rest of the chunk too small to move the quote back (which
    /// cannot happen with the pool's chunk sizes, but is checked rather than assumed)
    #[error("no room in the frame for the error's headers")]
    NoHeadroom,
}

/// Where the answer's pieces are, as found in the frame before it is rewritten.
struct Plan {
    /// Offset of the original IPv4 header (the end of the Ethernet header and any tags).
    l3: usize,
    /// Bytes of the original datagram quoted.
    quote: usize,
    /// The original's source MAC: the answer's destination.
    to_mac: [u8; 6],
    /// The original's source IPv4 address: the answer's destination.
    to_ip: [u8; 4],
}

/// Rewrites `frame`, classified as `key`, into the ICMP error `kind` from `from_mac` and
/// `from_ip` (the router's interface) to the frame's sender, and returns its new length.
///
/// - Ethernet: destination = the frame's source MAC, source = `from_mac`; a VLAN tag (any tags
///   between the MACs and `key.l3_offset`) is kept as it is.
/// - IPv4: version 4, IHL 5, TOS [`ERROR_TOS`], total length, `ip_id` as identification (the
///   caller's counter, or 0), DF clear, TTL [`ERROR_TTL`], protocol ICMP, source `from_ip`,
///   destination = the frame's source address, header checksum.
/// - ICMP: `kind`'s type and code, checksum, the MTU for [`IcmpError::FragmentationNeeded`],
///   then the quote: the original IPv4 header as it arrived (options included) and as much of
///   its payload as keeps the datagram within [`MAX_ERROR_LEN`] bytes. Link-layer padding
///   after the original's IP total length is not quoted; the frame ends after the quote.
///
/// Addresses are read from the frame's headers as they are now (the key gives only where they
/// are and the ethertype), so run this before the frame is rewritten for its next hop. A GSO
/// super-frame is answered like any other (its head is quoted, partial checksum field as it
/// is); the answer is an ordinary frame and its offload state is cleared ([`Offload::NONE`]).
/// It stays in the chunk it was in, though: the answer to a super-frame is in a jumbo chunk,
/// which the output stage only sends to ports that take offloads.
///
/// On `Err` the frame is unchanged. Never allocates, never panics.
pub fn answer_in_place(
    pool: &FramePool,
    frame: &mut Frame,
    key: &FlowKey,
    kind: IcmpError,
    from_mac: Mac,
    from_ip: Ipv4Addr,
    ip_id: u16,
) -> Result<usize, NotAnswered> {
    let plan = plan(pool.data(frame), key)?;
    let l3 = plan.l3;
    let new_len = l3 + ERROR_HEADERS_LEN + plan.quote;
    // Make room for the new headers between the Ethernet header and the original datagram:
    // in the headroom (the Ethernet header, at most a few tags, moves to the new front), or,
    // without headroom, by moving the quote back inside the chunk.
    let pushed = pool.push_header(frame, ERROR_HEADERS_LEN).is_some();
    let buf = pool.buffer_mut(frame);
    let Some(buf) = buf.get_mut(..new_len) else {
        if pushed {
            pool.pull_header(frame, ERROR_HEADERS_LEN);
        }
        return Err(NotAnswered::NoHeadroom);
    };
    // `l3 + ERROR_HEADERS_LEN + quote == new_len == buf.len()`: both ranges lie inside `buf`,
    // and neither split below can fail.
    if pushed {
        buf.copy_within(ERROR_HEADERS_LEN + 12..ERROR_HEADERS_LEN + l3, 12);
    } else {
        buf.copy_within(l3..l3 + plan.quote, l3 + ERROR_HEADERS_LEN);
    }
    let Some((head, quote)) = buf.split_at_mut_checked(l3 + ERROR_HEADERS_LEN) else {
        return Err(NotAnswered::NoHeadroom);
    };
    let Some((eth, ip_icmp)) = head.split_at_mut_checked(l3) else {
        return Err(NotAnswered::NoHeadroom);
    };
    if let Some(macs) = eth.first_chunk_mut::<12>() {
        let (dst, src) = macs.split_at_mut(6);
        dst.copy_from_slice(&plan.to_mac);
        src.copy_from_slice(&from_mac.0);
    }
    let headers = error_headers(kind, from_ip, plan.to_ip, ip_id, quote);
    if let Some(h) = ip_icmp.first_chunk_mut::<ERROR_HEADERS_LEN>() {
        *h = headers;
    }
    frame.set_len(new_len);
    frame.set_offload(Offload::NONE);
    Ok(new_len)
}

/// Checks that `data`, classified as `key`, may be answered and finds what the answer takes
/// from it.
fn plan(data: &[u8], key: &FlowKey) -> Result<Plan, NotAnswered> {
    if key.dl_type != ethertype::IPV4 {
        return Err(NotAnswered::NotIpv4);
    }
    let l3 = usize::from(key.l3_offset);
    let ethertype_at = l3.checked_sub(2).filter(|_| l3 >= ETH_HEADER_LEN);
    let Some(&[t0, t1]) = ethertype_at.and_then(|at| data.get(at..l3)) else {
        return Err(NotAnswered::NotIpv4);
    };
    if u16::from_be_bytes([t0, t1]) != ethertype::IPV4 {
        return Err(NotAnswered::NotIpv4);
    }
    let Some(ip) = data.get(l3..) else {
        return Err(NotAnswered::Malformed);
    };
    let Some(
        &[
            vihl,
            _tos,
            l0,
            l1,
            _id0,
            _id1,
            f0,
            f1,
            _ttl,
            proto,
            _c0,
            _c1,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ],
    ) = ip.first_chunk::<IPV4_HEADER_LEN>()
    else {
        return Err(NotAnswered::Malformed);
    };
    if vihl >> 4 != 4 {
        return Err(NotAnswered::NotIpv4);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([l0, l1]));
    if ihl < IPV4_HEADER_LEN || total < ihl || ip.len() < ihl {
        return Err(NotAnswered::Malformed);
    }
    // The datagram without link-layer padding (a datagram cut short is quoted as it is).
    let ip = ip.get(..total.min(ip.len())).unwrap_or(ip);
    if u16::from_be_bytes([f0, f1]) & 0x1fff != 0 {
        return Err(NotAnswered::NotFirstFragment);
    }
    let Some(&[m0, m1, m2, m3, m4, m5, n0, n1, n2, n3, n4, n5]) = data.first_chunk::<12>() else {
        return Err(NotAnswered::Malformed);
    };
    let (dst_mac, src_mac) = (Mac([m0, m1, m2, m3, m4, m5]), Mac([n0, n1, n2, n3, n4, n5]));
    let (src, dst) = ([s0, s1, s2, s3], [d0, d1, d2, d3]);
    if dst_mac.is_multicast()
        || src_mac.is_multicast()
        || !valid_source(src)
        || !unicast_destination(dst)
    {
        return Err(NotAnswered::Broadcast);
    }
    if proto == ipproto::ICMP {
        let Some(&ty) = ip.get(ihl) else {
            return Err(NotAnswered::Malformed);
        };
        if !is_query_or_reply(ty) {
            return Err(NotAnswered::IcmpError);
        }
    }
    Ok(Plan {
        l3,
        quote: ip.len().min(MAX_QUOTE_LEN),
        to_mac: src_mac.0,
        to_ip: src,
    })
}

/// Whether `ip` may be the source of a datagram a router answers (RFC 1812 4.3.2.7, 5.3.7):
/// not in 0/8 ("this network"), 127/8 (loopback), 224/4 (multicast) or 240/4 (reserved, with
/// the limited broadcast 255.255.255.255).
#[inline]
pub(crate) fn valid_source([a, ..]: [u8; 4]) -> bool {
    a != 0 && a != 127 && a < 224
}

/// Whether `ip` names one host as far as this hop can tell: not multicast (224/4), not the
/// limited broadcast.
#[inline]
pub(crate) fn unicast_destination(ip: [u8; 4]) -> bool {
    !(224..240).contains(&ip[0]) && ip != [255; 4]
}

/// ICMP types that are queries or replies, not errors: echo reply (0), echo (8), timestamp
/// (13, 14), information (15, 16), address mask (17, 18). Linux's `icmp_pointers` marks every
/// other type up to 18 as an error and answers none above 18.
#[inline]
fn is_query_or_reply(ty: u8) -> bool {
    matches!(ty, 0 | 8 | 13..=18)
}

/// An IPv4 header's fields other than its addresses (no options: IHL 5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv4Header {
    pub tos: u8,
    /// Total length.
    pub total: u16,
    pub id: u16,
    pub dont_fragment: bool,
    pub ttl: u8,
    pub proto: u8,
}

/// A 20-byte IPv4 header from `src` to `dst`, its checksum computed: for the packets stages
/// make (ICMP errors, TCP resets).
pub(crate) fn ipv4_header(h: Ipv4Header, src: [u8; 4], dst: [u8; 4]) -> [u8; IPV4_HEADER_LEN] {
    let [l0, l1] = h.total.to_be_bytes();
    let [i0, i1] = h.id.to_be_bytes();
    let flags = if h.dont_fragment { 0x40 } else { 0 };
    let mut ip = [0u8; IPV4_HEADER_LEN];
    ip[..12].copy_from_slice(&[0x45, h.tos, l0, l1, i0, i1, flags, 0, h.ttl, h.proto, 0, 0]);
    ip[12..16].copy_from_slice(&src);
    ip[16..].copy_from_slice(&dst);
    [ip[10], ip[11]] = internet_checksum(&ip);
    ip
}

/// The answer's IPv4 and ICMP headers, checksums included, for `quote`.
fn error_headers(
    kind: IcmpError,
    from: Ipv4Addr,
    to: [u8; 4],
    id: u16,
    quote: &[u8],
) -> [u8; ERROR_HEADERS_LEN] {
    // At most MAX_ERROR_LEN.
    let total = (ERROR_HEADERS_LEN + quote.len()).min(MAX_ERROR_LEN) as u16;
    let ip = ipv4_header(
        Ipv4Header {
            tos: ERROR_TOS,
            total,
            id,
            dont_fragment: false,
            ttl: ERROR_TTL,
            proto: ipproto::ICMP,
        },
        from.octets(),
        to,
    );
    let (ty, code) = kind.type_code();
    let [r0, r1, r2, r3] = kind.rest_of_header();
    let mut icmp = [ty, code, 0, 0, r0, r1, r2, r3];
    [icmp[2], icmp[3]] = Csum::default().add_bytes(&icmp).add_bytes(quote).field();
    let mut out = [0; ERROR_HEADERS_LEN];
    let (a, b) = out.split_at_mut(IPV4_HEADER_LEN);
    a.copy_from_slice(&ip);
    b.copy_from_slice(&icmp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::frame::DATA_OFFSET;
    use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
    use etherparse::{
        Icmpv4Type, IpHeaders, IpNumber, Ipv4Header, LinkExtSlice, LinkSlice, NetSlice,
        PacketBuilder, SlicedPacket, TransportSlice, VlanId,
    };
    use proptest::prelude::*;

    /// The sender: a host on the router's subnet.
    const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const HOST_IP: [u8; 4] = [10, 0, 0, 1];
    /// The router's interface on that subnet, which answers.
    const ROUTER_MAC: Mac = Mac([0x02, 0x42, 10, 0, 0, 0xfe]);
    const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
    /// Where the sender's datagrams go.
    const FAR_IP: [u8; 4] = [192, 0, 2, 9];
    const ID: u16 = 0x1234;

    fn from_host() -> etherparse::PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2(HOST_MAC, ROUTER_MAC.0).ipv4(HOST_IP, FAR_IP, 1)
    }

    fn udp(payload: usize) -> Vec<u8> {
        let mut f = Vec::new();
        let body: Vec<u8> = (0..payload).map(|i| i as u8).collect();
        from_host().udp(40000, 53).write(&mut f, &body).unwrap();
        f
    }

    fn tcp(payload: usize) -> Vec<u8> {
        let mut f = Vec::new();
        let body: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
        from_host()
            .tcp(40000, 443, 1000, 65535)
            .ack(77)
            .write(&mut f, &body)
            .unwrap();
        f
    }

    fn icmp(ty: u8, code: u8) -> Vec<u8> {
        let mut f = Vec::new();
        from_host()
            .icmpv4_raw(ty, code, [0, 7, 0, 1])
            .write(&mut f, &[0xab; 24])
            .unwrap();
        f
    }

    fn echo_request() -> Vec<u8> {
        let mut f = Vec::new();
        from_host()
            .icmpv4_echo_request(7, 1)
            .write(&mut f, &[0x61; 56])
            .unwrap();
        f
    }

    /// A frame of `pool` holding `bytes` with `headroom` bytes in front (at most the default).
    fn frame_with_headroom(pool: &mut FramePool, bytes: &[u8], headroom: usize) -> Frame {
        let mut f = pool.alloc_for(bytes.len()).unwrap();
        let push = DATA_OFFSET as usize - headroom.min(DATA_OFFSET as usize);
        assert!(pool.push_header(&mut f, push).is_some());
        pool.buffer_mut(&mut f)[..bytes.len()].copy_from_slice(bytes);
        f.set_len(bytes.len());
        f
    }

    /// `bytes` classified, answered with `kind`, and the frame's bytes and offload afterwards.
    fn answer_with(
        bytes: &[u8],
        key: &FlowKey,
        kind: IcmpError,
        headroom: usize,
    ) -> (Result<usize, NotAnswered>, Vec<u8>, Offload) {
        let mut pool = FramePool::new_heap(2).unwrap();
        let mut f = frame_with_headroom(&mut pool, bytes, headroom);
        let r = answer_in_place(&pool, &mut f, key, kind, ROUTER_MAC, ROUTER_IP, ID);
        let out = (r, pool.data(&f).to_vec(), f.offload());
        pool.free(f);
        out
    }

    fn answer(bytes: &[u8], kind: IcmpError) -> (Result<usize, NotAnswered>, Vec<u8>) {
        let key = classify(bytes, 1, 0).unwrap();
        let (r, out, off) = answer_with(bytes, &key, kind, DATA_OFFSET as usize);
        assert_eq!(off, Offload::NONE);
        (r, out)
    }

    /// Every field of `ans`, the answer to `orig` (IPv4 at `l3`), against what it must be.
    fn check(orig: &[u8], l3: usize, ans: &[u8], kind: IcmpError) {
        let orig_total = usize::from(u16::from_be_bytes([orig[l3 + 2], orig[l3 + 3]]));
        let quote_len = orig_total.min(MAX_QUOTE_LEN);
        assert_eq!(ans.len(), l3 + ERROR_HEADERS_LEN + quote_len);

        let p = SlicedPacket::from_ethernet(ans).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("not ethernet")
        };
        assert_eq!(eth.destination(), orig[6..12], "back to the sender's MAC");
        assert_eq!(eth.source(), ROUTER_MAC.0);
        assert_eq!(ans[12..l3], orig[12..l3], "tags and ethertype kept");
        assert_eq!(p.link_exts.len(), (l3 - ETH_HEADER_LEN) / 4);

        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        let h = ip.header();
        assert_eq!(h.version(), 4);
        assert_eq!(h.ihl(), 5);
        assert_eq!(ans[l3 + 1], 0xc0, "TOS: internetwork control");
        assert_eq!(usize::from(h.total_len()), ERROR_HEADERS_LEN + quote_len);
        assert!(usize::from(h.total_len()) <= MAX_ERROR_LEN);
        assert_eq!(h.identification(), ID);
        assert!(!h.dont_fragment() && !h.more_fragments());
        assert_eq!(h.fragments_offset().value(), 0);
        assert_eq!(h.ttl(), 64);
        assert_eq!(h.protocol(), IpNumber::ICMP);
        assert_eq!(h.source_addr(), ROUTER_IP);
        assert_eq!(
            h.destination(),
            orig[l3 + 12..l3 + 16],
            "back to the sender's IP"
        );
        let mut hdr = ans[l3..l3 + 20].to_vec();
        hdr[10..12].fill(0);
        assert_eq!(
            internet_checksum(&hdr),
            [ans[l3 + 10], ans[l3 + 11]],
            "IP checksum"
        );

        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not icmp")
        };
        let (ty, code) = kind.type_code();
        assert_eq!((icmp.type_u8(), icmp.code_u8()), (ty, code));
        match kind {
            IcmpError::TimeExceeded => {
                assert_eq!(
                    icmp.icmp_type(),
                    Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
                );
                assert_eq!(icmp.bytes5to8(), [0; 4]);
            }
            IcmpError::FragmentationNeeded { mtu } => {
                assert_eq!(
                    icmp.icmp_type(),
                    Icmpv4Type::DestinationUnreachable(
                        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu }
                    )
                );
                let [m0, m1] = mtu.to_be_bytes();
                assert_eq!(icmp.bytes5to8(), [0, 0, m0, m1]);
            }
        }
        let icmp_at = l3 + IPV4_HEADER_LEN;
        let mut msg = ans[icmp_at..].to_vec();
        msg[2..4].fill(0);
        assert_eq!(
            internet_checksum(&msg),
            [ans[icmp_at + 2], ans[icmp_at + 3]],
            "ICMP checksum"
        );

        assert_eq!(icmp.payload(), &orig[l3..l3 + quote_len], "quote");
    }

    #[test]
    fn time_exceeded_answers_udp_tcp_and_echo_requests() {
        for orig in [udp(12), tcp(100), echo_request(), udp(0)] {
            let (r, ans) = answer(&orig, IcmpError::TimeExceeded);
            assert_eq!(r, Ok(ans.len()));
            check(&orig, 14, &ans, IcmpError::TimeExceeded);
            assert_eq!(
                ans.len(),
                orig.len() + ERROR_HEADERS_LEN,
                "short datagrams are quoted whole"
            );
        }
    }

    #[test]
    fn fragmentation_needed_carries_the_next_hop_mtu() {
        let orig = tcp(1460);
        assert_eq!(orig.len(), 1514);
        assert_ne!(orig[14 + 6] & 0x40, 0, "DF set");
        let kind = IcmpError::FragmentationNeeded { mtu: 1400 };
        let (r, ans) = answer(&orig, kind);
        assert_eq!(r, Ok(14 + MAX_ERROR_LEN));
        check(&orig, 14, &ans, kind);
    }

    #[test]
    fn a_1500_byte_datagram_is_quoted_up_to_576_bytes() {
        let orig = udp(1472);
        assert_eq!(orig.len() - 14, 1500);
        let (r, ans) = answer(&orig, IcmpError::TimeExceeded);
        assert_eq!(r, Ok(14 + 576));
        check(&orig, 14, &ans, IcmpError::TimeExceeded);
        assert_eq!(&ans[14 + 28..], &orig[14..14 + 548]);
        // One byte over the cap, and exactly at it.
        for (payload, quoted) in [(521, 548), (520, 548)] {
            let orig = udp(payload);
            let (r, _) = answer(&orig, IcmpError::TimeExceeded);
            assert_eq!(r, Ok(14 + 28 + quoted), "payload {payload}");
        }
    }

    #[test]
    fn link_padding_is_not_quoted() {
        let mut orig = udp(2);
        assert_eq!(orig.len(), 44);
        orig.resize(60, 0xee);
        let (r, ans) = answer(&orig, IcmpError::TimeExceeded);
        assert_eq!(r, Ok(14 + 28 + 30));
        check(&orig, 14, &ans, IcmpError::TimeExceeded);
    }

    #[test]
    fn ip_options_are_quoted_but_not_sent() {
        let mut h = Ipv4Header::new(0, 1, IpNumber::UDP, HOST_IP, FAR_IP).unwrap();
        h.options = [0x94, 0x04, 0, 0].into(); // router alert
        let mut orig = Vec::new();
        PacketBuilder::ethernet2(HOST_MAC, ROUTER_MAC.0)
            .ip(IpHeaders::Ipv4(h, Default::default()))
            .udp(1, 2)
            .write(&mut orig, &[5; 10])
            .unwrap();
        assert_eq!(orig[14], 0x46);
        let (r, ans) = answer(&orig, IcmpError::TimeExceeded);
        assert_eq!(r, Ok(ans.len()));
        check(&orig, 14, &ans, IcmpError::TimeExceeded);
        assert_eq!(
            &ans[14 + 28..14 + 28 + 24],
            &orig[14..38],
            "whole original header"
        );
    }

    #[test]
    fn a_vlan_tag_is_kept() {
        let mut orig = Vec::new();
        PacketBuilder::ethernet2(HOST_MAC, ROUTER_MAC.0)
            .single_vlan(VlanId::try_new(42).unwrap())
            .ipv4(HOST_IP, FAR_IP, 1)
            .udp(40000, 53)
            .write(&mut orig, &[1; 700])
            .unwrap();
        // Classification refuses tags on access ports; a trunk's key has the IPv4 header
        // after the tag.
        let mut untagged = orig[..12].to_vec();
        untagged.extend_from_slice(&orig[16..]);
        let mut key = classify(&untagged, 1, 42).unwrap();
        key.l3_offset += 4;
        key.l4_offset += 4;
        for kind in [
            IcmpError::TimeExceeded,
            IcmpError::FragmentationNeeded { mtu: 576 },
        ] {
            let (r, ans, off) = answer_with(&orig, &key, kind, DATA_OFFSET as usize);
            assert_eq!((r, off), (Ok(18 + 576), Offload::NONE));
            check(&orig, 18, &ans, kind);
            let p = SlicedPacket::from_ethernet(&ans).unwrap();
            let Some(LinkExtSlice::Vlan(v)) = p.link_exts.first() else {
                panic!("no vlan tag")
            };
            assert_eq!(v.vlan_identifier().value(), 42);
        }
    }

    #[test]
    fn without_headroom_the_quote_moves_back_instead() {
        let orig = udp(600);
        let key = classify(&orig, 1, 0).unwrap();
        for headroom in [0, 1, 27, 28, 29] {
            let (r, ans, _) = answer_with(&orig, &key, IcmpError::TimeExceeded, headroom);
            assert_eq!(r, Ok(14 + 576), "headroom {headroom}");
            check(&orig, 14, &ans, IcmpError::TimeExceeded);
        }
        // A tiny frame without headroom grows past its old length.
        let orig = udp(0);
        let key = classify(&orig, 1, 0).unwrap();
        let (r, ans, _) = answer_with(&orig, &key, IcmpError::TimeExceeded, 0);
        assert_eq!(r, Ok(orig.len() + 28));
        check(&orig, 14, &ans, IcmpError::TimeExceeded);
    }

    #[test]
    fn a_gso_super_frame_is_answered_with_its_head() {
        let orig = tcp(30_000);
        let key = classify(&orig, 1, 0).unwrap();
        let mut pool = FramePool::new_heap(2).unwrap();
        let mut f = pool.alloc_copy(&orig).unwrap();
        assert!(pool.is_jumbo(&f));
        f.set_offload(Offload::tcpv4_gso(1448));
        let kind = IcmpError::FragmentationNeeded { mtu: 1500 };
        let r = answer_in_place(&pool, &mut f, &key, kind, ROUTER_MAC, ROUTER_IP, ID);
        assert_eq!(r, Ok(14 + 576));
        assert_eq!(f.offload(), Offload::NONE, "an error is an ordinary frame");
        assert_eq!(f.len(), 14 + 576);
        check(&orig, 14, pool.data(&f), kind);
        pool.free(f);
    }

    #[test]
    fn the_first_fragment_is_answered_and_later_ones_are_not() {
        let mut first = udp(100);
        first[14 + 6] = 0x20; // MF, offset 0
        let key = classify(&first, 1, 0).unwrap();
        assert_eq!(key.l4_offset, 0, "a fragment has no L4 in its key");
        let (r, ans, _) = answer_with(&first, &key, IcmpError::TimeExceeded, 256);
        assert_eq!(r, Ok(ans.len()));
        check(&first, 14, &ans, IcmpError::TimeExceeded);

        for frag in [[0x00, 0x01], [0x20, 0xb9], [0x1f, 0xff]] {
            let mut later = udp(100);
            later[14 + 6..14 + 8].copy_from_slice(&frag);
            refused(&later, None, NotAnswered::NotFirstFragment);
        }
        // The first fragment of an ICMP error is still an error.
        let mut err = icmp(3, 1);
        err[14 + 6] = 0x20;
        refused(&err, None, NotAnswered::IcmpError);
    }

    /// Asserts that `bytes` (with `key`, or its classification) is refused for `why`, the
    /// frame left as it was, whichever error was asked for.
    fn refused(bytes: &[u8], key: Option<FlowKey>, why: NotAnswered) {
        let key = key.unwrap_or_else(|| classify(bytes, 1, 0).unwrap());
        for kind in [
            IcmpError::TimeExceeded,
            IcmpError::FragmentationNeeded { mtu: 1280 },
        ] {
            for headroom in [0, 256] {
                let mut pool = FramePool::new_heap(2).unwrap();
                let mut f = frame_with_headroom(&mut pool, bytes, headroom);
                f.set_offload(Offload::tcpv4_gso(100));
                let before = (f.headroom(), f.len(), f.offload());
                let r = answer_in_place(&pool, &mut f, &key, kind, ROUTER_MAC, ROUTER_IP, ID);
                assert_eq!(r, Err(why), "{bytes:02x?}");
                assert_eq!(
                    (f.headroom(), f.len(), f.offload()),
                    before,
                    "frame unchanged"
                );
                assert_eq!(pool.data(&f), bytes, "bytes unchanged");
                pool.free(f);
            }
        }
    }

    #[test]
    fn icmp_errors_are_never_answered_queries_are() {
        for ty in [3, 4, 5, 11, 12] {
            refused(&icmp(ty, 0), None, NotAnswered::IcmpError);
        }
        // Unassigned and unknown types may be errors (Photuris, 40, is one): not answered.
        for ty in [1, 2, 6, 7, 9, 10, 19, 40, 255] {
            refused(&icmp(ty, 0), None, NotAnswered::IcmpError);
        }
        for ty in [0, 8, 13, 14, 15, 16, 17, 18] {
            let orig = icmp(ty, 0);
            let (r, ans) = answer(&orig, IcmpError::TimeExceeded);
            assert_eq!(r, Ok(ans.len()), "type {ty}");
            check(&orig, 14, &ans, IcmpError::TimeExceeded);
        }
        // An answer is itself an error: it is not answered again.
        let (_, ans) = answer(&udp(10), IcmpError::TimeExceeded);
        let mut ans = ans;
        ans[0..6].copy_from_slice(&ROUTER_MAC.0);
        ans[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        refused(&ans, None, NotAnswered::IcmpError);
    }

    #[test]
    fn broadcasts_multicasts_and_invalid_sources_are_not_answered() {
        let with_ips = |src: [u8; 4], dst: [u8; 4]| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(HOST_MAC, ROUTER_MAC.0)
                .ipv4(src, dst, 1)
                .udp(68, 67)
                .write(&mut f, &[0; 20])
                .unwrap();
            f
        };
        for (src, dst) in [
            (HOST_IP, [255, 255, 255, 255]),
            (HOST_IP, [224, 0, 0, 251]),
            (HOST_IP, [239, 255, 255, 250]),
            ([0, 0, 0, 0], FAR_IP),
            ([0, 1, 2, 3], FAR_IP),
            ([127, 0, 0, 1], FAR_IP),
            ([224, 0, 0, 1], FAR_IP),
            ([240, 0, 0, 1], FAR_IP),
            ([255, 255, 255, 255], FAR_IP),
        ] {
            refused(&with_ips(src, dst), None, NotAnswered::Broadcast);
        }
        // Class E destinations other than the limited broadcast are unicast as far as a hop
        // can tell.
        let orig = with_ips(HOST_IP, [240, 0, 0, 1]);
        assert!(answer(&orig, IcmpError::TimeExceeded).0.is_ok());

        let mut link_broadcast = udp(10);
        link_broadcast[..6].fill(0xff);
        refused(&link_broadcast, None, NotAnswered::Broadcast);
        let mut link_multicast = udp(10);
        link_multicast[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 0xfb]);
        refused(&link_multicast, None, NotAnswered::Broadcast);
        let mut group_source = udp(10);
        group_source[6] |= 1;
        refused(&group_source, None, NotAnswered::Broadcast);
    }

    #[test]
    fn other_protocols_are_not_answered() {
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2(HOST_MAC, ROUTER_MAC.0)
            .ipv6([0xfd; 16], [0xfe; 16], 1)
            .udp(1, 2)
            .write(&mut v6, &[0; 8])
            .unwrap();
        refused(&v6, None, NotAnswered::NotIpv4);
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        refused(&arp, None, NotAnswered::NotIpv4);
        // A key saying IPv4 over bytes that are not.
        let key = classify(&udp(10), 1, 0).unwrap();
        refused(&v6, Some(key), NotAnswered::NotIpv4);
        let mut v6_at_l3 = udp(10);
        v6_at_l3[14] = 0x65;
        refused(&v6_at_l3, Some(key), NotAnswered::NotIpv4);
        for l3 in [0, 1, 13, 100] {
            refused(
                &udp(10),
                Some(FlowKey {
                    l3_offset: l3,
                    ..key
                }),
                NotAnswered::NotIpv4,
            );
        }
    }

    #[test]
    fn frames_shorter_than_their_headers_are_not_answered() {
        let orig = udp(10);
        let key = classify(&orig, 1, 0).unwrap();
        // Cut inside the IPv4 header, and a header shorter than its IHL.
        refused(&orig[..30], Some(key), NotAnswered::Malformed);
        let mut long_ihl = orig.clone();
        long_ihl[14] = 0x4f;
        refused(&long_ihl[..40], Some(key), NotAnswered::Malformed);
        let mut short_ihl = orig.clone();
        short_ihl[14] = 0x44;
        refused(&short_ihl, Some(key), NotAnswered::Malformed);
        let mut short_total = orig.clone();
        short_total[16..18].copy_from_slice(&19u16.to_be_bytes());
        refused(&short_total, Some(key), NotAnswered::Malformed);
        // The first fragment of an ICMP datagram too short to hold its type.
        let mut bare = icmp(8, 0);
        bare[14 + 6] = 0x20;
        bare[16..18].copy_from_slice(&20u16.to_be_bytes());
        bare.truncate(34);
        refused(&bare, None, NotAnswered::Malformed);
        // A datagram cut short of its total length (a key that no longer matches): quoted as
        // far as it goes.
        let long = udp(100);
        let key = classify(&long, 1, 0).unwrap();
        let (r, ans, _) = answer_with(&long[..60], &key, IcmpError::TimeExceeded, 256);
        assert_eq!(r, Ok(14 + 28 + 46));
        assert_eq!(&ans[42..], &long[14..60]);
    }

    /// The answer's checksums and addressing, for frames the properties produce.
    fn answer_is_sound(orig: &[u8], l3: usize, ans: &[u8]) -> Result<(), TestCaseError> {
        prop_assert!(ans.len() >= l3 + ERROR_HEADERS_LEN);
        prop_assert!(ans.len() <= l3 + MAX_ERROR_LEN);
        prop_assert_eq!(&ans[..6], &orig[6..12]);
        prop_assert_eq!(&ans[6..12], &ROUTER_MAC.0);
        let ip = &ans[l3..];
        prop_assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        prop_assert_eq!(internet_checksum(&ip[..20]), [0, 0], "IP checksum");
        prop_assert_eq!(internet_checksum(&ip[20..]), [0, 0], "ICMP checksum");
        prop_assert_eq!(&ip[16..20], &orig[l3 + 12..l3 + 16]);
        prop_assert_eq!(&ip[28..], &orig[l3..l3 + ip.len() - 28]);
        Ok(())
    }

    proptest! {
        #[test]
        fn random_bytes_classified_and_answered_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..700),
            headroom in 0usize..=256,
            mtu in any::<u16>(),
            frag in any::<bool>(),
        ) {
            let kind = if frag { IcmpError::FragmentationNeeded { mtu } } else { IcmpError::TimeExceeded };
            if let Ok(key) = classify(&bytes, 1, 0) {
                let (r, ans, _) = answer_with(&bytes, &key, kind, headroom);
                if let Ok(n) = r {
                    prop_assert_eq!(n, ans.len());
                    answer_is_sound(&bytes, usize::from(key.l3_offset), &ans)?;
                }
            }
        }

        #[test]
        fn any_key_over_any_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..700),
            l3 in prop_oneof![0u16..64, any::<u16>()],
            headroom in 0usize..=256,
        ) {
            let key = FlowKey { dl_type: ethertype::IPV4, l3_offset: l3, ..FlowKey::default() };
            let (r, ans, _) = answer_with(&bytes, &key, IcmpError::TimeExceeded, headroom);
            match r {
                Ok(n) => {
                    prop_assert_eq!(n, ans.len());
                    answer_is_sound(&bytes, usize::from(l3), &ans)?;
                }
                Err(_) => prop_assert_eq!(&ans, &bytes),
            }
        }

        #[test]
        fn mutated_frames_are_answered_soundly_or_left_alone(
            which in 0usize..4,
            pos in 0usize..80,
            val in any::<u8>(),
            cut in 1usize..700,
            headroom in 0usize..=256,
        ) {
            let mut f = vec![udp(600), tcp(40), echo_request(), icmp(3, 4)].swap_remove(which);
            if let Some(b) = f.get_mut(pos) {
                *b = val;
            }
            f.truncate(cut);
            if let Ok(key) = classify(&f, 1, 0) {
                let (r, ans, _) = answer_with(&f, &key, IcmpError::TimeExceeded, headroom);
                match r {
                    Ok(_) => answer_is_sound(&f, usize::from(key.l3_offset), &ans)?,
                    Err(_) => prop_assert_eq!(&ans, &f),
                }
            }
        }
    }
}
