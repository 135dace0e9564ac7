//! The real port backends against the kernel: two AF_XDP ports (and two TAP ports) bridged
//! by a tiny forwarding loop while `ping` runs between two network namespaces.
//!
//! Needs root (CI runs as root). Every namespace and link is named with a per-run prefix and
//! removed by a guard, even when an assertion fails.
#![allow(clippy::unwrap_used)]

use std::os::fd::RawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xvs_switch::frame::FramePool;
use xvs_switch::port::afxdp::{self, AfxdpPort};
use xvs_switch::port::tap::TapPort;
use xvs_switch::port::{Burst, PortError, PortIo, XdpMode};

/// The AF_XDP tests of this binary run one at a time: a queue whose socket was just closed
/// stays busy (EBUSY) a while in the kernel, longer when another test's sockets come and go.
static AFXDP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs a command, panicking with its stderr when it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command, ignoring failure (cleanup).
fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Names for one test: `xt<pid><tag>` plus a suffix stays under 15 characters.
fn prefix(tag: &str) -> String {
    format!("xt{}{tag}", std::process::id() % 1_000_000)
}

/// Deletes the namespaces and root-side links it lists when dropped.
struct Topology {
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Topology {
    fn new() -> Topology {
        Topology {
            namespaces: Vec::new(),
            links: Vec::new(),
        }
    }

    fn netns(&mut self, name: &str) {
        self.namespaces.push(name.to_string());
        run(&["ip", "netns", "add", name]);
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// Gives `dev` (already in `ns`) an address, takes tx checksum offload off, sets it up.
    fn address(&self, ns: &str, dev: &str, addr: &str) {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        run(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    /// A veth with `root` in the root namespace and `inner` in `ns`, `queues` queues each way.
    fn veth(&mut self, root: &str, inner: &str, ns: &str, addr: &str, queues: u32) {
        self.links.push(root.to_string());
        let q = queues.to_string();
        run(&[
            "ip",
            "link",
            "add",
            root,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            inner,
            "netns",
            ns,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        run(&["ip", "link", "set", root, "up"]);
        self.address(ns, inner, addr);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            run_quiet(&["ip", "netns", "del", ns]);
        }
        for link in &self.links {
            run_quiet(&["ip", "link", "del", link]);
        }
    }
}

/// Kills a child process when dropped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ping(ns: &str, dst: &str) -> Reap {
    Reap(
        Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-c", "3", "-W", "1", "-i", "0.2", dst,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Forwards every frame between `a` and `b` until `child` exits (or `limit` passes);
/// returns whether it exited successfully and the frames forwarded.
fn forward(
    pool: &mut FramePool,
    a: &mut dyn PortIo,
    b: &mut dyn PortIo,
    child: &mut Reap,
    limit: Duration,
) -> (bool, u64) {
    let deadline = Instant::now() + limit;
    let mut burst = Burst::new();
    let mut forwarded = 0u64;
    let mut fds: Vec<RawFd> = Vec::new();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            if !status.success() {
                let out = child.0.stdout.take().map(std::io::read_to_string);
                eprintln!("ping failed: {out:?}");
            }
            return (status.success(), forwarded);
        }
        if Instant::now() >= deadline {
            return (false, forwarded);
        }
        let mut work = 0;
        for dir in 0..2 {
            let (rx, tx): (&mut dyn PortIo, &mut dyn PortIo) = if dir == 0 {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            let n = rx.rx_burst(pool, &mut burst);
            if n > 0 {
                work += n;
                let out = tx.tx_burst(pool, &mut burst);
                forwarded += u64::from(out.sent);
            }
        }
        let busy = a.maintain(pool) | b.maintain(pool);
        if work == 0 && !busy {
            fds.clear();
            a.poll_fds(&mut fds);
            b.poll_fds(&mut fds);
            let mut pfds: Vec<libc::pollfd> = fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `pfds` is a valid array of pollfd for the duration of the call.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 5) };
        }
    }
}

#[test]
fn afxdp_ports_forward_ping_between_namespaces() {
    let _one_at_a_time = AFXDP.lock().unwrap_or_else(|e| e.into_inner());
    let p = prefix("x");
    let (nsa, nsb) = (format!("{p}na"), format!("{p}nb"));
    let (ra, rb) = (format!("{p}a0"), format!("{p}b0"));
    let mut topo = Topology::new();
    topo.netns(&nsa);
    topo.netns(&nsb);
    topo.veth(&ra, &format!("{p}a1"), &nsa, "198.18.0.1/24", 1);
    // Two active queues: the port must bind both.
    topo.veth(&rb, &format!("{p}b1"), &nsb, "198.18.0.2/24", 2);

    let mut pool =
        xvs_switch::umem::new_pool(afxdp::suggested_pool_frames(2), afxdp::RING_SIZE).unwrap();
    let whole = pool.capacity() as usize;

    for mode in [XdpMode::Auto, XdpMode::Generic] {
        let mut a = AfxdpPort::open(&ra, mode, &mut pool).unwrap();
        let mut b = AfxdpPort::open(&rb, mode, &mut pool).unwrap();
        let want = if mode == XdpMode::Generic {
            "generic"
        } else {
            "native"
        };
        assert_eq!(a.info().mode, want);
        assert_eq!(a.info().queues, 1);
        assert_eq!(b.info().queues, 2);
        assert!(a.frames_lent() > 0, "fill ring not filled");
        assert!(pool.available() >= afxdp::POOL_RESERVE);
        let mut fds = Vec::new();
        a.poll_fds(&mut fds);
        assert_eq!(fds.len(), 1);

        let mut child = ping(&nsa, "198.18.0.2");
        let (ok, forwarded) = forward(
            &mut pool,
            &mut a,
            &mut b,
            &mut child,
            Duration::from_secs(8),
        );
        assert!(ok, "ping through AF_XDP ports ({mode}) failed");
        assert!(forwarded >= 6, "only {forwarded} frames forwarded");
        let stats = a.backend_stats();
        assert_eq!(stats.invalid_descs, 0);
        assert_eq!(a.bad_descs() + b.bad_descs(), 0);

        a.detach(&mut pool);
        b.detach(&mut pool);
        drop((a, b));
        assert_eq!(pool.available(), whole, "frames leaked by detach ({mode})");
    }
    afxdp::release_umem(&pool);
}

#[test]
fn tap_ports_forward_ping_between_namespaces() {
    let p = prefix("t");
    let (nsa, nsb) = (format!("{p}na"), format!("{p}nb"));
    let (ta, tb) = (format!("{p}a"), format!("{p}b"));
    let mut topo = Topology::new();
    topo.netns(&nsa);
    topo.netns(&nsb);

    let mut pool = FramePool::new_heap(1024).unwrap();
    let mut a = TapPort::open(&ta).unwrap();
    let mut b = TapPort::open(&tb).unwrap();
    assert_eq!(a.info().mode, "vnet-hdr");
    for (dev, ns, addr) in [(&ta, &nsa, "198.18.1.1/24"), (&tb, &nsb, "198.18.1.2/24")] {
        run(&["ip", "link", "set", dev, "netns", ns]);
        topo.address(ns, dev, addr);
    }

    let mut child = ping(&nsa, "198.18.1.2");
    let (ok, forwarded) = forward(
        &mut pool,
        &mut a,
        &mut b,
        &mut child,
        Duration::from_secs(8),
    );
    assert!(ok, "ping through TAP ports failed");
    assert!(forwarded >= 6, "only {forwarded} frames forwarded");
    assert_eq!(pool.available(), 1024, "TAP ports must not hold frames");

    // Deleting the namespace destroys the TAP: the port notices and goes quiet.
    run(&["ip", "netns", "del", &nsb]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut burst = Burst::new();
    while !b.is_gone() && Instant::now() < deadline {
        // Frames already queued before the device went (a late reply, an IPv6 router
        // solicitation) may still be read; what matters is that reading ends cleanly.
        b.rx_burst(&mut pool, &mut burst);
        for f in burst.drain(..) {
            pool.free(f);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        b.is_gone(),
        "TAP port did not notice its device was destroyed"
    );
    assert_eq!(b.info().state(), "error: device gone");
    let mut fds = Vec::new();
    b.poll_fds(&mut fds);
    assert!(fds.is_empty());
    burst.push(pool.alloc_copy(&[0u8; 60]).unwrap());
    let out = b.tx_burst(&mut pool, &mut burst);
    assert_eq!((out.sent, out.dropped), (0, 1));
    assert_eq!(pool.available(), 1024);
}

#[test]
fn missing_interface_is_reported() {
    let name = format!("{}zz", prefix("m"));
    let mut pool = xvs_switch::umem::new_pool(64, afxdp::RING_SIZE).unwrap();
    match AfxdpPort::open(&name, XdpMode::Auto, &mut pool) {
        Err(PortError::NoSuchInterface(n)) => assert_eq!(n, name),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a missing interface"),
    }
    let mut heap = FramePool::new_heap(64).unwrap();
    assert!(matches!(
        AfxdpPort::open("lo", XdpMode::Auto, &mut heap),
        Err(PortError::AfxdpUnavailable(_))
    ));
}

/// Receives from `port` until `child` exits or `limit` passes; returns the frames seen.
fn collect(
    pool: &mut FramePool,
    port: &mut dyn PortIo,
    child: &mut Reap,
    limit: Duration,
) -> (bool, Vec<Vec<u8>>) {
    let deadline = Instant::now() + limit;
    let mut burst = Burst::new();
    let mut seen = Vec::new();
    loop {
        if port.rx_burst(pool, &mut burst) > 0 {
            for f in burst.drain(..) {
                seen.push(pool.data(&f).to_vec());
                pool.free(f);
            }
        }
        port.maintain(pool);
        if let Some(status) = child.0.try_wait().unwrap() {
            return (status.success(), seen);
        }
        if Instant::now() >= deadline {
            return (false, seen);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An ARP reply from `mac`/`ip` to `to_mac`/`to_ip`.
fn arp_reply(mac: [u8; 6], ip: [u8; 4], to_mac: [u8; 6], to_ip: [u8; 4]) -> Vec<u8> {
    let mut f = to_mac.to_vec();
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&to_ip);
    f
}

fn xdp_attached(dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-d", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn a_shared_port_takes_only_its_own_frames_and_the_host_keeps_the_rest() {
    let _one_at_a_time = AFXDP.lock().unwrap_or_else(|e| e.into_inner());
    use xvs_switch::port::SharedWith;
    use xvs_switch::wire::Mac;
    let p = prefix("s");
    let ns = format!("{p}no");
    let (root, inner) = (format!("{p}u0"), format!("{p}u1"));
    let mut topo = Topology::new();
    topo.netns(&ns);
    topo.veth(&root, &inner, &ns, "198.18.7.2/24", 1);
    // The host's own address on the interface xvs shares.
    run(&["ip", "addr", "add", "198.18.7.1/24", "dev", &root]);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "cat",
            &format!("/sys/class/net/{inner}/address"),
        ])
        .output()
        .unwrap();
    let inner_mac: Mac = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let xvs = SharedWith {
        mac: Mac([0x02, 0x58, 0x56, 0, 7, 9]),
        ip: "198.18.7.9".parse().unwrap(),
    };
    let mut pool =
        xvs_switch::umem::new_pool(afxdp::suggested_pool_frames(1), afxdp::RING_SIZE).unwrap();
    let whole = pool.capacity() as usize;
    for mode in [XdpMode::Auto, XdpMode::Generic] {
        run_quiet(&["ip", "-n", &ns, "neigh", "flush", "dev", &inner]);
        let mut port = AfxdpPort::open_shared(&root, mode, &mut pool, xvs).unwrap();
        assert!(port.info().mode.ends_with(" shared"), "{:?}", port.info());
        assert!(xdp_attached(&root));

        // The host keeps answering on the shared interface; none of it reaches xvs.
        let mut child = ping(&ns, "198.18.7.1");
        let (ok, seen) = collect(&mut pool, &mut port, &mut child, Duration::from_secs(8));
        assert!(ok, "the host's own address stopped answering ({mode})");
        assert!(
            seen.is_empty(),
            "xvs saw {} of the host's frames",
            seen.len()
        );

        // ARP for xvs's address comes to xvs (the ping itself gets no answer yet).
        let mut child = ping(&ns, "198.18.7.9");
        let (_, seen) = collect(&mut pool, &mut port, &mut child, Duration::from_secs(8));
        let asks = seen
            .iter()
            .filter(|f| f[12..14] == [0x08, 0x06] && f[38..42] == [198, 18, 7, 9])
            .count();
        assert!(
            asks >= 1,
            "no ARP request for xvs's address reached it ({mode})"
        );

        // Answered with xvs's MAC, the namespace sends its echo requests to xvs.
        let mut burst = Burst::new();
        let reply = arp_reply(xvs.mac.0, [198, 18, 7, 9], inner_mac.0, [198, 18, 7, 2]);
        burst.push(pool.alloc_copy(&reply).unwrap());
        assert_eq!(port.tx_burst(&mut pool, &mut burst).sent, 1);
        port.maintain(&mut pool);
        let mut child = ping(&ns, "198.18.7.9");
        let (_, seen) = collect(&mut pool, &mut port, &mut child, Duration::from_secs(8));
        let echoes = seen
            .iter()
            .filter(|f| f[..6] == xvs.mac.0 && f[23] == 1 && f[34] == 8)
            .count();
        assert!(echoes >= 2, "echo requests to xvs's MAC: {echoes} ({mode})");

        port.detach(&mut pool);
        drop(port);
        assert!(
            !xdp_attached(&root),
            "the steering program was left attached"
        );
        assert_eq!(pool.available(), whole, "frames leaked ({mode})");
    }
    afxdp::release_umem(&pool);
}
