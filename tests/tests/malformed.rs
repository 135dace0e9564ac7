//! A scapy burst of malformed frames into an AF_XDP port: each kind is a counted drop with its
//! reason, the daemon lives, and good traffic still flows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xvs_tests::{Topology, Xvsd, drop_count, unique_prefix};

const COUNT: u64 = 20;

#[test]
fn malformed_frames_are_counted_drops() {
    let p = unique_prefix("mf");
    let mut x = Xvsd::start(&[]);
    x.must(&["add-br", "brm"]);
    let t = Topology::veths(&x, "brm", &p, "10.235.0", 2);
    assert!(t.ns[0].reaches(&t.ips[1], Duration::from_secs(5)));

    // The 10-byte runt is sent too, but the kernel pads a short frame from a packet socket to a
    // full Ethernet header (ethertype 0), so it arrives as an unknown ethertype; true runts are
    // covered by classify's unit tests.
    let reasons = [
        "truncated_header",
        "bad_ipv4_header",
        "bad_ip_length",
        "unknown_ethertype",
        "stacked_vlan",
        "bad_l4_length",
        "vlan_tagged_on_access_port",
        "multicast_source_mac",
    ];
    let before = x.json(&["stats"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/malformed.py");
    let src = t.ns[0].mac("eth0");
    let dst = t.ns[1].mac("eth0");
    t.ns[0].must(&[
        "/usr/bin/python3",
        script,
        "eth0",
        &src,
        &dst,
        &COUNT.to_string(),
    ]);

    let counted = xvs_tests::wait_until(Duration::from_secs(5), || {
        let now = x.json(&["stats"]);
        reasons
            .iter()
            .all(|r| drop_count(&now, r) >= drop_count(&before, r) + COUNT)
    });
    let after = x.json(&["stats"]);
    for r in reasons {
        eprintln!(
            "{r}: {} -> {}",
            drop_count(&before, r),
            drop_count(&after, r)
        );
    }
    assert!(counted, "not every malformed kind was counted: {after}");
    let port = &after["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["port"] == t.ports[0].as_str())
        .unwrap()
        .clone();
    assert!(
        port["rx_drops"].as_u64().unwrap() >= COUNT * reasons.len() as u64,
        "{port}"
    );
    assert!(x.alive(), "xvsd died on malformed frames");
    assert!(t.ns[0].ping(&t.ips[1], 3), "good traffic stopped");
    assert!(x.stop(), "xvsd did not exit cleanly");
}
