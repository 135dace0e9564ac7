//! The cluster's directory as etcd feeds it (xvsd `--cluster`: `cluster::directory`): keys and
//! values under the prefix that any host, an old version or an operator with etcdctl may have
//! written, applied one watch event after another.
//!
//! Input: lines; a line `P<key> <value>` puts `/xvs/<key>` (lease and revision from the line
//! number), `D<key>` deletes it, and any other line puts its raw bytes as a key outside the
//! layout. Checked after every event: no panic; `apply` says false exactly when it counted a
//! bad record; a key of the layout renders back to a key that parses to itself; a record put
//! and then deleted is gone; the directory's queries (remote endpoints and their VTEPs, taken
//! addresses, live backends, endpoint counts) and a resynchronisation plan for a host that
//! owns nothing never panic, the plan's stale keys are exactly that host's endpoints, and the
//! merged configuration of every overlay lists only endpoints with a VTEP as static entries.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use xvs_vswitchd::cluster::directory::{Change, Directory, Owned, plan};
use xvs_vswitchd::cluster::records::Key;
use xvs_vswitchd::config::NetworkConf;
use xvs_vswitchd::ipam::Pool;
use xvs_vswitchd::network::OVERLAY_DRIVER;

const PREFIX: &str = "/xvs/";
const ME: &str = "a";

fn present(dir: &Directory, key: &Key) -> bool {
    match key {
        Key::Host(h) => dir.hosts.contains_key(h),
        Key::Network(n) => dir.networks.contains_key(n),
        Key::Vni(v) => dir.vnis.contains_key(v),
        Key::Endpoint { network, ip } => dir.endpoints.contains_key(&(network.clone(), *ip)),
        Key::Service(s) => dir.services.contains_key(s),
        Key::Vip { network, ip } => dir.vips.contains_key(&(network.clone(), *ip)),
        Key::Backend { service, addr } => dir.backends.contains_key(&(service.clone(), *addr)),
    }
}

/// An overlay as this host keeps it: no endpoints or peers of its own.
fn overlay() -> NetworkConf {
    NetworkConf {
        driver: OVERLAY_DRIVER.into(),
        pool: Pool::new("10.9.0.0/24".parse().expect("CIDR"), None).expect("pool"),
        internal: false,
        icc: true,
        mtu: 1450,
        vni: Some(4096),
        endpoints: Vec::new(),
        peers: Vec::new(),
        remotes: Vec::new(),
        docker_id: None,
        cluster_revision: None,
    }
}

fn queries(dir: &Directory) {
    for name in dir.networks.keys() {
        for r in dir.remotes(ME, name) {
            assert_ne!(r.host, ME, "a remote endpoint of this host");
        }
        let _ = dir.taken(ME, name);
        let conf = overlay();
        let merged = dir.merged(ME, name, &conf);
        for s in &merged.remotes {
            assert!(
                dir.hosts.values().any(|h| h.rec.vtep == Some(s.remote)),
                "a static entry toward {} that no host has as its VTEP",
                s.remote
            );
        }
    }
    for (name, (svc, _)) in &dir.services {
        let _ = dir.live_backends(name, &svc.conf.network, &[Ipv4Addr::new(10, 0, 0, 2)]);
    }
    for host in dir.hosts.keys() {
        let _ = dir.endpoints_of_host(host);
        let _ = dir.vtep_of(host);
    }
    let p = plan(dir, &Owned::default(), ME);
    let mine = dir.endpoints.values().filter(|e| e.rec.host == ME).count();
    assert_eq!(
        p.stale.len(),
        mine,
        "every endpoint of a host owning none is stale"
    );
    assert!(p.endpoints.is_empty() && p.networks.is_empty() && p.conflicts.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let mut dir = Directory::default();
    for (n, line) in data.split(|&b| b == b'\n').enumerate() {
        let n = n as i64;
        let change = match line.split_first() {
            Some((b'P', rest)) => {
                let (key, value) = match rest.iter().position(|&b| b == b' ') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, &[][..]),
                };
                Change::Put {
                    key: [PREFIX.as_bytes(), key].concat(),
                    value: value.to_vec(),
                    lease: n % 3,
                    revision: n + 1,
                }
            }
            Some((b'D', key)) => Change::Delete {
                key: [PREFIX.as_bytes(), key].concat(),
            },
            _ => Change::Put {
                key: line.to_vec(),
                value: b"{}".to_vec(),
                lease: 0,
                revision: n + 1,
            },
        };
        let raw = match &change {
            Change::Put { key, .. } | Change::Delete { key } => key.clone(),
        };
        let bad_before = dir.bad_records;
        let ok = dir.apply(PREFIX, &change);
        assert_eq!(
            ok,
            dir.bad_records == bad_before,
            "apply's answer and the bad-record count disagree"
        );
        assert!(dir.bad_records <= bad_before + 1);
        if let Some(key) = Key::parse(PREFIX, &raw) {
            let rendered = key.render(PREFIX);
            assert_eq!(
                Key::parse(PREFIX, rendered.as_bytes()),
                Some(key.clone()),
                "{rendered}"
            );
            if ok && matches!(change, Change::Put { .. }) {
                assert!(present(&dir, &key), "{rendered} was put but is absent");
                let mut gone = dir.clone();
                assert!(gone.apply(PREFIX, &Change::Delete { key: raw.clone() }));
                assert!(
                    !present(&gone, &key),
                    "{rendered} was deleted but is present"
                );
            }
        } else {
            assert!(!ok, "a key outside the layout was accepted");
        }
        queries(&dir);
    }
});
