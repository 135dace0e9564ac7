//! Routing out, on memory ports: a network's route stage patches a routed frame over to the
//! uplink's bridge, whose router holds it while it asks for the next hop by ARP and sends it
//! once the answer arrives; a next hop that never answers is a counted drop after the timeout;
//! a full waiting queue is a counted drop; an expired TTL is answered with ICMP. Every frame is
//! accounted for: received + made + released = sent + dropped + held.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::PacketBuilder;
use xvs_switch::chain::Chain;
use xvs_switch::classify::{ClassifyStage, Mac};
use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::engine::Engine;
use xvs_switch::frame::FramePool;
use xvs_switch::l2::L2Stage;
use xvs_switch::neigh::Neighbours;
use xvs_switch::port::mem::{MemPort, MemPortHandle};
use xvs_switch::route::{RouteConfig, Subnet, UplinkRoute};
use xvs_switch::router::{RouterConfig, RouterDrop, RouterStage, WAIT_QUEUE};
use xvs_switch::stage::{Batch, Egress, Stage, StageContext};

const NET: u32 = 1;
const UPLINK: u32 = 2;
const GW_MAC: Mac = Mac([2, 0x42, 10, 1, 0, 1]);
const UP_MAC: Mac = Mac([2, 0x58, 198, 18, 0, 9]);
const HOP_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x77]);
const CONTAINER: Mac = Mac([2, 0x42, 10, 1, 0, 2]);

/// Stands in for conntrack: every frame patched over goes out of the uplink.
struct ToUplink;

impl Stage for ToUplink {
    fn name(&self) -> &'static str {
        "conntrack"
    }
    fn process(&mut self, _ctx: &mut StageContext<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.meta[i].patched_from.is_some() {
                batch.meta[i].egress = Egress::Uplink;
            }
        }
    }
}

struct World {
    engine: Engine,
    drops: Arc<DropCounters>,
    container: MemPortHandle,
    uplink: MemPortHandle,
}

fn world() -> World {
    let drops = Arc::new(DropCounters::default());
    let mut engine = Engine::new(FramePool::new_heap(512).unwrap(), drops.clone());
    engine.add_bridge(NET, "net".into(), Default::default());
    engine.add_bridge(UPLINK, "uplink".into(), Default::default());
    let (c, container) = MemPort::new();
    let (u, uplink) = MemPort::new();
    engine.insert_port(10, NET, Box::new(c), 0, Arc::new(PortCounters::default()));
    engine.insert_port(
        20,
        UPLINK,
        Box::new(u),
        0,
        Arc::new(PortCounters::default()),
    );
    let route = RouteConfig {
        gateway: Ipv4Addr::new(10, 1, 0, 1),
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
    assert!(engine.set_chain(NET, Chain::network(Default::default(), GW_MAC, route)));
    let router = RouterConfig {
        uplink_port: 20,
        mac: UP_MAC,
        ip: Ipv4Addr::new(198, 18, 0, 9),
        subnet: Subnet {
            addr: Ipv4Addr::new(198, 18, 0, 0),
            prefix: 24,
        },
        gateway: None,
        zones: Arc::default(),
    };
    let chain = Chain::new(vec![
        Box::new(ClassifyStage),
        Box::new(ToUplink),
        Box::new(RouterStage::new(router, Neighbours::new())),
        Box::new(L2Stage::new(Default::default())),
    ]);
    assert!(engine.set_chain(UPLINK, chain));
    World {
        engine,
        drops,
        container,
        uplink,
    }
}

/// A UDP frame from the container to `dst` through the gateway, with `ttl`.
fn routed(dst: [u8; 4], ttl: u8, sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CONTAINER.0, GW_MAC.0)
        .ipv4([10, 1, 0, 2], dst, ttl)
        .udp(sport, 53)
        .write(&mut f, b"hello")
        .unwrap();
    f
}

/// An ARP reply from `ip` at HOP_MAC to xvs.
fn arp_reply(ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&UP_MAC.0);
    f.extend_from_slice(&HOP_MAC.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&HOP_MAC.0);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&UP_MAC.0);
    f.extend_from_slice(&[198, 18, 0, 9]);
    f.resize(60, 0);
    f
}

