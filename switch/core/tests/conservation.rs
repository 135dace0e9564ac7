//! Every frame accounted for: a seeded random mix of good, flooded, malformed, oversized,
//! gateway-bound, hand-off and super-frames runs through two workers' engines on in-memory
//! ports (with small transmit rings, so some are dropped there too) for many passes. At the
//! end, for each engine,
//!
//!   received + handed in + flood copies + segments − super-frames segmented
//!     = transmitted + handed off + dropped (summed over every reason that drops a frame),
//!
//! every port's pipeline drops are at most what it received, what one worker handed off the
//! other received, and both pools are whole again.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::PacketBuilder;
use xvs_switch::chain::Chain;
use xvs_switch::classify::{ClassifyStage, Mac};
use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::engine::Engine;
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::{FramePool, JUMBO_FRAMES};
use xvs_switch::l2::L2Stage;
use xvs_switch::offload::Offload;
use xvs_switch::output::OutputCounters;
use xvs_switch::port::mem::{MemPort, MemPortHandle};
use xvs_switch::port::pipe::{PipeEnd, pipe};
use xvs_switch::stage::{Batch, Stage, StageContext, Verdict};
use xvs_switch::worker;

/// UDP port whose frames the test stage hands to worker 1.
const HANDOFF_PORT: u16 = 7777;
/// UDP port whose frames the test stage gives to the local stack.
const LOCAL_PORT: u16 = 5353;
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

/// Steers frames as NAT or LB stages will: some to another worker, some to the local stack.
struct Steer;

impl Stage for Steer {
    fn name(&self) -> &'static str {
        "steer"
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() || batch.keys[i].nw_proto != 17 {
                continue;
            }
            match batch.keys[i].tp_dst {
                HANDOFF_PORT if ctx.worker == 0 => batch.verdicts[i] = Verdict::Handoff(1),
                // Handed on again from worker 1: a loop, which output counts as a drop.
                HANDOFF_PORT if batch.keys[i].tp_src.is_multiple_of(5) => {
                    batch.verdicts[i] = Verdict::Handoff(0)
                }
                LOCAL_PORT => batch.verdicts[i] = Verdict::Local,
                _ => {}
            }
        }
    }
}

/// xorshift64*: seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn host(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

fn udp(src: [u8; 6], dst: [u8; 6], sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 0, 0, src[5]], [10, 0, 0, dst[5]], 64)
        .udp(sport, dport)
        .write(&mut f, &vec![0x5a; len])
        .unwrap();
    f
}

/// A TCP super-frame with a partial checksum, as a TAP hands it over.
fn super_frame(src: [u8; 6], dst: [u8; 6], payload: usize) -> (Vec<u8>, Offload) {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 0, 0, src[5]], [10, 0, 0, dst[5]], 64)
        .tcp(40000, 5201, 1, 512)
        .ack(1)
        .write(&mut f, &vec![0x33; payload])
        .unwrap();
    (f, Offload::tcpv4_gso(1448))
}

/// One frame of the mix, with its offload state.
fn random_frame(rng: &mut Rng) -> (Vec<u8>, Offload) {
    let known = [host(2), host(3), host(5)];
    let dst = known[rng.below(3) as usize];
    let sport = rng.below(60_000) as u16;
    let plain = |f: Vec<u8>| (f, Offload::NONE);
    match rng.below(20) {
        0..=5 => plain(udp(host(1), dst, sport, 9, rng.below(1400) as usize)),
        6 | 7 => plain(udp(host(1), [0xff; 6], sport, 9, 40)),
        8 => plain(udp(host(1), host(0x77), sport, 9, 40)),
        9 => plain(vec![1, 2, 3]),
        10 => {
            let mut f = udp(host(1), dst, sport, 9, 100);
            f[16..18].copy_from_slice(&2000u16.to_be_bytes());
            plain(f)
        }
        11 => {
            let mut f = udp(host(1), dst, sport, 9, 40);
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            plain(f)
        }
        12 => plain(udp([1, 0, 0x5e, 0, 0, 1], dst, sport, 9, 40)),
        13 => plain(udp(host(1), GW_MAC, sport, 53, 60)),
        14 => plain(udp(host(1), dst, sport, LOCAL_PORT, 60)),
        15 | 16 => plain(udp(host(1), dst, sport, HANDOFF_PORT, 80)),
        17 => super_frame(host(1), dst, 2000 + rng.below(30_000) as usize),
        // A frame too large for an ordinary frame, with nothing to segment: oversize on
        // ports without offloads.
        18 => plain(udp(host(1), dst, sport, 9, 5000)),
        _ => plain(udp(host(1), host(1), sport, 9, 40)),
    }
}

struct Port {
    id: u32,
    counters: Arc<PortCounters>,
    handle: Option<MemPortHandle>,
}

struct Worker {
    engine: Engine,
    drops: Arc<DropCounters>,
    out: Arc<OutputCounters>,
    ports: Vec<Port>,
}

