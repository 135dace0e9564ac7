//! Encapsulation: a [`PeerTemplate`] holds the 50 outer header bytes to one remote VTEP,
//! built once when the peer (or its next hop's MAC) changes; per packet only the lengths, the
//! IPv4 checksum (folded in incrementally from a sum precomputed with length 0) and the UDP
//! source port are written, into the frame's headroom in front of the inner frame.
//!
//! A template is a plain value: built by the control plane, read by any worker.

use std::net::Ipv4Addr;

use xvs_stage::checksum::{internet_checksum, update};
use xvs_stage::wire::{Mac, ethertype, ipproto};

use crate::drop::VxlanDrop;
use crate::flow_hash::source_port;
use crate::header::{
    OUTER_ETH_LEN, OUTER_LEN, UDP_HEADER_LEN, VXLAN_HEADER_LEN, VXLAN_PORT, Vni, VxlanHeader,
};

/// TTL of outer packets unless configured (Linux's default hop limit).
pub const DEFAULT_TTL: u8 = 64;
/// Largest inner frame an outer IPv4 packet can carry (total length is 16 bits).
pub const MAX_INNER_LEN: usize = u16::MAX as usize - (OUTER_LEN - OUTER_ETH_LEN);

/// Offsets in the outer header.
const IP: usize = OUTER_ETH_LEN;
const IP_TOTAL_LEN: usize = IP + 2;
const IP_CHECK: usize = IP + 10;
const UDP: usize = IP + 20;
const UDP_SRC: usize = UDP;
const UDP_LEN: usize = UDP + 4;
const VXLAN: usize = UDP + UDP_HEADER_LEN;

/// Everything the outer headers to one remote VTEP are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerConfig {
    /// The uplink's MAC (outer source).
    pub local_mac: Mac,
    /// The MAC of the remote VTEP, or of the router towards it (resolved as routing does).
    pub next_hop_mac: Mac,
    /// The local VTEP address (outer source).
    pub local_ip: Ipv4Addr,
    /// The remote VTEP address (outer destination).
    pub remote_ip: Ipv4Addr,
    /// The network.
    pub vni: Vni,
    /// UDP destination port (the remote's VTEP port).
    pub port: u16,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer TOS (DSCP and ECN bits) byte.
    pub tos: u8,
}

impl PeerConfig {
    /// A peer on the standard port with TTL [`DEFAULT_TTL`] and TOS 0.
    pub fn new(
        local_mac: Mac,
        next_hop_mac: Mac,
        local_ip: Ipv4Addr,
        remote_ip: Ipv4Addr,
        vni: Vni,
    ) -> PeerConfig {
        PeerConfig {
            local_mac,
            next_hop_mac,
            local_ip,
            remote_ip,
            vni,
            port: VXLAN_PORT,
            ttl: DEFAULT_TTL,
            tos: 0,
        }
    }
}

/// The outer headers to one remote VTEP, ready to be stamped in front of inner frames.
///
/// IPv4 with DF set and identification 0 (as Linux sends DF datagrams from no connected
/// socket), UDP checksum 0 (RFC 7348 §5 allows it over IPv4; Linux sends and accepts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTemplate {
    config: PeerConfig,
    /// The outer headers with total length, UDP length, source port 0 and the IPv4 checksum
    /// computed for a total length of 0.
    header: [u8; OUTER_LEN],
}

