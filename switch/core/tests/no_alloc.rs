//! A steady-state pipeline run (receive → classify → L2 → transmit on in-memory ports)
//! allocates nothing: a counting global allocator proves it.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use xvs_switch::classify::Mac;
use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::FramePool;
use xvs_switch::port::mem::MemPort;
use xvs_switch::worker::Engine;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn frame(src: u8, dst: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, src, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, src, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 26, 0, 0]);
    f.extend_from_slice(&[0x41; 18]);
    f
}

#[test]
fn steady_state_forwarding_allocates_nothing() {
    let pool = FramePool::new_heap(1024).unwrap();
    let mut e = Engine::new(pool, Arc::new(DropCounters::default()));
    e.add_bridge(1, "br0".into(), FdbConfig::default());
    // unicast to a learned host, broadcast (flood to two ports), and a malformed runt
    let templates = vec![
        frame(1, [2, 0, 0, 0, 0, 2]),
        frame(1, [0xff; 6]),
        vec![1, 2, 3],
    ];
    e.insert_port(
        1,
        1,
        Box::new(MemPort::generator(templates, 1_000_000)),
        0,
        Arc::new(PortCounters::default()),
    );
    e.insert_port(
        2,
        1,
        Box::new(MemPort::sink()),
        0,
        Arc::new(PortCounters::default()),
    );
    e.insert_port(
        3,
        1,
        Box::new(MemPort::sink()),
        0,
        Arc::new(PortCounters::default()),
    );
    if let Some(br) = e.bridge_mut(1) {
        br.fdb_mut().learn(0, Mac([2, 0, 0, 0, 0, 2]), 2, 0);
    }
    // warm up: the FDB learns host 1, tables settle
    for _ in 0..100 {
        e.poll(1);
    }
    let before = ALLOCS.load(Relaxed);
    let mut frames = 0;
    for i in 0..2000 {
        frames += e.poll(2 + i / 100).0;
    }
    let allocs = ALLOCS.load(Relaxed) - before;
    assert!(frames >= 60_000, "only {frames} frames forwarded");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations while forwarding {frames} frames"
    );
    assert_eq!(e.pool().available(), 1024, "frames leaked from the pool");
}
