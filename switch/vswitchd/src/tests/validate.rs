//! Unit tests of `validate.rs`.

use super::*;

#[test]
fn bridge_and_network_names() {
    assert!(name(Object::Bridge, "br0").is_ok());
    assert!(name(Object::Bridge, &"b".repeat(64)).is_ok());
    assert!(name(Object::Network, "front-end_1").is_ok());
    assert!(name(Object::Network, "a.b").is_ok());
    assert!(name(Object::Network, &"n".repeat(48)).is_ok());
    assert_eq!(
        name(Object::Network, "a b"),
        Err(NameError::Characters {
            kind: Object::Network,
            name: "a b".into()
        })
    );
    assert_eq!(
        name(Object::Network, &"n".repeat(49)),
        Err(NameError::Length {
            kind: Object::Network,
            name: "n".repeat(49)
        })
    );
    assert!(name(Object::Bridge, &"b".repeat(65)).is_err());
    assert!(name(Object::Bridge, "").is_err());
    assert!(name(Object::Bridge, "br/0").is_err());
}

#[test]
fn interface_names_follow_the_kernel() {
    for good in ["eth0", "veth-a", "a.b", "xvs0123456789", &"i".repeat(15)] {
        assert_eq!(ifname(good), Ok(()), "{good:?}");
    }
    for long in ["", &"i".repeat(16)] {
        assert_eq!(ifname(long), Err(NameError::IfnameLength(long.into())));
    }
    for bad in [".", "..", "a/b", "a:b", "a b", "a\tb", "a\0b"] {
        assert_eq!(ifname(bad), Err(NameError::Ifname(bad.into())), "{bad:?}");
    }
}

#[test]
fn dns_names() {
    assert!(dns_name("web.svc").is_ok());
    assert!(dns_name("db_1").is_ok());
    assert!(dns_name(&format!("{}.x", "l".repeat(63))).is_ok());
    for bad in ["", "bad..name", "trailing.", "a b", &"l".repeat(64)] {
        assert_eq!(
            dns_name(bad),
            Err(NameError::DnsName(bad.into())),
            "{bad:?}"
        );
    }
    let long = ["a"; 127].join(".");
    assert_eq!(long.len(), 253);
    assert!(dns_name(&long).is_ok());
    assert!(dns_name(&format!("{long}a")).is_err());
}

#[test]
fn namespace_names() {
    assert!(namespace_name("ns1").is_ok());
    assert!(namespace_name("a b").is_ok());
    for bad in ["", ".", "..", "../etc", "a/b", "a\0b"] {
        assert_eq!(
            namespace_name(bad),
            Err(NameError::Namespace(bad.into())),
            "{bad:?}"
        );
    }
}

/// What users read: the texts xvsd replied with before the rules moved here.
#[test]
fn messages() {
    let cases: [(NameError, &str); 8] = [
        (
            NameError::Length {
                kind: Object::Bridge,
                name: String::new(),
            },
            r#"invalid bridge name "": must be 1-64 characters"#,
        ),
        (
            NameError::Characters {
                kind: Object::Bridge,
                name: "bad name".into(),
            },
            r#"invalid bridge name "bad name": use letters, digits, '-', '_' or '.'"#,
        ),
        (
            NameError::Length {
                kind: Object::Network,
                name: "n".into(),
            },
            r#"invalid network name "n": must be 1-48 characters"#,
        ),
        (
            NameError::Characters {
                kind: Object::Network,
                name: "a b".into(),
            },
            r#"invalid network name "a b": use letters, digits, '-', '_' or '.'"#,
        ),
        (
            NameError::IfnameLength("sixteen-chars-xx".into()),
            r#"invalid interface name "sixteen-chars-xx": must be 1-15 characters"#,
        ),
        (
            NameError::Ifname("a/b".into()),
            r#"invalid interface name "a/b""#,
        ),
        (
            NameError::DnsName("bad..name".into()),
            r#"invalid DNS name "bad..name""#,
        ),
        (
            NameError::Namespace("../etc".into()),
            r#"invalid network namespace name "../etc""#,
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn container_ids() {
    let id = "0f5e2a4c9b7d1e3f5a7c9e1b3d5f7a9c0f5e2a4c9b7d1e3f5a7c9e1b3d5f7a9c";
    assert!(name(Object::ContainerId, id).is_ok());
    assert!(name(Object::ContainerId, "pod_1.a-b").is_ok());
    assert!(name(Object::ContainerId, &"c".repeat(257)).is_err());
    assert!(name(Object::ContainerId, "").is_err());
    assert_eq!(
        name(Object::ContainerId, "a;b").unwrap_err().to_string(),
        "invalid container ID name \"a;b\": use letters, digits, '-', '_' or '.'"
    );
}
