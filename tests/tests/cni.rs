//! The CNI plugin end to end, driven the way a runtime (or `cnitool`) drives it: a named
//! namespace, CNI_* variables, the config on stdin, the real `xvs-cni` binary against a real
//! xvsd. ADD for two namespaces and ping between them (and by the pod's DNS name), CHECK, DEL
//! twice, DEL after the namespace is gone, VERSION, a chained list with the reference `tuning`
//! plugin (Debian's containernetworking-plugins) given xvs's result as prevResult, GC and
//! STATUS; bad input gets the spec's error objects and leaves nothing behind; ADD latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xvs_tests::{Netns, Xvsd, bin_dir, unique_prefix, veth_between, wait_until};

const CNI_PATH: &str = "/usr/lib/cni";

/// What one plugin run printed: its exit code and its stdout as JSON (Null when empty).
struct Run {
    code: i32,
    out: Value,
}

/// Runs `plugin` with CNI_COMMAND=`verb`, `env` and `stdin`.
fn plugin(plugin: &Path, verb: &str, env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_PATH", CNI_PATH)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {plugin:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let out_json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        out: out_json,
    }
}

fn xvs_cni() -> std::path::PathBuf {
    bin_dir().join("xvs-cni")
}

/// A container: its ID and namespace, and the CNI_* variables naming them.
struct Container<'a> {
    id: String,
    ns: &'a Netns,
}

impl Container<'_> {
    fn netns(&self) -> String {
        format!("/var/run/netns/{}", self.ns.name)
    }

    fn run(&self, verb: &str, conf: &Value, extra: &[(&str, &str)]) -> Run {
        let netns = self.netns();
        let mut env = vec![
            ("CNI_CONTAINERID", self.id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        env.extend_from_slice(extra);
        plugin(&xvs_cni(), verb, &env, &conf.to_string())
    }

    fn ok(&self, verb: &str, conf: &Value, extra: &[(&str, &str)]) -> Value {
        let r = self.run(verb, conf, extra);
        assert_eq!(r.code, 0, "{verb} of {} failed: {}", self.id, r.out);
        r.out
    }
}

fn conf(x: &Xvsd, version: &str) -> Value {
    json!({
        "cniVersion": version, "name": "pods", "type": "xvs-cni", "network": "pods",
        "socket": x.socket(),
    })
}

fn endpoints(x: &Xvsd) -> Vec<Value> {
    x.json(&["network", "inspect", "pods"])["endpoints"]
        .as_array()
        .unwrap()
        .clone()
}

/// The spec's error object: exit 1, `code`, a message, the version asked for (or ours).
fn assert_error(r: &Run, code: u64, what: &str) -> String {
    assert_eq!(r.code, 1, "{what}: exit {} {}", r.code, r.out);
    assert_eq!(r.out["code"], code, "{what}: {}", r.out);
    assert!(r.out["cniVersion"].is_string(), "{what}: {}", r.out);
    let msg = r.out["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no msg: {}", r.out));
    assert!(!msg.is_empty());
    msg.to_string()
}

fn addr_of(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_string()
}

