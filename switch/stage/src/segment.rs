//! Software TCP segmentation of GSO super-frames ([`Segmenter`]), for ports that cannot take
//! them: IPv4 ids, sequence numbers, FIN/PSH/CWR on the right segments, full checksums.
//!
//! Pure byte logic, no state beyond the segmenter's cursor: callable from any thread.

use crate::batch::{BURST, Burst};
use crate::checksum::{Csum, get_be16, get_be32, put2, put4};
use crate::frame::{Frame, FramePool};
use crate::offload::{Offload, OffloadError};

/// Ethernet II header length.
const ETH_LEN: usize = 14;
/// IPv6 fixed header length.
const IPV6_LEN: usize = 40;
/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;
/// TCP flag bits (byte 13 of the header).
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Software TCP segmentation of one GSO super-frame (`gso_type` TCPV4 or TCPV6, optionally with
/// ECN).
///
/// An error from [`Segmenter::next_into`] ends the segmentation: the remaining segments are
/// not produced (the super-frame is a counted drop).
#[derive(Debug, Clone)]
pub struct Segmenter<'a> {
    /// The Ethernet, IP and TCP headers of the super-frame (`hdrs.len()` = TCP header end).
    hdrs: &'a [u8],
    /// The TCP payload of the super-frame (up to the IP length; trailing padding excluded).
    payload: &'a [u8],
    /// Start of the TCP header.
    l4: usize,
    /// Payload bytes per segment (non-zero).
    gso_size: usize,
    ipv4: bool,
    /// Pseudo-header sum of source and destination addresses and protocol.
    pseudo: Csum,
    seq: u32,
    ip_id: u16,
    tcp_flags: u8,
    /// Next segment to produce.
    index: usize,
    /// Number of segments (at least one).
    count: usize,
}

