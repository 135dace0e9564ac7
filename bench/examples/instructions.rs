//! A fixed amount of one bench's work, for counting instructions: on these noisy shared
//! machines wall-clock numbers of two builds vary by tens of percent between runs, while
//! callgrind's instruction counts repeat exactly. Run it twice with different iteration counts
//! and divide the difference by the extra packets, which cancels start-up:
//!
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions pipeline 20000     # then 40000
//!
//! (`bench/harness/instructions.sh` does exactly that for every bench, optionally against a
//! baseline build.) Benches: classify, l2_1k, l2_64k, pipeline.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use xvs_bench::{two_port_engine, udp_frame};
use xvs_switch::classify::{ClassifyStage, Mac};
use xvs_switch::counters::DropCounters;
use xvs_switch::domain::Domain;
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::FramePool;
use xvs_switch::l2::L2Stage;
use xvs_switch::port::BURST;
use xvs_switch::stage::{Batch, FrameMeta, Stage, StageContext};

fn host(n: u32) -> Mac {
    let b = n.to_be_bytes();
    Mac([2, 0, 0, b[1], b[2], b[3]])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.get(1).map(String::as_str).unwrap_or("pipeline");
    let iters: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let (domain, counters) = (Domain::default(), DropCounters::default());
    match bench {
        "classify" => {
            let mut pool = FramePool::new_heap(64).unwrap();
            let mut batch = Batch::default();
            for i in 0..BURST as u32 {
                let f = pool.alloc_copy(&udp_frame(i, i + 1)).unwrap();
                batch.push(f, FrameMeta::default()).unwrap();
            }
            batch.begin(1, 1, 0);
            for _ in 0..iters {
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
                ClassifyStage.process(&mut ctx, black_box(&mut batch));
            }
            batch.free_all(&mut pool);
        }
        "l2_1k" | "l2_64k" => {
            let macs = if bench == "l2_1k" { 1024 } else { 65536 };
            let mut l2 = L2Stage::new(FdbConfig {
                ageing_secs: 300,
                capacity: 65536,
                port_limit: 65536,
            });
            let mut domain = Domain::default();
            for p in 1..=16 {
                domain.add_member(p, 0);
            }
            for n in 0..macs {
                l2.fdb_mut().learn(0, host(n), 1 + n % 16, 0);
            }
            let pool = FramePool::new_heap(1).unwrap();
            let mut scratch = FramePool::new_heap(BURST as u32).unwrap();
            let mut batch = Batch::default();
            for i in 0..BURST as u32 {
                batch
                    .push(scratch.alloc().unwrap(), FrameMeta::default())
                    .unwrap();
                let s = (i.wrapping_mul(2654435761)) % macs;
                let d = (i.wrapping_mul(40503) + 7) % macs;
                batch.keys[i as usize].in_port = 1 + s % 16;
                batch.keys[i as usize].dl_src = host(s);
                batch.keys[i as usize].dl_dst = host(d);
            }
            for _ in 0..iters {
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
                l2.process(&mut ctx, black_box(&mut batch));
            }
            batch.free_all(&mut scratch);
        }
        _ => {
            let mut e = two_port_engine(vec![udp_frame(1, 2)], u64::MAX, 4096);
            if let Some(l2) = e.l2_mut(1) {
                l2.fdb_mut().learn(0, Mac([2, 0, 0, 0, 0, 2]), 2, 0);
            }
            for _ in 0..iters {
                black_box(e.poll(1));
            }
        }
    }
}
