//! The datapath side of xvs-vxlan allocates nothing once its tables are made: decap, learning
//! (new MACs, refreshes, moves), lookups, the flood-or-unicast choice, encap, MSS clamping and
//! expiry, over many rounds of MACs coming and ageing out (a counting global allocator, as
//! `switch/core`'s and `lb`'s no_alloc tests).
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::Ipv4Addr;
use xvs_stage::alloc_count::{CountingAllocator, allocations};

use xvs_stage::wire::Mac;
use xvs_vxlan::{
    LocalVtep, OUTER_LEN, PeerConfig, PeerTemplate, Peers, RemoteFdb, RemoteFdbConfig, Vni,
    clamp_mss, decap,
};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn mac(n: u32) -> Mac {
    let b = n.to_be_bytes();
    Mac([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

#[test]
fn steady_state_allocates_nothing() {
    let vni = Vni::new(4096).unwrap();
    let cfg = RemoteFdbConfig {
        ageing_secs: 1,
        capacity: 512,
        vni_limit: 512,
        remote_limit: 512,
    };
    let mut fdb = RemoteFdb::new(cfg);
    let mut peers = Peers::default();
    peers.add(vni, A).unwrap();
    let from_a = PeerTemplate::new(PeerConfig::new(mac(0xa), mac(0xb), A, B, vni));
    let to_a = PeerTemplate::new(PeerConfig::new(mac(0xb), mac(0xa), B, A, vni));
    let local = LocalVtep::new(B);
    // A TCP SYN with an MSS option as the inner frame, its source MAC rewritten per round.
    let mut inner = vec![0u8; 14 + 20 + 24];
    inner[12..14].copy_from_slice(&[0x08, 0x00]);
    inner[14] = 0x45;
    inner[14 + 9] = 6;
    inner[34 + 12] = 0x60;
    inner[34 + 13] = 0x02;
    inner[54..58].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let mut buf = vec![0u8; OUTER_LEN + inner.len()];

    let before = allocations();
    let mut now = 0;
    for round in 0..50u32 {
        for i in 0..400u32 {
            let src = mac(round * 400 + i);
            inner[6..12].copy_from_slice(&src.0);
            buf[OUTER_LEN..].copy_from_slice(&inner);
            from_a.encap(&mut buf).unwrap();
            let d = decap(&buf, &local).unwrap();
            let _ = fdb.learn(d.vni, src, d.remote_ip, now);
            let _ = fdb.learn(d.vni, src, if i % 7 == 0 { B } else { A }, now);
            let dst = peers.destination(&fdb, vni, src, now).unwrap();
            std::hint::black_box(dst);
            clamp_mss(&mut buf[d.outer_len..], 14, 1410, false);
            to_a.encap(&mut buf).unwrap();
        }
        now += 2000;
        // A sweep of the whole table, 64 slots at a time.
        for _ in 0..512 / 64 {
            fdb.expire(now, 64);
        }
        assert!(fdb.is_empty());
    }
    assert_eq!(allocations() - before, 0, "allocations on the datapath");
    assert!(fdb.len() <= 512);
}
