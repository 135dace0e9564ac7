#![allow(clippy::unwrap_used)]

use super::*;
use crate::cluster::records::BackendRecord;
use crate::config::EndpointConf;

const P: &str = "/xvs/";

fn put(key: &Key, value: &impl serde::Serialize, lease: i64, revision: i64) -> Change {
    Change::Put {
        key: key.render(P).into_bytes(),
        value: serde_json::to_vec(value).unwrap(),
        lease,
        revision,
    }
}

fn host(vtep: [u8; 4]) -> HostRecord {
    HostRecord {
        token: "t".into(),
        vtep: Some(vtep.into()),
        vtep_port: 4789,
        version: "0".into(),
    }
}

fn net() -> NetworkRecord {
    NetworkRecord {
        subnet: "10.9.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 9, 0, 1),
        vni: 4096,
        mtu: 1450,
        internal: false,
        icc: true,
        created_by: "a".into(),
    }
}

fn ep(host: &str, last: u8, name: &str) -> EndpointRecord {
    EndpointRecord {
        host: host.into(),
        mac: format!("02:42:0a:09:00:{last:02x}"),
        name: Some(name.into()),
        aliases: vec![format!("{name}-alias")],
        sandbox: format!("sb{last}"),
    }
}

fn epkey(last: u8) -> Key {
    Key::Endpoint {
        network: "ov".into(),
        ip: Ipv4Addr::new(10, 9, 0, last),
    }
}

/// Hosts a, b, c; network ov; a holds .2, b holds .3, c holds .4.
fn three() -> Directory {
    Directory::read(
        P,
        10,
        &[
            put(&Key::Host("a".into()), &host([198, 18, 0, 11]), 1, 1),
            put(&Key::Host("b".into()), &host([198, 18, 0, 12]), 2, 2),
            put(&Key::Host("c".into()), &host([198, 18, 0, 13]), 3, 3),
            put(&Key::Network("ov".into()), &net(), 0, 4),
            put(&Key::Vni(4096), &"ov", 0, 4),
            put(&epkey(2), &ep("a", 2, "web"), 1, 5),
            put(&epkey(3), &ep("b", 3, "db"), 2, 6),
            put(&epkey(4), &ep("c", 4, "cache"), 3, 7),
        ],
    )
}

fn overlay_conf() -> NetworkConf {
    NetworkConf::test_overlay()
}

#[test]
fn a_full_read_and_events_build_the_directory() {
    let mut d = three();
    assert_eq!(d.hosts.len(), 3);
    assert_eq!(d.networks["ov"].1, 4);
    assert_eq!(d.vnis[&4096], "ov");
    assert_eq!(d.endpoints.len(), 3);
    assert_eq!(d.holder("ov", Ipv4Addr::new(10, 9, 0, 3)), Some("b"));
    assert_eq!(d.endpoints_of_host("c"), 1);
    // c's lease expires: its host key and endpoint go.
    assert!(d.apply(
        P,
        &Change::Delete {
            key: Key::Host("c".into()).render(P).into_bytes()
        }
    ));
    assert!(d.apply(
        P,
        &Change::Delete {
            key: epkey(4).render(P).into_bytes()
        }
    ));
    assert_eq!(d.hosts.len(), 2);
    assert_eq!(d.holder("ov", Ipv4Addr::new(10, 9, 0, 4)), None);
    assert_eq!(d.bad_records, 0);
}

#[test]
fn unreadable_records_are_counted_and_skipped() {
    let mut d = three();
    let bad = [
        Change::Put {
            key: b"/xvs/hosts/x".to_vec(),
            value: b"{".to_vec(),
            lease: 0,
            revision: 11,
        },
        Change::Put {
            key: b"/xvs/whatever/x".to_vec(),
            value: b"{}".to_vec(),
            lease: 0,
            revision: 12,
        },
        put(
            &epkey(9),
            &EndpointRecord {
                mac: "not a mac".into(),
                ..ep("b", 9, "x")
            },
            2,
            13,
        ),
    ];
    for c in &bad {
        assert!(!d.apply(P, c));
    }
    assert_eq!(d.bad_records, 3);
    assert_eq!(d.hosts.len(), 3);
    assert_eq!(d.endpoints.len(), 3);
}

