//! The way out: xvsd runs in a namespace of its own standing for the host (the test owns
//! every interface it sees); an `outside` namespace (198.18.0.0/15) hangs off the host's
//! uplink interface, which also carries the host's own address. Containers reach the outside
//! masqueraded to the uplink address (curl, iperf3, dig through it); a published port is
//! reached from outside and the container sees the real client address; a container reaches
//! its own network's published port through the uplink address (hairpin); an internal network
//! reaches nothing and two networks do not reach each other; an expiring TTL is answered; the
//! host's address keeps answering; conntrack/show lists the flows and flush empties it; a
//! restart restores the uplink and the published ports. Bad publish requests are refused with
//! nothing made. A SYN flood from one container stops at its per-endpoint limit while another
//! container's connection keeps flowing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use xvs_tests::{Netns, Xvsd, drop_count, endpoint_ip, unique_prefix, veth_between, wait_until};

/// The host, the outside, and xvsd in the host with its uplink on `up0`.
struct World {
    x: Xvsd,
    outside: Netns,
    _host: Netns,
    /// The test's 198.18.N.0/24.
    n: u8,
}

impl World {
    fn new(p: &str, n: u8, args: &[&str]) -> World {
        let host = Netns::new(&format!("{p}h"));
        let outside = Netns::new(&format!("{p}o"));
        veth_between(
            &host,
            "up0",
            Some(&format!("198.18.{n}.1/24")),
            &outside,
            "eth0",
            &format!("198.18.{n}.2/24"),
        );
        let x = Xvsd::start_in(&host, args);
        World {
            x,
            outside,
            _host: host,
            n,
        }
    }

    fn outside_ip(&self) -> String {
        format!("198.18.{}.2", self.n)
    }

    fn uplink_ip(&self) -> String {
        format!("198.18.{}.9", self.n)
    }

    /// A sandbox joined to `net`; returns it and its address.
    fn container(&self, name: &str, net: &str, extra: &[&str]) -> (Netns, String) {
        let ns = Netns::new(name);
        let mut args = vec!["network", "connect", net, name];
        args.extend_from_slice(extra);
        let ep = self.x.json(&args);
        (ns, endpoint_ip(&ep))
    }
}

/// An HTTP server in `ns` on `port` logging its clients to a file; returns the log's path.
fn http_server(ns: &Netns, bind: &str, port: u16, log: &std::path::Path) -> std::process::Child {
    let cmd = format!(
        "exec /usr/bin/python3 -m http.server {port} --bind {bind} > {} 2>&1",
        log.display()
    );
    let child = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "timeout", "120", "sh", "-c", &cmd,
        ])
        .spawn()
        .unwrap();
    let listening = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&ns.sh(&["ss", "-ltn"]).stdout).contains(&format!(":{port} "))
    });
    assert!(listening, "http server on {}:{port} did not start", ns.name);
    child
}

