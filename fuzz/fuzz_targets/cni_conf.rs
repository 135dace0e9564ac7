//! The CNI plugin's input (xvs-cni's `conf`): the CNI_* environment and the network
//! configuration on stdin, as a container runtime hands them over, up to the `network connect`
//! the plugin would send xvsd and the result or error it would print.
//!
//! Input: up to six NUL-separated fields: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
//! CNI_IFNAME, CNI_ARGS, then stdin (the rest, which may hold NULs). Checked: no panic; the
//! version answered is one the plugin supports; an error has a CNI code the spec allows
//! (1–11, 50, 100, 101, or the delegated IPAM plugin's) and a non-empty message, printed as
//! the spec's error object; a configuration that parses yields its network, socket and publish
//! list or a clear error; a `network connect` built from it re-encodes to JSON that parses to
//! the same request (what xvsd's control socket will read); the ADD result is a CNI result
//! in the configuration's version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xvs_cni::conf::{Command, Env, parse_conf, version_of, version_reply};
use xvs_cni::error::CniError;
use xvs_cni::result::add_result;
use xvs_ctl::protocol::{EndpointView, Request};

fn check_error(e: &CniError, version: &str) {
    let code = e.code();
    let is_ipam = matches!(e, CniError::Ipam { .. });
    assert!(
        is_ipam || (1..=11).contains(&code) || [50, 100, 101].contains(&code),
        "code {code} for {e}"
    );
    let v = e.to_json(version);
    let msg = v["msg"].as_str().expect("msg");
    assert!(!msg.is_empty(), "an empty message for code {code}");
    assert_eq!(v["cniVersion"], version);
}

fn endpoint(ifname: &str) -> EndpointView {
    EndpointView {
        network: "pods".into(),
        sandbox: "/var/run/netns/x".into(),
        ifname: ifname.into(),
        port: "xvs0123456789".into(),
        mac: "02:42:0a:aa:00:02".into(),
        address: "10.170.0.2/24".into(),
        gateway: "10.170.0.1".into(),
        name: None,
        aliases: vec![],
        port_type: "host-veth".into(),
        publish: vec![],
        container_id: Some("c1".into()),
        allow_spoofing: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(6, |&b| b == 0);
    let mut next = || {
        fields
            .next()
            .map(|f| String::from_utf8_lossy(f).into_owned())
    };
    let (command, container, netns, ifname, args) = (next(), next(), next(), next(), next());
    let stdin = data
        .splitn(6, |&b| b == 0)
        .nth(5)
        .unwrap_or_default()
        .to_vec();
    let var = |k: &str| match k {
        "CNI_COMMAND" => command.clone(),
        "CNI_CONTAINERID" => container.clone(),
        "CNI_NETNS" => netns.clone(),
        "CNI_IFNAME" => ifname.clone(),
        "CNI_ARGS" => args.clone(),
        "CNI_PATH" => Some("/opt/cni/bin".into()),
        _ => None,
    };
    let version = version_of(&stdin);
    let reply = version_reply(&version);
    assert!(
        reply["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&version.clone().into()))
    );
    let env = match Env::parse(var) {
        Ok(env) => Some(env),
        Err(e) => {
            check_error(&e, &version);
            None
        }
    };
    let conf = match parse_conf(&stdin) {
        Ok(c) => c,
        Err(e) => {
            check_error(&e, &version);
            return;
        }
    };
    assert!(!conf.network().is_empty());
    let _ = conf.socket(None);
    let _ = conf.static_ip();
    if let Err(e) = conf.ipam_plugin() {
        panic!("ipam_plugin failed after parse_conf accepted it: {e}");
    }
    if let Err(e) = conf.publish() {
        check_error(&e, &version);
    }
    let Some(env) = env else { return };
    if let Err(e) = conf.require_version(env.command) {
        check_error(&e, &version);
    }
    let _ = env.dns_name();
    if env.command != Command::Add {
        return;
    }
    match conf.connect_request(&env, None) {
        Ok(req) => {
            let json = serde_json::to_vec(&req).expect("serializes");
            let again: Request = serde_json::from_slice(&json).unwrap_or_else(|e| {
                panic!(
                    "connect does not parse ({e}): {}",
                    String::from_utf8_lossy(&json)
                )
            });
            assert_eq!(again, req);
            let result = add_result(
                &version,
                &endpoint(&env.ifname),
                1500,
                env.netns.as_deref().unwrap_or(""),
            );
            assert_eq!(result["cniVersion"], version.as_str());
            assert!(
                result["interfaces"]
                    .as_array()
                    .is_some_and(|i| !i.is_empty())
            );
        }
        Err(e) => check_error(&e, &version),
    }
});