impl<'a> Segmenter<'a> {
    /// Checks the super-frame (Ethernet II, no VLAN tag, IPv4 or IPv6 without extension headers,
    /// TCP) and prepares to cut its payload into `gso_size` pieces. The real headers are parsed
    /// (`hdr_len` is only a hint and is ignored).
    ///
    /// The payload ends where the IP length says (bytes past it are padding and dropped); an IP
    /// length of zero (Linux BIG TCP) means "up to the end of the frame". A payload that fits in
    /// one segment (including an empty one) gives exactly one segment.
    pub fn new(frame: &'a [u8], off: &Offload) -> Result<Segmenter<'a>, OffloadError> {
        use OffloadError as E;
        if !off.is_gso() {
            return Err(E::NotGso);
        }
        let base = off.gso_type & !Offload::GSO_ECN;
        let want_v4 = match base {
            Offload::GSO_TCPV4 => true,
            Offload::GSO_TCPV6 => false,
            other => return Err(E::UnsupportedGso(other)),
        };
        let gso_size = usize::from(off.gso_size);
        if gso_size == 0 {
            return Err(E::BadGsoSize);
        }
        let ethertype = get_be16(frame, 12).ok_or(E::TruncatedHeaders)?;
        let l3 = ETH_LEN;
        let (ipv4, l4, ip_end, pseudo) = match ethertype {
            0x0800 => {
                let vihl = *frame.get(l3).ok_or(E::TruncatedHeaders)?;
                if vihl >> 4 != 4 {
                    return Err(E::UnsupportedHeaders);
                }
                let ihl = usize::from(vihl & 0x0f) * 4;
                if ihl < 20 {
                    return Err(E::TruncatedHeaders);
                }
                let ip = frame.get(l3..l3 + ihl).ok_or(E::TruncatedHeaders)?;
                let frag = get_be16(ip, 6).ok_or(E::TruncatedHeaders)?;
                if frag & 0x3fff != 0 {
                    return Err(E::UnsupportedHeaders);
                }
                if ip.get(9) != Some(&IPPROTO_TCP) {
                    return Err(E::NotTcp);
                }
                let total = usize::from(get_be16(ip, 2).ok_or(E::TruncatedHeaders)?);
                let ip_end = if total == 0 { frame.len() } else { l3 + total };
                let addrs = ip.get(12..20).ok_or(E::TruncatedHeaders)?;
                (true, l3 + ihl, ip_end, Csum::default().add_bytes(addrs))
            }
            0x86dd => {
                let ip = frame.get(l3..l3 + IPV6_LEN).ok_or(E::TruncatedHeaders)?;
                if ip.first().map(|b| b >> 4) != Some(6) {
                    return Err(E::UnsupportedHeaders);
                }
                match ip.get(6).copied() {
                    Some(IPPROTO_TCP) => {}
                    // hop-by-hop, routing, fragment, ESP, AH, destination options, mobility,
                    // HIP, shim6: extension headers.
                    Some(0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140) => {
                        return Err(E::UnsupportedHeaders);
                    }
                    _ => return Err(E::NotTcp),
                }
                let plen = usize::from(get_be16(ip, 4).ok_or(E::TruncatedHeaders)?);
                let ip_end = if plen == 0 {
                    frame.len()
                } else {
                    l3 + IPV6_LEN + plen
                };
                let addrs = ip.get(8..40).ok_or(E::TruncatedHeaders)?;
                (
                    false,
                    l3 + IPV6_LEN,
                    ip_end,
                    Csum::default().add_bytes(addrs),
                )
            }
            // VLAN tags (0x8100, 0x88a8) and anything that is not IP.
            _ => return Err(E::UnsupportedHeaders),
        };
        if ipv4 != want_v4 {
            return Err(E::GsoMismatch);
        }
        let doff = *frame.get(l4 + 12).ok_or(E::TruncatedHeaders)?;
        let tcp_len = usize::from(doff >> 4) * 4;
        if tcp_len < 20 {
            return Err(E::TruncatedHeaders);
        }
        let hdrs_len = l4 + tcp_len;
        let hdrs = frame.get(..hdrs_len).ok_or(E::TruncatedHeaders)?;
        if ip_end < hdrs_len || ip_end > frame.len() {
            return Err(E::BadIpLength);
        }
        let payload = frame.get(hdrs_len..ip_end).ok_or(E::BadIpLength)?;
        // Every segment's IP length (IPv4 total length, IPv6 payload length) must fit a u16.
        let ip_len_max = if ipv4 { hdrs_len - l3 } else { tcp_len } + gso_size.min(payload.len());
        if ip_len_max > usize::from(u16::MAX) {
            return Err(E::BadGsoSize);
        }
        let seq = get_be32(hdrs, l4 + 4).ok_or(E::TruncatedHeaders)?;
        let tcp_flags = *hdrs.get(l4 + 13).ok_or(E::TruncatedHeaders)?;
        let ip_id = if ipv4 {
            get_be16(hdrs, l3 + 4).ok_or(E::TruncatedHeaders)?
        } else {
            0
        };
        Ok(Segmenter {
            hdrs,
            payload,
            l4,
            gso_size,
            ipv4,
            pseudo: pseudo.add_be16(u16::from(IPPROTO_TCP)),
            seq,
            ip_id,
            tcp_flags,
            index: 0,
            count: payload.len().div_ceil(gso_size).max(1),
        })
    }

    /// Segments still to come.
    pub fn remaining(&self) -> usize {
        self.count - self.index
    }

    /// Skips the next `n` segments (fewer if fewer remain) without producing them, e.g. to
    /// resume with a segmenter re-created for the same super-frame. O(1).
    pub fn skip(&mut self, n: usize) {
        self.index = self.index.saturating_add(n).min(self.count);
    }

    /// Length of the longest segment this super-frame gives (headers + at most `gso_size`
    /// payload bytes): an output buffer of this size never gets [`OffloadError::SegmentTooLarge`].
    pub fn max_segment_len(&self) -> usize {
        self.hdrs.len() + self.gso_size.min(self.payload.len())
    }

    /// Writes the next segment into `out` and returns its length, or `None` when done.
    ///
    /// `out` must hold the headers and this segment's payload (at most `gso_size` bytes, see
    /// [`Segmenter::max_segment_len`]); otherwise `Err(SegmentTooLarge)` is returned and the
    /// segmentation ends (later calls return `None`).
    ///
    /// Each segment: headers copied; IPv4 total length, id (id + segment index, wrapping) and
    /// header checksum recomputed; IPv6 payload length set; TCP seq advanced by the payload
    /// offset; FIN and PSH only on the last segment, CWR only on the first; TCP checksum computed
    /// in full (pseudo-header included), so the segment needs no offload. Allocation-free.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<Result<usize, OffloadError>> {
        if self.index >= self.count {
            return None;
        }
        let i = self.index;
        let start = i.saturating_mul(self.gso_size).min(self.payload.len());
        let end = start.saturating_add(self.gso_size).min(self.payload.len());
        let chunk = self.payload.get(start..end).unwrap_or_default();
        let hdrs_len = self.hdrs.len();
        let seg_len = hdrs_len + chunk.len();
        let Some(seg) = out.get_mut(..seg_len) else {
            self.index = self.count;
            return Some(Err(OffloadError::SegmentTooLarge));
        };
        let (h, p) = seg.split_at_mut(hdrs_len);
        h.copy_from_slice(self.hdrs);
        p.copy_from_slice(chunk);

        let l3 = ETH_LEN;
        let l4 = self.l4;
        // IP lengths fit a u16: checked in new().
        if self.ipv4 {
            put2(h, l3 + 2, ((seg_len - l3) as u16).to_be_bytes());
            put2(h, l3 + 4, self.ip_id.wrapping_add(i as u16).to_be_bytes());
            put2(h, l3 + 10, [0, 0]);
            let ip_csum = Csum::default()
                .add_bytes(h.get(l3..l4).unwrap_or_default())
                .field();
            put2(h, l3 + 10, ip_csum);
        } else {
            put2(h, l3 + 4, ((seg_len - l4) as u16).to_be_bytes());
        }

        // Sequence numbers are modulo 2^32: the truncating cast is intended.
        put4(h, l4 + 4, self.seq.wrapping_add(start as u32).to_be_bytes());
        let mut flags = self.tcp_flags;
        if i + 1 < self.count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        if let Some(f) = h.get_mut(l4 + 13) {
            *f = flags;
        }
        put2(h, l4 + 16, [0, 0]);
        let tcp_len = seg_len - l4;
        let tcp_csum = self
            .pseudo
            .add_be16((tcp_len >> 16) as u16)
            .add_be16(tcp_len as u16)
            .add_bytes(seg.get(l4..).unwrap_or_default())
            .field();
        put2(seg, l4 + 16, tcp_csum);

        self.index += 1;
        Some(Ok(seg_len))
    }
}

