//! Software receive coalescing, the inverse of [`segment`](crate::segment): consecutive TCP/IPv4
//! segments of one flow, in order and full-sized, are described as one GSO super-frame for a
//! port that takes offloads (a TAP), so the receiving kernel takes one packet where it would
//! take dozens, as Linux GRO does for a NIC. Only the merged headers are written; the payloads
//! stay where they are (the port gathers them with `writev`).
//!
//! Rules are Linux's `tcp_gro_receive`/`inet_gro_receive`: the same Ethernet and IP header
//! (but the length, id and checksum), the same ports, ack, window and TCP options, the next
//! sequence number, only ACK (PSH ends a run), every segment but the last of the first one's
//! size, and each segment's checksum verified (a bad one is sent alone, for the receiver to
//! drop and count). Pure byte logic: callable from any thread.

use crate::checksum::{Csum, get_be16, get_be32, internet_checksum, put2};
use crate::offload::Offload;

/// Ethernet II header length (untagged frames only).
const ETH_LEN: usize = 14;
/// IPv4 header length (no options: runs with IP options are not merged).
const IPV4_LEN: usize = 20;
/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;
/// TCP flag bits.
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
/// Longest merged headers: Ethernet, IPv4 and TCP with 40 bytes of options.
pub const MAX_HEADERS: usize = ETH_LEN + IPV4_LEN + 60;
/// Most segments merged into one super-frame (Linux's `MAX_SKB_FRAGS` is 17 pages of
/// payload; 44 full-sized 1448-byte segments fill the 64 KiB IP length).
pub const MAX_SEGMENTS: usize = 44;
/// Largest IPv4 total length of a merged frame.
const MAX_IP_LEN: usize = 65_535;

/// A frame that may take part in a run: an untagged TCP/IPv4 segment without IP options or
/// fragmentation, with payload, ACK set and no flag but PSH beside it, and a correct checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// Ethernet + IP + TCP header bytes (where the payload starts).
    pub headers: usize,
    /// Payload bytes (up to the IP length; trailing padding excluded).
    pub payload: usize,
    seq: u32,
    psh: bool,
}

impl TcpSegment {
    /// The segment `frame` holds, if it may be merged (its checksums are verified here).
    pub fn parse(frame: &[u8]) -> Option<TcpSegment> {
        if get_be16(frame, 12)? != 0x0800 {
            return None;
        }
        let ip = frame.get(ETH_LEN..ETH_LEN + IPV4_LEN)?;
        // Version 4, no options; not a fragment (MF clear, offset zero); TCP.
        if ip[0] != 0x45 || ip[6] & 0x3f != 0 || ip[7] != 0 || ip[9] != IPPROTO_TCP {
            return None;
        }
        let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip_len > frame.len() - ETH_LEN || internet_checksum(ip) != [0, 0] {
            return None;
        }
        let l4 = ETH_LEN + IPV4_LEN;
        let thl = usize::from(*frame.get(l4 + 12)? >> 4) * 4;
        let flags = *frame.get(l4 + 13)?;
        if thl < 20 || IPV4_LEN + thl >= ip_len || flags & !TCP_PSH != TCP_ACK {
            return None;
        }
        let end = ETH_LEN + ip_len;
        let tcp = frame.get(l4..end)?;
        let pseudo = Csum::default()
            .add_bytes(&ip[12..20])
            .add_be16(u16::from(IPPROTO_TCP))
            .add_be16((ip_len - IPV4_LEN) as u16);
        if pseudo.add_bytes(tcp).field() != [0, 0] {
            return None;
        }
        Some(TcpSegment {
            headers: l4 + thl,
            payload: ip_len - IPV4_LEN - thl,
            seq: get_be32(frame, l4 + 4)?,
            psh: flags & TCP_PSH != 0,
        })
    }
}

/// A run of segments being merged: the first one's headers, what the next must look like.
#[derive(Debug, Clone)]
pub struct Run {
    /// The first segment's Ethernet, IP and TCP headers.
    head: [u8; MAX_HEADERS],
    headers: usize,
    /// Payload bytes per segment (the first segment's).
    gso_size: usize,
    /// Payload bytes so far.
    total: usize,
    count: usize,
    next_seq: u32,
    /// Closed: the last segment was short or had PSH, or the run is full.
    closed: bool,
    psh: bool,
}

impl Run {
    /// Starts a run with the segment `frame` holds.
    pub fn start(frame: &[u8], seg: &TcpSegment) -> Run {
        let mut head = [0u8; MAX_HEADERS];
        head[..seg.headers].copy_from_slice(&frame[..seg.headers]);
        Run {
            head,
            headers: seg.headers,
            gso_size: seg.payload,
            total: seg.payload,
            count: 1,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            closed: seg.psh,
            psh: seg.psh,
        }
    }

