//! Unit tests of `protocol.rs`.

use super::*;

#[test]
fn request_wire_format_is_stable() {
    let r = Request::AddPort {
        bridge: "br0".into(),
        iface: "p1".into(),
        port_type: Some(PortTypeArg::Tap),
        xdp_mode: None,
        vlan: Some(10),
    };
    let s = serde_json::to_string(&r).unwrap();
    assert_eq!(
        s,
        r#"{"cmd":"add-port","bridge":"br0","iface":"p1","port_type":"tap","vlan":10}"#
    );
    assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    assert_eq!(
        serde_json::from_str::<Request>(r#"{"cmd":"fdb-show","bridge":"b"}"#).unwrap(),
        Request::FdbShow { bridge: "b".into() }
    );
}

#[test]
fn unknown_fields_and_commands_are_errors() {
    assert!(serde_json::from_str::<Request>(r#"{"cmd":"add-br","bridge":"b","x":1}"#).is_err());
    assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
}

#[test]
fn a_connect_carries_a_container_id_only_when_given() {
    let r: Request = serde_json::from_str(
        r#"{"cmd":"network-connect","network":"n","sandbox":"/var/run/netns/a","container_id":"c1"}"#,
    )
    .unwrap();
    let Request::NetworkConnect { container_id, .. } = &r else {
        panic!("{r:?}");
    };
    assert_eq!(container_id.as_deref(), Some("c1"));
    let old = r#"{"cmd":"network-connect","network":"n","sandbox":"a"}"#;
    let r: Request = serde_json::from_str(old).unwrap();
    assert_eq!(serde_json::to_string(&r).unwrap(), old);
}
