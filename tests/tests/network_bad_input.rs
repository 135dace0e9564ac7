//! Bad network requests: clear one-line errors, and nothing half-made — no leftover veth, no
//! address held, state unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use xvs_tests::{Netns, Xvsd, endpoint_links, unique_prefix};

#[test]
fn bad_network_requests_leave_nothing_behind() {
    let p = unique_prefix("nx");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "n1", "--subnet", "10.238.0.0/24"]);
    let a = Netns::new(&format!("{p}a"));
    let b = Netns::new(&format!("{p}b"));
    x.must(&[
        "network",
        "connect",
        "n1",
        &a.name,
        "--ip",
        "10.238.0.10",
        "--name",
        "a",
        "--port-type",
        "veth",
    ]);
    let links = endpoint_links().len();
    let before = network_state(&x, "n1");

    let e = x.refused(&["network", "create", "n2", "--subnet", "10.238.0.128/25"]);
    assert!(e.contains("overlap"), "{e}");
    let e = x.refused(&["network", "create", "n3", "--subnet", "10.300.0.0/24"]);
    assert!(e.contains("10.300.0.0/24"), "{e}");
    let e = x.refused(&["network", "create", "n3", "--subnet", "10.239.0.0/33"]);
    assert!(e.contains("/33") || e.contains("33"), "{e}");
    let e = x.refused(&["network", "create", "n1"]);
    assert!(e.contains("n1"), "{e}");
    let e = x.refused(&["network", "connect", "n1", &format!("{p}missing")]);
    assert!(e.contains("missing"), "{e}");
    let e = x.refused(&["network", "connect", "n1", "/nonexistent/netns/file"]);
    assert!(e.contains("/nonexistent/netns/file"), "{e}");
    let e = x.refused(&["network", "connect", "n1", &b.name, "--ip", "10.238.0.10"]);
    assert!(e.contains("10.238.0.10"), "duplicate --ip: {e}");
    let e = x.refused(&["network", "connect", "n1", &b.name, "--ip", "10.9.9.9"]);
    assert!(e.contains("10.9.9.9"), "outside the subnet: {e}");
    let e = x.refused(&["network", "connect", "n1", &b.name, "--ip", "10.238.0.1"]);
    assert!(e.contains("10.238.0.1"), "the gateway's address: {e}");
    let e = x.refused(&["network", "connect", "n1", &a.name]);
    assert!(e.contains(&a.name), "connect twice: {e}");
    let e = x.refused(&["network", "connect", "nope", &b.name]);
    assert!(e.contains("nope"), "{e}");
    let e = x.refused_with(
        2,
        &["network", "connect", "n1", &b.name, "--port-type", "vhost"],
    );
    assert!(e.contains("vhost"), "{e}");
    let e = x.refused(&[
        "network",
        "connect",
        "n1",
        &b.name,
        "--port-type",
        "veth",
        "--ip",
        "10.238.0.10",
    ]);
    assert!(
        e.contains("10.238.0.10"),
        "duplicate --ip on a veth endpoint: {e}"
    );
    let e = x.refused(&["network", "disconnect", "n1", &b.name]);
    assert!(e.contains(&b.name), "{e}");
    let e = x.refused(&["network", "rm", "n1"]);
    assert!(e.contains(&a.name), "rm with endpoints must list them: {e}");

    // Nothing half-made: no veth left over, b has no interface, no address held.
    assert_eq!(
        endpoint_links().len(),
        links,
        "a failed connect left a veth"
    );
    assert!(!b.sh(&["ip", "link", "show", "eth0"]).status.success());
    assert_eq!(network_state(&x, "n1"), before);
    let ep = x.json(&["network", "connect", "n1", &b.name]);
    assert_eq!(
        ep["address"], "10.238.0.2/24",
        "an address was held by a failed connect"
    );
    assert_eq!(x.json(&["network", "ls"]).as_array().unwrap().len(), 1);

    x.must(&["network", "disconnect", "n1", &a.name]);
    x.must(&["network", "disconnect", "n1", &b.name]);
    x.must(&["network", "rm", "n1"]);
    assert_eq!(endpoint_links().len(), links - 1);
}

/// `network inspect` without the gateway's live counters: the sandboxes' own kernels send
/// frames (IPv6 router solicitations, MLD) toward the gateway at any moment, and counters are
/// not state.
fn network_state(x: &Xvsd, net: &str) -> serde_json::Value {
    let mut v = x.json(&["network", "inspect", net]);
    let counters = v.as_object_mut().and_then(|o| o.remove("gateway_counters"));
    assert!(
        counters.is_some(),
        "inspect shows the gateway's counters: {v}"
    );
    v
}