impl PeerTemplate {
    /// Builds the template (the one full checksum; every packet after it is incremental).
    pub fn new(config: PeerConfig) -> PeerTemplate {
        let mut h = [0u8; OUTER_LEN];
        h[0..6].copy_from_slice(&config.next_hop_mac.0);
        h[6..12].copy_from_slice(&config.local_mac.0);
        h[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        h[IP] = 0x45;
        h[IP + 1] = config.tos;
        // Total length 2..4 and identification 4..6 stay 0; DF.
        h[IP + 6] = 0x40;
        h[IP + 8] = config.ttl;
        h[IP + 9] = ipproto::UDP;
        h[IP + 12..IP + 16].copy_from_slice(&config.local_ip.octets());
        h[IP + 16..IP + 20].copy_from_slice(&config.remote_ip.octets());
        let check = internet_checksum(&h[IP..UDP]);
        h[IP_CHECK..IP_CHECK + 2].copy_from_slice(&check);
        h[UDP + 2..UDP + 4].copy_from_slice(&config.port.to_be_bytes());
        let mut vxlan = [0u8; VXLAN_HEADER_LEN];
        VxlanHeader { vni: config.vni }.emit(&mut vxlan);
        h[VXLAN..].copy_from_slice(&vxlan);
        PeerTemplate { config, header: h }
    }

    /// What the template was built from.
    #[inline]
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The remote VTEP.
    #[inline]
    pub fn remote_ip(&self) -> Ipv4Addr {
        self.config.remote_ip
    }

    /// The template's bytes (lengths and source port 0, checksum for length 0).
    #[inline]
    pub fn bytes(&self) -> &[u8; OUTER_LEN] {
        &self.header
    }

    /// Rebuilds the template for a new next-hop MAC (the neighbour entry changed).
    pub fn set_next_hop(&mut self, mac: Mac) {
        *self = PeerTemplate::new(PeerConfig {
            next_hop_mac: mac,
            ..self.config
        });
    }

    /// Writes the outer headers for an inner frame of `inner_len` bytes into `out` (the 50
    /// bytes just in front of it) with UDP source port `src_port`: the template, then IPv4
    /// total length and checksum, UDP source port and length. An inner frame longer than
    /// [`MAX_INNER_LEN`] does not fit an IPv4 packet: [`VxlanDrop::MtuExceeded`], nothing
    /// written. The overlay MTU is the caller's check (see [`crate::mtu`]).
    #[inline]
    pub fn write(
        &self,
        out: &mut [u8; OUTER_LEN],
        inner_len: usize,
        src_port: u16,
    ) -> Result<(), VxlanDrop> {
        if inner_len > MAX_INNER_LEN {
            return Err(VxlanDrop::MtuExceeded);
        }
        *out = self.header;
        let total = ((OUTER_LEN - OUTER_ETH_LEN + inner_len) as u16).to_be_bytes();
        let udp_len = ((UDP_HEADER_LEN + VXLAN_HEADER_LEN + inner_len) as u16).to_be_bytes();
        let check = update(
            [self.header[IP_CHECK], self.header[IP_CHECK + 1]],
            &[0, 0],
            &total,
        );
        [out[IP_TOTAL_LEN], out[IP_TOTAL_LEN + 1]] = total;
        [out[IP_CHECK], out[IP_CHECK + 1]] = check;
        [out[UDP_SRC], out[UDP_SRC + 1]] = src_port.to_be_bytes();
        [out[UDP_LEN], out[UDP_LEN + 1]] = udp_len;
        Ok(())
    }

    /// Encapsulates in place: `frame` is [`OUTER_LEN`] bytes of room (what
    /// `FramePool::push_header(frame, OUTER_LEN)` opened) followed by the inner frame; the
    /// outer headers go into the room with the source port from the inner flow's hash
    /// ([`source_port`]). Shorter than the room: [`VxlanDrop::Truncated`].
    #[inline]
    pub fn encap(&self, frame: &mut [u8]) -> Result<(), VxlanDrop> {
        let Some((outer, inner)) = frame.split_first_chunk_mut::<OUTER_LEN>() else {
            return Err(VxlanDrop::Truncated);
        };
        let port = source_port(inner);
        self.write(outer, inner.len(), port)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decap::{LocalVtep, decap};
    use crate::flow_hash::{SOURCE_PORT_MAX, SOURCE_PORT_MIN};
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    pub(crate) const VTEP1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    pub(crate) const VTEP2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    pub(crate) const MAC1: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    pub(crate) const MAC2: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);

    /// The inner frame of [`ENCAP_FRAME`]: an ARP request for 10.0.0.2 from 10.0.0.1.
    pub(crate) fn arp_inner() -> [u8; 42] {
        [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x02, 0x42, 0x0a, 0x00, 0x00, 0x01, // 02:42:0a:00:00:01
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4 request
            0x02, 0x42, 0x0a, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sender
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // target
        ]
    }

    /// What encapsulation must write for [`arp_inner`]: VXLAN VNI 4096 from 198.18.0.1
    /// (02:00:00:00:00:01) to 198.18.0.2 (02:00:00:00:00:02), UDP 50000 -> 4789, checksum 0,
    /// DF, id 0, TTL 64, worked out by hand (IPv4 checksum 0xae77). Linux's own packet for the
    /// same inner frame is `decap::tests::LINUX_FRAME`.
    #[rustfmt::skip]
    pub(crate) const ENCAP_FRAME: [u8; 92] = [
        // Ethernet: next hop, local, IPv4
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x00,
        // IPv4: 45, tos 0, total 78, id 0, DF, TTL 64, UDP, checksum 0xae77
        0x45, 0x00, 0x00, 0x4e,
        0x00, 0x00, 0x40, 0x00,
        0x40, 0x11, 0xae, 0x77,
        198, 18, 0, 1,
        198, 18, 0, 2,
        // UDP: 50000 -> 4789, length 58, checksum 0
        0xc3, 0x50, 0x12, 0xb5,
        0x00, 0x3a, 0x00, 0x00,
        // VXLAN: I, VNI 0x001000
        0x08, 0x00, 0x00, 0x00,
        0x00, 0x10, 0x00, 0x00,
        // inner ARP request
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x02, 0x42, 0x0a, 0x00, 0x00, 0x01,
        0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        0x02, 0x42, 0x0a, 0x00, 0x00, 0x01, 10, 0, 0, 1,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2,
    ];

    pub(crate) fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap_or_default()
    }

