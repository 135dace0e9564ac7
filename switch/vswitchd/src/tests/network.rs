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
fn macs_follow_docker() {
    let mac = mac_for(Ipv4Addr::new(10, 200, 0, 2));
    assert_eq!(mac, Mac([2, 0x42, 10, 200, 0, 2]));
    assert_eq!(mac.to_string(), "02:42:0a:c8:00:02");
}
