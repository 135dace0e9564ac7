//! The whole datapath on in-memory ports (xvs-switch `Engine`, a bridge with the classify and
//! L2 stages): fuzzer-chosen frames (arbitrary bytes, valid UDP to known, unknown, broadcast
//! and multicast MACs, TCP super-frames with fuzzer-chosen sizes and MSS) injected on three
//! ports, two of them taking offloads and two with small transmit rings, polled and drained
//! in a fuzzer-chosen order on a virtual clock.
//!
//! Checked once everything in flight is done: every frame is accounted for,
//!
//!   received + flood copies + segments − super-frames segmented = transmitted + dropped,
//!
//! every frame injected was received, no port dropped more than it received, and the pool
//! (ordinary and jumbo frames) is whole again.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arbitrary::{Arbitrary, Unstructured};
use etherparse::PacketBuilder;
use libfuzzer_sys::fuzz_target;
use xvs_switch::chain::Chain;
use xvs_switch::classify::ClassifyStage;
use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::engine::Engine;
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::{FramePool, JUMBO_FRAMES};
use xvs_switch::l2::L2Stage;
use xvs_switch::offload::Offload;
use xvs_switch::port::mem::{MemPort, MemPortHandle};

fn host(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

#[derive(Debug, Arbitrary)]
enum FrameSel {
    Raw(Vec<u8>),
    Udp {
        src: u8,
        dst: u8,
        len: u16,
    },
    Super {
        src: u8,
        dst: u8,
        payload: u16,
        mss: u16,
    },
}

#[derive(Debug, Arbitrary)]
enum Op {
    Inject { port: u8, frame: FrameSel },
    Poll,
    Drain(u8),
    Advance(u16),
}

fn mac(i: u8) -> [u8; 6] {
    match i % 8 {
        6 => [0xff; 6],
        7 => [0x01, 0, 0x5e, 0, 0, 1],
        n => host(n + 1),
    }
}

fn build(sel: FrameSel) -> (Vec<u8>, Offload) {
    match sel {
        FrameSel::Raw(b) => (b, Offload::NONE),
        FrameSel::Udp { src, dst, len } => {
            let (s, d) = (mac(src), mac(dst));
            let mut f = Vec::new();
            let _ = PacketBuilder::ethernet2(s, d)
                .ipv4([10, 0, 0, s[5]], [10, 0, 0, d[5]], 64)
                .udp(1000, 9)
                .write(&mut f, &vec![0x5a; usize::from(len % 6000)]);
            (f, Offload::NONE)
        }
        FrameSel::Super {
            src,
            dst,
            payload,
            mss,
        } => {
            let (s, d) = (mac(src), mac(dst));
            let mut f = Vec::new();
            let _ = PacketBuilder::ethernet2(s, d)
                .ipv4([10, 0, 0, s[5]], [10, 0, 0, d[5]], 64)
                .tcp(40000, 5201, 1, 512)
                .ack(1)
                .write(&mut f, &vec![0x33; usize::from(payload % 40_000)]);
            (f, Offload::tcpv4_gso((mss % 9000).max(1)))
        }
    }
}

struct Port {
    counters: Arc<PortCounters>,
    handle: Option<MemPortHandle>,
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let drops = Arc::new(DropCounters::default());
    let mut engine = Engine::new(FramePool::new_heap(64).expect("pool"), drops.clone());
    engine.add_bridge(1, "br".into(), FdbConfig::default());
    let chain = Chain::new(vec![
        Box::new(ClassifyStage),
        Box::new(L2Stage::new(FdbConfig::default())),
    ]);
    assert!(engine.set_chain(1, chain));
    let out = engine.output_counters();
    let mut ports = Vec::new();
    let mut add = |engine: &mut Engine, id: u32, port: MemPort, h: Option<MemPortHandle>| {
        let counters = Arc::new(PortCounters::default());
        engine.insert_port(id, 1, Box::new(port), 0, counters.clone());
        ports.push(Port {
            counters,
            handle: h,
        });
    };
    let (p1, h1) = MemPort::new();
    add(&mut engine, 1, p1.with_offloads(true), Some(h1.clone()));
    let (p2, h2) = MemPort::new();
    add(&mut engine, 2, p2.with_tx_ring(8), Some(h2.clone()));
    let (p3, h3) = MemPort::new();
    add(
        &mut engine,
        3,
        p3.with_offloads(true).with_tx_ring(20),
        Some(h3.clone()),
    );
    add(&mut engine, 4, MemPort::sink(), None);
    let inject = [h1, h2, h3];

    let mut now = 0u64;
    let mut injected = 0u64;
    let mut steps = 0;
    while !u.is_empty() && steps < 256 {
        steps += 1;
        match Op::arbitrary(u)? {
            Op::Inject { port, frame } => {
                let (f, off) = build(frame);
                inject[usize::from(port) % inject.len()].inject_with_offload(&f, off);
                injected += 1;
            }
            Op::Poll => {
                engine.poll(now);
            }
            Op::Drain(which) => {
                if let Some(h) = &ports[usize::from(which) % ports.len()].handle {
                    h.take_tx();
                }
            }
            Op::Advance(ms) => now += u64::from(ms),
        }
    }
    // Quiesce: every queued frame received and finished.
    for _ in 0..injected / 8 + 4 {
        engine.poll(now);
        for p in &ports {
            if let Some(h) = &p.handle {
                h.take_tx();
            }
        }
    }
    let sum = |f: fn(&PortCounters) -> u64| -> u64 { ports.iter().map(|p| f(&p.counters)).sum() };
    let rx = sum(|c| c.snapshot().rx_packets);
    let tx = sum(|c| c.snapshot().tx_packets);
    let dropped = drops.frames_dropped();
    let (copies, segments, segmented) = (
        out.flood_copies.load(Relaxed),
        out.segments.load(Relaxed),
        out.segmented.load(Relaxed),
    );
    let reasons: Vec<String> = drops
        .snapshot()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}/{}={n}", r.stage(), r.name()))
        .collect();
    assert_eq!(rx, injected, "every injected frame was received");
    assert_eq!(
        rx + copies + segments - segmented,
        tx + dropped,
        "rx {rx} + copies {copies} + segments {segments} - segmented {segmented} \
         = tx {tx} + dropped {dropped} ({})",
        reasons.join(", ")
    );
    for p in &ports {
        let c = p.counters.snapshot();
        assert!(c.rx_drops <= c.rx_packets, "{c:?}");
    }
    assert_eq!(
        engine.pool().available(),
        engine.pool().capacity() as usize,
        "pool whole"
    );
    assert_eq!(
        engine.pool().jumbo_available(),
        JUMBO_FRAMES as usize,
        "jumbo frames whole"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
