//! Worker threads: each owns a frame pool (its AF_XDP UMEM), a set of ports and the bridges
//! those ports belong to, and runs receive → pipeline → transmit in bursts.
//!
//! A worker busy-polls while there is traffic and sleeps in `poll()` on its ports' descriptors
//! (AF_XDP need_wakeup) and a wake-up socket when idle. The control thread talks to it only
//! through [`Command`]s on a channel; replies come back on per-request channels. Nothing a
//! worker owns is touched by another thread except the atomic counters.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use hashbrown::HashMap;

use crate::bridge::Bridge;
use crate::classify::PortId;
use crate::clock::Clock;
use crate::counters::{DropCounters, DropReason, PortCounters};
use crate::fdb::{FdbConfig, FdbRecord};
use crate::frame::{Frame, FramePool};
use crate::offload::{self, Offload};
use crate::pipeline;
use crate::port::{self, BackendInfo, BackendStats, Burst, PortError, PortIo, PortSpec};
use crate::stage::{Batch, Verdict};
use crate::trace::TraceLog;

/// A bridge's number inside the datapath.
pub type BridgeId = u32;

/// Milliseconds without traffic before a worker goes to sleep in `poll()`.
const IDLE_BEFORE_SLEEP_MS: u64 = 2;
/// Longest a worker keeps polling through a pause in traffic. When packets come in a steady
/// rhythm (request/response, ping), a worker that slept between them would add a wake-up to
/// every packet's latency; so it polls on through pauses up to twice the last one seen, as long
/// as that is at most this long. Longer pauses: it sleeps after [`IDLE_BEFORE_SLEEP_MS`], and an
/// idle switch costs nothing.
const MAX_SPIN_MS: u64 = 20;

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

/// What the final action of a traced frame was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceAction {
    /// Sent to one port.
    Output(PortId),
    /// Sent to these ports.
    Flood(Vec<PortId>),
    /// Dropped.
    Drop(DropReason),
}

