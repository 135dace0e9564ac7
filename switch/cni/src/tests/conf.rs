#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use super::*;

fn env_of(vars: &[(&str, &str)]) -> Result<Env, CniError> {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Env::parse(|k| m.get(k).cloned())
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/ns1"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
    (
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=Web-0",
    ),
];

const CONF: &str = r#"{
  "cniVersion": "1.0.0", "name": "k8s", "type": "xvs-cni", "network": "web",
  "socket": "/tmp/x.sock", "portType": "veth",
  "runtimeConfig": {"portMappings": [
      {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
      {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "198.18.0.9"},
      {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "::"}],
    "ips": ["fd00::5/64", "10.1.0.7/24"]}
}"#;

#[test]
fn add_env_is_read_whole() {
    let e = env_of(ADD).unwrap();
    assert_eq!(e.command, Command::Add);
    assert_eq!(e.container_id, "c0ffee");
    assert_eq!(e.netns.as_deref(), Some("/var/run/netns/ns1"));
    assert_eq!(e.ifname, "eth0");
    assert_eq!(e.path, vec!["/usr/lib/cni", "/opt/cni/bin"]);
    assert_eq!(e.dns_name().as_deref(), Some("web-0"));
}

#[test]
fn bad_env_is_code_4_naming_the_variable() {
    let with = |k: &str, v: &str| {
        let mut vars: Vec<(&str, &str)> = ADD.iter().filter(|(n, _)| *n != k).copied().collect();
        vars.push((k, v));
        env_of(&vars)
    };
    for (k, v) in [
        ("CNI_COMMAND", "FROB"),
        ("CNI_CONTAINERID", ""),
        ("CNI_CONTAINERID", "-bad"),
        ("CNI_IFNAME", "a/b"),
        ("CNI_IFNAME", "sixteen-chars-xx"),
        ("CNI_NETNS", ""),
        ("CNI_NETNS", "relative/path"),
        ("CNI_ARGS", "K8S_POD_NAME"),
    ] {
        let e = with(k, v).unwrap_err();
        assert_eq!(e.code(), 4, "{k}={v}: {e}");
        assert!(e.to_string().contains(k), "{e}");
    }
}

