//! Docker-style networks end to end: two networks of three sandboxes each (reachable inside a
//! network, not across), the gateway answering ping, DNS at the gateway for names and aliases
//! (UDP, TCP, and getent through /etc/netns/NAME/resolv.conf) scoped to the network, a sandbox
//! on both networks, disconnect and reconnect, and --icc=false. One network's endpoints are
//! veths on AF_XDP, the other's TAPs with offloads (the default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xvs_tests::{Netns, Xvsd, endpoint_ip, unique_prefix};

fn getent(ns: &Netns, name: &str) -> Option<String> {
    let out = ns.sh(&["getent", "hosts", name]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .into()
    })
}

#[test]
fn two_networks_three_sandboxes_each() {
    let p = unique_prefix("nb");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "red", "--subnet", "10.236.1.0/24"]);
    x.must(&["network", "create", "blue", "--subnet", "10.236.2.0/24"]);
    let mut sandboxes = Vec::new(); // (netns, network, address, name)
    for (net, n) in [("red", 1), ("blue", 2)] {
        for i in 0..3 {
            let ns = Netns::new(&format!("{p}{}{i}", &net[..1]));
            let name = format!("{net}{i}");
            let alias = format!("{net}{i}.svc");
            // red's endpoints are veths on AF_XDP, blue's the default (TAPs with offloads).
            let mut args = vec![
                "network", "connect", net, &ns.name, "--name", &name, "--alias", &alias,
            ];
            let kind = if net == "red" {
                args.extend(["--port-type", "veth"]);
                "veth"
            } else {
                "tap"
            };
            let ep = x.json(&args);
            let addr = endpoint_ip(&ep);
            assert!(addr.starts_with(&format!("10.236.{n}.")), "{ep}");
            assert_eq!(ep["ifname"], "eth0");
            assert_eq!(ep["port_type"], kind, "{ep}");
            assert_eq!(ep["gateway"], format!("10.236.{n}.1"));
            sandboxes.push((ns, net, addr, name));
        }
    }

    // Reachability matrix: inside a network yes, across no.
    for (a, net_a, _, _) in &sandboxes {
        for (_, net_b, addr_b, _) in &sandboxes {
            if a.name.ends_with(&addr_b[addr_b.len() - 1..]) && net_a == net_b {
                continue;
            }
            if net_a == net_b {
                assert!(
                    a.reaches(addr_b, Duration::from_secs(5)),
                    "{} -> {addr_b}",
                    a.name
                );
            } else {
                assert!(
                    a.unreachable(addr_b),
                    "{} reached {addr_b} across networks",
                    a.name
                );
            }
        }
    }
    // Gateways answer ping, each only on its own network.
    assert!(sandboxes[0].0.ping("10.236.1.1", 3));
    assert!(sandboxes[3].0.ping("10.236.2.1", 3));
    assert!(sandboxes[0].0.unreachable("10.236.2.1"));

    // What crossed over was routed to the gateway and dropped there, counted: networks are
    // isolated from each other.
    let stats = x.json(&["stats"]);
    assert!(
        xvs_tests::drop_count(&stats, "other_network") > 0,
        "cross-network traffic not counted: {stats}"
    );

    // DNS: names and aliases within the network, over UDP and TCP, and through getent.
    let (red0, blue0) = (&sandboxes[0].0, &sandboxes[3].0);
    assert_eq!(red0.dig("10.236.1.1", "red1", false), sandboxes[1].2);
    assert_eq!(red0.dig("10.236.1.1", "red2.svc", true), sandboxes[2].2);
    assert_eq!(blue0.dig("10.236.2.1", "blue2", true), sandboxes[5].2);
    assert_eq!(
        getent(red0, "red1").as_deref(),
        Some(sandboxes[1].2.as_str())
    );
    assert_eq!(
        getent(blue0, "blue1.svc").as_deref(),
        Some(sandboxes[4].2.as_str())
    );
    // ... and not across.
    assert_eq!(red0.dig("10.236.1.1", "blue1", false), "");
    assert_eq!(getent(red0, "blue1"), None);
    let nx = String::from_utf8_lossy(&red0.sh(&["dig", "+time=2", "@10.236.1.1", "blue1"]).stdout)
        .to_string();
    assert!(nx.contains("NXDOMAIN"), "{nx}");

    // One sandbox on both networks: eth1 on blue, reaches both sides.
    let both = &sandboxes[2].0;
    let ep = x.json(&[
        "network",
        "connect",
        "blue",
        &both.name,
        "--name",
        "bridgehead",
    ]);
    assert_eq!(ep["ifname"], "eth1");
    let both_blue = endpoint_ip(&ep);
    assert!(both.reaches(&sandboxes[4].2, Duration::from_secs(5)));
    assert!(both.reaches(&sandboxes[0].2, Duration::from_secs(5)));
    assert_eq!(blue0.dig("10.236.2.1", "bridgehead", false), both_blue);
    // Other endpoints are undisturbed.
    assert!(sandboxes[3].0.ping(&sandboxes[4].2, 2));

    // Disconnect: the interface, the name and the address go; reconnect gets them back.
    x.must(&["network", "disconnect", "blue", &both.name]);
    assert!(!both.sh(&["ip", "link", "show", "eth1"]).status.success());
    assert_eq!(blue0.dig("10.236.2.1", "bridgehead", false), "");
    let inspect = x.json(&["network", "inspect", "blue"]);
    assert_eq!(inspect["endpoints"].as_array().unwrap().len(), 3);
    let ep = x.json(&["network", "connect", "blue", &both.name, "--ip", &both_blue]);
    assert_eq!(ep["address"].as_str().unwrap(), format!("{both_blue}/24"));
    assert!(both.reaches(&sandboxes[3].2, Duration::from_secs(5)));
    x.must(&["network", "disconnect", "blue", &both.name]);

    // Disconnecting a named sandbox's last network removes its resolv.conf.
    let red1 = &sandboxes[1].0;
    let conf = format!("/etc/netns/{}/resolv.conf", red1.name);
    assert!(std::path::Path::new(&conf).exists());
    x.must(&["network", "disconnect", "red", &red1.name]);
    assert!(!std::path::Path::new(&conf).exists());

    let ls = x.json(&["network", "ls"]);
    assert_eq!(ls.as_array().unwrap().len(), 2);
    for (ns, net, _, _) in &sandboxes {
        let _ = x.ctl(&["network", "disconnect", net, &ns.name]);
    }
    x.must(&["network", "rm", "red"]);
    x.must(&["network", "rm", "blue"]);
}

