//! The load balancer's stage ([`LbStage`]), second in a network's chain (classify → lb → l2 →
//! route): it answers for the network's virtual IPs and balances their connections.
//!
//! - An ARP request for a VIP is answered with the gateway's MAC; a ping of a VIP is answered;
//!   both go back out of the port they came in on.
//! - A client's packet to VIP:port is DNATed to the backend its connection was given (a new
//!   connection, a TCP SYN or any UDP packet, gets one from the service's scheduler): its
//!   destination address, port and MAC are the backend's, its verdict stays `Next` and L2
//!   switches it. The source is never translated: the backend sees the client's address.
//! - The backend's reply gets the VIP:port back as its source.
//! - Refusals are counted ([`LbDrop`]); a refused TCP segment (no live backend, no service on
//!   the port, a backend removed without drain) is answered with a RST from the VIP, which
//!   counts as a frame the stage made, the segment itself as dropped: received + made = sent
//!   + dropped.
//!
//! Source MACs are left as they are, on purpose: L2, after this stage, learns each frame's
//! source MAC on its ingress port, and the overlay refuses frames from the gateway's MAC at
//! both tunnel ends, so a DNATed frame carrying the gateway's MAC from a container's port
//! would move the gateway in L2's table and never reach a backend on another host. Only the
//! answers (ARP, echo, RST), which do not go through L2's learning, come from the gateway MAC.
//!
//! One instance per network, on the worker that runs the network's bridge, which sees every
//! frame of the network (clients, backends, and outside clients DNATed to VIP:port by the
//! uplink's conntrack, which enter from the gateway's port). The control plane changes it
//! between batches (`install`, `remove`, `set_config`), which alone may allocate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use hashbrown::HashMap;
use xvs_stage::batch::FrameMeta;
use xvs_stage::checksum::complete_checksum;
use xvs_stage::drop::{DropReason, ReasonSet};
use xvs_stage::offload::Offload;
use xvs_stage::respond::{self, tcp_flags};
use xvs_stage::stage::{Batch, Stage, StageContext, Verdict};
use xvs_stage::wire::BridgeId;
use xvs_stage::wire::{Mac, ethertype, ipproto};

use crate::drop::LbDrop;
use crate::hash::{DEFAULT_SEED, mix64};
use crate::rewrite::{End, rewrite};
use crate::services::WorkerServices;
use crate::sessions::{
    DEFAULT_CAPACITY, Dir, Ends, MAX_CAPACITY, Session, SessionState, SessionView, Sessions, Tuple,
};
use crate::spec::Proto;
use crate::table::{Disposition, ServiceKey, ServiceTable};

/// Session slots a tick looks at (ticks come once per worker pass, at most once a ms here).
const TICK_SWEEP: u32 = 256;
/// Slots a new connection that finds the table full looks at for an expired session to reuse.
const FULL_SWEEP: u32 = 64;

/// What the stage knows of its network besides its services.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// The network's gateway MAC: the VIPs' MAC, in ARP replies, echo replies and RSTs. Zero
    /// (the default): nothing is answered.
    pub gateway_mac: Mac,
    /// Every address on the network and its MAC: where a DNATed frame is sent.
    pub stations: Arc<HashMap<Ipv4Addr, Mac>>,
    /// Sessions at most (a new connection beyond is refused, `session_table_full`).
    pub capacity: u32,
    /// On a network whose ports are spread over the workers, each running this stage: the
    /// worker polling each station's port, and the home worker (the gateway's, for addresses
    /// off the network). A backend's reply that finds no session here is handed to the
    /// worker of its destination, the client's, which holds the session. `None`: every frame
    /// of the network passes this worker.
    pub spread: Option<SpreadConfig>,
}

/// Where a spread network's stations are polled ([`LbConfig::spread`]).
#[derive(Debug, Clone, Default)]
pub struct SpreadConfig {
    /// The worker polling each station's port.
    pub station_workers: Arc<HashMap<Ipv4Addr, u16>>,
    /// The worker of addresses off the network (outside clients enter from the gateway).
    pub home: u16,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            gateway_mac: Mac::default(),
            stations: Arc::default(),
            capacity: DEFAULT_CAPACITY,
            spread: None,
        }
    }
}

/// The load balancer stage of one network (see the module header).
#[derive(Debug)]
pub struct LbStage {
    services: WorkerServices,
    sessions: Sessions,
    config: LbConfig,
    /// Whether `set_config` was called (a stage adopting another keeps the other's otherwise).
    configured: bool,
    /// Bumped by every `set_config`: a session's cached backend MAC of another generation is
    /// looked up again.
    generation: u32,
    ticked_ms: u64,
    /// Connections ended by their idle timeout whose two ends are still to be sent a RST
    /// ([`Stage::release`]); at most [`MAX_ABORTS`] wait (more end silently, each end then
    /// told at its next segment).
    aborts: Vec<Session>,
    /// The bridge whose frames the stage sees (from the batches it is given).
    bridge: BridgeId,
}

