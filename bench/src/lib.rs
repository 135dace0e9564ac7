//! Shared helpers for the xvs criterion benches: literal frames and ready-made engines.

use std::sync::Arc;

use xvs_switch::counters::{DropCounters, PortCounters};
use xvs_switch::engine::Engine;
use xvs_switch::fdb::FdbConfig;
use xvs_switch::frame::FramePool;
use xvs_switch::offload::Offload;
use xvs_switch::port::mem::MemPort;

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
