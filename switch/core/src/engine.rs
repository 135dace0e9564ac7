//! The single-threaded forwarding engine of one worker: its pool, ports, bridges (each a
//! domain and a chain of stages) and hand-off rings. One pass receives a burst from every
//! port (and from other workers), runs each burst through its bridge's chain, and sends.
//!
//! The worker thread drives it with [`Engine::poll`]; benches and tests drive it directly.
//! Nothing here is shared: other threads see only the atomic counters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use hashbrown::HashMap;

use crate::chain::{Chain, PipelineDrop};
use crate::classify::PortId;
use crate::counters::{DropCounters, PortCounters};
use crate::domain::Domain;
use crate::drop::DropReason;
use crate::fdb::FdbConfig;
use crate::frame::FramePool;
use crate::handoff::Handoff;
use crate::l2::L2Stage;
use crate::output::{Output, OutputCounters, OutputDrop, PortSlot, transmit};
use crate::port::{Burst, PortIo};
use crate::stage::{Batch, FrameMeta, StageContext, Verdict};
use crate::trace::TraceLog;
use crate::wire::BridgeId;

/// A port another worker polls, as this worker knows it ([`Engine::set_remote_port`]).
pub struct RemotePort {
    /// Its bridge.
    pub bridge: BridgeId,
    /// Its access VLAN.
    pub vlan: u16,
    /// The worker that polls it.
    pub worker: u16,
    /// A member of this worker's copy of the bridge's domain (floods reach it from here).
    pub member: bool,
    /// A transmit-only handle on it, when it can be written from any thread (a TAP).
    pub writer: Option<Box<dyn PortIo>>,
    /// Its counters (shared with the polling worker's slot).
    pub counters: Arc<PortCounters>,
}

/// One bridge on its worker: forwarding domain and chain of stages.
pub(crate) struct BridgeRec {
    pub(crate) domain: Domain,
    pub(crate) chain: Chain,
}

/// One worker's frame pool, accounted (`xvsctl stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Frames in the pool.
    pub capacity: usize,
    /// Frames free.
    pub free: usize,
    /// Frames its ports hold (AF_XDP fill rings and TX in flight).
    pub in_ports: usize,
    /// Frames its stages hold (waiting for a neighbour, copies not yet sent).
    pub in_stages: usize,
    /// capacity - free - in_ports - in_stages: 0 unless a frame leaked (or was freed twice).
    pub unaccounted: i64,
}

/// What the final action of a traced frame was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceAction {
    /// Sent to one port.
    Output(PortId),
    /// Sent to these ports.
    Flood(Vec<PortId>),
    /// Handed to the local stack on this port.
    Local(PortId),
    /// Handed to another worker.
    Handoff(u16),
    /// Kept by a stage (waiting for a neighbour resolution).
    Held,
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

/// The forwarding engine of one worker.
pub struct Engine {
    pool: FramePool,
    pub(crate) ports: HashMap<PortId, PortSlot>,
    /// Port ids in polling order (no allocation while iterating `ports`).
    port_order: Vec<PortId>,
    pub(crate) bridges: HashMap<BridgeId, BridgeRec>,
    drops: Arc<DropCounters>,
    counters: Arc<OutputCounters>,
    handoff: Handoff,
    batch: Batch,
    /// Frames patched over to another bridge of this worker, waiting for its chain.
    patched: VecDeque<(crate::frame::Frame, FrameMeta)>,
    /// Ports of replicated bridges that another worker polls: output to one is a hand-off.
    remote_ports: HashMap<PortId, u16>,
    worker: u16,
    workers: u16,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker", &self.worker)
            .field("ports", &self.port_order)
            .field("pool", &self.pool)
            .finish()
    }
}

/// Registers the drop reasons of every stage this crate builds and of the engine itself, in
/// the order `xvsctl stats` lists them, so each shows (at zero) before its first drop.
pub fn register_reasons() {
    crate::classify::ClassifyDrop::set().register();
    crate::l2::L2Drop::set().register();
    PipelineDrop::set().register();
    OutputDrop::set().register();
    crate::handoff::HandoffDrop::set().register();
    crate::route::RouteDrop::set().register();
    crate::router::RouterDrop::set().register();
}