#[test]
fn cni_add_ping_check_del_version_and_a_chain_with_tuning() {
    assert!(
        Path::new(CNI_PATH).join("tuning").exists(),
        "the reference CNI plugins are missing (tests/setup.sh installs containernetworking-plugins)"
    );
    let p = unique_prefix("cn");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "pods", "--subnet", "10.241.1.0/24"]);
    let conf = conf(&x, "1.0.0");
    let (ns1, ns2) = (Netns::new(&format!("{p}a")), Netns::new(&format!("{p}b")));
    let c1 = Container {
        id: format!("{p}-one"),
        ns: &ns1,
    };
    let c2 = Container {
        id: format!("{p}-two"),
        ns: &ns2,
    };

    // ADD: the result lists the interface, address, gateway, default route and DNS.
    let r1 = c1.ok(
        "ADD",
        &conf,
        &[("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0")],
    );
    assert_eq!(r1["cniVersion"], "1.0.0");
    assert_eq!(r1["interfaces"][0]["name"], "eth0", "{r1}");
    assert_eq!(r1["interfaces"][0]["sandbox"], c1.netns());
    assert_eq!(r1["interfaces"][0]["mac"], ns1.mac("eth0"), "{r1}");
    let ip1 = &r1["ips"][0];
    assert!(
        ip1["address"].as_str().unwrap().starts_with("10.241.1."),
        "{r1}"
    );
    assert!(ip1["address"].as_str().unwrap().ends_with("/24"), "{r1}");
    assert_eq!(ip1["gateway"], "10.241.1.1");
    assert_eq!(ip1["interface"], 0);
    assert_eq!(
        r1["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.241.1.1"}])
    );
    assert_eq!(r1["dns"]["nameservers"], json!(["10.241.1.1"]));
    let r2 = c2.ok("ADD", &conf, &[]);
    let (a1, a2) = (addr_of(&r1), addr_of(&r2));
    assert_ne!(a1, a2);
    let eps = endpoints(&x);
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert!(
        eps.iter().any(|e| e["container_id"] == c1.id.as_str()),
        "{eps:?}"
    );

    // Traffic, and the pod's name at the gateway's DNS.
    assert!(
        ns1.reaches(&a2, Duration::from_secs(5)),
        "c1 cannot reach c2 ({a2})"
    );
    assert!(ns2.ping(&a1, 3));
    assert_eq!(ns2.dig("10.241.1.1", "web-0", false), a1);

    // CHECK with the result as prevResult; an unknown container fails it.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = r1.clone();
    assert_eq!(c1.ok("CHECK", &with_prev, &[]), Value::Null);
    let ghost = Container {
        id: format!("{p}-ghost"),
        ns: &ns1,
    };
    assert_error(
        &ghost.run("CHECK", &with_prev, &[]),
        101,
        "CHECK of an unknown container",
    );

    // DEL, twice: the second finds nothing and succeeds.
    assert_eq!(c1.ok("DEL", &conf, &[]), Value::Null);
    assert_eq!(endpoints(&x).len(), 1);
    assert!(!ns1.sh(&["ip", "link", "show", "eth0"]).status.success());
    assert_eq!(c1.ok("DEL", &conf, &[]), Value::Null);

    // ADD again, then the namespace goes away before DEL (no CNI_NETNS, as a runtime may).
    let gone = Netns::new(&format!("{p}g"));
    let gone_id = format!("{p}-gone");
    Container {
        id: gone_id.clone(),
        ns: &gone,
    }
    .ok("ADD", &conf, &[]);
    assert_eq!(endpoints(&x).len(), 2);
    drop(gone);
    let r = plugin(
        &xvs_cni(),
        "DEL",
        &[
            ("CNI_CONTAINERID", gone_id.as_str()),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf.to_string(),
    );
    assert_eq!(r.code, 0, "DEL after the namespace is gone: {}", r.out);
    assert_eq!(endpoints(&x).len(), 1);

    // VERSION.
    let v = plugin(&xvs_cni(), "VERSION", &[], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(v.code, 0);
    assert_eq!(v.out["cniVersion"], "1.0.0");
    let supported = v.out["supportedVersions"].as_array().unwrap();
    for want in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(supported.iter().any(|s| s == want), "{}", v.out);
    }

    // A chained list by hand: xvs-cni, then tuning with xvs's result as prevResult.
    let ns3 = Netns::new(&format!("{p}c"));
    let c3 = Container {
        id: format!("{p}-three"),
        ns: &ns3,
    };
    let r3 = c3.ok("ADD", &conf, &[]);
    let tuning = json!({
        "cniVersion": "1.0.0", "name": "pods", "type": "tuning",
        "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"},
        "prevResult": r3,
    });
    let netns3 = c3.netns();
    let env3 = [
        ("CNI_CONTAINERID", c3.id.as_str()),
        ("CNI_NETNS", netns3.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let t = plugin(
        &Path::new(CNI_PATH).join("tuning"),
        "ADD",
        &env3,
        &tuning.to_string(),
    );
    assert_eq!(t.code, 0, "tuning ADD: {}", t.out);
    assert_eq!(
        t.out["ips"], r3["ips"],
        "tuning passed the result on: {}",
        t.out
    );
    assert_eq!(
        ns3.must(&["sysctl", "-n", "net.ipv4.conf.eth0.arp_notify"])
            .trim(),
        "1"
    );
    let mut check3 = conf.clone();
    check3["prevResult"] = t.out.clone();
    assert_eq!(c3.ok("CHECK", &check3, &[]), Value::Null);
    assert!(
        ns3.reaches(&a2, Duration::from_secs(5)),
        "c3 cannot reach c2"
    );
    // DEL runs the list in reverse.
    let t = plugin(
        &Path::new(CNI_PATH).join("tuning"),
        "DEL",
        &env3,
        &tuning.to_string(),
    );
    assert_eq!(t.code, 0, "tuning DEL: {}", t.out);
    c3.ok("DEL", &conf, &[]);
    c2.ok("DEL", &conf, &[]);
    assert_eq!(endpoints(&x), Vec::<Value>::new());
}

#[test]
fn cni_bad_input_gets_spec_errors_and_leaves_nothing() {
    let p = unique_prefix("cb");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "pods", "--subnet", "10.241.2.0/24"]);
    let ns = Netns::new(&format!("{p}a"));
    let c = Container {
        id: format!("{p}-c"),
        ns: &ns,
    };
    let good = conf(&x, "1.0.0");
    let nothing_made = |what: &str| {
        assert_eq!(
            endpoints(&x),
            Vec::<Value>::new(),
            "{what} left an endpoint"
        );
        assert!(
            !ns.sh(&["ip", "link", "show", "eth0"]).status.success(),
            "{what} left eth0"
        );
    };

    let netns = c.netns();
    let env = [
        ("CNI_CONTAINERID", c.id.as_str()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let r = plugin(
        &xvs_cni(),
        "ADD",
        &env,
        "{\"cniVersion\": \"1.0.0\", \"name\":",
    );
    assert_error(&r, 6, "malformed JSON");
    nothing_made("malformed JSON");

    let r = plugin(&xvs_cni(), "FROB", &env, &good.to_string());
    let msg = assert_error(&r, 4, "unknown verb");
    assert!(msg.contains("CNI_COMMAND") && msg.contains("FROB"), "{msg}");

    let r = c.run("ADD", &conf(&x, "9.9.9"), &[]);
    let msg = assert_error(&r, 1, "cniVersion 9.9.9");
    assert!(msg.contains("9.9.9"), "{msg}");
    nothing_made("cniVersion 9.9.9");

    let mut missing = good.clone();
    missing["network"] = json!("nosuchnet");
    let msg = assert_error(&c.run("ADD", &missing, &[]), 7, "unknown network");
    assert!(msg.contains("nosuchnet"), "{msg}");
    nothing_made("an unknown network");

    let r = plugin(
        &xvs_cni(),
        "ADD",
        &[("CNI_CONTAINERID", c.id.as_str()), ("CNI_IFNAME", "eth0")],
        &good.to_string(),
    );
    let msg = assert_error(&r, 4, "no CNI_NETNS");
    assert!(msg.contains("CNI_NETNS"), "{msg}");

    let mut dead = good.clone();
    dead["socket"] = json!(x.dir.join("nobody.sock"));
    let msg = assert_error(&c.run("ADD", &dead, &[]), 11, "xvsd not running");
    assert!(msg.contains("xvsd is not running"), "{msg}");
    assert_error(&c.run("DEL", &dead, &[]), 11, "DEL without xvsd");
    nothing_made("ADD without xvsd");

    // A second ADD of the same container is refused and the first stays whole.
    let r = c.ok("ADD", &good, &[]);
    assert_error(&c.run("ADD", &good, &[]), 100, "a second ADD");
    let eps = endpoints(&x);
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["address"], r["ips"][0]["address"]);
    c.ok("DEL", &good, &[]);
    nothing_made("DEL");
}

