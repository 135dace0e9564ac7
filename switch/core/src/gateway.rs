//! The gateway: xvsd's own host on each network, built on smoltcp.
//!
//! Each network's gateway is a smoltcp `Interface` (its MAC and the gateway address) attached
//! to the network's bridge through a [`pipe`](crate::port::pipe) port. smoltcp answers ARP and
//! ICMP echo itself; UDP and TCP port 53 are handed to a [`LocalService`] (the embedded DNS,
//! in xvsd). All gateways run on one dedicated thread, so gateway traffic never runs on (or
//! blocks) a datapath worker; the control thread talks to it through [`GatewayHandle`].
//!
//! A network's gateway takes at most [`PER_SOURCE_BURST`] frames at once, then
//! [`PER_SOURCE_PER_SEC`] a second, from each source MAC (ARP, ping and DNS floods from one
//! container are dropped and counted as `rate_limited`, and every other container is still
//! answered); the uplink's own host is not limited (all of the outside shares its next hop's
//! MAC).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Instant as StdInstant;

use crossbeam_channel::{Receiver, Sender};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};

use crate::classify::Mac;
use crate::port::pipe::PipeEnd;
use crate::port::wait::wait_readable;

/// The port the local service listens on (DNS).
pub const SERVICE_PORT: u16 = 53;
/// TCP connections served at once per gateway.
const TCP_SOCKETS: usize = 4;
/// Largest TCP message (DNS over TCP: 2-byte length + message).
const TCP_BUFFER: usize = 4096;
/// Frames one source MAC may send a network's gateway at once.
pub const PER_SOURCE_BURST: u32 = 1000;
/// Frames a second one source MAC may send a network's gateway, after its burst.
pub const PER_SOURCE_PER_SEC: u32 = 500;
/// Sources tracked at most per gateway: a flood of new MACs cannot grow the table (when it is
/// full, it starts over).
const MAX_SOURCES: usize = 4096;

/// Where a reply to a service request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyTo {
    /// A UDP client.
    Udp(SocketAddr),
    /// A TCP connection (index of the gateway's TCP socket, and its generation).
    Tcp(usize, u64),
}

/// What xvsd serves on the gateway address (the embedded DNS).
pub trait LocalService: Send + 'static {
    /// A request on port 53 of `network`'s gateway: a UDP payload, or one DNS-over-TCP
    /// message without its length prefix. Returns the reply now, or `None` when the reply
    /// will come later through [`GatewayHandle::reply`] (or never).
    fn request(
        &mut self,
        network: &str,
        client: SocketAddr,
        reply_to: ReplyTo,
        msg: &[u8],
    ) -> Option<Vec<u8>>;
}

/// Counters of one gateway (relaxed atomics, read by the control thread).
#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// Frames from the switch.
    pub rx_frames: AtomicU64,
    /// Frames to the switch.
    pub tx_frames: AtomicU64,
    /// ARP packets received.
    pub arp: AtomicU64,
    /// ICMP echo requests received.
    pub icmp_echo: AtomicU64,
    /// Service (DNS) requests received.
    pub requests: AtomicU64,
    /// Frames dropped toward the switch (queue full).
    pub tx_drops: AtomicU64,
    /// Frames from the switch dropped: their source sent more than its share.
    pub rate_limited: AtomicU64,
}

enum GwCmd {
    Add {
        network: String,
        mac: Mac,
        ip: Ipv4Addr,
        prefix: u8,
        end: PipeEnd,
        counters: Arc<GatewayCounters>,
        /// Serve the local service (DNS) on port 53.
        serve: bool,
    },
    Remove {
        network: String,
    },
    Reply {
        network: String,
        to: ReplyTo,
        msg: Vec<u8>,
    },
    Probe {
        network: String,
        target: SocketAddrV4,
        timeout_ms: u64,
        done: Sender<bool>,
    },
    Stop,
}

