//! 100 sandboxes connected to one network, one after another, every other one through a veth
//! (AF_XDP) and the rest through the default TAP: every endpoint gets its own address, the
//! first and last reach each other, and the connect and disconnect latencies (as xvsctl sees
//! them, process start included) are printed as p50/p99 per endpoint kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use xvs_tests::{Netns, Xvsd, unique_prefix};

const SANDBOXES: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    eprintln!(
        "{what} latency over {} endpoints: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        percentile(&samples, 99.0).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
}

#[test]
fn connect_one_hundred_endpoints() {
    let p = unique_prefix("ns");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "big", "--subnet", "10.239.0.0/24"]);
    let sandboxes: Vec<Netns> = (0..SANDBOXES)
        .map(|i| Netns::new(&format!("{p}{i}")))
        .collect();

    let kind = |i: usize| if i.is_multiple_of(2) { "veth" } else { "tap" };
    let mut connect = [Vec::new(), Vec::new()];
    let mut addresses = BTreeSet::new();
    for (i, ns) in sandboxes.iter().enumerate() {
        let name = format!("c{i}");
        let t = Instant::now();
        let ep = x.json(&[
            "network",
            "connect",
            "big",
            &ns.name,
            "--name",
            &name,
            "--port-type",
            kind(i),
        ]);
        connect[i % 2].push(t.elapsed());
        assert_eq!(ep["port_type"], kind(i));
        assert!(addresses.insert(ep["address"].as_str().unwrap().to_string()));
    }
    assert_eq!(addresses.len(), SANDBOXES);
    let last = x.json(&["network", "inspect", "big"])["endpoints"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(last, SANDBOXES);
    let first_ip = "10.239.0.2";
    assert!(
        sandboxes[SANDBOXES - 1].reaches(first_ip, Duration::from_secs(5)),
        "the 100th endpoint cannot reach the first"
    );
    assert!(sandboxes[0].ping("10.239.0.1", 2));

    let mut disconnect = [Vec::new(), Vec::new()];
    for (i, ns) in sandboxes.iter().enumerate() {
        let t = Instant::now();
        x.must(&["network", "disconnect", "big", &ns.name]);
        disconnect[i % 2].push(t.elapsed());
    }
    let [connect_veth, connect_tap] = connect;
    let [disconnect_veth, disconnect_tap] = disconnect;
    report("network connect (veth)", connect_veth);
    report("network connect (tap)", connect_tap);
    report("network disconnect (veth)", disconnect_veth);
    report("network disconnect (tap)", disconnect_tap);
    x.must(&["network", "rm", "big"]);
}
