//! Many hosts as one network: three xvs hosts sharing an overlay through a real etcd (3.4).
//!
//! Each test builds its own underlay (a Linux bridge in a namespace of its own, hosts hanging
//! off it by veths at 198.18.N.{1,2,3}, their xvs uplinks and VTEPs at 198.18.N.{11,12,13}),
//! and runs etcd inside the underlay's namespace on 198.18.N.254 with a temporary data dir,
//! so every host reaches it over its own interface and nothing leaves the test's namespaces.
//!
//! - three hosts: an overlay made on one appears on the others; containers on all three get
//!   distinct addresses from the shared IPAM and reach each other by name; a new endpoint is
//!   pingable from the other hosts within 1 s (measured); `kill -9` of one xvsd: the others
//!   forget its endpoints within the lease TTL (measured); etcd stopped: traffic keeps
//!   flowing and a `network connect` is refused with a clear error; etcd back: a new endpoint
//!   propagates again, and the killed host, restarted, registers what it owns again;
//! - bad input: a malformed or unreachable `--cluster`, a host id already held, an address
//!   another host holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xvs_tests::{
    Netns, Underlay, Xvsd, endpoint_ip, script, split, start_fails, unique_prefix, wait_until,
};

const SUBNET: &str = "10.210.0.0/24";
const TTL: &str = "3";

