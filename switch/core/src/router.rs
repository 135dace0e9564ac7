//! The router stage of the uplink's chain: frames connection tracking sent somewhere
//! ([`Egress`]) get their Ethernet addresses for the next hop. Out of the uplink: to its next
//! hop (the destination itself on the uplink's subnet, else the uplink's gateway), whose MAC
//! comes from the shared [`Neighbours`]; a frame whose next hop is not resolved waits in a
//! bounded queue while this stage sends ARP requests, and goes when the answer arrives (or is
//! a counted drop after [`RESOLVE_TIMEOUT_MS`]). Into a network (a reply, a published port, a
//! hairpin): to the endpoint's MAC, from the network's gateway MAC, patched over to the
//! network's bridge, its TTL decremented as a router's hop.
//!
//! The stage also learns neighbours from the ARP that reaches xvs on the uplink port (only
//! the instance on the worker polling it sees any) before the frame goes on to the host stack.
//!
//! One instance per worker (the uplink bridge is replicated); the control plane swaps its
//! configuration with `Datapath::with_stage_each`.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;

use arrayvec::ArrayVec;
use hashbrown::HashMap;

use crate::classify::ethertype;
use crate::counters::DropCounters;
use crate::drop::ReasonSet;
use crate::frame::{Frame, FramePool};
use crate::neigh::{Learned, NeighbourView, Neighbours};
use crate::stage::{Batch, Egress, FrameMeta, Stage, StageContext, Verdict};
use crate::wire::{BridgeId, Ipv4Net, Mac, PortId};

xvs_stage::drop_reasons! {
    /// Why the router stage dropped a frame.
    pub enum RouterDrop in "router" {
        NoGateway => "no_gateway", "destination beyond the uplink's subnet and no --gateway set";
        QueueFull => "neigh_queue_full", "frame waiting for a neighbour resolution, but the waiting queue was full";
        Unresolved => "neigh_unresolved", "next hop did not answer ARP in time";
        Discarded => "neigh_discarded", "frame waiting for a neighbour when the uplink went away";
        NoZone => "no_zone", "frame for a network the router does not know (gone meanwhile)";
        NoEndpoint => "no_endpoint", "frame for an address with no endpoint on its network";
        TtlExceeded => "ttl_exceeded", "inbound frame whose TTL ran out";
        NeighFull => "neigh_table_full", "ARP not learned: the neighbour table is full (not a frame drop)";
    }
}

/// Frames one worker keeps waiting for resolutions at most.
pub const WAIT_QUEUE: usize = 64;
/// How long a frame waits for its next hop before it is dropped.
pub const RESOLVE_TIMEOUT_MS: u64 = 3000;
/// Interval between two ARP requests for the same address.
pub const REQUEST_INTERVAL_MS: u64 = 1000;
/// Addresses being resolved at once by one worker.
const RESOLVING: usize = 16;

/// A network as the router reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Its bridge.
    pub bridge: BridgeId,
    /// Its gateway's MAC (the source of frames routed into it).
    pub gateway_mac: Mac,
    /// Its endpoints' MACs by address.
    pub endpoints: HashMap<Ipv4Addr, Mac>,
    /// The worker that runs its bridge (frames for it from another worker are handed over),
    /// unless every worker runs it (`everywhere`).
    pub worker: u16,
    /// Every worker runs its bridge (a spread bridge): frames for it go in where they are.
    pub everywhere: bool,
    /// Its gateway's port (where routed frames enter it).
    pub local_port: PortId,
}

/// What the router knows: the uplink and the networks.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The uplink's port (polled by one worker; output from others is handed over).
    pub uplink_port: PortId,
    /// xvs's MAC on the uplink.
    pub mac: Mac,
    /// xvs's address on the uplink.
    pub ip: Ipv4Addr,
    /// The uplink's subnet (destinations in it are their own next hop).
    pub subnet: Ipv4Net,
    /// The next hop for everything else.
    pub gateway: Option<Ipv4Addr>,
    /// The networks by zone.
    pub zones: Arc<HashMap<u16, Zone>>,
}

