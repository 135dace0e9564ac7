//! Overlay networks end to end. Each test builds its own underlay: a Linux bridge in a
//! namespace of its own, with a veth to each host namespace (hA, hB for xvsd, hK for a kernel
//! VXLAN host). A host's end carries the host's own address (198.18.N.{1,2,3}/24); on an xvs
//! host xvsd's uplink shares that interface with its own address (198.18.N.{11,12}/24), which
//! is also the local VTEP, and the overlay network `ov` (VNI 5000, 10.200.0.0/24) has the
//! other hosts' VTEPs as peers. Containers are named namespaces with explicit addresses (no
//! shared IPAM across hosts).
//!
//! - two xvs hosts: ping both ways, iperf3 between TAP endpoints and between veth endpoints,
//!   local DNS, per-peer counters, the learnt remote FDB, `peer del` cutting the overlay,
//!   re-adding it, and a restart of one xvsd restoring it;
//! - interop with a kernel `vxlan` device: ping and iperf3 both ways, and tshark on the
//!   underlay decoding VNI 5000 with the right outer and inner addresses;
//! - MTU: a 1400-byte underlay gives a 1350-byte overlay by default, and TCP crosses it,
//!   also from a kernel container whose own MTU is larger (MSS clamping);
//! - bad input: refused VNIs, peers on a bridge network, a VTEP without an uplink, and a
//!   bounded scapy storm of malformed VXLAN counted under `vxlan/...`, the overlay unharmed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xvs_tests::{Netns, Underlay, Xvsd, must, stage_drops, unique_prefix, wait_until};

const VNI: &str = "5000";
const SUBNET: &str = "10.200.0.0/24";
const GATEWAY: &str = "10.200.0.1";

/// A host namespace running xvsd, its uplink on `ul0` at 198.18.N.`vtep`, that address the
/// local VTEP, and the overlay network `ov`.
struct XvsHost {
    // Declared first: stopped before its namespace goes.
    x: Xvsd,
    _ns: Netns,
    vtep: String,
}

impl XvsHost {
    /// The host only: xvsd running, no uplink yet.
    fn bare(u: &Underlay, p: &str, tag: &str, own: u8) -> XvsHost {
        let ns = Netns::new(&format!("{p}h{tag}"));
        u.attach(&ns, tag, own);
        let x = Xvsd::start_in(&ns, &["--workers", "1"]);
        XvsHost {
            x,
            _ns: ns,
            vtep: String::new(),
        }
    }

    /// Uplink, VTEP and `ov` (with `extra` arguments to `network create`).
    fn new(u: &Underlay, p: &str, tag: &str, own: u8, vtep: u8, extra: &[&str]) -> XvsHost {
        let mut h = XvsHost::bare(u, p, tag, own);
        h.vtep = u.ip(vtep);
        h.x.must(&["uplink", "set", "ul0", "--ip", &format!("{}/24", h.vtep)]);
        h.x.must(&["vtep", "set", "--local", &h.vtep]);
        let mut args = vec![
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
        ];
        args.extend_from_slice(extra);
        h.x.must(&args);
        h
    }

    /// A container `name` on `ov` at `ip`, with a `--port-type` and DNS name `dns`.
    fn container(&self, name: &str, ip: &str, port_type: &str, dns: &str) -> Netns {
        let ns = Netns::new(name);
        let ep = self.x.json(&[
            "network",
            "connect",
            "ov",
            name,
            "--ip",
            ip,
            "--port-type",
            port_type,
            "--name",
            dns,
        ]);
        assert_eq!(ep["port_type"], port_type, "{ep}");
        assert_eq!(ep["address"], format!("{ip}/24"), "{ep}");
        ns
    }

    fn peer_add(&self, remote: &str) {
        self.x.must(&["vtep", "peer", "add", "ov", remote]);
    }

