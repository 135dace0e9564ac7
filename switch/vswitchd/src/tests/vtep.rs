#![allow(clippy::unwrap_used)]

use super::*;

fn overlay() -> NetworkConf {
    NetworkConf::test_overlay()
}

fn uplink() -> UplinkConf {
    crate::uplink::UplinkConf {
        iface: "eth9".into(),
        ip: Ipv4Addr::new(198, 18, 0, 9),
        subnet: "198.18.0.0/24".parse().unwrap(),
        gateway: None,
        mac: Mac([2, 0x58, 198, 18, 0, 9]),
    }
}

#[test]
fn the_vtep_lives_on_the_uplink() {
    assert!(matches!(
        configure("198.18.0.9", None, None),
        Err(VtepError::NoUplink)
    ));
    let e = configure("198.18.0.8", None, Some(&uplink())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--local 198.18.0.8 is not the uplink's address 198.18.0.9: the VTEP lives on the uplink"
    );
    assert!(matches!(
        configure("nope", None, Some(&uplink())),
        Err(VtepError::BadAddress {
            what: "--local",
            ..
        })
    ));
    assert!(matches!(
        configure("198.18.0.9", Some(0), Some(&uplink())),
        Err(VtepError::BadPort)
    ));
    let v = configure("198.18.0.9", None, Some(&uplink())).unwrap();
    assert_eq!((v.local, v.port), (Ipv4Addr::new(198, 18, 0, 9), 4789));
}

#[test]
fn peers_are_unicast_remote_and_listed_once() {
    let v = VtepConf {
        local: Ipv4Addr::new(198, 18, 0, 9),
        port: 4789,
    };
    let n = peer_add("ov", &overlay(), "198.18.0.2", Some(&v)).unwrap();
    assert_eq!(n.peers, vec![Ipv4Addr::new(198, 18, 0, 2)]);
    assert!(matches!(
        peer_add("ov", &n, "198.18.0.2", Some(&v)),
        Err(VtepError::PeerExists { .. })
    ));
    for bad in [
        "198.18.0.9",
        "224.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "127.0.0.1",
    ] {
        assert!(
            matches!(
                peer_add("ov", &n, bad, Some(&v)),
                Err(VtepError::NotUnicast(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        peer_add("ov", &n, "198.18.0", Some(&v)),
        Err(VtepError::BadAddress { .. })
    ));
    let mut full = overlay();
    full.peers = (0..DEFAULT_PEER_LIMIT as u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i + 1))
        .collect();
    assert!(matches!(
        peer_add("ov", &full, "198.18.0.2", Some(&v)),
        Err(VtepError::TooManyPeers(_))
    ));
    let e = peer_del("ov", &overlay(), "198.18.0.3").unwrap_err();
    assert_eq!(e.to_string(), "198.18.0.3 is not a peer of network ov");
    assert!(peer_del("ov", &n, "198.18.0.2").unwrap().peers.is_empty());
}

#[test]
fn static_entries_are_stations_behind_a_vtep() {
    let n = fdb_add(
        "ov",
        &overlay(),
        "02:42:0a:09:00:05",
        "198.18.0.2",
        Some("10.9.0.5"),
        None,
    )
    .unwrap();
    assert_eq!(n.remotes.len(), 1);
    assert_eq!(n.remotes[0].ip, Some(Ipv4Addr::new(10, 9, 0, 5)));
    // The same MAC again replaces it.
    let n = fdb_add("ov", &n, "02:42:0a:09:00:05", "198.18.0.3", None, None).unwrap();
    assert_eq!(n.remotes.len(), 1);
    assert_eq!(n.remotes[0].remote, Ipv4Addr::new(198, 18, 0, 3));
    for bad in [
        "ff:ff:ff:ff:ff:ff",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
        "02:42",
    ] {
        assert!(
            matches!(
                fdb_add("ov", &n, bad, "198.18.0.2", None, None),
                Err(VtepError::BadMac(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        fdb_add(
            "ov",
            &n,
            "02:42:0a:09:00:06",
            "198.18.0.2",
            Some("10.8.0.1"),
            None
        ),
        Err(VtepError::IpOutside { .. })
    ));
    let with_ip = fdb_add(
        "ov",
        &n,
        "02:42:0a:09:00:05",
        "198.18.0.3",
        Some("10.9.0.5"),
        None,
    )
    .unwrap();
    assert!(matches!(
        fdb_add(
            "ov",
            &with_ip,
            "02:42:0a:09:00:06",
            "198.18.0.2",
            Some("10.9.0.5"),
            None
        ),
        Err(VtepError::IpTaken { .. })
    ));
    let e = fdb_del("ov", &overlay(), "02:42:0a:09:00:05").unwrap_err();
    assert_eq!(
        e.to_string(),
        "network ov has no static entry for 02:42:0a:09:00:05"
    );
    assert!(
        fdb_del("ov", &n, "02:42:0a:09:00:05")
            .unwrap()
            .remotes
            .is_empty()
    );
}
