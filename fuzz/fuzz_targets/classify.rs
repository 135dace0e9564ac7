//! Classification of an arbitrary frame: never panics, and every key it produces agrees with
//! what etherparse's whole-packet slicer reads from the same bytes (MACs, ethertype, IP
//! addresses and protocol, ports or ICMP type and code, the cached L3 and L4 offsets). A frame
//! etherparse slices completely (Ethernet II, no tag, IPv4/IPv6/ARP) is not refused either.
#![no_main]

use etherparse::err::Layer;
use etherparse::err::packet::SliceError;
use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use libfuzzer_sys::fuzz_target;
use xvs_stage::classify::{FlowKey, Mac, classify, ethertype, ipproto};

/// What etherparse's slicer says of a frame.
enum Reference {
    /// The key it gives.
    Key(FlowKey),
    /// It refuses the frame, or the frame has a VLAN tag (which classification refuses on an
    /// access port).
    Refused,
    /// It refuses a layer classification does not read past its first 8 bytes (IGMP, which
    /// etherparse 0.21 slices as a transport; an ICMP timestamp message not exactly 20
    /// bytes long): no reference.
    Unknown,
}

fn reference(frame: &[u8], in_port: u32, vlan: u16) -> Reference {
    match SlicedPacket::from_ethernet(frame) {
        Err(SliceError::Len(l))
            if matches!(
                l.layer,
                Layer::Igmp | Layer::Icmpv4Timestamp | Layer::Icmpv4TimestampReply
            ) =>
        {
            Reference::Unknown
        }
        Err(_) => Reference::Refused,
        Ok(p) => reference_key(frame, &p, in_port, vlan).map_or(Reference::Refused, Reference::Key),
    }
}

fn reference_key(frame: &[u8], p: &SlicedPacket<'_>, in_port: u32, vlan: u16) -> Option<FlowKey> {
    if !p.link_exts.is_empty() {
        return None;
    }
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return None;
    };
    let mut k = FlowKey {
        in_port,
        vlan,
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
    let (at, src, dst) = match &p.transport {
        Some(TransportSlice::Udp(u)) => (u.slice().as_ptr(), u.source_port(), u.destination_port()),
        Some(TransportSlice::Tcp(t)) => (t.slice().as_ptr(), t.source_port(), t.destination_port()),
        Some(TransportSlice::Icmpv4(i)) => {
            let s = i.slice();
            (s.as_ptr(), u16::from(s[0]), u16::from(s[1]))
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let s = i.slice();
            (s.as_ptr(), u16::from(s[0]), u16::from(s[1]))
        }
        _ => return Some(k),
    };
    k.l4_offset = (at as usize - base) as u16;
    (k.tp_src, k.tp_dst) = (src, dst);
    Some(k)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the ingress port's VLAN domain (0 = untagged).
    let (vlan, frame) = match data.split_first() {
        Some((&v, rest)) => (u16::from(v & 0x0f), rest),
        None => (0, data),
    };
    let ours = classify(frame, 7, vlan);
    let theirs = reference(frame, 7, vlan);
    match (&ours, &theirs) {
        (_, Reference::Unknown) => {}
        (Ok(k), Reference::Refused) => {
            panic!("classify accepts ({k:?}) a frame etherparse refuses: {frame:02x?}")
        }
        (Ok(k), Reference::Key(r)) => {
            assert_eq!(k, r, "classify disagrees with etherparse: {frame:02x?}");
            // The offsets point at what the key says is there.
            assert_eq!(k.l3_offset, 14);
            let l4 = usize::from(k.l4_offset);
            if l4 != 0 {
                assert!(l4 + 8 <= frame.len(), "L4 header inside the frame");
                let (a, b) = match k.nw_proto {
                    ipproto::TCP | ipproto::UDP => (
                        u16::from_be_bytes([frame[l4], frame[l4 + 1]]),
                        u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]),
                    ),
                    _ => (u16::from(frame[l4]), u16::from(frame[l4 + 1])),
                };
                assert_eq!((a, b), (k.tp_src, k.tp_dst));
            }
            assert_eq!(
                k.ip_src().is_some(),
                matches!(k.dl_type, ethertype::IPV4 | ethertype::IPV6)
            );
            // The trace line is always printable.
            let _ = k.to_string();
        }
        (Err(e), Reference::Key(k)) => {
            panic!("classify refuses ({e:?}) a frame etherparse reads as {k:?}: {frame:02x?}")
        }
        (Err(_), Reference::Refused) => {}
    }
});