    /// `vtep peer ls --json`'s entry for `remote` on `ov`.
    fn peer(&self, remote: &str) -> Option<Value> {
        self.x
            .json(&["vtep", "peer", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["network"] == "ov" && p["remote"] == remote)
            .cloned()
    }
}

/// A host namespace with the kernel's VXLAN: `vx0` (VNI 5000, port 4789, on `ul0` at
/// 198.18.N.`own`) in a Linux bridge with a container's veth; `peers` get the all-zeros FDB
/// entry (head-end replication of floods), remote MACs are learnt.
struct KernelHost {
    ns: Netns,
    container: Netns,
    ip: String,
}

impl KernelHost {
    /// `vx_mtu`/`container_mtu`: None leaves the kernel's defaults (underlay MTU - 50 for vx0).
    fn new(
        u: &Underlay,
        p: &str,
        own: u8,
        peers: &[&str],
        container_ip: &str,
        vx_mtu: Option<u32>,
        container_mtu: u32,
    ) -> KernelHost {
        let ns = Netns::new(&format!("{p}hk"));
        u.attach(&ns, "k", own);
        let ip = u.ip(own);
        let mut vx = vec![
            "ip", "link", "add", "vx0", "type", "vxlan", "id", VNI, "dstport", "4789", "local", &ip,
        ];
        // Bound to ul0, the kernel caps vx0's MTU at ul0's minus 50; unbound, it is free.
        if vx_mtu.is_none() {
            vx.extend(["dev", "ul0"]);
        }
        ns.must(&vx);
        if let Some(mtu) = vx_mtu {
            ns.must(&["ip", "link", "set", "vx0", "mtu", &mtu.to_string()]);
        }
        ns.must(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.must(&["ip", "link", "set", "vx0", "master", "br0", "up"]);
        ns.must(&["ethtool", "-K", "vx0", "tx", "off"]);
        for peer in peers {
            ns.must(&[
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                peer,
            ]);
        }
        let container = Netns::new(&format!("{p}k1"));
        must(&[
            "ip",
            "link",
            "add",
            "vc",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &container.name,
        ]);
        let mtu = container_mtu.to_string();
        ns.must(&[
            "ip", "link", "set", "vc", "mtu", &mtu, "master", "br0", "up",
        ]);
        ns.must(&["ethtool", "-K", "vc", "tx", "off"]);
        ns.must(&["ip", "link", "set", "br0", "up"]);
        container.must(&[
            "ip",
            "addr",
            "add",
            &format!("{container_ip}/24"),
            "dev",
            "eth0",
        ]);
        container.must(&["ip", "link", "set", "eth0", "mtu", &mtu, "up"]);
        container.must(&["ethtool", "-K", "eth0", "tx", "off"]);
        KernelHost { ns, container, ip }
    }
}

/// tshark capturing in the background: up to `count` packets passing a capture filter,
/// printed as tab-separated fields (all occurrences of a field, comma-separated: the outer
/// and inner `ip.src` of a VXLAN packet). Bounded: 15 s at most.
struct Capture {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
}

impl Capture {
    /// Starts tshark on `dev` in `ns` and waits until it is capturing.
    fn start(ns: &Netns, dev: &str, filter: &str, count: u32, fields: &[&str]) -> Capture {
        let tag = unique_prefix("cap");
        let out = std::env::temp_dir().join(format!("{tag}.out"));
        let err = std::env::temp_dir().join(format!("{tag}.err"));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", &ns.name, "timeout", "15", "tshark", "-l", "-i", dev,
        ])
        .args(["-f", filter, "-c", &count.to_string(), "-T", "fields"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("cannot run tshark (tests/setup.sh installs it)");
        let c = Capture { child, out, err };
        let ready = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&c.err).is_ok_and(|e| e.contains("Capturing on"))
        });
        assert!(
            ready,
            "tshark did not start: {}",
            std::fs::read_to_string(&c.err).unwrap_or_default()
        );
        c
    }

    /// Waits (a few seconds at most) for the count to be reached; returns the lines.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = (
            std::fs::remove_file(&self.out),
            std::fs::remove_file(&self.err),
        );
    }
}

/// Offsets into a VXLAN packet with option-less IPv4 headers, for capture filters: the inner
/// IPv4 protocol and the inner TCP flags.
const INNER_IP_PROTO: usize = 50 + 14 + 9;
const INNER_TCP_FLAGS: usize = 50 + 14 + 20 + 13;

/// The iperf3 helper's figure, printed, and checked against a floor.
fn tcp_across(from: &Netns, to: &Netns, ip: &str, what: &str, floor_mbps: f64) -> f64 {
    let mbps = from.iperf3_to(to, ip, 2) / 1e6;
    eprintln!("overlay iperf3 {what}: {mbps:.0} Mbit/s");
    assert!(mbps > floor_mbps, "{what}: {mbps:.1} Mbit/s");
    mbps
}

