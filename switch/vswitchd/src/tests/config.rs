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
    fs::write(dir.join("state.json"), "{not json").unwrap();
    assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    fs::remove_dir_all(&dir).unwrap();
}