#[test]
fn del_needs_no_namespace_and_version_needs_nothing() {
    let e = env_of(&[
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_IFNAME", "eth0"),
    ])
    .unwrap();
    assert_eq!(e.netns, None);
    assert_eq!(
        env_of(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
        Command::Version
    );
    assert_eq!(
        env_of(&[("CNI_COMMAND", "GC")]).unwrap().command,
        Command::Gc
    );
}

#[test]
fn a_pod_name_that_is_no_dns_name_gives_no_name() {
    let mut vars = ADD.to_vec();
    vars.retain(|(k, _)| *k != "CNI_ARGS");
    vars.push(("CNI_ARGS", "K8S_POD_NAME=a_b"));
    assert_eq!(env_of(&vars).unwrap().dns_name(), None);
}

#[test]
fn the_config_becomes_a_network_connect() {
    let conf = parse_conf(CONF.as_bytes()).unwrap();
    let env = env_of(ADD).unwrap();
    assert_eq!(conf.socket(Some("/env.sock".into())), "/tmp/x.sock");
    assert_eq!(
        conf.connect_request(&env, None).unwrap(),
        Request::NetworkConnect {
            network: "web".into(),
            sandbox: "/var/run/netns/ns1".into(),
            ip: Some("10.1.0.7".into()),
            name: Some("web-0".into()),
            aliases: vec![],
            ifname: Some("eth0".into()),
            publish: vec!["8080:80/tcp".into(), "198.18.0.9:5353:53/udp".into()],
            port_type: Some("veth".into()),
            container_id: Some("c0ffee".into()),
            allow_spoofing: false,
        }
    );
}

#[test]
fn minimal_config_uses_name_as_network_and_default_socket() {
    let conf =
        parse_conf(br#"{"cniVersion":"1.1.0","name":"web","type":"xvs-cni","ipam":{}}"#).unwrap();
    assert_eq!(conf.network(), "web");
    assert_eq!(conf.socket(None), "/run/xvs/xvsd.sock");
    assert_eq!(conf.socket(Some("/e.sock".into())), "/e.sock");
    assert_eq!(conf.publish().unwrap(), Vec::<String>::new());
    assert_eq!(conf.static_ip(), None);
}

#[test]
fn bad_configs_have_their_codes() {
    // An empty "network" (found by fuzz/cni_conf) is refused, not sent on to xvsd.
    let e = parse_conf(br#"{"cniVersion":"1.1.0","name":"pods","type":"xvs","network":""}"#)
        .unwrap_err();
    assert_eq!(e.code(), 7);
    assert!(e.to_string().contains("\"network\" is empty"), "{e}");
    assert_eq!(parse_conf(b"{not json").unwrap_err().code(), 6);
    assert_eq!(parse_conf(b"").unwrap_err().code(), 6);
    let v = parse_conf(br#"{"cniVersion":"9.9.9","name":"n","type":"xvs-cni"}"#).unwrap_err();
    assert_eq!(v.code(), 1);
    assert!(v.to_string().contains("1.1.0"), "{v}");
    assert_eq!(
        parse_conf(br#"{"cniVersion":"1.0.0","type":"xvs-cni"}"#)
            .unwrap_err()
            .code(),
        7
    );
    let ipam = parse_conf(
        br#"{"cniVersion":"1.0.0","name":"n","type":"xvs-cni","ipam":{"subnet":"10.0.0.0/8"}}"#,
    )
    .unwrap_err();
    assert_eq!(ipam.code(), 7);
    let ipam =
        parse_conf(br#"{"cniVersion":"1.0.0","name":"n","type":"xvs-cni","ipam":{"type":"../x"}}"#)
            .unwrap_err();
    assert_eq!(ipam.code(), 7);
    let sctp = parse_conf(
        br#"{"cniVersion":"1.0.0","name":"n","type":"xvs-cni",
             "runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":2,"protocol":"sctp"}]}}"#,
    )
    .unwrap();
    assert_eq!(sctp.publish().unwrap_err().code(), 7);
}

#[test]
fn versions() {
    assert_eq!(version_of(b""), "1.1.0");
    assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
    assert_eq!(version_of(br#"{"cniVersion":"9.9.9"}"#), "1.1.0");
    assert_eq!(
        version_reply("1.0.0"),
        serde_json::json!({"cniVersion": "1.0.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    assert!(at_least("1.1.0", "1.0.0") && at_least("1.0.0", "1.0.0"));
    assert!(!at_least("0.4.0", "1.0.0") && !at_least("0.3.1", "0.4.0"));
    let old = parse_conf(br#"{"cniVersion":"0.3.1","name":"n","type":"xvs-cni"}"#).unwrap();
    assert_eq!(old.require_version(Command::Check).unwrap_err().code(), 1);
    assert!(old.require_version(Command::Add).is_ok());
    let v1 = parse_conf(br#"{"cniVersion":"1.0.0","name":"n","type":"xvs-cni"}"#).unwrap();
    assert_eq!(v1.require_version(Command::Gc).unwrap_err().code(), 1);
}

#[test]
fn a_typed_ipam_is_delegated() {
    let c = parse_conf(
        br#"{"cniVersion":"1.0.0","name":"n","type":"xvs-cni",
             "ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}"#,
    )
    .unwrap();
    assert_eq!(c.ipam_plugin().unwrap(), Some("host-local"));
    let env = env_of(ADD).unwrap();
    let ip = ipam_address(&serde_json::json!({"cniVersion":"1.0.0",
        "ips":[{"address":"fd00::3/64"},{"address":"10.1.0.3/24","gateway":"10.1.0.1"}]}))
    .unwrap();
    assert_eq!(ip, "10.1.0.3");
    match c.connect_request(&env, Some(ip)).unwrap() {
        Request::NetworkConnect { ip, .. } => assert_eq!(ip.as_deref(), Some("10.1.0.3")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ipam_address(&serde_json::json!({"ips": []}))
            .unwrap_err()
            .code(),
        5
    );
    let own = parse_conf(br#"{"cniVersion":"1.0.0","name":"n","type":"xvs-cni"}"#).unwrap();
    assert_eq!(own.ipam_plugin().unwrap(), None);
}

#[test]
fn gc_attachments_are_read() {
    let c = parse_conf(
        br#"{"cniVersion":"1.1.0","name":"n","type":"xvs-cni",
             "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
    )
    .unwrap();
    assert_eq!(
        c.valid_attachments.unwrap(),
        vec![Attachment {
            container_id: "a".into(),
            ifname: "eth0".into()
        }]
    );
}