    pub(crate) fn template() -> PeerTemplate {
        PeerTemplate::new(PeerConfig::new(MAC1, MAC2, VTEP1, VTEP2, vni(4096)))
    }

    #[test]
    fn header_bytes_match_the_literal_frame() {
        let inner = arp_inner();
        let mut out = [0u8; OUTER_LEN];
        assert_eq!(template().write(&mut out, inner.len(), 50000), Ok(()));
        assert_eq!(out[..], ENCAP_FRAME[..OUTER_LEN]);
        assert_eq!(internet_checksum(&out[14..34]), [0, 0]);
        assert_eq!(&ENCAP_FRAME[OUTER_LEN..], &inner[..]);
    }

    #[test]
    fn etherparse_reads_the_fields_written() {
        let mut f = vec![0u8; OUTER_LEN];
        f.extend_from_slice(&arp_inner());
        let mut cfg = PeerConfig::new(MAC1, MAC2, VTEP1, VTEP2, vni(0x00ab_cdef));
        cfg.ttl = 17;
        cfg.tos = 0xb8;
        cfg.port = 8472;
        assert_eq!(PeerTemplate::new(cfg).encap(&mut f), Ok(()));
        let p = SlicedPacket::from_ethernet(&f).unwrap_or_else(|e| panic!("{e}"));
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("no eth")
        };
        assert_eq!((eth.source(), eth.destination()), (MAC1.0, MAC2.0));
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert!(h.dont_fragment && !h.more_fragments);
        assert_eq!(
            (
                h.identification,
                h.time_to_live,
                h.dscp.value(),
                h.ecn.value()
            ),
            (0, 17, 0x2e, 0)
        );
        assert_eq!((h.source, h.destination), (VTEP1.octets(), VTEP2.octets()));
        assert_eq!(usize::from(h.total_len), f.len() - 14);
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("not udp")
        };
        assert_eq!((u.destination_port(), u.checksum()), (8472, 0));
        assert!((SOURCE_PORT_MIN..=SOURCE_PORT_MAX).contains(&u.source_port()));
        assert_eq!(u.source_port(), source_port(&arp_inner()));
        assert_eq!(&u.payload()[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(&u.payload()[8..], &arp_inner()[..]);
    }

    #[test]
    fn too_large_or_no_room() {
        let t = template();
        let mut out = [7u8; OUTER_LEN];
        assert_eq!(
            t.write(&mut out, MAX_INNER_LEN + 1, 1),
            Err(VxlanDrop::MtuExceeded)
        );
        assert_eq!(out, [7u8; OUTER_LEN], "nothing written");
        assert_eq!(t.write(&mut out, MAX_INNER_LEN, 1), Ok(()));
        assert_eq!([out[16], out[17]], [0xff, 0xff]);
        assert_eq!(internet_checksum(&out[14..34]), [0, 0]);
        assert_eq!(
            t.encap(&mut [0u8; OUTER_LEN - 1]),
            Err(VxlanDrop::Truncated)
        );
    }

    #[test]
    fn a_new_next_hop_rebuilds_the_template() {
        let mut t = template();
        t.set_next_hop(Mac([0x02, 9, 9, 9, 9, 9]));
        assert_eq!(&t.bytes()[..6], &[0x02, 9, 9, 9, 9, 9]);
        assert_eq!(t.bytes()[6..], template().bytes()[6..]);
        assert_eq!(
            internet_checksum(&t.bytes()[14..34]),
            [0, 0],
            "checksum for length 0"
        );
    }

    /// A unicast address (what a VTEP can have).
    fn unicast() -> impl Strategy<Value = Ipv4Addr> {
        (1u8..224, any::<[u8; 3]>())
            .prop_map(|(a, r)| Ipv4Addr::new(if a == 127 { 10 } else { a }, r[0], r[1], r[2]))
    }

    fn any_config() -> impl Strategy<Value = PeerConfig> {
        (
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            unicast(),
            unicast(),
            0u32..=0x00ff_ffff,
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
        )
            .prop_map(
                |(lm, nm, local_ip, remote_ip, v, port, ttl, tos)| PeerConfig {
                    local_mac: Mac(lm),
                    next_hop_mac: Mac(nm),
                    local_ip,
                    remote_ip,
                    vni: vni(v),
                    port,
                    ttl,
                    tos,
                },
            )
    }

    proptest! {
        #[test]
        fn encap_then_decap_gives_everything_back(
            cfg in any_config(),
            inner in proptest::collection::vec(any::<u8>(), 14..1600),
        ) {
            let mut f = vec![0u8; OUTER_LEN];
            f.extend_from_slice(&inner);
            let t = PeerTemplate::new(cfg);
            prop_assert_eq!(t.encap(&mut f), Ok(()));
            prop_assert_eq!(internet_checksum(&f[14..34]), [0, 0], "checksum by full recomputation");
            // The receiving end: the remote VTEP decaps what this one sent.
            let remote = LocalVtep { ip: cfg.remote_ip, port: cfg.port };
            let d = decap(&f, &remote);
            prop_assert!(d.is_ok(), "{:?}", d);
            let Ok(d) = d else { unreachable!() };
            prop_assert_eq!(d.vni, cfg.vni);
            prop_assert_eq!(d.remote_ip, cfg.local_ip);
            prop_assert_eq!(d.remote_mac, cfg.local_mac);
            prop_assert_eq!(d.outer_len, OUTER_LEN);
            prop_assert_eq!(&f[d.inner_range()], &inner[..], "inner bytes untouched");
        }

        #[test]
        fn write_checksum_verifies_for_every_length(
            cfg in any_config(), len in 0usize..=MAX_INNER_LEN, port in any::<u16>(),
        ) {
            let mut out = [0u8; OUTER_LEN];
            prop_assert_eq!(PeerTemplate::new(cfg).write(&mut out, len, port), Ok(()));
            prop_assert_eq!(internet_checksum(&out[14..34]), [0, 0]);
            prop_assert_eq!(usize::from(u16::from_be_bytes([out[16], out[17]])), len + 36);
            prop_assert_eq!(usize::from(u16::from_be_bytes([out[38], out[39]])), len + 16);
            prop_assert_eq!(u16::from_be_bytes([out[34], out[35]]), port);
        }
    }
}
