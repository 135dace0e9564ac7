#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn cluster_addresses_parse_to_etcd_endpoints() {
    assert_eq!(
        parse_cluster("etcd://127.0.0.1:2379").unwrap(),
        vec!["http://127.0.0.1:2379"]
    );
    assert_eq!(
        parse_cluster("etcd://a:1,b.example:2379,etcd://[::1]:3").unwrap(),
        vec!["http://a:1", "http://b.example:2379", "http://[::1]:3"]
    );
}

#[test]
fn malformed_cluster_addresses_name_what_is_wrong() {
    for (bad, says) in [
        ("127.0.0.1:2379", "not an etcd address"),
        ("http://127.0.0.1:2379", "not an etcd address"),
        ("etcd://127.0.0.1", "not HOST:PORT"),
        ("etcd://:2379", "not a host"),
        ("etcd://a:0", "not a port"),
        ("etcd://a:70000", "not a port"),
        ("etcd://a:1,", "not HOST:PORT"),
        ("etcd://a b:1", "not a host"),
    ] {
        let e = parse_cluster(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn prefixes_are_absolute_and_end_in_a_slash() {
    assert_eq!(parse_prefix("/xvs/").unwrap(), "/xvs/");
    assert_eq!(parse_prefix("/a/b/").unwrap(), "/a/b/");
    for bad in ["xvs/", "/xvs", "/", "", "//"] {
        assert!(parse_prefix(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_token_is_made_once_and_kept() {
    let dir = std::env::temp_dir().join(format!("xvs-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = token(&dir).unwrap();
    let b = token(&dir).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 32);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn changes_are_refused_at_once_while_not_synced() {
    let (h, _rx) = Handle::new(ClusterOptions {
        endpoints: vec!["http://127.0.0.1:1".into()],
        host_id: "a".into(),
        prefix: DEFAULT_PREFIX.into(),
        lease_ttl: 10,
        token: "t".into(),
    });
    let e = h
        .release_endpoint("ov", Ipv4Addr::new(10, 0, 0, 2))
        .unwrap_err();
    assert!(e.to_string().contains("unavailable"), "{e}");
}