/// `vtep show --json`'s entry for the network `ov`.
fn shown_ov(x: &Xvsd) -> Value {
    let show = x.json(&["vtep", "show"]);
    show["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == "ov")
        .cloned()
        .unwrap_or_else(|| panic!("no network ov in {show}"))
}

/// The script sending malformed VXLAN.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Every drop counter of `stats` as (stage/reason, count), for before/after differences.
fn drops(stats: &Value) -> Vec<(String, u64)> {
    stats["drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["stage"].as_str().unwrap_or("?"),
                    d["reason"].as_str().unwrap_or("?")
                ),
                d["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn two_xvs_hosts_ping_carry_tcp_resolve_and_survive_a_restart() {
    let p = unique_prefix("ova");
    let u = Underlay::new(&p, 50, 1500);
    let mut a = XvsHost::new(&u, &p, "a", 1, 11, &["--vni", VNI]);
    let b = XvsHost::new(&u, &p, "b", 2, 12, &["--vni", VNI]);
    let inspect = a.x.json(&["network", "inspect", "ov"]);
    assert_eq!(inspect["driver"], "overlay", "{inspect}");
    assert_eq!(inspect["vni"], 5000, "{inspect}");
    assert_eq!(inspect["mtu"], 1450, "{inspect}");
    a.peer_add(&b.vtep);
    b.peer_add(&a.vtep);

    let a1 = a.container(&format!("{p}a1"), "10.200.0.11", "tap", "a1");
    let a2 = a.container(&format!("{p}a2"), "10.200.0.12", "veth", "a2");
    let b1 = b.container(&format!("{p}b1"), "10.200.0.21", "tap", "b1");
    let b2 = b.container(&format!("{p}b2"), "10.200.0.22", "veth", "b2");
    assert_eq!(
        a1.must(&["cat", "/sys/class/net/eth0/mtu"]).trim(),
        "1450",
        "the endpoint takes the overlay's MTU"
    );

    // Ping both ways, each endpoint kind.
    assert!(
        a1.reaches("10.200.0.21", Duration::from_secs(10)),
        "a1 -> b1 across the overlay"
    );
    assert!(b1.ping("10.200.0.11", 3), "b1 -> a1");
    assert!(
        a2.reaches("10.200.0.22", Duration::from_secs(10)),
        "a2 -> b2 (veths)"
    );
    assert!(
        b2.reaches("10.200.0.11", Duration::from_secs(10)),
        "b2 -> a1"
    );
    // Each host's gateway answers locally, with the same address on both.
    assert!(a1.ping(GATEWAY, 2) && b2.ping(GATEWAY, 2));

    // TCP: TAP to TAP, veth to veth, and back.
    tcp_across(&a1, &b1, "10.200.0.21", "TAP a1 -> TAP b1", 50.0);
    tcp_across(&b1, &a1, "10.200.0.11", "TAP b1 -> TAP a1", 50.0);
    tcp_across(&a2, &b2, "10.200.0.22", "veth a2 -> veth b2", 50.0);

    // DNS at the local gateway names local endpoints.
    assert_eq!(a2.dig(GATEWAY, "a1", false), "10.200.0.11");
    assert_eq!(b1.dig(GATEWAY, "b2", true), "10.200.0.22");

    // The peers' counters and the learnt remote stations.
    for (h, remote) in [(&a, &b.vtep), (&b, &a.vtep)] {
        let peer = h.peer(remote).expect("peer listed");
        assert_eq!(peer["vni"], 5000, "{peer}");
        assert!(peer["tx_packets"].as_u64().unwrap() > 0, "{peer}");
        assert!(peer["rx_packets"].as_u64().unwrap() > 0, "{peer}");
    }
    let show = a.x.json(&["vtep", "show"]);
    assert_eq!(show["local"], a.vtep.as_str(), "{show}");
    assert_eq!(show["port"], 4789, "{show}");
    let ov = &show["networks"][0];
    assert_eq!(
        (&ov["network"], &ov["vni"], &ov["mtu"]),
        (&"ov".into(), &5000.into(), &1450.into()),
        "{show}"
    );
    let b1_mac = b1.mac("eth0");
    let learnt = ov["fdb"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == b1_mac.as_str())
        .unwrap_or_else(|| panic!("b1's MAC {b1_mac} not learnt: {show}"));
    assert_eq!(learnt["remote"], b.vtep.as_str(), "{learnt}");
    assert_eq!(learnt["static"], false, "{learnt}");

    // trace: a frame to b1 leaves through the overlay stage toward hB's VTEP; a VXLAN flow
    // into the uplink meets decap.
    let t = a.x.ctl(&[
        "trace",
        "net.ov",
        &format!(
            "in_port=gw,dl_src=02:00:00:00:00:09,dl_dst={b1_mac},udp,nw_src=10.200.0.11,nw_dst=10.200.0.21,tp_src=1,tp_dst=2"
        ),
    ]);
    let t = String::from_utf8_lossy(&t.stdout).into_owned();
    eprintln!("trace toward b1:\n{t}");
    assert!(
        t.contains(&format!("vxlan: vni 5000: encapsulated to {}", b.vtep)),
        "{t}"
    );
    let b_mac = b.x.json(&["uplink", "show"])["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let a_mac = a.x.json(&["uplink", "show"])["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let t = a.x.ctl(&[
        "trace",
        "xvs.uplink",
        &format!(
            "in_port=ul0,dl_src={b_mac},dl_dst={a_mac},udp,nw_src={},nw_dst={},tp_src=40000,tp_dst=4789",
            b.vtep, a.vtep
        ),
    ]);
    // A flow carries no VXLAN header and inner frame: decap says so.
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(
        t.contains("vxlan_decap: drop") && t.contains("truncated"),
        "{t}"
    );

    // peer del on both sides cuts the overlay; re-adding restores it.
    a.x.must(&["vtep", "peer", "del", "ov", &b.vtep]);
    b.x.must(&["vtep", "peer", "del", "ov", &a.vtep]);
    assert!(a.peer(&b.vtep).is_none(), "peer still listed after del");
    assert!(
        a1.unreachable("10.200.0.21"),
        "the overlay still carries traffic without peers"
    );
    a.peer_add(&b.vtep);
    b.peer_add(&a.vtep);
    assert!(
        a1.reaches("10.200.0.21", Duration::from_secs(10)),
        "re-added peers"
    );

    // A restart of one xvsd restores network, VTEP, peers and the traffic.
    a.x.restart();
    assert!(
        a1.reaches("10.200.0.21", Duration::from_secs(15)),
        "overlay after a restart of hA's xvsd"
    );
    assert!(b2.reaches("10.200.0.12", Duration::from_secs(10)));
    let inspect = a.x.json(&["network", "inspect", "ov"]);
    assert_eq!(
        (&inspect["driver"], &inspect["vni"]),
        (&"overlay".into(), &5000.into()),
        "{inspect}"
    );
    assert_eq!(a.x.json(&["vtep", "show"])["local"], a.vtep.as_str());
    assert!(a.peer(&b.vtep).is_some(), "peer lost in the restart");
    drop((a1, a2, b1, b2));
}

#[test]
fn interop_with_a_kernel_vxlan_host() {
    let p = unique_prefix("ovb");
    let u = Underlay::new(&p, 51, 1500);
    let a = XvsHost::new(&u, &p, "a", 1, 11, &["--vni", VNI]);
    let k = KernelHost::new(&u, &p, 3, &[&a.vtep], "10.200.0.31", None, 1450);
    a.peer_add(&k.ip);
    let a1 = a.container(&format!("{p}a1"), "10.200.0.11", "tap", "a1");
    let a2 = a.container(&format!("{p}a2"), "10.200.0.12", "veth", "a2");

    assert!(
        k.container.reaches("10.200.0.11", Duration::from_secs(10)),
        "kernel container -> xvs TAP endpoint"
    );
    assert!(a1.ping("10.200.0.31", 3), "xvs TAP endpoint -> kernel");
    assert!(
        a2.reaches("10.200.0.31", Duration::from_secs(10)),
        "xvs veth endpoint -> kernel"
    );
    tcp_across(&k.container, &a1, "10.200.0.11", "kernel -> xvs TAP", 50.0);
    tcp_across(&a1, &k.container, "10.200.0.31", "xvs TAP -> kernel", 50.0);
    tcp_across(&a2, &k.container, "10.200.0.31", "xvs veth -> kernel", 50.0);

    // The underlay carries VNI 5000 between the two VTEPs, with the containers inside.
    let cap = Capture::start(
        &u.ns,
        "br0",
        "udp port 4789",
        6,
        &["vxlan.vni", "ip.src", "ip.dst"],
    );
    assert!(a1.ping("10.200.0.31", 4));
    let lines = cap.finish();
    eprintln!("tshark on the underlay:\n{}", lines.join("\n"));
    let there = format!("{VNI}\t{},10.200.0.11\t{},10.200.0.31", a.vtep, k.ip);
    let back = format!("{VNI}\t{},10.200.0.31\t{},10.200.0.11", k.ip, a.vtep);
    assert!(lines.contains(&there), "no {there:?} in {lines:?}");
    assert!(lines.contains(&back), "no {back:?} in {lines:?}");

    // The kernel learnt xvs's endpoint behind xvs's VTEP; xvs learnt the kernel's.
    let fdb = k.ns.must(&["bridge", "fdb", "show", "dev", "vx0"]);
    let a1_mac = a1.mac("eth0");
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&a1_mac) && l.contains(&format!("dst {}", a.vtep))),
        "{fdb}"
    );
    let k_mac = k.container.mac("eth0");
    let show = shown_ov(&a.x);
    assert!(
        show["fdb"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == k_mac.as_str() && e["remote"] == k.ip.as_str()),
        "{show}"
    );
    drop((a1, a2));
}

