//! Worker threads: each owns an [`Engine`] (its frame pool, the AF_XDP UMEM; its ports; the
//! bridges those ports belong to) and runs it: receive → chain of stages → transmit, in
//! bursts.
//!
//! A worker busy-polls while there is traffic and sleeps in `poll()` on its ports' descriptors
//! (AF_XDP need_wakeup) and a wake-up socket when idle. The control thread talks to it only
//! through [`Command`]s on a channel; replies come back on per-request channels. Nothing a
//! worker owns is touched by another thread except the atomic counters.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::chain::Chain;
use crate::classify::PortId;
use crate::clock::Clock;
use crate::counters::{DropCounters, PortCounters};
pub use crate::engine::{Engine, TraceAction, TraceResult};
use crate::fdb::FdbConfig;
use crate::frame::FramePool;
use crate::handoff::Handoff;
use crate::port::{self, BackendInfo, BackendStats, PortError, PortIo, PortSpec};
pub use crate::wire::BridgeId;

/// Milliseconds without traffic before a worker goes to sleep in `poll()`.
const IDLE_BEFORE_SLEEP_MS: u64 = 2;
/// Longest a worker keeps polling through a pause in traffic. When packets come in a steady
/// rhythm (request/response, ping), a worker that slept between them would add a wake-up to
/// every packet's latency; so it polls on through pauses up to twice the last one seen, as long
/// as that is at most this long. Longer pauses: it sleeps after [`IDLE_BEFORE_SLEEP_MS`], and an
/// idle switch costs nothing. 50 ms keeps a 20 ms rhythm (ping -i 0.02, a game's or a
/// VoIP call's packet rate) polled: sleeping between its packets cost 0.4 ms per round trip.
const MAX_SPIN_MS: u64 = 50;

/// How long to keep polling after traffic stops, given the last pause between packets.
fn spin_for_pause(pause_ms: u64) -> u64 {
    if pause_ms <= MAX_SPIN_MS {
        (2 * pause_ms).clamp(IDLE_BEFORE_SLEEP_MS, MAX_SPIN_MS)
    } else {
        IDLE_BEFORE_SLEEP_MS
    }
}
/// Longest sleep, so ageing sweeps still run on an idle switch.
const MAX_SLEEP_MS: i32 = 1000;

/// Work the control plane runs on a bridge's chain, on the worker that owns it.
pub type ChainFn = Box<dyn FnOnce(Option<&mut Chain>, u64) + Send>;

/// A request from the control thread to a worker.
pub enum Command {
    /// Creates a bridge.
    AddBridge {
        /// Bridge id.
        id: BridgeId,
        /// Name (for logs).
        name: String,
        /// MAC table limits.
        config: FdbConfig,
        /// Acknowledgement.
        reply: Sender<()>,
    },
    /// Sets a bridge's icc rule and local (gateway) port.
    SetPolicy {
        /// Bridge id.
        id: BridgeId,
        /// Inter-container communication allowed.
        icc: bool,
        /// The local stack's port.
        local_port: Option<PortId>,
        /// Acknowledgement.
        reply: Sender<()>,
    },
    /// Swaps a bridge's chain of stages (between two passes; traffic keeps flowing).
    SetChain {
        /// Bridge id.
        id: BridgeId,
        /// The new chain; its stages adopt the old ones' state by name.
        chain: Chain,
        /// Whether the bridge exists on this worker.
        reply: Sender<bool>,
    },
    /// Removes a bridge (its ports must be gone).
    DelBridge {
        /// Bridge id.
        id: BridgeId,
        /// Acknowledgement.
        reply: Sender<()>,
    },
    /// Opens a port backend and attaches it to a bridge.
    AddPort {
        /// Port id.
        id: PortId,
        /// Bridge.
        bridge: BridgeId,
        /// What to open.
        spec: PortSpec,
        /// Access VLAN (0 = untagged).
        vlan: u16,
        /// Counters shared with the control thread.
        counters: Arc<PortCounters>,
        /// The backend's description, or why it could not open.
        reply: Sender<Result<BackendInfo, PortError>>,
    },
    /// Attaches an already-built backend (memory ports in tests and benches).
    AddPortIo {
        /// Port id.
        id: PortId,
        /// Bridge.
        bridge: BridgeId,
        /// The backend.
        io: Box<dyn PortIo>,
        /// Access VLAN.
        vlan: u16,
        /// Counters.
        counters: Arc<PortCounters>,
        /// Acknowledgement.
        reply: Sender<BackendInfo>,
    },
    /// Detaches and closes a port.
    DelPort {
        /// Port id.
        id: PortId,
        /// Acknowledgement.
        reply: Sender<()>,
    },
    /// Runs `f` on a bridge's chain (`None` when the bridge is not on this worker) with the
    /// time now, between two passes: how the control plane reads or changes a stage's own
    /// state (the MAC table, later the connection table) without a command per stage.
    WithChain {
        /// Bridge.
        bridge: BridgeId,
        /// The work; it sends its own reply.
        f: ChainFn,
    },
    /// Records which worker polls a port of a replicated bridge (`None`: forget it).
    RemotePort {
        /// Port id.
        id: PortId,
        /// Where it is and how to reach it; `None`: it is gone.
        port: Option<crate::engine::RemotePort>,
        /// Acknowledgement.
        reply: Sender<()>,
    },
    /// A transmit-only handle on a port this worker polls, for another worker
    /// ([`PortIo::remote_writer`](crate::port::PortIo::remote_writer)).
    RemoteWriter {
        /// Port id.
        id: PortId,
        /// The writer, if the port has one.
        reply: Sender<Option<Box<dyn PortIo>>>,
    },
    /// Runs one frame through a bridge's pipeline without side effects.
    Trace {
        /// Bridge.
        bridge: BridgeId,
        /// Ingress port.
        in_port: PortId,
        /// Frame bytes.
        frame: Vec<u8>,
        /// What happened.
        reply: Sender<TraceResult>,
    },
    /// Reads backend descriptions and kernel counters of every port.
    PortStats {
        /// `(port, info, stats)` per port.
        reply: Sender<Vec<(PortId, BackendInfo, BackendStats)>>,
    },
    /// Accounts for the worker's frame pool.
    PoolStatus {
        /// Where its frames are.
        reply: Sender<crate::engine::PoolStatus>,
    },
    /// Stops the worker (ports are closed).
    Stop,
}

