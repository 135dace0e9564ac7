//! The end-to-end harness: real `xvsd` and `xvsctl` binaries, real namespaces, veths and TAPs,
//! real clients (ping, iperf3, dig, scapy). Everything a test makes carries a unique prefix and
//! is removed by Drop guards, even when the test fails.
//!
//! The binaries come from `target/release` (built by `tests/run.sh`), or `$XVS_BIN_DIR`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where xvsd and xvsctl are.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("XVS_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"),
    }
}

/// A short prefix unique to this process and call: namespaces and devices (≤ 15 characters
/// with what follows) of parallel tests never collide.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("{tag}{:03x}{n:x}", pid & 0xfff)
}

/// Runs a command and returns its output; never panics on failure.
pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A named network namespace, deleted (with every process in it) on drop.
pub struct Netns {
    /// Its name, as `ip netns` knows it.
    pub name: String,
}

impl Netns {
    /// Creates the namespace with `lo` up.
    pub fn new(name: &str) -> Netns {
        must(&["ip", "netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.must(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside.
    pub fn sh(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside that must succeed.
    pub fn must(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Starts a command inside, in the background, output discarded.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.spawn_with(args, Stdio::null())
    }

    /// Starts a command inside, in the background, its stderr kept for `wait_with_output`.
    pub fn spawn_logged(&self, args: &[&str]) -> Child {
        self.spawn_with(args, Stdio::piped())
    }

    fn spawn_with(&self, args: &[&str], stderr: Stdio) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// Whether `count` pings to `ip` all come back (0.2 s apart, 1 s deadline each).
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        let c = count.to_string();
        self.sh(&["ping", "-c", &c, "-i", "0.2", "-W", "1", "-q", ip])
            .status
            .success()
    }

    /// Whether `ip` answers within `timeout` (retries single pings; the first may need ARP).
    pub fn reaches(&self, ip: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.sh(&["ping", "-c", "1", "-W", "1", "-q", ip])
                .status
                .success()
        })
    }

    /// Whether nothing answers: `count` pings with 0.3 s deadline each all lost.
    pub fn unreachable(&self, ip: &str) -> bool {
        !self
            .sh(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", ip])
            .status
            .success()
    }

    /// A bounded iperf3 TCP run (`secs` seconds) from this namespace to an `iperf3 -s -1`
    /// started in `server` at `ip`; it must complete. Returns bits/s received. Runs of one
    /// test binary go one at a time: its tests run in parallel on two cores, where several
    /// bulk transfers beside busy-polling workers starved each other into TCP collapse (a
    /// 13-24 Mbit/s overlay run that gives 1 Gbit/s alone).
    pub fn iperf3_to(&self, server: &Netns, ip: &str, secs: u32) -> f64 {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = server.spawn(&["iperf3", "-s", "-1"]);
        let listening = wait_until(Duration::from_secs(5), || {
            String::from_utf8_lossy(&server.sh(&["ss", "-ltn"]).stdout).contains(":5201")
        });
        let out = listening.then(|| {
            self.sh(&[
                "timeout",
                "30",
                "iperf3",
                "-c",
                ip,
                "-t",
                &secs.to_string(),
                "-J",
            ])
        });
        let _ = child.kill();
        let _ = child.wait();
        let out = out.unwrap_or_else(|| panic!("iperf3 server did not start in {}", server.name));
        assert!(
            out.status.success(),
            "iperf3 {} -> {ip} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stdout)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J printed no JSON");
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("no bits_per_second in iperf3's report")
    }

    /// `dig +short` for `name` at `server` (over TCP if `tcp`): the answer, or "" for none.
    pub fn dig(&self, server: &str, name: &str, tcp: bool) -> String {
        let at = format!("@{server}");
        let mut args = vec!["dig", "+short", "+time=2", "+tries=2", &at, name];
        if tcp {
            args.push("+tcp");
        }
        String::from_utf8_lossy(&self.sh(&args).stdout)
            .trim()
            .to_string()
    }

    /// The MAC of `dev` inside.
    pub fn mac(&self, dev: &str) -> String {
        self.must(&["cat", &format!("/sys/class/net/{dev}/address")])
            .trim()
            .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = sh(&["ip", "netns", "pids", &self.name]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = sh(&["kill", "-KILL", pid]);
        }
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A host-side interface removed on drop (a veth's host end, a TAP).
pub struct Link(pub String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.0]);
    }
}

/// A veth pair between two namespaces: `a_if` in `a` (with `a_addr` if given) and `b_if` in
/// `b` with `b_addr`, both up, tx checksum offload off on both (TESTBED.md: frames an AF_XDP
/// socket receives must carry full checksums). Deleted with either namespace.
pub fn veth_between(
    a: &Netns,
    a_if: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) {
    must(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    if let Some(addr) = a_addr {
        a.must(&["ip", "addr", "add", addr, "dev", a_if]);
    }
    b.must(&["ip", "addr", "add", b_addr, "dev", b_if]);
    for (ns, dev) in [(a, a_if), (b, b_if)] {
        ns.must(&["ip", "link", "set", dev, "up"]);
        ns.must(&["ethtool", "-K", dev, "tx", "off"]);
    }
}

/// A veth pair: `host` stays in the root namespace (up, for a switch port); the peer becomes
/// `ifname` in `ns` with `addr` (CIDR), up, tx checksum offload off (TESTBED.md).
pub fn veth(host: &str, ns: &Netns, ifname: &str, addr: &str) -> Link {
    must(&[
        "ip", "link", "add", host, "type", "veth", "peer", "name", ifname, "netns", &ns.name,
    ]);
    let link = Link(host.into());
    must(&["ip", "link", "set", host, "up"]);
    ns.must(&["ip", "addr", "add", addr, "dev", ifname]);
    ns.must(&["ip", "link", "set", ifname, "up"]);
    ns.must(&["ethtool", "-K", ifname, "tx", "off"]);
    link
}

/// An underlay for hosts (overlay and cluster tests): a Linux bridge `br0` in a namespace of its own; hosts hang off it by veths.
/// Test N uses 198.18.N.0/24.
pub struct Underlay {
    /// Its namespace.
    pub ns: Netns,
    n: u8,
    mtu: u32,
}

impl Underlay {
    pub fn new(p: &str, n: u8, mtu: u32) -> Underlay {
        let ns = Netns::new(&format!("{p}u"));
        ns.must(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.must(&["ip", "link", "set", "br0", "up"]);
        // A plain wire: br_netfilter (built in here) would otherwise check the IPv4 header
        // of what the bridge forwards and drop the storm's bad checksums before xvs sees them.
        for family in ["iptables", "ip6tables", "arptables"] {
            ns.must(&[
                "sysctl",
                "-qw",
                &format!("net.bridge.bridge-nf-call-{family}=0"),
            ]);
        }
        Underlay { ns, n, mtu }
    }

    /// 198.18.N.`host`.
    pub fn ip(&self, host: u8) -> String {
        format!("198.18.{}.{host}", self.n)
    }

    /// A veth from `host` (as `ul0`, with the host's own address 198.18.N.`addr`/24) to the
    /// bridge (as `to{tag}`); tx checksum offload off on both ends (xvs reads `ul0` with AF_XDP,
    /// and the kernel hosts' frames cross the bridge on their way to it).
    pub fn attach(&self, host: &Netns, tag: &str, addr: u8) {
        let tag = &format!("to{tag}");
        must(&[
            "ip",
            "link",
            "add",
            "ul0",
            "netns",
            &host.name,
            "type",
            "veth",
            "peer",
            "name",
            tag,
            "netns",
            &self.ns.name,
        ]);
        let mtu = self.mtu.to_string();
        host.must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.ip(addr)),
            "dev",
            "ul0",
        ]);
        host.must(&["ip", "link", "set", "ul0", "mtu", &mtu, "up"]);
        self.ns.must(&[
            "ip", "link", "set", "dev", tag, "mtu", &mtu, "master", "br0", "up",
        ]);
        host.must(&["ethtool", "-K", "ul0", "tx", "off"]);
        self.ns.must(&["ethtool", "-K", tag, "tx", "off"]);
    }
}

/// A running xvsd with its own socket and state directory.
pub struct Xvsd {
    child: Option<Child>,
    /// Scratch directory: socket, state, log.
    pub dir: PathBuf,
    /// Extra daemon arguments, kept for restarts.
    args: Vec<String>,
    restarts: u32,
    /// The namespace it runs in (standing for the host), if not the test's own.
    netns: Option<String>,
}

impl Xvsd {
    /// Starts xvsd with `--workers 1` (or `XVS_TEST_WORKERS`: the suite's second pass runs
    /// with 2) unless `args` say otherwise, and waits for its socket.
    pub fn start(args: &[&str]) -> Xvsd {
        Xvsd::launch(None, args)
    }

