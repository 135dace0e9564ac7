//! Classification: each received frame is parsed once (etherparse, strict slicing of untrusted
//! bytes) into a compact [`FlowKey`] with cached header offsets; later stages read the key and
//! the offsets and never parse again. Malformed input becomes a [`ClassifyDrop`], never a panic.
//!
//! Pure functions; safe to call from any thread.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::err::{Layer, LenError, ipv4, ipv6};
use etherparse::{ArpPacketSlice, Ipv4Slice, Ipv6Slice, LenSource, TcpSlice, UdpSlice};

use crate::drop::ReasonSet;
use crate::stage::{Batch, Stage, StageContext, Verdict};
pub use crate::wire::{ETH_HEADER_LEN, Mac, PortId, ethertype, ipproto};

crate::drop_reasons! {
    /// Why classification refuses a frame.
    pub enum ClassifyDrop in "classify" {
        Runt => "runt", "frame shorter than an Ethernet header";
        TruncatedHeader => "truncated_header", "a header runs past the end of the frame";
        BadIpv4Header => "bad_ipv4_header", "IPv4 header with a bad version or IHL";
        BadIpLength => "bad_ip_length", "IP total/payload length disagrees with the frame";
        BadL4Length => "bad_l4_length", "UDP/TCP length disagrees with the IP payload";
        UnknownEthertype => "unknown_ethertype", "ethertype the switch does not forward";
        StackedVlan => "stacked_vlan", "more than one VLAN tag (QinQ is not supported)";
        TaggedOnAccessPort => "vlan_tagged_on_access_port", "802.1Q-tagged frame received on an access port";
    }
}

/// What classification learned about a frame: the fields every later stage reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowKey {
    /// Port the frame arrived on.
    pub in_port: PortId,
    /// VLAN domain the frame belongs to (the ingress port's access VLAN; 0 = untagged).
    pub vlan: u16,
    /// Destination MAC.
    pub dl_dst: Mac,
    /// Source MAC.
    pub dl_src: Mac,
    /// Ethertype (after any VLAN tag).
    pub dl_type: u16,
    /// Offset of the L3 header (0 if none).
    pub l3_offset: u16,
    /// Offset of the L4 header (0 if none).
    pub l4_offset: u16,
    /// IP protocol (0 if not IP).
    pub nw_proto: u8,
    /// IP source (IPv4 as v4-mapped v6).
    pub nw_src: [u8; 16],
    /// IP destination.
    pub nw_dst: [u8; 16],
    /// L4 source port (ICMP: type).
    pub tp_src: u16,
    /// L4 destination port (ICMP: code).
    pub tp_dst: u16,
}

impl FlowKey {
    /// The IP source, if the frame is IP.
    pub fn ip_src(&self) -> Option<IpAddr> {
        self.ip(self.nw_src)
    }

    /// The IP destination, if the frame is IP.
    pub fn ip_dst(&self) -> Option<IpAddr> {
        self.ip(self.nw_dst)
    }

    fn ip(&self, raw: [u8; 16]) -> Option<IpAddr> {
        match self.dl_type {
            ethertype::IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
                raw[12], raw[13], raw[14], raw[15],
            ))),
            ethertype::IPV6 => Some(IpAddr::V6(Ipv6Addr::from(raw))),
            _ => None,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in_port={},vlan={},dl_src={},dl_dst={},dl_type=0x{:04x}",
            self.in_port, self.vlan, self.dl_src, self.dl_dst, self.dl_type
        )?;
        if let (Some(s), Some(d)) = (self.ip_src(), self.ip_dst()) {
            write!(f, ",nw_proto={},nw_src={s},nw_dst={d}", self.nw_proto)?;
            if matches!(self.nw_proto, ipproto::TCP | ipproto::UDP) {
                write!(f, ",tp_src={},tp_dst={}", self.tp_src, self.tp_dst)?;
            }
        }
        Ok(())
    }
}

use ethertype::VLAN_9100;

/// Parses `frame`, received on `in_port` whose access VLAN is `port_vlan` (0 = untagged
/// domain), into a key. Frames arrive untagged; a tagged one is dropped.
///
/// Each header is sliced by etherparse's own header slices (`Ipv4Slice`, `Ipv6Slice`,
/// `UdpSlice`, ...), which check every length once; going layer by layer, rather than through
/// `SlicedPacket`, skips building the generic packet description the switch never reads.
pub fn classify(frame: &[u8], in_port: PortId, port_vlan: u16) -> Result<FlowKey, ClassifyDrop> {
    let mut key = FlowKey {
        in_port,
        vlan: port_vlan,
        ..FlowKey::default()
    };
    classify_into(frame, &mut key)?;
    Ok(key)
}