/// Where a worker's time goes, as `ovs-appctl dpif-netdev/pmd-perf-show` reports a PMD's:
/// passes that moved frames (busy), passes that found nothing (idle polling), and sleep.
/// Written by the worker (one relaxed add per pass), read by the control thread.
#[derive(Debug, Default)]
pub struct WorkerPerf {
    /// Nanoseconds in passes that moved frames.
    pub busy_ns: AtomicU64,
    /// Nanoseconds in passes that found nothing (polling on through a pause).
    pub idle_ns: AtomicU64,
    /// Nanoseconds asleep in `poll()`.
    pub sleep_ns: AtomicU64,
    /// Frames those busy passes moved (received from ports and other workers, released by
    /// stages).
    pub frames: AtomicU64,
    /// Passes that moved frames.
    pub busy_passes: AtomicU64,
}

/// A [`WorkerPerf`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerPerfSnapshot {
    /// Nanoseconds in passes that moved frames.
    pub busy_ns: u64,
    /// Nanoseconds polling without finding anything.
    pub idle_ns: u64,
    /// Nanoseconds asleep.
    pub sleep_ns: u64,
    /// Frames moved.
    pub frames: u64,
    /// Passes that moved frames.
    pub busy_passes: u64,
}

impl WorkerPerf {
    /// The counters now.
    pub fn snapshot(&self) -> WorkerPerfSnapshot {
        WorkerPerfSnapshot {
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            idle_ns: self.idle_ns.load(Ordering::Relaxed),
            sleep_ns: self.sleep_ns.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            busy_passes: self.busy_passes.load(Ordering::Relaxed),
        }
    }
}

