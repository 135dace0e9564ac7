//! Docker end to end: xvsd serving the remote network and IPAM driver (`--docker-plugin`) to a
//! private dockerd (its own data and exec roots and socket, no iptables, no bridge), and
//! containers of a busybox image made here: two containers on an xvs network ping each other
//! by address and by name (Docker's own embedded DNS, 127.0.0.11 in the container), Docker's
//! options (--internal, enable_icc=false, mtu, --ip) become the xvs network's, xvs's IPAM
//! driver hands out addresses, `docker network rm` is refused while containers are attached
//! and removes the xvs network after, and malformed requests to the plugin socket get an Err.
//! dockerd, its containers and its directories are removed at the end, even on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xvs_tests::{Netns, Xvsd, sh, unique_prefix, veth, wait_until};

/// The 20.10 CLI (a newer one may come first on PATH).
const DOCKER: &str = "/usr/bin/docker";

/// A private dockerd; removes its containers, networks, mounts and directories on drop.
struct Dockerd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Dockerd {
    fn start() -> Dockerd {
        assert!(
            Path::new("/usr/sbin/dockerd").exists() && Path::new(DOCKER).exists(),
            "docker.io is not installed: bash tests/setup.sh installs it"
        );
        let dir = std::env::temp_dir().join(format!("xvs-docker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Dockerd { child: None, dir };
        d.spawn();
        d
    }

    /// Starts dockerd on the directory (`--live-restore`: containers outlive a restart of
    /// the daemon, as in production) and waits until it answers.
    fn spawn(&mut self) {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        let arg = |p: &str| dir.join(p).display().to_string();
        let child = Command::new("/usr/sbin/dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--live-restore",
            ])
            .args(["--data-root", &arg("data")])
            .args(["--exec-root", &arg("exec")])
            .args(["--pidfile", &arg("docker.pid")])
            .args(["-H", &format!("unix://{}", arg("docker.sock"))])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(30), || self.sh(&["version"]).0);
        assert!(up, "dockerd did not come up:\n{}", self.log());
    }

