//! A worker's steady state allocates nothing: picking a backend for a new connection with
//! each scheduler, counting it opened and closed, and judging established connections; and
//! the lb stage running established connections both ways, and opening, resetting and expiring
//! connections (a counting global allocator, as `switch/core`'s no_alloc test).
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::PacketBuilder;
use xvs_stage::alloc_count::{CountingAllocator, allocations};
use xvs_stage::classify::{Mac, classify_into};
use xvs_stage::domain::Domain;
use xvs_stage::drop::DropCounters;
use xvs_stage::frame::FramePool;
use xvs_stage::stage::{BURST, Batch, Stage, StageContext, Verdict};

use xvs_lb::{Balancer, LbConfig, LbStage, SchedulerKind, Service, ServiceSpec};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn picking_and_counting_allocate_nothing() {
    for kind in SchedulerKind::ALL {
        let mut spec = ServiceSpec::new("10.0.9.100".parse().unwrap(), "tcp/80".parse().unwrap());
        spec.scheduler = kind;
        let mut s = Service::new(spec, 1).unwrap();
        for i in 0..50u32 {
            s.add_backend(format!("10.0.0.{}", i + 2).parse().unwrap(), 1 + i % 4)
                .unwrap();
        }
        let mut b = Balancer::new(s.snapshot(), 0);
        let before = allocations();
        for h in 0..10_000u64 {
            let p = b.pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
            assert!(b.opened(p.backend));
            let _ = b.disposition(p.backend);
            if h % 2 == 0 {
                b.closed(p.backend);
            }
        }
        assert_eq!(allocations() - before, 0, "{kind} allocated");
    }
}

const VIP: [u8; 4] = [10, 0, 0, 100];
const CLIENT: [u8; 4] = [10, 0, 0, 5];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 5];
const GW: [u8; 6] = [2, 0x42, 10, 0, 0, 1];
const BACKENDS: u8 = 3;

fn backend(n: u8) -> ([u8; 4], [u8; 6]) {
    ([10, 0, 0, 2 + n], [2, 0, 0, 0, 0, 2 + n])
}

fn segment(from: ([u8; 4], u16, [u8; 6]), to: ([u8; 4], u16, [u8; 6]), flags: &str) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(from.2, to.2)
        .ipv4(from.0, to.0, 64)
        .tcp(from.1, to.1, 1, 64000);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'R' => b.rst(),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, if flags == "A" { b"payload" } else { b"" })
        .unwrap();
    v
}

fn to_vip(port: u16, flags: &str) -> Vec<u8> {
    segment((CLIENT, port, CLIENT_MAC), (VIP, 80, GW), flags)
}

/// Runs `frames` through the stage as one batch; every verdict must be `want`.
struct Bench {
    stage: LbStage,
    pool: FramePool,
    batch: Batch,
    domain: Domain,
    drops: DropCounters,
}

fn run(b: &mut Bench, frames: &[Vec<u8>], now: u64, want: Verdict) {
    let Bench {
        stage,
        pool,
        batch,
        domain,
        drops,
    } = b;
    for f in frames {
        batch.frames.push(pool.alloc_copy(f).unwrap());
    }
    batch.begin(7, 5, 0);
    for i in 0..batch.len() {
        classify_into(pool.data(&batch.frames[i]), &mut batch.keys[i]).unwrap();
    }
    let mut ctx = StageContext::new(pool, domain, drops, now);
    stage.process(&mut ctx, batch);
    assert!(batch.verdicts[..batch.len()].iter().all(|v| *v == want));
    batch.free_all(pool);
}

#[test]
fn the_lb_stage_allocates_nothing_in_steady_state() {
    let spec = ServiceSpec::new(VIP.into(), "tcp/80:8080".parse().unwrap());
    let mut s = Service::new(spec, 1).unwrap();
    let mut stations: hashbrown::HashMap<Ipv4Addr, Mac> = Default::default();
    for n in 0..BACKENDS {
        let (ip, mac) = backend(n);
        s.add_backend(Ipv4Addr::from(ip).to_string().parse().unwrap(), 1)
            .unwrap();
        stations.insert(ip.into(), Mac(mac));
    }
    let mut stage = LbStage::new(0);
    stage.set_config(LbConfig {
        gateway_mac: Mac(GW),
        stations: Arc::new(stations),
        capacity: 1024,
        spread: None,
    });
    stage.install(s.snapshot());
    let mut b = Bench {
        stage,
        pool: FramePool::new_heap(256).unwrap(),
        batch: Batch::default(),
        domain: Domain::default(),
        drops: DropCounters::default(),
    };

    // rr: client port p gets backend p % 3.
    let ports: Vec<u16> = (0..BURST as u16).map(|p| 30_000 + p).collect();
    let syns: Vec<Vec<u8>> = ports.iter().map(|&p| to_vip(p, "S")).collect();
    let acks: Vec<Vec<u8>> = ports.iter().map(|&p| to_vip(p, "A")).collect();
    let replies: Vec<Vec<u8>> = ports
        .iter()
        .map(|&p| {
            let (ip, mac) = backend((p % u16::from(BACKENDS)) as u8);
            segment((ip, 8080, mac), (CLIENT, p, CLIENT_MAC), "A")
        })
        .collect();
    let churn: Vec<Vec<Vec<u8>>> = (0..20u16)
        .map(|r| {
            (0..BURST as u16)
                .map(|p| to_vip(40_000 + r * 100 + p, "S"))
                .collect()
        })
        .collect();
    let resets: Vec<Vec<Vec<u8>>> = (0..20u16)
        .map(|r| {
            (0..BURST as u16)
                .map(|p| to_vip(40_000 + r * 100 + p, "R"))
                .collect()
        })
        .collect();

    let before = allocations();
    let mut now = 1_000;
    run(&mut b, &syns, now, Verdict::Next);
    for _ in 0..1000 {
        now += 1;
        run(&mut b, &acks, now, Verdict::Next);
        run(&mut b, &replies, now, Verdict::Next);
        b.stage.tick(now);
    }
    assert_eq!(allocations() - before, 0, "established traffic allocated");

    let before = allocations();
    for (opens, closes) in churn.iter().zip(&resets) {
        run(&mut b, opens, now, Verdict::Next);
        run(&mut b, closes, now, Verdict::Next);
        for _ in 0..8 {
            now += 2_000;
            b.stage.tick(now);
        }
    }
    assert_eq!(
        allocations() - before,
        0,
        "opening and ending connections allocated"
    );
    assert_eq!(
        b.stage.len(),
        BURST,
        "the reset ones expired; the established ones stay"
    );
}
