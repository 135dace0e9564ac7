//! Shared helpers for the xvs criterion benches: literal frames and ready-made engines.

use std::sync::Arc;

use xvs_switch::classify::{ClassifyStage, Mac};
use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::domain::Domain;
use xvs_switch::engine::Engine;
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::FramePool;
use xvs_switch::l2::L2Stage;
use xvs_switch::offload::Offload;
use xvs_switch::port::BURST;
use xvs_switch::port::mem::MemPort;
use xvs_switch::stage::{Batch, FrameMeta, Stage, StageContext};

/// A 64-byte (without FCS: 60) IPv4/UDP frame from host `src` to host `dst`, where host `n`
/// has MAC 02:00:00:NN:NN:NN and address 10.x.y.z from n.
pub fn udp_frame(src: u32, dst: u32) -> Vec<u8> {
    let s = src.to_be_bytes();
    let d = dst.to_be_bytes();
    let mut f = vec![
        2, 0, 0, d[1], d[2], d[3], 2, 0, 0, s[1], s[2], s[3], 0x08, 0x00,
    ];
    f.extend_from_slice(&[0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, s[1], s[2], s[3], 10, d[1], d[2], d[3]]);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 26, 0, 0]);
    f.extend_from_slice(&[0x41; 18]);
    f
}

/// An engine with one bridge: port 1 generates `count` frames cycling through `templates`,
/// port 2 is a sink. Both hosts are learned before returning, so forwarding is unicast.
pub fn two_port_engine(templates: Vec<Vec<u8>>, count: u64, pool_frames: u32) -> Engine {
    let pool = FramePool::new_heap(pool_frames).expect("pool");
    let mut e = Engine::new(pool, Arc::new(DropCounters::default()));
    e.add_bridge(1, "br0".into(), FdbConfig::default());
    e.insert_port(
        1,
        1,
        Box::new(MemPort::generator(templates, count)),
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
    e
}

/// An IPv4/TCP GSO super-frame with `payload` bytes (10.0.0.1:40000 -> 10.0.0.2:5201), as a
/// TAP with offloads hands it over: MSS 1448, checksum left partial.
pub fn tcp_super_frame(payload: usize) -> (Vec<u8>, Offload) {
    let ip_len = (20 + 20 + payload) as u16;
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    // TCP: ports, seq, ack, data offset 5, ACK|PSH, window, checksum (partial), urgent.
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0x10, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x50, 0x18, 0x02, 0x00, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    let offload = Offload::tcpv4_gso(1448);
    (f, offload)
}

/// The classify stage's bench: a burst of IPv4/UDP frames (host i -> i + 1) from port 1.
pub struct ClassifyBench {
    pool: FramePool,
    batch: Batch,
    domain: Domain,
    counters: DropCounters,
}

impl ClassifyBench {
    /// A burst of [`BURST`] frames, ready to classify.
    pub fn new() -> ClassifyBench {
        let mut pool = FramePool::new_heap(64).expect("pool");
        let mut batch = Batch::default();
        for i in 0..BURST as u32 {
            let f = pool.alloc_copy(&udp_frame(i, i + 1)).expect("frame");
            let _ = batch.push(f, FrameMeta::default());
        }
        batch.begin(1, 1, 0);
        ClassifyBench {
            pool,
            batch,
            domain: Domain::default(),
            counters: DropCounters::default(),
        }
    }

    /// Classifies the burst once more.
    #[inline]
    pub fn run(&mut self) {
        self.batch.reset_verdicts();
        let mut ctx = StageContext::new(&mut self.pool, &self.domain, &self.counters, 1);
        ClassifyStage.process(&mut ctx, std::hint::black_box(&mut self.batch));
    }
}

impl Default for ClassifyBench {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ClassifyBench {
    fn drop(&mut self) {
        self.batch.free_all(&mut self.pool);
    }
}

/// The L2 stage's bench: `macs` hosts learned over 16 ports, a burst of known unicast keys
/// (pseudo-random sources and destinations among them).
pub struct L2Bench {
    l2: L2Stage,
    domain: Domain,
    counters: DropCounters,
    /// Stands in for the worker's pool (the stage reads keys, not bytes).
    pool: FramePool,
    scratch: FramePool,
    batch: Batch,
}

impl L2Bench {
    /// The stage with `macs` learned hosts and a burst of keys.
    pub fn new(macs: u32) -> L2Bench {
        let mut l2 = L2Stage::new(FdbConfig {
            ageing_secs: 300,
            capacity: 65536,
            port_limit: 65536,
        });
        let mut domain = Domain::default();
        for p in 1..=16 {
            domain.add_member(p, 0);
        }
        let host = |n: u32| {
            let b = n.to_be_bytes();
            Mac([2, 0, 0, b[1], b[2], b[3]])
        };
        for n in 0..macs {
            l2.fdb_mut().learn(0, host(n), 1 + n % 16, 0);
        }
        let mut scratch = FramePool::new_heap(BURST as u32).expect("pool");
        let mut batch = Batch::default();
        for i in 0..BURST {
            if let Some(f) = scratch.alloc() {
                let _ = batch.push(f, FrameMeta::default());
            }
            let s = ((i as u32).wrapping_mul(2654435761)) % macs;
            let d = ((i as u32).wrapping_mul(40503) + 7) % macs;
            batch.keys[i].in_port = 1 + s % 16;
            batch.keys[i].dl_src = host(s);
            batch.keys[i].dl_dst = host(d);
        }
        L2Bench {
            l2,
            domain,
            counters: DropCounters::default(),
            pool: FramePool::new_heap(1).expect("pool"),
            scratch,
            batch,
        }
    }

    /// Learns and forwards the burst once more.
    #[inline]
    pub fn run(&mut self) {
        self.batch.reset_verdicts();
        let mut ctx = StageContext::new(&mut self.pool, &self.domain, &self.counters, 1);
        self.l2
            .process(&mut ctx, std::hint::black_box(&mut self.batch));
    }
}

impl Drop for L2Bench {
    fn drop(&mut self) {
        self.batch.free_all(&mut self.scratch);
    }
}

/// The whole-pipeline bench: [`two_port_engine`] forwarding unicast host 1 -> host 2 (host 2
/// learned on the sink port), one burst of 32 per [`Engine::poll`].
pub fn pipeline_engine() -> Engine {
    let mut e = two_port_engine(vec![udp_frame(1, 2)], u64::MAX, 4096);
    if let Some(l2) = e.l2_mut(1) {
        l2.fdb_mut().learn(0, Mac([2, 0, 0, 0, 0, 2]), 2, 0);
    }
    e
}
