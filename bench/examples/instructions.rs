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
use std::hint::black_box;

use xvs_bench::{ClassifyBench, L2Bench, pipeline_engine};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.get(1).map(String::as_str).unwrap_or("pipeline");
    let iters: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    match bench {
        "classify" => {
            let mut b = ClassifyBench::new();
            for _ in 0..iters {
                b.run();
            }
        }
        "l2_1k" | "l2_64k" => {
            let mut b = L2Bench::new(if bench == "l2_1k" { 1024 } else { 65536 });
            for _ in 0..iters {
                b.run();
            }
        }
        _ => {
            let mut e = pipeline_engine();
            for _ in 0..iters {
                black_box(e.poll(1));
            }
        }
    }
}
