//! The three-namespace topology with TAP ports: xvsd creates each TAP, which is then moved into
//! its namespace as that namespace's interface (the open fd stays valid across the move).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xvs_tests::{Netns, Xvsd, unique_prefix};

#[test]
fn three_namespaces_on_tap_ports() {
    let p = unique_prefix("lt");
    let x = Xvsd::start(&[]);
    x.must(&["add-br", "brt"]);
    let mut ns = Vec::new();
    let mut taps = Vec::new();
    for i in 0..3 {
        let n = Netns::new(&format!("{p}n{i}"));
        let tap = format!("{p}t{i}");
        x.must(&["add-port", "brt", &tap, "--type", "tap"]);
        xvs_tests::must(&["ip", "link", "set", &tap, "netns", &n.name]);
        n.must(&[
            "ip",
            "addr",
            "add",
            &format!("10.232.0.{}/24", i + 1),
            "dev",
            &tap,
        ]);
        n.must(&["ip", "link", "set", &tap, "up"]);
        ns.push(n);
        taps.push(tap);
    }
    for (a, from) in ns.iter().enumerate() {
        for b in (0..3).filter(|&b| b != a) {
            let ip = format!("10.232.0.{}", b + 1);
            assert!(
                from.reaches(&ip, Duration::from_secs(5)),
                "{} cannot reach {ip} through TAP ports",
                from.name
            );
        }
    }
    let show = x.json(&["show"]);
    for port in show["bridges"][0]["ports"].as_array().unwrap() {
        assert_eq!(port["port_type"], "tap", "{port}");
        assert!(
            port["counters"]["tx_packets"].as_u64().unwrap() > 0,
            "{port}"
        );
    }
    let fdb = x.json(&["fdb/show", "brt"]);
    assert_eq!(fdb["entries"].as_array().unwrap().len(), 3, "{fdb}");

    // A namespace deleted under a TAP port: the port reports it, the others go on.
    drop(ns.pop());
    assert!(ns[0].reaches("10.232.0.2", Duration::from_secs(3)));
    let gone = xvs_tests::wait_until(Duration::from_secs(5), || {
        let show = x.json(&["show"]);
        show["bridges"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == taps[2].as_str() && q["state"] != "up")
    });
    assert!(
        gone,
        "a destroyed TAP still shows as up: {}",
        x.must(&["show"])
    );
}
