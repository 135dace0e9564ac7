//! Floods (issue 14, item 3), the MAC flood: one port of a bridge sends 1,000,000 frames from
//! random source MACs (trafgen, bounded by count) while two other ports ping each other. The
//! flooding port learns no more than its per-port limit (the rest are counted
//! `l2/learn_port_limit` events), the other ports' entries stay, and their traffic loses under
//! 1 %. (A network endpoint cannot even try: port security drops a foreign source MAC before
//! learning; tests/tests/port_security.rs.)
//!
//! And a DNS query flood at a network's gateway from one container: the gateway takes its
//! share (a burst, then a rate per source MAC), counts the rest `rate_limited`, and another
//! container's queries and pings are answered meanwhile, as is the control socket. The same
//! for an ARP flood: 50,000 broadcast requests for the gateway's address from one container,
//! while another resolves the gateway afresh (its ARP cache flushed) and pings it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use xvs_tests::{Topology, Xvsd, unique_prefix};

const FRAMES: &str = "1000000";

#[test]
fn a_million_random_source_macs_leave_other_ports_alone() {
    let p = unique_prefix("mflood");
    let x = Xvsd::start(&[]);
    x.must(&["add-br", "br0", "--port-mac-limit", "1024"]);
    let t = Topology::veths(&x, "br0", &p, "10.185.0", 3);
    assert!(t.ns[1].reaches(&t.ips[2], Duration::from_secs(5)));
    let mac1 = t.ns[1].mac("eth0");
    let mac2 = t.ns[2].mac("eth0");

    // trafgen: destination ns1's MAC, source 02:xx:xx:xx:xx:xx random per frame (drnd).
    let d: Vec<String> = mac1.split(':').map(|b| format!("0x{b}")).collect();
    // An IPv4/UDP frame (46 IP bytes) from ns0's address to ns1's, as a MAC flooder would send
    // (the switch forwards only IPv4, IPv6 and ARP, and learns from what it forwards).
    let conf = format!(
        "{{ {}, 0x02, drnd(5), c16(0x0800), \
         0x45, 0x00, c16(46), c16(0), 0x40, 0x00, 0x40, 0x11, c16(0), \
         10, 185, 0, 1, 10, 185, 0, 2, c16(9), c16(9), c16(26), c16(0), fill(0x41, 18) }}\n",
        d.join(", ")
    );
    let conf_path = x.dir.join("flood.trafgen");
    std::fs::write(&conf_path, conf).unwrap();
    let t0 = Instant::now();
    let flood = t.ns[0].spawn_logged(&[
        "timeout",
        "120",
        "trafgen",
        "--dev",
        "eth0",
        "--conf",
        conf_path.to_str().unwrap(),
        "-n",
        FRAMES,
        // Paced (about 200 kpps), or its TX ring overruns the veth (EAGAIN).
        "-t",
        "5us",
    ]);
    // Legitimate traffic meanwhile: 300 pings 10 ms apart, both ways.
    let ping = |from: usize, to: usize| {
        let out = t.ns[from].sh(&[
            "ping", "-c", "300", "-i", "0.01", "-W", "1", "-q", &t.ips[to],
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let received: u64 = text
            .split(',')
            .find(|f| f.contains("received"))
            .and_then(|f| f.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (received, text)
    };
    let (r12, out12) = ping(1, 2);
    let done = flood.wait_with_output().unwrap();
    let flood_took = t0.elapsed();
    let (r21, _) = ping(2, 1);
    assert!(
        done.status.success(),
        "trafgen failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let limited = x.drops("l2", "learn_port_limit");
    let fdb = x.json(&["fdb/show", "br0"]);
    let entries = fdb["entries"].as_array().unwrap();
    let on_flooder = entries
        .iter()
        .filter(|e| e["port"] == t.ports[0].as_str())
        .count();
    println!(
        "MAC flood of {FRAMES} frames in {flood_took:?}: {r12}/300 and {r21}/300 pings delivered during and after, \
         {on_flooder} MACs learnt on the flooding port, {limited} not learnt (learn_port_limit)"
    );
    assert!(
        r12 >= 297,
        "legitimate delivery during the flood under 99 %: {out12}"
    );
    assert!(r21 >= 297, "after the flood");
    assert!(on_flooder <= 1024, "{on_flooder} MACs on the flooding port");
    assert!(limited > 0);
    for mac in [&mac1, &mac2] {
        assert!(
            entries.iter().any(|e| e["mac"] == mac.as_str()),
            "{mac} gone from the table"
        );
    }
}

/// A MAC as trafgen's byte list: `0x02, 0x42, …`.
fn trafgen_bytes(mac: &str) -> String {
    mac.split(':')
        .map(|b| format!("0x{b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one gateway flood measured.
struct Flood {
    took: Duration,
    /// b's DNS queries answered during the flood, of 10.
    answered: usize,
    /// b's pings to the gateway (its ARP entry flushed first), all answered.
    pinged: bool,
    /// How long `xvsctl ping` took during the flood.
    ctl: Duration,
    /// The gateway's counters after it.
    counters: serde_json::Value,
}

/// Network `fl` on `subnet` (a /24 whose .1 is the gateway) with containers a and b; a sends
/// `count` copies of the frame that `frame(gateway MAC, a's MAC, a's address)` gives (a
/// trafgen packet), paced, while b resolves `alpha` (a) at the gateway, flushes its ARP
/// cache and pings the gateway, and the control socket is asked.
fn flood_the_gateway(
    tag: &str,
    subnet: &str,
    count: u32,
    frame: impl Fn(&str, &str, &str) -> String,
) -> Flood {
    let p = unique_prefix(tag);
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "fl", "--subnet", subnet]);
    let a = xvs_tests::Netns::new(&format!("{p}a"));
    let b = xvs_tests::Netns::new(&format!("{p}b"));
    let ia =
        xvs_tests::endpoint_ip(&x.json(&["network", "connect", "fl", &a.name, "--name", "alpha"]));
    x.json(&["network", "connect", "fl", &b.name, "--name", "b"]);
    let gw = subnet.replace(".0/24", ".1");
    assert!(a.reaches(&gw, Duration::from_secs(3)));
    assert_eq!(b.dig(&gw, "alpha", false), ia, "before the flood");
    let gw_mac = a
        .must(&["ip", "neigh", "show", &gw])
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap()
        .to_string();
    let conf_path = x.dir.join(format!("{tag}.trafgen"));
    std::fs::write(
        &conf_path,
        frame(
            &trafgen_bytes(&gw_mac),
            &trafgen_bytes(&a.mac("eth0")),
            &ia.replace('.', ", "),
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let flood = a.spawn_logged(&[
        "timeout",
        "60",
        "trafgen",
        "--dev",
        "eth0",
        "--conf",
        conf_path.to_str().unwrap(),
        "-n",
        &count.to_string(),
        "-t",
        "5us",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let mut answered = 0;
    for _ in 0..10 {
        if b.dig(&gw, "alpha", false) == ia {
            answered += 1;
        }
    }
    b.must(&["ip", "neigh", "flush", "dev", "eth0"]);
    let pinged = b.ping(&gw, 10);
    let t = Instant::now();
    x.must(&["ping"]);
    let ctl = t.elapsed();
    let done = flood.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "trafgen: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    Flood {
        took: t0.elapsed(),
        answered,
        pinged,
        ctl,
        counters: x.json(&["network", "inspect", "fl"])["gateway_counters"].clone(),
    }
}

impl Flood {
    fn check(&self, what: &str, served: &str) {
        let c = &self.counters;
        let limited = c["rate_limited"].as_u64().unwrap();
        println!(
            "{what} in {:?}: {} served ({served}), {limited} rate-limited; b: {}/10 queries \
             answered, ARP + pings {}, xvsctl ping {:?}",
            self.took,
            c[served],
            self.answered,
            if self.pinged { "10/10" } else { "lost" },
            self.ctl
        );
        assert_eq!(self.answered, 10, "b's queries during the flood");
        assert!(self.pinged, "b's ARP and pings during the flood");
        assert!(
            self.ctl < Duration::from_secs(1),
            "control socket {:?}",
            self.ctl
        );
        assert!(limited > 20_000, "{c}");
    }
}

#[test]
fn a_dns_flood_at_the_gateway_is_rate_limited_per_container() {
    // A DNS query (for "a.") from a's own MAC and address (port security lets it through).
    let f = flood_the_gateway("dflood", "10.186.0.0/24", 50_000, |gw, a, ip| {
        format!(
            "{{ {gw}, {a}, c16(0x0800), \
             0x45, 0x00, c16(47), c16(0), 0x40, 0x00, 0x40, 0x11, csumip(14, 33), \
             {ip}, 10, 186, 0, 1, c16(40000), c16(53), c16(27), c16(0), \
             0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, \
             0x01, 0x61, 0x00, 0x00, 0x01, 0x00, 0x01 }}\n"
        )
    });
    f.check("DNS flood of 50000 queries", "dns_requests");
}

#[test]
fn an_arp_flood_at_the_gateway_is_rate_limited_per_container() {
    // Broadcast ARP requests for the gateway's address, from a's own MAC and address (port
    // security lets them through; the bridge floods them to b as well, as a bridge must).
    let f = flood_the_gateway("aflood", "10.187.0.0/24", 50_000, |_gw, a, ip| {
        format!(
            "{{ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, {a}, c16(0x0806), \
             c16(1), c16(0x0800), 6, 4, c16(1), {a}, {ip}, \
             0, 0, 0, 0, 0, 0, 10, 187, 0, 1 }}\n"
        )
    });
    f.check("ARP flood of 50000 requests", "arp");
}
