//! Restart: SIGTERM exits cleanly (status 0); SIGKILL and a new start on the same state dir
//! bring the bridge and its ports back, and traffic flows again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xvs_tests::{Topology, Xvsd, unique_prefix};

fn bridge_summary(x: &Xvsd) -> Vec<(String, Option<u64>)> {
    let show = x.json(&["show"]);
    show["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["vlan"].as_u64()))
        .collect()
}

#[test]
fn bridge_and_ports_survive_kill_and_term() {
    let p = unique_prefix("rs");
    let mut x = Xvsd::start(&[]);
    x.must(&["add-br", "brr", "--ageing", "120"]);
    let t = Topology::veths(&x, "brr", &p, "10.233.0", 2);
    assert!(t.ns[0].reaches(&t.ips[1], Duration::from_secs(5)));
    let before = bridge_summary(&x);

    // A crash: nothing is cleaned up; the state file is all there is.
    x.kill_hard();
    assert!(t.ns[0].unreachable(&t.ips[1]), "traffic without xvsd");
    x.start_again();
    assert_eq!(bridge_summary(&x), before);
    assert_eq!(x.json(&["show"])["bridges"][0]["ageing_secs"], 120);
    assert!(
        t.ns[0].reaches(&t.ips[1], Duration::from_secs(10)),
        "no traffic after restart from SIGKILL"
    );

    // A clean stop: exit status 0, and the restart restores the same again.
    assert!(x.stop(), "xvsd did not exit 0 on SIGTERM");
    x.start_again();
    assert_eq!(bridge_summary(&x), before);
    assert!(
        t.ns[1].reaches(&t.ips[0], Duration::from_secs(10)),
        "no traffic after restart from SIGTERM"
    );
    assert!(x.stop());
}
