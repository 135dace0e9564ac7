//! Internet checksums (RFC 1071) for stages that rewrite headers: the full sum, the RFC 1624
//! incremental update for a rewritten address or port, completion of a partial checksum (a
//! TAP's `NEEDS_CSUM` frame), and the fix-up such a frame needs when its addresses change (its
//! checksum field holds the pseudo-header sum, not a checksum).
//!
//! Pure byte logic, no state: callable from any thread.

use crate::offload::{Offload, OffloadError};

// ---------------------------------------------------------------------------------------------
// Ones'-complement sum (RFC 1071), computed in native byte order: 16-bit words are read
// native-endian, summed, folded, and the folded result is stored native-endian again, which
// yields the correct network-order bytes on any host. Values given as numbers (pseudo-header
// protocol and length) are converted with `ne16`.

/// Sums of up to this many bytes cannot overflow the u64 accumulator of `sum_block`.
pub(crate) const SUM_BLOCK: usize = 1 << 16;

/// A running ones'-complement sum (native byte order, not yet folded).
#[derive(Debug, Clone, Copy, Default)]
pub struct Csum(u64);

impl Csum {
    /// Adds `data`, which must start at an even offset of the checksummed region (an odd last
    /// byte is padded with zero, so only the final piece may have an odd length).
    #[inline]
    pub fn add_bytes(self, data: &[u8]) -> Csum {
        let mut acc = self.0;
        for block in data.chunks(SUM_BLOCK) {
            acc = fold32(acc) + sum_block(block);
        }
        Csum(fold32(acc))
    }

    /// Adds a 16-bit number given in host order, as it would appear in network order.
    #[inline]
    pub fn add_be16(self, v: u16) -> Csum {
        Csum(self.0 + u64::from(u16::from_ne_bytes(v.to_be_bytes())))
    }

    /// The folded 16-bit sum, in native order.
    #[inline]
    pub fn fold(self) -> u16 {
        let mut s = fold32(self.0);
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// The checksum field's bytes (network order): the complement of the sum.
    #[inline]
    pub fn field(self) -> [u8; 2] {
        (!self.fold()).to_ne_bytes()
    }
}

/// Folds a u64 sum to at most 33 bits without changing it modulo 0xffff.
#[inline]
fn fold32(s: u64) -> u64 {
    (s & 0xffff_ffff) + (s >> 32)
}

/// Sum of `block` (at most [`SUM_BLOCK`] bytes) as native-endian words: 8-byte words are split
/// into their 32-bit halves and added to a u64, so no carry needs handling in the loop (which
/// the compiler vectorises); 2^32 ≡ 2^16 ≡ 1 modulo 0xffff, so folding recovers the 16-bit sum.
#[inline]
fn sum_block(block: &[u8]) -> u64 {
    let mut chunks = block.chunks_exact(8);
    let mut acc: u64 = 0;
    for c in &mut chunks {
        if let Ok(w) = <[u8; 8]>::try_from(c) {
            let w = u64::from_ne_bytes(w);
            acc += (w & 0xffff_ffff) + (w >> 32);
        }
    }
    let mut rest = chunks.remainder();
    if let [a, b, c, d, tail @ ..] = rest {
        acc += u64::from(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = tail;
    }
    if let [a, b, tail @ ..] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = tail;
    }
    if let [a] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, 0]));
    }
    acc
}

/// Reads a big-endian u16 at `at`, if in range.
#[inline]
pub(crate) fn get_be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at.checked_add(2)?)? {
        &[x, y] => Some(u16::from_be_bytes([x, y])),
        _ => None,
    }
}

/// Reads a big-endian u32 at `at`, if in range.
#[inline]
pub(crate) fn get_be32(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at.checked_add(4)?)? {
        &[w, x, y, z] => Some(u32::from_be_bytes([w, x, y, z])),
        _ => None,
    }
}

/// Writes two bytes at `at` (nothing when out of range: callers have proven the range).
#[inline]
pub(crate) fn put2(b: &mut [u8], at: usize, v: [u8; 2]) {
    if let Some([x, y]) = b.get_mut(at..at.saturating_add(2)) {
        [*x, *y] = v;
    }
}

/// Writes four bytes at `at` (nothing when out of range: callers have proven the range).
#[inline]
pub(crate) fn put4(b: &mut [u8], at: usize, v: [u8; 4]) {
    if let Some([w, x, y, z]) = b.get_mut(at..at.saturating_add(4)) {
        [*w, *x, *y, *z] = v;
    }
}

