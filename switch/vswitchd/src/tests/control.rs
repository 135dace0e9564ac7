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

/// A named network namespace for a test, deleted (with what xvsd wrote for it) on drop.
struct TestNetns(String);

impl TestNetns {
    fn new(tag: &str) -> TestNetns {
        let name = format!("xtc{:x}{tag}", std::process::id() & 0xfffff);
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        TestNetns(name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.0));
    }
}

fn create(network: &str, subnet: Option<&str>) -> Request {
    Request::NetworkCreate {
        network: network.into(),
        driver: None,
        subnet: subnet.map(Into::into),
        gateway: None,
        internal: false,
        icc: None,
        mtu: None,
        vni: None,
    }
}

fn connect(network: &str, sandbox: &str) -> Request {
    Request::NetworkConnect {
        network: network.into(),
        sandbox: sandbox.into(),
        ip: None,
        name: Some("web".into()),
        aliases: Vec::new(),
        ifname: None,
        publish: Vec::new(),
        port_type: None,
    }
}

fn result(r: Reply) -> serde_json::Value {
    assert!(r.ok, "expected success, got {r:?}");
    r.result.unwrap_or_default()
}

#[test]
fn networks_are_made_recorded_restored_and_removed() {
    let dir = std::env::temp_dir().join(format!("xvs-ctl-net-{}", std::process::id()));
    let ns = TestNetns::new("a");
    let mut sw = switch(&dir);
    let net = result(sw.handle(create("n1", Some("10.250.0.0/24"))));
    assert_eq!(net["name"], "n1");
    assert_eq!(net["subnet"], "10.250.0.0/24");
    assert_eq!(net["gateway"], "10.250.0.1");
    assert_eq!(net["bridge"], "net.n1");
    assert!(err(sw.handle(create("n1", None))).contains("network n1 already exists"));
    assert!(err(sw.handle(create("n2", Some("10.250.0.128/25")))).contains("overlaps network n1"));
    assert!(
        err(sw.handle(Request::AddBr {
            bridge: "net.x".into(),
            ageing_secs: None,
            mac_capacity: None,
            port_mac_limit: None,
        }))
        .contains("reserved for networks")
    );
    assert!(err(sw.handle(connect("nope", &ns.0))).contains("no network named nope"));
    assert!(err(sw.handle(connect("n1", "xtc-missing"))).contains("does not exist"));

    let ep = result(sw.handle(connect("n1", &ns.0)));
    assert_eq!(ep["address"], "10.250.0.2/24");
    assert_eq!(ep["ifname"], "eth0");
    assert_eq!(ep["mac"], "02:42:0a:fa:00:02");
    assert_eq!(ep["port_type"], "tap");
    assert!(err(sw.handle(connect("n1", &ns.0))).contains("is already connected to network n1"));
    let rm = Request::NetworkRm {
        network: "n1".into(),
    };
    assert!(err(sw.handle(rm.clone())).contains(&format!("{} (10.250.0.2)", ns.0)));
    assert_eq!(sw.store.load().unwrap().networks["n1"].endpoints.len(), 1);

    // A restart re-adopts the endpoint: its TAP is still in the sandbox.
    sw.shutdown();
    drop(sw);
    let mut sw = switch(&dir);
    let ls = result(sw.handle(Request::NetworkLs));
    assert_eq!(ls[0]["endpoints"][0]["sandbox"], ns.0.as_str());
    let show = sw.show().unwrap();
    let bridge = show.bridges.iter().find(|b| b.name == "net.n1").unwrap();
    assert_eq!(bridge.ports.len(), 2, "{bridge:?}");
    assert!(bridge.ports.iter().all(|p| p.state == "up"), "{bridge:?}");

    let disconnect = Request::NetworkDisconnect {
        network: "n1".into(),
        sandbox: ns.0.clone(),
    };
    assert!(sw.handle(disconnect.clone()).ok);
    assert!(err(sw.handle(disconnect)).contains("is not connected to network n1"));
    assert!(sw.handle(rm.clone()).ok);
    assert!(err(sw.handle(rm)).contains("no network named n1"));
    assert!(sw.store.load().unwrap().networks.is_empty());
    sw.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}