impl Engine {
    /// An engine with no ports over `pool`, alone (no other workers).
    pub fn new(pool: FramePool, drops: Arc<DropCounters>) -> Engine {
        Engine::with_handoff(pool, drops, 0, Handoff::default(), 1)
    }

    /// Worker `worker`'s engine (of `workers`), with its ends of the hand-off rings.
    pub fn with_handoff(
        pool: FramePool,
        drops: Arc<DropCounters>,
        worker: u16,
        handoff: Handoff,
        workers: u16,
    ) -> Engine {
        register_reasons();
        Engine {
            pool,
            ports: HashMap::new(),
            port_order: Vec::new(),
            bridges: HashMap::new(),
            drops,
            counters: Arc::default(),
            handoff,
            batch: Batch::default(),
            patched: VecDeque::with_capacity(4 * crate::batch::BURST),
            remote_ports: HashMap::new(),
            worker,
            workers,
        }
    }

    /// This worker's number.
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// Records that `port`, of a bridge this worker runs a chain for, is polled by another
    /// worker (`Some`), or forgets it (`None`). Output to it from here goes through its writer
    /// when it has one, else is handed over to that worker. A member port (of a bridge whose
    /// ports are spread over workers) joins this worker's copy of the bridge's domain, so
    /// floods reach it; when it goes, its MACs leave this worker's table.
    pub fn set_remote_port(&mut self, id: PortId, port: Option<RemotePort>) {
        match port {
            Some(r) if r.worker != self.worker => {
                self.remote_ports.insert(id, r.worker);
                if r.member
                    && let Some(b) = self.bridges.get_mut(&r.bridge)
                {
                    b.domain.add_member(id, r.vlan);
                }
                if let Some(io) = r.writer {
                    let takes_offloads = io.takes_offloads();
                    self.ports.insert(
                        id,
                        PortSlot {
                            io,
                            bridge: r.bridge,
                            vlan: r.vlan,
                            counters: r.counters,
                            pending: Burst::new(),
                            takes_offloads,
                            remote: true,
                        },
                    );
                }
            }
            _ => {
                self.remote_ports.remove(&id);
                if self.ports.get(&id).is_some_and(|s| s.remote) {
                    self.remove_port(id);
                    return;
                }
                for b in self.bridges.values_mut() {
                    if b.domain.vlan_of(id).is_some() {
                        b.domain.remove_member(id);
                        b.chain.port_removed(id);
                    }
                }
            }
        }
    }

    /// A transmit-only handle on port `id`, polled here, for another worker.
    pub fn remote_writer(&self, id: PortId) -> Option<Box<dyn PortIo>> {
        self.ports
            .get(&id)
            .filter(|s| !s.remote)
            .and_then(|s| s.io.remote_writer())
    }

    /// The frame pool.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// The frame pool, writable (port backends open against it).
    pub fn pool_mut(&mut self) -> &mut FramePool {
        &mut self.pool
    }

    /// How frames multiplied and moved between workers (for accounting).
    pub fn output_counters(&self) -> Arc<OutputCounters> {
        self.counters.clone()
    }

    /// Adds a bridge running the plain bridge chain (classify → l2).
    pub fn add_bridge(&mut self, id: BridgeId, name: String, config: FdbConfig) {
        tracing::debug!(worker = self.worker, bridge = %name, "bridge added");
        self.bridges.insert(
            id,
            BridgeRec {
                domain: Domain::default(),
                chain: Chain::bridge(config),
            },
        );
    }

    /// Swaps a bridge's chain between two passes; its stages adopt the old ones' state.
    pub fn set_chain(&mut self, id: BridgeId, chain: Chain) -> bool {
        match self.bridges.get_mut(&id) {
            Some(b) => {
                let n = b.chain.replace(chain, &mut self.pool, &self.drops);
                self.counters.released.fetch_add(n, Relaxed);
                true
            }
            None => false,
        }
    }

