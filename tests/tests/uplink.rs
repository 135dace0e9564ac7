//! The uplink: xvs's own MAC and address on an interface the host keeps using. An `outside`
//! namespace (198.18.0.0/15) hangs off a veth whose host end also carries the host's own
//! address; with the uplink set, the outside reaches both the host's address and xvs's
//! (answered by xvs's own stack through the steering program); the setting survives a restart
//! (after SIGTERM, and after SIGKILL, whose leftover steering program the next xvsd replaces);
//! `uplink del` leaves the interface as it was. Bad requests are refused with nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xvs_tests::{Netns, Xvsd, must, sh, unique_prefix, veth};

fn xdp_attached(dev: &str) -> bool {
    String::from_utf8_lossy(&sh(&["ip", "-d", "link", "show", dev]).stdout).contains("prog/xdp")
}

/// Whether `outside` reaches xvs's address afresh (its neighbour cache flushed first, so the
/// ARP exchange is part of it).
fn reaches_afresh(outside: &Netns, ip: &str, within: Duration) -> bool {
    must(&[
        "ip",
        "netns",
        "exec",
        &outside.name,
        "ip",
        "neigh",
        "flush",
        "all",
    ]);
    outside.reaches(ip, within)
}

#[test]
fn uplink_shares_an_interface_with_the_host() {
    let p = unique_prefix("up");
    let outside = Netns::new(&format!("{p}o"));
    let dev = format!("{p}u");
    let _link = veth(&dev, &outside, "eth0", "198.18.9.2/24");
    // The host's own address on the interface xvs will share.
    must(&["ip", "addr", "add", "198.18.9.1/24", "dev", &dev]);
    let mut x = Xvsd::start(&[]);

    // Bad input first: nothing is made.
    let e = x.refused(&[
        "uplink",
        "set",
        &format!("{p}nope"),
        "--ip",
        "198.18.9.9/24",
    ]);
    assert!(e.contains("does not exist"), "{e}");
    let e = x.refused(&["uplink", "set", &dev, "--ip", "198.18.9.9"]);
    assert!(e.contains("invalid CIDR"), "{e}");
    let e = x.refused(&["uplink", "set", &dev, "--ip", "198.18.9.0/24"]);
    assert!(e.contains("not a host address"), "{e}");
    let e = x.refused(&[
        "uplink",
        "set",
        &dev,
        "--ip",
        "198.18.9.9/24",
        "--gateway",
        "10.0.0.1",
    ]);
    assert!(e.contains("is not another host of 198.18.9.0/24"), "{e}");
    let e = x.refused(&["uplink", "show"]);
    assert!(e.contains("no uplink is set"), "{e}");
    assert!(!xdp_attached(&dev));

    let up = x.json(&[
        "uplink",
        "set",
        &dev,
        "--ip",
        "198.18.9.9/24",
        "--gateway",
        "198.18.9.2",
    ]);
    assert_eq!(up["ip"], "198.18.9.9/24", "{up}");
    assert_eq!(up["gateway"], "198.18.9.2");
    assert!(up["mode"].as_str().unwrap().ends_with("shared"), "{up}");
    assert_eq!(up["state"], "up");
    assert!(xdp_attached(&dev));
    let e = x.refused(&["uplink", "set", &dev, "--ip", "198.18.9.8/24"]);
    assert!(e.contains("already set"), "{e}");

    // xvs answers ARP and ping on its own address; the host keeps answering on its own.
    assert!(
        outside.reaches("198.18.9.9", Duration::from_secs(5)),
        "xvs's address on the uplink does not answer"
    );
    assert!(
        outside.ping("198.18.9.1", 3),
        "the host's own address stopped answering"
    );
    let mac = outside.must(&["ip", "neigh", "show", "198.18.9.9"]);
    assert!(mac.contains(up["mac"].as_str().unwrap()), "{mac} vs {up}");
    let shown = x.json(&["uplink", "show"]);
    assert!(shown["rx_packets"].as_u64().unwrap() >= 2, "{shown}");
    assert!(shown["tx_packets"].as_u64().unwrap() >= 2, "{shown}");

    // A clean restart restores it.
    assert!(x.stop(), "xvsd did not exit 0 on SIGTERM");
    assert!(
        !xdp_attached(&dev),
        "a stopped xvsd left its steering program"
    );
    x.start_again();
    assert_eq!(x.json(&["uplink", "show"])["ip"], "198.18.9.9/24");
    assert!(
        reaches_afresh(&outside, "198.18.9.9", Duration::from_secs(10)),
        "xvs's address does not answer after a restart"
    );

    // A crash leaves the program attached; the next xvsd replaces it (it is xvs's own).
    x.kill_hard();
    assert!(xdp_attached(&dev));
    x.start_again();
    assert!(
        reaches_afresh(&outside, "198.18.9.9", Duration::from_secs(10)),
        "xvs's address does not answer after a restart from SIGKILL"
    );
    assert_eq!(x.json(&["uplink", "show"])["state"], "up");

    // del: the interface as it was found; the host still answers, xvs no longer.
    x.must(&["uplink", "del"]);
    assert!(!xdp_attached(&dev), "uplink del left the steering program");
    assert!(!reaches_afresh(
        &outside,
        "198.18.9.9",
        Duration::from_secs(2)
    ));
    assert!(outside.ping("198.18.9.1", 3));
    let e = x.refused(&["uplink", "del"]);
    assert!(e.contains("no uplink is set"), "{e}");
    x.restart();
    assert!(x.refused(&["uplink", "show"]).contains("no uplink is set"));
}
