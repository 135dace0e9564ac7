//! Unit tests of `control.rs`.

use super::*;
use xvs_switch::datapath::DatapathConfig;

fn switch(dir: &std::path::Path) -> Switch {
    let dp = Datapath::start(DatapathConfig {
        workers: 1,
        pool_frames: 64,
        umem: false,
    })
    .unwrap();
    Switch::restore(Store::open(dir).unwrap(), dp, Options::default()).unwrap()
}

fn err(r: Reply) -> String {
    assert!(!r.ok, "expected an error, got {r:?}");
    r.error.unwrap()
}

#[test]
fn bad_requests_leave_state_alone() {
    let dir = std::env::temp_dir().join(format!("xvs-ctl-{}", std::process::id()));
    let mut sw = switch(&dir);
    let add = |b: &str| Request::AddBr {
        bridge: b.into(),
        ageing_secs: None,
        mac_capacity: None,
        port_mac_limit: None,
    };
    assert!(sw.handle(add("br0")).ok);
    assert!(err(sw.handle(add("br0"))).contains("already exists"));
    assert!(err(sw.handle(add("bad name"))).contains("invalid bridge name"));
    let port = |b: &str, i: &str, vlan| Request::AddPort {
        bridge: b.into(),
        iface: i.into(),
        port_type: None,
        xdp_mode: None,
        vlan,
    };
    assert!(err(sw.handle(port("nope", "p1", None))).contains("no bridge named nope"));
    assert!(err(sw.handle(port("br0", "p1", Some(5000)))).contains("out of range"));
    assert!(err(sw.handle(port("br0", "a/b", None))).contains("invalid interface"));
    // AF_XDP is unavailable on a heap pool: a clear error, nothing recorded.
    assert!(!sw.handle(port("br0", "xvsnosuch0", None)).ok);
    assert!(
        err(sw.handle(Request::DelPort {
            bridge: "br0".into(),
            iface: "p1".into()
        }))
        .contains("has no port p1")
    );
    assert!(
        err(sw.handle(Request::Trace {
            bridge: "br0".into(),
            flow: "in_port=p1".into()
        }))
        .contains("has no port p1")
    );
    let before = sw.store.load().unwrap();
    assert_eq!(before.bridges.len(), 1);
    assert!(before.bridges["br0"].ports.is_empty());
    // restart restores the bridge
    sw.shutdown();
    drop(sw);
    let sw = switch(&dir);
    assert_eq!(sw.show().unwrap().bridges[0].name, "br0");
    std::fs::remove_dir_all(&dir).unwrap();
}