/// [`classify`] writing the key in place: `key.in_port` and `key.vlan` say where the frame
/// came from, every other field is overwritten (a batch's key array is filled without
/// copying keys around). On error the key is left partly written.
#[inline]
pub fn classify_into(frame: &[u8], key: &mut FlowKey) -> Result<(), ClassifyDrop> {
    let Some((eth, l3)) = frame.split_first_chunk::<ETH_HEADER_LEN>() else {
        return Err(ClassifyDrop::Runt);
    };
    *key = FlowKey {
        in_port: key.in_port,
        vlan: key.vlan,
        ..FlowKey::default()
    };
    let [d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, t0, t1] = *eth;
    key.dl_dst = Mac([d0, d1, d2, d3, d4, d5]);
    key.dl_src = Mac([s0, s1, s2, s3, s4, s5]);
    key.dl_type = u16::from_be_bytes([t0, t1]);
    let l3_offset = ETH_HEADER_LEN as u16;
    let payload = match key.dl_type {
        ethertype::VLAN | ethertype::QINQ | VLAN_9100 => {
            // A tag's last two bytes are the next ethertype: another tag is QinQ.
            let Some([_, _, n0, n1]) = l3.first_chunk::<4>().copied() else {
                return Err(ClassifyDrop::TruncatedHeader);
            };
            return Err(match u16::from_be_bytes([n0, n1]) {
                ethertype::VLAN | ethertype::QINQ | VLAN_9100 => ClassifyDrop::StackedVlan,
                _ => ClassifyDrop::TaggedOnAccessPort,
            });
        }
        ethertype::IPV4 => {
            let ip = Ipv4Slice::from_slice(l3).map_err(|e| match e {
                ipv4::SliceError::Len(l) => ip_len_reason(&l),
                ipv4::SliceError::Header(_) => ClassifyDrop::BadIpv4Header,
                ipv4::SliceError::Exts(_) => ClassifyDrop::TruncatedHeader,
            })?;
            let h = ip.header();
            key.l3_offset = l3_offset;
            key.nw_proto = ip.payload().ip_number.0;
            key.nw_src[10] = 0xff;
            key.nw_src[11] = 0xff;
            key.nw_src[12..].copy_from_slice(&h.source());
            key.nw_dst[10] = 0xff;
            key.nw_dst[11] = 0xff;
            key.nw_dst[12..].copy_from_slice(&h.destination());
            let p = ip.payload();
            (!p.fragmented).then_some(p.payload)
        }
        ethertype::IPV6 => {
            let ip = Ipv6Slice::from_slice(l3).map_err(|e| match e {
                ipv6::SliceError::Len(l) => ip_len_reason(&l),
                ipv6::SliceError::Header(_) | ipv6::SliceError::Exts(_) => {
                    ClassifyDrop::TruncatedHeader
                }
            })?;
            let h = ip.header();
            key.l3_offset = l3_offset;
            key.nw_proto = ip.payload().ip_number.0;
            key.nw_src = h.source();
            key.nw_dst = h.destination();
            let p = ip.payload();
            (!p.fragmented).then_some(p.payload)
        }
        ethertype::ARP => {
            ArpPacketSlice::from_slice(l3).map_err(|_| ClassifyDrop::TruncatedHeader)?;
            key.l3_offset = l3_offset;
            None
        }
        _ => return Err(ClassifyDrop::UnknownEthertype),
    };
    let Some(l4) = payload else {
        return Ok(());
    };
    // The payload is a sub-slice of `frame`, so its offset is a pointer difference.
    let l4_offset = (l4.as_ptr() as usize - frame.as_ptr() as usize) as u16;
    match key.nw_proto {
        ipproto::UDP => {
            let udp = UdpSlice::from_slice(l4).map_err(|_| ClassifyDrop::BadL4Length)?;
            key.tp_src = udp.source_port();
            key.tp_dst = udp.destination_port();
        }
        ipproto::TCP => {
            let tcp = TcpSlice::from_slice(l4).map_err(|_| ClassifyDrop::BadL4Length)?;
            key.tp_src = tcp.source_port();
            key.tp_dst = tcp.destination_port();
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            // Type and code; an ICMP header is 8 bytes.
            let Some([ty, code, ..]) = l4.first_chunk::<8>().copied() else {
                return Err(ClassifyDrop::TruncatedHeader);
            };
            key.tp_src = u16::from(ty);
            key.tp_dst = u16::from(code);
        }
        _ => return Ok(()),
    }
    key.l4_offset = l4_offset;
    Ok(())
}

