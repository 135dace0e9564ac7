//! TAP endpoints (`network connect`'s default): the sandbox's interface is a TAP with
//! virtio-net headers and offloads on, so TCP crosses the switch as GSO super-frames with
//! partial checksums. Between two TAP endpoints they pass whole; toward a veth endpoint (AF_XDP,
//! no offloads) and the gateway they are segmented and checksummed in software; from a veth
//! endpoint they arrive complete. Every mix carries iperf3 TCP and DNS over TCP, and no frame is
//! dropped for a failed offload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use xvs_tests::{Netns, Xvsd, drop_count, endpoint_ip, unique_prefix};

fn port_counter(stats: &Value, port: &str, counter: &str) -> u64 {
    stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .and_then(|p| p[counter].as_u64())
        .unwrap_or_else(|| panic!("no {counter} for port {port} in {stats}"))
}

/// The interface's IPv6 link-local address, once duplicate address detection is done.
fn link_local(ns: &Netns, ifname: &str) -> String {
    let mut addr = None;
    let ready = xvs_tests::wait_until(Duration::from_secs(10), || {
        let out = ns.must(&[
            "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link",
        ]);
        addr = out
            .lines()
            .find(|l| !l.contains("tentative"))
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
            .and_then(|a| a.split('/').next())
            .map(str::to_string);
        addr.is_some()
    });
    assert!(
        ready,
        "no usable IPv6 link-local address on {ifname} in {}",
        ns.name
    );
    addr.unwrap()
}

fn offloads_on(ns: &Netns, ifname: &str) -> bool {
    let k = ns.must(&["ethtool", "-k", ifname]);
    k.lines()
        .any(|l| l.starts_with("tcp-segmentation-offload: on"))
}