    /// Starts xvsd inside `ns` (a namespace standing for the host, so the test owns every
    /// interface xvsd sees), as [`Xvsd::start`] does.
    pub fn start_in(ns: &Netns, args: &[&str]) -> Xvsd {
        Xvsd::launch(Some(ns.name.clone()), args)
    }

    fn launch(netns: Option<String>, args: &[&str]) -> Xvsd {
        // The full pid: unlike device names, this path has room to never collide.
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xvsd-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut x = Xvsd {
            child: None,
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            restarts: 0,
            netns,
        };
        x.spawn();
        x
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("xvsd.sock")
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let log =
            std::fs::File::create(self.dir.join(format!("xvsd.{}.log", self.restarts))).unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs xvsd: the child's pid is xvsd's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin_dir().join("xvsd"));
                c
            }
            None => Command::new(bin_dir().join("xvsd")),
        };
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--log-level")
            .arg("debug");
        if !self.args.iter().any(|a| a == "--workers") {
            cmd.args(["--workers", &default_workers()]);
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(
            cmd.spawn()
                .expect("cannot start xvsd (built? tests/run.sh builds it)"),
        );
        let ok = wait_until(Duration::from_secs(10), || {
            self.ctl(&["ping"]).status.success()
        });
        assert!(ok, "xvsd did not come up:\n{}", self.log());
        self.restarts += 1;
    }

    /// Runs xvsctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("xvsctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run xvsctl")
    }

    /// Runs xvsctl; it must succeed; returns stdout.
    pub fn must(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "xvsctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs xvsctl with `--json`; it must succeed; returns the parsed reply.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.must(&a)).expect("xvsctl --json printed no JSON")
    }

    /// Runs xvsctl; xvsd must refuse it: exit status 1 and one line on stderr, which is
    /// returned.
    pub fn refused(&self, args: &[&str]) -> String {
        self.refused_with(1, args)
    }

    /// Runs xvsctl; it must exit with `code` (1: refused by xvsd, 2: a malformed command line)
    /// and one line on stderr, which is returned.
    pub fn refused_with(&self, code: i32, args: &[&str]) -> String {
        let out = self.ctl(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "xvsctl {args:?} should have exited {code}: {err:?}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
        err.trim_end().to_string()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits; returns whether it exited with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = sh(&["kill", "-TERM", &child.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same state directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again after a [`Xvsd::kill_hard`].
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Everything the daemon logged, all runs.
    pub fn log(&self) -> String {
        (0..=self.restarts)
            .filter_map(|i| std::fs::read_to_string(self.dir.join(format!("xvsd.{i}.log"))).ok())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

/// A drop counter ("stage/reason") from `stats --json` (reasons' names repeat across stages:
/// conntrack and vxlan both have `fragment`); every reason is listed, zeros included.
pub fn stage_drops(stats: &Value, stage: &str, reason: &str) -> u64 {
    stats["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["stage"] == stage && d["reason"] == reason)
        .and_then(|d| d["count"].as_u64())
        .unwrap_or_else(|| panic!("no drop reason {stage}/{reason} in {stats}"))
}

impl Xvsd {
    /// A drop counter of this xvsd's `stats` ("stage/reason").
    pub fn drops(&self, stage: &str, reason: &str) -> u64 {
        stage_drops(&self.json(&["stats"]), stage, reason)
    }

    /// The workers' frame pools whose frames are not all free, in a port or in a stage (a
    /// leak, or a double free), as `stats` reports them; empty when every frame is accounted.
    pub fn unaccounted_pools(&self) -> Vec<Value> {
        let out = self.ctl(&["stats", "--json"]);
        let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
            return Vec::new();
        };
        v["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["unaccounted"].as_i64() != Some(0))
            .cloned()
            .collect()
    }
}

impl Drop for Xvsd {
    /// Every test's last check: each worker's pool accounted for (while xvsd still runs),
    /// then xvsd stopped and its directory removed.
    fn drop(&mut self) {
        let leaks = if self.child.is_some() && !std::thread::panicking() {
            self.unaccounted_pools()
        } else {
            Vec::new()
        };
        self.stop();
        if !leaks.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
            panic!("frames unaccounted in xvsd's pools at the end of the test: {leaks:?}");
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- xvsd log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs xvsd in `ns` on state dir `state` with `args`; it must exit (not come up) within
/// 15 s. Returns its exit code and what it printed on stderr.
pub fn start_fails(ns: &Netns, state: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    std::fs::create_dir_all(state).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin_dir().join("xvsd"))
        .arg("--socket")
        .arg(state.join("refused.sock"))
        .arg("--state-dir")
        .arg(state)
        .args(["--workers", "1"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(15), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "xvsd {args:?} did not exit");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A helper script in tests/scripts.
pub fn script(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// `n` HTTP requests to `url` from `ns`, each on a new connection (tests/scripts/vip_client.py):
/// how many each backend (by the name its tests/scripts/name_server.py answers) served.
pub fn split(ns: &Netns, url: &str, n: u32) -> std::collections::HashMap<String, u64> {
    let out = ns.must(&[
        "timeout",
        "120",
        "python3",
        script("vip_client.py").to_str().unwrap(),
        url,
        &n.to_string(),
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), c.as_u64().unwrap()))
        .collect()
}

/// An endpoint's address without its prefix length, from `network connect --json`.
pub fn endpoint_ip(ep: &Value) -> String {
    let cidr = ep["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {ep}"));
    cidr.split('/').next().unwrap().to_string()
}

/// Host-side interfaces xvsd made for endpoints (`xvs` + 10 hex digits).
pub fn endpoint_links() -> Vec<String> {
    must(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n.len() == 13 && n.starts_with("xvs"))
        .collect()
}

/// A counter from `xvsctl stats --json`: a port's (`rx_packets`, ...) or a drop reason's.
pub fn drop_count(stats: &Value, reason: &str) -> u64 {
    stats["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == reason)
        .and_then(|d| d["count"].as_u64())
        .unwrap_or_else(|| panic!("no drop reason {reason} in {stats}"))
}

/// A bridge with `n` namespaces on it: namespace i has `{addr_prefix}.{i+1}/24` on eth0; its
/// host end is a port of the bridge (AF_XDP unless `add_port_args` say otherwise).
pub struct Topology {
    /// The namespaces, in order.
    pub ns: Vec<Netns>,
    /// Host ends.
    pub ports: Vec<String>,
    /// Addresses, without prefix length.
    pub ips: Vec<String>,
    _links: Vec<Link>,
}

impl Topology {
    /// Builds `n` veth-connected namespaces and attaches them to `bridge` (which must exist).
    pub fn veths(x: &Xvsd, bridge: &str, prefix: &str, net: &str, n: usize) -> Topology {
        let mut t = Topology {
            ns: Vec::new(),
            ports: Vec::new(),
            ips: Vec::new(),
            _links: Vec::new(),
        };
        for i in 0..n {
            let ns = Netns::new(&format!("{prefix}n{i}"));
            let host = format!("{prefix}p{i}");
            let ip = format!("{net}.{}", i + 1);
            t._links.push(veth(&host, &ns, "eth0", &format!("{ip}/24")));
            x.must(&["add-port", bridge, &host]);
            t.ns.push(ns);
            t.ports.push(host);
            t.ips.push(ip);
        }
        t
    }
}

/// The worker count xvsd starts with when a test does not say: `XVS_TEST_WORKERS`, else 1.
pub fn default_workers() -> String {
    std::env::var("XVS_TEST_WORKERS")
        .ok()
        .filter(|w| w.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n)))
        .unwrap_or_else(|| "1".to_string())
}
