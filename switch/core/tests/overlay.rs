//! An overlay network across two hosts, on memory ports: each host is an engine with a
//! network bridge (classify, L2, route, overlay) and an uplink bridge (classify, decap,
//! router, L2); the test carries frames between the two uplinks. A container's broadcast is
//! copied to every peer and reaches the other host's container unchanged; the unicast answer
//! goes back to the one VTEP its destination was learnt behind; a TCP super-frame from a TAP
//! is cut to the overlay's size and each segment encapsulated; an unknown VNI, a stranger
//! VTEP and bad VXLAN flags are counted drops. On each host every frame is accounted for:
//! received + made + released = sent + dropped + held.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::PacketBuilder;
use xvs_stage::offload::Offload;
use xvs_switch::chain::Chain;
use xvs_switch::classify::{ClassifyStage, Mac};
use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::engine::Engine;
use xvs_switch::frame::FramePool;
use xvs_switch::l2::L2Stage;
use xvs_switch::neigh::Neighbours;
use xvs_switch::port::mem::{MemPort, MemPortHandle};
use xvs_switch::route::{RouteConfig, Subnet, UplinkRoute};
use xvs_switch::router::{RouterConfig, RouterStage};
use xvs_vxlan::{
    DecapConfig, DecapStage, LocalVtep, OUTER_LEN, OverlayConfig, OverlayNet, OverlayStage, Tunnel,
    Vni, VxlanDrop,
};

const NET: u32 = 1;
const UPLINK: u32 = 2;
const CONTAINER_PORT: u32 = 10;
const UPLINK_PORT: u32 = 20;
const VNI: u32 = 5000;
const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const GW_MAC: Mac = Mac([2, 0x42, 10, 1, 0, 1]);
/// A third VTEP that is a peer but never answers (floods are copied to it too).
const SILENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 13);

struct Host {
    engine: Engine,
    drops: Arc<DropCounters>,
    container: MemPortHandle,
    uplink: MemPortHandle,
    rx: u64,
    tx: u64,
}

fn vtep_ip(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + h)
}

fn uplink_mac(h: u8) -> Mac {
    Mac([2, 0x58, 198, 18, 0, 10 + h])
}

fn container_mac(h: u8) -> Mac {
    Mac([2, 0x42, 10, 1, 0, 10 + h])
}

/// Host `h` (1 or 2) with its overlay network, peered with the other host and SILENT.
fn host(h: u8) -> Host {
    let other = 3 - h;
    let drops = Arc::new(DropCounters::default());
    let mut engine = Engine::new(FramePool::new_heap(1024).unwrap(), drops.clone());
    engine.add_bridge(NET, "net".into(), Default::default());
    engine.add_bridge(UPLINK, "uplink".into(), Default::default());
    let (c, container) = MemPort::new();
    let (u, uplink) = MemPort::new();
    let c = c.with_offloads(true);
    engine.insert_port(
        CONTAINER_PORT,
        NET,
        Box::new(c),
        0,
        Arc::new(PortCounters::default()),
    );
    engine.insert_port(
        UPLINK_PORT,
        UPLINK,
        Box::new(u),
        0,
        Arc::new(PortCounters::default()),
    );
    let route = RouteConfig {
        gateway: GW,
        gateway_mac: GW_MAC,
        subnet: Subnet {
            addr: Ipv4Addr::new(10, 1, 0, 0),
            prefix: 24,
        },
        internal: false,
        others: vec![],
        uplink: Some(UplinkRoute {
            bridge: UPLINK,
            mtu: 1500,
        }),
    };
    let mut overlay = OverlayStage::new();
    overlay.set_config(Some(OverlayConfig {
        tunnel: Tunnel {
            vni: Vni::new(VNI).unwrap(),
            bridge: NET,
            uplink_bridge: UPLINK,
            local_mac: uplink_mac(h),
            local_ip: vtep_ip(h),
            port: xvs_vxlan::VXLAN_PORT,
            mtu: 1450,
            gateway_ip: GW,
            gateway_mac: GW_MAC,
        },
        peers: vec![vtep_ip(other), SILENT],
        statics: vec![],
    }));
    let chain = Chain::network(Default::default(), GW_MAC, route).then(Box::new(overlay));
    assert!(engine.set_chain(NET, chain));
    let neighbours = Neighbours::new();
    neighbours.learn(vtep_ip(other), uplink_mac(other), 0);
    neighbours.learn(SILENT, Mac([2, 0, 0, 0, 0, 13]), 0);
    let mut decap = DecapStage::new();
    decap.set_config(Some(DecapConfig {
        vtep: LocalVtep::new(vtep_ip(h)),
        uplink_port: UPLINK_PORT,
        networks: Arc::new(HashMap::from([(
            Vni::new(VNI).unwrap(),
            OverlayNet {
                bridge: NET,
                worker: 0,
                mtu: 1450,
                gateway_mac: GW_MAC,
                remotes: vec![vtep_ip(other), SILENT].into(),
            },
        )])),
    }));
    let router = RouterConfig {
        uplink_port: UPLINK_PORT,
        mac: uplink_mac(h),
        ip: vtep_ip(h),
        subnet: Subnet {
            addr: Ipv4Addr::new(198, 18, 0, 0),
            prefix: 24,
        },
        gateway: None,
        zones: Arc::default(),
    };
    let chain = Chain::new(vec![
        Box::new(ClassifyStage),
        Box::new(decap),
        Box::new(RouterStage::new(router, neighbours)),
        Box::new(L2Stage::new(Default::default())),
    ]);
    assert!(engine.set_chain(UPLINK, chain));
    Host {
        engine,
        drops,
        container,
        uplink,
        rx: 0,
        tx: 0,
    }
}