/// The reason for an IP layer's length error: a length field that disagrees with the frame, or
/// a header cut short.
fn ip_len_reason(e: &LenError) -> ClassifyDrop {
    match (e.len_source, e.layer) {
        (LenSource::Ipv4HeaderTotalLen | LenSource::Ipv6HeaderPayloadLen, _)
        | (_, Layer::Ipv4Packet | Layer::Ipv6Packet) => ClassifyDrop::BadIpLength,
        _ => ClassifyDrop::TruncatedHeader,
    }
}

/// The first stage of every chain: classifies each frame of the batch once. The engine seeds
/// each key with the frame's ingress port and VLAN domain ([`Batch::begin`]); a frame that
/// does not parse is dropped with its reason.
///
/// [`Batch::begin`]: crate::batch::Batch::begin
#[derive(Debug, Default, Clone, Copy)]
pub struct ClassifyStage;

impl ClassifyStage {
    /// Classifies every frame of `batch` still waiting for a verdict.
    #[inline]
    pub fn classify_batch(ctx: &mut StageContext<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() {
                continue;
            }
            let key = &mut batch.keys[i];
            match classify_into(ctx.pool.data(&batch.frames[i]), key) {
                Ok(()) => {
                    ctx.record("classify", || key.to_string());
                }
                Err(reason) => {
                    ctx.record("classify", || {
                        format!("drop: {}", reason.reason().describe())
                    });
                    batch.verdicts[i] = Verdict::Drop(reason.into());
                }
            }
        }
    }
}

