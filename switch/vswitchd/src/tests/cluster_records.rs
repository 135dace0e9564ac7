#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn keys_round_trip_under_the_prefix() {
    let p = "/xvs/";
    for k in [
        Key::Host("node-1".into()),
        Key::Network("ov".into()),
        Key::Vni(4096),
        Key::Endpoint {
            network: "ov".into(),
            ip: Ipv4Addr::new(10, 0, 0, 7),
        },
        Key::Service("web".into()),
        Key::Vip {
            network: "ov".into(),
            ip: Ipv4Addr::new(10, 0, 0, 9),
        },
        Key::Backend {
            service: "web".into(),
            addr: "10.0.0.7:8080".parse().unwrap(),
        },
    ] {
        let raw = k.render(p);
        assert_eq!(Key::parse(p, raw.as_bytes()), Some(k), "{raw}");
    }
    assert_eq!(Key::endpoints_of(p, "ov"), "/xvs/endpoints/ov/");
}

#[test]
fn keys_outside_the_layout_are_not_read() {
    let p = "/xvs/";
    for raw in [
        "/other/hosts/a",
        "/xvs/hosts/",
        "/xvs/hosts/a/b",
        "/xvs/vnis/x",
        "/xvs/endpoints/ov",
        "/xvs/endpoints/ov/10.0.0.300",
        "/xvs/endpoints//10.0.0.1",
        "/xvs/services/",
        "/xvs/backends/web/10.0.0.1",
        "/xvs/vips/ov/x",
    ] {
        assert_eq!(Key::parse(p, raw.as_bytes()), None, "{raw}");
    }
    assert_eq!(Key::parse(p, &[0xff, 0xfe]), None);
}

#[test]
fn a_network_record_compares_definitions_not_creators() {
    let conf = NetworkConf::test_overlay();
    let a = NetworkRecord::of(&conf, "a").unwrap();
    let b = NetworkRecord::of(&conf, "b").unwrap();
    assert!(a.same_network(&b));
    let c = NetworkRecord { mtu: 1400, ..b };
    assert!(!a.same_network(&c));
    let bridge = NetworkConf {
        driver: "bridge".into(),
        vni: None,
        ..conf
    };
    assert_eq!(NetworkRecord::of(&bridge, "a"), None);
    let text = serde_json::to_string(&a).unwrap();
    assert!(text.contains("\"subnet\":\"10.9.0.0/24\""), "{text}");
}