impl Host {
    fn receive_from_container(&mut self, f: &[u8]) {
        self.rx += 1;
        self.container.inject(f);
    }

    fn receive_from_wire(&mut self, f: &[u8]) {
        self.rx += 1;
        self.uplink.inject(f);
    }

    fn poll(&mut self, now: u64) {
        for t in 0..3 {
            self.engine.poll(now + t);
        }
    }

    fn sent_to_wire(&mut self) -> Vec<Vec<u8>> {
        let v = self.uplink.take_tx();
        self.tx += v.len() as u64;
        v
    }

    fn sent_to_container(&mut self) -> Vec<Vec<u8>> {
        let v = self.container.take_tx();
        self.tx += v.len() as u64;
        v
    }

    /// received + made + released == sent + dropped + held.
    fn accounted(&self) {
        let c = self.engine.output_counters();
        let (made, held, released) = (
            c.generated.load(Relaxed),
            c.held.load(Relaxed),
            c.released.load(Relaxed),
        );
        let dropped = self.drops.frames_dropped();
        assert_eq!(
            self.rx + made + released,
            self.tx + dropped + held,
            "rx {} made {made} released {released} tx {} dropped {dropped} held {held}",
            self.rx,
            self.tx
        );
    }
}

fn outer_dst(f: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(f[30], f[31], f[32], f[33])
}

/// A broadcast UDP frame from host `h`'s container.
fn broadcast(h: u8) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(container_mac(h).0, [0xff; 6])
        .ipv4([10, 1, 0, 10 + h], [10, 1, 0, 255], 64)
        .udp(4000, 4000)
        .write(&mut f, b"who is there")
        .unwrap();
    f
}

/// A unicast UDP frame between the containers.
fn unicast(from: u8, to: u8) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(container_mac(from).0, container_mac(to).0)
        .ipv4([10, 1, 0, 10 + from], [10, 1, 0, 10 + to], 64)
        .udp(4000, 4001)
        .write(&mut f, b"here I am")
        .unwrap();
    f
}

