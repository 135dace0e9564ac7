//! Crashes (issue 14, item 4): `kill -9` of xvsd under traffic (ping and iperf3 running), then
//! a restart: every bridge, port, network, endpoint, uplink, overlay and service comes back,
//! ping answers again soon after the socket opens (measured), and no veth or TAP is left
//! orphaned or made twice. Then a state file truncated on disk: xvsd refuses to start, names
//! the file, leaves it as it is, and points at the backup of the last good state, from which
//! it starts again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use xvs_tests::{Netns, Xvsd, endpoint_ip, start_fails, unique_prefix, veth_between};

/// What must survive a crash: the configuration as the daemon reports it.
fn configuration(x: &Xvsd) -> Value {
    let networks: Vec<Value> = x
        .json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["name"].as_str().unwrap();
            let mut v = x.json(&["network", "inspect", name]);
            v["gateway_counters"] = Value::Null;
            v
        })
        .collect();
    let mut services = x.json(&["service", "ls"]);
    for s in services.as_array_mut().unwrap() {
        for b in s["backends"].as_array_mut().unwrap() {
            b["active"] = Value::Null;
            b["total"] = Value::Null;
        }
    }
    let bridges: Vec<Value> = x.json(&["show"])["bridges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let ports: Vec<Value> = b["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| serde_json::json!([p["name"], p["port_type"], p["state"]]))
                .collect();
            serde_json::json!({"name": b["name"], "ports": ports})
        })
        .collect();
    let uplink = x.json(&["uplink", "show"]);
    let vtep = x.json(&["vtep", "show"]);
    serde_json::json!({
        "networks": networks,
        "services": services,
        "bridges": bridges,
        "uplink": [uplink["iface"].clone(), uplink["ip"].clone(), uplink["mac"].clone()],
        "vtep": [vtep["local"].clone(), vtep["port"].clone()],
    })
}

/// The xvs-made interfaces in `ns` (switch sides of veth endpoints), sorted.
fn xvs_links(ns: &Netns) -> Vec<String> {
    let out = ns.must(&["ip", "-o", "link", "show"]);
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("xvs") && !n.starts_with("xvsumem"))
        .collect();
    v.sort();
    v
}

#[test]
fn kill_9_under_traffic_restores_everything_and_a_corrupt_state_file_is_refused() {
    let p = unique_prefix("crash");
    let host = Netns::new(&format!("{p}h"));
    let outside = Netns::new(&format!("{p}o"));
    veth_between(
        &host,
        "up0",
        Some("198.18.60.1/24"),
        &outside,
        "eth0",
        "198.18.60.2/24",
    );
    let mut x = Xvsd::start_in(&host, &["--workers", "2"]);
    x.must(&["uplink", "set", "up0", "--ip", "198.18.60.9/24"]);
    x.must(&["vtep", "set", "--local", "198.18.60.9"]);
    x.must(&["network", "create", "n1", "--subnet", "10.182.0.0/24"]);
    x.must(&[
        "network",
        "create",
        "ov",
        "--driver",
        "overlay",
        "--subnet",
        "10.183.0.0/24",
    ]);
    x.must(&["vtep", "peer", "add", "ov", "198.18.60.2"]);
    x.must(&["add-br", "br0"]);
    host.must(&[
        "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p0peer",
    ]);
    host.must(&["ip", "link", "set", "p0", "up"]);
    host.must(&["ip", "link", "set", "p0peer", "up"]);
    x.must(&["add-port", "br0", "p0"]);
    let a = Netns::new(&format!("{p}a"));
    let b = Netns::new(&format!("{p}b"));
    let c = Netns::new(&format!("{p}c"));
    let o = Netns::new(&format!("{p}v"));
    let _ia = endpoint_ip(&x.json(&["network", "connect", "n1", &a.name, "--name", "a"]));
    let ib = endpoint_ip(&x.json(&[
        "network",
        "connect",
        "n1",
        &b.name,
        "--name",
        "b",
        "--publish",
        "8080:80",
    ]));
    let _ic = endpoint_ip(&x.json(&["network", "connect", "n1", &c.name, "--port-type", "veth"]));
    x.json(&["network", "connect", "ov", &o.name]);
    x.must(&[
        "service",
        "create",
        "web",
        "--network",
        "n1",
        "--port",
        "tcp/80:5201",
    ]);
    x.must(&["service", "add-backend", "web", &ib]);
    assert!(a.reaches(&ib, Duration::from_secs(5)));
    let before = configuration(&x);
    let links = xvs_links(&host);
    assert_eq!(links.len(), 1, "c's veth: {links:?}");
    let sandbox_links = |ns: &Netns| {
        let mut v: Vec<String> = ns
            .must(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_string())
            })
            .collect();
        v.sort();
        v
    };
    let inside: Vec<Vec<String>> = [&a, &b, &c, &o].iter().map(|n| sandbox_links(n)).collect();

    // Traffic: a pinging b every 50 ms, and an iperf3 from c to b.
    let mut pinger = a.spawn(&["ping", "-i", "0.05", "-w", "30", &ib]);
    let mut server = b.spawn(&["iperf3", "-s", "-1"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut client = c.spawn(&["timeout", "20", "iperf3", "-c", &ib, "-t", "4"]);
    std::thread::sleep(Duration::from_millis(1500));

    x.kill_hard();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    x.start_again();
    let socket_open = t0.elapsed();
    let t1 = Instant::now();
    let back = xvs_tests::wait_until(Duration::from_secs(5), || {
        a.sh(&["ping", "-c", "1", "-W", "0.1", "-q", &ib])
            .status
            .success()
    });
    let ping_back = t1.elapsed();
    println!(
        "kill -9 under traffic: socket open {socket_open:?} after start, ping back {ping_back:?} after that"
    );
    assert!(back, "ping did not come back: {}", x.log());
    assert!(
        ping_back < Duration::from_secs(1),
        "ping back after {ping_back:?}"
    );
    for ch in [&mut pinger, &mut server, &mut client] {
        let _ = ch.kill();
        let _ = ch.wait();
    }

    assert_eq!(configuration(&x), before, "configuration after the crash");
    assert_eq!(xvs_links(&host), links, "orphaned or duplicated interfaces");
    let after: Vec<Vec<String>> = [&a, &b, &c, &o].iter().map(|n| sandbox_links(n)).collect();
    assert_eq!(after, inside, "a sandbox's interfaces changed");
    assert!(
        o.reaches("10.183.0.1", Duration::from_secs(3)),
        "the overlay's gateway"
    );

    // A truncated state file: refused, left as it is, the backup named; the backup starts.
    x.stop();
    let state = x.dir.join("state");
    let file = state.join("state.json");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 3]).unwrap();
    let (code, err) = start_fails(&host, &state, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{} is corrupt", file.display())) && err.contains("state.json.bak"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text[..text.len() / 3],
        "the broken file is kept"
    );
    std::fs::copy(state.join("state.json.bak"), &file).unwrap();
    x.start_again();
    let networks = x.json(&["network", "ls"]);
    assert!(
        networks
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "n1"),
        "{networks}"
    );
}
