//! MSS clamping for TCP connections crossing the tunnel: a SYN (or SYN-ACK) whose MSS option
//! asks for more than fits the overlay MTU is lowered in place, its TCP checksum updated
//! incrementally (RFC 1624), so the two ends never send segments the overlay would have to
//! drop. Options are walked defensively: EOL ends them, a malformed length stops the walk.
//!
//! Pure byte logic over a frame the caller owns: callable from any worker thread.

use xvs_stage::checksum::update;
use xvs_stage::wire::ipproto;

/// IPv4 and TCP headers without options: what an IPv4 segment spends of the MTU besides data.
pub const IPV4_TCP_HEADERS: u16 = 40;
/// IPv6 and TCP headers without options.
pub const IPV6_TCP_HEADERS: u16 = 60;

/// TCP option kinds.
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const TCP_SYN: u8 = 0x02;
/// Offset of the checksum in the TCP header.
const TCP_CHECK: usize = 16;

/// The largest MSS an IPv4 TCP segment may announce over an overlay of `mtu` bytes.
#[inline]
pub fn overlay_mss(mtu: u16) -> u16 {
    mtu.saturating_sub(IPV4_TCP_HEADERS)
}

/// The largest MSS an IPv6 TCP segment may announce over an overlay of `mtu` bytes.
#[inline]
pub fn overlay_mss_v6(mtu: u16) -> u16 {
    mtu.saturating_sub(IPV6_TCP_HEADERS)
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// The offset of the TCP header of the IP packet at `l3` and whether it is IPv6: IPv4 (any
/// IHL of at least 5, not a later fragment) or IPv6 with TCP as its first next header.
#[inline]
fn tcp_header(frame: &[u8], l3: usize) -> Option<(usize, bool)> {
    let vihl = *frame.get(l3)?;
    match vihl >> 4 {
        4 => {
            let ihl = usize::from(vihl & 0x0f) * 4;
            let later_fragment = be16(frame, l3 + 6)? & 0x1fff != 0;
            (ihl >= 20 && *frame.get(l3 + 9)? == ipproto::TCP && !later_fragment)
                .then_some((l3 + ihl, false))
        }
        6 => (*frame.get(l3 + 6)? == ipproto::TCP).then_some((l3 + 40, true)),
        _ => None,
    }
}

/// Lowers the MSS option of the TCP SYN at `l3_offset` of `frame` (IPv4, or IPv6 without
/// extension headers) to `max_mss` if it asks for more, and returns whether it did. The TCP
/// checksum is updated incrementally; with `partial` (a TAP's `NEEDS_CSUM` frame: the field
/// holds the pseudo-header sum, completed later over the rewritten bytes) it is left as it
/// is. Anything else (not TCP, not a SYN, no MSS option, malformed options or headers cut
/// short) is left unchanged. Never panics.
pub fn clamp_mss(frame: &mut [u8], l3_offset: usize, max_mss: u16, partial: bool) -> bool {
    let Some((tcp, _)) = tcp_header(frame, l3_offset) else {
        return false;
    };
    clamp_at(frame, tcp, max_mss, partial)
}

/// [`clamp_mss`] to what fits an overlay of `mtu` bytes: [`overlay_mss`] for IPv4,
/// [`overlay_mss_v6`] for IPv6.
pub fn clamp_mss_to_mtu(frame: &mut [u8], l3_offset: usize, mtu: u16, partial: bool) -> bool {
    let Some((tcp, v6)) = tcp_header(frame, l3_offset) else {
        return false;
    };
    let max = if v6 {
        overlay_mss_v6(mtu)
    } else {
        overlay_mss(mtu)
    };
    clamp_at(frame, tcp, max, partial)
}

fn clamp_at(frame: &mut [u8], tcp: usize, max_mss: u16, partial: bool) -> bool {
    let Some(&[off, flags]) = frame.get(tcp + 12..tcp + 14) else {
        return false;
    };
    let doff = usize::from(off >> 4) * 4;
    if flags & TCP_SYN == 0 || doff < 20 || tcp + doff > frame.len() {
        return false;
    }
    let Some(at) = find_mss(frame, tcp + 20, tcp + doff) else {
        return false;
    };
    // The value is at `at + 2`; `at + 4 <= tcp + doff` was checked.
    let v = at + 2;
    let Some(old) = be16(frame, v) else {
        return false;
    };
    if old <= max_mss {
        return false;
    }
    // Checksum words are aligned to the TCP header: a value at an odd offset straddles two
    // words, so the update takes the aligned four bytes around it.
    let win = if (v - tcp).is_multiple_of(2) {
        v..v + 2
    } else {
        v - 1..v + 3
    };
    let mut before = [0u8; 4];
    let n = win.len();
    let Some(w) = frame.get(win.clone()) else {
        return false;
    };
    before[..n].copy_from_slice(w);
    let [m0, m1] = max_mss.to_be_bytes();
    frame[v] = m0;
    frame[v + 1] = m1;
    if !partial {
        let mut after = [0u8; 4];
        after[..n].copy_from_slice(&frame[win]);
        if let Some(&[c0, c1]) = frame.get(tcp + TCP_CHECK..tcp + TCP_CHECK + 2) {
            let c = update([c0, c1], &before[..n], &after[..n]);
            frame[tcp + TCP_CHECK..tcp + TCP_CHECK + 2].copy_from_slice(&c);
        }
    }
    true
}

/// The offset of a well-formed MSS option (kind 2, length 4) in the options `start..end`.
fn find_mss(frame: &[u8], start: usize, end: usize) -> Option<usize> {
    let mut at = start;
    while at < end {
        match *frame.get(at)? {
            OPT_EOL => return None,
            OPT_NOP => at += 1,
            kind => {
                let len = usize::from(*frame.get(at + 1)?);
                if len < 2 || at + len > end {
                    return None;
                }
                if kind == OPT_MSS {
                    return (len == 4).then_some(at);
                }
                at += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TcpHeader, TransportSlice};
    use proptest::prelude::*;
    use xvs_stage::checksum::complete_checksum;
    use xvs_stage::offload::Offload;

    /// An Ethernet/IPv4 (or IPv6)/TCP frame with `options` (padded with EOL) and flags.
    fn segment(v6: bool, syn: bool, ack: bool, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(OPT_EOL);
        }
        let mut t = TcpHeader::new(40000, 443, 7, 64240);
        t.syn = syn;
        t.ack = ack;
        assert!(t.set_options_raw(&opts).is_ok(), "{opts:?}");
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut f = Vec::new();
        let r = if v6 {
            b.ipv6([0x20; 16], [0x21; 16], 64)
                .tcp_header(t)
                .write(&mut f, payload)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp_header(t)
                .write(&mut f, payload)
        };
        assert!(r.is_ok());
        f
    }

    fn checksum_ok(f: &[u8]) -> bool {
        let Ok(p) = SlicedPacket::from_ethernet(f) else {
            return false;
        };
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            return false;
        };
        let want = match &p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                t.calc_checksum_ipv4(ip.header().source(), ip.header().destination())
            }
            Some(etherparse::NetSlice::Ipv6(ip)) => {
                t.calc_checksum_ipv6(ip.header().source(), ip.header().destination())
            }
            _ => return false,
        };
        // 0 and 0xffff are the same ones'-complement zero (a completed partial sum writes 0xffff).
        want == Ok(t.checksum()) || (t.checksum() == 0xffff && want == Ok(0))
    }

    fn mss_of(f: &[u8], v6: bool) -> Option<u16> {
        let tcp = if v6 { 54 } else { 34 };
        let doff = usize::from(f[tcp + 12] >> 4) * 4;
        find_mss(f, tcp + 20, tcp + doff).and_then(|at| be16(f, at + 2))
    }

    #[test]
    fn overlay_mss_of_the_default_mtu() {
        assert_eq!(overlay_mss(1450), 1410);
        assert_eq!(overlay_mss_v6(1450), 1390);
        assert_eq!(overlay_mss(20), 0);
    }

    #[test]
    fn a_linux_syn_is_clamped() {
        // MSS 1460, SACK permitted, timestamps, NOP, window scale 7: what Linux sends.
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut f = segment(false, true, false, &opts, b"");
        assert!(clamp_mss_to_mtu(&mut f, 14, 1450, false));
        assert_eq!(mss_of(&f, false), Some(1410));
        assert!(checksum_ok(&f));
        assert!(!clamp_mss(&mut f, 14, 1410, false), "already fits");
        // SYN-ACK too, IPv6 too.
        let mut g = segment(true, true, true, &opts, b"");
        assert!(clamp_mss_to_mtu(&mut g, 14, 1450, false));
        assert_eq!(mss_of(&g, true), Some(1390));
        assert!(checksum_ok(&g));
    }

    #[test]
    fn odd_offsets_non_syns_and_malformed_options() {
        // NOP first: the MSS value sits at an odd offset in the header.
        let mut f = segment(false, true, false, &[1, 2, 4, 0x23, 0x28], b"");
        assert!(clamp_mss(&mut f, 14, 1200, false));
        assert_eq!(mss_of(&f, false), Some(1200));
        assert!(checksum_ok(&f));
        let unchanged = |opts: &[u8], syn: bool| {
            let mut f = segment(false, syn, !syn, opts, b"data");
            let before = f.clone();
            assert!(!clamp_mss(&mut f, 14, 536, false), "{opts:?}");
            assert_eq!(f, before);
        };
        unchanged(&[2, 4, 0x05, 0xb4], false); // not a SYN
        unchanged(&[0, 2, 4, 0x05, 0xb4], true); // after EOL
        unchanged(&[8, 0, 2, 4, 0x05, 0xb4], true); // length 0
        unchanged(&[8, 1, 2, 4, 0x05, 0xb4], true); // length 1
        unchanged(&[3, 9, 2, 4, 0x05, 0xb4], true); // runs past the options
        unchanged(&[2, 3, 0x05, 0xb4], true); // MSS of the wrong length
        unchanged(&[4, 2], true); // no MSS at all
        // Not TCP, cut short, a data offset past the frame, a later fragment.
        let mut u = segment(false, true, false, &[2, 4, 0x05, 0xb4], b"");
        u[14 + 9] = ipproto::UDP;
        assert!(!clamp_mss(&mut u, 14, 536, false));
        let f = segment(false, true, false, &[2, 4, 0x05, 0xb4], b"");
        for cut in 0..f.len() {
            let mut g = f[..cut].to_vec();
            assert!(!clamp_mss(&mut g, 14, 536, false), "cut at {cut}");
        }
        let mut g = f.clone();
        g[34 + 12] = 0xf0;
        assert!(!clamp_mss(&mut g, 14, 536, false));
        let mut g = f.clone();
        g[14 + 7] = 1;
        assert!(!clamp_mss(&mut g, 14, 536, false));
        assert!(!clamp_mss(&mut g, 1000, 536, false));
    }

    /// One option of a random layout.
    fn option() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(vec![OPT_NOP]),
            any::<u16>().prop_map(|m| {
                let [a, b] = m.to_be_bytes();
                vec![2, 4, a, b]
            }),
            (0u8..15).prop_map(|s| vec![3, 3, s]),
            Just(vec![4, 2]),
            any::<[u8; 8]>().prop_map(|t| {
                let mut v = vec![8, 10];
                v.extend_from_slice(&t);
                v
            }),
            (30u8..250, proptest::collection::vec(any::<u8>(), 0..6)).prop_map(|(k, d)| {
                let mut v = vec![k, d.len() as u8 + 2];
                v.extend(d);
                v
            }),
        ]
    }

    fn layout() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(option(), 0..8).prop_map(|os| {
            let mut v: Vec<u8> = Vec::new();
            for o in os {
                if v.len() + o.len() <= 40 {
                    v.extend(o);
                }
            }
            v
        })
    }

    proptest! {
        #[test]
        fn clamping_keeps_the_checksum_right(
            v6 in any::<bool>(), ack in any::<bool>(), opts in layout(), max in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut f = segment(v6, true, ack, &opts, &payload);
            let before = mss_of(&f, v6);
            let changed = clamp_mss(&mut f, 14, max, false);
            prop_assert_eq!(changed, before.is_some_and(|m| m > max));
            prop_assert_eq!(mss_of(&f, v6), before.map(|m| m.min(max)));
            prop_assert!(checksum_ok(&f));
        }

        #[test]
        fn partial_checksums_are_right_once_completed(
            opts in layout(), max in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // A NEEDS_CSUM frame: the TCP field holds the pseudo-header sum.
            let mut f = segment(false, true, false, &opts, &payload);
            let tcp_len = (f.len() - 34) as u16;
            let mut ph = f[26..34].to_vec();
            ph.extend_from_slice(&[0, ipproto::TCP]);
            ph.extend_from_slice(&tcp_len.to_be_bytes());
            let sum = !u16::from_be_bytes(xvs_stage::checksum::internet_checksum(&ph));
            f[50..52].copy_from_slice(&sum.to_be_bytes());
            let _ = clamp_mss(&mut f, 14, max, true);
            let off = Offload { flags: Offload::F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..Offload::NONE };
            prop_assert!(complete_checksum(&mut f, &off).is_ok());
            prop_assert!(checksum_ok(&f));
        }

        #[test]
        fn garbage_never_panics(
            mut f in proptest::collection::vec(any::<u8>(), 0..120), l3 in 0usize..40, max in any::<u16>(),
        ) {
            let _ = clamp_mss(&mut f, l3, max, false);
            let _ = clamp_mss_to_mtu(&mut f, l3, max, true);
        }
    }
}
