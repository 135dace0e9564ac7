//! Criterion benches of the load balancer's datapath stage (`xvs_lb::LbStage`), per packet in
//! bursts of 32, as a worker runs it: frames copied into pool frames, classified keys, one
//! `process` call per burst. A service VIP:80 → :8080 over 3 backends, with 1M established
//! TCP sessions in the stage's table:
//!
//! - `established_1M_random`: client segments of sessions drawn at random over the whole
//!   table (lookup, DNAT rewrite with incremental checksums, state tracking);
//! - `established_1M_hot`: one burst of 32 sessions over and over (the table in cache);
//! - `new_connection_{rr,maglev}`: SYNs of new 5-tuples, each given a backend by the
//!   scheduler and a session (the table refilled from empty past 900K);
//! - `bench_overhead_copy_burst32`: what the bench spends per burst outside the stage (the
//!   copies into pool frames and freeing them), to subtract.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xvs_lb::{LbConfig, LbStage, SchedulerKind, Service, ServiceSpec};
use xvs_switch::batch::Batch;
use xvs_switch::classify::{FlowKey, classify};
use xvs_switch::domain::Domain;
use xvs_switch::drop::DropCounters;
use xvs_switch::frame::FramePool;
use xvs_switch::port::BURST;
use xvs_switch::stage::{Stage, StageContext};
use xvs_switch::wire::Mac;

const SESSIONS: u32 = 1_000_000;
/// Client addresses (10.64.0.0/10); each opens ports 20000.. to the VIP.
const CLIENTS: u32 = 50_000;
const VIP: [u8; 4] = [10, 0, 0, 100];
const GW: Mac = Mac([2, 0x42, 10, 0, 0, 1]);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn backend(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 2 + n)
}

/// A 64-byte IPv4/TCP frame (10-byte payload) from client `i`'s address and port to VIP:80.
fn segment(i: u32, flags: u8) -> [u8; 64] {
    let src = (0x0a40_0000 | (i % CLIENTS)).to_be_bytes();
    let sport = (20000 + i / CLIENTS) as u16;
    let mut f = [0u8; 64];
    f[..14].copy_from_slice(&[2, 0x42, 10, 0, 0, 1, 2, 0, 0, 0, 0, 5, 0x08, 0x00]);
    f[14..26].copy_from_slice(&[0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&VIP);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[38..42].copy_from_slice(&1000u32.to_be_bytes());
    f[42..46].copy_from_slice(&5000u32.to_be_bytes());
    f[46] = 0x50;
    f[47] = flags;
    f[48..50].copy_from_slice(&64000u16.to_be_bytes());
    f[54..64].fill(0x41);
    let ip = checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&ip.to_be_bytes());
    let mut pseudo = 0u32;
    for w in [&f[26..30], &f[30..34]] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]))
            + u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 6 + 30;
    let tcp = checksum(&f[34..64], pseudo);
    f[50..52].copy_from_slice(&tcp.to_be_bytes());
    f
}

