//! Decapsulation: the checks a VXLAN packet from the underlay passes before its inner frame
//! goes to the network's L2 stage, and where that inner frame is. Nothing is copied: the
//! caller pulls [`Decapped::outer_len`] bytes off the front of the frame
//! (`FramePool::pull_header`) and trims it to [`Decapped::inner_len`].
//!
//! Pure byte logic over a frame the caller owns: callable from any worker thread.

use std::net::Ipv4Addr;

use xvs_stage::checksum::internet_checksum;
use xvs_stage::wire::{Mac, ethertype, ipproto};

use crate::drop::VxlanDrop;
use crate::header::{
    OUTER_ETH_LEN, UDP_HEADER_LEN, VXLAN_HEADER_LEN, VXLAN_PORT, Vni, VxlanHeader,
};

/// The local end of the tunnels: the address and UDP port VXLAN packets are sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalVtep {
    /// The local VTEP's IPv4 address (the uplink's).
    pub ip: Ipv4Addr,
    /// The UDP destination port (4789 unless `vtep set --port` says otherwise).
    pub port: u16,
}

impl LocalVtep {
    /// A VTEP at `ip` on the standard port, [`VXLAN_PORT`].
    pub const fn new(ip: Ipv4Addr) -> LocalVtep {
        LocalVtep {
            ip,
            port: VXLAN_PORT,
        }
    }
}

/// What decapsulation found: the inner frame's network, where it came from, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// The VXLAN header's VNI (the caller's table says whether it is a known network).
    pub vni: Vni,
    /// The remote VTEP: the outer IPv4 source, the inner frame's ingress.
    pub remote_ip: Ipv4Addr,
    /// The outer source MAC (the remote VTEP's, or the last router's).
    pub remote_mac: Mac,
    /// Offset of the inner frame: 50, more when the outer IPv4 header has options.
    pub outer_len: usize,
    /// Length of the inner frame (from the UDP length: link-layer padding is not part of it).
    pub inner_len: usize,
}

impl Decapped {
    /// The inner frame's byte range in the frame given to [`decap`].
    #[inline]
    pub fn inner_range(&self) -> std::ops::Range<usize> {
        self.outer_len..self.outer_len + self.inner_len
    }
}

/// Whether `ip` can be a remote VTEP: a unicast address (not 0/8, 127/8, 224/4 or above).
#[inline]
fn unicast_source(ip: [u8; 4]) -> bool {
    !matches!(ip[0], 0 | 127 | 224..)
}

