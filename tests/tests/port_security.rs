//! Port security end to end: an endpoint may send only as itself. A container that takes a
//! second address, changes its MAC or answers ARP for a neighbour's address is cut off for
//! that traffic (counted under `port_security/...`), and its neighbour's ARP cache stays
//! right; an endpoint connected with `--allow-spoofing` may; both survive a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use xvs_tests::{Netns, Xvsd, endpoint_ip, unique_prefix};

/// A quick ping from `ns` to `ip`, from source address `from` if given.
fn pings_from(ns: &Netns, ip: &str, from: Option<&str>) -> bool {
    let mut args = vec!["ping", "-c", "2", "-i", "0.2", "-W", "1", "-q"];
    if let Some(f) = from {
        args.extend(["-I", f]);
    }
    args.push(ip);
    ns.sh(&args).status.success()
}

#[test]
fn endpoints_send_only_as_themselves_unless_allowed() {
    let p = unique_prefix("psec");
    let mut x = Xvsd::start(&[]);
    x.must(&["network", "create", "sec", "--subnet", "10.181.0.0/24"]);
    let a = Netns::new(&format!("{p}a"));
    let b = Netns::new(&format!("{p}b"));
    let r = Netns::new(&format!("{p}r"));
    let ia = endpoint_ip(&x.json(&["network", "connect", "sec", &a.name]));
    let ib = endpoint_ip(&x.json(&["network", "connect", "sec", &b.name]));
    let ep: Value = x.json(&["network", "connect", "sec", &r.name, "--allow-spoofing"]);
    assert_eq!(ep["allow_spoofing"], true, "{ep}");
    let ir = endpoint_ip(&ep);
    assert!(a.reaches(&ib, Duration::from_secs(3)));
    assert!(b.reaches(&ir, Duration::from_secs(3)));

    for round in ["before", "after a restart"] {
        // A second address on a's interface: traffic from it goes nowhere.
        let before = x.drops("port_security", "spoofed_source");
        a.must(&["ip", "addr", "replace", "10.181.0.250/24", "dev", "eth0"]);
        assert!(
            !pings_from(&a, &ib, Some("10.181.0.250")),
            "{round}: spoofed address reached b"
        );
        assert!(
            pings_from(&a, &ib, None),
            "{round}: a's own address still works"
        );
        assert!(
            x.drops("port_security", "spoofed_source") > before,
            "{round}: not counted"
        );
        a.must(&["ip", "addr", "del", "10.181.0.250/24", "dev", "eth0"]);

        // Another MAC on a's interface.
        let mac = a.mac("eth0");
        let before = x.drops("port_security", "spoofed_source");
        a.must(&["ip", "link", "set", "eth0", "address", "02:00:00:00:99:99"]);
        a.must(&["ip", "neigh", "flush", "dev", "eth0"]);
        assert!(
            !pings_from(&a, &ib, None),
            "{round}: a foreign MAC reached b"
        );
        assert!(x.drops("port_security", "spoofed_source") > before);
        a.must(&["ip", "link", "set", "eth0", "address", &mac]);
        assert!(
            a.reaches(&ib, Duration::from_secs(3)),
            "{round}: own MAC back"
        );

        // ARP replies from a claiming r's address: b keeps r's MAC.
        assert!(pings_from(&b, &ir, None));
        let r_mac = r.mac("eth0");
        let b_mac = b.mac("eth0");
        let before = x.drops("port_security", "spoofed_arp");
        let script = format!(
            "from scapy.all import *\n\
             conf.verb = 0\n\
             sendp(Ether(dst='{b_mac}')/ARP(op=2, psrc='{ir}', hwsrc='{mac}', pdst='{ib}', hwdst='{b_mac}'), iface='eth0', count=5, inter=0.05)\n"
        );
        let out = a.sh(&["timeout", "30", "/usr/bin/python3", "-c", &script]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            x.drops("port_security", "spoofed_arp") >= before + 5,
            "{round}: ARP spoofing not counted"
        );
        let neigh = b.must(&["ip", "neigh", "show", &ir]);
        assert!(
            neigh.contains(&r_mac),
            "{round}: b's cache for r poisoned: {neigh}"
        );

        // r may send as another address.
        r.must(&["ip", "addr", "replace", "10.181.0.251/24", "dev", "eth0"]);
        assert!(
            pings_from(&r, &ib, Some("10.181.0.251")),
            "{round}: --allow-spoofing endpoint"
        );
        r.must(&["ip", "addr", "del", "10.181.0.251/24", "dev", "eth0"]);

        x.restart();
        assert!(a.reaches(&ib, Duration::from_secs(5)), "after restart");
    }
    let eps = x.json(&["network", "inspect", "sec"])["endpoints"].clone();
    let allowed: Vec<&Value> = eps
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["allow_spoofing"] == true)
        .collect();
    assert_eq!(allowed.len(), 1, "{eps}");
    assert_eq!(endpoint_ip(allowed[0]), ir);
    let _ = ia;
}
