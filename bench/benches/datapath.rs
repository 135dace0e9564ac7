//! Criterion benches of each datapath stage and the whole pipeline, per packet at bursts of 32:
//! classification, the L2 bridge with 1K and 64K learned MACs, classify → L2 → output on
//! in-memory ports, and the software offloads (TSO of a 64 KiB super-frame, checksum
//! completion) that frames from TAP endpoints need on their way to ports without offloads.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use xvs_bench::{tcp_super_frame, two_port_engine, udp_frame};
use xvs_switch::checksum::complete_checksum;
use xvs_switch::classify::{ClassifyStage, Mac, classify};
use xvs_switch::counters::DropCounters;
use xvs_switch::domain::Domain;
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::{FRAME_CAPACITY, FramePool};
use xvs_switch::l2::L2Stage;
use xvs_switch::offload::Offload;
use xvs_switch::port::BURST;
use xvs_switch::segment::Segmenter;
use xvs_switch::stage::{Batch, FrameMeta, Stage, StageContext};

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut pool = FramePool::new_heap(64).unwrap();
    let mut batch = Batch::default();
    for i in 0..BURST as u32 {
        batch
            .push(
                pool.alloc_copy(&udp_frame(i, i + 1)).unwrap(),
                FrameMeta::default(),
            )
            .unwrap();
    }
    batch.begin(1, 1, 0);
    let (domain, counters) = (Domain::default(), DropCounters::default());
    g.bench_function("udp_burst32", |b| {
        b.iter(|| {
            batch.reset_verdicts();
            let mut ctx = StageContext {
                pool: &pool,
                now_ms: 1,
                trace: None,
                domain: &domain,
                counters: &counters,
                worker: 0,
                workers: 1,
            };
            ClassifyStage.process(&mut ctx, black_box(&mut batch))
        })
    });
    let frame = udp_frame(1, 2);
    g.throughput(Throughput::Elements(1));
    g.bench_function("udp_single", |b| {
        b.iter(|| classify(black_box(&frame), 1, 0))
    });
    g.finish();
    batch.free_all(&mut pool);
}

fn bench_l2(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2");
    g.throughput(Throughput::Elements(BURST as u64));
    for macs in [1024u32, 65536] {
        let mut br = L2Stage::new(FdbConfig {
            ageing_secs: 300,
            capacity: 65536,
            port_limit: 65536,
        });
        let mut domain = Domain::default();
        for p in 1..=16 {
            domain.add_member(p, 0);
        }
        let counters = DropCounters::default();
        // Learn `macs` hosts spread over 16 ports.
        let host = |n: u32| {
            let b = n.to_be_bytes();
            Mac([2, 0, 0, b[1], b[2], b[3]])
        };
        for n in 0..macs {
            br.fdb_mut().learn(0, host(n), 1 + n % 16, 0);
        }
        let pool = FramePool::new_heap(1).unwrap();
        let mut scratch = FramePool::new_heap(BURST as u32).unwrap();
        let mut batch = Batch::default();
        for i in 0..BURST as u32 {
            batch
                .push(scratch.alloc().unwrap(), FrameMeta::default())
                .unwrap();
            // pseudo-random known source and destination
            let s = (i.wrapping_mul(2654435761)) % macs;
            let d = (i.wrapping_mul(40503) + 7) % macs;
            batch.keys[i as usize].in_port = 1 + s % 16;
            batch.keys[i as usize].dl_src = host(s);
            batch.keys[i as usize].dl_dst = host(d);
        }
        g.bench_function(format!("learn_forward_{}k_macs", macs / 1024), |b| {
            b.iter(|| {
                batch.reset_verdicts();
                let mut ctx = StageContext {
                    pool: &pool,
                    now_ms: 1,
                    trace: None,
                    domain: &domain,
                    counters: &counters,
                    worker: 0,
                    workers: 1,
                };
                br.process(&mut ctx, black_box(&mut batch));
            })
        });
        batch.free_all(&mut scratch);
    }
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    // Host 1 (port 1) -> host 2 (port 2); host 2 learned first by a frame from port 2 is not
    // possible on a sink, so teach the FDB directly.
    let templates = vec![udp_frame(1, 2)];
    g.bench_function("mem_classify_l2_output", |b| {
        b.iter_batched_ref(
            || {
                let mut e = two_port_engine(templates.clone(), u64::MAX, 4096);
                if let Some(l2) = e.l2_mut(1) {
                    l2.fdb_mut().learn(0, Mac([2, 0, 0, 0, 0, 2]), 2, 0);
                }
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

criterion_group!(
    benches,
    bench_classify,
    bench_l2,
    bench_pipeline,
    bench_offload
);
criterion_main!(benches);