    /// Stops dockerd (SIGTERM, 20 s at most) and starts it again on the same directory.
    fn restart(&mut self) {
        self.stop_daemon();
        self.spawn();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = sh(&["kill", "-TERM", &child.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker CLI against this daemon (at most 90 s): success, stdout, stderr.
    fn sh(&self, args: &[&str]) -> (bool, String, String) {
        let host = format!("unix://{}", self.dir.join("docker.sock").display());
        let mut full = vec!["timeout", "90", DOCKER, "-H", &host];
        full.extend_from_slice(args);
        let out = sh(&full);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.sh(args);
        assert!(ok, "docker {args:?} failed: {out} {err}");
        out
    }

    /// Imports the busybox image `bb`: busybox-static in a rootfs with its applets linked.
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("no /bin/busybox: bash tests/setup.sh installs busybox-static");
        let list = sh(&["/bin/busybox", "--list"]);
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        let tar = self.dir.join("rootfs.tar");
        let (tar_s, root_s) = (tar.display().to_string(), root.display().to_string());
        xvs_tests::must(&["tar", "-C", &root_s, "-cf", &tar_s, "."]);
        self.must(&["import", "-c", "ENV PATH=/bin", &tar_s, "bb"]);
    }

    /// A container's address on its (only) network.
    fn ip_of(&self, container: &str) -> String {
        self.must(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ])
    }

    /// Whether `from` pings `to` (one echo, 2 s), retried for a few seconds.
    fn pings(&self, from: &str, to: &str) -> bool {
        wait_until(Duration::from_secs(8), || {
            self.sh(&["exec", from, "ping", "-c", "1", "-W", "2", to]).0
        })
    }

    /// Whether `from` pings `to` (three echoes, none answered).
    fn blocked(&self, from: &str, to: &str) -> bool {
        !self.sh(&["exec", from, "ping", "-c", "3", "-W", "1", to]).0
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- dockerd log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        let (_, ids, _) = self.sh(&["ps", "-aq"]);
        for id in ids.split_whitespace() {
            let _ = self.sh(&["rm", "-f", id]);
        }
        let (_, nets, _) = self.sh(&["network", "ls", "-q", "--filter", "type=custom"]);
        for n in nets.split_whitespace() {
            let _ = self.sh(&["network", "rm", n]);
        }
        self.stop_daemon();
        // The containerd dockerd started, if it outlived dockerd.
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(pidfile) {
            let _ = sh(&["kill", "-KILL", pid.trim()]);
        }
        // Mounts left under the roots (overlays, namespace files), deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = sh(&["umount", "-l", m]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The xvs network Docker network `id` became.
fn xvs_network(x: &Xvsd, id: &str) -> Option<Value> {
    let nets = x.json(&["network", "ls"]);
    nets.as_array()
        .unwrap()
        .iter()
        .find(|n| n["docker_id"] == id)
        .cloned()
}

/// The names of xvs's networks.
fn xvs_names(x: &Xvsd) -> Vec<String> {
    let nets = x.json(&["network", "ls"]);
    nets.as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// POSTs `body` to the plugin socket: HTTP status and answer.
fn plugin_post(socket: &Path, call: &str, body: &str) -> (String, Value) {
    let out = sh(&[
        "curl",
        "-s",
        "-m",
        "10",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
        &socket.display().to_string(),
        "-H",
        "Content-Type: application/vnd.docker.plugins.v1+json",
        "-d",
        body,
        &format!("http://plugin/{call}"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (
        status.to_string(),
        serde_json::from_str(answer).unwrap_or(Value::Null),
    )
}

#[test]
fn docker_networks_through_the_xvs_plugin() {
    let plugin = unique_prefix("xvst");
    let socket = PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    // Declared first, dropped last: dockerd and its containers go before xvsd.
    let mut x = Xvsd::start(&["--docker-plugin", "--docker-plugin-name", &plugin]);
    assert!(socket.exists(), "no plugin socket at {}", socket.display());
    let mut d = Dockerd::start();
    d.import_busybox();

    // A network: Docker's ID kept in xvs's network, which is an ordinary xvs network.
    let id = d.must(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--subnet",
        "10.170.0.0/24",
        "net1",
    ]);
    let net = xvs_network(&x, &id).expect("xvsctl network ls does not show Docker's network");
    assert_eq!(net["subnet"], "10.170.0.0/24");
    assert_eq!(net["gateway"], "10.170.0.1");
    let name = net["name"].as_str().unwrap().to_string();
    assert_eq!(name, id[..12]);
    assert!(
        x.must(&["network", "ls"])
            .contains(&format!("docker={}", &id[..12]))
    );

    // Two containers: by address, by name (Docker's DNS), the gateway (xvs's).
    for c in ["c1", "c2"] {
        d.must(&[
            "run",
            "-d",
            "--name",
            c,
            "--network",
            "net1",
            "bb",
            "sleep",
            "300",
        ]);
    }
    let (ip1, ip2) = (d.ip_of("c1"), d.ip_of("c2"));
    let eps = x.json(&["network", "inspect", &name])["endpoints"].clone();
    let eps = eps.as_array().unwrap().clone();
    assert_eq!(eps.len(), 2, "{eps:?}");
    for (ep, ip) in eps.iter().zip([&ip1, &ip2]) {
        assert_eq!(ep["port_type"], "host-veth");
        assert_eq!(ep["address"], format!("{ip}/24"));
        assert!(ep["sandbox"].as_str().unwrap().starts_with("docker:"));
    }
    let link = d.must(&["exec", "c1", "ip", "link", "show", "eth0"]);
    assert!(link.contains(eps[0]["mac"].as_str().unwrap()), "{link}");
    assert!(d.pings("c1", &ip2), "c1 does not reach c2 at {ip2}");
    assert!(d.pings("c2", &ip1), "c2 does not reach c1 at {ip1}");
    assert!(d.pings("c1", "c2"), "c1 does not reach c2 by name");
    assert!(
        d.pings("c1", "10.170.0.1"),
        "c1 does not reach xvs's gateway"
    );
    let resolv = d.must(&["exec", "c1", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("127.0.0.11"), "{resolv}");

    // xvsd restarted: it re-adopts the containers' veths from its state file.
    x.restart();
    assert!(socket.exists(), "no plugin socket after a restart");
    assert!(
        d.pings("c1", &ip2),
        "c1 does not reach c2 after xvsd restarted"
    );
    assert_eq!(
        x.json(&["network", "inspect", &name])["endpoints"],
        json!(eps)
    );

    // dockerd restarted (live-restore): the containers keep their addresses and endpoints,
    // and traffic goes on.
    d.restart();
    assert_eq!((d.ip_of("c1"), d.ip_of("c2")), (ip1.clone(), ip2.clone()));
    assert!(
        d.pings("c1", &ip2),
        "c1 does not reach c2 after dockerd restarted"
    );
    assert_eq!(
        x.json(&["network", "inspect", &name])["endpoints"],
        json!(eps),
        "dockerd's restart changed xvs's endpoints"
    );

    // Docker's options become xvs's; --ip on run.
    let id2 = d.must(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--subnet",
        "10.170.1.0/24",
        "--internal",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "-o",
        "mtu=1400",
        "net2",
    ]);
    let net2 = xvs_network(&x, &id2).unwrap();
    assert_eq!(net2["internal"], true);
    assert_eq!(net2["icc"], false);
    assert_eq!(net2["mtu"], 1400);
    d.must(&[
        "run",
        "-d",
        "--name",
        "c3",
        "--network",
        "net2",
        "--ip",
        "10.170.1.50",
        "bb",
        "sleep",
        "300",
    ]);
    d.must(&[
        "run",
        "-d",
        "--name",
        "c4",
        "--network",
        "net2",
        "bb",
        "sleep",
        "300",
    ]);
    assert_eq!(d.ip_of("c3"), "10.170.1.50");
    let mtu = d.must(&["exec", "c3", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu, "1400");
    assert!(d.pings("c3", "10.170.1.1"), "c3 does not reach its gateway");
    assert!(d.blocked("c3", &d.ip_of("c4")), "icc=false let c3 reach c4");

    // xvs's IPAM driver.
    let id3 = d.must(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--subnet",
        "10.170.2.0/24",
        "net3",
    ]);
    let net3 = xvs_network(&x, &id3).unwrap();
    assert_eq!(net3["gateway"], "10.170.2.1");
    d.must(&[
        "run",
        "-d",
        "--name",
        "c5",
        "--network",
        "net3",
        "bb",
        "sleep",
        "300",
    ]);
    assert_eq!(d.ip_of("c5"), "10.170.2.2");
    // Started at once (as `docker compose up` does): xvs's IPAM gives each its own address.
    std::thread::scope(|s| {
        for c in ["c7", "c8"] {
            let d = &d;
            s.spawn(move || {
                d.must(&[
                    "run",
                    "-d",
                    "--name",
                    c,
                    "--network",
                    "net3",
                    "bb",
                    "sleep",
                    "300",
                ])
            });
        }
    });
    let (ip7, ip8) = (d.ip_of("c7"), d.ip_of("c8"));
    assert_ne!(ip7, ip8, "two containers started at once got one address");
    assert!(d.pings("c7", &ip8), "c7 does not reach c8");
    d.must(&["rm", "-f", "c7", "c8"]);
    assert!(d.pings("c5", "10.170.2.1"), "c5 does not reach its gateway");

    // A running container joins a second xvs network and leaves it.
    d.must(&["network", "connect", "net3", "c1"]);
    let links = d.must(&["exec", "c1", "ip", "-o", "addr", "show"]);
    assert!(
        links.contains("10.170.2."),
        "c1 has no address on net3: {links}"
    );
    assert!(
        d.pings("c1", "10.170.2.2"),
        "c1 does not reach c5 over net3"
    );
    let n3 = net3["name"].as_str().unwrap().to_string();
    let count = |x: &Xvsd| {
        x.json(&["network", "inspect", &n3])["endpoints"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count(&x), 2);
    d.must(&["network", "disconnect", "net3", "c1"]);
    assert_eq!(count(&x), 1, "c1's net3 endpoint is gone");
    let links = d.must(&["exec", "c1", "ip", "-o", "addr", "show"]);
    assert!(!links.contains("10.170.2."), "c1 kept net3: {links}");
    assert!(d.pings("c1", &ip2), "c1 lost net1 when it left net3");
    // Connect latency through the plugin, as a user waits for it: `docker network connect`
    // of a running container, 50 times (each followed by a disconnect, not timed).
    let mut took: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            d.must(&["network", "connect", "net3", "c1"]);
            let t = t.elapsed();
            d.must(&["network", "disconnect", "net3", "c1"]);
            t
        })
        .collect();
    took.sort();
    eprintln!(
        "docker network connect through xvs: p50 {:.0} ms, p99 {:.0} ms (50 runs)",
        took[24].as_secs_f64() * 1e3,
        took[49].as_secs_f64() * 1e3
    );
    assert_eq!(count(&x), 1, "connect/disconnect left endpoints behind");

    // `-p` arrives in CreateEndpoint and becomes the endpoint's published port in xvs,
    // reached from an outside namespace through xvs's uplink (on a veth of the test's own);
    // the container's server sees the outside's own address.
    let outside = Netns::new(&format!("{plugin}o"));
    let up_if = format!("{}u", &plugin[..plugin.len().min(13)]);
    let _up = veth(&up_if, &outside, "eth0", "198.18.70.2/24");
    x.must(&["uplink", "set", &up_if, "--ip", "198.18.70.9/24"]);
    d.must(&[
        "run",
        "-d",
        "--name",
        "c6",
        "--network",
        "net3",
        "-p",
        "8080:80",
        "bb",
        "sh",
        "-c",
        "mkdir /w && echo hello > /w/index.html && exec httpd -f -vv -p 80 -h /w",
    ]);
    let mut body = String::new();
    let answered = wait_until(Duration::from_secs(10), || {
        let out = outside.sh(&["curl", "-s", "-m", "2", "http://198.18.70.9:8080/"]);
        body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        body == "hello"
    });
    assert!(
        answered,
        "published port from outside: {body:?}\n{}",
        x.log()
    );
    let (_, out, err) = d.sh(&["logs", "c6"]);
    assert!(
        format!("{out}{err}").contains("198.18.70.2"),
        "c6's server did not see the outside's address: {out}{err}"
    );
    let eps3 = x.json(&["network", "inspect", net3["name"].as_str().unwrap()])["endpoints"].clone();
    let published: Vec<&Value> = eps3
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["publish"].as_array().unwrap())
        .collect();
    assert_eq!(published, vec!["0.0.0.0:8080->80/tcp"], "{eps3}");
    d.must(&["rm", "-f", "c6"]);

    // `-o driver=overlay`: an overlay network (a VNI, the VTEP on the uplink's address), its
    // containers reaching each other on this host.
    x.must(&["vtep", "set", "--local", "198.18.70.9"]);
    let ov_id = d.must(&[
        "network",
        "create",
        "-d",
        &plugin,
        "-o",
        "driver=overlay",
        "--subnet",
        "10.170.5.0/24",
        "ovnet",
    ]);
    let ov = xvs_network(&x, &ov_id).unwrap();
    assert_eq!(ov["driver"], "overlay", "{ov}");
    assert!(ov["vni"].as_u64().is_some(), "{ov}");
    for c in ["c9", "c10"] {
        d.must(&[
            "run",
            "-d",
            "--name",
            c,
            "--network",
            "ovnet",
            "bb",
            "sleep",
            "300",
        ]);
    }
    let ip10 = d.ip_of("c10");
    assert!(d.pings("c9", &ip10), "c9 does not reach c10 on the overlay");
    assert!(
        d.pings("c9", "10.170.5.1"),
        "c9 does not reach the overlay's gateway"
    );
    d.must(&["rm", "-f", "c9", "c10"]);
    d.must(&["network", "rm", "ovnet"]);
    assert!(xvs_network(&x, &ov_id).is_none());
    x.must(&["uplink", "del"]);
    let eps3 = x.json(&["network", "inspect", net3["name"].as_str().unwrap()])["endpoints"].clone();
    assert_eq!(eps3.as_array().unwrap().len(), 1, "{eps3}");

    // Refused while containers are attached; removed from xvs after.
    let (ok, _, err) = d.sh(&["network", "rm", "net1"]);
    assert!(!ok && err.contains("active endpoints"), "{err}");
    assert!(xvs_network(&x, &id).is_some());
    let ports: Vec<String> = eps
        .iter()
        .map(|e| e["port"].as_str().unwrap().to_string())
        .collect();
    d.must(&["rm", "-f", "c1", "c2"]);
    d.must(&["network", "rm", "net1"]);
    assert!(xvs_network(&x, &id).is_none(), "xvs still has net1");
    for p in &ports {
        assert!(
            !Path::new("/sys/class/net").join(p).exists(),
            "endpoint veth {p} left behind"
        );
    }

    // Malformed and unknown requests straight to the plugin: an Err, nothing changed.
    let before = xvs_names(&x);
    let (status, answer) =
        plugin_post(&socket, "NetworkDriver.CreateNetwork", r#"{"NetworkID": 5"#);
    assert_eq!(status, "400");
    let err = answer["Err"].as_str().unwrap_or_default();
    assert!(
        err.contains("malformed NetworkDriver.CreateNetwork"),
        "{answer}"
    );
    let (status, answer) = plugin_post(&socket, "NetworkDriver.Frobnicate", "{}");
    assert_eq!(status, "400");
    assert!(
        answer["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("Frobnicate")
    );
    let (status, answer) = plugin_post(
        &socket,
        "NetworkDriver.CreateNetwork",
        r#"{"NetworkID":"abc","Options":{"com.docker.network.generic":{"colour":"blue"}},"IPv4Data":[],"IPv6Data":[]}"#,
    );
    assert_eq!(status, "200");
    assert!(
        answer["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{answer}"
    );
    assert_eq!(xvs_names(&x), before);
    let (status, answer) = plugin_post(&socket, "Plugin.Activate", "");
    assert_eq!(status, "200");
    assert_eq!(answer["Implements"][0], "NetworkDriver");

    d.must(&["rm", "-f", "c3", "c4", "c5"]);
    d.must(&["network", "rm", "net2", "net3"]);
    assert!(xvs_names(&x).is_empty());
    assert!(x.stop(), "xvsd did not stop cleanly:\n{}", x.log());
}
