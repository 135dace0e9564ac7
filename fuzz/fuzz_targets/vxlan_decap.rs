//! VXLAN decapsulation (xvs-vxlan `decap`) and its inverse, `PeerTemplate::encap`.
//!
//! Mode 0 (raw): arbitrary bytes as received by the local VTEP 198.18.0.2:4789 never panic,
//! and an accepted packet's inner frame lies inside it, after at least the 50 outer bytes.
//!
//! Mode 1 (round trip): a fuzzer-chosen peer (MACs, addresses, VNI, port, TTL, TOS) and
//! inner frame (at least an Ethernet header), encapsulated, with optional link-layer padding,
//! then decapsulated at the remote end: the same VNI, remote address and MAC, and the same
//! inner frame, byte for byte; a source the decap refuses (not unicast) is its only refusal.
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use xvs_stage::wire::Mac;
use xvs_vxlan::{
    LocalVtep, MAX_INNER_LEN, OUTER_LEN, PeerConfig, PeerTemplate, Vni, VxlanDrop, decap,
};

const LOCAL: LocalVtep = LocalVtep::new(Ipv4Addr::new(198, 18, 0, 2));

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(d) = decap(rest, &LOCAL) {
            assert!(d.outer_len >= OUTER_LEN);
            assert!(d.inner_range().end <= rest.len(), "{d:?}");
            assert!(d.inner_len >= 14);
        }
    } else {
        let _ = round_trip(Unstructured::new(rest));
    }
});

#[derive(Debug, Arbitrary)]
struct Peer {
    local_mac: [u8; 6],
    next_hop_mac: [u8; 6],
    local_ip: [u8; 4],
    remote_ip: [u8; 4],
    vni: u32,
    port: u16,
    ttl: u8,
    tos: u8,
    padding: u8,
}

fn round_trip(mut u: Unstructured<'_>) -> arbitrary::Result<()> {
    let p = Peer::arbitrary(&mut u)?;
    let inner = u.take_rest();
    if inner.len() < 14 || inner.len() > MAX_INNER_LEN {
        return Ok(());
    }
    let vni = Vni::new(p.vni & 0x00ff_ffff).unwrap_or_default();
    let peer = PeerTemplate::new(PeerConfig {
        local_mac: Mac(p.local_mac),
        next_hop_mac: Mac(p.next_hop_mac),
        local_ip: Ipv4Addr::from(p.local_ip),
        remote_ip: Ipv4Addr::from(p.remote_ip),
        vni,
        port: p.port,
        ttl: p.ttl,
        tos: p.tos,
    });
    let mut frame = vec![0u8; OUTER_LEN];
    frame.extend_from_slice(inner);
    peer.encap(&mut frame)
        .expect("an inner frame that fits encapsulates");
    // Ethernet padding after the datagram is not part of the inner frame.
    frame.extend(std::iter::repeat_n(0xee, usize::from(p.padding % 16)));
    let remote = LocalVtep {
        ip: Ipv4Addr::from(p.remote_ip),
        port: p.port,
    };
    match decap(&frame, &remote) {
        Ok(d) => {
            assert_eq!(d.vni, vni);
            assert_eq!(d.remote_ip, Ipv4Addr::from(p.local_ip));
            assert_eq!(d.remote_mac, Mac(p.local_mac));
            assert_eq!(d.outer_len, OUTER_LEN);
            assert!(
                &frame[d.inner_range()] == inner,
                "the inner frame comes back"
            );
        }
        Err(VxlanDrop::BadRemote) => {
            assert!(matches!(p.local_ip[0], 0 | 127 | 224..), "{p:?}");
        }
        Err(e) => panic!("encap then decap refused ({e:?}): {p:?}"),
    }
    Ok(())
}