#[test]
fn cni_gc_and_status() {
    let p = unique_prefix("cg");
    let mut x = Xvsd::start(&[]);
    x.must(&["network", "create", "pods", "--subnet", "10.241.3.0/24"]);
    let conf = conf(&x, "1.1.0");
    let (ns1, ns2) = (Netns::new(&format!("{p}a")), Netns::new(&format!("{p}b")));
    let c1 = Container {
        id: format!("{p}-keep"),
        ns: &ns1,
    };
    let c2 = Container {
        id: format!("{p}-stale"),
        ns: &ns2,
    };
    let r1 = c1.ok("ADD", &conf, &[]);
    assert_eq!(r1["cniVersion"], "1.1.0");
    assert_eq!(r1["interfaces"][0]["mtu"], 1500, "{r1}");
    c2.ok("ADD", &conf, &[]);
    // An endpoint made by xvsctl is not GC's to remove.
    let ns3 = Netns::new(&format!("{p}c"));
    x.must(&["network", "connect", "pods", &ns3.name]);

    let st = plugin(&xvs_cni(), "STATUS", &[], &conf.to_string());
    assert_eq!((st.code, st.out), (0, Value::Null));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": c1.id, "ifname": "eth0"}]);
    let r = plugin(&xvs_cni(), "GC", &[], &gc.to_string());
    assert_eq!(r.code, 0, "GC: {}", r.out);
    let eps = endpoints(&x);
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert!(eps.iter().any(|e| e["container_id"] == c1.id.as_str()));
    assert!(eps.iter().any(|e| e["sandbox"] == ns3.name.as_str()));
    assert!(!ns2.sh(&["ip", "link", "show", "eth0"]).status.success());

    let mut dead = conf.clone();
    dead["socket"] = json!(x.dir.join("nobody.sock"));
    assert_error(
        &plugin(&xvs_cni(), "STATUS", &[], &dead.to_string()),
        50,
        "STATUS without xvsd",
    );
    let mut other = conf.clone();
    other["network"] = json!("nosuchnet");
    assert_error(
        &plugin(&xvs_cni(), "STATUS", &[], &other.to_string()),
        50,
        "STATUS of a network xvsd does not have",
    );

    // xvsd restarted: the endpoint keeps its container ID; CHECK and DEL find it.
    x.restart();
    let mut check = conf.clone();
    check["prevResult"] = r1.clone();
    assert_eq!(c1.ok("CHECK", &check, &[]), Value::Null);
    c1.ok("DEL", &conf, &[]);
    x.must(&["network", "disconnect", "pods", &ns3.name]);
}