#[test]
fn remote_endpoints_become_static_entries_and_their_hosts_peers() {
    let d = three();
    let mut conf = overlay_conf();
    conf.peers = vec![Ipv4Addr::new(198, 18, 0, 99)];
    let m = d.merged("a", "ov", &conf);
    let mut peers = m.peers.clone();
    peers.sort();
    assert_eq!(
        peers,
        vec![
            Ipv4Addr::new(198, 18, 0, 12),
            Ipv4Addr::new(198, 18, 0, 13),
            Ipv4Addr::new(198, 18, 0, 99)
        ]
    );
    assert_eq!(m.remotes.len(), 2, "b's and c's, never a's own");
    let db = m
        .remotes
        .iter()
        .find(|r| r.ip == Some(Ipv4Addr::new(10, 9, 0, 3)))
        .unwrap();
    assert_eq!(db.remote, Ipv4Addr::new(198, 18, 0, 12));
    assert_eq!(db.mac, [2, 0x42, 10, 9, 0, 3]);
    assert_eq!(
        d.taken("a", "ov"),
        vec![Ipv4Addr::new(10, 9, 0, 3), Ipv4Addr::new(10, 9, 0, 4)]
    );
    let names: Vec<Vec<String>> = d.remotes("a", "ov").into_iter().map(|r| r.names).collect();
    assert_eq!(names[0], vec!["db".to_string(), "db-alias".to_string()]);
    // A network the cluster does not share, or a bridge network, is left as it is.
    assert_eq!(d.merged("a", "other", &conf), conf);
}

#[test]
fn a_host_without_a_vtep_gives_no_entries_yet() {
    let mut d = three();
    let mut h = host([0, 0, 0, 0]);
    h.vtep = None;
    d.apply(P, &put(&Key::Host("c".into()), &h, 3, 20));
    let m = d.merged("a", "ov", &overlay_conf());
    assert_eq!(m.remotes.len(), 1);
    assert_eq!(m.peers, vec![Ipv4Addr::new(198, 18, 0, 12)]);
}

fn local_ep(last: u8) -> EndpointConf {
    EndpointConf {
        sandbox: format!("sb{last}"),
        ifname: "eth0".into(),
        host_ifname: format!("xvs{last}"),
        mac: [2, 0x42, 10, 9, 0, last],
        ip: Ipv4Addr::new(10, 9, 0, last),
        name: Some("web".into()),
        aliases: vec!["web-alias".into()],
        port_type: Default::default(),
        publish: Vec::new(),
        container_id: None,
        allow_spoofing: false,
    }
}

fn state_with(endpoints: Vec<EndpointConf>, seen: Option<i64>) -> State {
    let mut s = State::default();
    let mut conf = overlay_conf();
    conf.endpoints = endpoints;
    conf.cluster_revision = seen;
    s.networks.insert("ov".into(), conf);
    s.vtep = Some(crate::config::VtepConf {
        local: Ipv4Addr::new(198, 18, 0, 11),
        port: 4789,
    });
    s
}

#[test]
fn what_a_host_owns_comes_from_its_configuration() {
    let o = Owned::of(&state_with(vec![local_ep(2)], Some(4)), "a");
    assert_eq!(o.vtep, Some((Ipv4Addr::new(198, 18, 0, 11), 4789)));
    assert_eq!(o.networks["ov"].1, Some(4));
    let rec = &o.endpoints[&("ov".to_string(), Ipv4Addr::new(10, 9, 0, 2))];
    assert_eq!(rec, &ep("a", 2, "web"));
}

