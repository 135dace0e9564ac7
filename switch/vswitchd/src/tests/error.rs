//! Unit tests of `error.rs`: the texts users read, as xvsd replied before the errors were typed.

use super::*;

use std::path::PathBuf;

fn store_error() -> StoreError {
    StoreError::Io {
        path: PathBuf::from("/var/lib/xvs/state.json"),
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    }
}

const STORE: &str = "state file /var/lib/xvs/state.json: No space left on device (os error 28)";

#[test]
fn own_messages() {
    let cases = [
        (
            Error::ReservedBridgeName("net.x".into()),
            "bridge names starting with \"net.\" are reserved for networks: net.x".to_string(),
        ),
        (
            Error::Ageing(0),
            "ageing time 0s is out of range (1-1000000)".into(),
        ),
        (
            Error::MacCapacity(16777217),
            "MAC capacity 16777217 is out of range (1-16777216)".into(),
        ),
        (
            Error::PortMacLimit(0),
            "per-port MAC limit 0 is out of range (1-16777216)".into(),
        ),
        (
            Error::Vlan(5000),
            "VLAN 5000 is out of range (1-4094)".into(),
        ),
        (
            Error::XdpModeOnTap,
            "--xdp-mode applies only to afxdp ports".into(),
        ),
        (
            Error::NotSaved(store_error()),
            format!("change not applied: cannot save state: {STORE}"),
        ),
        (
            Error::BridgeDeletedNotSaved {
                bridge: "br0".into(),
                source: store_error(),
            },
            format!("bridge br0 deleted, but the state file could not be saved: {STORE}"),
        ),
        (
            Error::PortDeletedNotSaved {
                port: "p1".into(),
                source: store_error(),
            },
            format!("port p1 deleted, but the state file could not be saved: {STORE}"),
        ),
        (
            Error::NetworkNotSaved(store_error()),
            format!("network not created: cannot save state: {STORE}"),
        ),
        (
            Error::NetworkRemovedNotSaved {
                network: "n1".into(),
                source: store_error(),
            },
            format!("network n1 removed, but the state file could not be saved: {STORE}"),
        ),
        (
            Error::EndpointNotSaved(store_error()),
            format!("endpoint not connected: cannot save state: {STORE}"),
        ),
        (
            Error::DisconnectedNotSaved(store_error()),
            format!("disconnected, but the state file could not be saved: {STORE}"),
        ),
        (Error::Load(store_error()), STORE.into()),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn wrapped_errors_keep_their_text_and_source() {
    use std::error::Error as _;
    let e = Error::from(DatapathError::NoSuchBridge("nope".into()));
    assert_eq!(e.to_string(), "no bridge named nope");
    let e = Error::from(NameError::Ifname("a/b".into()));
    assert_eq!(e.to_string(), r#"invalid interface name "a/b""#);
    let e = Error::from(NetworkError::NoSuchNetwork("n9".into()));
    assert_eq!(e.to_string(), "no network named n9");
    let e = Error::from(FlowError::NoInPort);
    assert_eq!(e.to_string(), "flow needs in_port=PORT");
    let e = Error::NotSaved(store_error());
    let source = e.source().expect("the store error is the source");
    assert_eq!(source.to_string(), STORE);
}