/// The control thread's handle on the gateway thread.
pub struct GatewayHandle {
    commands: Sender<GwCmd>,
    wake: UnixDatagram,
    thread: Option<JoinHandle<()>>,
    counters: HashMap<String, Arc<GatewayCounters>>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("networks", &self.counters.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl GatewayHandle {
    /// Starts the gateway thread serving `service`.
    pub fn spawn(service: Box<dyn LocalService>) -> std::io::Result<GatewayHandle> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = UnixDatagram::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let thread = std::thread::Builder::new()
            .name("xvs-gateway".into())
            .spawn(move || {
                GatewayThread {
                    commands: rx,
                    wake: wake_rx,
                    service,
                    gateways: HashMap::new(),
                    origin: StdInstant::now(),
                    fds: Vec::new(),
                    pollfds: Vec::new(),
                }
                .run()
            })?;
        Ok(GatewayHandle {
            commands: tx,
            wake: wake_tx,
            thread: Some(thread),
            counters: HashMap::new(),
        })
    }

    fn send(&self, cmd: GwCmd) {
        if self.commands.send(cmd).is_ok() {
            let _ = self.wake.send(&[1]);
        }
    }

    /// Starts `network`'s gateway at `ip`/`prefix` with `mac`, speaking through `end`.
    pub fn add(&mut self, network: &str, mac: Mac, ip: Ipv4Addr, prefix: u8, end: PipeEnd) {
        self.add_with(network, mac, ip, prefix, end, true);
    }

    /// Starts a host at `ip`/`prefix` with `mac` that answers ARP and ping only, without the
    /// local service (xvs's own address on the uplink: no DNS for the outside world).
    pub fn add_host(&mut self, name: &str, mac: Mac, ip: Ipv4Addr, prefix: u8, end: PipeEnd) {
        self.add_with(name, mac, ip, prefix, end, false);
    }

    fn add_with(
        &mut self,
        network: &str,
        mac: Mac,
        ip: Ipv4Addr,
        prefix: u8,
        end: PipeEnd,
        serve: bool,
    ) {
        let counters = Arc::new(GatewayCounters::default());
        self.counters.insert(network.to_string(), counters.clone());
        self.send(GwCmd::Add {
            network: network.to_string(),
            mac,
            ip,
            prefix,
            end,
            counters,
            serve,
        });
    }

    /// Stops `network`'s gateway.
    pub fn remove(&mut self, network: &str) {
        self.counters.remove(network);
        self.send(GwCmd::Remove {
            network: network.to_string(),
        });
    }

    /// Sends a later reply to a service request.
    pub fn reply(&self, network: &str, to: ReplyTo, msg: Vec<u8>) {
        self.send(GwCmd::Reply {
            network: network.to_string(),
            to,
            msg,
        });
    }

    /// A health check: `network`'s gateway opens a TCP connection to `target` and closes it
    /// (a RST) once established. The answer comes on the returned channel: true if it was
    /// established within `timeout_ms`, false if refused, timed out, or the network has no
    /// gateway (then at once).
    pub fn probe(&self, network: &str, target: SocketAddrV4, timeout_ms: u64) -> Receiver<bool> {
        let (done, answer) = crossbeam_channel::bounded(1);
        self.send(GwCmd::Probe {
            network: network.to_string(),
            target,
            timeout_ms,
            done,
        });
        answer
    }

    /// Counters of `network`'s gateway.
    pub fn counters(&self, network: &str) -> Option<Arc<GatewayCounters>> {
        self.counters.get(network).cloned()
    }

    /// A cheap clone-able sender for later replies (for async resolvers).
    pub fn replier(&self) -> Replier {
        Replier {
            commands: self.commands.clone(),
            wake: self.wake.try_clone().ok(),
        }
    }

    /// Stops the thread.
    pub fn stop(&mut self) {
        self.send(GwCmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends later replies to the gateway thread from any thread.
#[derive(Debug)]
pub struct Replier {
    commands: Sender<GwCmd>,
    wake: Option<UnixDatagram>,
}

impl Replier {
    /// Sends `msg` to `to` from `network`'s gateway.
    pub fn reply(&self, network: &str, to: ReplyTo, msg: Vec<u8>) {
        let cmd = GwCmd::Reply {
            network: network.to_string(),
            to,
            msg,
        };
        if self.commands.send(cmd).is_ok()
            && let Some(w) = &self.wake
        {
            let _ = w.send(&[1]);
        }
    }
}

/// smoltcp device over a pipe end.
struct PipeDevice {
    end: PipeEnd,
    counters: Arc<GatewayCounters>,
    /// Per-source token buckets (a network's gateway; none for the uplink's host).
    limiter: Option<RateLimiter>,
}

/// A token bucket per source MAC.
#[derive(Debug, Default)]
struct RateLimiter {
    buckets: HashMap<[u8; 6], (u32, i64)>,
}

impl RateLimiter {
    /// Whether a frame from `src` at `now_ms` is within its share.
    fn allow(&mut self, src: [u8; 6], now_ms: i64) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&src) {
            self.buckets.clear();
        }
        let (tokens, since) = self
            .buckets
            .entry(src)
            .or_insert((PER_SOURCE_BURST, now_ms));
        let earned = (now_ms - *since).max(0) as u64 * u64::from(PER_SOURCE_PER_SEC) / 1000;
        if earned > 0 {
            *tokens = (*tokens as u64 + earned).min(u64::from(PER_SOURCE_BURST)) as u32;
            *since = now_ms;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }
}

/// A frame from the switch; its buffer goes back to the pipe once smoltcp has read it.
struct Rx<'a>(Vec<u8>, &'a PipeEnd);
struct Tx<'a>(&'a PipeEnd, &'a GatewayCounters);

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let Rx(buf, end) = self;
        let r = f(&buf);
        end.recycle(buf);
        r
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.0.buffer();
        buf.resize(len, 0);
        let r = f(&mut buf);
        if self.0.send(buf) {
            self.1.tx_frames.fetch_add(1, Relaxed);
        } else {
            self.1.tx_drops.fetch_add(1, Relaxed);
        }
        r
    }
}