impl Worker {
    fn add(&mut self, id: u32, port: Box<dyn xvs_switch::port::PortIo>, h: Option<MemPortHandle>) {
        let counters = Arc::new(PortCounters::default());
        self.engine.insert_port(id, 1, port, 0, counters.clone());
        self.ports.push(Port {
            id,
            counters,
            handle: h,
        });
    }

    fn drain(&self) {
        for p in &self.ports {
            if let Some(h) = &p.handle {
                h.take_tx();
            }
        }
    }

    /// Checks the conservation equation; returns (received, transmitted, dropped).
    fn check(&self, name: &str) -> (u64, u64, u64) {
        let rx: u64 = self
            .ports
            .iter()
            .map(|p| p.counters.snapshot().rx_packets)
            .sum();
        let tx: u64 = self
            .ports
            .iter()
            .map(|p| p.counters.snapshot().tx_packets)
            .sum();
        let dropped = self.drops.frames_dropped();
        let o = &self.out;
        let (copies, segments, segmented) = (
            o.flood_copies.load(Relaxed),
            o.segments.load(Relaxed),
            o.segmented.load(Relaxed),
        );
        let (off, inn) = (o.handed_off.load(Relaxed), o.handed_in.load(Relaxed));
        let reasons: Vec<String> = self
            .drops
            .snapshot()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{}/{}={n}", r.stage(), r.name()))
            .collect();
        eprintln!(
            "{name}: received {rx}, handed in {inn}, flood copies {copies}, segments {segments} \
             of {segmented} super-frames; transmitted {tx}, handed off {off}, dropped {dropped} \
             ({})",
            reasons.join(", ")
        );
        assert_eq!(
            rx + inn + copies + segments - segmented,
            tx + off + dropped,
            "{name}: every frame is transmitted, handed off or dropped with a reason"
        );
        for p in &self.ports {
            let c = p.counters.snapshot();
            assert!(c.rx_drops <= c.rx_packets, "{name}: port {}: {c:?}", p.id);
        }
        assert_eq!(
            self.engine.pool().available(),
            self.engine.pool().capacity() as usize,
            "{name}: pool whole again"
        );
        assert_eq!(self.engine.pool().jumbo_available(), JUMBO_FRAMES as usize);
        assert_eq!(
            self.engine.pool_status().unaccounted,
            0,
            "{name}: the pool's accounting"
        );
        (rx + inn, tx, dropped)
    }
}

fn new_worker(id: u16, link: worker::WorkerLink, frames: u32) -> Worker {
    let drops = Arc::new(DropCounters::default());
    let mut engine = Engine::with_handoff(
        FramePool::new_heap(frames).unwrap(),
        drops.clone(),
        id,
        link.handoff,
        2,
    );
    engine.add_bridge(1, "br".into(), FdbConfig::default());
    let chain = Chain::new(vec![
        Box::new(ClassifyStage),
        Box::new(Steer),
        Box::new(L2Stage::new(FdbConfig::default())),
    ]);
    assert!(engine.set_chain(1, chain));
    assert_eq!(
        engine.chain_names(1).unwrap(),
        vec!["classify", "steer", "l2"]
    );
    let out = engine.output_counters();
    Worker {
        engine,
        drops,
        out,
        ports: Vec::new(),
    }
}

/// The gateway's side: reads what the switch sent, sometimes answers from the gateway MAC.
fn serve_gateway(end: &PipeEnd, rng: &mut Rng, answer: bool) -> u64 {
    let mut n = 0;
    while let Some(buf) = end.recv() {
        n += 1;
        end.recycle(buf);
        if answer && rng.below(4) == 0 {
            let mut b = end.buffer();
            b.extend_from_slice(&udp(GW_MAC, host(1), 53, 4000, 30));
            end.send(b);
        }
    }
    n
}

