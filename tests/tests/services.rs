//! Services: xvsd runs in a namespace of its own standing for the host, with its uplink on
//! `up0` toward an `outside` namespace (198.18.0.0/15). A network holds three backends (an
//! HTTP server answering its own name and logging its clients) and a client. A service's
//! VIP splits new connections as its scheduler says (rr exactly, wrr by weight, lc and maglev
//! over every backend), from the client on the network and from outside through the
//! service's published port; the backend sees the client's own address either way; `dig SVC`
//! gives the VIP and `dig tasks.SVC` the backends. An established connection survives
//! backends being added and removed and its own backend being drained; removing its backend
//! without drain resets it; a service with no backend refuses a new connection at once.
//! The service comes back after a restart. Bad requests are refused with nothing made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xvs_tests::{Netns, Xvsd, endpoint_ip, script, split, unique_prefix, veth_between, wait_until};

/// The port every backend listens on.
const BACKEND_PORT: &str = "8080";

/// The host (xvsd, its uplink), the outside, one network with three backends and a client.
struct World {
    x: Xvsd,
    outside: Netns,
    client: Netns,
    client_ip: String,
    /// Backends' namespaces, names (`b0`...) and addresses, in order.
    backends: Vec<(Netns, String, String)>,
    /// Each backend's client log.
    logs: Vec<PathBuf>,
    _servers: Vec<Child>,
    _host: Netns,
    n: u8,
    gateway: String,
}

impl World {
    fn new(p: &str, n: u8) -> World {
        let host = Netns::new(&format!("{p}h"));
        let outside = Netns::new(&format!("{p}o"));
        veth_between(
            &host,
            "up0",
            Some(&format!("198.18.{n}.1/24")),
            &outside,
            "eth0",
            &format!("198.18.{n}.2/24"),
        );
        let x = Xvsd::start_in(&host, &["--workers", "2"]);
        x.must(&["uplink", "set", "up0", "--ip", &format!("198.18.{n}.9/24")]);
        let subnet = format!("10.{}.1.0/24", 100 + n);
        x.must(&["network", "create", "web", "--subnet", &subnet]);
        let gateway = x.json(&["network", "inspect", "web"])["gateway"]
            .as_str()
            .unwrap()
            .to_string();
        let mut w = World {
            client: Netns::new(&format!("{p}c")),
            client_ip: String::new(),
            x,
            outside,
            backends: Vec::new(),
            logs: Vec::new(),
            _servers: Vec::new(),
            _host: host,
            n,
            gateway,
        };
        w.client_ip = endpoint_ip(&w.x.json(&["network", "connect", "web", &format!("{p}c")]));
        for i in 0..3 {
            w.add_backend_ns(&format!("{p}b{i}"), &format!("b{i}"));
        }
        w
    }

    /// A new sandbox on `web` running a name server called `name`; returns its address.
    fn add_backend_ns(&mut self, ns_name: &str, name: &str) -> String {
        let ns = Netns::new(ns_name);
        let ip = endpoint_ip(&self.x.json(&["network", "connect", "web", ns_name]));
        let log = self.x.dir.join(format!("{name}.log"));
        let server = ns.spawn(&[
            "timeout",
            "300",
            "python3",
            script("name_server.py").to_str().unwrap(),
            name,
            BACKEND_PORT,
            log.to_str().unwrap(),
        ]);
        let listening = wait_until(Duration::from_secs(10), || {
            String::from_utf8_lossy(&ns.sh(&["ss", "-ltn"]).stdout)
                .contains(&format!(":{BACKEND_PORT} "))
        });
        assert!(listening, "backend {name} did not start");
        self.backends.push((ns, name.to_string(), ip.clone()));
        self.logs.push(log);
        self._servers.push(server);
        ip
    }

    fn uplink_ip(&self) -> String {
        format!("198.18.{}.9", self.n)
    }

    fn outside_ip(&self) -> String {
        format!("198.18.{}.2", self.n)
    }