impl Stage for ClassifyStage {
    fn name(&self) -> &'static str {
        "classify"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(ClassifyDrop::set())
    }

    #[inline]
    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        Self::classify_batch(ctx, batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 02:00:00:00:00:02 <- 02:00:00:00:00:01, IPv4 10.0.0.1 -> 10.0.0.2, UDP 1000 -> 2000, 4 bytes.
    pub(crate) const UDP_FRAME: [u8; 46] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, // ethernet
        0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // ipv4
        0x03, 0xe8, 0x07, 0xd0, 0, 12, 0, 0, // udp
        1, 2, 3, 4,
    ];

    #[test]
    fn udp_frame_is_classified_with_offsets() {
        let k = classify(&UDP_FRAME, 3, 0).unwrap();
        assert_eq!(k.in_port, 3);
        assert_eq!(k.dl_src.to_string(), "02:00:00:00:00:01");
        assert_eq!(k.dl_type, ethertype::IPV4);
        assert_eq!((k.l3_offset, k.l4_offset), (14, 34));
        assert_eq!(k.nw_proto, ipproto::UDP);
        assert_eq!(k.ip_dst(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!((k.tp_src, k.tp_dst), (1000, 2000));
    }

    #[test]
    fn malformed_frames_have_reasons() {
        assert_eq!(classify(&UDP_FRAME[..10], 0, 0), Err(ClassifyDrop::Runt));
        assert_eq!(
            classify(&UDP_FRAME[..20], 0, 0),
            Err(ClassifyDrop::TruncatedHeader)
        );
        let mut bad_ihl = UDP_FRAME;
        bad_ihl[14] = 0x43;
        assert_eq!(classify(&bad_ihl, 0, 0), Err(ClassifyDrop::BadIpv4Header));
        let mut long_ip = UDP_FRAME;
        long_ip[17] = 200;
        assert_eq!(classify(&long_ip, 0, 0), Err(ClassifyDrop::BadIpLength));
        let mut bad_udp = UDP_FRAME;
        bad_udp[39] = 200;
        assert_eq!(classify(&bad_udp, 0, 0), Err(ClassifyDrop::BadL4Length));
        let mut unknown = UDP_FRAME;
        unknown[12..14].copy_from_slice(&[0x88, 0xb5]);
        assert_eq!(
            classify(&unknown, 0, 0),
            Err(ClassifyDrop::UnknownEthertype)
        );
    }

    #[test]
    fn vlan_tags_are_refused() {
        let mut one = Vec::from(&UDP_FRAME[..12]);
        one.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        one.extend_from_slice(&UDP_FRAME[12..]);
        assert_eq!(classify(&one, 0, 0), Err(ClassifyDrop::TaggedOnAccessPort));
        let mut two = Vec::from(&UDP_FRAME[..12]);
        two.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x0b]);
        two.extend_from_slice(&UDP_FRAME[12..]);
        assert_eq!(classify(&two, 0, 0), Err(ClassifyDrop::StackedVlan));
    }

    #[test]
    fn arp_and_mac_parse() {
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        let k = classify(&arp, 1, 7).unwrap();
        assert_eq!((k.dl_type, k.vlan, k.l3_offset), (ethertype::ARP, 7, 14));
        assert!(k.dl_dst.is_multicast());
        assert_eq!("02:00:00:00:00:01".parse::<Mac>().unwrap(), k.dl_src);
        assert!("02:00".parse::<Mac>().is_err());
        assert_eq!(Mac::from_u64(k.dl_src.to_u64()), k.dl_src);
    }

    /// The key etherparse's whole-packet slicer gives: the reference the layer-by-layer
    /// classifier must agree with on every frame both accept.
    fn reference(frame: &[u8], in_port: PortId) -> Option<FlowKey> {
        use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        if !p.link_exts.is_empty() {
            return None;
        }
        let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
            return None;
        };
        let mut k = FlowKey {
            in_port,
            dl_dst: Mac(eth.destination()),
            dl_src: Mac(eth.source()),
            dl_type: eth.ether_type().0,
            l3_offset: 14,
            ..FlowKey::default()
        };
        match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                k.nw_proto = ip.payload().ip_number.0;
                k.nw_src[10..12].fill(0xff);
                k.nw_src[12..].copy_from_slice(&ip.header().source());
                k.nw_dst[10..12].fill(0xff);
                k.nw_dst[12..].copy_from_slice(&ip.header().destination());
            }
            Some(NetSlice::Ipv6(ip)) => {
                k.nw_proto = ip.payload().ip_number.0;
                k.nw_src = ip.header().source();
                k.nw_dst = ip.header().destination();
            }
            Some(NetSlice::Arp(_)) => {}
            None => return None,
        }
        let base = frame.as_ptr() as usize;
        let (off, src, dst) = match &p.transport {
            Some(TransportSlice::Udp(u)) => {
                (u.slice().as_ptr(), u.source_port(), u.destination_port())
            }
            Some(TransportSlice::Tcp(t)) => {
                (t.slice().as_ptr(), t.source_port(), t.destination_port())
            }
            Some(TransportSlice::Icmpv4(i)) => (
                i.slice().as_ptr(),
                u16::from(i.slice()[0]),
                u16::from(i.slice()[1]),
            ),
            Some(TransportSlice::Icmpv6(i)) => (
                i.slice().as_ptr(),
                u16::from(i.slice()[0]),
                u16::from(i.slice()[1]),
            ),
            _ => return Some(k),
        };
        k.l4_offset = (off as usize - base) as u16;
        (k.tp_src, k.tp_dst) = (src, dst);
        Some(k)
    }

    /// Frames of every kind the switch forwards, built by etherparse.
    fn sample_frames() -> Vec<Vec<u8>> {
        use etherparse::PacketBuilder;
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = vec![UDP_FRAME.to_vec()];
        let mut f = Vec::new();
        PacketBuilder::ethernet2(a, b)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1, 512)
            .syn()
            .write(&mut f, &[1, 2, 3])
            .unwrap();
        out.push(f);
        let mut f = Vec::new();
        PacketBuilder::ethernet2(a, b)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut f, &[0; 8])
            .unwrap();
        out.push(f);
        let (s6, d6) = ([0xfd; 16], [0xfe; 16]);
        let mut f = Vec::new();
        PacketBuilder::ethernet2(a, b)
            .ipv6(s6, d6, 64)
            .udp(53, 5353)
            .write(&mut f, &[9; 12])
            .unwrap();
        out.push(f);
        let mut f = Vec::new();
        PacketBuilder::ethernet2(a, b)
            .ipv6(s6, d6, 64)
            .icmpv6_echo_request(1, 2)
            .write(&mut f, &[0; 4])
            .unwrap();
        out.push(f);
        out
    }

    #[test]
    fn agrees_with_etherparse_sliced_packet_on_every_kind() {
        for f in sample_frames() {
            assert_eq!(classify(&f, 4, 0).ok(), reference(&f, 4), "{f:02x?}");
            assert!(classify(&f, 4, 0).is_ok());
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_etherparse_on_mutated_frames(
            which in 0usize..5,
            pos in 0usize..80,
            val in proptest::num::u8::ANY,
            cut in 0usize..100,
        ) {
            let mut f = sample_frames().swap_remove(which);
            if let Some(b) = f.get_mut(pos) {
                *b = val;
            }
            f.truncate(cut.max(1));
            let ours = classify(&f, 4, 0).ok();
            // Tagged frames are refused on access ports, whatever follows the tag.
            if ours.is_some() || reference(&f, 4).is_some_and(|k| k.dl_type != ethertype::VLAN) {
                proptest::prop_assert_eq!(ours, reference(&f, 4));
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = classify(&bytes, 0, 0);
        }

        #[test]
        fn never_panics_on_mutated_udp(pos in 0usize..46, val in proptest::num::u8::ANY, cut in 0usize..47) {
            let mut f = UDP_FRAME;
            f[pos] = val;
            let _ = classify(&f[..cut.min(46)], 0, 0);
        }
    }
}
