//! Three namespaces on one bridge through AF_XDP ports: every pair pings, iperf3 TCP completes,
//! `fdb/show` lists each MAC on its port, `show` and `stats` report backends and counters, a
//! port on another VLAN reaches none of them, and `trace` explains the L2 decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xvs_tests::{Netns, Topology, Xvsd, unique_prefix, veth};

#[test]
fn three_namespaces_on_afxdp_ports() {
    let p = unique_prefix("la");
    let x = Xvsd::start(&[]);
    x.must(&["add-br", "br0"]);
    let t = Topology::veths(&x, "br0", &p, "10.231.0", 3);

    // Every pair, both ways.
    for a in 0..3 {
        for b in 0..3 {
            if a != b {
                assert!(
                    t.ns[a].reaches(&t.ips[b], Duration::from_secs(5)),
                    "{} cannot reach {}",
                    t.ns[a].name,
                    t.ips[b]
                );
            }
        }
    }
    assert!(t.ns[0].ping(&t.ips[2], 5), "steady ping lost packets");

    // Each MAC is learned on its own port.
    let fdb = x.json(&["fdb/show", "br0"]);
    for i in 0..3 {
        let mac = t.ns[i].mac("eth0");
        let e = fdb["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["mac"] == mac.as_str())
            .unwrap_or_else(|| panic!("{mac} not in {fdb}"));
        assert_eq!(
            e["port"],
            t.ports[i].as_str(),
            "{mac} on the wrong port: {fdb}"
        );
        assert_eq!(e["vlan"], 0);
    }

    // show: backend and mode per port; counters moved.
    let show = x.json(&["show"]);
    let br = &show["bridges"][0];
    assert_eq!(br["name"], "br0");
    assert_eq!(br["ports"].as_array().unwrap().len(), 3);
    for port in br["ports"].as_array().unwrap() {
        assert_eq!(port["port_type"], "afxdp");
        assert!(
            port["mode"] == "native" || port["mode"] == "generic",
            "{port}"
        );
        assert_eq!(port["state"], "up");
        assert!(port["counters"]["rx_packets"].as_u64().unwrap() > 0);
    }
    let stats = x.json(&["stats"]);
    assert_eq!(stats["ports"].as_array().unwrap().len(), 3);
    assert!(
        stats["drops"].as_array().unwrap().len() > 5,
        "every reason listed"
    );

    // A bounded iperf3 TCP run completes (checksums right through the switch).
    let bps = t.ns[0].iperf3_to(&t.ns[2], &t.ips[2], 2);
    eprintln!(
        "iperf3 TCP through xvs AF_XDP ports: {:.2} Gbit/s",
        bps / 1e9
    );
    assert!(bps > 1e8, "TCP through xvs at only {bps} bit/s");

    // trace: a learned destination is an output to its port.
    let trace = x.json(&[
        "trace",
        "br0",
        &format!(
            "in_port={},dl_src={},dl_dst={},udp,nw_src={},nw_dst={},tp_src=1,tp_dst=2",
            t.ports[0],
            t.ns[0].mac("eth0"),
            t.ns[1].mac("eth0"),
            t.ips[0],
            t.ips[1]
        ),
    ]);
    assert_eq!(trace["action"], format!("output:{}", t.ports[1]), "{trace}");
    let bcast = x.json(&[
        "trace",
        "br0",
        &format!("in_port={},dl_dst=ff:ff:ff:ff:ff:ff", t.ports[0]),
    ]);
    let action = bcast["action"].as_str().unwrap();
    assert!(
        action.starts_with("flood:") && !action.contains(&t.ports[0]),
        "{bcast}"
    );

    // A port on VLAN 20 with an address in the same subnet reaches none of them.
    let other = Netns::new(&format!("{p}v"));
    let host = format!("{p}pv");
    let _l = veth(&host, &other, "eth0", "10.231.0.99/24");
    x.must(&["add-port", "br0", &host, "--vlan", "20"]);
    for ip in &t.ips {
        assert!(other.unreachable(ip), "VLAN 20 port reached {ip}");
    }
    assert!(t.ns[0].unreachable("10.231.0.99"));
    let show = x.json(&["show"]);
    let vport = show["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == host.as_str())
        .unwrap()
        .clone();
    assert_eq!(vport["vlan"], 20);
    // ... while the untagged domain still works.
    assert!(t.ns[1].ping(&t.ips[0], 2));

    // del-port: the port is gone, its MACs flushed.
    x.must(&["del-port", "br0", &t.ports[2]]);
    assert!(t.ns[0].unreachable(&t.ips[2]));
    let fdb = x.json(&["fdb/show", "br0"]);
    assert!(
        !fdb["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["port"] == t.ports[2].as_str()),
        "{fdb}"
    );
    x.must(&["fdb/flush", "br0"]);
    assert!(t.ns[0].reaches(&t.ips[1], Duration::from_secs(3)));
    x.must(&["del-br", "br0"]);
    assert_eq!(x.json(&["show"])["bridges"].as_array().unwrap().len(), 0);
}