    fn backend_ips(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.2.clone()).collect()
    }

    /// A service on `web` port 80 → 8080 with `extra` arguments; returns its VIP.
    fn service(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "service",
            "create",
            name,
            "--network",
            "web",
            "--port",
            "tcp/80:8080",
        ];
        args.extend_from_slice(extra);
        self.x.must(&args);
        self.inspect(name)["vip"].as_str().unwrap().to_string()
    }

    /// What `dig tasks.SVC` answers the client, sorted.
    fn tasks(&self, service: &str) -> Vec<String> {
        let answer = self
            .client
            .dig(&self.gateway, &format!("tasks.{service}"), false);
        sorted(answer.lines().map(str::to_string).collect())
    }

    fn inspect(&self, name: &str) -> Value {
        self.x.json(&["service", "inspect", name])
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn count(split: &HashMap<String, u64>, name: &str) -> u64 {
    split.get(name).copied().unwrap_or(0)
}

/// A long-lived `/stream` through `url` from `ns`: a line per 100 ms from one backend.
struct Stream {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// The backend it landed on.
    backend: String,
}

impl Stream {
    fn open(ns: &Netns, url: &str) -> Stream {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "curl", "-sN", "-m", "60", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(5))
            .expect("the stream gave no first line");
        let backend = first.split(' ').next().unwrap().to_string();
        Stream {
            child,
            lines,
            backend,
        }
    }

    /// Whether lines keep coming for `d` (at least half the expected number, in order).
    fn flows_for(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut got = 0;
        while Instant::now() < end {
            match self.lines.recv_timeout(Duration::from_millis(500)) {
                Ok(_) => got += 1,
                Err(_) => return false,
            }
        }
        got as u128 >= d.as_millis() / 200
    }

    /// Waits for curl to end; its exit code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn schedulers_split_keep_client_address_resolve_and_publish() {
    let p = unique_prefix("svc");
    let w = World::new(&p, 50);
    let ips = w.backend_ips();

    // rr: exact turns, from the client on the network.
    let vip = w.service("rr", &["--publish", "8081"]);
    for ip in &ips {
        w.x.must(&["service", "add-backend", "rr", ip]);
    }
    assert!(w.client.reaches(&vip, Duration::from_secs(5)), "ping VIP");
    let s = split(&w.client, &format!("http://{vip}/"), 300);
    eprintln!("rr split: {s:?}");
    for b in ["b0", "b1", "b2"] {
        assert_eq!(count(&s, b), 100, "rr split {s:?}");
    }
    // Each backend saw the client's own address.
    for log in &w.logs {
        let log = std::fs::read_to_string(log).unwrap();
        assert!(
            log.lines()
                .all(|l| l.starts_with(&format!("{} ", w.client_ip))),
            "backend saw: {log}"
        );
    }
    let inspect = w.inspect("rr");
    let total: u64 = inspect["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .sum();
    assert!(total >= 300, "inspect counts connections: {inspect}");

    // From outside through the published port: the backend sees the outside's address.
    let s = split(&w.outside, &format!("http://{}:8081/", w.uplink_ip()), 30);
    eprintln!("rr split from outside: {s:?}");
    assert_eq!(count(&s, "error"), 0, "{s:?}");
    for b in ["b0", "b1", "b2"] {
        assert_eq!(count(&s, b), 10, "rr split from outside {s:?}");
    }
    let outside = format!("{} ", w.outside_ip());
    for log in &w.logs {
        let log = std::fs::read_to_string(log).unwrap();
        assert!(
            log.lines().any(|l| l.starts_with(&outside)),
            "backend saw: {log}"
        );
    }

    // DNS: SVC gives the VIP, tasks.SVC the backends.
    assert_eq!(w.client.dig(&w.gateway, "rr", false), vip);
    assert_eq!(w.tasks("rr"), sorted(ips.clone()), "tasks.rr");

    // trace: the lb decision for a new flow (which backend, and why), making no session.
    let inspect = w.x.json(&["network", "inspect", "web"]);
    let client = inspect["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["address"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/", w.client_ip))
        })
        .cloned()
        .unwrap();
    let neigh = w.client.must(&["ip", "neigh", "show", &vip]);
    let vip_mac = neigh
        .split_whitespace()
        .skip_while(|t| *t != "lladdr")
        .nth(1)
        .unwrap()
        .to_string();
    let before = w.inspect("rr");
    let trace = w.x.json(&[
        "trace",
        inspect["bridge"].as_str().unwrap(),
        &format!(
            "in_port={},dl_src={},dl_dst={},tcp,nw_src={},nw_dst={vip},tp_src=40000,tp_dst=80",
            client["port"].as_str().unwrap(),
            client["mac"].as_str().unwrap(),
            vip_mac,
            w.client_ip
        ),
    ]);
    let lb = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "lb")
        .cloned()
        .unwrap_or_else(|| panic!("no lb step: {trace}"));
    eprintln!("trace: {trace}");
    assert!(
        lb.to_string().contains("backend 10.") && lb.to_string().contains(":8080"),
        "{trace}"
    );
    assert_eq!(w.inspect("rr"), before, "trace made no connection");

    // wrr: in proportion to the weights.
    let vip = w.service("wrr", &["--scheduler", "wrr"]);
    for (ip, weight) in ips.iter().zip(["1", "2", "3"]) {
        w.x.must(&["service", "add-backend", "wrr", ip, "--weight", weight]);
    }
    let s = split(&w.client, &format!("http://{vip}/"), 300);
    eprintln!("wrr split: {s:?}");
    for (b, want) in [("b0", 50), ("b1", 100), ("b2", 150)] {
        assert!(
            count(&s, b).abs_diff(want) <= 3,
            "wrr split {s:?}, {b} should have {want}"
        );
    }

    // lc and maglev: every backend takes a share.
    for sched in ["lc", "maglev"] {
        let vip = w.service(sched, &["--scheduler", sched]);
        for ip in &ips {
            w.x.must(&["service", "add-backend", sched, ip]);
        }
        let s = split(&w.client, &format!("http://{vip}/"), 300);
        eprintln!("{sched} split: {s:?}");
        assert_eq!(
            count(&s, "error"),
            0,
            "{sched} split {s:?}; drops: {}",
            w.x.json(&["stats"])["drops"]
        );
        for b in ["b0", "b1", "b2"] {
            assert!(count(&s, b) >= 40, "{sched} split {s:?}");
        }
    }
    let ls = w.x.json(&["service", "ls"]);
    assert_eq!(ls.as_array().map(Vec::len), Some(4), "{ls}");
}