#[test]
fn every_frame_is_transmitted_handed_off_or_dropped_with_a_reason() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut links = worker::links(2).unwrap().into_iter();
    let mut a = new_worker(0, links.next().unwrap(), 256);
    let mut b = new_worker(1, links.next().unwrap(), 128);

    let (inject, hin) = MemPort::new();
    a.add(1, Box::new(inject.with_offloads(true)), Some(hin.clone()));
    let (p2, h2) = MemPort::new();
    a.add(2, Box::new(p2.with_tx_ring(8)), Some(h2));
    let (p3, h3) = MemPort::new();
    a.add(
        3,
        Box::new(p3.with_offloads(true).with_tx_ring(20)),
        Some(h3),
    );
    let (gw, end) = pipe().unwrap();
    a.add(4, Box::new(gw), None);
    a.engine.domain_mut(1).unwrap().set_policy(true, Some(4));
    a.add(5, Box::new(MemPort::sink()), None);
    let (p11, h11) = MemPort::new();
    b.add(11, Box::new(p11.with_tx_ring(16)), Some(h11));
    b.add(12, Box::new(MemPort::sink()), None);

    // Hosts 2, 3 and 5 live on ports 2, 3 and 5; the gateway's MAC on its pipe port.
    for (h, p) in [(2u8, 2u32), (3, 3), (5, 5)] {
        a.engine
            .l2_mut(1)
            .unwrap()
            .fdb_mut()
            .learn(0, Mac(host(h)), p, 0);
    }
    a.engine
        .l2_mut(1)
        .unwrap()
        .fdb_mut()
        .learn(0, Mac(GW_MAC), 4, 0);

    let mut injected = 0u64;
    let mut to_gateway = 0;
    for pass in 0..3000u64 {
        for _ in 0..rng.below(48) {
            let (f, off) = random_frame(&mut rng);
            hin.inject_with_offload(&f, off);
            injected += 1;
        }
        let now = pass;
        a.engine.poll(now);
        // The gateway sometimes falls behind (its queue fills: counted drops).
        if rng.below(8) != 0 {
            to_gateway += serve_gateway(&end, &mut rng, true);
        }
        // Worker 1 sometimes falls behind while worker 0 hands it a burst (the ring fills:
        // handoff_congested).
        if rng.below(50) == 0 {
            for i in 0..320u16 {
                hin.inject(&udp(host(1), host(2), 1 + i * 5, HANDOFF_PORT, 60));
                injected += 1;
            }
            for _ in 0..12 {
                a.engine.poll(now);
            }
        } else {
            b.engine.poll(now);
        }
        a.drain();
        b.drain();
    }
    // Quiesce: everything in flight (queues, rings, the gateway's answers) is finished.
    for pass in 0..200 {
        a.engine.poll(3000 + pass);
        b.engine.poll(3000 + pass);
        to_gateway += serve_gateway(&end, &mut rng, false);
        a.drain();
        b.drain();
    }
    eprintln!("injected {injected} frames; the gateway read {to_gateway}");
    let (rx_a, _, dropped_a) = a.check("worker 0");
    let (rx_b, _, _) = b.check("worker 1");
    assert!(injected > 60_000 && rx_a >= injected, "{injected} {rx_a}");
    assert!(rx_b > 1000, "worker 1 received hand-offs");
    assert!(dropped_a > 1000, "the mix drops frames");
    assert_eq!(
        a.out.handed_off.load(Relaxed),
        b.out.handed_in.load(Relaxed),
        "what worker 0 handed off, worker 1 received"
    );
    for (reason, min) in [
        ("runt", 1),
        ("bad_ip_length", 1),
        ("unknown_ethertype", 1),
        ("multicast_source_mac", 1),
        ("dst_on_ingress_port", 1),
        ("oversize", 1),
        ("tx_ring_full", 1),
        ("handoff_congested", 1),
    ] {
        let n: u64 = a
            .drops
            .snapshot()
            .into_iter()
            .filter(|(r, _)| r.name() == reason)
            .map(|(_, n)| n)
            .sum();
        assert!(n >= min, "worker 0 counted {n} {reason}");
    }
    let loops: u64 = b
        .drops
        .snapshot()
        .into_iter()
        .filter(|(r, _)| r.name() == "handoff_loop")
        .map(|(_, n)| n)
        .sum();
    assert!(loops > 0, "a frame handed on again is a counted loop");
}

#[test]
fn a_trace_reports_local_and_handoff_verdicts_and_creates_no_state() {
    use xvs_switch::engine::TraceAction;
    let mut links = worker::links(2).unwrap().into_iter();
    let mut a = new_worker(0, links.next().unwrap(), 64);
    let (gw, _end) = pipe().unwrap();
    a.add(1, Box::new(MemPort::sink()), None);
    a.add(4, Box::new(gw), None);
    a.engine.domain_mut(1).unwrap().set_policy(true, Some(4));
    let t = a
        .engine
        .trace(1, 1, &udp(host(1), host(2), 1, HANDOFF_PORT, 10), 0);
    assert_eq!(t.action, TraceAction::Handoff(1));
    let stages: Vec<_> = t.log.steps.iter().map(|s| s.stage).collect();
    assert_eq!(
        stages,
        vec!["classify"],
        "steer records nothing, l2 never ran"
    );
    let t = a
        .engine
        .trace(1, 1, &udp(host(1), host(2), 1, LOCAL_PORT, 10), 0);
    assert_eq!(t.action, TraceAction::Local(4));
    let t = a.engine.trace(1, 1, &udp(host(1), host(2), 1, 9, 10), 0);
    assert_eq!(t.action, TraceAction::Flood(vec![4]));
    assert!(
        a.engine.l2(1).unwrap().fdb().is_empty(),
        "a trace learns nothing"
    );
    assert_eq!(a.drops.frames_dropped(), 0, "a trace counts nothing");
    assert_eq!(a.engine.pool().available(), 64);
}