/// The control thread's handle on a worker.
pub struct WorkerHandle {
    /// Worker number.
    pub id: u32,
    /// Where its time goes.
    pub perf: Arc<WorkerPerf>,
    commands: Sender<Command>,
    wake: UnixDatagram,
    sleeping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Whether the worker's pool is an AF_XDP UMEM (else AF_XDP ports cannot be opened).
    pub umem_error: Option<String>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl WorkerHandle {
    /// Sends a command and wakes the worker if it sleeps.
    pub fn send(&self, cmd: Command) -> bool {
        if self.commands.send(cmd).is_err() {
            return false;
        }
        if self.sleeping.load(Ordering::Acquire) {
            let _ = self.wake.send(&[1]);
        }
        true
    }

    /// Stops the worker and waits for it.
    pub fn stop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.wake.send(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to build a worker's frame pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Frames in the pool.
    pub frames: u32,
    /// Try to make it an AF_XDP UMEM (else a heap pool).
    pub umem: bool,
}

/// What connects a worker to the others: its wake-up socket (both ends) with the flag that
/// says it sleeps, and its ends of the hand-off rings.
#[derive(Debug)]
pub struct WorkerLink {
    /// Written (by the control thread, other workers) to wake the worker.
    pub wake_tx: UnixDatagram,
    /// Polled by the worker while it sleeps.
    pub wake_rx: UnixDatagram,
    /// Set while the worker sleeps.
    pub sleeping: Arc<AtomicBool>,
    /// The worker's ends of the hand-off rings.
    pub handoff: Handoff,
    /// How many workers there are.
    pub workers: u16,
}

/// The wake-up socket pairs and sleeping flags of `n` workers, with the hand-off rings
/// between them.
pub fn links(n: u16) -> std::io::Result<Vec<WorkerLink>> {
    let mut socks = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..n {
        let (tx, rx) = UnixDatagram::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let sleeping = Arc::new(AtomicBool::new(false));
        wakers.push(crate::handoff::Waker {
            socket: tx.try_clone()?,
            sleeping: sleeping.clone(),
        });
        socks.push((tx, rx, sleeping));
    }
    let rings = crate::handoff::mesh(wakers);
    Ok(socks
        .into_iter()
        .zip(rings)
        .map(|((wake_tx, wake_rx, sleeping), handoff)| WorkerLink {
            wake_tx,
            wake_rx,
            sleeping,
            handoff,
            workers: n,
        })
        .collect())
}

/// Starts worker `id`, connected to the others by `link`.
pub fn spawn(
    id: u32,
    pool_config: PoolConfig,
    clock: Arc<dyn Clock>,
    drops: Arc<DropCounters>,
    link: WorkerLink,
) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let WorkerLink {
        wake_tx,
        wake_rx,
        sleeping,
        handoff,
        workers,
    } = link;
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let sleeping2 = sleeping.clone();
    let perf = Arc::new(WorkerPerf::default());
    let perf2 = perf.clone();
    let thread = std::thread::Builder::new()
        .name(format!("xvs-worker-{id}"))
        .spawn(move || {
            let (pool, umem_error) = make_pool(pool_config);
            let _ = ready_tx.send(umem_error);
            let Some(pool) = pool else { return };
            let mut w = Worker {
                id,
                engine: Engine::with_handoff(pool, drops, id as u16, handoff, workers),
                commands: rx,
                wake: wake_rx,
                sleeping: sleeping2,
                clock,
                fds: Vec::new(),
                pollfds: Vec::new(),
                perf: perf2,
            };
            w.run();
        })?;
    let umem_error = ready_rx.recv().unwrap_or(Some("worker died".into()));
    Ok(WorkerHandle {
        id,
        perf,
        commands: tx,
        wake: wake_tx,
        sleeping,
        thread: Some(thread),
        umem_error,
    })
}

fn make_pool(cfg: PoolConfig) -> (Option<FramePool>, Option<String>) {
    if cfg.umem {
        match crate::umem::new_pool(cfg.frames, port::afxdp::RING_SIZE) {
            Ok(p) => return (Some(p), None),
            Err(e) => {
                tracing::warn!("AF_XDP unavailable, using a heap frame pool: {e}");
                return (FramePool::new_heap(cfg.frames).ok(), Some(e.to_string()));
            }
        }
    }
    (
        FramePool::new_heap(cfg.frames).ok(),
        Some("frame pool is not a UMEM".into()),
    )
}

struct Worker {
    id: u32,
    engine: Engine,
    commands: Receiver<Command>,
    wake: UnixDatagram,
    sleeping: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    fds: Vec<RawFd>,
    pollfds: Vec<libc::pollfd>,
    perf: Arc<WorkerPerf>,
}

impl Worker {
    fn run(&mut self) {
        tracing::debug!(worker = self.id, "worker started");
        let mut last_work_ms = self.clock.now_ms();
        let mut idle_since_ms = last_work_ms;
        let mut spin_ms = IDLE_BEFORE_SLEEP_MS;
        let mut mark = Instant::now();
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                if !self.handle(cmd) {
                    self.engine.close_all();
                    port::afxdp::release_umem(self.engine.pool());
                    tracing::debug!(worker = self.id, "worker stopped");
                    return;
                }
            }
            let now = self.clock.now_ms();
            // One clock read per pass: a pass's time runs from the mark the previous one left.
            let (work, busy) = self.engine.poll(now);
            let end = Instant::now();
            let spent = end.duration_since(mark).as_nanos() as u64;
            mark = end;
            if work > 0 {
                self.perf.busy_ns.fetch_add(spent, Ordering::Relaxed);
                self.perf.frames.fetch_add(work as u64, Ordering::Relaxed);
                self.perf.busy_passes.fetch_add(1, Ordering::Relaxed);
            } else {
                self.perf.idle_ns.fetch_add(spent, Ordering::Relaxed);
            }
            if work > 0 || busy {
                let pause = now.saturating_sub(last_work_ms);
                if pause > 0 {
                    spin_ms = spin_for_pause(pause);
                }
                last_work_ms = now;
                idle_since_ms = now;
            } else if now.saturating_sub(idle_since_ms) >= spin_ms {
                self.sleep();
                let end = Instant::now();
                let slept = end.duration_since(mark).as_nanos() as u64;
                mark = end;
                self.perf.sleep_ns.fetch_add(slept, Ordering::Relaxed);
                idle_since_ms = self.clock.now_ms();
            }
        }
    }

    fn sleep(&mut self) {
        self.sleeping.store(true, Ordering::Release);
        if !self.commands.is_empty() {
            self.sleeping.store(false, Ordering::Release);
            return;
        }
        self.fds.clear();
        self.fds.push(self.wake.as_raw_fd());
        self.engine.poll_fds(&mut self.fds);
        if let Err(e) = port::wait::wait_readable(&self.fds, &mut self.pollfds, MAX_SLEEP_MS) {
            tracing::warn!(worker = self.id, "poll failed: {e}");
        }
        self.sleeping.store(false, Ordering::Release);
        let mut buf = [0u8; 64];
        while self.wake.recv(&mut buf).is_ok() {}
    }

    /// Handles a command; false means stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::AddBridge {
                id,
                name,
                config,
                reply,
            } => {
                self.engine.add_bridge(id, name, config);
                let _ = reply.send(());
            }
            Command::SetPolicy {
                id,
                icc,
                local_port,
                reply,
            } => {
                if let Some(d) = self.engine.domain_mut(id) {
                    d.set_policy(icc, local_port);
                }
                let _ = reply.send(());
            }
            Command::SetChain { id, chain, reply } => {
                let _ = reply.send(self.engine.set_chain(id, chain));
            }
            Command::DelBridge { id, reply } => {
                self.engine.remove_bridge(id);
                let _ = reply.send(());
            }
            Command::AddPort {
                id,
                bridge,
                spec,
                vlan,
                counters,
                reply,
            } => {
                let result = port::open(&spec, self.engine.pool_mut()).map(|io| {
                    let info = io.info();
                    self.engine.insert_port(id, bridge, io, vlan, counters);
                    info
                });
                let _ = reply.send(result);
            }
            Command::AddPortIo {
                id,
                bridge,
                io,
                vlan,
                counters,
                reply,
            } => {
                let info = io.info();
                self.engine.insert_port(id, bridge, io, vlan, counters);
                let _ = reply.send(info);
            }
            Command::DelPort { id, reply } => {
                self.engine.remove_port(id);
                let _ = reply.send(());
            }
            Command::WithChain { bridge, f } => {
                let now = self.clock.now_ms();
                f(self.engine.chain_mut(bridge), now);
            }
            Command::RemoteWriter { id, reply } => {
                let _ = reply.send(self.engine.remote_writer(id));
            }
            Command::RemotePort { id, port, reply } => {
                self.engine.set_remote_port(id, port);
                let _ = reply.send(());
            }
            Command::Trace {
                bridge,
                in_port,
                frame,
                reply,
            } => {
                let now = self.clock.now_ms();
                let result = self.engine.trace(bridge, in_port, &frame, now);
                let _ = reply.send(result);
            }
            Command::PortStats { reply } => {
                let _ = reply.send(self.engine.port_stats());
            }
            Command::PoolStatus { reply } => {
                let _ = reply.send(self.engine.pool_status());
            }
            Command::Stop => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{IDLE_BEFORE_SLEEP_MS, MAX_SPIN_MS, spin_for_pause};

    #[test]
    fn spin_follows_short_pauses_only() {
        assert_eq!(spin_for_pause(0), IDLE_BEFORE_SLEEP_MS);
        assert_eq!(spin_for_pause(5), 10);
        assert_eq!(spin_for_pause(20), 40);
        assert_eq!(spin_for_pause(30), MAX_SPIN_MS);
        assert_eq!(spin_for_pause(MAX_SPIN_MS + 1), IDLE_BEFORE_SLEEP_MS);
        assert_eq!(spin_for_pause(1000), IDLE_BEFORE_SLEEP_MS);
    }
}
