//! Unit tests of `config.rs`.

use super::*;

#[test]
fn save_load_roundtrip_and_corruption() {
    let dir = std::env::temp_dir().join(format!("xvs-store-{}", std::process::id()));
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.load().unwrap(), State::default());
    let mut s = State::default();
    s.bridges.insert(
        "br0".into(),
        BridgeConf {
            fdb: FdbConfig::default(),
            ports: vec![PortConf {
                iface: "p1".into(),
                port_type: PortTypeArg::Afxdp,
                xdp_mode: Some(XdpModeArg::Generic),
                vlan: Some(10),
            }],
        },
    );
    store.save(&s).unwrap();
    assert_eq!(store.load().unwrap(), s);
    // A second save keeps the first as the backup.
    let first = fs::read_to_string(dir.join("state.json")).unwrap();
    s.bridges.insert(
        "br1".into(),
        BridgeConf {
            fdb: FdbConfig::default(),
            ports: vec![],
        },
    );
    store.save(&s).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("state.json.bak")).unwrap(),
        first
    );
    // Truncated: refused, the file left as it is, the backup named.
    let text = fs::read_to_string(dir.join("state.json")).unwrap();
    fs::write(dir.join("state.json"), &text[..text.len() / 2]).unwrap();
    let e = store.load().unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("state.json is corrupt") && msg.contains("state.json.bak"),
        "{msg}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("state.json")).unwrap(),
        text[..text.len() / 2]
    );
    fs::write(dir.join("state.json"), "{not json").unwrap();
    assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn endpoint_port_types() {
    for t in [
        EndpointPortType::Veth,
        EndpointPortType::Tap,
        EndpointPortType::HostVeth,
    ] {
        assert_eq!(t.name().parse::<EndpointPortType>(), Ok(t));
    }
    let e = "vhost".parse::<EndpointPortType>().unwrap_err();
    assert_eq!(e, UnknownPortType("vhost".into()));
    assert_eq!(
        e.to_string(),
        r#"unknown port type "vhost" (veth, tap or host-veth)"#
    );
}

#[test]
fn store_messages() {
    let e = StoreError::Corrupt {
        path: "/var/lib/xvs/state.json".into(),
        reason: "unknown version 7".into(),
    };
    assert_eq!(
        e.to_string(),
        "state file /var/lib/xvs/state.json is corrupt: unknown version 7 (left as it is)"
    );
    let e = StoreError::Io {
        path: "/var/lib/xvs/state.json".into(),
        source: std::io::Error::from_raw_os_error(libc::EACCES),
    };
    assert_eq!(
        e.to_string(),
        "state file /var/lib/xvs/state.json: Permission denied (os error 13)"
    );
}