fn checksum(bytes: &[u8], start: u32) -> u16 {
    let mut sum = start;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The stage with the service installed (sessions up to `capacity`).
fn stage(kind: SchedulerKind, capacity: u32) -> (LbStage, Service) {
    let mut spec = ServiceSpec::new(IpAddr::V4(VIP.into()), "tcp/80:8080".parse().unwrap());
    spec.scheduler = kind;
    spec.timeout_secs = Some(3600);
    let mut service = Service::new(spec, 1).unwrap();
    let mut stations = hashbrown::HashMap::new();
    for n in 0..3 {
        service
            .add_backend(backend(n).to_string().parse().unwrap(), 1)
            .unwrap();
        stations.insert(backend(n), Mac([2, 0, 0, 0, 1, n]));
    }
    let mut s = LbStage::new(0);
    s.set_config(LbConfig {
        gateway_mac: GW,
        stations: Arc::new(stations),
        capacity,
        spread: None,
    });
    s.install(service.snapshot());
    (s, service)
}

/// The world a stage runs in: pool, domain, counters.
struct Env {
    pool: FramePool,
    domain: Domain,
    drops: DropCounters,
    batch: Batch,
}

impl Env {
    fn new() -> Env {
        Env {
            pool: FramePool::new_heap(256).unwrap(),
            domain: Domain::default(),
            drops: DropCounters::default(),
            batch: Batch::default(),
        }
    }

    /// Copies `frames` into the batch with their keys.
    #[inline]
    fn load(&mut self, frames: &[[u8; 64]], keys: &[FlowKey]) {
        for f in frames {
            let frame = self.pool.alloc_copy(f).unwrap();
            self.batch.frames.push(frame);
        }
        self.batch.begin(1, 5, 0);
        self.batch.keys[..keys.len()].copy_from_slice(keys);
    }

    #[inline]
    fn run(&mut self, stage: &mut LbStage, now_ms: u64) {
        let mut ctx = StageContext::new(&mut self.pool, &self.domain, &self.drops, now_ms);
        stage.process(&mut ctx, &mut self.batch);
        black_box(&self.batch.verdicts);
    }

    #[inline]
    fn free(&mut self) {
        self.batch.free_all(&mut self.pool);
    }
}

fn keys_of(frames: &[[u8; 64]]) -> Vec<FlowKey> {
    frames.iter().map(|f| classify(f, 5, 0).unwrap()).collect()
}

/// Opens sessions 0..SESSIONS through the stage (SYNs in bursts of 32).
fn fill(stage: &mut LbStage, env: &mut Env) {
    for start in (0..SESSIONS).step_by(BURST) {
        let frames: Vec<[u8; 64]> = (start..(start + BURST as u32).min(SESSIONS))
            .map(|i| segment(i, SYN))
            .collect();
        let keys = keys_of(&frames);
        env.load(&frames, &keys);
        env.run(stage, 1);
        env.free();
    }
    assert_eq!(stage.len(), SESSIONS as usize, "every SYN opened a session");
}

fn bench_established(c: &mut Criterion) {
    let (mut stage, _service) = stage(SchedulerKind::Maglev, 1 << 21);
    let mut env = Env::new();
    fill(&mut stage, &mut env);
    let mut x: u64 = 0x9e37_79b9;
    let random: Vec<[u8; 64]> = (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            segment((x % u64::from(SESSIONS)) as u32, ACK)
        })
        .collect();
    let random_keys = keys_of(&random);
    let hot: Vec<[u8; 64]> = (0..BURST as u32).map(|i| segment(i * 7919, ACK)).collect();
    let hot_keys = keys_of(&hot);
    let mut g = c.benchmark_group("lb_stage");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut at = 0;
    g.bench_function("established_1M_random_burst32", |b| {
        b.iter(|| {
            at = (at + BURST) % random.len();
            env.load(&random[at..at + BURST], &random_keys[at..at + BURST]);
            env.run(&mut stage, 2);
            env.free();
        })
    });
    g.bench_function("established_1M_hot_burst32", |b| {
        b.iter(|| {
            env.load(&hot, &hot_keys);
            env.run(&mut stage, 2);
            env.free();
        })
    });
    let mut at = 0;
    g.bench_function("bench_overhead_copy_burst32", |b| {
        b.iter(|| {
            at = (at + BURST) % random.len();
            env.load(&random[at..at + BURST], &random_keys[at..at + BURST]);
            env.free();
        })
    });
    assert_eq!(stage.len(), SESSIONS as usize, "no session was lost");
    g.finish();
}

fn bench_new_connection(c: &mut Criterion) {
    let mut g = c.benchmark_group("lb_stage");
    g.throughput(Throughput::Elements(BURST as u64));
    for kind in [SchedulerKind::Rr, SchedulerKind::Maglev] {
        let (mut stage, _service) = stage(kind, 1 << 20);
        let mut env = Env::new();
        let mut next: u32 = 0;
        g.bench_function(format!("new_connection_{kind}_burst32"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    if stage.len() > 900_000 {
                        stage = self::stage(kind, 1 << 20).0;
                        next = 0;
                    }
                    let frames: Vec<[u8; 64]> = (next..next + BURST as u32)
                        .map(|i| segment(i, SYN))
                        .collect();
                    next += BURST as u32;
                    let keys = keys_of(&frames);
                    env.load(&frames, &keys);
                    let t = Instant::now();
                    env.run(&mut stage, 1);
                    spent += t.elapsed();
                    env.free();
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_established, bench_new_connection);
criterion_main!(benches);