/// Checks the outer headers of `frame` (untagged Ethernet, IPv4, UDP, VXLAN) as `vtep`
/// receives it and says where its inner frame is.
///
/// Checked, in order: Ethernet type IPv4 ([`VxlanDrop::NotIpv4`]); IPv4 version 4 and IHL at
/// least 5 ([`VxlanDrop::BadIpHeader`]; options are allowed and skipped); the header checksum
/// ([`VxlanDrop::BadChecksum`]); a total length that fits the frame
/// ([`VxlanDrop::Truncated`]); not a fragment ([`VxlanDrop::Fragment`]); destination the
/// local VTEP ([`VxlanDrop::NotLocal`]); protocol UDP ([`VxlanDrop::NotUdp`]); a unicast
/// source ([`VxlanDrop::BadRemote`]); the UDP destination port ([`VxlanDrop::WrongPort`]); a
/// UDP length within the IPv4 payload ([`VxlanDrop::BadUdpLength`]); the VXLAN flags
/// ([`VxlanDrop::BadFlags`]); an inner frame of at least an Ethernet header
/// ([`VxlanDrop::Truncated`]).
///
/// Not checked: the outer destination MAC (the uplink's port layer only takes frames for its
/// own MAC), the outer UDP checksum (0 is "none" over IPv4, RFC 7348 §5; a Linux peer fills
/// it by default but verifying it would mean summing the whole packet, and the inner frame's
/// own checksums cover its payload end to end), the outer TTL and ECN bits.
///
/// Never panics, never allocates.
#[inline]
pub fn decap(frame: &[u8], vtep: &LocalVtep) -> Result<Decapped, VxlanDrop> {
    let Some(eth) = frame.first_chunk::<OUTER_ETH_LEN>() else {
        return Err(VxlanDrop::Truncated);
    };
    if u16::from_be_bytes([eth[12], eth[13]]) != ethertype::IPV4 {
        return Err(VxlanDrop::NotIpv4);
    }
    // Ethernet and the fixed part of the IPv4 header.
    let Some(h) = frame.first_chunk::<34>() else {
        return Err(VxlanDrop::Truncated);
    };
    let vihl = h[14];
    if vihl >> 4 != 4 || vihl & 0x0f < 5 {
        return Err(VxlanDrop::BadIpHeader);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let l4 = OUTER_ETH_LEN + ihl;
    // Without options (every VTEP's header), the sum is over a fixed 20 bytes, which the
    // compiler unrolls.
    let check = if ihl == 20 {
        internet_checksum(&h[OUTER_ETH_LEN..])
    } else {
        match frame.get(OUTER_ETH_LEN..l4) {
            Some(ip_header) => internet_checksum(ip_header),
            None => return Err(VxlanDrop::Truncated),
        }
    };
    if check != [0, 0] {
        return Err(VxlanDrop::BadChecksum);
    }
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    if total < ihl {
        return Err(VxlanDrop::BadIpHeader);
    }
    let ip_end = OUTER_ETH_LEN + total;
    if ip_end > frame.len() {
        return Err(VxlanDrop::Truncated);
    }
    // MF or a fragment offset.
    if u16::from_be_bytes([h[20], h[21]]) & 0x3fff != 0 {
        return Err(VxlanDrop::Fragment);
    }
    if [h[30], h[31], h[32], h[33]] != vtep.ip.octets() {
        return Err(VxlanDrop::NotLocal);
    }
    if h[23] != ipproto::UDP {
        return Err(VxlanDrop::NotUdp);
    }
    let src = [h[26], h[27], h[28], h[29]];
    if !unicast_source(src) {
        return Err(VxlanDrop::BadRemote);
    }
    let udp = match frame
        .get(l4..ip_end)
        .and_then(|p| p.first_chunk::<UDP_HEADER_LEN>())
    {
        Some(u) => u,
        None => return Err(VxlanDrop::Truncated),
    };
    if u16::from_be_bytes([udp[2], udp[3]]) != vtep.port {
        return Err(VxlanDrop::WrongPort);
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER_LEN || l4 + udp_len > ip_end {
        return Err(VxlanDrop::BadUdpLength);
    }
    let outer_len = l4 + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
    let Some(inner_len) = udp_len.checked_sub(UDP_HEADER_LEN + VXLAN_HEADER_LEN) else {
        return Err(VxlanDrop::Truncated);
    };
    let vxlan = VxlanHeader::parse(frame.get(l4 + UDP_HEADER_LEN..outer_len).unwrap_or(&[]))?;
    if inner_len < OUTER_ETH_LEN {
        return Err(VxlanDrop::Truncated);
    }
    Ok(Decapped {
        vni: vxlan.vni,
        remote_ip: Ipv4Addr::from(src),
        remote_mac: Mac([h[6], h[7], h[8], h[9], h[10], h[11]]),
        outer_len,
        inner_len,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::encap::tests::{ENCAP_FRAME, arp_inner};
    use crate::header::OUTER_LEN;
    use proptest::prelude::*;

    pub(crate) const LOCAL: LocalVtep = LocalVtep::new(Ipv4Addr::new(198, 18, 0, 2));

    /// Refreshes the outer IPv4 header checksum of `f` after a test edited the header.
    fn fix_ip_checksum(f: &mut [u8]) {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        f[24..26].fill(0);
        let c = internet_checksum(&f[14..14 + ihl]);
        f[24..26].copy_from_slice(&c);
    }

    #[test]
    fn a_kernel_packet_decaps() {
        let f = ENCAP_FRAME;
        let d = decap(&f, &LOCAL);
        assert_eq!(
            d,
            Ok(Decapped {
                vni: Vni::new(4096).unwrap_or_default(),
                remote_ip: Ipv4Addr::new(198, 18, 0, 1),
                remote_mac: Mac([0x02, 0, 0, 0, 0, 0x01]),
                outer_len: OUTER_LEN,
                inner_len: f.len() - OUTER_LEN,
            })
        );
        let d = d.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&f[d.inner_range()], &arp_inner()[..]);
    }

    /// A packet captured from Linux 6.18's `vxlan` device (`ip link add vx0 type vxlan id
    /// 4096 local 198.18.0.1 remote 198.18.0.2 dstport 4789`, defaults otherwise) on the
    /// receiving end of a veth: the ARP request of `arp_inner`. Unlike xvs, Linux leaves DF
    /// clear, numbers its datagrams (id 0x12af), takes the source port from its ephemeral
    /// range and, with `udpcsum` on by default in this version, fills the UDP checksum (still
    /// the pseudo-header sum 0x8c73 here: veth hands the packet over checksum-partial).
    #[rustfmt::skip]
    const LINUX_FRAME: [u8; 92] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        0x45, 0x00, 0x00, 0x4e, 0x12, 0xaf, 0x00, 0x00, 0x40, 0x11, 0xdb, 0xc8,
        0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12, 0x00, 0x02,
        0x97, 0x93, 0x12, 0xb5, 0x00, 0x3a, 0x8c, 0x73,
        0x08, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0x0a, 0x00, 0x00, 0x01, 0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        0x02, 0x42, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    #[test]
    fn a_linux_vxlan_device_packet_decaps() {
        let d = decap(&LINUX_FRAME, &LOCAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (d.vni.get(), d.remote_ip, d.outer_len),
            (4096, Ipv4Addr::new(198, 18, 0, 1), OUTER_LEN)
        );
        assert_eq!(&LINUX_FRAME[d.inner_range()], &arp_inner()[..]);
        // Only the outer IPv4 id/flags/checksum and the UDP port and checksum differ from
        // what xvs writes for the same inner frame.
        let differ: Vec<usize> = (0..OUTER_LEN)
            .filter(|&i| LINUX_FRAME[i] != ENCAP_FRAME[i])
            .collect();
        assert_eq!(differ, [18, 19, 20, 24, 25, 34, 35, 40, 41]);
    }

    #[test]
    fn each_check_has_its_reason() {
        type Edit = fn(&mut Vec<u8>);
        let cases: &[(&str, Edit, VxlanDrop)] = &[
            (
                "vlan tagged",
                |f| f[12..14].copy_from_slice(&[0x81, 0]),
                VxlanDrop::NotIpv4,
            ),
            (
                "ipv6",
                |f| f[12..14].copy_from_slice(&[0x86, 0xdd]),
                VxlanDrop::NotIpv4,
            ),
            (
                "version 6",
                |f| {
                    f[14] = 0x65;
                    fix_ip_checksum(f)
                },
                VxlanDrop::BadIpHeader,
            ),
            (
                "ihl 4",
                |f| {
                    f[14] = 0x44;
                },
                VxlanDrop::BadIpHeader,
            ),
            ("checksum", |f| f[25] ^= 1, VxlanDrop::BadChecksum),
            (
                "total too long",
                |f| {
                    f[17] += 1;
                    fix_ip_checksum(f)
                },
                VxlanDrop::Truncated,
            ),
            (
                "total below ihl",
                |f| {
                    f[16..18].copy_from_slice(&[0, 19]);
                    fix_ip_checksum(f)
                },
                VxlanDrop::BadIpHeader,
            ),
            (
                "more fragments",
                |f| {
                    f[20] |= 0x20;
                    fix_ip_checksum(f)
                },
                VxlanDrop::Fragment,
            ),
            (
                "offset",
                |f| {
                    f[21] = 1;
                    fix_ip_checksum(f)
                },
                VxlanDrop::Fragment,
            ),
            (
                "other dst",
                |f| {
                    f[33] = 9;
                    fix_ip_checksum(f)
                },
                VxlanDrop::NotLocal,
            ),
            (
                "tcp",
                |f| {
                    f[23] = 6;
                    fix_ip_checksum(f)
                },
                VxlanDrop::NotUdp,
            ),
            (
                "multicast src",
                |f| {
                    f[26] = 239;
                    fix_ip_checksum(f)
                },
                VxlanDrop::BadRemote,
            ),
            (
                "zero src",
                |f| {
                    f[26..30].fill(0);
                    fix_ip_checksum(f)
                },
                VxlanDrop::BadRemote,
            ),
            (
                "loopback src",
                |f| {
                    f[26] = 127;
                    fix_ip_checksum(f)
                },
                VxlanDrop::BadRemote,
            ),
            (
                "port 8472",
                |f| f[36..38].copy_from_slice(&8472u16.to_be_bytes()),
                VxlanDrop::WrongPort,
            ),
            (
                "udp len 7",
                |f| f[38..40].copy_from_slice(&[0, 7]),
                VxlanDrop::BadUdpLength,
            ),
            ("udp len past ip", |f| f[39] += 1, VxlanDrop::BadUdpLength),
            (
                "udp len 15",
                |f| f[38..40].copy_from_slice(&[0, 15]),
                VxlanDrop::Truncated,
            ),
            (
                "inner 13 bytes",
                |f| f[38..40].copy_from_slice(&[0, 16 + 13]),
                VxlanDrop::Truncated,
            ),
            ("no I flag", |f| f[42] = 0, VxlanDrop::BadFlags),
            ("gbp flag", |f| f[42] = 0x88, VxlanDrop::BadFlags),
            ("reserved", |f| f[49] = 1, VxlanDrop::BadFlags),
        ];
        for (what, edit, want) in cases {
            let mut f = ENCAP_FRAME.to_vec();
            edit(&mut f);
            assert_eq!(decap(&f, &LOCAL), Err(*want), "{what}");
        }
        let other_port = LocalVtep {
            port: 8472,
            ..LOCAL
        };
        assert_eq!(decap(&ENCAP_FRAME, &other_port), Err(VxlanDrop::WrongPort));
    }

    #[test]
    fn options_padding_and_a_short_udp_length() {
        // IPv4 options (a 4-byte NOP/EOL word): the inner frame starts 4 bytes later.
        let mut f = ENCAP_FRAME[..34].to_vec();
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&ENCAP_FRAME[34..]);
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ip_checksum(&mut f);
        let d = decap(&f, &LOCAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.outer_len, OUTER_LEN + 4);
        assert_eq!(&f[d.inner_range()], &arp_inner()[..]);
        // Link-layer padding after the IP packet is not part of the inner frame.
        f.extend_from_slice(&[0; 6]);
        assert_eq!(
            decap(&f, &LOCAL).map(|d| d.inner_len),
            Ok(arp_inner().len())
        );
        // A UDP length below the IP payload ends the inner frame (as Linux trims).
        let mut g = ENCAP_FRAME.to_vec();
        let udp_len = u16::from_be_bytes([g[38], g[39]]) - 10;
        g[38..40].copy_from_slice(&udp_len.to_be_bytes());
        assert_eq!(
            decap(&g, &LOCAL).map(|d| d.inner_len),
            Ok(arp_inner().len() - 10)
        );
    }

    #[test]
    fn every_truncation_is_a_reason_not_a_panic() {
        for cut in 0..ENCAP_FRAME.len() {
            let r = decap(&ENCAP_FRAME[..cut], &LOCAL);
            assert_eq!(r, Err(VxlanDrop::Truncated), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(f in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decap(&f, &LOCAL);
        }

        #[test]
        fn corrupted_kernel_packets_never_panic_and_agree_with_etherparse(
            at in 0usize..64, v in any::<u8>(), cut in 0usize..200,
        ) {
            let mut f = ENCAP_FRAME.to_vec();
            f[at] = v;
            f.truncate(cut);
            if let Ok(d) = decap(&f, &LOCAL) {
                // Whatever is accepted is an IPv4/UDP packet etherparse agrees about.
                let p = etherparse::SlicedPacket::from_ethernet(&f);
                prop_assert!(p.is_ok(), "{:?}", p);
                let Ok(p) = p else { unreachable!() };
                let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                    return Err(TestCaseError::fail("not ipv4"));
                };
                prop_assert_eq!(ip.header().source_addr(), d.remote_ip);
                prop_assert_eq!(ip.header().destination_addr(), LOCAL.ip);
                let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else {
                    return Err(TestCaseError::fail("not udp"));
                };
                prop_assert_eq!(u.destination_port(), VXLAN_PORT);
                prop_assert_eq!(u.payload().len(), d.inner_len + 8);
            }
        }
    }
}