#[test]
fn a_smaller_underlay_mtu_gives_a_smaller_overlay_and_tcp_still_flows() {
    let p = unique_prefix("ovc");
    let u = Underlay::new(&p, 52, 1400);
    let a = XvsHost::new(&u, &p, "a", 1, 11, &["--vni", VNI]);
    let b = XvsHost::new(&u, &p, "b", 2, 12, &["--vni", VNI]);
    // The kernel's container keeps a 1450 MTU over the same 1400-byte underlay (vx0 too).
    let k = KernelHost::new(
        &u,
        &p,
        3,
        &[&a.vtep, &b.vtep],
        "10.200.0.31",
        Some(1450),
        1450,
    );
    for h in [&a, &b] {
        let inspect = h.x.json(&["network", "inspect", "ov"]);
        assert_eq!(inspect["mtu"], 1350, "{inspect}");
    }
    a.peer_add(&b.vtep);
    a.peer_add(&k.ip);
    b.peer_add(&a.vtep);
    b.peer_add(&k.ip);
    let a1 = a.container(&format!("{p}a1"), "10.200.0.11", "tap", "a1");
    let b1 = b.container(&format!("{p}b1"), "10.200.0.21", "tap", "b1");
    assert_eq!(a1.must(&["cat", "/sys/class/net/eth0/mtu"]).trim(), "1350");
    assert!(a1.reaches("10.200.0.21", Duration::from_secs(10)));
    // A full-sized frame of the overlay crosses; one byte more does not (DF).
    assert!(
        a1.sh(&[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1322",
            "10.200.0.21"
        ])
        .status
        .success(),
        "1350-byte frames across the overlay"
    );
    tcp_across(&a1, &b1, "10.200.0.21", "TAP a1 -> TAP b1, MTU 1350", 50.0);
    tcp_across(&b1, &a1, "10.200.0.11", "TAP b1 -> TAP a1, MTU 1350", 50.0);
    // Neither the kernel's container (1450) nor a2, whose MTU is raised by hand past the
    // overlay's as a guest ignoring it would, fits a 1350-byte overlay on a 1400-byte
    // underlay: their SYNs offer 1410-byte segments, and only MSS clamping (xvs clamps SYNs
    // it decapsulates and encapsulates to the overlay's MTU) keeps their TCP whole.
    let a2 = a.container(&format!("{p}a2"), "10.200.0.12", "tap", "a2");
    a2.must(&["ip", "link", "set", "eth0", "mtu", "1450"]);
    assert!(k.container.reaches("10.200.0.12", Duration::from_secs(10)));
    // The SYNs as sent (on the underlay: a2's, clamped by xvs's encapsulation; the kernel's,
    // not) and as received by a2 (the kernel's, clamped by xvs's decapsulation).
    let syns = format!(
        "udp port 4789 and ether[{INNER_IP_PROTO}] = 6 and ether[{INNER_TCP_FLAGS}] & 2 != 0"
    );
    let wire = Capture::start(&u.ns, "br0", &syns, 2, &["ip.src", "tcp.options.mss_val"]);
    let inside = Capture::start(
        &a2,
        "eth0",
        "tcp[tcpflags] & tcp-syn != 0",
        2,
        &["ip.src", "tcp.options.mss_val"],
    );
    tcp_across(
        &k.container,
        &a2,
        "10.200.0.12",
        "kernel (MTU 1450) -> xvs a2 (MTU 1450, overlay 1350)",
        20.0,
    );
    let (wire, inside) = (wire.finish(), inside.finish());
    eprintln!("SYNs on the underlay: {wire:?}; in a2: {inside:?}");
    let a2_syn = format!("{},10.200.0.12\t1310", a.vtep);
    let k_syn = format!("{},10.200.0.31\t1410", k.ip);
    assert!(
        wire.contains(&a2_syn),
        "a2's SYN not clamped on the wire: {wire:?}"
    );
    assert!(wire.contains(&k_syn), "{wire:?}");
    assert!(
        inside.contains(&"10.200.0.31\t1310".to_string()),
        "the kernel's SYN not clamped on its way in: {inside:?}"
    );
    tcp_across(
        &a2,
        &k.container,
        "10.200.0.31",
        "xvs a2 (MTU 1450, overlay 1350) -> kernel (MTU 1450)",
        20.0,
    );
    let stats = a.x.json(&["stats"]);
    eprintln!(
        "hA: vxlan/mtu_exceeded {}, vxlan/fragment {}, conntrack/fragment {}",
        stage_drops(&stats, "vxlan", "mtu_exceeded"),
        stage_drops(&stats, "vxlan", "fragment"),
        stage_drops(&stats, "conntrack", "fragment"),
    );
    drop((a1, a2, b1));
}

