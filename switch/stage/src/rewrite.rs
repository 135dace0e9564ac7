//! Rewriting a packet's addresses and ports in place, with RFC 1624 incremental checksum
//! updates: the IPv4 header checksum, TCP's and UDP's (pseudo-header addresses and ports; a
//! zero UDP checksum, "none", stays zero), ICMP echo's (the identifier). A frame whose L4
//! checksum is partial (virtio-net `NEEDS_CSUM` from a TAP: the field holds the pseudo-header
//! sum) gets only its pseudo-header fields updated; the ports are summed when the checksum is
//! completed. A GSO super-frame is rewritten once, whole. The one implementation behind NAT
//! (`xvs-nat`, both ends and ICMP errors' quoted headers) and the load balancer (`xvs-lb`,
//! DNAT to a backend and back); each crate's tests exercise it through its own use.
//!
//! Pure byte logic: callable from any thread.

use crate::checksum::{udp_field, update, update_partial};
use crate::offload::Offload;
use crate::wire::ipproto;

/// The fields a rewrite reads and writes: addresses (host-order `u32`), ports (ICMP echo: the
/// identifier in `sport`) and the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (ICMP echo: the identifier).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

/// Why a packet cannot be rewritten (it is left unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteError {
    /// Not TCP, UDP or ICMP.
    Unsupported,
    /// Shorter than the headers the rewrite needs.
    Malformed,
}

/// Offset of the IPv4 header checksum, source and destination.
const IP_CHECK: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;

/// Offset of the L4 checksum field in `proto`'s header, and the bytes the rewrite needs.
#[inline]
fn l4_layout(proto: u8) -> Option<(usize, usize)> {
    match proto {
        ipproto::TCP => Some((16, 4)),
        ipproto::UDP => Some((6, 4)),
        // Identifier at 4..6.
        ipproto::ICMP => Some((2, 6)),
        _ => None,
    }
}

#[inline]
fn get2(b: &[u8], at: usize) -> Option<[u8; 2]> {
    b.get(at..at + 2)?.try_into().ok()
}

#[inline]
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

/// How the L4 checksum field is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4Sum {
    /// A complete checksum: updated for every covered field that changes.
    Full,
    /// A partial sum (pseudo-header only): updated for addresses only.
    Partial,
    /// No checksum to keep (a zero UDP checksum, or a quoted header cut before it).
    Absent,
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
    from: &Fields,
    to: &Fields,
) -> Result<bool, RewriteError> {
    let partial = offload.needs_csum() && usize::from(offload.csum_start) == l4;
    translate_fields(frame, l3, l4, from, to, partial, false)
}

/// [`translate`] for a header quoted in an ICMP error (`quoted`: the L4 header may be cut
/// after its ports, its checksum then left alone). Shared by both.
#[inline]
pub fn translate_fields(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    from: &Fields,
    to: &Fields,
    partial: bool,
    quoted: bool,
) -> Result<bool, RewriteError> {
    if from == to {
        return Ok(false);
    }
    let (ck_off, need) = l4_layout(from.proto).ok_or(RewriteError::Unsupported)?;
    if frame.len() < l3 + 20 || frame.len() < l4 + need.max(if quoted { 0 } else { ck_off + 2 }) {
        return Err(RewriteError::Malformed);
    }
    let ck_at = l4 + ck_off;
    let mut l4sum = match get2(frame, ck_at) {
        None => L4Sum::Absent,
        Some(_) if partial => L4Sum::Partial,
        Some([0, 0]) if from.proto == ipproto::UDP => L4Sum::Absent,
        Some(_) => L4Sum::Full,
    };
    let mut ip_ck = get2(frame, l3 + IP_CHECK).ok_or(RewriteError::Malformed)?;
    let mut l4_ck = get2(frame, ck_at).unwrap_or([0, 0]);
    let pseudo = from.proto != ipproto::ICMP;

    for (at, old, new) in [
        (l3 + IP_SRC, from.src, to.src),
        (l3 + IP_DST, from.dst, to.dst),
    ] {
        if old == new {
            continue;
        }
        let (o, n) = (old.to_be_bytes(), new.to_be_bytes());
        ip_ck = update(ip_ck, &o, &n);
        if pseudo {
            l4_ck = match l4sum {
                L4Sum::Full => update(l4_ck, &o, &n),
                L4Sum::Partial => update_partial(l4_ck, &o, &n),
                L4Sum::Absent => l4_ck,
            };
        }
        put(frame, at, &n);
    }
    put(frame, l3 + IP_CHECK, &ip_ck);

    let ports: &[(usize, u16, u16)] = if from.proto == ipproto::ICMP {
        &[(4, from.sport, to.sport)]
    } else {
        &[(0, from.sport, to.sport), (2, from.dport, to.dport)]
    };
    for &(off, old, new) in ports {
        if old == new {
            continue;
        }
        let (o, n) = (old.to_be_bytes(), new.to_be_bytes());
        if l4sum == L4Sum::Full {
            l4_ck = update(l4_ck, &o, &n);
        }
        put(frame, l4 + off, &n);
    }
    if from.proto == ipproto::UDP && l4sum == L4Sum::Full {
        l4_ck = udp_field(l4_ck);
    }
    if l4sum == L4Sum::Partial && from.proto == ipproto::ICMP {
        l4sum = L4Sum::Absent;
    }
    if l4sum != L4Sum::Absent {
        put(frame, ck_at, &l4_ck);
    }
    Ok(true)
}
