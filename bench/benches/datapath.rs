//! Criterion benches of each datapath stage and the whole pipeline, per packet at bursts of 32:
//! classification, the L2 bridge with 1K and 64K learned MACs, classify → L2 → output on
//! in-memory ports, and the software offloads (TSO of a 64 KiB super-frame, checksum
//! completion) that frames from TAP endpoints need on their way to ports without offloads,
//! and port security's guard lookup and check.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use xvs_bench::{ClassifyBench, L2Bench, pipeline_engine, tcp_super_frame, udp_frame};
use xvs_switch::checksum::complete_checksum;
use xvs_switch::classify::classify;
use xvs_switch::frame::FRAME_CAPACITY;
use xvs_switch::offload::Offload;
use xvs_switch::port::BURST;
use xvs_switch::segment::Segmenter;

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut burst = ClassifyBench::new();
    g.bench_function("udp_burst32", |b| b.iter(|| burst.run()));
    let frame = udp_frame(1, 2);
    g.throughput(Throughput::Elements(1));
    g.bench_function("udp_single", |b| {
        b.iter(|| classify(black_box(&frame), 1, 0))
    });
    g.finish();
}

fn bench_l2(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2");
    g.throughput(Throughput::Elements(BURST as u64));
    for macs in [1024u32, 65536] {
        let mut l2 = L2Bench::new(macs);
        g.bench_function(format!("learn_forward_{}k_macs", macs / 1024), |b| {
            b.iter(|| l2.run())
        });
    }
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("mem_classify_l2_output", |b| {
        b.iter_batched_ref(
            || {
                let mut e = pipeline_engine();
                e.poll(1);
                e
            },
            |e| {
                let (n, _) = e.poll(1);
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    // Software TSO: one 64 KiB super-frame into 1448-byte segments (46 of them), each
    // checksummed in full; per segment.
    let (sup, off) = tcp_super_frame(65_000);
    let segments = Segmenter::new(&sup, &off).unwrap().remaining();
    let mut out = vec![0u8; FRAME_CAPACITY];
    g.throughput(Throughput::Elements(segments as u64));
    g.bench_function("tso_64k_to_1448", |b| {
        b.iter(|| {
            let mut seg = Segmenter::new(black_box(&sup), &off).unwrap();
            let mut bytes = 0;
            while let Some(Ok(n)) = seg.next_into(&mut out) {
                bytes += n;
            }
            black_box(bytes)
        })
    });
    // Checksum completion of a partial checksum (a small TAP frame bound for AF_XDP).
    for payload in [64usize, 1448] {
        let (frame, off) = tcp_super_frame(payload);
        let csum = Offload {
            gso_type: Offload::GSO_NONE,
            gso_size: 0,
            ..off
        };
        let mut f = frame.clone();
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("checksum_tcp_{payload}b"), |b| {
            b.iter(|| {
                f[50..52].copy_from_slice(&frame[50..52]);
                complete_checksum(black_box(&mut f), &csum).unwrap()
            })
        });
    }
    g.finish();
}

/// Port security: the guard lookup (1,024 guarded ports) and check, 32 frames from 32 ports.
fn bench_port_security(c: &mut Criterion) {
    use xvs_switch::port_security::{Guard, check};
    use xvs_switch::wire::Mac;
    let mut g = c.benchmark_group("port_security");
    g.throughput(Throughput::Elements(BURST as u64));
    let guards: hashbrown::HashMap<u32, Guard> = (1..=1024u32)
        .map(|n| {
            let b = n.to_be_bytes();
            let guard = Guard {
                mac: Mac([2, 0, 0, b[1], b[2], b[3]]),
                ip: std::net::Ipv4Addr::new(10, b[1], b[2], b[3]),
            };
            (n, guard)
        })
        .collect();
    let frames: Vec<(xvs_switch::classify::FlowKey, Vec<u8>)> = (0..BURST as u32)
        .map(|i| {
            let src = 1 + i * 31;
            let f = udp_frame(src, 5000);
            (classify(&f, src, 0).unwrap(), f)
        })
        .collect();
    g.bench_function("check_burst32_1k_ports", |b| {
        b.iter(|| {
            let mut dropped = 0u32;
            for (k, f) in &frames {
                if let Some(&gd) = guards.get(&k.in_port) {
                    dropped += u32::from(check(black_box(k), f, gd).is_some());
                }
            }
            dropped
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_classify,
    bench_port_security,
    bench_l2,
    bench_pipeline,
    bench_offload
);
criterion_main!(benches);