#[test]
fn a_broadcast_reaches_the_other_host_and_the_answer_comes_back_to_one_vtep() {
    let (mut a, mut b) = (host(1), host(2));
    let hello = broadcast(1);
    a.receive_from_container(&hello);
    a.poll(1000);
    let out = a.sent_to_wire();
    let mut dsts: Vec<Ipv4Addr> = out.iter().map(|f| outer_dst(f)).collect();
    dsts.sort();
    assert_eq!(dsts, vec![vtep_ip(2), SILENT], "a copy to every peer");
    let to_b = out.iter().find(|f| outer_dst(f) == vtep_ip(2)).unwrap();
    assert_eq!(
        &to_b[..6],
        &uplink_mac(2).0,
        "to B's uplink MAC (the router's)"
    );
    assert_eq!(&to_b[OUTER_LEN..], &hello[..], "inner frame unchanged");

    b.receive_from_wire(to_b);
    b.poll(1000);
    let got = b.sent_to_container();
    assert_eq!(got, vec![hello.clone()], "B's container gets the broadcast");

    // B's answer goes to A alone: B learnt A's container behind A's VTEP.
    let answer = unicast(2, 1);
    b.receive_from_container(&answer);
    b.poll(1100);
    let out = b.sent_to_wire();
    assert_eq!(out.len(), 1, "unicast to one VTEP");
    assert_eq!(outer_dst(&out[0]), vtep_ip(1));
    a.receive_from_wire(&out[0]);
    a.poll(1100);
    assert_eq!(a.sent_to_container(), vec![answer]);
    a.accounted();
    b.accounted();
}

#[test]
fn a_tap_super_frame_is_cut_to_the_overlay_size_and_each_segment_encapsulated() {
    let (mut a, mut b) = (host(1), host(2));
    // B knows A's container (it sent B something), so A's super-frame to B goes unicast.
    let hello = broadcast(2);
    b.receive_from_container(&hello);
    b.poll(1000);
    for f in b.sent_to_wire() {
        if outer_dst(&f) == vtep_ip(1) {
            a.receive_from_wire(&f);
        }
    }
    a.poll(1000);
    a.sent_to_container();
    let payload = vec![0x5a_u8; 20_000];
    let mut f = Vec::new();
    PacketBuilder::ethernet2(container_mac(1).0, container_mac(2).0)
        .ipv4([10, 1, 0, 11], [10, 1, 0, 12], 64)
        .tcp(40000, 5201, 1, 65535)
        .write(&mut f, &payload)
        .unwrap();
    // As a TAP gives it: GSO TCPv4 with an MSS that fits the overlay (MTU 1450 - 40).
    let off = Offload::tcpv4_gso(1410);
    a.rx += 1;
    a.container.inject_with_offload(&f, off);
    a.poll(2000);
    let out = a.sent_to_wire();
    assert_eq!(
        out.len(),
        payload.len().div_ceil(1410),
        "one packet per segment"
    );
    for s in &out {
        assert_eq!(outer_dst(s), vtep_ip(2));
        assert!(s.len() <= 1450 + 14 + OUTER_LEN, "{}", s.len());
    }
    assert_eq!(a.drops.get(VxlanDrop::Segmented), 1);
    for s in &out {
        b.receive_from_wire(s);
    }
    b.poll(2000);
    let got = b.sent_to_container();
    let carried: usize = got.iter().map(|g| g.len() - 54).sum();
    assert_eq!(carried, payload.len(), "every byte arrives");
    a.accounted();
    b.accounted();
}

#[test]
fn unknown_vni_stranger_vtep_and_bad_flags_are_counted_drops() {
    let (mut a, mut b) = (host(1), host(2));
    a.receive_from_container(&broadcast(1));
    a.poll(1000);
    let good = a
        .sent_to_wire()
        .into_iter()
        .find(|f| outer_dst(f) == vtep_ip(2))
        .unwrap();
    let mut unknown = good.clone();
    unknown[OUTER_LEN - 2] ^= 0x01; // VNI's low byte
    let mut flags = good.clone();
    flags[42] = 0; // the I bit gone
    let mut stranger = good.clone();
    stranger[26..30].copy_from_slice(&[198, 18, 0, 99]);
    let sum = etherparse::Ipv4HeaderSlice::from_slice(&stranger[14..34])
        .unwrap()
        .to_header()
        .calc_header_checksum();
    stranger[24..26].copy_from_slice(&sum.to_be_bytes());
    for f in [&unknown, &flags, &stranger] {
        b.receive_from_wire(f);
    }
    b.poll(1000);
    assert!(b.sent_to_container().is_empty());
    assert_eq!(b.drops.get(VxlanDrop::UnknownVni), 1);
    assert_eq!(b.drops.get(VxlanDrop::BadFlags), 1);
    assert_eq!(b.drops.get(VxlanDrop::UnknownPeer), 1);
    a.accounted();
    b.accounted();
}