#[test]
fn resync_rewrites_what_is_ours_and_removes_what_no_longer_is() {
    let d = three();
    // a now has .5 (made while etcd was away) but no longer .2.
    let o = Owned::of(&state_with(vec![local_ep(5)], Some(4)), "a");
    let p = plan(&d, &o, "a");
    assert!(p.networks.is_empty(), "the cluster defines ov the same way");
    assert_eq!(p.endpoints.len(), 1);
    assert_eq!(p.endpoints[0].0.1, Ipv4Addr::new(10, 9, 0, 5));
    assert_eq!(p.stale, vec![epkey(2)]);
    assert!(p.conflicts.is_empty());
}

#[test]
fn resync_reports_what_another_host_holds() {
    let d = three();
    // a says it holds .3, which b holds.
    let o = Owned::of(&state_with(vec![local_ep(3)], Some(4)), "a");
    let p = plan(&d, &o, "a");
    assert!(p.endpoints.is_empty());
    assert_eq!(p.conflicts.len(), 1);
    assert!(
        p.conflicts[0].contains("held by host b"),
        "{:?}",
        p.conflicts
    );
    // A network defined differently.
    let mut s = state_with(vec![], None);
    s.networks.get_mut("ov").unwrap().mtu = 1400;
    let p = plan(&d, &Owned::of(&s, "a"), "a");
    assert!(p.networks.is_empty());
    assert!(p.conflicts[0].contains("network ov"), "{:?}", p.conflicts);
}

#[test]
fn resync_defines_new_networks_but_not_ones_removed_elsewhere() {
    let empty = Directory::default();
    // Never seen in the cluster: defined.
    let p = plan(&empty, &Owned::of(&state_with(vec![], None), "a"), "a");
    assert_eq!(p.networks.len(), 1);
    // Seen, now gone, no endpoints here: another host removed it; not defined again.
    let p = plan(&empty, &Owned::of(&state_with(vec![], Some(4)), "a"), "a");
    assert!(p.networks.is_empty());
    // Seen, gone, but this host still has endpoints on it: defined again.
    let p = plan(
        &empty,
        &Owned::of(&state_with(vec![local_ep(2)], Some(4)), "a"),
        "a",
    );
    assert_eq!(p.networks.len(), 1);
    assert_eq!(p.endpoints.len(), 1);
}

#[test]
fn a_backend_counts_while_an_endpoint_holds_its_address() {
    let mut d = three();
    let b = |weight| BackendRecord {
        weight,
        added_by: "a".into(),
    };
    for (last, w) in [(3u8, 1u32), (4, 2), (9, 1)] {
        let key = Key::Backend {
            service: "web".into(),
            addr: SocketAddr::from(([10, 9, 0, last], 8080)),
        };
        d.apply(P, &put(&key, &b(w), 0, 30));
    }
    // .3 (b) and .4 (c) are endpoints; .9 is no one's yet; .2 is local (a's own).
    let live = d.live_backends("web", "ov", &[]);
    assert_eq!(live.len(), 2);
    assert_eq!(live[&SocketAddr::from(([10, 9, 0, 4], 8080))], 2);
    let live = d.live_backends("web", "ov", &[Ipv4Addr::new(10, 9, 0, 9)]);
    assert_eq!(live.len(), 3);
    // c dies: its endpoint goes, and its backend stops counting.
    d.apply(
        P,
        &Change::Delete {
            key: epkey(4).render(P).into_bytes(),
        },
    );
    assert_eq!(d.live_backends("web", "ov", &[]).len(), 1);
    assert!(d.live_backends("other", "ov", &[]).is_empty());
}

#[test]
fn a_vip_is_taken_for_every_host() {
    let mut d = three();
    let vip = Key::Vip {
        network: "ov".into(),
        ip: Ipv4Addr::new(10, 9, 0, 200),
    };
    d.apply(P, &put(&vip, &"web", 0, 31));
    assert_eq!(
        d.vip_holder("ov", Ipv4Addr::new(10, 9, 0, 200)),
        Some("web")
    );
    assert!(d.taken("b", "ov").contains(&Ipv4Addr::new(10, 9, 0, 200)));
}