/// ADD+DEL 50 times into one namespace; prints ADD's and DEL's p50/p99, and those of the same
/// connect and disconnect through xvsctl (what the plugin adds).
#[test]
fn cni_add_latency() {
    let p = unique_prefix("cl");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "pods", "--subnet", "10.241.4.0/24"]);
    let conf = conf(&x, "1.0.0");
    let ns = Netns::new(&format!("{p}a"));
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..50 {
        let c = Container {
            id: format!("{p}-{i}"),
            ns: &ns,
        };
        let t = Instant::now();
        c.ok("ADD", &conf, &[]);
        add.push(t.elapsed());
        let t = Instant::now();
        c.ok("DEL", &conf, &[]);
        del.push(t.elapsed());
    }
    let (mut connect, mut disconnect) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let t = Instant::now();
        x.must(&["network", "connect", "pods", &ns.name]);
        connect.push(t.elapsed());
        let t = Instant::now();
        x.must(&["network", "disconnect", "pods", &ns.name]);
        disconnect.push(t.elapsed());
    }
    let ms = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 * q).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1e3
    };
    eprintln!(
        "CNI ADD latency over 50 runs: p50 {:.1} ms, p99 {:.1} ms; DEL p50 {:.1} ms, p99 {:.1} ms \
         (xvsctl network connect p50 {:.1} ms, p99 {:.1} ms; disconnect p50 {:.1} ms, p99 {:.1} ms)",
        ms(&mut add, 0.5),
        ms(&mut add, 0.99),
        ms(&mut del, 0.5),
        ms(&mut del, 0.99),
        ms(&mut connect, 0.5),
        ms(&mut connect, 0.99),
        ms(&mut disconnect, 0.5),
        ms(&mut disconnect, 0.99),
    );
    assert_eq!(endpoints(&x), Vec::<Value>::new());
}

/// A typed `ipam` is delegated through CNI_PATH: the reference host-local plugin gives the
/// address, DEL gives it back, and an address xvsd refuses is given back at once.
#[test]
fn cni_delegates_ipam_to_host_local() {
    let p = unique_prefix("ci");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "pods", "--subnet", "10.241.5.0/24"]);
    let data = x.dir.join("host-local");
    let with_range = |subnet: &str, start: &str| {
        let mut c = conf(&x, "1.0.0");
        c["ipam"] = json!({"type": "host-local", "dataDir": data,
            "ranges": [[{"subnet": subnet, "rangeStart": start}]]});
        c
    };
    let ns = Netns::new(&format!("{p}a"));
    let c = Container {
        id: format!("{p}-c"),
        ns: &ns,
    };
    let conf = with_range("10.241.5.0/24", "10.241.5.100");
    let r = c.ok("ADD", &conf, &[]);
    assert_eq!(r["ips"][0]["address"], "10.241.5.100/24", "{r}");
    assert_eq!(endpoints(&x)[0]["address"], "10.241.5.100/24");
    let lease = data.join("pods").join("10.241.5.100");
    assert!(lease.exists(), "host-local kept no lease");
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    assert_eq!(c.ok("CHECK", &check, &[]), Value::Null);
    c.ok("DEL", &conf, &[]);
    assert!(!lease.exists(), "DEL did not give the address back");
    assert_eq!(endpoints(&x), Vec::<Value>::new());

    // host-local hands out an address outside the network: xvsd refuses, the lease goes.
    let outside = with_range("10.241.6.0/24", "10.241.6.100");
    assert_error(
        &c.run("ADD", &outside, &[]),
        100,
        "an address outside the network",
    );
    assert!(!data.join("pods").join("10.241.6.100").exists());
    assert_eq!(endpoints(&x), Vec::<Value>::new());
}