/// Completes a partial checksum in place: the 16-bit ones'-complement sum of
/// `frame[csum_start..]` (the checksum field already holds the pseudo-header sum, as Linux
/// leaves it) is complemented and written at `csum_start + csum_offset`. Does nothing when
/// `!off.needs_csum()`.
///
/// Like Linux (`skb_checksum_help`), a result of 0 is written as 0xffff (equivalent for TCP,
/// required for UDP, where 0 means "no checksum").
pub fn complete_checksum(frame: &mut [u8], off: &Offload) -> Result<(), OffloadError> {
    if !off.needs_csum() {
        return Ok(());
    }
    let start = usize::from(off.csum_start);
    let field = start + usize::from(off.csum_offset);
    if field + 2 > frame.len() {
        return Err(OffloadError::BadChecksumRange);
    }
    let covered = frame.get(start..).ok_or(OffloadError::BadChecksumRange)?;
    let mut v = Csum::default().add_bytes(covered).field();
    if v == [0, 0] {
        v = [0xff, 0xff];
    }
    put2(frame, field, v);
    Ok(())
}

/// The Internet checksum of `data` as the checksum field's bytes (network order).
#[inline]
pub fn internet_checksum(data: &[u8]) -> [u8; 2] {
    Csum::default().add_bytes(data).field()
}

/// Ones'-complement sum of `old` taken out and `new` put in, added to `sum` (all as
/// big-endian 16-bit words; `old` and `new` have the same even length).
#[inline]
fn replace_words(mut sum: u32, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        let o = u16::from_be_bytes([o[0], o[1]]);
        let n = u16::from_be_bytes([n[0], n[1]]);
        sum += u32::from(!o) + u32::from(n);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 1624 (eqn. 3) incremental update of a checksum field when the covered bytes `old`
/// (an address, a port: same even length as `new`) are rewritten to `new`:
/// `HC' = ~(~HC + ~m + m')`.
///
/// A UDP checksum of zero means "no checksum" over IPv4: callers leave such a field alone (and
/// write a computed zero as `0xffff`, see [`udp_field`]).
#[inline]
pub fn update(field: [u8; 2], old: &[u8], new: &[u8]) -> [u8; 2] {
    let hc = u16::from_be_bytes(field);
    (!replace_words(u32::from(!hc), old, new)).to_be_bytes()
}

/// The same update for a partial checksum (a `NEEDS_CSUM` frame from a TAP): the field holds
/// the pseudo-header sum itself, not its complement, so the rewritten words go straight into
/// the sum: `S' = S + ~m + m'`. Only pseudo-header fields (addresses, the L4 length) are
/// updated this way: ports and everything else from `csum_start` on are summed when the
/// checksum is completed over the rewritten frame.
#[inline]
pub fn update_partial(field: [u8; 2], old: &[u8], new: &[u8]) -> [u8; 2] {
    replace_words(u32::from(u16::from_be_bytes(field)), old, new).to_be_bytes()
}

/// Decrements the TTL of the IPv4 header at `l3`, its checksum updated (RFC 1624), as a
/// router's hop does; false (nothing changed) when it would run out or the header is short.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], l3: usize) -> bool {
    let Some(h) = frame.get_mut(l3..l3.saturating_add(20)) else {
        return false;
    };
    if h[8] <= 1 {
        return false;
    }
    let old = [h[8], h[9]];
    h[8] -= 1;
    let field = update([h[10], h[11]], &old, &[h[8], h[9]]);
    h[10..12].copy_from_slice(&field);
    true
}

