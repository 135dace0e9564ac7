#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use xvs_ctl::protocol::{EndpointView, NetworkView, Reply, Request};

use super::*;

const NET_ID: &str = "c72dd177b60fe4c188d08d075c1331c299d73b38795d0272a0ccdd684be354c6";
const EP_ID: &str = "1c4cc20f7c5d1f76aa1ce3f176b2dd39d77a5353f3c039f65f41b14e8de26a0c";

/// Bodies as Docker 20.10 sent them to xvsd (captured from its debug log).
const CREATE_NETWORK: &str = r#"{"NetworkID":"c72dd177b60fe4c188d08d075c1331c299d73b38795d0272a0ccdd684be354c6","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"10.170.0.1/24","Pool":"10.170.0.0/24"}],"IPv6Data":[]}"#;
const CREATE_ENDPOINT: &str = r#"{"NetworkID":"c72dd177b60fe4c188d08d075c1331c299d73b38795d0272a0ccdd684be354c6","EndpointID":"1c4cc20f7c5d1f76aa1ce3f176b2dd39d77a5353f3c039f65f41b14e8de26a0c","Interface":{"Address":"10.170.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}"#;
const JOIN: &str = r#"{"NetworkID":"c72dd177b60fe4c188d08d075c1331c299d73b38795d0272a0ccdd684be354c6","EndpointID":"1c4cc20f7c5d1f76aa1ce3f176b2dd39d77a5353f3c039f65f41b14e8de26a0c","SandboxKey":"/tmp/dk/exec/netns/4c5009913dec","Options":{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}"#;
const ENDPOINT_REF: &str = r#"{"NetworkID":"c72dd177b60fe4c188d08d075c1331c299d73b38795d0272a0ccdd684be354c6","EndpointID":"1c4cc20f7c5d1f76aa1ce3f176b2dd39d77a5353f3c039f65f41b14e8de26a0c"}"#;

fn endpoint() -> EndpointView {
    EndpointView {
        network: "c72dd177b60f".into(),
        sandbox: "docker:1c4cc20f7c5d".into(),
        ifname: "xvcb487e57157".into(),
        port: "xvsb487e57157".into(),
        mac: "02:42:0a:aa:00:02".into(),
        address: "10.170.0.2/24".into(),
        gateway: "10.170.0.1".into(),
        name: None,
        aliases: vec![],
        port_type: "host-veth".into(),
        publish: vec![],
        container_id: None,
        allow_spoofing: false,
    }
}

fn network(endpoints: Vec<EndpointView>) -> NetworkView {
    NetworkView {
        name: "c72dd177b60f".into(),
        driver: "bridge".into(),
        subnet: "10.170.0.0/24".into(),
        gateway: "10.170.0.1".into(),
        internal: false,
        icc: true,
        mtu: 1500,
        vni: None,
        docker_id: Some(NET_ID.into()),
        bridge: "net.c72dd177b60f".into(),
        gateway_counters: Default::default(),
        endpoints,
        remote_endpoints: Vec::new(),
    }
}

/// A fake xvsd: `network ls` answers `nets`; every other request is recorded and answered
/// with `reply`.
struct Fake {
    nets: Vec<NetworkView>,
    reply: Reply,
    sent: Vec<Request>,
    leases: Leases,
}

impl Fake {
    fn new(nets: Vec<NetworkView>, reply: Reply) -> Fake {
        Fake {
            nets,
            reply,
            sent: vec![],
            leases: Leases::default(),
        }
    }

    fn call(&mut self, path: &str, body: &str) -> Answer {
        let (nets, reply, sent) = (&self.nets, &self.reply, &mut self.sent);
        dispatch(
            path,
            body.as_bytes(),
            &mut self.leases,
            0,
            &mut |r| match r {
                Request::NetworkLs => Reply::success(nets),
                other => {
                    sent.push(other);
                    reply.clone()
                }
            },
        )
    }
}

