//! A spread bridge (one network's ports on several workers, issue 15) on memory ports: ports
//! that any thread can write are spread over the workers, the rest stay home; frames cross
//! workers directly or by hand-off; MAC learning is shared; floods reach every worker's ports;
//! a removed port's MACs leave every replica; accounting holds.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use xvs_switch::chain::Chain;
use xvs_switch::classify::ClassifyStage;
use xvs_switch::datapath::{Datapath, DatapathConfig};
use xvs_switch::fdb::FdbConfig;
use xvs_switch::fdb_sync::FdbMesh;
use xvs_switch::l2::L2Stage;
use xvs_switch::port::mem::{MemPort, MemPortHandle};

fn frame(src: u8, dst: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, src, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[
        2, 0, 0, 0, 0, src, 10, 0, 0, src, 0, 0, 0, 0, 0, 0, 10, 0, 0, 9,
    ]);
    f
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn spread(workers: u32) -> Datapath {
    let mut dp = Datapath::start(DatapathConfig {
        workers,
        pool_frames: 1024,
        umem: false,
    })
    .unwrap();
    let mesh = FdbMesh::new(workers as u16);
    dp.add_spread_bridge("net", FdbConfig::default(), "", move |w| {
        Chain::new(vec![
            Box::new(ClassifyStage),
            Box::new(L2Stage::new(FdbConfig::default()).with_sync(mesh.clone(), w)),
        ])
    })
    .unwrap();
    dp
}

/// Adds a port whose frames the test reads back; `shared`: writable from any worker (as a
/// TAP is), so it may be placed on any worker.
fn port(dp: &mut Datapath, name: &str, shared: bool) -> MemPortHandle {
    let (p, h) = MemPort::new();
    dp.add_port_io("net", name, Box::new(p.with_shared_tx(shared)), 0)
        .unwrap();
    h
}

fn workers_of(dp: &Datapath) -> Vec<(String, u32)> {
    dp.status().unwrap()[0]
        .ports
        .iter()
        .map(|p| (p.name.clone(), p.worker))
        .collect()
}

#[test]
fn shareable_ports_spread_and_frames_cross_workers_both_ways() {
    let mut dp = spread(2);
    let a = port(&mut dp, "a", true);
    let b = port(&mut dp, "b", true);
    let home = port(&mut dp, "home", false);
    let w = workers_of(&dp);
    assert_ne!(w[0].1, w[1].1, "a and b on different workers: {w:?}");
    assert_eq!(w[2].1, dp.bridge_worker("net").unwrap() as u32);

    // a broadcast from a reaches b (written from a's worker) and home (handed over, if
    // home is on another worker).
    a.inject(&frame(1, [0xff; 6]));
    assert!(wait_for(|| b.take_tx().len() == 1));
    assert!(wait_for(|| home.take_tx().len() == 1));
    // b answers a: a's MAC was learned on a's worker and shared with b's.
    assert!(wait_for(|| {
        b.inject(&frame(2, mac(1)));
        std::thread::sleep(Duration::from_millis(5));
        !a.take_tx().is_empty() && home.take_tx().is_empty()
    }));
    // Now a to b is unicast too, and nothing floods to home.
    for _ in 0..50 {
        a.inject(&frame(1, mac(2)));
    }
    let mut got = 0;
    assert!(wait_for(|| {
        got += b.take_tx().len();
        got == 50
    }));
    assert!(home.take_tx().is_empty());
    // Both replicas hold both stations; the home one is what fdb/show reads.
    let fdb = dp.fdb("net").unwrap();
    assert_eq!(fdb.len(), 2, "{fdb:?}");
    // The trace runs on a's worker and names b's port.
    let t = dp.trace("net", "a", frame(1, mac(2))).unwrap();
    assert_eq!(t.action, "output:b");

    // Deleting b: its MAC leaves every replica, so frames to it flood (to home) again.
    dp.del_port("net", "b").unwrap();
    a.inject(&frame(1, mac(2)));
    assert!(wait_for(|| home.take_tx().len() == 1));
    let unaccounted: i64 = dp.pools().unwrap().iter().map(|p| p.unaccounted).sum();
    assert_eq!(unaccounted, 0);
    let gone = dp
        .drops()
        .iter()
        .filter(|(r, _)| r.name() == "port_gone")
        .map(|(_, n)| *n)
        .sum::<u64>();
    assert_eq!(gone, 0);
}

#[test]
fn four_workers_place_by_load_and_learn_everywhere() {
    let mut dp = spread(4);
    let hs: Vec<MemPortHandle> = (1..=8)
        .map(|i| port(&mut dp, &format!("p{i}"), true))
        .collect();
    let mut per_worker = [0; 4];
    for (_, w) in workers_of(&dp) {
        per_worker[w as usize] += 1;
    }
    assert_eq!(per_worker, [2, 2, 2, 2]);
    // Every port says hello (a broadcast); then every port sends to every other one as
    // unicast, and each frame arrives exactly once where it was sent.
    for (i, h) in hs.iter().enumerate() {
        h.inject(&frame(i as u8 + 1, [0xff; 6]));
    }
    let mut seen = vec![0; hs.len()];
    assert!(wait_for(|| {
        for (i, h) in hs.iter().enumerate() {
            seen[i] += h.take_tx().len();
        }
        seen.iter().all(|n| *n == hs.len() - 1)
    }));
    assert!(wait_for(|| dp.fdb("net").unwrap().len() == hs.len()));
    std::thread::sleep(Duration::from_millis(20));
    for (i, h) in hs.iter().enumerate() {
        for j in 0..hs.len() {
            if j != i {
                h.inject(&frame(i as u8 + 1, mac(j as u8 + 1)));
            }
        }
    }
    let mut got = vec![Vec::new(); hs.len()];
    assert!(wait_for(|| {
        for (i, h) in hs.iter().enumerate() {
            got[i].extend(h.take_tx());
        }
        got.iter().all(|g| g.len() == hs.len() - 1)
    }));
    for (j, g) in got.iter().enumerate() {
        assert!(g.iter().all(|f| f[..6] == mac(j as u8 + 1)), "port {j}");
    }
    let unaccounted: i64 = dp.pools().unwrap().iter().map(|p| p.unaccounted).sum();
    assert_eq!(unaccounted, 0);
}
