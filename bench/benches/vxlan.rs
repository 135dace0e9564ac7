//! Criterion benches of xvs-vxlan, per packet at bursts of 32 (`Throughput::Elements(32)`):
//! encap (the peer template stamped into the headroom, the source port hashed from the inner
//! flow), encap with the flood-or-unicast lookup of the inner destination in front of it
//! (a known MAC of 1K: unicast), decap alone (the outer header checks), decap and learning of
//! the inner source MAC in a remote FDB of 1K MACs (a refresh), and encap + decap and
//! learning of the same burst, which the overlay's budget (40 ns a packet) is about.
//! The frames sit in their buffers as in a frame pool: 50 bytes of room, then the inner frame;
//! nothing is copied.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xvs_switch::port::BURST;
use xvs_switch::wire::Mac;
use xvs_vxlan::{
    Destination, LocalVtep, OUTER_LEN, PeerConfig, PeerTemplate, Peers, RemoteFdb, RemoteFdbConfig,
    Vni, decap,
};

/// Inner MACs behind the remote VTEP, all learnt before timing.
const MACS: u32 = 1024;
const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Inner frame: Ethernet + IPv4 + UDP + 64 bytes of payload.
const INNER_LEN: usize = 14 + 20 + 8 + 64;
const FRAME_LEN: usize = OUTER_LEN + INNER_LEN;

fn mac(i: u32) -> Mac {
    let b = i.to_be_bytes();
    Mac([0x02, 0x42, 0x0a, b[1], b[2], b[3]])
}

/// Inner frame `i`: from container MAC `i % MACS` (10.1.x.y) to another known one (10.2.0.1),
/// UDP port varying.
fn inner(i: u32) -> [u8; INNER_LEN] {
    let mut f = [0u8; INNER_LEN];
    f[0..6].copy_from_slice(&mac((i + MACS / 2) % MACS).0);
    f[6..12].copy_from_slice(&mac(i % MACS).0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip.copy_from_slice(&[
        0x45,
        0,
        0,
        92,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
        10,
        1,
        (i >> 8) as u8,
        i as u8,
        10,
        2,
        0,
        1,
    ]);
    f[34..36].copy_from_slice(&(30000 + (i % 5000) as u16).to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[38..40].copy_from_slice(&72u16.to_be_bytes());
    f
}

struct Setup {
    /// The local end's template to the remote (encap) and the remote's to us (what decap
    /// receives).
    to_remote: PeerTemplate,
    from_remote: PeerTemplate,
    local: LocalVtep,
    fdb: RemoteFdb,
    peers: Peers,
    vni: Vni,
    /// A burst of frames with room in front: inner frames only.
    outbound: Vec<[u8; FRAME_LEN]>,
    /// A burst of encapsulated frames from the remote.
    inbound: Vec<[u8; FRAME_LEN]>,
}

fn setup() -> Setup {
    let vni = Vni::new(4096).unwrap();
    let local_mac = Mac([0x02, 0, 0, 0, 0, 1]);
    let remote_mac = Mac([0x02, 0, 0, 0, 0, 2]);
    let to_remote = PeerTemplate::new(PeerConfig::new(local_mac, remote_mac, LOCAL, REMOTE, vni));
    let from_remote = PeerTemplate::new(PeerConfig::new(remote_mac, local_mac, REMOTE, LOCAL, vni));
    let mut fdb = RemoteFdb::new(RemoteFdbConfig::default());
    for i in 0..MACS {
        fdb.learn(vni, mac(i), REMOTE, 0).unwrap();
    }
    let mut peers = Peers::default();
    peers.add(vni, REMOTE).unwrap();
    // Frames of a burst come from MACs spread over the 1K (a stride coprime to 1024).
    let outbound: Vec<[u8; FRAME_LEN]> = (0..BURST as u32)
        .map(|j| {
            let mut f = [0u8; FRAME_LEN];
            f[OUTER_LEN..].copy_from_slice(&inner(j * 37));
            f
        })
        .collect();
    let inbound = outbound
        .iter()
        .map(|f| {
            let mut f = *f;
            from_remote.encap(&mut f).unwrap();
            f
        })
        .collect();
    Setup {
        to_remote,
        from_remote,
        local: LocalVtep::new(LOCAL),
        fdb,
        peers,
        vni,
        outbound,
        inbound,
    }
}

/// Decaps a burst and learns each inner source; returns how many were delivered.
#[inline]
fn decap_burst(s: &mut Setup, frames: &[[u8; FRAME_LEN]], now: u64) -> usize {
    let mut ok = 0;
    for f in frames {
        if let Ok(d) = decap(f, &s.local) {
            let inner = &f[d.inner_range()];
            let src = Mac([inner[6], inner[7], inner[8], inner[9], inner[10], inner[11]]);
            let _ = black_box(s.fdb.learn(d.vni, src, d.remote_ip, now));
            ok += 1;
        }
    }
    ok
}

fn bench_vxlan(c: &mut Criterion) {
    let mut s = setup();
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Elements(BURST as u64));

    let mut bufs = s.outbound.clone();
    g.bench_function("encap_burst32", |b| {
        b.iter(|| {
            for f in bufs.iter_mut() {
                black_box(s.to_remote.encap(f).is_ok());
            }
        })
    });

    g.bench_function("encap_with_destination_lookup_burst32", |b| {
        b.iter(|| {
            for f in bufs.iter_mut() {
                let dst = Mac([f[OUTER_LEN], f[51], f[52], f[53], f[54], f[55]]);
                match s.peers.destination(&s.fdb, s.vni, dst, 1) {
                    Ok(Destination::Unicast(_)) => black_box(s.to_remote.encap(f).is_ok()),
                    other => panic!("{other:?}"),
                };
            }
        })
    });

    let inbound = s.inbound.clone();
    g.bench_function("decap_only_burst32", |b| {
        b.iter(|| {
            for f in &inbound {
                black_box(decap(f, &s.local).is_ok());
            }
        })
    });
    g.bench_function("decap_learn_1k_macs_burst32", |b| {
        b.iter(|| assert_eq!(decap_burst(&mut s, &inbound, 1), BURST))
    });

    // The remote's encap of an outbound burst, then our decap and learning of it: one
    // packet's whole way through both ends of the tunnel.
    let mut bufs = s.outbound.clone();
    g.bench_function("encap_then_decap_learn_burst32", |b| {
        b.iter(|| {
            for f in bufs.iter_mut() {
                black_box(s.from_remote.encap(f).is_ok());
            }
            assert_eq!(decap_burst(&mut s, &bufs, 1), BURST);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_vxlan);
criterion_main!(benches);