    /// Segments in the run.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds the segment `frame` holds if it continues the run; false leaves the run as it was.
    pub fn push(&mut self, frame: &[u8], seg: &TcpSegment) -> bool {
        if self.closed
            || seg.headers != self.headers
            || seg.seq != self.next_seq
            || seg.payload > self.gso_size
            || self.count >= MAX_SEGMENTS
            || self.headers - ETH_LEN + self.total + seg.payload > MAX_IP_LEN
            || !self.same_flow(frame)
        {
            return false;
        }
        self.total += seg.payload;
        self.count += 1;
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        self.psh = seg.psh;
        self.closed = seg.psh || seg.payload < self.gso_size;
        true
    }

    /// Whether `frame`'s headers equal the run's but for what differs per segment: IP length,
    /// id and checksum; TCP sequence number, PSH and checksum.
    fn same_flow(&self, frame: &[u8]) -> bool {
        let h = &self.head[..self.headers];
        let Some(f) = frame.get(..self.headers) else {
            return false;
        };
        let ip = ETH_LEN;
        let l4 = ETH_LEN + IPV4_LEN;
        // Ethernet header, version/IHL and TOS.
        h[..ip + 2] == f[..ip + 2]
            // flags/fragment, TTL, protocol (not the checksum), addresses
            && h[ip + 6..ip + 10] == f[ip + 6..ip + 10]
            && h[ip + 12..l4] == f[ip + 12..l4]
            // ports
            && h[l4..l4 + 4] == f[l4..l4 + 4]
            // ack, data offset (flags compared apart: PSH may differ), window
            && h[l4 + 8..l4 + 13] == f[l4 + 8..l4 + 13]
            && h[l4 + 14..l4 + 16] == f[l4 + 14..l4 + 16]
            // urgent pointer and options
            && h[l4 + 18..] == f[l4 + 18..]
    }

