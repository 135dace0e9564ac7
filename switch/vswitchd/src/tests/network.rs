//! Unit tests of `network.rs`.

use super::*;

#[test]
fn host_ifnames_are_stable_short_and_distinct() {
    let a = host_ifname("n1", "ns1", "eth0");
    assert_eq!(a, host_ifname("n1", "ns1", "eth0"));
    assert_eq!(a.len(), 13);
    assert!(a.starts_with(HOST_IFNAME_PREFIX));
    assert_ne!(a, host_ifname("n1", "ns1", "eth1"));
    assert_ne!(a, host_ifname("n2", "ns1", "eth0"));
}

#[test]
fn names_and_macs() {
    assert_eq!(
        mac_for(Ipv4Addr::new(10, 200, 0, 2)),
        [2, 0x42, 10, 200, 0, 2]
    );
    assert!(validate_network_name("front-end_1").is_ok());
    assert!(validate_network_name("a b").is_err());
    assert!(validate_dns_name("web.svc").is_ok());
    assert!(validate_dns_name("bad..name").is_err());
}