/// A frame waiting for its next hop.
#[derive(Debug)]
struct Waiting {
    frame: Frame,
    next_hop: Ipv4Addr,
    since_ms: u64,
}

/// An address being resolved.
#[derive(Debug, Clone, Copy)]
struct Resolving {
    ip: Ipv4Addr,
    /// When the last request went (`None`: due now).
    sent_ms: Option<u64>,
}

/// The router stage of one worker.
#[derive(Debug)]
pub struct RouterStage {
    config: RouterConfig,
    neighbours: NeighbourView,
    waiting: VecDeque<Waiting>,
    resolving: ArrayVec<Resolving, RESOLVING>,
    /// Whether the neighbours changed since waiting frames were last looked at.
    changed: bool,
}

impl RouterStage {
    /// A router with `config`, reading (and, on the uplink port's worker, writing) `table`.
    pub fn new(config: RouterConfig, table: Arc<Neighbours>) -> RouterStage {
        RouterDrop::set().register();
        RouterStage {
            config,
            neighbours: NeighbourView::new(table),
            waiting: VecDeque::with_capacity(WAIT_QUEUE),
            resolving: ArrayVec::new(),
            changed: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Replaces the configuration (between two passes).
    pub fn set_config(&mut self, config: RouterConfig) {
        self.config = config;
    }

    /// Frames waiting for a resolution now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The next hop toward `dst`.
    #[inline]
    fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.config.subnet.contains(dst) {
            Some(dst)
        } else {
            self.config.gateway
        }
    }

    /// Asks for `ip` to be resolved (a request goes at the next release, then every
    /// [`REQUEST_INTERVAL_MS`] while frames wait); a refresh of a known entry too.
    fn resolve(&mut self, ip: Ipv4Addr) {
        if !self.resolving.iter().any(|r| r.ip == ip) {
            let _ = self.resolving.try_push(Resolving { ip, sent_ms: None });
        }
    }

    /// Learns the sender of an ARP frame received on the uplink port, if it talks to xvs.
    fn snoop_arp(&mut self, ctx: &StageContext<'_>, frame: &[u8], l3: usize) {
        let Ok(arp) = etherparse::ArpPacketSlice::from_slice(frame.get(l3..).unwrap_or(&[])) else {
            return;
        };
        let (Ok(sha), Ok(spa), Ok(tpa)) = (
            <[u8; 6]>::try_from(arp.sender_hw_addr()),
            <[u8; 4]>::try_from(arp.sender_protocol_addr()),
            <[u8; 4]>::try_from(arp.target_protocol_addr()),
        ) else {
            return;
        };
        let (sender, target) = (Ipv4Addr::from(spa), Ipv4Addr::from(tpa));
        if target != self.config.ip || sender.is_unspecified() || ctx.dry_run() {
            return;
        }
        if self.neighbours.table().learn(sender, Mac(sha), ctx.now_ms) == Learned::Full {
            ctx.count(RouterDrop::NeighFull, 1);
        }
    }

    /// Addresses frame `i` (out of the uplink) to its next hop, or holds it.
    fn route_uplink(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize) -> Verdict {
        let Some(std::net::IpAddr::V4(dst)) = batch.keys[i].ip_dst() else {
            return Verdict::Drop(RouterDrop::NoGateway.into());
        };
        let Some(hop) = self.next_hop(dst) else {
            return Verdict::Drop(RouterDrop::NoGateway.into());
        };
        if let Some((mac, stale)) = self.neighbours.lookup(hop, ctx.now_ms) {
            if stale && !ctx.dry_run() {
                self.resolve(hop);
            }
            set_macs(ctx.pool, &mut batch.frames[i], mac, self.config.mac);
            ctx.record("router", || format!("out of the uplink to {hop} ({mac})"));
            return Verdict::Output(self.config.uplink_port);
        }
        ctx.record("router", || {
            format!("next hop {hop} not resolved: the frame would wait for ARP")
        });
        if ctx.dry_run() {
            return Verdict::Held;
        }
        if self.waiting.len() >= WAIT_QUEUE {
            self.resolve(hop);
            return Verdict::Drop(RouterDrop::QueueFull.into());
        }
        self.resolve(hop);
        let frame = batch.hold(i);
        self.waiting.push_back(Waiting {
            frame,
            next_hop: hop,
            since_ms: ctx.now_ms,
        });
        Verdict::Held
    }

    /// Addresses frame `i` to an endpoint of `zone` and patches it over to its network.
    fn route_zone(
        &self,
        ctx: &mut StageContext<'_>,
        batch: &mut Batch,
        i: usize,
        zone: u16,
    ) -> Verdict {
        let Some(z) = self.config.zones.get(&zone) else {
            return Verdict::Drop(RouterDrop::NoZone.into());
        };
        let Some(std::net::IpAddr::V4(dst)) = batch.keys[i].ip_dst() else {
            return Verdict::Drop(RouterDrop::NoEndpoint.into());
        };
        let Some(&mac) = z.endpoints.get(&dst) else {
            return Verdict::Drop(RouterDrop::NoEndpoint.into());
        };
        let l3 = usize::from(batch.keys[i].l3_offset);
        let inbound = batch.meta[i].patched_from.is_none();
        let data = ctx.pool.data_mut(&mut batch.frames[i]);
        // A hop from the uplink into a network; a hairpin was counted on its way in.
        if inbound && !crate::checksum::decrement_ttl(data, l3) {
            return Verdict::Drop(RouterDrop::TtlExceeded.into());
        }
        set_macs(ctx.pool, &mut batch.frames[i], mac, z.gateway_mac);
        ctx.record("router", || {
            format!("into network (bridge {}) to {dst} ({mac})", z.bridge)
        });
        if !z.everywhere && z.worker != ctx.worker {
            // A hairpin between networks of two workers: the network's own worker runs it.
            batch.meta[i].bridge = z.bridge;
            batch.keys[i].in_port = z.local_port;
            return Verdict::Handoff(z.worker);
        }
        Verdict::Patch(z.bridge)
    }
}

/// Writes the Ethernet destination and source of `frame`.
#[inline]
fn set_macs(pool: &FramePool, frame: &mut Frame, dst: Mac, src: Mac) {
    let d = pool.data_mut(frame);
    if d.len() >= 12 {
        d[..6].copy_from_slice(&dst.0);
        d[6..12].copy_from_slice(&src.0);
    }
}

/// An ARP request for `ip` from `mac`/`from`, broadcast, written into `buf` (60 bytes, padded).
fn write_arp_request(buf: &mut [u8], mac: Mac, from: Ipv4Addr, ip: Ipv4Addr) -> Option<usize> {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr,
    };
    let buf = buf.get_mut(..60)?;
    buf.fill(0);
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    EthernetRepr {
        src_addr: EthernetAddress(mac.0),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac.0),
        source_protocol_addr: from,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    Some(60)
}

