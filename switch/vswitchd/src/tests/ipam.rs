//! Unit tests of `ipam.rs`.

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn cidr_parsing_normalises_and_refuses_garbage() {
    let s: Subnet = "10.1.2.3/24".parse().unwrap();
    assert_eq!(s.to_string(), "10.1.2.0/24");
    assert_eq!(
        "10.1.2.0".parse::<Subnet>(),
        Err(IpamError::CidrSyntax("10.1.2.0".into()))
    );
    assert_eq!(
        "10.1.2.0/33".parse::<Subnet>(),
        Err(IpamError::CidrPrefix("10.1.2.0/33".into()))
    );
    assert_eq!(
        "10.1.2.0/x".parse::<Subnet>(),
        Err(IpamError::CidrPrefix("10.1.2.0/x".into()))
    );
    assert_eq!(
        "300.1.2.0/24".parse::<Subnet>(),
        Err(IpamError::CidrAddress {
            cidr: "300.1.2.0/24".into(),
            addr: "300.1.2.0".into()
        })
    );
    assert_eq!(
        "10.0.0.0/31".parse::<Subnet>(),
        Err(IpamError::UnusablePrefix("10.0.0.0/31".into()))
    );
    assert_eq!(DEFAULT_POOL.to_string(), "10.200.0.0/16");
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
    assert_eq!(
        free_subnet([DEFAULT_POOL].iter()),
        Err(IpamError::NoFreeSubnet)
    );
    let all: Vec<Subnet> = (0..=255)
        .map(|i| format!("10.200.{i}.0/24").parse().unwrap())
        .collect();
    assert_eq!(free_subnet(all.iter()), Err(IpamError::NoFreeSubnet));
    assert_eq!(
        free_subnet(all[1..].iter()).unwrap().to_string(),
        "10.200.0.0/24"
    );
}

#[test]
fn allocation_static_dynamic_release() {
    let mut p = Pool::new("10.9.0.0/29".parse().unwrap(), None).unwrap();
    assert_eq!(p.gateway, ip("10.9.0.1"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.2"));
    assert_eq!(p.allocate(Some(ip("10.9.0.5"))).unwrap(), ip("10.9.0.5"));
    let subnet = p.subnet;
    assert_eq!(
        p.allocate(Some(ip("10.9.0.5"))),
        Err(IpamError::InUse(ip("10.9.0.5")))
    );
    assert_eq!(
        p.allocate(Some(ip("10.9.0.1"))),
        Err(IpamError::Gateway(ip("10.9.0.1")))
    );
    assert_eq!(
        p.allocate(Some(ip("10.9.0.7"))),
        Err(IpamError::NotHost {
            ip: ip("10.9.0.7"),
            subnet
        })
    );
    assert_eq!(
        p.allocate(Some(ip("10.9.0.0"))),
        Err(IpamError::NotHost {
            ip: ip("10.9.0.0"),
            subnet
        })
    );
    assert_eq!(
        p.allocate(Some(ip("10.9.1.2"))),
        Err(IpamError::OutsideSubnet {
            ip: ip("10.9.1.2"),
            subnet
        })
    );
    p.release(ip("10.9.0.2"));
    // released addresses come back last
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.3"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.4"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.6"));
    assert_eq!(p.allocate(None).unwrap(), ip("10.9.0.2"));
    assert_eq!(p.allocate(None), Err(IpamError::Exhausted(subnet)));
    assert_eq!(
        Pool::new(subnet, Some(ip("10.8.0.1"))),
        Err(IpamError::GatewayNotHost {
            gateway: ip("10.8.0.1"),
            subnet
        })
    );
    assert!(Pool::new(subnet, Some(ip("10.9.0.7"))).is_err());
}

/// What users read: the texts xvsd replied with before the errors were typed.
#[test]
fn messages() {
    let subnet: Subnet = "10.9.0.0/29".parse().unwrap();
    let cases = [
        (
            IpamError::CidrSyntax("10.1.2.0".into()),
            r#"invalid CIDR "10.1.2.0": expected A.B.C.D/N"#,
        ),
        (
            IpamError::CidrAddress {
                cidr: "10.300.0.0/24".into(),
                addr: "10.300.0.0".into(),
            },
            r#"invalid CIDR "10.300.0.0/24": "10.300.0.0" is not an IPv4 address"#,
        ),
        (
            IpamError::CidrPrefix("10.239.0.0/33".into()),
            r#"invalid CIDR "10.239.0.0/33": prefix must be 0-32"#,
        ),
        (
            IpamError::UnusablePrefix("10.0.0.0/31".into()),
            "subnet 10.0.0.0/31 is unusable: the prefix must be between /8 and /30",
        ),
        (IpamError::NoFreeSubnet, "no free /24 left in 10.200.0.0/16"),
        (
            IpamError::GatewayNotHost {
                gateway: ip("10.8.0.1"),
                subnet,
            },
            "gateway 10.8.0.1 is not a host address of subnet 10.9.0.0/29",
        ),
        (
            IpamError::OutsideSubnet {
                ip: ip("10.9.9.9"),
                subnet,
            },
            "address 10.9.9.9 is outside subnet 10.9.0.0/29",
        ),
        (
            IpamError::Gateway(ip("10.9.0.1")),
            "address 10.9.0.1 is the network's gateway",
        ),
        (
            IpamError::NotHost {
                ip: ip("10.9.0.7"),
                subnet,
            },
            "address 10.9.0.7 is the network or broadcast address of 10.9.0.0/29",
        ),
        (
            IpamError::InUse(ip("10.9.0.5")),
            "address 10.9.0.5 is already in use",
        ),
        (
            IpamError::Exhausted(subnet),
            "subnet 10.9.0.0/29 has no free addresses",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}