    /// Writes the merged frame's headers into `out` (at least [`MAX_HEADERS`] bytes) and
    /// returns their length and the virtio-net header: a TCPv4 super-frame of `gso_size`
    /// segments whose TCP checksum holds the pseudo-header sum (`NEEDS_CSUM`). A run of one
    /// segment is the segment's own headers with no offload.
    pub fn write_headers(&self, out: &mut [u8]) -> (usize, Offload) {
        let n = self.headers;
        out[..n].copy_from_slice(&self.head[..n]);
        if self.count == 1 {
            return (n, Offload::NONE);
        }
        let ip = ETH_LEN;
        let l4 = ETH_LEN + IPV4_LEN;
        let tcp_len = n - l4 + self.total;
        let ip_len = IPV4_LEN + tcp_len;
        put2(out, ip + 2, (ip_len as u16).to_be_bytes());
        put2(out, ip + 10, [0, 0]);
        let ip_sum = internet_checksum(&out[ip..l4]);
        put2(out, ip + 10, ip_sum);
        if self.psh {
            out[l4 + 13] |= TCP_PSH;
        }
        let pseudo = Csum::default()
            .add_bytes(&out[ip + 12..l4])
            .add_be16(u16::from(IPPROTO_TCP))
            .add_be16(tcp_len as u16)
            .fold();
        put2(out, l4 + 16, pseudo.to_ne_bytes());
        let off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            gso_type: Offload::GSO_TCPV4,
            hdr_len: n as u16,
            gso_size: self.gso_size as u16,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (n, off)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::checksum::complete_checksum;
    use crate::segment::Segmenter;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    /// A TCP/IPv4 segment of flow `port` with `len` payload bytes at `seq`.
    fn segment(port: u16, seq: u32, len: usize, psh: bool, id: u16) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 1], [10, 0, 0, 2], 63)
            .tcp(port, 80, seq, 502)
            .ack(77)
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap();
        if psh {
            b = b.psh();
        }
        let payload: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq) as u8).collect();
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out[18..20].copy_from_slice(&id.to_be_bytes());
        out[24..26].copy_from_slice(&[0, 0]);
        let s = internet_checksum(&out[14..34]);
        out[24..26].copy_from_slice(&s);
        out
    }

    /// Merges `frames` as a TAP port would, then segments the super-frame as the receiving
    /// end could: the segments' TCP payloads and sequence numbers come back.
    fn merge(frames: &[Vec<u8>]) -> (Vec<u8>, Offload, usize) {
        let seg = TcpSegment::parse(&frames[0]).unwrap();
        let mut run = Run::start(&frames[0], &seg);
        for f in &frames[1..] {
            let s = TcpSegment::parse(f).unwrap();
            if !run.push(f, &s) {
                break;
            }
        }
        let mut out = vec![0u8; MAX_HEADERS];
        let (n, off) = run.write_headers(&mut out);
        out.truncate(n);
        for f in &frames[..run.count()] {
            let s = TcpSegment::parse(f).unwrap();
            out.extend_from_slice(&f[s.headers..s.headers + s.payload]);
        }
        (out, off, run.count())
    }

    #[test]
    fn consecutive_full_segments_merge_into_one_super_frame() {
        let frames: Vec<_> = (0..4)
            .map(|i| segment(5000, 1000 + i * 1448, 1448, i == 3, 10 + i as u16))
            .collect();
        let (mut merged, off, count) = merge(&frames);
        assert_eq!(count, 4);
        assert_eq!(off.gso_type, Offload::GSO_TCPV4);
        assert_eq!(usize::from(off.gso_size), 1448);
        let ip_len = u16::from_be_bytes([merged[16], merged[17]]) as usize;
        assert_eq!(ip_len, merged.len() - 14);
        assert_eq!(internet_checksum(&merged[14..34]), [0, 0]);
        assert_ne!(merged[47] & TCP_PSH, 0, "the last segment's PSH is kept");
        // Segmenting it again gives back the original segments byte for byte.
        let mut seg = Segmenter::new(&merged, &off).unwrap();
        let mut buf = vec![0u8; 2000];
        for f in &frames {
            let n = seg.next_into(&mut buf).unwrap().unwrap();
            assert_eq!(&buf[..n], &f[..], "segment differs");
        }
        // Completing the partial checksum gives a valid TCP checksum over the whole.
        complete_checksum(&mut merged, &off).unwrap();
    }

    #[test]
    fn runs_end_at_a_gap_a_short_segment_psh_or_another_flow() {
        let a = segment(5000, 0, 1000, false, 1);
        // A gap in sequence numbers.
        assert_eq!(
            merge(&[a.clone(), segment(5000, 1001, 1000, false, 2)]).2,
            1
        );
        // Another flow.
        assert_eq!(
            merge(&[a.clone(), segment(5001, 1000, 1000, false, 2)]).2,
            1
        );
        // A short segment ends the run after itself.
        let short = segment(5000, 1000, 10, false, 2);
        assert_eq!(
            merge(&[a.clone(), short, segment(5000, 1010, 1000, false, 3)]).2,
            2
        );
        // A larger segment than the first does not join.
        assert_eq!(
            merge(&[a.clone(), segment(5000, 1000, 1200, false, 2)]).2,
            1
        );
        // PSH on the first closes the run.
        assert_eq!(
            merge(&[
                segment(5000, 0, 1000, true, 1),
                segment(5000, 1000, 1000, false, 2)
            ])
            .2,
            1
        );
    }

    #[test]
    fn ineligible_segments_are_not_parsed() {
        let good = segment(5000, 0, 100, false, 1);
        assert!(TcpSegment::parse(&good).is_some());
        // A corrupted payload byte: checksum fails.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(TcpSegment::parse(&bad).is_none());
        // No payload (a pure ACK).
        assert!(TcpSegment::parse(&segment(5000, 0, 0, false, 1)).is_none());
        // SYN set.
        let mut syn = good.clone();
        syn[47] |= 0x02;
        assert!(TcpSegment::parse(&syn).is_none());
        // A fragment.
        let mut frag = good.clone();
        frag[20] |= 0x20;
        assert!(TcpSegment::parse(&frag).is_none());
        // Truncated anywhere: never a panic.
        for n in 0..good.len() {
            assert!(TcpSegment::parse(&good[..n]).is_none());
        }
    }

    proptest! {
        #[test]
        fn merging_then_segmenting_gives_the_segments_back(
            sizes in proptest::collection::vec(1usize..1460, 1..50),
            seq0 in any::<u32>(),
        ) {
            let mss = sizes[0];
            let mut seq = seq0;
            let mut frames = Vec::new();
            for (i, s) in sizes.iter().enumerate() {
                let len = (*s).min(mss);
                frames.push(segment(6000, seq, len, false, i as u16));
                seq = seq.wrapping_add(len as u32);
            }
            let (merged, off, count) = merge(&frames);
            prop_assert!(count >= 1);
            if count == 1 {
                prop_assert_eq!(&merged, &frames[0]);
            } else {
                let mut seg = Segmenter::new(&merged, &off).unwrap();
                let mut buf = vec![0u8; 2000];
                for f in &frames[..count] {
                    let n = seg.next_into(&mut buf).unwrap().unwrap();
                    prop_assert_eq!(&buf[..n], &f[..]);
                }
                prop_assert!(seg.next_into(&mut buf).is_none());
            }
        }

        #[test]
        fn parse_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TcpSegment::parse(&bytes);
        }
    }
}