/// `curl`'s status code for `url` from `ns` (000: no answer).
fn curl(ns: &Netns, url: &str) -> String {
    let out = ns.sh(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn conns(x: &Xvsd) -> Vec<Value> {
    x.json(&["conntrack/show"])["connections"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn masquerade_publish_hairpin_isolation_and_restart() {
    let p = unique_prefix("nat");
    let mut w = World::new(&p, 40, &["--workers", "2"]);
    let (out_ip, up_ip) = (w.outside_ip(), w.uplink_ip());
    w.x.must(&["uplink", "set", "up0", "--ip", &format!("{up_ip}/24")]);
    w.x.must(&["network", "create", "front", "--subnet", "10.140.1.0/24"]);
    w.x.must(&["network", "create", "back", "--subnet", "10.140.2.0/24"]);
    w.x.must(&[
        "network",
        "create",
        "intern",
        "--subnet",
        "10.140.3.0/24",
        "--internal",
    ]);

    // Bad publish requests: refused, nothing made.
    let _bad = Netns::new(&format!("{p}b"));
    let e = w.x.refused(&[
        "network",
        "connect",
        "front",
        &format!("{p}b"),
        "--publish",
        "80:abc",
    ]);
    assert!(e.contains("invalid --publish") && e.contains("abc"), "{e}");
    let e = w.x.refused(&[
        "network",
        "connect",
        "intern",
        &format!("{p}b"),
        "--publish",
        "80:80",
    ]);
    assert!(e.contains("--internal"), "{e}");

    let (c1, c1_ip) = w.container(&format!("{p}c1"), "front", &["--publish", "8080:80"]);
    let e = w.x.refused(&[
        "network",
        "connect",
        "front",
        &format!("{p}b"),
        "--publish",
        "8080:81",
    ]);
    assert!(e.contains("8080") && e.contains("already in use"), "{e}");
    let inspect = w.x.json(&["network", "inspect", "front"]);
    assert_eq!(
        inspect["endpoints"].as_array().map(Vec::len),
        Some(1),
        "{inspect}"
    );
    let (c1b, _) = w.container(&format!("{p}c1b"), "front", &[]);
    let (c2, c2_ip) = w.container(&format!("{p}c2"), "back", &[]);
    let (c3, _) = w.container(&format!("{p}c3"), "intern", &[]);

    // Masquerade: the outside sees the uplink's address.
    let out_log = w.x.dir.join("outside-http.log");
    let mut out_http = http_server(&w.outside, &out_ip, 9000, &out_log);
    assert!(c1.reaches(&out_ip, Duration::from_secs(5)), "ping out");
    assert_eq!(curl(&c1, &format!("http://{out_ip}:9000/")), "200");
    let log = std::fs::read_to_string(&out_log).unwrap();
    assert!(log.contains(&format!("{up_ip} - -")), "outside saw: {log}");
    assert!(!log.contains("10.140."), "no inside address leaks: {log}");
    let bps = c1.iperf3_to(&w.outside, &out_ip, 2);
    assert!(bps > 10e6, "iperf3 through masquerade: {bps} b/s");
    let mut dns = w.outside.spawn(&[
        "dnsmasq",
        "--no-daemon",
        "--port=53",
        &format!("--listen-address={out_ip}"),
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--address=/example.test/192.0.2.7",
    ]);
    let answered = wait_until(Duration::from_secs(5), || {
        c1.dig(&out_ip, "example.test", false) == "192.0.2.7"
    });
    assert!(answered, "dig through masquerade");

    // Published port: reached from outside, the container sees the outside's own address.
    let in_log = w.x.dir.join("c1-http.log");
    let mut c1_http = http_server(&c1, "0.0.0.0", 80, &in_log);
    assert_eq!(curl(&w.outside, &format!("http://{up_ip}:8080/")), "200");
    let log = std::fs::read_to_string(&in_log).unwrap();
    assert!(log.contains(&format!("{out_ip} - -")), "c1 saw: {log}");
    // Hairpin: a container of the same network, and c1 itself, through the uplink address.
    assert_eq!(
        curl(&c1b, &format!("http://{up_ip}:8080/")),
        "200",
        "hairpin"
    );
    assert_eq!(
        curl(&c1, &format!("http://{up_ip}:8080/")),
        "200",
        "hairpin to itself"
    );

    // Isolation: internal reaches nothing; two networks do not reach each other.
    assert!(c3.unreachable(&out_ip), "internal network reached outside");
    assert!(c2.unreachable(&c1_ip), "back reached front");
    assert!(c1.unreachable(&c2_ip), "front reached back");
    let stats = w.x.json(&["stats"]);
    assert!(drop_count(&stats, "internal_network") > 0, "{stats}");
    assert!(drop_count(&stats, "other_network") > 0, "{stats}");

    // TTL expiry is answered by the gateway.
    let ttl = c1.sh(&["ping", "-c", "1", "-W", "1", "-t", "1", &out_ip]);
    let text = String::from_utf8_lossy(&ttl.stdout);
    assert!(text.contains("Time to live exceeded"), "{text}");
    // The host's own address on the shared uplink still answers.
    assert!(
        w.outside
            .reaches(&format!("198.18.{}.1", w.n), Duration::from_secs(3))
    );

    // trace follows a routed flow through route, conntrack and router (a dry run: no
    // connection is made).
    let before = conns(&w.x).len();
    let t = w.x.must(&[
        "trace",
        "net.front",
        &format!(
            "in_port=gw,dl_src=02:00:00:00:00:09,dl_dst=02:42:0a:8c:01:01,udp,nw_src={c1_ip},nw_dst={out_ip},tp_src=4242,tp_dst=53"
        ),
    ]);
    assert!(t.contains("route") && t.contains("to the uplink"), "{t}");
    assert!(t.contains("conntrack") && t.contains("new udp"), "{t}");
    assert!(
        t.contains("router") && t.contains("out of the uplink"),
        "{t}"
    );
    assert!(t.contains("output:up0") || t.contains("handoff"), "{t}");
    assert_eq!(conns(&w.x).len(), before, "a trace makes no connection");

    // conntrack/show lists the flows; flush empties it.
    let list = conns(&w.x);
    assert!(
        list.iter().any(|c| c["proto"] == "tcp"
            && c["nat"] == "snat"
            && c["orig"].as_str().unwrap().ends_with(":9000")),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|c| c["proto"] == "tcp" && c["nat"] == "dnat" && c["network"] == "front"),
        "{list:?}"
    );
    let up = w.x.json(&["uplink", "show"]);
    assert!(
        up["published"][0]["mapping"]
            .as_str()
            .unwrap()
            .contains(":8080->"),
        "{up}"
    );
    assert!(
        up["neighbours"].as_array().is_some_and(|n| !n.is_empty()),
        "{up}"
    );
    w.x.must(&["conntrack/flush"]);
    assert!(conns(&w.x).is_empty());
    w.x.must(&["conntrack/set-timeout", "udp", "20"]);
    let e = w.x.refused(&["conntrack/set-timeout", "nonsense", "20"]);
    assert!(e.contains("nonsense"), "{e}");

    // A restart restores the uplink and the published port.
    w.x.restart();
    assert!(
        wait_until(Duration::from_secs(10), || {
            curl(&w.outside, &format!("http://{up_ip}:8080/")) == "200"
        }),
        "published port after restart"
    );
    assert_eq!(
        curl(&c1, &format!("http://{out_ip}:9000/")),
        "200",
        "masquerade after restart"
    );
    let _ = out_http.kill();
    let _ = c1_http.kill();
    let _ = dns.kill();
    let _ = (out_http.wait(), c1_http.wait(), dns.wait());
}

#[test]
fn a_syn_flood_stops_at_the_endpoint_limit() {
    let p = unique_prefix("syn");
    let w = World::new(
        &p,
        41,
        &["--workers", "2", "--conntrack-endpoint-limit", "300"],
    );
    let (out_ip, up_ip) = (w.outside_ip(), w.uplink_ip());
    w.x.must(&["uplink", "set", "up0", "--ip", &format!("{up_ip}/24")]);
    w.x.must(&["network", "create", "front", "--subnet", "10.141.1.0/24"]);
    let (flooder, _) = w.container(&format!("{p}f"), "front", &[]);
    let (quiet, quiet_ip) = w.container(&format!("{p}q"), "front", &[]);
    assert!(flooder.reaches(&out_ip, Duration::from_secs(5)));
    // The flood's target stays silent (no RST), so its connections stay open.
    w.outside.must(&["nft", "add table inet f"]);
    w.outside.must(&[
        "nft",
        "add chain inet f in { type filter hook input priority 0 ; }",
    ]);
    w.outside
        .must(&["nft", "add rule inet f in tcp dport 9 drop"]);

    // The quiet container's transfer runs while the other floods (bounded: 3000 SYNs).
    let server = w.outside.spawn(&["iperf3", "-s", "-1"]);
    assert!(wait_until(Duration::from_secs(5), || {
        String::from_utf8_lossy(&w.outside.sh(&["ss", "-ltn"]).stdout).contains(":5201")
    }));
    let transfer = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &quiet.name,
            "timeout",
            "30",
            "iperf3",
            "-c",
            &out_ip,
            "-t",
            "4",
            "-J",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let flood = flooder.sh(&[
        "timeout", "30", "/usr/bin/python3", "-c",
        &format!(
            "from scapy.all import *\n\
             conf.verb = 0\n\
             p = [Ether()/IP(dst='{out_ip}')/TCP(sport=RandShort(), dport=9, flags='S') for _ in range(3000)]\n\
             sendp(p, iface='eth0')\n"
        ),
    ]);
    assert!(
        flood.status.success(),
        "{}",
        String::from_utf8_lossy(&flood.stderr)
    );
    let out = transfer.wait_with_output().unwrap();
    drop(server);
    assert!(
        out.status.success(),
        "the quiet container's transfer failed during the flood"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    assert!(bps > 10e6, "quiet container's transfer: {bps} b/s");

    let list = conns(&w.x);
    let flooder_conns = list
        .iter()
        .filter(|c| {
            !c["orig"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{quiet_ip}:"))
        })
        .count();
    assert!(
        flooder_conns <= 300,
        "the flooder holds {flooder_conns} connections"
    );
    assert!(
        flooder_conns >= 250,
        "the flooder's connections were tracked up to the limit: {flooder_conns}"
    );
    let stats = w.x.json(&["stats"]);
    let refused = drop_count(&stats, "zone_limit");
    eprintln!(
        "syn flood: 3000 SYNs, flooder holds {flooder_conns} connections (limit 300), \
         {refused} refused (zone_limit), quiet container {:.0} Mbit/s meanwhile",
        bps / 1e6
    );
    assert!(refused >= 2000, "{stats}");
    // Another container can still open connections.
    let (late, _) = w.container(&format!("{p}l"), "front", &[]);
    assert!(late.reaches(&out_ip, Duration::from_secs(5)));
}