/// Result of tracing one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceResult {
    /// Each stage's decision.
    pub log: TraceLog,
    /// Final action.
    pub action: TraceAction,
}

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
    /// Changes a bridge's MAC table limits.
    SetBridge {
        /// Bridge id.
        id: BridgeId,
        /// New limits.
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
    /// Reads a bridge's MAC table.
    FdbDump {
        /// Bridge.
        bridge: BridgeId,
        /// Entries.
        reply: Sender<Vec<FdbRecord>>,
    },
    /// Empties a bridge's MAC table.
    FdbFlush {
        /// Bridge.
        bridge: BridgeId,
        /// Acknowledgement.
        reply: Sender<()>,
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
    /// Stops the worker (ports are closed).
    Stop,
}

/// The control thread's handle on a worker.
pub struct WorkerHandle {
    /// Worker number.
    pub id: u32,
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

/// Starts worker `id`.
pub fn spawn(
    id: u32,
    pool_config: PoolConfig,
    clock: Arc<dyn Clock>,
    drops: Arc<DropCounters>,
) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (wake_tx, wake_rx) = UnixDatagram::pair()?;
    wake_rx.set_nonblocking(true)?;
    let sleeping = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let sleeping2 = sleeping.clone();
    let thread = std::thread::Builder::new()
        .name(format!("xvs-worker-{id}"))
        .spawn(move || {
            let (pool, umem_error) = make_pool(pool_config);
            let _ = ready_tx.send(umem_error);
            let Some(pool) = pool else { return };
            let mut w = Worker {
                id,
                engine: Engine::new(pool, drops),
                commands: rx,
                wake: wake_rx,
                sleeping: sleeping2,
                clock,
                fds: Vec::new(),
                pollfds: Vec::new(),
            };
            w.run();
        })?;
    let umem_error = ready_rx.recv().unwrap_or(Some("worker died".into()));
    Ok(WorkerHandle {
        id,
        commands: tx,
        wake: wake_tx,
        sleeping,
        thread: Some(thread),
        umem_error,
    })
}

fn make_pool(cfg: PoolConfig) -> (Option<FramePool>, Option<String>) {
    if cfg.umem {
        match FramePool::new_umem(cfg.frames, port::afxdp::RING_SIZE) {
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

struct PortSlot {
    io: Box<dyn PortIo>,
    bridge: BridgeId,
    vlan: u16,
    counters: Arc<PortCounters>,
    pending: Burst,
    /// The backend takes GSO super-frames and partial checksums ([`PortIo::takes_offloads`]).
    takes_offloads: bool,
}

/// The single-threaded forwarding engine of one worker: its pool, ports and bridges.
///
/// The worker thread drives it with [`Engine::poll`]; benches and tests drive it directly.
pub struct Engine {
    pool: FramePool,
    ports: HashMap<PortId, PortSlot>,
    /// Port ids in polling order (no allocation while iterating `ports`).
    port_order: Vec<PortId>,
    bridges: HashMap<BridgeId, Bridge>,
    drops: Arc<DropCounters>,
    batch: Batch,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("ports", &self.port_order)
            .field("pool", &self.pool)
            .finish()
    }
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
}

impl Worker {
    fn run(&mut self) {
        tracing::debug!(worker = self.id, "worker started");
        let mut last_work_ms = self.clock.now_ms();
        let mut idle_since_ms = last_work_ms;
        let mut spin_ms = IDLE_BEFORE_SLEEP_MS;
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                if !self.handle(cmd) {
                    self.engine.close_all();
                    port::afxdp::release_umem(&self.engine.pool);
                    tracing::debug!(worker = self.id, "worker stopped");
                    return;
                }
            }
            let now = self.clock.now_ms();
            let (work, busy) = self.engine.poll(now);
            if work > 0 || busy {
                let pause = now.saturating_sub(last_work_ms);
                if pause > 0 {
                    spin_ms = spin_for_pause(pause);
                }
                last_work_ms = now;
                idle_since_ms = now;
            } else if now.saturating_sub(idle_since_ms) >= spin_ms {
                self.sleep();
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
        for slot in self.engine.ports.values() {
            slot.io.poll_fds(&mut self.fds);
        }
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
            Command::SetBridge { id, config, reply } => {
                if let Some(b) = self.engine.bridges.get_mut(&id) {
                    b.fdb_mut().set_config(config);
                }
                let _ = reply.send(());
            }
            Command::SetPolicy {
                id,
                icc,
                local_port,
                reply,
            } => {
                if let Some(b) = self.engine.bridges.get_mut(&id) {
                    b.set_policy(icc, local_port);
                }
                let _ = reply.send(());
            }
            Command::DelBridge { id, reply } => {
                let ports: Vec<PortId> = self
                    .engine
                    .ports
                    .iter()
                    .filter(|(_, s)| s.bridge == id)
                    .map(|(p, _)| *p)
                    .collect();
                for p in ports {
                    self.engine.remove_port(p);
                }
                self.engine.bridges.remove(&id);
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
                let result = port::open(&spec, &mut self.engine.pool).map(|io| {
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
            Command::FdbDump { bridge, reply } => {
                let now = self.clock.now_ms();
                let records = self
                    .engine
                    .bridges
                    .get(&bridge)
                    .map(|b| b.fdb().records(now))
                    .unwrap_or_default();
                let _ = reply.send(records);
            }
            Command::FdbFlush { bridge, reply } => {
                if let Some(b) = self.engine.bridges.get_mut(&bridge) {
                    b.fdb_mut().flush();
                }
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
                let mut v: Vec<_> = self
                    .engine
                    .ports
                    .iter()
                    .map(|(id, s)| (*id, s.io.info(), s.io.backend_stats()))
                    .collect();
                v.sort_by_key(|(id, _, _)| *id);
                let _ = reply.send(v);
            }
            Command::Stop => return false,
        }
        true
    }
}

impl Engine {
    /// An engine with no ports over `pool`.
    pub fn new(pool: FramePool, drops: Arc<DropCounters>) -> Engine {
        Engine {
            pool,
            ports: HashMap::new(),
            port_order: Vec::new(),
            bridges: HashMap::new(),
            drops,
            batch: Batch::default(),
        }
    }

    /// The frame pool.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// Adds a bridge.
    pub fn add_bridge(&mut self, id: BridgeId, name: String, config: FdbConfig) {
        self.bridges
            .insert(id, Bridge::new(name, config, self.drops.clone()));
    }

    /// A bridge.
    pub fn bridge_mut(&mut self, id: BridgeId) -> Option<&mut Bridge> {
        self.bridges.get_mut(&id)
    }

    /// One pass: a burst from every port, housekeeping, ageing. Returns (frames received,
    /// whether any port still has work in flight).
    #[inline]
    pub fn poll(&mut self, now: u64) -> (usize, bool) {
        let mut work = 0;
        for i in 0..self.port_order.len() {
            work += self.poll_port(self.port_order[i], now);
        }
        let mut busy = false;
        for i in 0..self.port_order.len() {
            if let Some(slot) = self.ports.get_mut(&self.port_order[i]) {
                busy |= slot.io.maintain(&mut self.pool);
            }
        }
        for br in self.bridges.values_mut() {
            br.maybe_expire(now);
        }
        (work, busy)
    }

    /// Receives one burst from `pid` and forwards it; returns frames received.
    fn poll_port(&mut self, pid: PortId, now: u64) -> usize {
        let Some(slot) = self.ports.get_mut(&pid) else {
            return 0;
        };
        let n = slot.io.rx_burst(&mut self.pool, &mut self.batch.frames);
        if n == 0 {
            return 0;
        }
        let (bridge_id, vlan) = (slot.bridge, slot.vlan);
        let bytes: u64 = self.batch.frames.iter().map(|f| f.len() as u64).sum();
        slot.counters.add_rx(n as u64, bytes);
        let Some(bridge) = self.bridges.get_mut(&bridge_id) else {
            self.batch.free_all(&mut self.pool);
            return n;
        };
        pipeline::run(&self.pool, bridge, &mut self.batch, pid, vlan, now, None);
        let dropped = pipeline::count_drops(&self.batch, &self.drops);
        if dropped > 0 {
            slot.counters
                .rx_drops
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
        self.output(bridge_id);
        self.flush_pending();
        n
    }

    /// Moves every frame of the batch to its output ports' pending bursts (or frees it).
    fn output(&mut self, bridge_id: BridgeId) {
        let Engine {
            pool,
            ports,
            bridges,
            batch,
            drops,
            ..
        } = self;
        let Some(bridge) = bridges.get(&bridge_id) else {
            batch.free_all(pool);
            return;
        };
        for (i, frame) in batch.frames.drain(..).enumerate() {
            match batch.verdicts[i] {
                Verdict::Output(p) => enqueue(pool, ports, drops, p, frame),
                Verdict::Flood => {
                    let key = &batch.keys[i];
                    let mut targets = bridge.flood_targets(key).peekable();
                    if targets.peek().is_none() {
                        drops.add(DropReason::NoFloodTarget, 1);
                        pool.free(frame);
                        continue;
                    }
                    let mut frame = Some(frame);
                    while let Some(p) = targets.next() {
                        let f = if targets.peek().is_some() {
                            let Some(original) = frame.as_ref() else {
                                break;
                            };
                            match pool.clone_frame(original) {
                                Some(c) => c,
                                None => {
                                    drops.add(DropReason::PoolExhausted, 1);
                                    continue;
                                }
                            }
                        } else {
                            match frame.take() {
                                Some(f) => f,
                                None => break,
                            }
                        };
                        enqueue(pool, ports, drops, p, f);
                    }
                    if let Some(f) = frame {
                        pool.free(f);
                    }
                }
                Verdict::Drop(_) | Verdict::Next | Verdict::Punt => pool.free(frame),
            }
        }
    }

    fn flush_pending(&mut self) {
        for slot in self.ports.values_mut() {
            if !slot.pending.is_empty() {
                transmit(&mut self.pool, slot, &self.drops);
            }
        }
    }

    /// Attaches a port backend to a bridge.
    pub fn insert_port(
        &mut self,
        id: PortId,
        bridge: BridgeId,
        io: Box<dyn PortIo>,
        vlan: u16,
        counters: Arc<PortCounters>,
    ) {
        if let Some(b) = self.bridges.get_mut(&bridge) {
            b.add_member(id, vlan);
        }
        let takes_offloads = io.takes_offloads();
        self.ports.insert(
            id,
            PortSlot {
                io,
                bridge,
                vlan,
                counters,
                pending: Burst::new(),
                takes_offloads,
            },
        );
        self.port_order.retain(|p| *p != id);
        self.port_order.push(id);
    }

    /// Detaches a port and gives its frames back.
    pub fn remove_port(&mut self, id: PortId) {
        if let Some(mut slot) = self.ports.remove(&id) {
            for f in slot.pending.drain(..) {
                self.pool.free(f);
            }
            slot.io.detach(&mut self.pool);
            if let Some(b) = self.bridges.get_mut(&slot.bridge) {
                b.remove_member(id);
            }
        }
        self.port_order.retain(|p| *p != id);
    }

    /// Detaches every port.
    pub fn close_all(&mut self) {
        let ids: Vec<PortId> = self.ports.keys().copied().collect();
        for id in ids {
            self.remove_port(id);
        }
    }

    /// Runs one frame through a bridge's pipeline without side effects.
    pub fn trace(
        &mut self,
        bridge_id: BridgeId,
        in_port: PortId,
        bytes: &[u8],
        now: u64,
    ) -> TraceResult {
        let mut log = TraceLog::default();
        let vlan = self.ports.get(&in_port).map(|s| s.vlan).unwrap_or(0);
        let Some(bridge) = self.bridges.get_mut(&bridge_id) else {
            log.record("bridge", "no such bridge on this worker");
            return TraceResult {
                log,
                action: TraceAction::Drop(DropReason::PortGone),
            };
        };
        let Some(frame) = self.pool.alloc_copy(bytes) else {
            log.record("input", "no free frame (or frame too large)");
            return TraceResult {
                log,
                action: TraceAction::Drop(DropReason::PoolExhausted),
            };
        };
        let mut batch = Batch::default();
        if let Err(f) = batch.push(frame) {
            self.pool.free(f);
        }
        pipeline::run(
            &self.pool,
            bridge,
            &mut batch,
            in_port,
            vlan,
            now,
            Some(&mut log),
        );
        let action = match batch.verdicts[0] {
            Verdict::Output(p) => TraceAction::Output(p),
            Verdict::Flood => {
                let targets: Vec<PortId> = bridge.flood_targets(&batch.keys[0]).collect();
                if targets.is_empty() {
                    TraceAction::Drop(DropReason::NoFloodTarget)
                } else {
                    TraceAction::Flood(targets)
                }
            }
            Verdict::Drop(r) => TraceAction::Drop(r),
            Verdict::Next | Verdict::Punt => TraceAction::Drop(DropReason::PortGone),
        };
        batch.free_all(&mut self.pool);
        TraceResult { log, action }
    }
}

/// Adds `frame` to port `p`'s pending burst, transmitting first if it is full. A frame with
/// offloads still to do, bound for a port that cannot take them, is finished in software
/// first ([`finish_offloads`]).
#[inline]
fn enqueue(
    pool: &mut FramePool,
    ports: &mut HashMap<PortId, PortSlot>,
    drops: &DropCounters,
    p: PortId,
    frame: Frame,
) {
    let Some(slot) = ports.get_mut(&p) else {
        drops.add(DropReason::PortGone, 1);
        pool.free(frame);
        return;
    };
    if !slot.takes_offloads && (!frame.offload().is_none() || pool.is_jumbo(&frame)) {
        finish_offloads(pool, slot, drops, frame);
        return;
    }
    push_pending(pool, slot, drops, frame);
}

#[inline]
fn push_pending(pool: &mut FramePool, slot: &mut PortSlot, drops: &DropCounters, frame: Frame) {
    if slot.pending.is_full() {
        transmit(pool, slot, drops);
    }
    slot.pending.push(frame);
}

/// Queues `frame` for a port without offloads: a GSO super-frame is cut into ordinary frames
/// (checksums complete), a partial checksum is completed in place, and a frame that is still
/// too large for an ordinary frame is dropped as oversize.
fn finish_offloads(pool: &mut FramePool, slot: &mut PortSlot, drops: &DropCounters, frame: Frame) {
    let off = frame.offload();
    if off.is_gso() {
        segment(pool, slot, drops, &frame, &off);
        pool.free(frame);
        return;
    }
    let mut frame = frame;
    if off.needs_csum() && offload::complete_checksum(pool.data_mut(&mut frame), &off).is_err() {
        drops.add(DropReason::OffloadFailed, 1);
        pool.free(frame);
        return;
    }
    frame.set_offload(Offload::NONE);
    if pool.is_jumbo(&frame) {
        drops.add(DropReason::Oversize, 1);
        pool.free(frame);
        return;
    }
    push_pending(pool, slot, drops, frame);
}

/// Segments a GSO super-frame into ordinary frames on `slot`'s pending burst, a burst at a
/// time: the segmenter borrows the pool's bytes, so each burst's output frames are taken from
/// the pool first and the segmenter is made again (it only parses the headers) to resume where
/// the last burst ended. Frames not needed are given straight back.
fn segment(
    pool: &mut FramePool,
    slot: &mut PortSlot,
    drops: &DropCounters,
    frame: &Frame,
    off: &Offload,
) {
    let mut done = 0;
    loop {
        let mut outs = Burst::new();
        while !outs.is_full() {
            match pool.alloc() {
                Some(f) => outs.push(f),
                None => break,
            }
        }
        let mut made = 0;
        let outcome = offload::Segmenter::new(pool.data(frame), off).map(|mut seg| {
            seg.skip(done);
            for out in outs.iter_mut() {
                match seg.next_into(pool.buffer_mut(out)) {
                    Some(Ok(n)) => {
                        out.set_len(n);
                        made += 1;
                    }
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
            Ok(seg.remaining())
        });
        for (i, out) in outs.into_iter().enumerate() {
            if i < made {
                push_pending(pool, slot, drops, out);
            } else {
                pool.free(out);
            }
        }
        match outcome {
            Ok(Ok(0)) => return,
            Ok(Ok(left)) if made == 0 => {
                drops.add(DropReason::PoolExhausted, left as u64);
                return;
            }
            Ok(Ok(_)) => done += made,
            Ok(Err(_)) | Err(_) => {
                drops.add(DropReason::OffloadFailed, 1);
                return;
            }
        }
    }
}

#[inline]
fn transmit(pool: &mut FramePool, slot: &mut PortSlot, drops: &DropCounters) {
    let out = slot.io.tx_burst(pool, &mut slot.pending);
    slot.counters
        .add_tx(u64::from(out.sent), out.bytes, u64::from(out.dropped));
    if out.dropped > 0 {
        drops.add(DropReason::TxRingFull, u64::from(out.dropped));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    use super::{Engine, IDLE_BEFORE_SLEEP_MS, MAX_SPIN_MS, spin_for_pause};
    use crate::counters::{DropCounters, DropReason, PortCounters};
    use crate::fdb::FdbConfig;
    use crate::frame::FramePool;
    use crate::offload::Offload;
    use crate::port::mem::{MemPort, MemPortHandle};

    /// An IPv4/TCP frame from 10.0.0.1 to 10.0.0.2 whose TCP checksum field holds only the
    /// pseudo-header sum, as a TAP with offloads hands it over.
    fn partial_tcp(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 5201, 1000, 512)
            .ack(1)
            .psh()
            .write(&mut f, payload)
            .unwrap();
        let tcp_len = (f.len() - 34) as u32;
        let mut sum: u32 = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + tcp_len;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[50..52].copy_from_slice(&(sum as u16).to_be_bytes());
        f
    }

    fn tcp_checksum_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (&p.net, &p.transport)
        else {
            return false;
        };
        let want = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        want == tcp.checksum()
    }

    fn engine_with(ports: [MemPort; 3]) -> (Engine, Arc<DropCounters>) {
        let drops = Arc::new(DropCounters::default());
        let mut e = Engine::new(FramePool::new_heap(512).unwrap(), drops.clone());
        e.add_bridge(1, "br".into(), FdbConfig::default());
        for (i, p) in ports.into_iter().enumerate() {
            let id = i as u32 + 1;
            e.insert_port(id, 1, Box::new(p), 0, Arc::new(PortCounters::default()));
        }
        (e, drops)
    }

    fn mem(offloads: bool) -> (MemPort, MemPortHandle) {
        let (p, h) = MemPort::new();
        (p.with_offloads(offloads), h)
    }

    #[test]
    fn offloads_pass_to_ports_that_take_them_and_are_finished_for_the_rest() {
        let ((a, ha), (b, hb), (c, hc)) = (mem(true), mem(false), mem(true));
        let (mut e, drops) = engine_with([a, b, c]);
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let sup = partial_tcp(&payload);
        let gso = Offload::tcpv4_gso(1448);
        // Unknown destination: flooded to b (no offloads) and c (offloads).
        ha.inject_with_offload(&sup, gso);
        for _ in 0..4 {
            e.poll(0);
        }
        let to_c = hc.take_tx_with_offload();
        assert_eq!(
            to_c,
            vec![(sup.clone(), gso)],
            "c takes the super-frame as it is"
        );
        let to_b = hb.take_tx_with_offload();
        assert_eq!(to_b.len(), payload.len().div_ceil(1448));
        let mut joined = Vec::new();
        for (seg, off) in &to_b {
            assert_eq!(*off, Offload::NONE);
            assert!(seg.len() <= 14 + 20 + 20 + 1448);
            assert!(tcp_checksum_ok(seg), "segment checksum");
            joined.extend_from_slice(&seg[54..]);
        }
        assert_eq!(joined, payload);

        // A small frame with only its checksum partial: completed for b, left for c.
        let small = partial_tcp(b"hello");
        let csum = Offload {
            gso_type: Offload::GSO_NONE,
            gso_size: 0,
            ..gso
        };
        ha.inject_with_offload(&small, csum);
        e.poll(0);
        let to_b = hb.take_tx_with_offload();
        assert_eq!(to_b.len(), 1);
        assert!(tcp_checksum_ok(&to_b[0].0));
        assert_eq!(to_b[0].1, Offload::NONE);
        assert_eq!(hc.take_tx_with_offload(), vec![(small, csum)]);
        let dropped: u64 = DropReason::ALL.iter().map(|r| drops.get(*r)).sum();
        assert_eq!(dropped, 0, "no drops");
        assert_eq!(e.pool().available(), 512, "every frame back in the pool");
        assert_eq!(
            e.pool().jumbo_available(),
            crate::frame::JUMBO_FRAMES as usize
        );
    }

    #[test]
    fn segments_the_pool_cannot_hold_are_counted() {
        let drops = Arc::new(DropCounters::default());
        let mut e = Engine::new(FramePool::new_heap(4).unwrap(), drops.clone());
        e.add_bridge(1, "br".into(), FdbConfig::default());
        let ((a, ha), (b, hb)) = (mem(true), mem(false));
        for (id, p) in [(1, a), (2, b)] {
            e.insert_port(id, 1, Box::new(p), 0, Arc::new(PortCounters::default()));
        }
        // 7 segments, 4 ordinary frames: 4 go out, 3 are counted, nothing leaks.
        ha.inject_with_offload(&partial_tcp(&[7; 10_000]), Offload::tcpv4_gso(1448));
        e.poll(0);
        assert_eq!(hb.take_tx().len(), 4);
        assert_eq!(drops.get(DropReason::PoolExhausted), 3);
        assert_eq!(e.pool().available(), 4);
        assert_eq!(
            e.pool().jumbo_available(),
            crate::frame::JUMBO_FRAMES as usize
        );
    }

    #[test]
    fn malformed_offload_requests_are_counted_drops() {
        let ((a, ha), (b, hb), (c, _hc)) = (mem(true), mem(false), mem(true));
        let (mut e, drops) = engine_with([a, b, c]);
        let frame = partial_tcp(&[0; 3000]);
        // A checksum range past the end of the frame, and a UDP GSO type the switch does not
        // segment: both dropped for b, with a reason.
        let bad_range = Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 9000,
            ..Offload::NONE
        };
        let udp_gso = Offload {
            gso_type: Offload::GSO_UDP_L4,
            gso_size: 1000,
            ..Offload::NONE
        };
        ha.inject_with_offload(&frame, bad_range);
        ha.inject_with_offload(&frame, udp_gso);
        e.poll(0);
        assert!(hb.take_tx().is_empty());
        assert_eq!(drops.get(DropReason::OffloadFailed), 2);
        assert_eq!(e.pool().available(), 512);
    }

    #[test]
    fn spin_follows_short_pauses_only() {
        assert_eq!(spin_for_pause(0), IDLE_BEFORE_SLEEP_MS);
        assert_eq!(spin_for_pause(5), 10);
        assert_eq!(spin_for_pause(15), MAX_SPIN_MS);
        assert_eq!(spin_for_pause(MAX_SPIN_MS + 1), IDLE_BEFORE_SLEEP_MS);
        assert_eq!(spin_for_pause(1000), IDLE_BEFORE_SLEEP_MS);
    }
}