/// received + made + released == sent + dropped + held, over both ports.
fn accounted(w: &World, rx: u64, tx: u64) {
    let c = w.engine.output_counters();
    let (made, held, released) = (
        c.generated.load(Relaxed),
        c.held.load(Relaxed),
        c.released.load(Relaxed),
    );
    let dropped = w.drops.frames_dropped();
    assert_eq!(
        rx + made + released,
        tx + dropped + held,
        "rx {rx} made {made} released {released} tx {tx} dropped {dropped} held {held}"
    );
    let pool = w.engine.pool_status();
    assert_eq!(pool.unaccounted, 0, "{pool:?}");
    assert!(pool.in_stages as u64 <= held - released, "{pool:?}");
}

#[test]
fn a_frame_waits_for_arp_then_goes_to_its_next_hop() {
    let mut w = world();
    w.container.inject(&routed([198, 18, 0, 5], 64, 1000));
    w.engine.poll(1000);
    w.engine.poll(1001);
    let out = w.uplink.take_tx();
    assert_eq!(out.len(), 1, "an ARP request, the frame held");
    let pool = w.engine.pool_status();
    assert_eq!(
        (pool.in_stages, pool.unaccounted),
        (1, 0),
        "the held frame is the router's"
    );
    assert_eq!(&out[0][..6], &[0xff; 6]);
    assert_eq!(&out[0][12..14], &[0x08, 0x06]);
    assert_eq!(
        &out[0][38..42],
        &[198, 18, 0, 5],
        "asks for the destination"
    );
    // No request again within the interval.
    w.engine.poll(1500);
    assert!(w.uplink.take_tx().is_empty());
    w.uplink.inject(&arp_reply([198, 18, 0, 5]));
    w.engine.poll(1600);
    w.engine.poll(1601);
    let out = w.uplink.take_tx();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(&out[0][..6], &HOP_MAC.0, "to the next hop");
    assert_eq!(&out[0][6..12], &UP_MAC.0, "from xvs's uplink MAC");
    assert_eq!(out[0][14 + 8], 63, "TTL decremented");
    // The next frame goes at once.
    w.container.inject(&routed([198, 18, 0, 5], 64, 1001));
    w.engine.poll(1700);
    assert_eq!(w.uplink.take_tx().len(), 1);
    // rx: 2 container frames + the ARP reply (to the host stack: none here, a counted drop).
    accounted(&w, 3, 1 + 2);
}

#[test]
fn an_unanswered_next_hop_and_a_full_queue_are_counted_drops() {
    let mut w = world();
    for i in 0..(WAIT_QUEUE as u16 + 3) {
        w.container.inject(&routed([198, 18, 0, 6], 64, 2000 + i));
        w.engine.poll(1000);
    }
    assert_eq!(w.drops.get(RouterDrop::QueueFull), 3);
    let asked = w.uplink.take_tx().len() as u64;
    assert!(asked >= 1);
    w.engine.poll(2500);
    let asked = asked + w.uplink.take_tx().len() as u64;
    // A release gives back a burst at a time.
    w.engine.poll(5000);
    w.engine.poll(5001);
    w.engine.poll(5002);
    assert_eq!(
        w.drops.get(RouterDrop::Unresolved),
        WAIT_QUEUE as u64,
        "every waiting frame dropped after the timeout"
    );
    let asked = asked + w.uplink.take_tx().len() as u64;
    accounted(&w, WAIT_QUEUE as u64 + 3, asked);
}

#[test]
fn an_expired_ttl_is_answered_from_the_gateway() {
    let mut w = world();
    w.container.inject(&routed([198, 18, 0, 5], 1, 3000));
    w.engine.poll(1000);
    let back = w.container.take_tx();
    assert_eq!(back.len(), 1);
    let icmp = &back[0];
    assert_eq!(&icmp[..6], &CONTAINER.0);
    assert_eq!(&icmp[6..12], &GW_MAC.0);
    assert_eq!(icmp[14 + 9], 1, "ICMP");
    assert_eq!(&icmp[14 + 12..14 + 16], &[10, 1, 0, 1], "from the gateway");
    assert_eq!(icmp[34], 11, "time exceeded");
    assert!(w.uplink.take_tx().is_empty());
    accounted(&w, 1, 1);
}
