//! The Docker plugin's calls (xvsd's remote network driver and IPAM driver,
//! `docker::map::dispatch`): a call name and a body as dockerd would POST them, answered
//! against a fake xvs whose replies the fuzzer chooses (success, refusal, or a reply of the
//! wrong shape).
//!
//! Input: byte 0 picks the call (one of the plugin API's, or an unknown one), byte 1 how xvs
//! answers, the rest is the body. Checked: no panic; the status is 200 or 400 (400 only for an
//! unknown call or a body that is not the call's JSON, and then nothing was asked of xvs);
//! the answer is a JSON object, and an error is a non-empty `Err` string and nothing else;
//! every request the plugin sends xvs re-encodes to JSON that parses to the same request (what
//! xvsd's control socket will read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xvs_ctl::protocol::{EndpointView, NetworkView, Reply, Request};
use xvs_vswitchd::docker::map::{Leases, dispatch};

const CALLS: [&str; 22] = [
    "/Plugin.Activate",
    "/NetworkDriver.GetCapabilities",
    "/NetworkDriver.CreateNetwork",
    "/NetworkDriver.DeleteNetwork",
    "/NetworkDriver.AllocateNetwork",
    "/NetworkDriver.FreeNetwork",
    "/NetworkDriver.CreateEndpoint",
    "/NetworkDriver.DeleteEndpoint",
    "/NetworkDriver.EndpointOperInfo",
    "/NetworkDriver.Join",
    "/NetworkDriver.Leave",
    "/NetworkDriver.ProgramExternalConnectivity",
    "/NetworkDriver.RevokeExternalConnectivity",
    "/NetworkDriver.DiscoverNew",
    "/NetworkDriver.DiscoverDelete",
    "/IpamDriver.GetCapabilities",
    "/IpamDriver.GetDefaultAddressSpaces",
    "/IpamDriver.RequestPool",
    "/IpamDriver.ReleasePool",
    "/IpamDriver.RequestAddress",
    "/IpamDriver.ReleaseAddress",
    "/NetworkDriver.NoSuchCall",
];

const NET_ID: &str = "c72dd177b60fe4c188d08d075c1331c299d73b38795d0272a0ccdd684be354c6";

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

fn network() -> NetworkView {
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
        endpoints: vec![endpoint()],
        remote_endpoints: Vec::new(),
    }
}

fn reply(mode: u8) -> Reply {
    match mode % 5 {
        0 => Reply::done(),
        1 => Reply::failure("refused by xvs"),
        2 => Reply::success(&endpoint()),
        3 => Reply::success(&network()),
        _ => Reply::success(&"not what was asked"),
    }
}

thread_local! {
    static LEASES: std::cell::RefCell<Leases> = std::cell::RefCell::new(Leases::default());
}

fuzz_target!(|data: &[u8]| {
    let [call, mode, body @ ..] = data else {
        return;
    };
    let path = CALLS[usize::from(*call) % CALLS.len()];
    let nets = if mode & 0x80 == 0 {
        vec![network()]
    } else {
        vec![]
    };
    let mut sent = Vec::new();
    let answer = LEASES.with(|leases| {
        dispatch(
            path,
            body,
            &mut leases.borrow_mut(),
            u64::from(*mode) * 1000,
            &mut |r| match r {
                Request::NetworkLs => Reply::success(&nets),
                other => {
                    sent.push(other);
                    reply(*mode)
                }
            },
        )
    });
    let obj = answer
        .body
        .as_object()
        .unwrap_or_else(|| panic!("{path}: the answer is not an object: {}", answer.body));
    match answer.status {
        200 => {}
        400 => {
            assert!(
                sent.is_empty(),
                "{path}: refused with 400 after asking xvs {sent:?}"
            );
            assert!(obj.contains_key("Err"), "{path}: a 400 without Err");
        }
        s => panic!("{path}: status {s}"),
    }
    if let Some(err) = obj.get("Err") {
        let text = err
            .as_str()
            .unwrap_or_else(|| panic!("{path}: Err is not a string"));
        assert!(!text.is_empty(), "{path}: an empty Err");
        assert_eq!(
            obj.len(),
            1,
            "{path}: an error carries nothing else: {}",
            answer.body
        );
    }
    for req in &sent {
        let json = serde_json::to_vec(req).expect("a request serializes");
        let again: Request = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!(
                "{path}: the request to xvs does not parse ({e}): {}",
                String::from_utf8_lossy(&json)
            )
        });
        assert_eq!(&again, req);
        let _: Value = serde_json::from_slice(&json).expect("JSON");
    }
});
