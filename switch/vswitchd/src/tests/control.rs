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

/// What xvsctl would print for a refused request (the server replies with the error's text).
fn err(r: Result<Reply, Error>) -> String {
    match r {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn result(r: Result<Reply, Error>) -> serde_json::Value {
    let r = r.unwrap_or_else(|e| panic!("expected success, got {e}"));
    assert!(r.ok, "{r:?}");
    r.result.unwrap_or_default()
}

fn add_br(bridge: &str) -> Request {
    Request::AddBr {
        bridge: bridge.into(),
        ageing_secs: None,
        mac_capacity: None,
        port_mac_limit: None,
    }
}

fn add_port(
    bridge: &str,
    iface: &str,
    port_type: Option<PortTypeArg>,
    vlan: Option<u16>,
) -> Request {
    Request::AddPort {
        bridge: bridge.into(),
        iface: iface.into(),
        port_type,
        xdp_mode: None,
        vlan,
    }
}

#[test]
fn bad_requests_leave_state_alone() {
    let dir = std::env::temp_dir().join(format!("xvs-ctl-{}", std::process::id()));
    let mut sw = switch(&dir);
    result(sw.handle(add_br("br0")));
    assert!(matches!(
        sw.handle(add_br("br0")),
        Err(Error::Datapath(DatapathError::BridgeExists(b))) if b == "br0"
    ));
    assert_eq!(err(sw.handle(add_br("br0"))), "bridge br0 already exists");
    assert_eq!(
        err(sw.handle(add_br("bad name"))),
        r#"invalid bridge name "bad name": use letters, digits, '-', '_' or '.'"#
    );
    assert_eq!(
        err(sw.handle(add_br("net.x"))),
        r#"bridge names starting with "net." are reserved for networks: net.x"#
    );
    assert_eq!(
        err(sw.handle(Request::AddBr {
            bridge: "br1".into(),
            ageing_secs: Some(0),
            mac_capacity: None,
            port_mac_limit: None,
        })),
        "ageing time 0s is out of range (1-1000000)"
    );
    assert_eq!(
        err(sw.handle(Request::SetBr {
            bridge: "br0".into(),
            ageing_secs: None,
            mac_capacity: Some(1 << 25),
            port_mac_limit: None,
        })),
        "MAC capacity 33554432 is out of range (1-16777216)"
    );
    assert_eq!(
        err(sw.handle(add_port("nope", "p1", None, None))),
        "no bridge named nope"
    );
    assert_eq!(
        err(sw.handle(add_port("br0", "p1", None, Some(5000)))),
        "VLAN 5000 is out of range (1-4094)"
    );
    assert_eq!(
        err(sw.handle(add_port("br0", "a/b", None, None))),
        r#"invalid interface name "a/b""#
    );
    assert_eq!(
        err(sw.handle(Request::AddPort {
            bridge: "br0".into(),
            iface: "p1".into(),
            port_type: Some(PortTypeArg::Tap),
            xdp_mode: Some(XdpModeArg::Native),
            vlan: None,
        })),
        "--xdp-mode applies only to afxdp ports"
    );
    // AF_XDP is unavailable on a heap pool: a clear error, nothing recorded.
    assert!(matches!(
        sw.handle(add_port("br0", "xvsnosuch0", None, None)),
        Err(Error::Datapath(_))
    ));
    assert_eq!(
        err(sw.handle(Request::DelPort {
            bridge: "br0".into(),
            iface: "p1".into()
        })),
        "bridge br0 has no port p1"
    );
    assert!(
        err(sw.handle(Request::Trace {
            bridge: "br0".into(),
            flow: "in_port=p1".into()
        }))
        .contains("has no port p1")
    );
    assert_eq!(
        err(sw.handle(Request::Trace {
            bridge: "br0".into(),
            flow: "dl_dst=zz".into()
        })),
        "zz".parse::<xvs_switch::classify::Mac>()
            .unwrap_err()
            .to_string()
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

#[test]
fn a_port_is_on_one_bridge_only() {
    let dir = std::env::temp_dir().join(format!("xvs-ctl-tap-{}", std::process::id()));
    let tap = format!("xtc{:x}t", std::process::id() & 0xfffff);
    let mut sw = switch(&dir);
    result(sw.handle(add_br("br0")));
    result(sw.handle(add_br("br1")));
    result(sw.handle(add_port("br0", &tap, Some(PortTypeArg::Tap), Some(20))));
    assert_eq!(
        err(sw.handle(add_port("br1", &tap, Some(PortTypeArg::Tap), None))),
        format!("{tap} is already a port of bridge br0")
    );
    let saved = sw.store.load().unwrap();
    assert_eq!(saved.bridges["br0"].ports[0].iface, tap);
    assert_eq!(saved.bridges["br0"].ports[0].vlan, Some(20));
    assert!(saved.bridges["br1"].ports.is_empty());
    result(sw.handle(Request::DelPort {
        bridge: "br0".into(),
        iface: tap.clone(),
    }));
    assert!(sw.store.load().unwrap().bridges["br0"].ports.is_empty());
    sw.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A named network namespace for a test (as `ip netns add` makes one: a new namespace
/// bind-mounted on /run/netns/NAME), deleted (with what xvsd wrote for it) on drop.
struct TestNetns(String);

impl TestNetns {
    fn new(tag: &str) -> TestNetns {
        use nix::mount::{MsFlags, mount};
        use nix::sched::{CloneFlags, unshare};
        let name = format!("xtc{:x}{tag}", std::process::id() & 0xfffff);
        let path = std::path::Path::new("/run/netns").join(&name);
        std::fs::create_dir_all("/run/netns").unwrap();
        std::fs::File::create(&path).unwrap();
        let target = path.clone();
        // A thread of its own enters the new namespace, so the test's threads stay where
        // they are; the bind mount keeps the namespace once the thread is gone.
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot make namespace {name}: {e}"));
        TestNetns(name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let path = std::path::Path::new("/run/netns").join(&self.0);
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&path);
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
        docker_id: None,
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
        container_id: None,
        allow_spoofing: false,
    }
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
    assert_eq!(
        err(sw.handle(create("n1", None))),
        "network n1 already exists"
    );
    assert_eq!(
        err(sw.handle(create("n2", Some("10.250.0.128/25")))),
        "subnet 10.250.0.128/25 overlaps network n1's subnet"
    );
    assert_eq!(
        err(sw.handle(connect("nope", &ns.0))),
        "no network named nope"
    );
    assert_eq!(
        err(sw.handle(connect("n1", "xtc-missing"))),
        "network namespace xtc-missing does not exist"
    );

    let ep = result(sw.handle(connect("n1", &ns.0)));
    assert_eq!(ep["address"], "10.250.0.2/24");
    assert_eq!(ep["ifname"], "eth0");
    assert_eq!(ep["mac"], "02:42:0a:fa:00:02");
    assert_eq!(ep["port_type"], "tap");
    assert_eq!(
        err(sw.handle(connect("n1", &ns.0))),
        format!("{} is already connected to network n1", ns.0)
    );
    let rm = Request::NetworkRm {
        network: "n1".into(),
    };
    assert_eq!(
        err(sw.handle(rm.clone())),
        format!(
            "network n1 has active endpoints: {} (10.250.0.2); disconnect them first",
            ns.0
        )
    );
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
    result(sw.handle(disconnect.clone()));
    assert_eq!(
        err(sw.handle(disconnect)),
        format!("{} is not connected to network n1", ns.0)
    );
    result(sw.handle(rm.clone()));
    assert_eq!(err(sw.handle(rm)), "no network named n1");
    assert!(sw.store.load().unwrap().networks.is_empty());
    sw.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}