impl Device for PipeDevice {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, ts: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let f = loop {
            let f = self.end.recv()?;
            self.counters.rx_frames.fetch_add(1, Relaxed);
            let src: Option<[u8; 6]> = f.get(6..12).and_then(|s| s.try_into().ok());
            let allowed = match (&mut self.limiter, src) {
                (Some(l), Some(src)) => l.allow(src, ts.total_millis()),
                _ => true,
            };
            if allowed {
                break f;
            }
            self.counters.rate_limited.fetch_add(1, Relaxed);
            self.end.recycle(f);
        };
        if f.len() >= 14 {
            match u16::from_be_bytes([f[12], f[13]]) {
                0x0806 => {
                    self.counters.arp.fetch_add(1, Relaxed);
                }
                0x0800 if f.len() >= 35 && f[23] == 1 && f[14] & 0x0f == 5 && f[34] == 8 => {
                    self.counters.icmp_echo.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
        Some((Rx(f, &self.end), Tx(&self.end, &self.counters)))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<Tx<'_>> {
        Some(Tx(&self.end, &self.counters))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

struct TcpConn {
    handle: SocketHandle,
    generation: u64,
    inbox: Vec<u8>,
}

/// A health check under way: its socket, when it gives up, and where the answer goes (none
/// once given: the socket lingers a round for its RST to leave).
struct Probe {
    handle: SocketHandle,
    deadline: Instant,
    done: Option<Sender<bool>>,
}

/// Health checks at once per gateway; more are answered "down" at once (a bounded table).
const MAX_PROBES: usize = 256;
/// Buffers of a probe's socket (it sends and keeps nothing).
const PROBE_BUFFER: usize = 64;

struct Gateway {
    iface: Interface,
    device: PipeDevice,
    sockets: SocketSet<'static>,
    udp: SocketHandle,
    tcp: Vec<TcpConn>,
    ip: Ipv4Addr,
    probes: Vec<Probe>,
    /// The next local port a probe tries (49152-65535, in turn).
    probe_port: u16,
}

impl Gateway {
    fn new(
        mac: Mac,
        ip: Ipv4Addr,
        prefix: u8,
        end: PipeEnd,
        counters: Arc<GatewayCounters>,
        now: Instant,
        serve: bool,
    ) -> Gateway {
        let mut device = PipeDevice {
            end,
            counters,
            limiter: serve.then(RateLimiter::default),
        };
        let mut config = Config::new(EthernetAddress(mac.0).into());
        config.random_seed = u64::from(u32::from(ip)) ^ 0x9e37_79b9_7f4a_7c15;
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), prefix));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
        );
        // Without the service the UDP socket stays unbound (it receives nothing) and no TCP
        // socket listens.
        if serve {
            let _ = u.bind(SERVICE_PORT);
        }
        let udp = sockets.add(u);
        let tcp = (0..if serve { TCP_SOCKETS } else { 0 })
            .map(|_| {
                let mut t = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
                    tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
                );
                let _ = t.listen(SERVICE_PORT);
                TcpConn {
                    handle: sockets.add(t),
                    generation: 0,
                    inbox: Vec::new(),
                }
            })
            .collect();
        Gateway {
            iface,
            device,
            sockets,
            udp,
            tcp,
            ip,
            probes: Vec::new(),
            probe_port: 49152 + (u32::from(ip) % 16384) as u16,
        }
    }

    /// Starts a health check of `target` (see [`GatewayHandle::probe`]).
    fn probe(&mut self, target: SocketAddrV4, timeout_ms: u64, done: Sender<bool>, now: Instant) {
        if self.probes.len() >= MAX_PROBES {
            let _ = done.send(false);
            return;
        }
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; PROBE_BUFFER]),
            tcp::SocketBuffer::new(vec![0; PROBE_BUFFER]),
        );
        self.probe_port = if self.probe_port == u16::MAX {
            49152
        } else {
            self.probe_port + 1
        };
        let remote = IpEndpoint::new(IpAddress::Ipv4(*target.ip()), target.port());
        if sock
            .connect(self.iface.context(), remote, self.probe_port)
            .is_err()
        {
            let _ = done.send(false);
            return;
        }
        self.probes.push(Probe {
            handle: self.sockets.add(sock),
            deadline: now + smoltcp::time::Duration::from_millis(timeout_ms),
            done: Some(done),
        });
    }

    /// Answers the health checks that are decided, and lets go of finished ones.
    fn check_probes(&mut self, now: Instant) {
        let sockets = &mut self.sockets;
        self.probes.retain_mut(|p| {
            let sock = sockets.get_mut::<tcp::Socket>(p.handle);
            let Some(done) = p.done.take() else {
                // Answered last round; its RST has gone out.
                sockets.remove(p.handle);
                return false;
            };
            let answer = match sock.state() {
                tcp::State::Established => Some(true),
                tcp::State::Closed => Some(false),
                _ if now >= p.deadline => Some(false),
                _ => None,
            };
            match answer {
                Some(up) => {
                    let _ = done.send(up);
                    sock.abort();
                }
                None => p.done = Some(done),
            }
            true
        });
    }

    fn poll(&mut self, network: &str, now: Instant, service: &mut dyn LocalService) {
        for _ in 0..8 {
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            let mut did = false;
            // UDP requests
            loop {
                let sock = self.sockets.get_mut::<udp::Socket>(self.udp);
                let Ok((msg, meta)) = sock.recv() else { break };
                did = true;
                let msg = msg.to_vec();
                let client = endpoint_addr(meta.endpoint);
                self.device.counters.requests.fetch_add(1, Relaxed);
                if let Some(reply) = service.request(network, client, ReplyTo::Udp(client), &msg) {
                    let sock = self.sockets.get_mut::<udp::Socket>(self.udp);
                    let _ = sock.send_slice(&reply, meta.endpoint);
                }
            }
            // TCP requests
            for i in 0..self.tcp.len() {
                let conn = &mut self.tcp[i];
                let sock = self.sockets.get_mut::<tcp::Socket>(conn.handle);
                if !sock.is_open() {
                    conn.inbox.clear();
                    conn.generation += 1;
                    let _ = sock.listen(SERVICE_PORT);
                    continue;
                }
                if sock.can_recv() {
                    let _ = sock.recv(|buf| {
                        conn.inbox.extend_from_slice(buf);
                        (buf.len(), ())
                    });
                }
                if !sock.may_recv() && conn.inbox.is_empty() && sock.may_send() {
                    sock.close();
                }
                while conn.inbox.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([conn.inbox[0], conn.inbox[1]]));
                    if conn.inbox.len() < 2 + len {
                        break;
                    }
                    let msg: Vec<u8> = conn.inbox.drain(..2 + len).skip(2).collect();
                    did = true;
                    let client = sock
                        .remote_endpoint()
                        .map(endpoint_addr)
                        .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
                    self.device.counters.requests.fetch_add(1, Relaxed);
                    if let Some(reply) =
                        service.request(network, client, ReplyTo::Tcp(i, conn.generation), &msg)
                    {
                        send_tcp(sock, &reply);
                    }
                }
            }
            if !did {
                break;
            }
        }
        if !self.probes.is_empty() {
            self.check_probes(now);
        }
        self.iface.poll(now, &mut self.device, &mut self.sockets);
    }

    fn reply(&mut self, to: ReplyTo, msg: &[u8]) {
        match to {
            ReplyTo::Udp(client) => {
                let sock = self.sockets.get_mut::<udp::Socket>(self.udp);
                let ep = IpEndpoint::new(
                    match client.ip() {
                        IpAddr::V4(a) => IpAddress::Ipv4(a),
                        IpAddr::V6(_) => return,
                    },
                    client.port(),
                );
                let _ = sock.send_slice(msg, ep);
            }
            ReplyTo::Tcp(i, generation) => {
                if let Some(conn) = self.tcp.get(i)
                    && conn.generation == generation
                {
                    let sock = self.sockets.get_mut::<tcp::Socket>(conn.handle);
                    send_tcp(sock, msg);
                }
            }
        }
    }
}

