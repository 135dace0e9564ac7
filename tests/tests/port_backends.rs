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