#[test]
fn bad_input_is_refused_and_malformed_vxlan_is_counted() {
    let p = unique_prefix("ovd");
    let u = Underlay::new(&p, 53, 1500);
    let mut a = XvsHost::bare(&u, &p, "a", 1);
    let vtep = u.ip(11);

    // No uplink: no VTEP.
    let e = a.x.refused(&["vtep", "set", "--local", &vtep]);
    assert!(e.contains("no uplink is set"), "{e}");
    a.x.must(&["uplink", "set", "ul0", "--ip", &format!("{vtep}/24")]);
    let e = a.x.refused(&["vtep", "set", "--local", &u.ip(99)]);
    assert!(e.contains(&u.ip(99)), "{e}");
    a.x.must(&["vtep", "set", "--local", &vtep]);
    a.vtep = vtep.clone();

    // VNIs: out of range, taken; the default is allocated from 4096 and is unique.
    for bad in ["0", "16777216"] {
        let e = a.x.refused(&[
            "network", "create", "x", "--driver", "overlay", "--vni", bad,
        ]);
        assert!(e.contains("VNI") || e.contains("vni"), "{e}");
    }
    a.x.must(&[
        "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET, "--vni", VNI,
    ]);
    let e = a.x.refused(&[
        "network", "create", "y", "--driver", "overlay", "--vni", VNI,
    ]);
    assert!(e.contains(VNI), "{e}");
    a.x.must(&["network", "create", "auto", "--driver", "overlay"]);
    let auto = a.x.json(&["network", "inspect", "auto"]);
    assert_eq!(
        (&auto["driver"], &auto["vni"], &auto["mtu"]),
        (&"overlay".into(), &4096.into(), &1450.into()),
        "{auto}"
    );
    a.x.must(&["network", "create", "auto2", "--driver", "overlay"]);
    assert_eq!(a.x.json(&["network", "inspect", "auto2"])["vni"], 4097);
    let ls = a.x.json(&["network", "ls"]);
    assert!(
        !ls.as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "x" || n["name"] == "y"),
        "a refused network was made: {ls}"
    );
    // Peers only on overlay networks.
    a.x.must(&["network", "create", "plain", "--subnet", "10.201.0.0/24"]);
    let e = a.x.refused(&["vtep", "peer", "add", "plain", &u.ip(3)]);
    assert!(e.contains("not an overlay network"), "{e}");
    let e = a.x.refused(&["vtep", "peer", "add", "nosuch", &u.ip(3)]);
    assert!(e.contains("nosuch"), "{e}");

    // The overlay works with a kernel host.
    let k = KernelHost::new(&u, &p, 3, &[&vtep], "10.200.0.31", None, 1450);
    a.peer_add(&k.ip);
    let a1 = a.container(&format!("{p}a1"), "10.200.0.11", "tap", "a1");
    assert!(k.container.reaches("10.200.0.11", Duration::from_secs(10)));

    // A static remote station with an address: listed, its ARP answered by xvs; then gone.
    let e =
        a.x.refused(&["vtep", "fdb", "add", "ov", "nonsense", &k.ip]);
    assert!(e.contains("nonsense"), "{e}");
    a.x.must(&[
        "vtep",
        "fdb",
        "add",
        "ov",
        "02:00:00:00:00:99",
        &k.ip,
        "--ip",
        "10.200.0.99",
    ]);
    let fdb = shown_ov(&a.x)["fdb"].clone();
    let st = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == "02:00:00:00:00:99")
        .unwrap_or_else(|| panic!("static entry not shown: {fdb}"));
    assert_eq!(
        (&st["remote"], &st["static"], &st["ip"]),
        (&k.ip.as_str().into(), &true.into(), &"10.200.0.99".into()),
        "{st}"
    );
    let _ = a1.ping("10.200.0.99", 1);
    let neigh = a1.must(&["ip", "neigh", "show", "10.200.0.99"]);
    assert!(
        neigh.contains("02:00:00:00:00:99"),
        "ARP not answered: {neigh}"
    );
    a.x.must(&["vtep", "fdb", "del", "ov", "02:00:00:00:00:99"]);
    let fdb = shown_ov(&a.x)["fdb"].clone();
    assert!(
        !fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == "02:00:00:00:00:99"),
        "{fdb}"
    );

    // A bounded storm of malformed VXLAN at xvs's uplink MAC and address, from the kernel
    // host's underlay interface (which is not in the way: it only sends).
    const COUNT: u64 = 50;
    let up = a.x.json(&["uplink", "show"]);
    let xvs_mac = up["mac"].as_str().unwrap().to_string();
    let before = a.x.json(&["stats"]);
    let sent = k.ns.must(&[
        "timeout",
        "60",
        "/usr/bin/python3",
        script("vxlan_malformed.py").to_str().unwrap(),
        "ul0",
        &k.ns.mac("ul0"),
        &xvs_mac,
        &k.ip,
        &vtep,
        VNI,
        &COUNT.to_string(),
    ]);
    eprintln!("sent:\n{sent}");
    // What decap checks is counted under vxlan/; UDP to another port and a fragment (its
    // UDP header unread) are not VXLAN to the VTEP: they meet the uplink's conntrack.
    let reasons = [
        ("vxlan", "bad_flags"),
        ("vxlan", "unknown_vni"),
        ("vxlan", "truncated"),
        ("vxlan", "bad_checksum"),
        ("vxlan", "unknown_peer"),
        ("conntrack", "no_mapping"),
        ("conntrack", "fragment"),
    ];
    let counted = wait_until(Duration::from_secs(5), || {
        let now = a.x.json(&["stats"]);
        reasons
            .iter()
            .all(|(stage, r)| stage_drops(&now, stage, r) >= stage_drops(&before, stage, r) + COUNT)
    });
    let after = a.x.json(&["stats"]);
    let (old, new) = (drops(&before), drops(&after));
    for (reason, n) in &new {
        let was = old.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n);
        if *n != was {
            eprintln!("{reason}: {was} -> {n}");
        }
    }
    assert!(counted, "not every malformed kind was counted: {after}");
    assert!(a.x.alive(), "xvsd died on malformed VXLAN");
    assert!(
        a1.ping("10.200.0.31", 3),
        "the overlay stopped after the storm"
    );
    assert!(k.container.ping("10.200.0.11", 3));
    drop(a1);
}