#[test]
fn tap_endpoints_carry_tcp_in_every_mix_of_port_types() {
    let p = unique_prefix("te");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "fast", "--subnet", "10.235.0.0/24"]);
    let t1 = Netns::new(&format!("{p}t1"));
    let t2 = Netns::new(&format!("{p}t2"));
    let v1 = Netns::new(&format!("{p}v1"));
    let e1 = x.json(&["network", "connect", "fast", &t1.name, "--name", "t1"]);
    let e2 = x.json(&["network", "connect", "fast", &t2.name, "--name", "t2"]);
    let ev = x.json(&[
        "network",
        "connect",
        "fast",
        &v1.name,
        "--name",
        "v1",
        "--port-type",
        "veth",
    ]);
    assert_eq!(
        (&e1["port_type"], &ev["port_type"]),
        (&"tap".into(), &"veth".into())
    );
    let (ip1, ip2, ipv) = (endpoint_ip(&e1), endpoint_ip(&e2), endpoint_ip(&ev));
    // The TAP keeps its offloads (that is the point); the veth's are off (AF_XDP needs full
    // checksums).
    assert!(offloads_on(&t1, "eth0"), "TAP endpoint without TSO");
    assert!(!offloads_on(&v1, "eth0"), "veth endpoint with TSO on");
    assert_eq!(t1.mac("eth0"), e1["mac"].as_str().unwrap());

    // `show` says what each port is.
    let show = x.json(&["show"]);
    let ports = show["bridges"][0]["ports"].as_array().unwrap();
    let mode = |port: &Value| {
        ports
            .iter()
            .find(|q| q["name"] == *port)
            .map(|q| (q["port_type"].clone(), q["mode"].clone()))
            .unwrap_or_else(|| panic!("{port} not in {show}"))
    };
    assert_eq!(mode(&e1["port"]), ("tap".into(), "vnet-hdr".into()));
    assert_eq!(mode(&ev["port"]).0, "afxdp");

    for (a, b) in [(&t1, &ip2), (&t1, &ipv), (&v1, &ip1), (&t2, &ip1)] {
        assert!(a.reaches(b, Duration::from_secs(5)), "{} -> {b}", a.name);
    }
    assert!(t1.ping("10.235.0.1", 2), "gateway from a TAP endpoint");

    // TAP -> TAP: super-frames pass whole, so far fewer frames cross than MSS-sized segments
    // would need.
    let before = x.json(&["stats"]);
    let bps = t1.iperf3_to(&t2, &ip2, 2);
    let after = x.json(&["stats"]);
    let frames = port_counter(&after, e1["port"].as_str().unwrap(), "rx_packets")
        - port_counter(&before, e1["port"].as_str().unwrap(), "rx_packets");
    let bytes = port_counter(&after, e1["port"].as_str().unwrap(), "rx_bytes")
        - port_counter(&before, e1["port"].as_str().unwrap(), "rx_bytes");
    eprintln!(
        "iperf3 TCP TAP -> TAP: {:.2} Gbit/s, {:.0} bytes per frame from the sender",
        bps / 1e9,
        bytes as f64 / frames as f64
    );
    assert!(
        bytes / frames.max(1) > 3000,
        "no GSO super-frames from the TAP endpoint ({bytes} bytes in {frames} frames)"
    );

    // TAP -> veth: segmented in software for the AF_XDP port, every segment checksummed (the
    // veth's stack drops bad checksums, so TCP would stall).
    let before = x.json(&["stats"]);
    let bps = t1.iperf3_to(&v1, &ipv, 2);
    let after = x.json(&["stats"]);
    let vport = ev["port"].as_str().unwrap();
    let tport = e1["port"].as_str().unwrap();
    let out =
        port_counter(&after, vport, "tx_packets") - port_counter(&before, vport, "tx_packets");
    let inn =
        port_counter(&after, tport, "rx_packets") - port_counter(&before, tport, "rx_packets");
    eprintln!(
        "iperf3 TCP TAP -> veth (software TSO): {:.2} Gbit/s, {inn} frames in, {out} out",
        bps / 1e9
    );
    assert!(
        out > inn,
        "super-frames were not segmented ({inn} in, {out} out)"
    );

    // veth -> TAP: full-checksum frames from AF_XDP reach the TAP coalesced into super-frames
    // (software GRO: one write for a run of in-order segments, checksums verified first).
    let backend = |stats: &Value, key: &str| {
        stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["port"] == e1["port"])
            .and_then(|q| q["backend"][key].as_u64())
            .unwrap_or_else(|| panic!("no backend {key} for {} in {stats}", e1["port"]))
    };
    let before = x.json(&["stats"]);
    let bps = v1.iperf3_to(&t1, &ip1, 2);
    let after = x.json(&["stats"]);
    let merged = backend(&after, "tx_coalesced") - backend(&before, "tx_coalesced");
    let supers = backend(&after, "tx_super_frames") - backend(&before, "tx_super_frames");
    eprintln!(
        "iperf3 TCP veth -> TAP (coalesced): {:.2} Gbit/s, {merged} frames in {supers} super-frames",
        bps / 1e9
    );
    assert!(
        supers > 0 && merged >= 2 * supers,
        "segments to the TAP were not coalesced ({merged} frames, {supers} super-frames)"
    );

    // IPv6 (link-local addresses) TAP -> veth: TCPv6 super-frames segmented in software.
    let v1_ll = link_local(&v1, "eth0");
    let bps = t1.iperf3_to(&v1, &format!("{v1_ll}%eth0"), 2);
    eprintln!(
        "iperf3 TCPv6 TAP -> veth (software TSO): {:.2} Gbit/s",
        bps / 1e9
    );

    // DNS over TCP from TAP endpoints (partial checksums completed for the gateway's stack),
    // and over UDP.
    assert_eq!(t1.dig("10.235.0.1", "v1", true), ipv);
    assert_eq!(t2.dig("10.235.0.1", "t1", false), ip1);
    assert_eq!(v1.dig("10.235.0.1", "t2", true), ip2);

    let stats = x.json(&["stats"]);
    assert_eq!(drop_count(&stats, "offload_failed"), 0, "{stats}");
    assert_eq!(drop_count(&stats, "oversize"), 0, "{stats}");
    // TAP read losses are the backend's counters, shown per port.
    let tap_stats = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["port"] == e1["port"])
        .unwrap();
    assert_eq!(tap_stats["backend"]["rx_oversized"], 0, "{tap_stats}");
    assert_eq!(tap_stats["backend"]["rx_errors"], 0, "{tap_stats}");

    for ns in [&t1, &t2, &v1] {
        x.must(&["network", "disconnect", "fast", &ns.name]);
        assert!(
            !ns.sh(&["ip", "link", "show", "eth0"]).status.success(),
            "disconnect left eth0 in {}",
            ns.name
        );
    }
    x.must(&["network", "rm", "fast"]);
}
