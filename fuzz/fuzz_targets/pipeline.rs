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
//! (ordinary and jumbo frames) is whole again. (The drop reasons printed on a failure are
//! the engine's totals since the fuzzer started: one engine serves every run.)
#![no_main]

use std::cell::RefCell;
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
use xvs_switch::output::OutputCounters;
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
            // At most 64 segments, so that each run stays short.
            let least = (payload % 40_000).div_ceil(64);
            (f, Offload::tcpv4_gso((mss % 9000).max(1).max(least)))
        }
    }
}

struct Port {
    counters: Arc<PortCounters>,
    handle: Option<MemPortHandle>,
}

/// One engine for every run (a pool reserves its jumbo frames up front, which would cost more
/// than the run); each run starts with an empty FDB and nothing in flight, and checks the
/// counters' growth over the run.
struct Switch {
    engine: Engine,
    drops: Arc<DropCounters>,
    out: Arc<OutputCounters>,
    ports: Vec<Port>,
}

fn switch() -> Switch {
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
    add(&mut engine, 1, p1.with_offloads(true), Some(h1));
    let (p2, h2) = MemPort::new();
    add(&mut engine, 2, p2.with_tx_ring(8), Some(h2));
    let (p3, h3) = MemPort::new();
    add(
        &mut engine,
        3,
        p3.with_offloads(true).with_tx_ring(20),
        Some(h3),
    );
    add(&mut engine, 4, MemPort::sink(), None);
    Switch {
        engine,
        drops,
        out,
        ports,
    }
}

thread_local! {
    static SWITCH: RefCell<Switch> = RefCell::new(switch());
}

/// The counters the conservation equation adds up.
#[derive(Debug, Clone, Copy)]
struct Totals {
    rx: u64,
    tx: u64,
    dropped: u64,
    copies: u64,
    segments: u64,
    segmented: u64,
}

impl Switch {
    fn totals(&self) -> Totals {
        let sum = |f: fn(&PortCounters) -> u64| -> u64 {
            self.ports.iter().map(|p| f(&p.counters)).sum()
        };
        Totals {
            rx: sum(|c| c.snapshot().rx_packets),
            tx: sum(|c| c.snapshot().tx_packets),
            dropped: self.drops.frames_dropped(),
            copies: self.out.flood_copies.load(Relaxed),
            segments: self.out.segments.load(Relaxed),
            segmented: self.out.segmented.load(Relaxed),
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    SWITCH.with_borrow_mut(|sw| run_on(sw, u))
}

fn run_on(sw: &mut Switch, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    if let Some(l2) = sw.engine.l2_mut(1) {
        l2.fdb_mut().flush();
    }
    let start = sw.totals();
    let inject: Vec<MemPortHandle> = sw.ports.iter().filter_map(|p| p.handle.clone()).collect();
    let mut now = 0u64;
    let mut injected = 0u64;
    let mut steps = 0;
    // An input cut short (arbitrary's error) still ends with the checks below.
    while !u.is_empty() && steps < 256 {
        steps += 1;
        let Ok(op) = Op::arbitrary(u) else {
            break;
        };
        match op {
            Op::Inject { port, frame } => {
                let (f, off) = build(frame);
                inject[usize::from(port) % inject.len()].inject_with_offload(&f, off);
                injected += 1;
            }
            Op::Poll => {
                sw.engine.poll(now);
            }
            Op::Drain(which) => {
                if let Some(h) = &sw.ports[usize::from(which) % sw.ports.len()].handle {
                    h.take_tx();
                }
            }
            Op::Advance(ms) => now += u64::from(ms),
        }
    }
    // Quiesce: every queued frame received and finished.
    for _ in 0..injected / 8 + 4 {
        sw.engine.poll(now);
        for h in &inject {
            h.take_tx();
        }
    }
    let end = sw.totals();
    let d = |f: fn(&Totals) -> u64| f(&end) - f(&start);
    let (rx, tx, dropped) = (d(|t| t.rx), d(|t| t.tx), d(|t| t.dropped));
    let (copies, segments, segmented) = (d(|t| t.copies), d(|t| t.segments), d(|t| t.segmented));
    let reasons: Vec<String> = sw
        .drops
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
         = tx {tx} + dropped {dropped} (totals since start: {})",
        reasons.join(", ")
    );
    for p in &sw.ports {
        let c = p.counters.snapshot();
        assert!(c.rx_drops <= c.rx_packets, "{c:?}");
    }
    let pool = sw.engine.pool();
    assert_eq!(pool.available(), pool.capacity() as usize, "pool whole");
    assert_eq!(
        pool.jumbo_available(),
        JUMBO_FRAMES as usize,
        "jumbo frames whole"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