/// Idle connections whose resets may wait at once.
const MAX_ABORTS: usize = 256;

/// The IPv4 address a key holds (v4-mapped).
#[inline]
fn v4(a: &[u8; 16]) -> u32 {
    u32::from_be_bytes([a[12], a[13], a[14], a[15]])
}

#[inline]
fn set_v4(a: &mut [u8; 16], ip: u32) {
    a[12..].copy_from_slice(&ip.to_be_bytes());
}

/// An address and port, as listings and traces show them.
fn socket(ip: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

impl LbStage {
    /// A stage for worker `worker` with no services and the default configuration (it answers
    /// nothing until [`LbStage::set_config`] gives it the gateway's MAC).
    pub fn new(worker: u16) -> LbStage {
        LbStage::with_seed(worker, DEFAULT_SEED)
    }

    /// [`LbStage::new`] whose session index hashes with `seed` (the control plane's random
    /// seed, so that no client can aim its connections at one bucket).
    pub fn with_seed(worker: u16, seed: u64) -> LbStage {
        LbDrop::set().register();
        LbStage {
            services: WorkerServices::new(worker),
            sessions: Sessions::new(DEFAULT_CAPACITY, mix64(seed ^ u64::from(worker))),
            config: LbConfig::default(),
            configured: false,
            generation: 0,
            ticked_ms: 0,
            aborts: Vec::with_capacity(MAX_ABORTS),
            bridge: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    /// Replaces the configuration. A new capacity moves the sessions into a table of that size
    /// (those that do not fit are closed).
    pub fn set_config(&mut self, config: LbConfig) {
        if config.capacity.min(MAX_CAPACITY) != self.sessions.capacity() {
            self.resize(config.capacity);
        }
        self.config = config;
        self.configured = true;
        self.generation = self.generation.wrapping_add(1);
    }

    fn resize(&mut self, capacity: u32) {
        let old = std::mem::replace(&mut self.sessions, Sessions::new(0, 0));
        let services = &self.services;
        self.sessions = old.resized(capacity, |s| close(services, s));
    }

    /// Adds a service, or a new snapshot of one (its connections keep their backends).
    pub fn install(&mut self, table: Arc<ServiceTable>) {
        self.sessions.reserve();
        drop(self.services.install(table));
    }

    /// Removes a service: its connections are ended (counted closed); later packets of them
    /// find no service (TCP: answered with a RST; else dropped).
    pub fn remove(&mut self, key: &ServiceKey) {
        if let Some(b) = self.services.remove(key) {
            self.sessions.remove_where(
                |s| s.service() == *key,
                |s| {
                    b.closed(s.backend_ref);
                },
            );
        }
    }

    /// The services.
    pub fn services(&self) -> &WorkerServices {
        &self.services
    }

    /// The connections open at `now_ms`, by virtual IP, port and client.
    pub fn sessions(&self, now_ms: u64) -> Vec<SessionView> {
        let mut v: Vec<SessionView> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_ms > now_ms)
            .map(|(_, s)| {
                let idle = self
                    .services
                    .get(&s.service())
                    .map_or(0, |b| b.idle_timeout_ms());
                SessionView {
                    proto: if s.proto == ipproto::TCP {
                        Proto::Tcp
                    } else {
                        Proto::Udp
                    },
                    client: socket(s.client, s.client_port),
                    vip: socket(s.vip, s.vip_port),
                    backend: socket(s.backend, s.backend_port),
                    state: s.state,
                    age_s: now_ms.saturating_sub(s.created_ms) / 1000,
                    idle_s: now_ms.saturating_sub(s.last_ms) / 1000,
                    timeout_s: s.timeout_ms(idle) / 1000,
                }
            })
            .collect();
        v.sort_by_key(|s| (s.vip, s.proto, s.client));
        v
    }

    /// Connections in the table (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether the stage answers for its VIPs (it knows the gateway's MAC).
    #[inline]
    fn answers(&self) -> bool {
        self.config.gateway_mac != Mac::default()
    }

    /// Ends session `id`, counting it closed on its backend.
    fn end(&mut self, id: u32) {
        if let Some(s) = self.sessions.remove(id) {
            close(&self.services, &s);
        }
    }

    fn sweep(&mut self, now_ms: u64, budget: u32) {
        let (services, aborts) = (&self.services, &mut self.aborts);
        self.sessions.sweep(now_ms, budget, |s| {
            close(services, s);
            queue_abort(aborts, s);
        });
    }

    /// The resets that end idle connection `s` at both ends, into `out`: to the backend from
    /// the client, in the client's sequence, and to the client from the VIP, in the
    /// backend's (unless the client is beyond the uplink); each out of the port its end's
    /// segments came in on. False when `out` has no room for them.
    fn abort(&self, ctx: &mut StageContext<'_>, out: &mut Batch, s: &Session) -> bool {
        if out.frames.capacity() - out.frames.len() < 2 {
            return false;
        }
        let e = s.ends;
        let client = (s.client.to_be_bytes(), s.client_port);
        let resets = [
            Some((
                s.station,
                e.client_mac,
                client,
                (s.backend.to_be_bytes(), s.backend_port),
                e.client_next,
                e.backend_in,
            )),
            (!e.client_remote && self.answers()).then_some((
                e.client_mac,
                self.config.gateway_mac,
                (s.vip.to_be_bytes(), s.vip_port),
                client,
                e.backend_next,
                e.client_in,
            )),
        ];
        for (dst_mac, src_mac, from, to, seq, port) in resets.into_iter().flatten() {
            let Some(mut f) = ctx.pool.alloc() else {
                return true;
            };
            let buf = ctx.pool.buffer_mut(&mut f);
            let Some(len) = respond::tcp_reset_frame(buf, dst_mac, src_mac, from, to, seq) else {
                ctx.pool.free(f);
                continue;
            };
            f.set_len(len);
            let j = out.len();
            let meta = FrameMeta {
                bridge: self.bridge,
                ..FrameMeta::default()
            };
            match out.push(f, meta) {
                Ok(()) => {
                    out.verdicts[j] = Verdict::Output(port);
                    ctx.made_frame();
                }
                Err(f) => ctx.pool.free(f),
            }
        }
        true
    }

    /// Frame `i`, an ARP request for a VIP: answered.
    fn arp(&self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize) {
        let l3 = usize::from(batch.keys[i].l3_offset);
        let Some(target) = respond::arp_request_target(ctx.pool.data(&batch.frames[i]), l3) else {
            return;
        };
        if !self.answers() || !self.services.is_vip(IpAddr::V4(target)) {
            return;
        }
        let gw = self.config.gateway_mac;
        let data = ctx.pool.data_mut(&mut batch.frames[i]);
        if respond::arp_reply(data, l3, gw).is_err() {
            return;
        }
        let key = &mut batch.keys[i];
        key.dl_dst = key.dl_src;
        key.dl_src = gw;
        ctx.record("lb", || {
            format!("ARP for {target} answered: {gw} (virtual IP)")
        });
        batch.verdicts[i] = answer_verdict(batch, i);
    }

    /// Frame `i`, an ICMP echo request to a VIP: answered.
    fn echo(&self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize) {
        if !self.answers() {
            return;
        }
        let key = batch.keys[i];
        let (l3, l4) = (usize::from(key.l3_offset), usize::from(key.l4_offset));
        let gw = self.config.gateway_mac;
        let frame = &mut batch.frames[i];
        let offload = frame.offload();
        let data = ctx.pool.data_mut(frame);
        if complete_checksum(data, &offload).is_err() {
            return;
        }
        if let Err(e) = respond::echo_reply(data, l3, l4, gw) {
            ctx.record("lb", || format!("ping of virtual IP not answered: {e}"));
            let reason = match e {
                respond::NoAnswer::Fragment => LbDrop::Fragment,
                _ => LbDrop::NoService,
            };
            batch.verdicts[i] = Verdict::Drop(reason.into());
            return;
        }
        frame.set_offload(Offload::NONE);
        let k = &mut batch.keys[i];
        (k.dl_dst, k.dl_src) = (k.dl_src, gw);
        (k.nw_src, k.nw_dst) = (k.nw_dst, k.nw_src);
        k.tp_src = 0;
        ctx.record("lb", || {
            format!(
                "ping of virtual IP {} answered",
                Ipv4Addr::from(v4(&key.nw_dst))
            )
        });
        batch.verdicts[i] = answer_verdict(batch, i);
    }

    /// Refuses frame `i` for `reason`: a TCP segment is answered with a RST from where it was
    /// sent to (the segment counted dropped, the RST made); anything else is dropped.
    fn refuse(&self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize, reason: LbDrop) {
        let key = batch.keys[i];
        if key.nw_proto == ipproto::TCP && self.answers() {
            let (l3, l4) = (usize::from(key.l3_offset), usize::from(key.l4_offset));
            let frame = &mut batch.frames[i];
            if let Ok(len) =
                respond::tcp_reset(ctx.pool.data_mut(frame), l3, l4, self.config.gateway_mac)
            {
                frame.set_len(len);
                frame.set_offload(Offload::NONE);
                let k = &mut batch.keys[i];
                (k.dl_dst, k.dl_src) = (k.dl_src, self.config.gateway_mac);
                (k.nw_src, k.nw_dst) = (k.nw_dst, k.nw_src);
                (k.tp_src, k.tp_dst) = (k.tp_dst, k.tp_src);
                k.l4_offset = (l3 + 20) as u16;
                ctx.count(reason, 1);
                ctx.made_frame();
                ctx.record("lb", || {
                    format!("{}: answered with a RST", reason.reason().describe())
                });
                batch.verdicts[i] = answer_verdict(batch, i);
                return;
            }
        }
        drop_frame(ctx, batch, i, reason);
    }

    /// Ends TCP session `s` at both ends from its segment `i` (travelling `dir`): the sender
    /// gets a RST from where it sent to (as [`Self::refuse`]), and a copy of the segment goes
    /// on, translated as the session says, turned into the RST its sender would send, to the
    /// other end. Without room for the copy (pool or batch full) only the sender is reset;
    /// the other end's next segment finds no session and draws its own RST.
    fn reset_both(
        &self,
        ctx: &mut StageContext<'_>,
        batch: &mut Batch,
        i: usize,
        s: &Session,
        dir: Dir,
    ) {
        if !ctx.dry_run()
            && self.answers()
            && !s.hairpin
            && let Some(copy) = ctx.pool.clone_frame(&batch.frames[i])
        {
            let j = batch.len();
            match batch.push(copy, batch.meta[i]) {
                Err(copy) => ctx.pool.free(copy),
                Ok(()) => {
                    ctx.made_frame();
                    batch.keys[j] = batch.keys[i];
                    let translated = match dir {
                        Dir::Original => dnat(ctx, batch, j, s.backend, s.backend_port, s.station),
                        Dir::Reply => undnat(ctx, batch, j, s.vip, s.vip_port),
                    };
                    let l3 = usize::from(batch.keys[j].l3_offset);
                    let l4 = usize::from(batch.keys[j].l4_offset);
                    let frame = &mut batch.frames[j];
                    let reset = if translated {
                        respond::tcp_reset_onward(ctx.pool.data_mut(frame), l3, l4).ok()
                    } else {
                        None
                    };
                    match reset {
                        Some(len) => {
                            frame.set_len(len);
                            frame.set_offload(Offload::NONE);
                            batch.keys[j].l4_offset = (l3 + 20) as u16;
                        }
                        None => drop_frame(ctx, batch, j, LbDrop::Malformed),
                    }
                }
            }
        }
        ctx.record("lb", || "both ends are sent a RST".into());
        self.refuse(ctx, batch, i, LbDrop::BackendRemoved);
    }

    /// Looks every TCP/UDP frame of the burst up once before any is handled, in a tight loop
    /// whose lookups are independent, so that their cache misses (index, then session: a
    /// large table is never in cache) overlap instead of following one another; the handling
    /// then finds them in cache. Only a warm-up: the handling looks up again, since an earlier
    /// frame of the burst may open or end a session.
    #[inline]
    fn warm(&self, batch: &Batch) {
        let mut touched = 0u64;
        for (key, v) in batch.keys[..batch.len()].iter().zip(&batch.verdicts) {
            if !v.is_next()
                || key.dl_type != ethertype::IPV4
                || key.l4_offset == 0
                || !matches!(key.nw_proto, ipproto::TCP | ipproto::UDP)
            {
                continue;
            }
            let t = Tuple {
                src: v4(&key.nw_src),
                dst: v4(&key.nw_dst),
                sport: key.tp_src,
                dport: key.tp_dst,
                proto: key.nw_proto,
            };
            if let Some((id, _)) = self.sessions.lookup(&t)
                && let Some(s) = self.sessions.get(id)
            {
                touched ^= s.expires_ms;
            }
        }
        std::hint::black_box(touched);
    }

    /// Frame `i`, a hairpin client's packet already DNATed to itself: its source becomes the
    /// VIP (and the gateway's MAC), and it goes back out of the port it came in on (L2 would
    /// not send a frame back where it came from).
    fn hairpin_out(
        &self,
        ctx: &mut StageContext<'_>,
        batch: &mut Batch,
        i: usize,
        s: &Session,
    ) -> bool {
        if !undnat(ctx, batch, i, s.vip, s.client_port) {
            return false;
        }
        self.hairpin_macs(ctx, batch, i, s.station);
        true
    }

    /// Frame `i`, the reply of a hairpin connection's backend to the VIP: from VIP:port back
    /// to the client's own address and port, out of the port it came in on.
    fn hairpin_back(
        &self,
        ctx: &mut StageContext<'_>,
        batch: &mut Batch,
        i: usize,
        s: &Session,
    ) -> bool {
        if !undnat(ctx, batch, i, s.vip, s.vip_port)
            || !dnat(ctx, batch, i, s.client, s.client_port, s.ends.client_mac)
        {
            return false;
        }
        self.hairpin_macs(ctx, batch, i, s.ends.client_mac);
        ctx.record("lb", || "hairpin: back to the client, from the VIP".into());
        true
    }

    fn hairpin_macs(&self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize, dst: Mac) {
        let gw = self.config.gateway_mac;
        if let Some(d) = ctx.pool.data_mut(&mut batch.frames[i]).get_mut(..12) {
            d[..6].copy_from_slice(&dst.0);
            d[6..].copy_from_slice(&gw.0);
        }
        let key = &mut batch.keys[i];
        (key.dl_dst, key.dl_src) = (dst, gw);
        batch.verdicts[i] = Verdict::Output(key.in_port);
    }

    /// Frame `i`, IPv4.
    #[inline]
    fn ipv4(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize) {
        let key = batch.keys[i];
        let to_vip = !self.services.is_empty()
            && self
                .services
                .is_vip(IpAddr::V4(Ipv4Addr::from(v4(&key.nw_dst))));
        match key.nw_proto {
            ipproto::TCP | ipproto::UDP if key.l4_offset != 0 => {
                let t = Tuple {
                    src: v4(&key.nw_src),
                    dst: v4(&key.nw_dst),
                    sport: key.tp_src,
                    dport: key.tp_dst,
                    proto: key.nw_proto,
                };
                if let Some((id, dir)) = self.sessions.lookup(&t)
                    && self.known(ctx, batch, i, id, dir, &t)
                {
                    return;
                }
                if to_vip {
                    self.open(ctx, batch, i, &t);
                } else if let Some(w) = self.reply_owner(ctx, batch, i, &t) {
                    ctx.record("lb", || {
                        format!("{t}: a backend's reply, its session on worker {w}: handed over")
                    });
                    batch.verdicts[i] = Verdict::Handoff(w);
                }
            }
            _ if !to_vip => {}
            ipproto::ICMP if key.l4_offset != 0 && key.tp_src == 8 => self.echo(ctx, batch, i),
            ipproto::TCP | ipproto::UDP => {
                ctx.record("lb", || "fragment to a virtual IP: dropped".into());
                batch.verdicts[i] = Verdict::Drop(LbDrop::Fragment.into());
            }
            _ => drop_frame(ctx, batch, i, LbDrop::NoService),
        }
    }

    /// On a spread network, the worker holding the session of frame `i` (tuple `t`, no
    /// session here), when it comes from a backend and that worker is another one.
    #[inline]
    fn reply_owner(
        &self,
        ctx: &StageContext<'_>,
        batch: &Batch,
        i: usize,
        t: &Tuple,
    ) -> Option<u16> {
        let spread = self.config.spread.as_ref()?;
        if batch.meta[i].handed_off
            || !self
                .services
                .is_backend(IpAddr::V4(Ipv4Addr::from(t.src)), t.sport)
        {
            return None;
        }
        let w = spread
            .station_workers
            .get(&Ipv4Addr::from(t.dst))
            .copied()
            .unwrap_or(spread.home);
        (w != ctx.worker).then_some(w)
    }

    /// Frame `i` (tuple `t`) of session `id`, travelling `dir`. False when the session turned
    /// out to be over (expired, its service gone, or a new SYN on a closing connection): the
    /// frame is then judged as one of no session.
    fn known(
        &mut self,
        ctx: &mut StageContext<'_>,
        batch: &mut Batch,
        i: usize,
        id: u32,
        dir: Dir,
        t: &Tuple,
    ) -> bool {
        let (now, dry_run) = (ctx.now_ms, ctx.dry_run());
        let Some(&s) = self.sessions.get(id) else {
            return false;
        };
        let flags = tcp_flags_of(ctx, batch, i);
        // The sender's MAC as it came (a hairpin rewrite below changes the key's).
        let sender_mac = batch.keys[i].dl_src;
        let idle_ms = match self.services.get(&s.service()) {
            Some(b) if s.expires_ms > now => {
                if b.disposition(s.backend_ref) == Disposition::Reset {
                    let backend = socket(s.backend, s.backend_port);
                    ctx.record("lb", || {
                        format!("{t}: its backend {backend} was removed: connection ended")
                    });
                    if s.proto == ipproto::TCP {
                        if !dry_run {
                            self.end(id);
                        }
                        self.reset_both(ctx, batch, i, &s, dir);
                        return true;
                    }
                    match dir {
                        Dir::Original => {
                            if !dry_run {
                                self.end(id);
                            }
                            // No connection to reset: the datagram goes to a new backend.
                            return false;
                        }
                        Dir::Reply => drop_frame(ctx, batch, i, LbDrop::BackendRemoved),
                    }
                    return true;
                }
                b.idle_timeout_ms()
            }
            _ => {
                if !dry_run {
                    // Expired with no sweep yet: its ends are told as a sweep would.
                    if s.expires_ms <= now {
                        queue_abort(&mut self.aborts, &s);
                    }
                    self.end(id);
                }
                return false;
            }
        };
        let reopens = dir == Dir::Original
            && s.proto == ipproto::TCP
            && s.state == SessionState::Closing
            && flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if reopens {
            if !dry_run {
                self.end(id);
            }
            return false;
        }
        let mut station = s.station;
        let done = match dir {
            Dir::Original => {
                if s.station_gen != self.generation {
                    match self.config.stations.get(&Ipv4Addr::from(s.backend)) {
                        Some(&mac) => station = mac,
                        None => {
                            let b = socket(s.backend, s.backend_port);
                            ctx.record("lb", || format!("{t}: backend {b} is no station"));
                            drop_frame(ctx, batch, i, LbDrop::NoStation);
                            return true;
                        }
                    }
                }
                dnat(ctx, batch, i, s.backend, s.backend_port, station)
                    && (!s.hairpin || self.hairpin_out(ctx, batch, i, &s))
            }
            Dir::Reply if s.hairpin => self.hairpin_back(ctx, batch, i, &s),
            Dir::Reply => undnat(ctx, batch, i, s.vip, s.vip_port),
        };
        if !done {
            drop_frame(ctx, batch, i, LbDrop::Malformed);
            return true;
        }
        if !dry_run && let Some(m) = self.sessions.get_mut(id) {
            let was = m.state;
            m.track(dir, flags);
            let key = &batch.keys[i];
            match dir {
                Dir::Original => {
                    if let Some(n) = next_seq(ctx, batch, i) {
                        m.ends.client_next = n;
                    }
                    (m.ends.client_mac, m.ends.client_in) = (sender_mac, key.in_port);
                }
                Dir::Reply => {
                    if let Some(n) = next_seq(ctx, batch, i) {
                        (m.ends.backend_next, m.ends.backend_seen) = (n, true);
                    }
                    m.ends.backend_in = key.in_port;
                }
            }
            if m.state == SessionState::Closing && was != SessionState::Closing {
                count_closed(&self.services, m);
            }
            m.last_ms = now;
            m.expires_ms = now.saturating_add(m.timeout_ms(idle_ms));
            if dir == Dir::Original {
                (m.station, m.station_gen) = (station, self.generation);
            }
        }
        ctx.record("lb", || match dir {
            Dir::Original => format!(
                "{t}: {}, backend {}",
                s.state,
                socket(s.backend, s.backend_port)
            ),
            Dir::Reply => format!(
                "{t}: reply, source restored to {}",
                socket(s.vip, s.vip_port)
            ),
        });
        true
    }

    /// Frame `i` (tuple `t`), to a VIP and of no session: a new connection, or refused.
    fn open(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize, t: &Tuple) {
        let key = batch.keys[i];
        let now = ctx.now_ms;
        let flags = tcp_flags_of(ctx, batch, i);
        let tcp = t.proto == ipproto::TCP;
        let Some(skey) = ServiceKey::of_flow(&key) else {
            return;
        };
        if self.services.get(&skey).is_none() {
            ctx.record("lb", || format!("{t}: no service on the port"));
            return self.refuse(ctx, batch, i, LbDrop::NoService);
        }
        if tcp
            && flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN)
                != tcp_flags::SYN
        {
            // A connection xvs does not know (expired, or from before a restart): the client
            // is told at once rather than left to time out; a RST is only dropped.
            ctx.record("lb", || format!("{t}: not a SYN and no connection"));
            return self.refuse(ctx, batch, i, LbDrop::NoSession);
        }
        if ctx.dry_run() {
            return self.preview(ctx, batch, i, t, &skey);
        }
        if self.sessions.is_full() {
            self.sweep(now, FULL_SWEEP);
            if self.sessions.is_full() {
                ctx.record("lb", || format!("{t}: session table full"));
                return drop_frame(ctx, batch, i, LbDrop::SessionTableFull);
            }
        }
        let Some(b) = self.services.get_mut(&skey) else {
            return;
        };
        let pick = match b.pick_flow(&key) {
            Ok(p) => p,
            Err(e) => {
                ctx.record("lb", || format!("{t}: {e}"));
                return self.refuse(ctx, batch, i, LbDrop::NoBackend);
            }
        };
        let idle_ms = b.idle_timeout_ms();
        let SocketAddr::V4(addr) = pick.addr else {
            return drop_frame(ctx, batch, i, LbDrop::NoStation);
        };
        let Some(&mac) = self.config.stations.get(addr.ip()) else {
            ctx.record("lb", || format!("{t}: backend {addr} is no station"));
            return drop_frame(ctx, batch, i, LbDrop::NoStation);
        };
        let mut s = Session {
            client: t.src,
            client_port: t.sport,
            vip: t.dst,
            vip_port: t.dport,
            backend: u32::from(*addr.ip()),
            backend_port: addr.port(),
            proto: t.proto,
            state: Session::opening(t.proto),
            fins: 0,
            backend_ref: pick.backend,
            station: mac,
            station_gen: self.generation,
            created_ms: now,
            last_ms: now,
            expires_ms: 0,
            hairpin: u32::from(*addr.ip()) == t.src,
            ends: Ends {
                client_next: next_seq(ctx, batch, i).unwrap_or(0),
                client_mac: key.dl_src,
                client_in: key.in_port,
                client_remote: batch.meta[i].patched_from.is_some(),
                ..Ends::default()
            },
        };
        s.expires_ms = now.saturating_add(s.timeout_ms(idle_ms));
        if let Some((other, _)) = self.sessions.lookup(&s.reply()) {
            // A closed connection lingering for its last segments gives way: the client
            // reused its port toward another VIP on the same backend (clients do, as the
            // destinations differ), and the backend takes the new SYN over its TIME_WAIT.
            match self.sessions.get(other) {
                Some(o) if o.expires_ms > now && o.state != SessionState::Closing => {
                    ctx.record("lb", || {
                        format!("{t}: replies would clash with a connection")
                    });
                    return drop_frame(ctx, batch, i, LbDrop::ReplyClash);
                }
                _ => self.end(other),
            }
        }
        if self.sessions.insert(s).is_none() {
            return drop_frame(ctx, batch, i, LbDrop::SessionTableFull);
        }
        if let Some(b) = self.services.get(&skey) {
            b.opened(pick.backend);
        }
        if !dnat(ctx, batch, i, s.backend, s.backend_port, mac)
            || (s.hairpin && !self.hairpin_out(ctx, batch, i, &s))
        {
            return drop_frame(ctx, batch, i, LbDrop::Malformed);
        }
        ctx.record("lb", || format!("{t}: new, backend {addr} ({})", pick.why));
    }

    /// A dry run's new connection: what would be chosen, nothing made or counted.
    fn preview(
        &self,
        ctx: &mut StageContext<'_>,
        batch: &mut Batch,
        i: usize,
        t: &Tuple,
        skey: &ServiceKey,
    ) {
        let Some(b) = self.services.get(skey) else {
            return;
        };
        match b.preview(b.table().flow_hash(&batch.keys[i])) {
            Err(e) => {
                ctx.record("lb", || format!("{t}: {e}"));
                self.refuse(ctx, batch, i, LbDrop::NoBackend);
            }
            Ok(p) => {
                let SocketAddr::V4(addr) = p.addr else {
                    return drop_frame(ctx, batch, i, LbDrop::NoStation);
                };
                match self.config.stations.get(addr.ip()) {
                    None => {
                        ctx.record("lb", || format!("{t}: backend {addr} is no station"));
                        drop_frame(ctx, batch, i, LbDrop::NoStation);
                    }
                    Some(&mac) if !dnat(ctx, batch, i, u32::from(*addr.ip()), addr.port(), mac) => {
                        drop_frame(ctx, batch, i, LbDrop::Malformed);
                    }
                    Some(_) => {
                        ctx.record("lb", || format!("{t}: new, backend {addr} ({})", p.why));
                    }
                }
            }
        }
    }
}

/// Queues the resets of `s`, ended by its idle timeout, if it is an open TCP connection
/// (within the queue's bound: never grows).
fn queue_abort(aborts: &mut Vec<Session>, s: &Session) {
    if s.wants_reset() && aborts.len() < MAX_ABORTS {
        aborts.push(*s);
    }
}

/// The sequence number that follows TCP segment `i` (SEG.SEQ + SEG.LEN, SYN and FIN counting
/// one each); `None` if not TCP or too short.
#[inline]
fn next_seq(ctx: &StageContext<'_>, batch: &Batch, i: usize) -> Option<u32> {
    let key = &batch.keys[i];
    if key.nw_proto != ipproto::TCP {
        return None;
    }
    let (l3, l4) = (usize::from(key.l3_offset), usize::from(key.l4_offset));
    let f = ctx.pool.data(&batch.frames[i]);
    let tcp: &[u8; 14] = f.get(l4..l4 + 14)?.try_into().ok()?;
    let total = usize::from(u16::from_be_bytes([*f.get(l3 + 2)?, *f.get(l3 + 3)?]));
    let doff = usize::from(tcp[12] >> 4) * 4;
    // A GSO super-frame's IP length may not cover it: the frame's own length bounds both.
    let ip_end = if total == 0 {
        f.len()
    } else {
        (l3 + total).min(f.len())
    };
    let data = ip_end.saturating_sub(l4 + doff) as u32;
    let flags = tcp[13];
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    Some(
        seq.wrapping_add(data)
            .wrapping_add(u32::from(flags & tcp_flags::SYN != 0))
            .wrapping_add(u32::from(flags & tcp_flags::FIN != 0)),
    )
}

/// Counts a session's backend closed as the session ends, unless it was when the connection
/// closed (a session in [`SessionState::Closing`] lingers for its last segments, but is no
/// longer one of the backend's active connections, as IPVS's ActiveConn leaves it out).
fn close(services: &WorkerServices, s: &Session) {
    if s.state != SessionState::Closing {
        count_closed(services, s);
    }
}

fn count_closed(services: &WorkerServices, s: &Session) {
    if let Some(b) = services.get(&s.service()) {
        b.closed(s.backend_ref);
    }
}

/// The verdict of an answer to frame `i`: back out of its port; one that came over from the
/// uplink (an outside client's, DNATed to the VIP by conntrack) goes on undecided, to the
/// gateway's MAC it came from, and L2 and the router send it back the way it came.
#[inline]
fn answer_verdict(batch: &Batch, i: usize) -> Verdict {
    if batch.meta[i].patched_from.is_some() {
        Verdict::Next
    } else {
        Verdict::Output(batch.keys[i].in_port)
    }
}

#[inline]
fn drop_frame(ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize, reason: LbDrop) {
    let r: DropReason = reason.into();
    ctx.record("lb", || format!("drop: {}", r.describe()));
    batch.verdicts[i] = Verdict::Drop(r);
}

/// The TCP flags of frame `i` (0 when not TCP).
#[inline]
fn tcp_flags_of(ctx: &StageContext<'_>, batch: &Batch, i: usize) -> u8 {
    let key = &batch.keys[i];
    if key.nw_proto != ipproto::TCP {
        return 0;
    }
    let at = usize::from(key.l4_offset) + 13;
    ctx.pool
        .data(&batch.frames[i])
        .get(at)
        .copied()
        .unwrap_or(0)
}

/// Sends frame `i` to the backend `ip`:`port` at `mac`. False if the frame is too short to
/// rewrite (its key does not describe it).
#[inline]
fn dnat(
    ctx: &mut StageContext<'_>,
    batch: &mut Batch,
    i: usize,
    ip: u32,
    port: u16,
    mac: Mac,
) -> bool {
    let key = &mut batch.keys[i];
    let (l3, l4) = (usize::from(key.l3_offset), usize::from(key.l4_offset));
    let frame = &mut batch.frames[i];
    let offload = frame.offload();
    let data = ctx.pool.data_mut(frame);
    if rewrite(
        data,
        l3,
        l4,
        &offload,
        End::Destination,
        ip.to_be_bytes(),
        port,
    )
    .is_err()
    {
        return false;
    }
    if let Some(d) = data.get_mut(..6) {
        d.copy_from_slice(&mac.0);
    }
    key.dl_dst = mac;
    set_v4(&mut key.nw_dst, ip);
    key.tp_dst = port;
    true
}

/// Gives frame `i`, a backend's reply, the VIP `ip`:`port` as its source.
#[inline]
fn undnat(ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize, ip: u32, port: u16) -> bool {
    let key = &mut batch.keys[i];
    let (l3, l4) = (usize::from(key.l3_offset), usize::from(key.l4_offset));
    let frame = &mut batch.frames[i];
    let offload = frame.offload();
    let data = ctx.pool.data_mut(frame);
    if rewrite(data, l3, l4, &offload, End::Source, ip.to_be_bytes(), port).is_err() {
        return false;
    }
    set_v4(&mut key.nw_src, ip);
    key.tp_src = port;
    true
}

impl Stage for LbStage {
    fn name(&self) -> &'static str {
        "lb"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(LbDrop::set())
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        if self.services.is_empty() && self.sessions.is_empty() {
            return;
        }
        if !batch.is_empty() {
            self.bridge = batch.meta[0].bridge;
        }
        if !self.sessions.is_empty() {
            self.warm(batch);
        }
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() {
                continue;
            }
            match batch.keys[i].dl_type {
                ethertype::IPV4 => self.ipv4(ctx, batch, i),
                ethertype::ARP => self.arp(ctx, batch, i),
                _ => {}
            }
        }
    }

    fn has_release(&self) -> bool {
        !self.aborts.is_empty()
    }

    fn release(&mut self, ctx: &mut StageContext<'_>, out: &mut Batch) {
        while let Some(s) = self.aborts.last().copied() {
            if !self.abort(ctx, out, &s) {
                break;
            }
            self.aborts.pop();
        }
    }

    fn tick(&mut self, now_ms: u64) {
        if now_ms != self.ticked_ms {
            self.ticked_ms = now_ms;
            self.sweep(now_ms, TICK_SWEEP);
        }
    }

    fn adopt(&mut self, previous: &mut dyn Stage) {
        let previous: &mut dyn std::any::Any = previous;
        if let Some(old) = previous.downcast_mut::<LbStage>() {
            // The connections move over; so do the services, unless this stage was given its
            // own already (a connection whose service it lacks then ends at its next packet).
            if self.services.is_empty() {
                std::mem::swap(&mut self.services, &mut old.services);
            }
            std::mem::swap(&mut self.sessions, &mut old.sessions);
            if !self.configured {
                self.config = old.config.clone();
                self.configured = old.configured;
            }
            // Cached backend MACs are looked up again under this stage's configuration.
            self.generation = old.generation.wrapping_add(1);
            self.ticked_ms = old.ticked_ms;
            if self.config.capacity.min(MAX_CAPACITY) != self.sessions.capacity() {
                self.resize(self.config.capacity);
            }
        }
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