#[test]
fn established_connections_survive_changes_drain_and_reset() {
    let p = unique_prefix("svd");
    let mut w = World::new(&p, 51);
    let vip = w.service("web", &[]);
    let ips = w.backend_ips();
    for ip in &ips {
        w.x.must(&["service", "add-backend", "web", ip]);
    }
    let url = format!("http://{vip}/stream");
    let stream = Stream::open(&w.client, &url);
    let mine = stream.backend.clone();
    let mine_i: usize = mine[1..].parse().unwrap();
    eprintln!("the stream is on {mine}");

    // Another backend goes, a new one comes: the stream does not notice.
    let other = &ips[(mine_i + 1) % 3];
    w.x.must(&["service", "rm-backend", "web", other]);
    let new_ip = w.add_backend_ns(&format!("{p}b3"), "b3");
    w.x.must(&["service", "add-backend", "web", &new_ip]);
    assert!(stream.flows_for(Duration::from_secs(2)), "stream disturbed");

    // Drain its backend: new connections go elsewhere, the stream goes on.
    w.x.must(&["service", "rm-backend", "web", &ips[mine_i], "--drain"]);
    let s = split(&w.client, &format!("http://{vip}/"), 30);
    assert_eq!(count(&s, &mine), 0, "drained backend took new ones: {s:?}");
    assert_eq!(count(&s, "error"), 0, "{s:?}");
    assert!(
        stream.flows_for(Duration::from_secs(1)),
        "drain cut the stream"
    );
    let inspect = w.inspect("web");
    let drained = inspect["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| {
            b["addr"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}:", ips[mine_i]))
        })
        .cloned()
        .unwrap_or_else(|| panic!("drained backend gone: {inspect}"));
    assert_eq!(drained["state"], "draining", "{inspect}");
    drop(stream);

    // Without drain, its connections are reset at once (curl: 56, recv failure).
    let mut stream = Stream::open(&w.client, &url);
    let on = stream.backend.clone();
    let on_ip = &w.backends.iter().find(|b| b.1 == on).unwrap().2.clone();
    w.x.must(&["service", "rm-backend", "web", on_ip]);
    let code = stream.exit_code(Duration::from_secs(5));
    assert_eq!(code, Some(56), "a removed backend's connection is reset");

    // No backend left: a new connection is refused at once (curl: 7).
    for b in w.inspect("web")["backends"].as_array().unwrap().clone() {
        if b["state"] == "active" {
            let addr = b["addr"].as_str().unwrap();
            w.x.must(&["service", "rm-backend", "web", addr]);
        }
    }
    let t = Instant::now();
    let out = w
        .client
        .sh(&["curl", "-s", "-m", "5", &format!("http://{vip}/")]);
    assert_eq!(out.status.code(), Some(7), "no backend: refused");
    assert!(t.elapsed() < Duration::from_secs(2), "refused at once");
}

