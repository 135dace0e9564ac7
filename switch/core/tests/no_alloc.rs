//! A steady-state pipeline run (receive → the bridge's chain of stages, classify → L2 →
//! transmit on in-memory ports) allocates nothing: a counting global allocator proves it, for
//! plain frames, for GSO super-frames segmented in software, and for frames to the gateway's
//! pipe port.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use xvs_stage::alloc_count::{CountingAllocator, allocations as allocs};
use xvs_switch::classify::Mac;
use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::engine::Engine;
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::FramePool;
use xvs_switch::offload::Offload;
use xvs_switch::port::PortIo;
use xvs_switch::port::mem::MemPort;
use xvs_switch::port::pipe::pipe;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn frame(src: u8, dst: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, src, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, src, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 26, 0, 0]);
    f.extend_from_slice(&[0x41; 18]);
    f
}

/// An engine over a heap pool of `frames` with one bridge whose ports 1, 2, 3 are `ports`, and
/// host 02:00:00:00:00:02 learned on port 2.
fn engine(frames: u32, ports: [MemPort; 3]) -> Engine {
    let mut e = Engine::new(
        FramePool::new_heap(frames).unwrap(),
        Arc::new(DropCounters::default()),
    );
    e.add_bridge(1, "br0".into(), FdbConfig::default());
    for (id, port) in (1..).zip(ports) {
        e.insert_port(id, 1, Box::new(port), 0, Arc::new(PortCounters::default()));
    }
    if let Some(l2) = e.l2_mut(1) {
        l2.fdb_mut().learn(0, Mac([2, 0, 0, 0, 0, 2]), 2, 0);
    }
    e
}

#[test]
fn steady_state_forwarding_allocates_nothing() {
    // unicast to a learned host, broadcast (flood to two ports), and a malformed runt
    let templates = vec![
        frame(1, [2, 0, 0, 0, 0, 2]),
        frame(1, [0xff; 6]),
        vec![1, 2, 3],
    ];
    let mut e = engine(
        1024,
        [
            MemPort::generator(templates, 1_000_000),
            MemPort::sink(),
            MemPort::sink(),
        ],
    );
    // warm up: the FDB learns host 1, tables settle
    for _ in 0..100 {
        e.poll(1);
    }
    let before = allocs();
    let mut frames = 0;
    for i in 0..2000 {
        frames += e.poll(2 + i / 100).0;
    }
    let allocs = allocs() - before;
    assert!(frames >= 60_000, "only {frames} frames forwarded");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations while forwarding {frames} frames"
    );
    assert_eq!(e.pool().available(), 1024, "frames leaked from the pool");
}

/// A 20 000-byte IPv4/TCP super-frame from host 1 to host 2 with its checksum left partial.
fn super_frame() -> (Vec<u8>, Offload) {
    let payload = 20_000usize;
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0x10, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x50, 0x18, 0x02, 0x00, 0, 0, 0, 0]);
    f.resize(f.len() + payload, 0x5a);
    let off = Offload::tcpv4_gso(1448);
    (f, off)
}

#[test]
fn steady_state_segmentation_allocates_nothing() {
    // Port 1 (a TAP-like source) floods super-frames to port 2 (no offloads: segmented) and
    // port 3 (offloads: whole).
    let (sup, off) = super_frame();
    let mut flood = sup.clone();
    flood[..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    let mut e = engine(
        2048,
        [
            MemPort::generator_with_offloads(vec![(sup, off), (flood, off)], 1_000_000),
            MemPort::sink(),
            MemPort::sink().with_offloads(true),
        ],
    );
    for _ in 0..20 {
        e.poll(1);
    }
    let before = allocs();
    let mut frames = 0;
    for i in 0..200 {
        frames += e.poll(2 + i / 100).0;
    }
    let allocs = allocs() - before;
    assert!(frames >= 6_000, "only {frames} super-frames forwarded");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations while forwarding {frames} super-frames"
    );
    assert_eq!(e.pool().available(), 2048, "frames leaked from the pool");
}

#[test]
fn steady_state_frames_to_the_gateway_pipe_allocate_nothing() {
    // Broadcasts from port 1 flood to a sink and to the gateway's pipe port, whose local end
    // (on this thread, as the gateway thread would) reads each frame and gives its buffer back.
    let (pipe_port, end) = pipe().unwrap();
    let mut e = Engine::new(
        FramePool::new_heap(1024).unwrap(),
        Arc::new(DropCounters::default()),
    );
    e.add_bridge(1, "br0".into(), FdbConfig::default());
    let ports: [Box<dyn PortIo>; 3] = [
        Box::new(MemPort::generator(vec![frame(1, [0xff; 6])], 1_000_000)),
        Box::new(MemPort::sink()),
        Box::new(pipe_port),
    ];
    for (id, port) in (1..).zip(ports) {
        e.insert_port(id, 1, port, 0, Arc::new(PortCounters::default()));
    }
    let mut read = 0u64;
    let drain = |read: &mut u64| {
        while let Some(buf) = end.recv() {
            *read += 1;
            end.recycle(buf);
        }
    };
    for _ in 0..100 {
        e.poll(1);
        drain(&mut read);
    }
    let before = allocs();
    for i in 0..1000 {
        e.poll(2 + i / 100);
        drain(&mut read);
    }
    let allocs = allocs() - before;
    assert!(read >= 30_000, "only {read} frames reached the gateway");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations for {read} frames to the gateway"
    );
    assert_eq!(e.pool().available(), 1024, "frames leaked from the pool");
}
