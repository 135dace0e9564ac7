#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

fn ep(container: Option<&str>, ifname: &str) -> EndpointView {
    EndpointView {
        network: "web".into(),
        sandbox: "/var/run/netns/ns1".into(),
        ifname: ifname.into(),
        port: format!("xvs{ifname}"),
        mac: "02:42:0a:01:00:02".into(),
        address: "10.1.0.2/24".into(),
        gateway: "10.1.0.1".into(),
        name: None,
        aliases: vec![],
        port_type: "tap".into(),
        publish: vec![],
        container_id: container.map(String::from),
        allow_spoofing: false,
    }
}

fn net(endpoints: Vec<EndpointView>) -> NetworkView {
    serde_json::from_value(json!({
        "name": "web", "driver": "bridge", "subnet": "10.1.0.0/24", "gateway": "10.1.0.1",
        "internal": false, "icc": true, "mtu": 1500, "vni": null, "bridge": "net.web",
        "gateway_counters": {}, "endpoints": endpoints,
    }))
    .unwrap()
}

#[test]
fn add_result_1_0() {
    assert_eq!(
        add_result("1.0.0", &ep(Some("c1"), "eth0"), 1500, "/var/run/netns/ns1"),
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:42:0a:01:00:02", "sandbox": "/var/run/netns/ns1"}],
            "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.1.0.1"]},
        })
    );
}

#[test]
fn add_result_1_1_has_the_mtu_and_0_4_the_family() {
    let r = add_result("1.1.0", &ep(None, "eth0"), 1450, "/p");
    assert_eq!(r["interfaces"][0]["mtu"], 1450);
    assert_eq!(r["ips"][0].get("version"), None);
    let r = add_result("0.4.0", &ep(None, "eth0"), 1450, "/p");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["interfaces"][0].get("mtu"), None);
}

#[test]
fn attachments_are_found_by_container_and_interface() {
    let n = net(vec![
        ep(None, "eth0"),
        ep(Some("c1"), "eth0"),
        ep(Some("c1"), "eth1"),
        ep(Some("c2"), "eth0"),
    ]);
    assert_eq!(find_endpoint(&n, "c1", "eth1").unwrap().port, "xvseth1");
    assert!(find_endpoint(&n, "c3", "eth0").is_none());
    let keep = [Attachment {
        container_id: "c1".into(),
        ifname: "eth0".into(),
    }];
    let stale: Vec<_> = stale_endpoints(&n, &keep)
        .iter()
        .map(|e| (e.container_id.clone().unwrap(), e.ifname.clone()))
        .collect();
    assert_eq!(
        stale,
        vec![("c1".into(), "eth1".into()), ("c2".into(), "eth0".into())]
    );
}

#[test]
fn check_compares_the_namespace_with_the_endpoint_and_prev_result() {
    let e = ep(Some("c1"), "eth0");
    let good = SeenInterface {
        mac: Some("02:42:0a:01:00:02".into()),
        addresses: vec!["10.1.0.2/24".into()],
    };
    assert_eq!(check(&e, Some(&good), None), Ok(()));
    assert!(
        check(&e, None, None)
            .unwrap_err()
            .contains("no interface eth0")
    );
    let no_addr = SeenInterface {
        addresses: vec![],
        ..good.clone()
    };
    assert!(
        check(&e, Some(&no_addr), None)
            .unwrap_err()
            .contains("10.1.0.2/24")
    );
    let prev = json!({"interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:09"}],
                      "ips": [{"address": "10.1.0.2/24"}]});
    assert!(
        check(&e, Some(&good), Some(&prev))
            .unwrap_err()
            .contains("MAC")
    );
    let prev = json!({"interfaces": [{"name": "eth0", "mac": "02:42:0A:01:00:02"}],
                      "ips": [{"address": "10.1.0.9/24"}]});
    assert!(
        check(&e, Some(&good), Some(&prev))
            .unwrap_err()
            .contains("prevResult")
    );
    let prev = json!({"interfaces": [{"name": "eth0", "mac": "02:42:0a:01:00:02"}],
                      "ips": [{"address": "10.1.0.2/24"}]});
    assert_eq!(check(&e, Some(&good), Some(&prev)), Ok(()));
}