/// `runtimeConfig.portMappings` become published ports on the uplink: an outside namespace
/// reaches the container's server through the uplink's address, the server sees the client's
/// own address, and DEL takes the mapping away.
#[test]
fn cni_port_mappings_are_reached_from_outside() {
    let p = unique_prefix("cp");
    let host = Netns::new(&format!("{p}h"));
    let outside = Netns::new(&format!("{p}o"));
    veth_between(
        &host,
        "up0",
        Some("198.18.71.1/24"),
        &outside,
        "eth0",
        "198.18.71.2/24",
    );
    let x = Xvsd::start_in(&host, &[]);
    x.must(&["uplink", "set", "up0", "--ip", "198.18.71.9/24"]);
    x.must(&["network", "create", "pods", "--subnet", "10.241.7.0/24"]);
    let ns = Netns::new(&format!("{p}a"));
    let c = Container {
        id: format!("{p}-web"),
        ns: &ns,
    };
    let mut conf = conf(&x, "1.0.0");
    conf["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    c.ok("ADD", &conf, &[]);
    let published = x.json(&["uplink", "show"])["published"].clone();
    assert!(published.to_string().contains(":8080->"), "{published}");

    let log = x.dir.join("web.log");
    let cmd = format!(
        "exec /usr/bin/python3 -m http.server 80 --bind 0.0.0.0 > {} 2>&1",
        log.display()
    );
    let mut server = ns.spawn(&["timeout", "60", "sh", "-c", &cmd]);
    let listening = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&ns.sh(&["ss", "-ltn"]).stdout).contains(":80 ")
    });
    assert!(listening, "the container's server did not start");
    let curl = || {
        let out = outside.sh(&[
            "curl",
            "-s",
            "-m",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://198.18.71.9:8080/",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        wait_until(Duration::from_secs(10), || curl() == "200"),
        "the published port did not answer: {}",
        curl()
    );
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.contains("198.18.71.2 - -"), "the server saw: {seen}");

    c.ok("DEL", &conf, &[]);
    assert_eq!(x.json(&["uplink", "show"])["published"], json!([]));
    assert_ne!(curl(), "200", "the port is still published after DEL");
    let _ = server.kill();
    let _ = server.wait();
}

/// A veth endpoint (`"portType": "veth"`) whose namespace is deleted before DEL: DEL
/// succeeds and nothing of it is left in xvsd or on the host.
#[test]
fn cni_veth_endpoint_del_after_the_namespace_is_gone() {
    let p = unique_prefix("cv");
    let x = Xvsd::start(&[]);
    x.must(&["network", "create", "pods", "--subnet", "10.241.8.0/24"]);
    let mut conf = conf(&x, "1.1.0");
    conf["portType"] = json!("veth");
    let ns = Netns::new(&format!("{p}a"));
    let id = format!("{p}-veth");
    Container {
        id: id.clone(),
        ns: &ns,
    }
    .ok("ADD", &conf, &[]);
    let eps = endpoints(&x);
    assert_eq!(eps[0]["port_type"], "veth", "{eps:?}");
    let port = eps[0]["port"].as_str().unwrap().to_string();
    assert!(
        ns.reaches("10.241.8.1", Duration::from_secs(5)),
        "no gateway"
    );
    drop(ns);
    let netns = format!("/var/run/netns/{p}a");
    let r = plugin(
        &xvs_cni(),
        "DEL",
        &[
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf.to_string(),
    );
    assert_eq!(r.code, 0, "DEL: {}", r.out);
    assert_eq!(endpoints(&x), Vec::<Value>::new());
    assert!(
        !xvs_tests::sh(&["ip", "link", "show", &port])
            .status
            .success()
    );
    assert!(
        x.json(&["show"]).to_string().find(&port).is_none(),
        "port {port} still attached"
    );
}