fn ok(a: &Answer) -> &Value {
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.body.get("Err").is_none(), "{:?}", a.body);
    &a.body
}

fn err(a: &Answer, status: u16) -> String {
    assert_eq!(a.status, status, "{:?}", a.body);
    a.body["Err"].as_str().unwrap().to_string()
}

#[test]
fn activate_and_capabilities() {
    let mut f = Fake::new(vec![], Reply::done());
    let a = f.call("/Plugin.Activate", "");
    assert_eq!(
        ok(&a),
        &json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    let a = f.call("/NetworkDriver.GetCapabilities", "{}");
    assert_eq!(
        ok(&a),
        &json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    let a = f.call("/IpamDriver.GetDefaultAddressSpaces", "");
    assert_eq!(ok(&a)["LocalDefaultAddressSpace"], "xvs");
    assert!(f.sent.is_empty());
}

#[test]
fn create_network_as_docker_sends_it() {
    let mut f = Fake::new(vec![], Reply::done());
    assert_eq!(
        ok(&f.call("/NetworkDriver.CreateNetwork", CREATE_NETWORK)),
        &json!({})
    );
    assert_eq!(
        f.sent,
        vec![Request::NetworkCreate {
            network: "c72dd177b60f".into(),
            driver: None,
            subnet: Some("10.170.0.0/24".into()),
            gateway: Some("10.170.0.1".into()),
            internal: false,
            icc: None,
            mtu: None,
            vni: None,
            docker_id: Some(NET_ID.into()),
        }]
    );
}

#[test]
fn create_network_options() {
    let body = json!({
        "NetworkID": NET_ID,
        "Options": {
            "com.docker.network.enable_ipv6": false,
            "com.docker.network.internal": true,
            "com.docker.network.generic": {
                "com.docker.network.bridge.enable_icc": "false",
                "mtu": "1400",
                "name": "web",
                "com.docker.network.bridge.name": "ignored"
            }
        },
        "IPv4Data": null,
        "IPv6Data": null
    });
    let req = network_create_request(&serde_json::from_value(body).unwrap()).unwrap();
    let Request::NetworkCreate {
        network,
        internal,
        icc,
        mtu,
        subnet,
        ..
    } = req
    else {
        panic!("{req:?}")
    };
    assert_eq!(
        (network.as_str(), internal, icc, mtu, subnet),
        ("web", true, Some(false), Some(1400), None)
    );
}

#[test]
fn create_network_refusals_change_nothing() {
    let mut f = Fake::new(vec![], Reply::done());
    let e = err(
        &f.call("/NetworkDriver.CreateNetwork", r#"{"NetworkID": 5"#),
        400,
    );
    assert!(
        e.starts_with("malformed NetworkDriver.CreateNetwork request"),
        "{e}"
    );
    let unknown =
        r#"{"NetworkID":"ab","Options":{"com.docker.network.generic":{"colour":"blue"}}}"#;
    let e = err(&f.call("/NetworkDriver.CreateNetwork", unknown), 200);
    assert!(e.contains("\"colour\""), "{e}");
    let bad_mtu = r#"{"NetworkID":"ab","Options":{"com.docker.network.generic":{"mtu":"big"}}}"#;
    let e = err(&f.call("/NetworkDriver.CreateNetwork", bad_mtu), 200);
    assert_eq!(e, r#"invalid option mtu="big": a number"#);
    let v6 = r#"{"NetworkID":"ab","Options":{"com.docker.network.enable_ipv6":true}}"#;
    assert!(err(&f.call("/NetworkDriver.CreateNetwork", v6), 200).contains("IPv6"));
    let e = err(&f.call("/NetworkDriver.Frobnicate", "{}"), 400);
    assert_eq!(e, r#"unknown plugin call "/NetworkDriver.Frobnicate""#);
    assert!(f.sent.is_empty());
}

#[test]
fn xvs_refusal_is_the_err() {
    let mut f = Fake::new(
        vec![],
        Reply::failure("subnet 10.170.0.0/24 overlaps network a's subnet"),
    );
    let e = err(&f.call("/NetworkDriver.CreateNetwork", CREATE_NETWORK), 200);
    assert_eq!(e, "subnet 10.170.0.0/24 overlaps network a's subnet");
}

#[test]
fn create_endpoint_does_not_echo_dockers_address() {
    let mut f = Fake::new(vec![network(vec![])], Reply::success(&endpoint()));
    let a = f.call("/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT);
    assert_eq!(
        ok(&a),
        &json!({"Interface": {"MacAddress": "02:42:0a:aa:00:02"}})
    );
    assert_eq!(
        f.sent,
        vec![Request::NetworkConnect {
            network: "c72dd177b60f".into(),
            sandbox: "docker:1c4cc20f7c5d".into(),
            ip: Some("10.170.0.2".into()),
            name: None,
            aliases: vec![],
            ifname: None,
            publish: vec![],
            port_type: Some("host-veth".into()),
            container_id: None,
            allow_spoofing: false,
        }]
    );
}

#[test]
fn create_endpoint_on_unknown_network() {
    let mut f = Fake::new(vec![], Reply::done());
    let e = err(
        &f.call("/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT),
        200,
    );
    assert_eq!(e, format!("no xvs network for Docker network {NET_ID}"));
    assert!(f.sent.is_empty());
}

#[test]
fn join_names_the_veth_and_the_gateway() {
    let mut f = Fake::new(vec![network(vec![endpoint()])], Reply::done());
    let a = f.call("/NetworkDriver.Join", JOIN);
    assert_eq!(
        ok(&a)["InterfaceName"],
        json!({"SrcName": "xvcb487e57157", "DstPrefix": "eth"})
    );
    assert_eq!(a.body["Gateway"], "10.170.0.1");
    let a = f.call("/NetworkDriver.EndpointOperInfo", ENDPOINT_REF);
    assert_eq!(ok(&a)["Value"]["xvs.port"], "xvsb487e57157");
    assert!(f.sent.is_empty());
}

#[test]
fn delete_endpoint_and_network() {
    let mut f = Fake::new(vec![network(vec![endpoint()])], Reply::done());
    ok(&f.call("/NetworkDriver.Leave", ENDPOINT_REF));
    ok(&f.call("/NetworkDriver.DeleteEndpoint", ENDPOINT_REF));
    ok(&f.call(
        "/NetworkDriver.DeleteNetwork",
        &format!(r#"{{"NetworkID":"{NET_ID}"}}"#),
    ));
    assert_eq!(
        f.sent,
        vec![
            Request::NetworkDisconnect {
                network: "c72dd177b60f".into(),
                sandbox: "docker:1c4cc20f7c5d".into()
            },
            Request::NetworkRm {
                network: "c72dd177b60f".into()
            }
        ]
    );
    // What xvs does not have is deleted already.
    let mut f = Fake::new(vec![], Reply::done());
    ok(&f.call("/NetworkDriver.DeleteEndpoint", ENDPOINT_REF));
    ok(&f.call("/NetworkDriver.DeleteNetwork", r#"{"NetworkID":"ab"}"#));
    assert!(f.sent.is_empty());
}

#[test]
fn port_map_becomes_publish_specs() {
    let options: api::Options = serde_json::from_value(json!({
        "com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "IP": "", "Port": 53, "HostIP": "198.18.0.9", "HostPort": 0, "HostPortEnd": 0},
            {"Proto": 6, "IP": "", "Port": 443, "HostIP": "0.0.0.0", "HostPort": 9000, "HostPortEnd": 9010}
        ]
    }))
    .unwrap();
    assert_eq!(
        publish_specs(&options).unwrap(),
        vec!["8080:80/tcp", "198.18.0.9:53/udp", "9000-9010:443/tcp"]
    );
    let sctp: api::Options = serde_json::from_value(json!({
        "com.docker.network.portmap": [{"Proto": 132, "Port": 80, "HostPort": 80}]
    }))
    .unwrap();
    assert_eq!(
        publish_specs(&sctp).unwrap_err().to_string(),
        "cannot publish IP protocol 132 (tcp and udp only)"
    );
}

#[test]
fn ipam_pools_and_addresses() {
    let mut f = Fake::new(vec![network(vec![endpoint()])], Reply::done());
    let a = f.call(
        "/IpamDriver.RequestPool",
        r#"{"AddressSpace":"xvs","Pool":"10.171.0.0/24","SubPool":"","Options":{},"V6":false}"#,
    );
    assert_eq!(ok(&a)["PoolID"], "10.171.0.0/24");
    let a = f.call(
        "/IpamDriver.RequestPool",
        r#"{"AddressSpace":"xvs","Pool":"","V6":false}"#,
    );
    assert_eq!(ok(&a)["Pool"], "10.200.0.0/24");
    let e = err(
        &f.call("/IpamDriver.RequestPool", r#"{"Pool":"","V6":true}"#),
        200,
    );
    assert!(e.contains("IPv6"), "{e}");
    let e = err(
        &f.call(
            "/IpamDriver.RequestPool",
            r#"{"Pool":"10.1.0.0/16","SubPool":"10.1.1.0/24"}"#,
        ),
        200,
    );
    assert!(e.contains("--ip-range"), "{e}");
    let gw = r#"{"PoolID":"10.171.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#;
    assert_eq!(
        ok(&f.call("/IpamDriver.RequestAddress", gw))["Address"],
        "10.171.0.1/24"
    );
    let next = r#"{"PoolID":"10.170.0.0/24","Address":"","Options":{}}"#;
    assert_eq!(
        ok(&f.call("/IpamDriver.RequestAddress", next))["Address"],
        "10.170.0.3/24"
    );
    // Two containers started at once: the second ask, before the first endpoint exists,
    // gets the next address; once released (an endpoint never made), it is given again.
    assert_eq!(
        ok(&f.call("/IpamDriver.RequestAddress", next))["Address"],
        "10.170.0.4/24"
    );
    let release = r#"{"PoolID":"10.170.0.0/24","Address":"10.170.0.4/24"}"#;
    ok(&f.call("/IpamDriver.ReleaseAddress", release));
    assert_eq!(
        ok(&f.call("/IpamDriver.RequestAddress", next))["Address"],
        "10.170.0.4/24"
    );
    let given = r#"{"PoolID":"10.170.0.0/24","Address":"10.170.0.50","Options":null}"#;
    assert_eq!(
        ok(&f.call("/IpamDriver.RequestAddress", given))["Address"],
        "10.170.0.50/24"
    );
    let outside = r#"{"PoolID":"10.170.0.0/24","Address":"10.9.0.5"}"#;
    assert!(err(&f.call("/IpamDriver.RequestAddress", outside), 200).contains("10.9.0.5"));
    assert!(f.sent.is_empty());
}

#[test]
fn endpoint_label_is_the_short_id() {
    assert_eq!(label_of(EP_ID), "docker:1c4cc20f7c5d");
    assert_eq!(label_of("ab"), "docker:ab");
}

#[test]
fn ipam_leases_expire_and_stay_bounded() {
    let mut l = Leases::default();
    let ip = Ipv4Addr::new(10, 170, 0, 3);
    l.give("p", ip, 1000);
    assert!(l.held("p", ip, 1000 + LEASE_MS - 1));
    assert!(!l.held("p", ip, 1000 + LEASE_MS), "expired");
    assert!(!l.held("q", ip, 1000), "per pool");
    for i in 0..(MAX_LEASES as u32 + 10) {
        l.give("p", Ipv4Addr::from(0x0a00_0000 + i), 2000 + u64::from(i));
    }
    assert!(l.given.len() <= MAX_LEASES);
}