impl Stage for RouterStage {
    fn name(&self) -> &'static str {
        "router"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(RouterDrop::set())
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        self.changed |= self.neighbours.refresh();
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() {
                continue;
            }
            let v = match batch.meta[i].egress {
                Egress::Uplink => self.route_uplink(ctx, batch, i),
                Egress::Zone(z) => self.route_zone(ctx, batch, i, z),
                Egress::Undecided => {
                    let k = &batch.keys[i];
                    if k.dl_type == ethertype::ARP
                        && k.in_port == self.config.uplink_port
                        && batch.meta[i].patched_from.is_none()
                    {
                        let l3 = usize::from(k.l3_offset);
                        let frame = &batch.frames[i];
                        self.snoop_arp(ctx, ctx.pool.data(frame), l3);
                    }
                    continue;
                }
            };
            batch.verdicts[i] = v;
        }
    }

    fn has_release(&self) -> bool {
        !self.waiting.is_empty() || !self.resolving.is_empty()
    }

    fn release(&mut self, ctx: &mut StageContext<'_>, out: &mut Batch) {
        let now = ctx.now_ms;
        self.changed |= self.neighbours.refresh();
        // Frames whose next hop is known now go; those waiting too long are dropped.
        if self.changed
            || self
                .waiting
                .front()
                .is_some_and(|w| now >= w.since_ms + RESOLVE_TIMEOUT_MS)
        {
            self.changed = false;
            let mut kept = 0;
            let n = self.waiting.len();
            for _ in 0..n {
                if out.frames.is_full() {
                    self.changed = true;
                    break;
                }
                let Some(mut w) = self.waiting.pop_front() else {
                    break;
                };
                let verdict = match self.neighbours.lookup(w.next_hop, now) {
                    Some((mac, _)) => {
                        set_macs(ctx.pool, &mut w.frame, mac, self.config.mac);
                        Verdict::Output(self.config.uplink_port)
                    }
                    None if now >= w.since_ms + RESOLVE_TIMEOUT_MS => {
                        Verdict::Drop(RouterDrop::Unresolved.into())
                    }
                    None => {
                        self.waiting.push_back(w);
                        kept += 1;
                        continue;
                    }
                };
                let i = out.len();
                if let Err(f) = out.push(w.frame, FrameMeta::default()) {
                    ctx.pool.free(f);
                    continue;
                }
                out.verdicts[i] = verdict;
            }
            let _ = kept;
        }
        // ARP requests: for addresses frames wait for (or entries due for a refresh).
        let mut r = 0;
        while r < self.resolving.len() {
            let ip = self.resolving[r].ip;
            let resolved = self
                .neighbours
                .lookup(ip, now)
                .is_some_and(|(_, stale)| !stale);
            let wanted = self.waiting.iter().any(|w| w.next_hop == ip);
            let sent = self.resolving[r].sent_ms;
            // A refresh asked while nothing waits is forgotten once its interval is over (so a
            // stale entry in use is asked for at most once a second, not at every batch).
            let idle = sent.is_some_and(|t| now >= t + REQUEST_INTERVAL_MS);
            if resolved || (!wanted && idle) {
                self.resolving.remove(r);
                continue;
            }
            let due = sent.is_none_or(|t| now >= t + REQUEST_INTERVAL_MS);
            if due
                && !out.frames.is_full()
                && let Some(mut f) = ctx.pool.alloc()
            {
                {
                    let buf = ctx.pool.buffer_mut(&mut f);
                    match write_arp_request(buf, self.config.mac, self.config.ip, ip) {
                        Some(n) => {
                            f.set_len(n);
                            let i = out.len();
                            if let Err(f) = out.push(f, FrameMeta::default()) {
                                ctx.pool.free(f);
                            } else {
                                out.verdicts[i] = Verdict::Output(self.config.uplink_port);
                                ctx.made_frame();
                                self.resolving[r].sent_ms = Some(now);
                            }
                        }
                        None => ctx.pool.free(f),
                    }
                }
            }
            r += 1;
        }
    }

    fn discard(&mut self, pool: &mut FramePool, drops: &DropCounters) -> u64 {
        let n = self.waiting.len() as u64;
        drops.add(RouterDrop::Discarded, n);
        for w in self.waiting.drain(..) {
            pool.free(w.frame);
        }
        n
    }

    fn frames_held(&self) -> usize {
        self.waiting.len()
    }

    fn adopt(&mut self, previous: &mut dyn Stage) {
        let previous: &mut dyn std::any::Any = previous;
        if let Some(old) = previous.downcast_mut::<RouterStage>() {
            std::mem::swap(&mut self.waiting, &mut old.waiting);
            std::mem::swap(&mut self.resolving, &mut old.resolving);
            self.changed = true;
        }
    }
}