#[test]
fn icc_false_blocks_containers_but_not_the_gateway() {
    let p = unique_prefix("ni");
    let x = Xvsd::start(&[]);
    x.must(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.236.3.0/24",
        "--icc=false",
    ]);
    let a = Netns::new(&format!("{p}a"));
    let b = Netns::new(&format!("{p}b"));
    x.must(&["network", "connect", "quiet", &a.name, "--name", "qa"]);
    let eb = x.json(&["network", "connect", "quiet", &b.name, "--name", "qb"]);
    assert!(
        a.reaches("10.236.3.1", Duration::from_secs(5)),
        "gateway blocked by icc=false"
    );
    assert!(b.ping("10.236.3.1", 2));
    assert!(a.unreachable("10.236.3.3"), "icc=false let a reach b");
    // Broadcasts (ARP) reach only the gateway; with b's MAC known, unicast is a counted drop.
    let mac_b = eb["mac"].as_str().unwrap();
    a.must(&[
        "ip",
        "neigh",
        "replace",
        "10.236.3.3",
        "lladdr",
        mac_b,
        "dev",
        "eth0",
    ]);
    assert!(
        a.unreachable("10.236.3.3"),
        "icc=false let unicast from a reach b"
    );
    assert_eq!(
        a.dig("10.236.3.1", "qb", false),
        "10.236.3.3",
        "DNS still answers"
    );
    let stats = x.json(&["stats"]);
    assert!(xvs_tests::drop_count(&stats, "icc_disabled") > 0);
    let ls = x.json(&["network", "ls"]);
    assert_eq!(ls[0]["icc"], false);
    x.must(&["network", "disconnect", "quiet", &a.name]);
    x.must(&["network", "disconnect", "quiet", &b.name]);
}

#[test]
fn routed_traffic_without_an_uplink_is_a_counted_drop() {
    let p = unique_prefix("nr");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "open", "--subnet", "10.236.5.0/24"]);
    x.must(&[
        "network",
        "create",
        "closed",
        "--subnet",
        "10.236.6.0/24",
        "--internal",
    ]);
    let (a, b) = (Netns::new(&format!("{p}a")), Netns::new(&format!("{p}b")));
    x.must(&["network", "connect", "open", &a.name, "--name", "oa"]);
    x.must(&["network", "connect", "closed", &b.name, "--name", "cb"]);
    // Both gateways answer ping and DNS (for the gateway itself, not routed).
    assert!(a.reaches("10.236.5.1", Duration::from_secs(5)));
    assert!(b.reaches("10.236.6.1", Duration::from_secs(5)));
    assert_eq!(b.dig("10.236.6.1", "cb", false), "10.236.6.2");
    // Beyond the networks: nothing routes out without an uplink, and an internal network
    // never does.
    assert!(a.unreachable("198.18.5.1"));
    assert!(b.unreachable("198.18.5.1"));
    let stats = x.json(&["stats"]);
    assert!(xvs_tests::drop_count(&stats, "no_route") >= 2, "{stats}");
    assert!(
        xvs_tests::drop_count(&stats, "internal_network") >= 2,
        "{stats}"
    );
    let drops = stats["drops"].as_array().unwrap();
    assert!(
        drops
            .iter()
            .any(|d| d["stage"] == "route" && d["reason"] == "no_route"),
        "reasons carry their stage: {stats}"
    );
    // trace shows the route stage's decision.
    let mac_gw = "02:42:0a:ec:05:01";
    let t = x.must(&[
        "trace",
        "net.open",
        &format!(
            "in_port=gw,dl_src=02:00:00:00:00:09,dl_dst={mac_gw},udp,nw_src=10.236.5.9,nw_dst=198.18.5.1,tp_src=1,tp_dst=2"
        ),
    ]);
    assert!(t.contains("route") && t.contains("no uplink is set"), "{t}");
    x.must(&["network", "disconnect", "open", &a.name]);
    x.must(&["network", "disconnect", "closed", &b.name]);
}
