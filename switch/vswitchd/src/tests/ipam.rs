//! Unit tests of `ipam.rs`.

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn cidr_parsing_normalises_and_refuses_garbage() {
    let s: Subnet = "10.1.2.3/24".parse().unwrap();
    assert_eq!(s.to_string(), "10.1.2.0/24");
    assert!("10.1.2.0".parse::<Subnet>().is_err());
    assert!("10.1.2.0/33".parse::<Subnet>().is_err());
    assert!("300.1.2.0/24".parse::<Subnet>().is_err());
    assert!("10.0.0.0/31".parse::<Subnet>().is_err());
}

#[test]
fn overlap_and_free_subnets() {
    let a: Subnet = "10.200.0.0/24".parse().unwrap();
    let b: Subnet = "10.200.0.128/25".parse().unwrap();
    let c: Subnet = "10.0.0.0/8".parse().unwrap();
    assert!(a.overlaps(b) && b.overlaps(a) && c.overlaps(a));
    let taken = [a, "10.200.1.0/24".parse().unwrap()];
    assert_eq!(
        free_subnet(taken.iter()).unwrap().to_string(),
        "10.200.2.0/24"
    );
}

#[test]
fn allocation_static_dynamic_release() {
    let mut p = Pool::new("10.9.0.0/29".parse().unwrap(), None).unwrap();
    assert_eq!(p.gateway, ip("10.9.0.1"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.2"));
    assert_eq!(p.allocate(Some(ip("10.9.0.5"))).unwrap(), ip("10.9.0.5"));
    assert!(
        p.allocate(Some(ip("10.9.0.5")))
            .unwrap_err()
            .contains("in use")
    );
    assert!(
        p.allocate(Some(ip("10.9.0.1")))
            .unwrap_err()
            .contains("gateway")
    );
    assert!(
        p.allocate(Some(ip("10.9.0.7")))
            .unwrap_err()
            .contains("broadcast")
    );
    assert!(
        p.allocate(Some(ip("10.9.1.2")))
            .unwrap_err()
            .contains("outside")
    );
    p.release(ip("10.9.0.2"));
    // released addresses come back last
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.3"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.4"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.6"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.2"));
    assert!(p.allocate(None).unwrap_err().contains("no free"));
    assert!(Pool::new("10.9.0.0/29".parse().unwrap(), Some(ip("10.8.0.1"))).is_err());
}