/// A UDP checksum field as sent: a computed zero is written as `0xffff` (zero means "none").
#[inline]
pub fn udp_field(field: [u8; 2]) -> [u8; 2] {
    if field == [0, 0] { [0xff, 0xff] } else { field }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    /// A UDP or TCP frame over IPv4 with correct checksums.
    fn frame(
        tcp: bool,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
        let mut f = Vec::new();
        if tcp {
            b.tcp(sport, dport, 7, 1000)
                .ack(9)
                .write(&mut f, payload)
                .unwrap();
        } else {
            b.udp(sport, dport).write(&mut f, payload).unwrap();
        }
        f
    }

    #[test]
    fn a_hop_decrements_the_ttl_and_keeps_the_header_checksum_right() {
        let mut f = frame(false, [10, 0, 0, 2], [198, 18, 0, 1], 1, 2, b"x");
        for ttl in (1..64).rev() {
            assert!(decrement_ttl(&mut f, 14));
            assert_eq!(f[14 + 8], ttl);
            assert_eq!(internet_checksum(&f[14..34]), [0, 0], "header sums to zero");
        }
        let before = f.clone();
        assert!(!decrement_ttl(&mut f, 14), "TTL 1 runs out");
        assert!(!decrement_ttl(&mut f[..30], 14), "short header");
        assert_eq!(f, before, "nothing changed");
    }

    /// (IP header checksum, L4 checksum) as stored, and as recomputed from scratch.
    fn stored_and_computed(f: &[u8]) -> ([u16; 2], [u16; 2]) {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        let (stored, computed) = match &p.transport {
            Some(TransportSlice::Udp(u)) => (
                u.checksum(),
                u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
            ),
            Some(TransportSlice::Tcp(t)) => (
                t.checksum(),
                t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(),
            ),
            _ => panic!("no l4"),
        };
        (
            [h.header_checksum, stored],
            [h.calc_header_checksum(), computed],
        )
    }

    /// Rewrites the source address and port as SNAT does, updating both checksums
    /// incrementally (`partial`: the L4 field holds a pseudo-header sum).
    fn snat(f: &mut [u8], addr: [u8; 4], port: u16, tcp: bool, partial: bool) {
        let l4_check = if tcp { 34 + 16 } else { 34 + 6 };
        let old_addr: [u8; 4] = f[26..30].try_into().unwrap();
        let old_port: [u8; 2] = f[34..36].try_into().unwrap();
        let ip_field = [f[24], f[25]];
        f[24..26].copy_from_slice(&update(ip_field, &old_addr, &addr));
        let mut l4 = [f[l4_check], f[l4_check + 1]];
        if partial {
            // Only the pseudo-header's address changes the stored sum; the port lies inside
            // the range the completion sums.
            l4 = update_partial(l4, &old_addr, &addr);
        } else {
            l4 = update(l4, &old_addr, &addr);
            l4 = update(l4, &old_port, &port.to_be_bytes());
            if !tcp {
                l4 = udp_field(l4);
            }
        }
        f[l4_check..l4_check + 2].copy_from_slice(&l4);
        f[26..30].copy_from_slice(&addr);
        f[34..36].copy_from_slice(&port.to_be_bytes());
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(
            update(0xdd2fu16.to_be_bytes(), &[0x55, 0x55], &[0x32, 0x85]),
            [0, 0]
        );
    }

    #[test]
    fn full_checksum_of_an_ip_header() {
        let f = frame(false, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"x");
        let mut hdr = f[14..34].to_vec();
        hdr[10..12].fill(0);
        assert_eq!(internet_checksum(&hdr), [f[24], f[25]]);
    }

    proptest! {
        #[test]
        fn incremental_updates_match_full_recomputation(
            tcp in any::<bool>(),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            new_addr in any::<[u8; 4]>(), new_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut f = frame(tcp, src, dst, sport, dport, &payload);
            snat(&mut f, new_addr, new_port, tcp, false);
            let (stored, computed) = stored_and_computed(&f);
            prop_assert_eq!(stored[0], computed[0], "IP header checksum");
            if tcp || computed[1] != 0 {
                prop_assert_eq!(stored[1], computed[1], "L4 checksum");
            }
        }

        #[test]
        fn partial_checksums_follow_rewrites(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            new_addr in any::<[u8; 4]>(), new_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            // A NEEDS_CSUM frame: the TCP field holds the pseudo-header sum.
            let mut f = frame(true, src, dst, 40000, 80, &payload);
            let tcp_len = (f.len() - 34) as u16;
            let pseudo = |f: &[u8]| {
                let mut ph = f[26..34].to_vec();
                ph.extend_from_slice(&[0, 6]);
                ph.extend_from_slice(&tcp_len.to_be_bytes());
                !u16::from_be_bytes(internet_checksum(&ph))
            };
            let s = pseudo(&f).to_be_bytes();
            f[50..52].copy_from_slice(&s);
            snat(&mut f, new_addr, new_port, true, true);
            let off = Offload { flags: Offload::F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..Offload::NONE };
            complete_checksum(&mut f, &off).unwrap();
            let (stored, computed) = stored_and_computed(&f);
            prop_assert_eq!(stored, computed);
        }
    }
}