/// etcd in the underlay's namespace on 198.18.N.254, its data in a temporary dir.
struct Etcd {
    ns: String,
    ip: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    fn start(u: &Underlay) -> Etcd {
        let ip = u.ip(254);
        u.ns.must(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        let dir = std::env::temp_dir().join(format!("xvs-etcd-{}-{}", std::process::id(), ip));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Etcd {
            ns: u.ns.name.clone(),
            ip,
            dir,
            child: None,
        };
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("etcd://{}:2379", self.ip)
    }

    fn spawn(&mut self) {
        let client = format!("http://{}:2379", self.ip);
        let peer = format!("http://{}:2380", self.ip);
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd", "--name", "t"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start etcd (tests/setup.sh installs etcd-server)");
        self.child = Some(child);
        let endpoint = format!("{}:2379", self.ip);
        let up = wait_until(Duration::from_secs(15), || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns,
                    "etcdctl",
                    "--endpoints",
                    &endpoint,
                ])
                .args(["endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(up, "etcd did not come up: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (SIGKILL: the hosts see it vanish, as a crash or a partition would).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A host namespace running xvsd in the cluster as `id`, with its uplink and VTEP on `ul0`.
struct Host {
    // Declared first: stopped before its namespace goes.
    x: Xvsd,
    _ns: Netns,
    id: String,
}

impl Host {
    fn new(u: &Underlay, etcd: &Etcd, p: &str, tag: &str, own: u8) -> Host {
        let ns = Netns::new(&format!("{p}h{tag}"));
        u.attach(&ns, tag, own);
        let id = format!("host-{tag}");
        let url = etcd.url();
        let x = Xvsd::start_in(
            &ns,
            &["--cluster", &url, "--host-id", &id, "--lease-ttl", TTL],
        );
        let vtep = u.ip(own + 10);
        x.must(&["uplink", "set", "ul0", "--ip", &format!("{vtep}/24")]);
        x.must(&["vtep", "set", "--local", &vtep]);
        Host { x, _ns: ns, id }
    }

    fn cluster(&self) -> Value {
        self.x.json(&["cluster", "show"])
    }

    fn has_service(&self, name: &str) -> bool {
        self.x.ctl(&["service", "inspect", name]).status.success()
    }

    /// `service inspect`'s active backends.
    fn backends(&self, service: &str) -> Vec<String> {
        self.x.json(&["service", "inspect", service])["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["state"] == "active")
            .map(|b| b["addr"].as_str().unwrap().to_string())
            .collect()
    }

    fn has_network(&self, name: &str) -> bool {
        self.x
            .json(&["network", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == name)
    }

    /// The addresses `network inspect ov` lists on other hosts.
    fn remote_ips(&self) -> Vec<String> {
        self.x.json(&["network", "inspect", "ov"])["remote_endpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["ip"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A container `name` on `ov` (address from the cluster's IPAM, DNS name `name`).
    fn container(&self, name: &str) -> (Netns, String) {
        let ns = Netns::new(name);
        let ep = self
            .x
            .json(&["network", "connect", "ov", name, "--name", name]);
        (ns, endpoint_ip(&ep))
    }
}

/// A name server (tests/scripts/name_server.py) in `ns` on port 8080 answering `name`.
fn serve_name(ns: &Netns, name: &str) -> Child {
    let log = std::env::temp_dir().join(format!("xvs-cl-{}-{name}.log", std::process::id()));
    let child = ns.spawn(&[
        "timeout",
        "300",
        "python3",
        script("name_server.py").to_str().unwrap(),
        name,
        "8080",
        log.to_str().unwrap(),
    ]);
    let up = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&ns.sh(&["ss", "-ltn"]).stdout).contains(":8080 ")
    });
    assert!(up, "name server {name} did not start");
    child
}

/// How long until `f` holds, polled every 10 ms; panics after `limit`.
fn time_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    assert!(wait_until(limit, &mut f), "{what}: not within {limit:?}");
    t0.elapsed()
}

/// One quick ping (200 ms deadline).
fn pings(ns: &Netns, ip: &str) -> bool {
    ns.sh(&["ping", "-c", "1", "-W", "0.2", "-q", ip])
        .status
        .success()
}

#[test]
fn three_hosts_share_an_overlay_through_etcd_and_survive_a_host_and_etcd_going_away() {
    let p = unique_prefix("cl");
    let u = Underlay::new(&p, 56, 1500);
    let mut etcd = Etcd::start(&u);
    let a = Host::new(&u, &etcd, &p, "a", 1);
    let b = Host::new(&u, &etcd, &p, "b", 2);
    let mut c = Host::new(&u, &etcd, &p, "c", 3);

    // An overlay made on A is made on B and C from the directory.
    a.x.must(&[
        "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
    ]);
    let seen = time_until(Duration::from_secs(5), "ov on B and C", || {
        b.has_network("ov") && c.has_network("ov")
    });
    println!("network ov created on A, on B and C after {seen:?}");
    let vni = |h: &Host| h.x.json(&["network", "inspect", "ov"])["vni"].clone();
    assert_eq!(vni(&a), vni(&b));
    assert_eq!(vni(&a), vni(&c));
    let view = a.cluster();
    assert_eq!(view["state"], "synced", "{view}");
    assert_eq!(view["hosts"].as_array().unwrap().len(), 3, "{view}");
    assert!(
        view["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["vtep"].is_string()),
        "every host registered its VTEP: {view}"
    );

    // Containers on B and C, then one on A: distinct addresses from the shared IPAM, and
    // A's is pingable from B and C at once.
    let (cb, ib) = b.container(&format!("{p}cb"));
    let (cc, ic) = c.container(&format!("{p}cc"));
    let t0 = Instant::now();
    let (ca, ia) = a.container(&format!("{p}ca"));
    let connect = t0.elapsed();
    assert!(ia != ib && ib != ic && ia != ic, "{ia} {ib} {ic}");
    assert!(
        wait_until(Duration::from_secs(5), || pings(&cb, &ia)),
        "B -> A's new endpoint"
    );
    let from_b = t0.elapsed();
    assert!(
        wait_until(Duration::from_secs(5), || pings(&cc, &ia)),
        "C -> A's new endpoint"
    );
    let from_c = t0.elapsed();
    println!(
        "endpoint on A (connect took {connect:?}): pingable from B after {from_b:?}, from C after {from_c:?}"
    );
    assert!(
        from_b < Duration::from_secs(1) && from_c < Duration::from_secs(1),
        "propagation over 1 s: B {from_b:?}, C {from_c:?}"
    );

    // By name, every way round (the containers' resolv.conf points at the gateway).
    for (from, to) in [
        (&ca, &cb),
        (&ca, &cc),
        (&cb, &ca),
        (&cb, &cc),
        (&cc, &ca),
        (&cc, &cb),
    ] {
        assert!(
            from.reaches(&to.name, Duration::from_secs(3)),
            "{} -> {} by name",
            from.name,
            to.name
        );
    }
    let remote = a.remote_ips();
    assert_eq!(remote.len(), 2, "{remote:?}");
    assert!(remote.contains(&ib) && remote.contains(&ic), "{remote:?}");

    // Port security holds across hosts: A's container taking C's address (an endpoint of
    // another host) cannot send as it, and B still reaches the real C.
    let spoofed = a.x.drops("port_security", "spoofed_source");
    ca.must(&["ip", "addr", "add", &format!("{ic}/32"), "dev", "eth0"]);
    let out = ca.sh(&[
        "ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", "-I", &ic, &ib,
    ]);
    assert!(!out.status.success(), "A's container sent as C's endpoint");
    ca.must(&["ip", "addr", "del", &format!("{ic}/32"), "dev", "eth0"]);
    assert!(a.x.drops("port_security", "spoofed_source") >= spoofed + 2);
    assert!(pings(&cb, &ic), "B reaches C after A's attempt");

    // A service made on A, its backends on B and C, each added on its own host: every host
    // runs it, resolves it, and balances over both.
    let _servers = [serve_name(&cb, "cb"), serve_name(&cc, "cc")];
    a.x.must(&[
        "service",
        "create",
        "web",
        "--network",
        "ov",
        "--port",
        "tcp/80:8080",
    ]);
    let vip = a.x.json(&["service", "inspect", "web"])["vip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        wait_until(Duration::from_secs(5), || b.has_service("web")
            && c.has_service("web")),
        "web on B and C"
    );
    b.x.must(&["service", "add-backend", "web", &ib]);
    c.x.must(&["service", "add-backend", "web", &ic]);
    for h in [&a, &b, &c] {
        assert!(
            wait_until(Duration::from_secs(5), || h.backends("web").len() == 2),
            "{}: {:?}",
            h.id,
            h.backends("web")
        );
        assert_eq!(
            h.x.json(&["service", "inspect", "web"])["vip"],
            vip.as_str(),
            "one VIP everywhere"
        );
    }
    let url = format!("http://{vip}/");
    for (from, what) in [(&ca, "A"), (&cb, "B")] {
        let counts = split(from, &url, 20);
        assert!(
            counts.get("cb").copied().unwrap_or(0) > 0
                && counts.get("cc").copied().unwrap_or(0) > 0,
            "from {what}: both backends answer: {counts:?}"
        );
    }
    let gw = a.x.json(&["network", "inspect", "ov"])["gateway"].clone();
    let gw = gw.as_str().unwrap();
    assert_eq!(cc.dig(gw, "web", false), vip);
    let mut tasks: Vec<String> = cc
        .dig(gw, "tasks.web", false)
        .lines()
        .map(String::from)
        .collect();
    tasks.sort();
    let mut both = vec![ib.clone(), ic.clone()];
    both.sort();
    assert_eq!(tasks, both);

    // kill -9 of C's xvsd: A and B forget C within the lease TTL.
    c.x.kill_hard();
    let t0 = Instant::now();
    let limit = Duration::from_secs(3 + 3);
    assert!(
        wait_until(limit, || {
            !a.remote_ips().contains(&ic)
                && !b.remote_ips().contains(&ic)
                && a.cluster()["hosts"].as_array().unwrap().len() == 2
        }),
        "C's entries still on A or B after {limit:?}: {}",
        a.cluster()
    );
    println!(
        "host C killed: its entries gone from A and B after {:?} (lease TTL {TTL}s)",
        t0.elapsed()
    );
    assert!(
        !pings(&ca, &ic),
        "A still reaches the dead host's container"
    );
    assert_eq!(
        a.backends("web"),
        vec![format!("{ib}:8080")],
        "C's backend gone with it"
    );
    let counts = split(&ca, &url, 10);
    assert_eq!(counts.get("cb").copied(), Some(10), "{counts:?}");

    // etcd goes away: traffic keeps flowing, changes are refused.
    etcd.stop();
    assert!(ca.ping(&ib, 5), "A -> B without etcd");
    assert!(cb.ping(&ia, 5), "B -> A without etcd");
    let sb = Netns::new(&format!("{p}sb"));
    let err = b.x.refused(&["network", "connect", "ov", &sb.name]);
    assert!(err.contains("cluster is unavailable"), "{err}");
    assert!(
        wait_until(Duration::from_secs(5), || b.cluster()["state"]
            == "disconnected"),
        "{}",
        b.cluster()
    );
    assert!(b.has_network("ov"));

    // etcd back: B resynchronises, a new endpoint propagates again.
    etcd.spawn();
    let back = time_until(Duration::from_secs(10), "B synced again", || {
        b.cluster()["state"] == "synced"
    });
    println!("etcd back: B synced again after {back:?}");
    assert!(b.cluster()["sessions"].as_u64().unwrap() >= 2);
    let t0 = Instant::now();
    let ep =
        b.x.json(&["network", "connect", "ov", &sb.name, "--name", "late"]);
    let isb = endpoint_ip(&ep);
    assert!(
        wait_until(Duration::from_secs(5), || pings(&ca, &isb)),
        "A -> B's endpoint made after etcd came back"
    );
    println!(
        "after etcd came back, B's new endpoint pingable from A after {:?}",
        t0.elapsed()
    );
    let gateway = a.x.json(&["network", "inspect", "ov"])["gateway"].clone();
    assert_eq!(ca.dig(gateway.as_str().unwrap(), "late", false), isb);

    // C restarted: it registers what it owns again, and is reached again.
    c.x.start_again();
    assert!(
        wait_until(Duration::from_secs(10), || a.remote_ips().contains(&ic)),
        "C's endpoint back on A: {}",
        a.cluster()
    );
    assert!(
        ca.reaches(&ic, Duration::from_secs(5)),
        "A -> C's container after C's restart"
    );
    assert_eq!(c.cluster()["hosts"].as_array().unwrap().len(), 3);
    drop(c);
}

/// A state dir of its own for each refused start in `ns`.
fn scratch(ns: &Netns) -> PathBuf {
    std::env::temp_dir().join(format!("xvs-clbad-{}-{}", std::process::id(), ns.name))
}

#[test]
fn bad_cluster_input_is_refused_clearly() {
    let p = unique_prefix("cb");
    let u = Underlay::new(&p, 57, 1500);
    let etcd = Etcd::start(&u);
    let ns = Netns::new(&format!("{p}hz"));
    u.attach(&ns, "z", 9);

    // Malformed addresses: the command line is refused.
    for bad in ["127.0.0.1:2379", "etcd://nowhere", "etcd://h:0"] {
        let (code, err) = start_fails(&ns, &scratch(&ns), &["--cluster", bad, "--host-id", "z"]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("--cluster"), "{bad}: {err}");
    }
    let (code, err) = start_fails(&ns, &scratch(&ns), &["--cluster", &etcd.url()]);
    assert_eq!(code, Some(2), "no --host-id: {err}");
    let (code, err) = start_fails(
        &ns,
        &scratch(&ns),
        &["--cluster", &etcd.url(), "--host-id", "a/b"],
    );
    assert_eq!(code, Some(2), "{err}");
    // Unreachable: a clear error and a non-zero exit, no hang.
    let t0 = Instant::now();
    let nowhere = format!("etcd://{}:1", u.ip(254));
    let (code, err) = start_fails(
        &ns,
        &scratch(&ns),
        &["--cluster", &nowhere, "--host-id", "z"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot join the cluster") && err.contains(":1"),
        "{err}"
    );
    println!(
        "unreachable etcd refused after {:?}: {}",
        t0.elapsed(),
        err.trim()
    );

    // Two hosts claiming one id: the second does not start.
    let a = Host::new(&u, &etcd, &p, "a", 1);
    let (code, err) = start_fails(
        &ns,
        &scratch(&ns),
        &["--cluster", &etcd.url(), "--host-id", &a.id],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already registered"), "{err}");
    assert_eq!(
        a.cluster()["state"],
        "synced",
        "the first one is undisturbed"
    );

    // An address another host holds.
    let b = Host::new(&u, &etcd, &p, "b", 2);
    a.x.must(&[
        "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
    ]);
    assert!(wait_until(Duration::from_secs(5), || b.has_network("ov")));
    let (_ca, ia) = a.container(&format!("{p}ca"));
    assert!(wait_until(Duration::from_secs(5), || b
        .remote_ips()
        .contains(&ia)));
    let sb = Netns::new(&format!("{p}cb"));
    let err =
        b.x.refused(&["network", "connect", "ov", &sb.name, "--ip", &ia]);
    assert!(err.contains(&format!("in use on host {}", a.id)), "{err}");
    // A network name the cluster already has, a VNI it uses, a network with endpoints
    // elsewhere.
    let err =
        b.x.refused(&["network", "create", "ov", "--driver", "overlay"]);
    assert!(err.contains("exists"), "{err}");
    let vni = a.x.json(&["network", "inspect", "ov"])["vni"]
        .as_u64()
        .unwrap()
        .to_string();
    let err = b.x.refused(&[
        "network", "create", "ov2", "--driver", "overlay", "--vni", &vni,
    ]);
    assert!(err.contains("VNI"), "{err}");
    let err = b.x.refused(&["network", "rm", "ov"]);
    assert!(
        err.contains("endpoints on other hosts") && err.contains(&a.id),
        "{err}"
    );
    // Nothing half-made: B's state is as it was.
    assert!(b.remote_ips().contains(&ia));
    assert_eq!(
        b.x.json(&["network", "inspect", "ov"])["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let _ = std::fs::remove_dir_all(scratch(&ns));
}

/// Scale, as far as this machine goes: 100 endpoints made on A, how long until B and C both
/// have all of them (and how long after the last connect returned).
#[test]
fn a_hundred_endpoints_propagate_to_two_other_hosts() {
    const N: usize = 100;
    let p = unique_prefix("cs");
    let u = Underlay::new(&p, 58, 1500);
    let etcd = Etcd::start(&u);
    let a = Host::new(&u, &etcd, &p, "a", 1);
    let b = Host::new(&u, &etcd, &p, "b", 2);
    let c = Host::new(&u, &etcd, &p, "c", 3);
    a.x.must(&[
        "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
    ]);
    assert!(wait_until(Duration::from_secs(5), || {
        b.has_network("ov") && c.has_network("ov")
    }));
    let events_before = b.cluster()["events"].as_u64().unwrap();
    let sandboxes: Vec<Netns> = (0..N).map(|i| Netns::new(&format!("{p}e{i}"))).collect();
    let t0 = Instant::now();
    for (i, ns) in sandboxes.iter().enumerate() {
        a.x.must(&[
            "network",
            "connect",
            "ov",
            &ns.name,
            "--name",
            &format!("ep{i}"),
        ]);
    }
    let made = t0.elapsed();
    let all = |h: &Host| h.remote_ips().len() == N;
    assert!(
        wait_until(Duration::from_secs(30), || all(&b) && all(&c)),
        "B has {}, C has {}",
        b.remote_ips().len(),
        c.remote_ips().len()
    );
    let total = t0.elapsed();
    let events = b.cluster()["events"].as_u64().unwrap() - events_before;
    println!(
        "{N} endpoints: connects on A took {made:?} ({:?} each); on B and C all {N} after {total:?}, {:?} after the last connect; B applied {events} watch events",
        made / N as u32,
        total.saturating_sub(made)
    );
    // Names resolve on the far hosts too.
    let gw = b.x.json(&["network", "inspect", "ov"])["gateway"].clone();
    let probe = Netns::new(&format!("{p}pr"));
    b.x.must(&["network", "connect", "ov", &probe.name]);
    assert!(
        !probe
            .dig(gw.as_str().unwrap(), &format!("ep{}", N - 1), false)
            .is_empty()
    );
}
