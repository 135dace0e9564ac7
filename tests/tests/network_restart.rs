//! Networks across restarts, and DNS forwarding upstream: a dnsmasq in its own namespace
//! (198.18.0.0/15 addresses, reached from the host over a veth this test made) answers what
//! the embedded DNS does not know. xvsd killed or stopped and started again re-adopts every
//! endpoint, a veth (AF_XDP) and a TAP one: no duplicate veths, the TAP opened again rather
//! than made anew, traffic and DNS work again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xvs_tests::{Netns, Xvsd, endpoint_links, unique_prefix, veth};

#[test]
fn endpoints_survive_restart_and_dns_forwards_upstream() {
    let p = unique_prefix("nr");
    // The upstream resolver: dnsmasq in its own namespace, reached over a veth.
    let up = Netns::new(&format!("{p}up"));
    let _l = veth(&format!("{p}u"), &up, "eth0", "198.18.7.2/30");
    xvs_tests::must(&[
        "ip",
        "addr",
        "add",
        "198.18.7.1/30",
        "dev",
        &format!("{p}u"),
    ]);
    let mut dnsmasq = up.spawn_logged(&[
        "dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--user=root",
        "--listen-address=198.18.7.2",
        "--bind-interfaces",
        "--address=/upstream.test/198.18.0.9",
        "--address=/nowhere.test/",
    ]);

    let listening = xvs_tests::wait_until(Duration::from_secs(5), || {
        String::from_utf8_lossy(&up.sh(&["ss", "-lun"]).stdout).contains("198.18.7.2:53")
    });
    if !listening {
        let _ = dnsmasq.kill();
        let out = dnsmasq.wait_with_output().unwrap();
        panic!(
            "dnsmasq did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut x = Xvsd::start(&["--dns-upstream", "198.18.7.2"]);
    x.must(&["network", "create", "app", "--subnet", "10.237.0.0/24"]);
    let a = Netns::new(&format!("{p}a"));
    let b = Netns::new(&format!("{p}b"));
    x.must(&[
        "network",
        "connect",
        "app",
        &a.name,
        "--name",
        "web",
        "--port-type",
        "veth",
    ]);
    let eb = x.json(&[
        "network", "connect", "app", &b.name, "--name", "db", "--alias", "pg",
    ]);
    assert_eq!(
        eb["port_type"], "tap",
        "the default endpoint is a TAP: {eb}"
    );
    let tap_index = || ifindex(&b, "eth0");
    let b_index = tap_index();
    assert!(a.reaches("10.237.0.3", Duration::from_secs(5)));
    assert_eq!(a.dig("10.237.0.1", "pg", false), "10.237.0.3");
    let forwarded = xvs_tests::wait_until(Duration::from_secs(10), || {
        a.dig("10.237.0.1", "upstream.test", false) == "198.18.0.9"
    });
    if !forwarded {
        let direct = xvs_tests::sh(&["dig", "+short", "+time=1", "@198.18.7.2", "upstream.test"]);
        panic!(
            "not forwarded upstream; asked directly, dnsmasq says {:?}; xvsd log:\n{}",
            String::from_utf8_lossy(&direct.stdout),
            x.log()
        );
    }
    let links = endpoint_links();
    assert!(!links.is_empty());

    for how in ["kill", "term"] {
        if how == "kill" {
            x.kill_hard();
        } else {
            assert!(x.stop(), "xvsd did not exit 0 on SIGTERM");
        }
        // Endpoints' veths and TAPs are kept for re-adoption.
        assert!(a.sh(&["ip", "link", "show", "eth0"]).status.success());
        assert!(b.sh(&["ip", "link", "show", "eth0"]).status.success());
        x.start_again();
        let inspect = x.json(&["network", "inspect", "app"]);
        assert_eq!(
            inspect["endpoints"].as_array().unwrap().len(),
            2,
            "{inspect}"
        );
        assert_eq!(
            endpoint_links(),
            links,
            "endpoints re-made instead of re-adopted ({how})"
        );
        assert_eq!(
            tap_index(),
            b_index,
            "TAP endpoint re-made instead of re-opened ({how})"
        );
        assert!(
            a.reaches("10.237.0.3", Duration::from_secs(10)),
            "no traffic after restart ({how})"
        );
        assert!(b.ping("10.237.0.1", 2), "gateway after restart ({how})");
        assert_eq!(
            b.dig("10.237.0.1", "web", false),
            "10.237.0.2",
            "DNS after restart ({how})"
        );
        assert_eq!(b.dig("10.237.0.1", "upstream.test", false), "198.18.0.9");
    }

    // A name upstream says does not exist: its NXDOMAIN is passed through.
    let out = a.sh(&["dig", "+time=2", "@10.237.0.1", "nowhere.test"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"));

    x.must(&["network", "disconnect", "app", &a.name]);
    x.must(&["network", "disconnect", "app", &b.name]);
    assert!(
        !b.sh(&["ip", "link", "show", "eth0"]).status.success(),
        "disconnect left the TAP in the sandbox"
    );
    x.must(&["network", "rm", "app"]);
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
}

/// The index of `ifname` inside `ns`.
fn ifindex(ns: &Netns, ifname: &str) -> String {
    let out = ns.must(&["cat", &format!("/sys/class/net/{ifname}/ifindex")]);
    out.trim().to_string()
}
