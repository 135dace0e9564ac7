//! Criterion benches of xvs-nat, per packet at bursts of 32: conntrack lookup + NAT rewrite of
//! established UDP flows in a table of 1M sessions (flows drawn at random over the whole table,
//! and one hot burst of 32 flows; each through `process_burst`, as a stage does, and frame by
//! frame through `process`: `_unwarmed`), the cost of setting up a new connection, and the memory a
//! session takes (printed: reserved bytes per session, and the RSS growth of filling 1M).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xvs_nat::{Config, Conntrack, Outcome, PortRange, Side};
use xvs_switch::classify::{FlowKey, classify};
use xvs_switch::offload::Offload;

const BURST: usize = 32;
const SESSIONS: u32 = 1_000_000;
/// Inside endpoints (one masquerade port each, 78% of the range); each talks to 20 remote ports.
const ENDPOINTS: u32 = 50_000;
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// A 60-byte IPv4/UDP frame from 10.x.y.z:sport to 203.0.113.1:dport.
fn udp(inside: u32, sport: u16, dport: u16) -> Vec<u8> {
    let s = (0x0a00_0000 | inside).to_be_bytes();
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&s);
    f.extend_from_slice(&[203, 0, 113, 1]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 26, 0x12, 0x34]);
    f.extend_from_slice(&[0x41; 18]);
    f
}

/// Session `i`'s outbound frame: endpoint `i % ENDPOINTS` to remote port `i / ENDPOINTS`.
fn session_frame(i: u32) -> Vec<u8> {
    udp(1 + i % ENDPOINTS, 30000, 1000 + (i / ENDPOINTS) as u16)
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn table(capacity: u32) -> Conntrack {
    Conntrack::new(Config {
        capacity,
        per_endpoint: capacity,
        masquerade: Some(OUTSIDE),
        ports: PortRange::new(1024, 65535),
        ..Config::default()
    })
}

/// A table holding 1M established UDP sessions (replied once each).
fn full_table() -> Conntrack {
    let before = rss_bytes();
    let mut ct = table(1 << 20);
    let inside = Side::Inside { zone: 1 };
    for i in 0..SESSIONS {
        let mut f = session_frame(i);
        let key = classify(&f, 1, 0).unwrap();
        ct.process(&mut f, &key, &Offload::NONE, inside, 0, false)
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
    }
    assert_eq!(ct.len(), SESSIONS);
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "nat: {} sessions, {} mappings; reserved {} MiB = {} bytes/session at capacity {}; RSS grew {} MiB = {} bytes/session",
        ct.len(),
        ct.mappings(0).count(),
        ct.memory_bytes() >> 20,
        ct.bytes_per_session(),
        ct.config().capacity,
        grown >> 20,
        grown / SESSIONS as usize,
    );
    ct
}

/// Frames and keys of `n` established sessions, drawn by a seeded generator.
fn sample(n: usize, seed: u64) -> (Vec<[u8; 60]>, Vec<FlowKey>) {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = session_frame((x % u64::from(SESSIONS)) as u32);
            let k = classify(&f, 1, 0).unwrap();
            (<[u8; 60]>::try_from(f.as_slice()).unwrap(), k)
        })
        .unzip()
}

/// One burst: the frames copied into the burst's buffers (the rewrite is in place), then
/// processed: with `burst`, together ([`Conntrack::process_burst`]: the lookups first, their
/// misses overlapping), else one by one ([`Conntrack::process`]).
#[inline]
fn burst(
    ct: &mut Conntrack,
    frames: &[[u8; 60]],
    keys: &[FlowKey],
    bufs: &mut [[u8; 60]; BURST],
    now: u64,
    burst: bool,
) {
    let inside = Side::Inside { zone: 1 };
    for (f, buf) in frames.iter().zip(bufs.iter_mut()) {
        buf.copy_from_slice(f);
    }
    if burst {
        let mut out = [Ok(Outcome::Untracked); BURST];
        ct.process_burst(bufs, keys, &Offload::NONE, inside, now, false, &mut out);
        black_box(&out);
    } else {
        for (k, buf) in keys.iter().zip(bufs.iter_mut()) {
            let r = ct.process(buf, k, &Offload::NONE, inside, now, false);
            black_box(r.is_ok());
        }
    }
}

fn bench_established(c: &mut Criterion) {
    let mut ct = full_table();
    let (random, random_keys) = sample(1 << 16, 0x9e37_79b9);
    let (hot, hot_keys) = sample(BURST, 7);
    let mut bufs = [[0u8; 60]; BURST];
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, warm) in [("", true), ("_unwarmed", false)] {
        let mut at = 0;
        g.bench_function(format!("established_1M_random_flows_burst32{name}"), |b| {
            b.iter(|| {
                at = (at + BURST) % random.len();
                let r = at..at + BURST;
                burst(
                    &mut ct,
                    &random[r.clone()],
                    &random_keys[r],
                    &mut bufs,
                    1,
                    warm,
                );
            })
        });
        g.bench_function(format!("established_1M_hot_burst32{name}"), |b| {
            b.iter(|| burst(&mut ct, &hot, &hot_keys, &mut bufs, 1, warm))
        });
    }
    // What the bench itself spends per burst: copying the frames into the buffers.
    let mut at = 0;
    g.bench_function("bench_overhead_copy_random_burst32", |b| {
        b.iter(|| {
            at = (at + BURST) % random.len();
            for (f, buf) in random[at..at + BURST].iter().zip(bufs.iter_mut()) {
                buf.copy_from_slice(f);
            }
            black_box(&mut bufs);
        })
    });
    g.finish();
}

fn bench_new_connection(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut ct = table(1 << 20);
    let inside = Side::Inside { zone: 1 };
    let mut next: u32 = 0;
    g.bench_function("new_connection_burst32", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if ct.len() > 900_000 {
                    ct.flush();
                    next = 0;
                }
                // Build the burst untimed: new tuples, one new mapping in 20.
                let frames: Vec<(Vec<u8>, FlowKey)> = (0..BURST as u32)
                    .map(|j| {
                        let i = next + j;
                        let f = udp(
                            1 + i / 20 % ENDPOINTS,
                            30000,
                            1000 + (i % 20) as u16 + 20 * (i / (20 * ENDPOINTS)) as u16,
                        );
                        let k = classify(&f, 1, 0).unwrap();
                        (f, k)
                    })
                    .collect();
                next += BURST as u32;
                let mut bufs: Vec<Vec<u8>> = frames.iter().map(|(f, _)| f.clone()).collect();
                let t = Instant::now();
                for ((_, k), buf) in frames.iter().zip(bufs.iter_mut()) {
                    black_box(ct.process(buf, k, &Offload::NONE, inside, 1, false).is_ok());
                }
                spent += t.elapsed();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench_established, bench_new_connection);
criterion_main!(benches);