    /// A bridge's chain.
    pub fn chain_mut(&mut self, id: BridgeId) -> Option<&mut Chain> {
        self.bridges.get_mut(&id).map(|b| &mut b.chain)
    }

    /// The names of a bridge's stages.
    pub fn chain_names(&self, id: BridgeId) -> Option<Vec<&'static str>> {
        self.bridges.get(&id).map(|b| b.chain.names())
    }

    /// A bridge's L2 stage (its MAC table).
    pub fn l2(&self, id: BridgeId) -> Option<&L2Stage> {
        self.bridges.get(&id)?.chain.stage::<L2Stage>()
    }

    /// A bridge's L2 stage, writable.
    pub fn l2_mut(&mut self, id: BridgeId) -> Option<&mut L2Stage> {
        self.bridges.get_mut(&id)?.chain.stage_mut::<L2Stage>()
    }

    /// A bridge's domain, writable (icc, the local stack's port).
    pub fn domain_mut(&mut self, id: BridgeId) -> Option<&mut Domain> {
        self.bridges.get_mut(&id).map(|b| &mut b.domain)
    }

    /// Removes a bridge and its ports.
    pub fn remove_bridge(&mut self, id: BridgeId) {
        let ports: Vec<PortId> = self
            .ports
            .iter()
            .filter(|(_, s)| s.bridge == id)
            .map(|(p, _)| *p)
            .collect();
        for p in ports {
            self.remove_port(p);
        }
        if let Some(mut b) = self.bridges.remove(&id) {
            let n = b.chain.discard(&mut self.pool, &self.drops);
            self.counters.released.fetch_add(n, Relaxed);
        }
    }

    /// One pass: a burst from every port and from other workers, housekeeping, ageing.
    /// Returns (frames received, whether any port still has work in flight).
    #[inline]
    pub fn poll(&mut self, now: u64) -> (usize, bool) {
        let mut work = 0;
        for i in 0..self.port_order.len() {
            work += self.poll_port(self.port_order[i], now);
        }
        work += self.poll_handoff(now);
        let mut busy = self.handoff.pending();
        for i in 0..self.port_order.len() {
            if let Some(slot) = self.ports.get_mut(&self.port_order[i]) {
                busy |= slot.io.maintain(&mut self.pool);
            }
        }
        for br in self.bridges.values_mut() {
            br.chain.tick(now);
        }
        work += self.release(now);
        (work, busy)
    }

    /// Batches one bridge's chain may release per pass (2048 frames).
    const RELEASE_ROUNDS: usize = 64;

    /// Sends what stages kept or made and now let go (frames that waited for a neighbour, ARP
    /// requests): a batch per bridge whose chain has any. Returns how many.
    fn release(&mut self, now: u64) -> usize {
        let mut n = 0;
        let ids: arrayvec::ArrayVec<BridgeId, 16> = self
            .bridges
            .iter()
            .filter(|(_, b)| b.chain.has_release())
            .map(|(id, _)| *id)
            .take(16)
            .collect();
        for id in ids {
            // A chain may hold more than a batch (a tunnel's segments of a burst of TCP
            // super-frames): drain it, a batch at a time, up to a bound per pass.
            for _ in 0..Self::RELEASE_ROUNDS {
                self.batch.free_all(&mut self.pool);
                let Some(((), made)) = self.on_chain(id, now, |c, ctx, b| c.release(ctx, b)) else {
                    break;
                };
                let (batch, counters) = (&self.batch, &self.counters);
                let out = batch.len();
                if out == 0 {
                    break;
                }
                counters.generated.fetch_add(made, Relaxed);
                counters
                    .released
                    .fetch_add((out as u64).saturating_sub(made), Relaxed);
                n += out;
                self.finish_batch(id);
                self.run_patched(now);
                if !self.bridges.get(&id).is_some_and(|b| b.chain.has_release()) {
                    break;
                }
            }
        }
        n
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
        self.batch.begin(bridge_id, pid, vlan);
        let dropped = self.run_batch(bridge_id, now);
        if dropped > 0
            && let Some(slot) = self.ports.get(&pid)
        {
            slot.counters.rx_drops.fetch_add(dropped, Relaxed);
        }
        n
    }

    /// Runs the frames other workers handed over, a bridge at a time, up to a few bursts per
    /// pass; returns how many.
    fn poll_handoff(&mut self, now: u64) -> usize {
        const MAX_PER_PASS: usize = 4 * crate::batch::BURST;
        let mut n = 0;
        let mut carry = None;
        loop {
            if carry.is_none() && n >= MAX_PER_PASS {
                break;
            }
            let Some(first) = carry
                .take()
                .or_else(|| self.handoff.receive(&mut self.pool))
            else {
                break;
            };
            if let Some(port) = first.out_port {
                // Switched already by the sender: straight out of this worker's port.
                self.counters.handed_in.fetch_add(1, Relaxed);
                n += 1;
                crate::output::enqueue(
                    &mut self.pool,
                    &mut self.ports,
                    &self.drops,
                    &self.counters,
                    port,
                    first.frame,
                );
                continue;
            }
            let bridge = first.bridge;
            let mut next = Some(first);
            while let Some(a) = next.take() {
                if a.bridge != bridge || a.out_port.is_some() {
                    // Another bridge's frame (or one to send as it is) starts the next batch.
                    carry = Some(a);
                    break;
                }
                let i = self.batch.len();
                let meta = FrameMeta {
                    bridge,
                    handed_off: true,
                    patched_from: a.origin.patched_from,
                    tunnel_peer: a.origin.tunnel_peer,
                    ..FrameMeta::default()
                };
                if let Err(f) = self.batch.push(a.frame, meta) {
                    self.pool.free(f);
                    break;
                }
                self.batch.keys[i].in_port = a.in_port;
                self.batch.keys[i].vlan = a.vlan;
                n += 1;
                if self.batch.frames.is_full() {
                    break;
                }
                next = self.handoff.receive(&mut self.pool);
            }
            self.counters
                .handed_in
                .fetch_add(self.batch.len() as u64, Relaxed);
            self.run_batch(bridge, now);
        }
        self.flush_pending();
        n
    }

    /// Runs the batch (frames, seeded keys and metadata set) through `bridge_id`'s chain,
    /// counts its drops, and sends what is left; then runs the frames it patched over to
    /// other bridges. Returns the frames the first chain dropped.
    fn run_batch(&mut self, bridge_id: BridgeId, now: u64) -> u64 {
        let dropped = self.run_chain(bridge_id, now);
        self.run_patched(now);
        dropped
    }

    /// [`run_batch`](Self::run_batch) without the patched frames.
    fn run_chain(&mut self, bridge_id: BridgeId, now: u64) -> u64 {
        match self.on_chain(bridge_id, now, |c, ctx, b| c.run(ctx, b)) {
            Some(((), made)) => {
                self.counters.generated.fetch_add(made, Relaxed);
                self.finish_batch(bridge_id)
            }
            None => {
                let n = self.batch.len() as u64;
                self.drops.add(PipelineDrop::NoBridge, n);
                self.batch.free_all(&mut self.pool);
                n
            }
        }
    }

    /// Runs `f` on bridge `id`'s chain with a stage context over this worker's pool and the
    /// engine's batch; returns what `f` returned and how many frames the stages made, or
    /// `None` when the bridge is not on this worker.
    fn on_chain<R>(
        &mut self,
        id: BridgeId,
        now: u64,
        f: impl FnOnce(&mut Chain, &mut StageContext<'_>, &mut Batch) -> R,
    ) -> Option<(R, u64)> {
        let Engine {
            pool,
            bridges,
            batch,
            drops,
            worker,
            workers,
            ..
        } = self;
        let bridge = bridges.get_mut(&id)?;
        let mut ctx =
            StageContext::new(pool, &bridge.domain, drops, now).on_worker(*worker, *workers);
        let r = f(&mut bridge.chain, &mut ctx, batch);
        Some((r, ctx.generated))
    }

    /// Counts the batch's drops and sends it (its verdicts decided); returns the drops.
    fn finish_batch(&mut self, bridge_id: BridgeId) -> u64 {
        let Engine {
            pool,
            ports,
            bridges,
            batch,
            drops,
            counters,
            handoff,
            patched,
            remote_ports,
            ..
        } = self;
        let dropped = count_drops(batch, drops);
        let Some(bridge) = bridges.get(&bridge_id) else {
            batch.free_all(pool);
            return dropped;
        };
        let mut out = Output {
            pool,
            ports,
            drops,
            counters,
            handoff,
            patched,
            remote_ports,
        };
        out.dispatch(batch, &bridge.domain);
        self.flush_pending();
        dropped
    }

    /// Runs the frames patched over to other bridges, a bridge's at a time (each entering on
    /// that bridge's local port), until none is left (a frame crosses at most
    /// [`MAX_PATCHES`](crate::batch::MAX_PATCHES) bridges, so this ends).
    fn run_patched(&mut self, now: u64) {
        while let Some((_, first)) = self.patched.front() {
            let target = first.bridge;
            let in_port = self
                .bridges
                .get(&target)
                .and_then(|b| b.domain.local_port())
                .unwrap_or(0);
            let mut i = 0;
            while i < self.patched.len() && !self.batch.frames.is_full() {
                if self.patched[i].1.bridge != target {
                    i += 1;
                    continue;
                }
                let Some((frame, meta)) = self.patched.remove(i) else {
                    break;
                };
                let j = self.batch.len();
                let enter = meta.enter_port.unwrap_or(in_port);
                if let Err(f) = self.batch.push(frame, meta) {
                    self.pool.free(f);
                    break;
                }
                self.batch.keys[j].in_port = enter;
                self.batch.keys[j].vlan = 0;
            }
            self.run_chain(target, now);
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
            b.domain.add_member(id, vlan);
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
                remote: false,
            },
        );
        self.port_order.retain(|p| *p != id);
        self.port_order.push(id);
    }

    /// Detaches a port and gives its frames back (frames still waiting to be sent on it are
    /// counted `port_gone`).
    pub fn remove_port(&mut self, id: PortId) {
        if let Some(mut slot) = self.ports.remove(&id) {
            self.drops
                .add(OutputDrop::PortGone, slot.pending.len() as u64);
            for f in slot.pending.drain(..) {
                self.pool.free(f);
            }
            slot.io.detach(&mut self.pool);
            if let Some(b) = self.bridges.get_mut(&slot.bridge) {
                b.domain.remove_member(id);
                b.chain.port_removed(id);
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

    /// Runs one frame through a bridge's chain as a dry run: every stage records its decision,
    /// none creates state, nothing is sent.
    pub fn trace(
        &mut self,
        bridge_id: BridgeId,
        in_port: PortId,
        bytes: &[u8],
        now: u64,
    ) -> TraceResult {
        let mut log = TraceLog::default();
        let vlan = self.ports.get(&in_port).map(|s| s.vlan).unwrap_or(0);
        if !self.bridges.contains_key(&bridge_id) {
            log.record("bridge", "no such bridge on this worker");
            return TraceResult {
                log,
                action: TraceAction::Drop(PipelineDrop::NoBridge.into()),
            };
        }
        let Some(frame) = self.pool.alloc_copy(bytes) else {
            log.record("input", "no free frame (or frame too large)");
            return TraceResult {
                log,
                action: TraceAction::Drop(OutputDrop::PoolExhausted.into()),
            };
        };
        let mut batch = Batch::default();
        if let Err(f) = batch.push(frame, FrameMeta::default()) {
            self.pool.free(f);
        }
        batch.begin(bridge_id, in_port, vlan);
        let mut current = bridge_id;
        let action = loop {
            let Some(bridge) = self.bridges.get_mut(&current) else {
                log.record("bridge", "no such bridge on this worker");
                break TraceAction::Drop(PipelineDrop::NoBridge.into());
            };
            let mut ctx = StageContext::new(&mut self.pool, &bridge.domain, &self.drops, now)
                .traced(&mut log)
                .on_worker(self.worker, self.workers);
            bridge.chain.run(&mut ctx, &mut batch);
            break match batch.verdicts[0] {
                Verdict::Output(p)
                    if self.remote_ports.contains_key(&p) && !self.ports.contains_key(&p) =>
                {
                    TraceAction::Handoff(self.remote_ports[&p])
                }
                Verdict::Output(p) => TraceAction::Output(p),
                Verdict::Flood => {
                    let targets: Vec<PortId> =
                        bridge.domain.flood_targets(&batch.keys[0]).collect();
                    if targets.is_empty() {
                        TraceAction::Drop(OutputDrop::NoFloodTarget.into())
                    } else {
                        TraceAction::Flood(targets)
                    }
                }
                Verdict::Local => match bridge.domain.local_port() {
                    Some(p) => TraceAction::Local(p),
                    None => TraceAction::Drop(OutputDrop::NoLocalStack.into()),
                },
                Verdict::Patch(to) => {
                    let m = batch.meta[0];
                    if m.patches >= crate::batch::MAX_PATCHES {
                        break TraceAction::Drop(PipelineDrop::PatchLoop.into());
                    }
                    log.record("patch", format!("to bridge {to}"));
                    let in_port = self
                        .bridges
                        .get(&to)
                        .and_then(|b| b.domain.local_port())
                        .unwrap_or(0);
                    batch.begin(to, in_port, 0);
                    batch.meta[0].patched_from = Some(current);
                    batch.meta[0].patches = m.patches + 1;
                    current = to;
                    continue;
                }
                Verdict::Handoff(w) => TraceAction::Handoff(w),
                Verdict::Held => TraceAction::Held,
                Verdict::Drop(r) => TraceAction::Drop(r),
                Verdict::Next => TraceAction::Drop(PipelineDrop::NoVerdict.into()),
            };
        };
        batch.free_all(&mut self.pool);
        TraceResult { log, action }
    }

    /// Backend descriptions and kernel counters of every port, by port id.
    pub fn port_stats(&self) -> Vec<(PortId, crate::port::BackendInfo, crate::port::BackendStats)> {
        let mut v: Vec<_> = self
            .ports
            .iter()
            .filter(|(_, s)| !s.remote)
            .map(|(id, s)| (*id, s.io.info(), s.io.backend_stats()))
            .collect();
        v.sort_by_key(|(id, _, _)| *id);
        v
    }

    /// Where the pool's frames are, between bursts: every frame is free, held by a port (lent
    /// to the kernel) or held by a stage; `unaccounted` counts the rest (a leak if not 0).
    pub fn pool_status(&self) -> PoolStatus {
        let capacity = self.pool.capacity() as usize;
        let free = self.pool.available();
        let in_ports = self.ports.values().map(|s| s.io.frames_held()).sum();
        let in_stages = self.bridges.values().map(|b| b.chain.frames_held()).sum();
        PoolStatus {
            capacity,
            free,
            in_ports,
            in_stages,
            unaccounted: capacity as i64 - (free + in_ports + in_stages) as i64,
        }
    }

    /// The poll descriptors of every port (for the worker's sleep).
    pub(crate) fn poll_fds(&self, out: &mut Vec<std::os::fd::RawFd>) {
        for slot in self.ports.values().filter(|s| !s.remote) {
            slot.io.poll_fds(out);
        }
    }
}

/// Counts the drops a pass decided (frames are freed by output).
#[inline]
fn count_drops(batch: &Batch, drops: &DropCounters) -> u64 {
    let mut n = 0;
    for v in &batch.verdicts[..batch.len()] {
        if let Verdict::Drop(r) = v {
            drops.add(*r, 1);
            n += 1;
        }
    }
    n
}
