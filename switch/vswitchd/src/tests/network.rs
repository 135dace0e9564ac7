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

/// What users read: the texts xvsd replied with before the errors were typed.
#[test]
fn messages() {
    let io = || std::io::Error::from_raw_os_error(libc::EMFILE);
    let emfile = "Too many open files (os error 24)";
    let cases = [
        (
            NetworkError::Resolver(io()),
            format!("cannot start the DNS resolver: {emfile}"),
        ),
        (
            NetworkError::GatewayThread(io()),
            format!("cannot start the gateway thread: {emfile}"),
        ),
        (
            NetworkError::GatewayPort(io()),
            format!("cannot create gateway port: {emfile}"),
        ),
        (
            NetworkError::Exists("n1".into()),
            "network n1 already exists".into(),
        ),
        (
            NetworkError::Driver("macvlan".into()),
            "unknown driver \"macvlan\" (bridge or overlay)".into(),
        ),
        (
            NetworkError::VniTaken {
                vni: 4096,
                other: "n1".into(),
            },
            "VNI 4096 is already used by network n1".into(),
        ),
        (
            NetworkError::Overlap {
                subnet: "10.238.0.128/25".parse().unwrap(),
                other: "n1".into(),
            },
            "subnet 10.238.0.128/25 overlaps network n1's subnet".into(),
        ),
        (
            NetworkError::BadGateway("10.0.0".into()),
            "invalid gateway \"10.0.0\": not an IPv4 address".into(),
        ),
        (
            NetworkError::BadAddress("x".into()),
            "invalid address \"x\": not an IPv4 address".into(),
        ),
        (
            NetworkError::Mtu(9000),
            "MTU 9000 is out of range (68-3506)".into(),
        ),
        (
            NetworkError::NoSuchNetwork("nope".into()),
            "no network named nope".into(),
        ),
        (
            NetworkError::HasEndpoints {
                network: "n1".into(),
                endpoints: vec![
                    ("a".into(), Ipv4Addr::new(10, 238, 0, 10)),
                    ("/proc/1/ns/net".into(), Ipv4Addr::new(10, 238, 0, 2)),
                ],
            },
            "network n1 has active endpoints: a (10.238.0.10), /proc/1/ns/net (10.238.0.2); \
             disconnect them first"
                .into(),
        ),
        (
            NetworkError::AlreadyConnected {
                sandbox: "a".into(),
                network: "n1".into(),
            },
            "a is already connected to network n1".into(),
        ),
        (
            NetworkError::NotConnected {
                sandbox: "b".into(),
                network: "n1".into(),
            },
            "b is not connected to network n1".into(),
        ),
        (
            NetworkError::IfnameTaken {
                sandbox: "a".into(),
                ifname: "eth0".into(),
            },
            "a already has an interface named eth0".into(),
        ),
        (
            NetworkError::NoFreeIfname,
            "no free ethN interface name in the sandbox".into(),
        ),
        (
            NetworkError::Attach(DatapathError::WorkerGone(0)),
            "cannot attach the endpoint to the switch: datapath worker 0 is not responding".into(),
        ),
        // Wrapped errors pass their own text through.
        (
            NetworkError::from(IpamError::InUse(Ipv4Addr::new(10, 238, 0, 10))),
            "address 10.238.0.10 is already in use".into(),
        ),
        (
            NetworkError::from(UnknownPortType("vhost".into())),
            "unknown port type \"vhost\" (veth, tap or host-veth)".into(),
        ),
        (
            NetworkError::BadDockerId("c72d/".into()),
            "invalid Docker network ID \"c72d/\": must be 1-128 letters and digits".into(),
        ),
        (
            NetworkError::from(NameError::DnsName("bad..name".into())),
            "invalid DNS name \"bad..name\"".into(),
        ),
        (
            NetworkError::from(NetError::NoSuchNamespace("gone".into())),
            "network namespace gone does not exist".into(),
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn bad_creates_are_refused_before_anything_is_made() {
    use xvs_switch::datapath::DatapathConfig;
    let mut dp = Datapath::start(DatapathConfig {
        workers: 1,
        pool_frames: 64,
        umem: false,
    })
    .unwrap();
    let mut networks = Networks::start(None).unwrap();
    let mut existing = BTreeMap::new();
    let args = |subnet: &str| CreateArgs {
        subnet: Some(subnet.into()),
        ..CreateArgs::default()
    };
    let conf = networks
        .create(&mut dp, &existing, "n1", args("10.238.0.0/24"))
        .unwrap();
    existing.insert("n1".to_string(), conf);
    let refused = |networks: &mut Networks, dp: &mut Datapath, name: &str, a: CreateArgs| {
        networks.create(dp, &existing, name, a).unwrap_err()
    };
    assert!(matches!(
        refused(&mut networks, &mut dp, "n1", CreateArgs::default()),
        NetworkError::Exists(n) if n == "n1"
    ));
    assert!(matches!(
        refused(&mut networks, &mut dp, "a b", CreateArgs::default()),
        NetworkError::Name(NameError::Characters { .. })
    ));
    assert!(matches!(
        refused(&mut networks, &mut dp, "n2", args("10.238.0.128/25")),
        NetworkError::Overlap { other, .. } if other == "n1"
    ));
    assert!(matches!(
        refused(&mut networks, &mut dp, "n2", args("10.300.0.0/24")),
        NetworkError::Ipam(IpamError::CidrAddress { .. })
    ));
    let mut a = args("10.239.0.0/24");
    a.gateway = Some("10.239.1.1".into());
    assert!(matches!(
        refused(&mut networks, &mut dp, "n2", a),
        NetworkError::Ipam(IpamError::GatewayNotHost { .. })
    ));
    let mut a = args("10.239.0.0/24");
    a.gateway = Some("gw".into());
    assert!(matches!(
        refused(&mut networks, &mut dp, "n2", a),
        NetworkError::BadGateway(g) if g == "gw"
    ));
    let mut a = args("10.239.0.0/24");
    a.mtu = Some(67);
    assert!(matches!(
        refused(&mut networks, &mut dp, "n2", a),
        NetworkError::Mtu(67)
    ));
    let mut a = args("10.239.0.0/24");
    a.driver = Some("macvlan".into());
    assert!(matches!(
        refused(&mut networks, &mut dp, "n2", a),
        NetworkError::Driver(d) if d == "macvlan"
    ));
    let mut a = args("10.239.0.0/24");
    a.vni = Some(5000);
    assert!(matches!(
        refused(&mut networks, &mut dp, "n2", a),
        NetworkError::VniOnBridge
    ));
    for bad in [0, 1 << 24] {
        let mut a = args("10.239.0.0/24");
        a.driver = Some("overlay".into());
        a.vni = Some(bad);
        assert!(matches!(
            refused(&mut networks, &mut dp, "n2", a),
            NetworkError::Vni(v) if v == bad
        ));
    }
    // None of them made a bridge.
    let bridges: Vec<String> = dp.status().unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(bridges, vec!["net.n1".to_string()]);
    networks.stop(&mut dp, "n1");
    assert!(dp.status().unwrap().is_empty());
    networks.shutdown();
    dp.shutdown();
}

#[test]
fn overlays_get_vnis_from_4096_up_and_room_for_the_outer_headers() {
    use xvs_switch::datapath::DatapathConfig;
    let mut dp = Datapath::start(DatapathConfig {
        workers: 1,
        pool_frames: 64,
        umem: false,
    })
    .unwrap();
    let mut networks = Networks::start(None).unwrap();
    let mut existing = BTreeMap::new();
    let overlay = |subnet: &str, vni: Option<u32>, uplink_mtu: Option<u16>| CreateArgs {
        driver: Some("overlay".into()),
        subnet: Some(subnet.into()),
        vni,
        uplink_mtu,
        ..CreateArgs::default()
    };
    let a = networks
        .create(
            &mut dp,
            &existing,
            "a",
            overlay("10.237.0.0/24", None, None),
        )
        .unwrap();
    assert_eq!((a.vni, a.mtu, a.is_overlay()), (Some(4096), 1450, true));
    existing.insert("a".to_string(), a);
    let b = networks
        .create(
            &mut dp,
            &existing,
            "b",
            overlay("10.237.1.0/24", None, Some(1400)),
        )
        .unwrap();
    assert_eq!(
        (b.vni, b.mtu),
        (Some(4097), 1350),
        "next VNI; uplink MTU - 50"
    );
    existing.insert("b".to_string(), b);
    let err = networks
        .create(
            &mut dp,
            &existing,
            "c",
            overlay("10.237.2.0/24", Some(4097), None),
        )
        .unwrap_err();
    assert!(
        matches!(&err, NetworkError::VniTaken { vni: 4097, other } if other == "b"),
        "{err}"
    );
    let c = networks
        .create(
            &mut dp,
            &existing,
            "c",
            overlay("10.237.2.0/24", Some(42), None),
        )
        .unwrap();
    assert_eq!(c.vni, Some(42));
    let bridge = networks
        .create(
            &mut dp,
            &existing,
            "d",
            CreateArgs {
                subnet: Some("10.237.3.0/24".into()),
                uplink_mtu: Some(1400),
                ..CreateArgs::default()
            },
        )
        .unwrap();
    assert_eq!((bridge.vni, bridge.mtu), (None, 1500), "bridges keep 1500");
    for n in ["a", "b", "c", "d"] {
        networks.stop(&mut dp, n);
    }
    networks.shutdown();
    dp.shutdown();
}