/// How [`segment_into_pool`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Every segment was made.
    Done,
    /// `left` segments were not made: the pool ran dry, or `max` was reached.
    Stopped {
        /// Segments not made.
        left: usize,
    },
    /// The super-frame could not be segmented (its remaining segments are not made).
    Failed(OffloadError),
}

/// Cuts the super-frame `frame` into frames of `pool`, a burst at a time, giving each segment
/// to `sink`, at most `max` segments in all; returns how many it made and how it ended. The
/// super-frame itself is left to the caller.
pub fn segment_into_pool(
    pool: &mut FramePool,
    frame: &Frame,
    off: &Offload,
    max: usize,
    sink: &mut dyn FnMut(&mut FramePool, Frame),
) -> (usize, SegmentEnd) {
    let mut done = 0;
    loop {
        let mut outs = Burst::new();
        while !outs.is_full() && done + outs.len() < max {
            match pool.alloc() {
                Some(f) => outs.push(f),
                None => break,
            }
        }
        let mut made = 0;
        let outcome = Segmenter::new(pool.data(frame), off).and_then(|mut seg| {
            seg.skip(done);
            for out in outs.iter_mut() {
                match seg.next_into(pool.buffer_mut(out)) {
                    Some(Ok(n)) => {
                        out.set_len(n);
                        made += 1;
                    }
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
            Ok(seg.remaining())
        });
        for (i, out) in outs.into_iter().enumerate() {
            if i < made {
                sink(pool, out);
            } else {
                pool.free(out);
            }
        }
        done += made;
        match outcome {
            Ok(0) => return (done, SegmentEnd::Done),
            Ok(left) if made == 0 => return (done, SegmentEnd::Stopped { left }),
            Ok(_) => debug_assert!(made <= BURST),
            Err(e) => return (done, SegmentEnd::Failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::checksum::{SUM_BLOCK, complete_checksum};
    use crate::offload::VNET_HDR_LEN;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
    const V4_A: [u8; 4] = [10, 0, 0, 1];
    const V4_B: [u8; 4] = [10, 0, 0, 2];
    const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// Straightforward reference: sum of big-endian 16-bit words, folded (not complemented).
    fn ref_sum(parts: &[&[u8]]) -> u16 {
        let mut s: u64 = 0;
        for part in parts {
            for w in part.chunks(2) {
                let hi = u64::from(w[0]);
                let lo = u64::from(*w.get(1).unwrap_or(&0));
                s += (hi << 8) | lo;
            }
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn pseudo_v4(proto: u8, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&V4_A);
        v.extend_from_slice(&V4_B);
        v.extend_from_slice(&[0, proto]);
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v
    }

    fn pseudo_v6(proto: u8, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&V6_A);
        v.extend_from_slice(&V6_B);
        v.extend_from_slice(&(len as u32).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, proto]);
        v
    }

    fn payload_bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A GSO super-frame as a TAP gives it: full headers, TCP checksum field holding only the
    /// pseudo-header sum, IP lengths covering the whole super-frame.
    fn super_frame(v6: bool, payload: &[u8], fin: bool, cwr: bool) -> (Vec<u8>, Offload) {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let b = if v6 {
            b.ipv6(V6_A, V6_B, 64)
        } else {
            b.ipv4(V4_A, V4_B, 64)
        };
        let mut b = b.tcp(40000, 5201, 0xffff_f000, 512).ack(77).psh();
        if fin {
            b = b.fin();
        }
        if cwr {
            b = b.cwr();
        }
        let mut frame = Vec::new();
        b.write(&mut frame, payload).unwrap();
        let l4 = if v6 { 54 } else { 34 };
        if !v6 {
            // A non-zero id, to see it increment.
            frame[18..20].copy_from_slice(&0xfffeu16.to_be_bytes());
            frame[24..26].copy_from_slice(&[0, 0]);
            let c = !ref_sum(&[&frame[14..34]]);
            frame[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let tcp_len = frame.len() - l4;
        let pseudo = if v6 {
            pseudo_v6(6, tcp_len)
        } else {
            pseudo_v4(6, tcp_len)
        };
        frame[l4 + 16..l4 + 18].copy_from_slice(&ref_sum(&[&pseudo]).to_be_bytes());
        let off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            gso_type: if v6 {
                Offload::GSO_TCPV6
            } else {
                Offload::GSO_TCPV4
            } | if cwr { Offload::GSO_ECN } else { 0 },
            hdr_len: (l4 + 20) as u16,
            gso_size: 1448,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (frame, off)
    }

    /// Segments `frame` and checks every invariant; returns the segments.
    fn check_segmentation(frame: &[u8], off: &Offload, payload: &[u8]) -> Vec<Vec<u8>> {
        let gso = usize::from(off.gso_size);
        let v6 = off.gso_type & !Offload::GSO_ECN == Offload::GSO_TCPV6;
        let orig = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(TransportSlice::Tcp(otcp)) = orig.transport else {
            panic!("not tcp")
        };
        let orig_id = match &orig.net {
            Some(NetSlice::Ipv4(ip)) => ip.header().identification(),
            _ => 0,
        };

        let mut seg = Segmenter::new(frame, off).unwrap();
        let expected = payload.len().div_ceil(gso).max(1);
        assert_eq!(seg.remaining(), expected);
        let mut buf = vec![0u8; seg.max_segment_len()];
        let mut segs = Vec::new();
        while let Some(r) = seg.next_into(&mut buf) {
            let n = r.unwrap();
            segs.push(buf[..n].to_vec());
            assert_eq!(seg.remaining(), expected - segs.len());
        }
        assert_eq!(segs.len(), expected);
        assert!(seg.next_into(&mut buf).is_none());

        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let sp = SlicedPacket::from_ethernet(s).unwrap();
            let Some(TransportSlice::Tcp(tcp)) = sp.transport else {
                panic!("segment {i} not tcp")
            };
            let tcp_len = tcp.slice().len();
            match sp.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => {
                    assert!(!v6);
                    let h = ip.header();
                    assert_eq!(usize::from(h.total_len()), s.len() - 14);
                    assert_eq!(h.identification(), orig_id.wrapping_add(i as u16));
                    assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                    assert_eq!(ref_sum(&[h.slice()]), 0xffff);
                    assert_eq!(
                        tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
                        tcp.checksum()
                    );
                    assert_eq!(ref_sum(&[&pseudo_v4(6, tcp_len), tcp.slice()]), 0xffff);
                }
                NetSlice::Ipv6(ip) => {
                    assert!(v6);
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), s.len() - 54);
                    assert_eq!(
                        tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap(),
                        tcp.checksum()
                    );
                    assert_eq!(ref_sum(&[&pseudo_v6(6, tcp_len), tcp.slice()]), 0xffff);
                }
                NetSlice::Arp(_) => panic!("arp"),
            }
            assert!(tcp.payload().len() <= gso);
            if i + 1 < segs.len() {
                assert_eq!(tcp.payload().len(), gso);
            }
            assert_eq!(
                tcp.sequence_number(),
                otcp.sequence_number().wrapping_add((i * gso) as u32)
            );
            let last = i + 1 == segs.len();
            assert_eq!(tcp.fin(), otcp.fin() && last);
            assert_eq!(tcp.psh(), otcp.psh() && last);
            assert_eq!(tcp.cwr(), otcp.cwr() && i == 0);
            assert_eq!(tcp.ack(), otcp.ack());
            assert_eq!(tcp.acknowledgment_number(), otcp.acknowledgment_number());
            assert_eq!(tcp.header_slice().len(), otcp.header_slice().len());
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, payload);
        segs
    }

    #[test]
    fn vnet_header_roundtrip() {
        // As read from a TAP: NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum 34/16.
        let bytes: [u8; VNET_HDR_LEN] =
            [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];
        let off = Offload::parse(&bytes);
        assert_eq!(
            off,
            Offload {
                flags: 1,
                gso_type: 1,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert!(off.needs_csum() && off.is_gso() && !off.is_none());
        let mut out = [0xaa; VNET_HDR_LEN];
        off.emit(&mut out);
        assert_eq!(out, bytes);

        assert!(Offload::NONE.is_none());
        assert_eq!(Offload::NONE, Offload::default());
        let ecn_only = Offload {
            gso_type: Offload::GSO_ECN,
            ..Offload::NONE
        };
        assert!(!ecn_only.is_gso() && ecn_only.is_none());
        let valid = Offload {
            flags: Offload::F_DATA_VALID,
            ..Offload::NONE
        };
        assert!(valid.is_none());
    }

    #[test]
    fn complete_checksum_ipv4_tcp() {
        let payload = b"hello, checksum!!"; // odd length
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_A, V4_B, 64)
            .tcp(1234, 80, 1, 100)
            .write(&mut frame, payload)
            .unwrap();
        let tcp_len = frame.len() - 34;
        let partial = ref_sum(&[&pseudo_v4(6, tcp_len)]);
        frame[50..52].copy_from_slice(&partial.to_be_bytes());
        let off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Offload::NONE
        };
        complete_checksum(&mut frame, &off).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = SlicedPacket::from_ethernet(&frame).unwrap().transport
        else {
            panic!()
        };
        assert_eq!(tcp.calc_checksum_ipv4(V4_A, V4_B).unwrap(), tcp.checksum());
        assert_eq!(ref_sum(&[&pseudo_v4(6, tcp_len), &frame[34..]]), 0xffff);

        // Not NEEDS_CSUM: untouched.
        let before = frame.clone();
        let off = Offload {
            csum_start: 34,
            csum_offset: 16,
            ..Offload::NONE
        };
        complete_checksum(&mut frame, &off).unwrap();
        assert_eq!(frame, before);
    }

    #[test]
    fn complete_checksum_ipv6_udp() {
        let payload = [0x5au8; 33];
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(V6_A, V6_B, 64)
            .udp(5353, 53)
            .write(&mut frame, &payload)
            .unwrap();
        let udp_len = frame.len() - 54;
        let partial = ref_sum(&[&pseudo_v6(17, udp_len)]);
        frame[60..62].copy_from_slice(&partial.to_be_bytes());
        let off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 54,
            csum_offset: 6,
            ..Offload::NONE
        };
        complete_checksum(&mut frame, &off).unwrap();
        let sp = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Udp(udp)) = sp.transport else {
            panic!()
        };
        let expect = udp
            .to_header()
            .calc_checksum_ipv6_raw(V6_A, V6_B, udp.payload())
            .unwrap();
        assert_eq!(udp.checksum(), expect);
        assert_eq!(ref_sum(&[&pseudo_v6(17, udp_len), &frame[54..]]), 0xffff);
    }

    #[test]
    fn complete_checksum_zero_becomes_ffff() {
        // Covered data summing to 0xffff: the checksum would be 0, written as 0xffff.
        let mut frame = vec![0x12, 0x34, 0xed, 0xcb, 0, 0];
        let off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 0,
            csum_offset: 4,
            ..Offload::NONE
        };
        complete_checksum(&mut frame, &off).unwrap();
        assert_eq!(frame[4..], [0xff, 0xff]);
    }

    #[test]
    fn complete_checksum_bad_range() {
        let mut frame = vec![0u8; 60];
        let mut off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 25, // 34 + 25 + 2 = 61 > 60
            ..Offload::NONE
        };
        assert_eq!(
            complete_checksum(&mut frame, &off),
            Err(OffloadError::BadChecksumRange)
        );
        off.csum_offset = 24; // exactly fits
        assert_eq!(complete_checksum(&mut frame, &off), Ok(()));
        off.csum_start = u16::MAX;
        off.csum_offset = u16::MAX;
        assert_eq!(
            complete_checksum(&mut frame, &off),
            Err(OffloadError::BadChecksumRange)
        );
    }

    #[test]
    fn sum_matches_reference_at_all_lengths_and_offsets() {
        let data = payload_bytes(300);
        for start in 0..4 {
            for len in 0..(300 - start) {
                let d = &data[start..start + len];
                let ours = u16::from_be_bytes(Csum::default().add_bytes(d).fold().to_ne_bytes());
                let reference = ref_sum(&[d]);
                // 0 and 0xffff are the same value in ones' complement.
                assert!(
                    ours == reference || ((ours | reference) == 0xffff && (ours & reference) == 0),
                    "start {start} len {len}: {ours:#x} vs {reference:#x}"
                );
            }
        }
        // Larger than one accumulation block.
        let big = vec![0xffu8; SUM_BLOCK * 2 + 7];
        let ours = u16::from_be_bytes(Csum::default().add_bytes(&big).fold().to_ne_bytes());
        assert_eq!(ours, ref_sum(&[&big]));
    }

    #[test]
    fn segment_ipv4() {
        let payload = payload_bytes(10_000);
        let (frame, off) = super_frame(false, &payload, true, true);
        let segs = check_segmentation(&frame, &off, &payload);
        assert_eq!(segs.len(), 7);
        assert_eq!(segs[0].len(), 14 + 20 + 20 + 1448);
        assert_eq!(segs[6].len(), 14 + 20 + 20 + 10_000 - 6 * 1448);
        // The id wraps: 0xfffe, 0xffff, 0, ...
        assert_eq!(&segs[2][18..20], &[0, 0]);
        // seq wraps too: 0xffff_f000 + 4 * 1448 > 2^32.
        assert_eq!(
            u32::from_be_bytes(segs[4][38..42].try_into().unwrap()),
            0xffff_f000u32.wrapping_add(4 * 1448)
        );
    }

    #[test]
    fn segment_ipv6() {
        let payload = payload_bytes(4345);
        let (frame, mut off) = super_frame(true, &payload, true, true);
        off.gso_size = 1440;
        let segs = check_segmentation(&frame, &off, &payload);
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[3].len(), 14 + 40 + 20 + 25);
    }

    #[test]
    fn segment_single_and_empty() {
        for v6 in [false, true] {
            // Fits in one segment.
            let payload = payload_bytes(1000);
            let (frame, off) = super_frame(v6, &payload, true, true);
            let segs = check_segmentation(&frame, &off, &payload);
            assert_eq!(segs.len(), 1);
            // Exactly gso_size.
            let payload = payload_bytes(1448);
            let (frame, off) = super_frame(v6, &payload, false, false);
            assert_eq!(check_segmentation(&frame, &off, &payload).len(), 1);
            // No payload at all: one header-only segment.
            let (frame, off) = super_frame(v6, &[], true, false);
            let segs = check_segmentation(&frame, &off, &[]);
            assert_eq!(segs.len(), 1);
            assert_eq!(segs[0].len(), frame.len());
        }
    }

    #[test]
    fn segment_ignores_trailing_padding_and_big_tcp_zero_length() {
        let payload = payload_bytes(3000);
        let (mut frame, off) = super_frame(false, &payload, false, false);
        let clean = frame.clone();
        frame.extend_from_slice(&[0xee; 6]);
        let a = check_segmentation(&frame, &off, &payload);
        let b = check_segmentation(&clean, &off, &payload);
        assert_eq!(a, b);
        // IPv4 total length 0 (BIG TCP): payload runs to the end of the frame.
        let mut big = clean.clone();
        big[16..18].copy_from_slice(&[0, 0]);
        let mut seg = Segmenter::new(&big, &off).unwrap();
        assert_eq!(seg.remaining(), 3);
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while let Some(n) = seg.next_into(&mut buf) {
            total += n.unwrap() - 54;
        }
        assert_eq!(total, 3000);
    }

    #[test]
    fn skip_resumes_where_a_fresh_segmenter_left_off() {
        let payload = payload_bytes(10_000);
        let (frame, off) = super_frame(false, &payload, true, true);
        let all = check_segmentation(&frame, &off, &payload);
        let mut buf = [0u8; 2048];
        for done in 0..=all.len() + 1 {
            let mut seg = Segmenter::new(&frame, &off).unwrap();
            seg.skip(done);
            assert_eq!(seg.remaining(), all.len().saturating_sub(done));
            for expect in all.iter().skip(done) {
                let n = seg.next_into(&mut buf).unwrap().unwrap();
                assert_eq!(&buf[..n], expect.as_slice());
            }
            assert!(seg.next_into(&mut buf).is_none());
        }
    }

    #[test]
    fn segment_too_large_ends_segmentation() {
        let payload = payload_bytes(5000);
        let (frame, mut off) = super_frame(false, &payload, false, false);
        off.gso_size = 4096;
        let mut seg = Segmenter::new(&frame, &off).unwrap();
        assert_eq!(seg.max_segment_len(), 54 + 4096);
        let mut buf = [0u8; 4096];
        assert_eq!(
            seg.next_into(&mut buf),
            Some(Err(OffloadError::SegmentTooLarge))
        );
        assert_eq!(seg.remaining(), 0);
        assert_eq!(seg.next_into(&mut buf), None);
    }

    #[test]
    fn segmenter_errors() {
        let payload = payload_bytes(3000);
        let (frame, off) = super_frame(false, &payload, false, false);

        let not_gso = Offload {
            gso_type: Offload::GSO_NONE,
            ..off
        };
        assert_eq!(
            Segmenter::new(&frame, &not_gso).err(),
            Some(OffloadError::NotGso)
        );
        for t in [
            Offload::GSO_UDP,
            Offload::GSO_UDP_L4,
            Offload::GSO_UDP | Offload::GSO_ECN,
        ] {
            let udp = Offload { gso_type: t, ..off };
            assert_eq!(
                Segmenter::new(&frame, &udp).err(),
                Some(OffloadError::UnsupportedGso(t & !Offload::GSO_ECN))
            );
        }
        let v6 = Offload {
            gso_type: Offload::GSO_TCPV6,
            ..off
        };
        assert_eq!(
            Segmenter::new(&frame, &v6).err(),
            Some(OffloadError::GsoMismatch)
        );
        let zero = Offload { gso_size: 0, ..off };
        assert_eq!(
            Segmenter::new(&frame, &zero).err(),
            Some(OffloadError::BadGsoSize)
        );
        for cut in [0, 10, 14, 20, 33, 34, 40, 53] {
            assert_eq!(
                Segmenter::new(&frame[..cut], &off).err(),
                Some(OffloadError::TruncatedHeaders),
                "cut at {cut}"
            );
        }
        // Cut inside the payload: the IP length now exceeds the frame.
        assert_eq!(
            Segmenter::new(&frame[..100], &off).err(),
            Some(OffloadError::BadIpLength)
        );
        // Not TCP.
        let mut udp = frame.clone();
        udp[23] = 17;
        assert_eq!(Segmenter::new(&udp, &off).err(), Some(OffloadError::NotTcp));
        // VLAN tag.
        let mut vlan = frame.clone();
        vlan[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(
            Segmenter::new(&vlan, &off).err(),
            Some(OffloadError::UnsupportedHeaders)
        );
        // IPv4 fragment.
        let mut frag = frame.clone();
        frag[20] |= 0x20;
        assert_eq!(
            Segmenter::new(&frag, &off).err(),
            Some(OffloadError::UnsupportedHeaders)
        );
        // IPv6 extension header.
        let (mut f6, off6) = super_frame(true, &payload, false, false);
        f6[20] = 0;
        assert_eq!(
            Segmenter::new(&f6, &off6).err(),
            Some(OffloadError::UnsupportedHeaders)
        );
        // gso_size so large that a segment's IP length would not fit a u16.
        let big_payload = payload_bytes(65535 - 40);
        let (fb, offb) = super_frame(false, &big_payload, false, false);
        assert!(
            Segmenter::new(
                &fb,
                &Offload {
                    gso_size: 65535,
                    ..offb
                }
            )
            .is_ok()
        );
        let mut fb2 = fb.clone();
        fb2[16..18].copy_from_slice(&[0, 0]); // BIG TCP length
        fb2.extend_from_slice(&[0; 10]);
        assert_eq!(
            Segmenter::new(
                &fb2,
                &Offload {
                    gso_size: 65535,
                    ..offb
                }
            )
            .err(),
            Some(OffloadError::BadGsoSize)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_segmentation_invariants(
            len in 1usize..=20_000,
            gso in 500u16..=9000,
            v6 in any::<bool>(),
            fin in any::<bool>(),
            cwr in any::<bool>(),
        ) {
            let payload = payload_bytes(len);
            let (frame, off) = super_frame(v6, &payload, fin, cwr);
            let off = Offload { gso_size: gso, ..off };
            check_segmentation(&frame, &off, &payload);
        }
    }

    fn arb_offload() -> impl Strategy<Value = Offload> {
        (
            any::<u8>(),
            prop_oneof![
                any::<u8>(),
                Just(1u8),
                Just(4u8),
                Just(0x81u8),
                Just(0x84u8)
            ],
            any::<u16>(),
            prop_oneof![any::<u16>(), 0u16..100],
            prop_oneof![any::<u16>(), 0u16..128],
            prop_oneof![any::<u16>(), 0u16..64],
        )
            .prop_map(
                |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| Offload {
                    flags,
                    gso_type,
                    hdr_len,
                    gso_size,
                    csum_start,
                    csum_offset,
                },
            )
    }

    fn drain(frame: &[u8], off: &Offload, out_len: usize) {
        if let Ok(mut seg) = Segmenter::new(frame, off) {
            let mut out = vec![0u8; out_len];
            let mut n = 0;
            while let Some(r) = seg.next_into(&mut out) {
                n += 1;
                assert!(n <= 70_000);
                if let Ok(len) = r {
                    assert!(len <= out_len);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_arbitrary_input_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            off in arb_offload(),
            out_len in 0usize..2000,
        ) {
            let mut frame = bytes.clone();
            let _ = complete_checksum(&mut frame, &off);
            drain(&bytes, &off, out_len);
        }

        #[test]
        fn prop_mutated_super_frame_never_panics(
            len in 0usize..3000,
            v6 in any::<bool>(),
            edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
            cut in any::<proptest::sample::Index>(),
            off in arb_offload(),
            out_len in 0usize..4200,
        ) {
            let payload = payload_bytes(len);
            let (mut frame, good) = super_frame(v6, &payload, true, true);
            for (at, b) in edits {
                if let Some(x) = frame.get_mut(at) {
                    *x = b;
                }
            }
            let keep = cut.index(frame.len() + 1);
            frame.truncate(keep);
            drain(&frame, &good, out_len);
            drain(&frame, &Offload { gso_type: good.gso_type, ..off }, out_len);
            let mut f = frame.clone();
            let _ = complete_checksum(&mut f, &off);
            let _ = complete_checksum(&mut f, &good);
        }
    }
}