#[test]
fn restart_restores_and_bad_requests_change_nothing() {
    let p = unique_prefix("svr");
    let mut w = World::new(&p, 52);
    let ips = w.backend_ips();
    let vip = w.service("web", &["--scheduler", "wrr", "--publish", "8082"]);
    w.x.must(&["service", "add-backend", "web", &ips[0], "--weight", "2"]);
    w.x.must(&["service", "add-backend", "web", &ips[1]]);

    // Bad requests: refused, nothing made or changed.
    let before = w.x.json(&["service", "ls"]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "create",
                "x",
                "--network",
                "web",
                "--vip",
                "10.9.9.9",
                "--port",
                "tcp/80",
            ],
            "10.9.9.9",
        ),
        (
            vec![
                "create",
                "x",
                "--network",
                "web",
                "--vip",
                &vip,
                "--port",
                "tcp/80",
            ],
            &vip,
        ),
        (
            vec![
                "create",
                "x",
                "--network",
                "web",
                "--vip",
                &ips[2],
                "--port",
                "tcp/80",
            ],
            &ips[2],
        ),
        (
            vec![
                "create",
                "x",
                "--network",
                "web",
                "--port",
                "tcp/80",
                "--scheduler",
                "fastest",
            ],
            "fastest",
        ),
        (
            vec!["create", "x", "--network", "web", "--port", "tcp/eighty"],
            "eighty",
        ),
        (
            vec!["create", "x", "--network", "nope", "--port", "tcp/80"],
            "nope",
        ),
        (
            vec![
                "create",
                "x",
                "--network",
                "web",
                "--port",
                "tcp/80",
                "--publish",
                "8082",
            ],
            "8082",
        ),
        (
            vec!["create", "web", "--network", "web", "--port", "tcp/81"],
            "web",
        ),
        (vec!["add-backend", "web", "10.9.9.9"], "10.9.9.9"),
        (vec!["add-backend", "web", &ips[0]], &ips[0]),
        (vec!["add-backend", "nope", &ips[2]], "nope"),
        (vec!["set-weight", "web", &ips[2], "3"], &ips[2]),
        (vec!["rm-backend", "web", "10.9.9.9"], "10.9.9.9"),
    ];
    for (args, names) in &cases {
        let mut full = vec!["service"];
        full.extend(args);
        let e = w.x.refused(&full);
        assert!(e.contains(names), "{full:?}: {e}");
    }
    assert_eq!(
        w.x.json(&["service", "ls"]),
        before,
        "a refusal changed something"
    );

    // A restart brings the service back, its VIP, weights and published port with it.
    let inspect = w.inspect("web");
    w.x.restart();
    assert_eq!(w.inspect("web"), inspect, "restored as it was");
    let s = split(&w.client, &format!("http://{vip}/"), 30);
    assert_eq!((count(&s, "b0"), count(&s, "b1")), (20, 10), "{s:?}");
    let s = split(&w.outside, &format!("http://{}:8082/", w.uplink_ip()), 6);
    assert_eq!(count(&s, "error"), 0, "published after restart {s:?}");

    // A backend's endpoint leaves the network: it leaves the service (as a swarm task).
    w.x.must(&["network", "disconnect", "web", &format!("{p}b1")]);
    let inspect = w.inspect("web");
    let active: Vec<&Value> = inspect["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{inspect}");
    let s = split(&w.client, &format!("http://{vip}/"), 6);
    assert_eq!(count(&s, "b0"), 6, "{s:?}");

    // rm twice: the second is refused; the published port is free again.
    w.x.must(&["service", "rm", "web"]);
    let e = w.x.refused(&["service", "rm", "web"]);
    assert!(e.contains("web"), "{e}");
    assert_eq!(
        w.x.json(&["service", "ls"]).as_array().map(Vec::len),
        Some(0)
    );
    let out = w
        .client
        .sh(&["curl", "-s", "-m", "2", &format!("http://{vip}/")]);
    assert_ne!(out.status.code(), Some(0), "the VIP is gone");
}