fn send_tcp(sock: &mut tcp::Socket<'_>, msg: &[u8]) {
    let Ok(len) = u16::try_from(msg.len()) else {
        return;
    };
    let _ = sock.send_slice(&len.to_be_bytes());
    let _ = sock.send_slice(msg);
}

fn endpoint_addr(ep: IpEndpoint) -> SocketAddr {
    let ip = match ep.addr {
        IpAddress::Ipv4(a) => IpAddr::V4(Ipv4Addr::from(a.octets())),
        #[allow(unreachable_patterns)]
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, ep.port)
}

struct GatewayThread {
    commands: Receiver<GwCmd>,
    wake: UnixDatagram,
    service: Box<dyn LocalService>,
    gateways: HashMap<String, Gateway>,
    origin: StdInstant,
    fds: Vec<RawFd>,
    pollfds: Vec<libc::pollfd>,
}

impl GatewayThread {
    fn now(&self) -> Instant {
        Instant::from_millis(self.origin.elapsed().as_millis() as i64)
    }

    fn run(&mut self) {
        loop {
            let mut buf = [0u8; 64];
            while self.wake.recv(&mut buf).is_ok() {}
            while let Ok(cmd) = self.commands.try_recv() {
                let now = self.now();
                match cmd {
                    GwCmd::Add {
                        network,
                        mac,
                        ip,
                        prefix,
                        end,
                        counters,
                        serve,
                    } => {
                        let gw = Gateway::new(mac, ip, prefix, end, counters, now, serve);
                        tracing::debug!("gateway {ip} up on {network}");
                        self.gateways.insert(network, gw);
                    }
                    GwCmd::Remove { network } => {
                        self.gateways.remove(&network);
                    }
                    GwCmd::Reply { network, to, msg } => {
                        if let Some(gw) = self.gateways.get_mut(&network) {
                            gw.reply(to, &msg);
                        }
                    }
                    GwCmd::Probe {
                        network,
                        target,
                        timeout_ms,
                        done,
                    } => match self.gateways.get_mut(&network) {
                        Some(gw) => gw.probe(target, timeout_ms, done, now),
                        None => {
                            let _ = done.send(false);
                        }
                    },
                    GwCmd::Stop => return,
                }
            }
            let now = self.now();
            let mut timeout_ms: i64 = 1000;
            for (name, gw) in self.gateways.iter_mut() {
                gw.device.end.clear_wake();
                gw.poll(name, now, self.service.as_mut());
                if let Some(d) = gw.iface.poll_delay(now, &gw.sockets) {
                    timeout_ms = timeout_ms.min(d.total_millis() as i64);
                }
                if let Some(p) = gw.probes.iter().map(|p| p.deadline).min() {
                    // A probe's deadline, or the next round for one that lingers.
                    let left = if p > now { (p - now).total_millis() } else { 0 };
                    timeout_ms = timeout_ms.min(left.max(1) as i64);
                }
                let _ = gw.ip;
            }
            self.fds.clear();
            self.fds.push(self.wake.as_raw_fd());
            for gw in self.gateways.values() {
                self.fds.push(gw.device.end.wake_fd());
            }
            let _ = wait_readable(&self.fds, &mut self.pollfds, timeout_ms.max(0) as i32);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = super::RateLimiter::default();
        let a = [2, 0, 0, 0, 0, 1];
        let b = [2, 0, 0, 0, 0, 2];
        let sent = (0..2000).filter(|_| l.allow(a, 0)).count() as u32;
        assert_eq!(sent, super::PER_SOURCE_BURST);
        assert!(l.allow(b, 0), "another source is not held back");
        assert!(!l.allow(a, 1), "half a token after 1 ms");
        let later = (0..2000).filter(|_| l.allow(a, 1000)).count() as u32;
        assert_eq!(later, super::PER_SOURCE_PER_SEC);
        for i in 0..super::MAX_SOURCES as u8 as usize + 5000 {
            let m = [2, 1, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0];
            l.allow(m, 2000);
        }
        assert!(l.buckets.len() <= super::MAX_SOURCES);
    }

    use super::*;
    use crate::frame::FramePool;
    use crate::port::pipe::pipe;
    use crate::port::{Burst, PortIo};

    struct Echo;
    impl LocalService for Echo {
        fn request(
            &mut self,
            _n: &str,
            _c: SocketAddr,
            _r: ReplyTo,
            msg: &[u8],
        ) -> Option<Vec<u8>> {
            Some(msg.iter().rev().copied().collect())
        }
    }

    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 10, 1, 0, 9, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&target);
        f
    }

    fn wait_frames(port: &mut dyn PortIo, pool: &mut FramePool) -> Vec<Vec<u8>> {
        let mut burst = Burst::new();
        for _ in 0..200 {
            if port.rx_burst(pool, &mut burst) > 0 {
                let v = burst.iter().map(|f| pool.data(f).to_vec()).collect();
                for f in burst.drain(..) {
                    pool.free(f);
                }
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Vec::new()
    }

    #[test]
    fn answers_arp_for_its_address_only() {
        let mut gw = GatewayHandle::spawn(Box::new(Echo)).unwrap();
        let (mut port, end) = pipe().unwrap();
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        gw.add("n1", mac, Ipv4Addr::new(10, 1, 0, 1), 24, end);
        let mut pool = FramePool::new_heap(64).unwrap();
        let mut burst = Burst::new();
        burst.push(pool.alloc_copy(&arp_request([10, 1, 0, 1])).unwrap());
        port.tx_burst(&mut pool, &mut burst);
        let replies = wait_frames(&mut port, &mut pool);
        assert_eq!(replies.len(), 1);
        let r = &replies[0];
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&r[20..22], &[0, 2], "ARP reply opcode");
        assert_eq!(&r[22..28], &mac.0);
        burst.push(pool.alloc_copy(&arp_request([10, 1, 0, 7])).unwrap());
        port.tx_burst(&mut pool, &mut burst);
        assert!(wait_frames(&mut port, &mut pool).is_empty());
        let c = gw.counters("n1").unwrap();
        assert_eq!(c.arp.load(Relaxed), 2);
        gw.stop();
    }

    /// The network side of a probe: answers the gateway's ARP for the backend, then its SYN
    /// with a SYN-ACK (`accept`) or a RST; returns the probe's answer.
    fn probe_against(accept: bool) -> bool {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let mut gw = GatewayHandle::spawn(Box::new(Echo)).unwrap();
        let (mut port, end) = pipe().unwrap();
        let gw_mac = [2, 0, 0, 0, 0, 1];
        let backend_mac = [2, 0, 0, 0, 0, 7];
        gw.add("n1", Mac(gw_mac), Ipv4Addr::new(10, 1, 0, 1), 24, end);
        let answer = gw.probe("n1", "10.1.0.7:8080".parse().unwrap(), 2000);
        let mut pool = FramePool::new_heap(64).unwrap();
        let mut burst = Burst::new();
        let mut result = None;
        for _ in 0..20 {
            for f in wait_frames(&mut port, &mut pool) {
                let mut reply = Vec::new();
                if f[12..14] == [0x08, 0x06] {
                    // ARP request for the backend: reply.
                    reply.extend_from_slice(&gw_mac);
                    reply.extend_from_slice(&backend_mac);
                    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
                    reply.extend_from_slice(&backend_mac);
                    reply.extend_from_slice(&[10, 1, 0, 7]);
                    reply.extend_from_slice(&gw_mac);
                    reply.extend_from_slice(&[10, 1, 0, 1]);
                } else {
                    let p = SlicedPacket::from_ethernet(&f).unwrap();
                    let Some(TransportSlice::Tcp(t)) = p.transport else {
                        continue;
                    };
                    if !t.syn() {
                        continue;
                    }
                    let b = PacketBuilder::ethernet2(backend_mac, gw_mac)
                        .ipv4([10, 1, 0, 7], [10, 1, 0, 1], 64)
                        .tcp(8080, t.source_port(), 9000, 64000);
                    let b = if accept {
                        b.syn().ack(t.sequence_number() + 1)
                    } else {
                        b.rst().ack(t.sequence_number() + 1)
                    };
                    b.write(&mut reply, b"").unwrap();
                }
                burst.push(pool.alloc_copy(&reply).unwrap());
                port.tx_burst(&mut pool, &mut burst);
            }
            if let Ok(r) = answer.try_recv() {
                result = Some(r);
                break;
            }
        }
        gw.stop();
        result.expect("the probe answered")
    }

    #[test]
    fn a_probe_is_up_when_established_and_down_when_refused_or_unknown() {
        assert!(probe_against(true));
        assert!(!probe_against(false));
        let gw = GatewayHandle::spawn(Box::new(Echo)).unwrap();
        let answer = gw.probe("nowhere", "10.1.0.7:80".parse().unwrap(), 1000);
        assert_eq!(
            answer.recv_timeout(std::time::Duration::from_secs(1)),
            Ok(false)
        );
    }
}