#[test]
fn a_backend_that_stops_answering_is_taken_out_by_its_health_check() {
    let p = unique_prefix("svh");
    let mut w = World::new(&p, 53);
    let ips = w.backend_ips();
    let vip = w.service("web", &["--health", "tcp", "--interval", "1"]);
    for ip in &ips {
        w.x.must(&["service", "add-backend", "web", ip]);
    }
    let health = |w: &World| -> Vec<String> {
        w.inspect("web")["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["health"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(w.inspect("web")["health"], "tcp every 1s");
    // b1's server stops: within a few checks it is down, takes nothing, leaves tasks.web.
    // (pkill sees every test's processes: the log path is this test's own.)
    let b1_log = w.logs[1].to_str().unwrap().to_string();
    w.backends[1].0.must(&["pkill", "-f", &b1_log]);
    let down = wait_until(Duration::from_secs(6), || {
        health(&w) == ["up", "down", "up"]
    });
    assert!(down, "b1 not marked down: {:?}", health(&w));
    let s = split(&w.client, &format!("http://{vip}/"), 30);
    assert_eq!(
        (count(&s, "b0"), count(&s, "b1"), count(&s, "b2")),
        (15, 0, 15),
        "{s:?}"
    );
    assert_eq!(
        w.tasks("web"),
        sorted(vec![ips[0].clone(), ips[2].clone()]),
        "tasks.web leaves the down backend out"
    );
    // It answers again: back in.
    let log = w.x.dir.join("b1-again.log");
    let server = w.backends[1].0.spawn(&[
        "timeout",
        "300",
        "python3",
        script("name_server.py").to_str().unwrap(),
        "b1",
        BACKEND_PORT,
        log.to_str().unwrap(),
    ]);
    w._servers.push(server);
    let up = wait_until(Duration::from_secs(6), || health(&w) == ["up", "up", "up"]);
    assert!(up, "b1 not back: {:?}", health(&w));
    let s = split(&w.client, &format!("http://{vip}/"), 30);
    assert_eq!(count(&s, "b1"), 10, "{s:?}");
}

#[test]
fn an_idle_connection_is_reset_at_both_ends_when_its_timeout_ends_it() {
    let p = unique_prefix("svi");
    let w = World::new(&p, 54);
    let vip = w.service("web", &["--timeout", "2"]);
    w.x.must(&["service", "add-backend", "web", &w.backend_ips()[0]]);
    assert_eq!(w.inspect("web")["timeout_s"], 2);
    // A connection that says nothing: after the 2 s timeout the client is reset, not left
    // waiting (swarm's fixed IPVS timeout leaves both ends hanging: moby#31208).
    let script = format!(
        "import socket,time\n\
         s=socket.create_connection(('{vip}',80)); s.settimeout(15); t=time.time()\n\
         try:\n    d=s.recv(1); print('eof' if not d else 'data', round(time.time()-t,1))\n\
         except ConnectionResetError:\n    print('reset', round(time.time()-t,1))\n\
         except socket.timeout:\n    print('hang', round(time.time()-t,1))\n"
    );
    let out = w.client.must(&["timeout", "30", "python3", "-c", &script]);
    let mut words = out.split_whitespace();
    assert_eq!(words.next(), Some("reset"), "client: {out}");
    let after: f64 = words.next().unwrap().parse().unwrap();
    assert!((1.5..8.0).contains(&after), "reset after {after} s");
    // The backend's end is gone too.
    let ss = w.backends[0]
        .0
        .must(&["ss", "-tnH", "state", "established", "( sport = :8080 )"]);
    assert!(!ss.contains(&w.client_ip), "backend still holds it: {ss}");
}

#[test]
fn a_backend_reaches_its_own_service_even_when_given_itself() {
    let p = unique_prefix("svp");
    let w = World::new(&p, 55);
    let vip = w.service("web", &[]);
    for ip in &w.backend_ips() {
        w.x.must(&["service", "add-backend", "web", ip]);
    }
    // b0 calls its own service: one connection in three is given to b0 itself (hairpin; the
    // source becomes the VIP, as kube-proxy's masquerade of hairpin traffic does).
    let s = split(&w.backends[0].0, &format!("http://{vip}/"), 30);
    assert_eq!(count(&s, "error"), 0, "{s:?}");
    assert_eq!(
        (count(&s, "b0"), count(&s, "b1"), count(&s, "b2")),
        (10, 10, 10),
        "{s:?}"
    );
    let own = std::fs::read_to_string(&w.logs[0]).unwrap();
    assert!(
        own.lines().all(|l| l.starts_with(&format!("{vip} "))),
        "b0 saw: {own}"
    );
    let other = std::fs::read_to_string(&w.logs[1]).unwrap();
    let b0_ip = &w.backend_ips()[0];
    assert!(
        other.lines().all(|l| l.starts_with(&format!("{b0_ip} "))),
        "b1 saw: {other}"
    );
}
