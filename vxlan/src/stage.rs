//! The VXLAN stages of the datapath:
//!
//! - [`DecapStage`], in the uplink's chain before conntrack: a VXLAN packet to the local VTEP
//!   loses its outer headers and is patched over to its overlay network, entering on the
//!   network's tunnel port ([`TUNNEL_PORT`]) with the remote VTEP it came from;
//! - [`OverlayStage`], last in an overlay network's chain: learns the remote VTEP of every
//!   decapsulated frame's source MAC, and turns what L2 sends to the tunnel port (and floods
//!   from local ports) into VXLAN packets patched over to the uplink, whose router resolves
//!   their next hop. Floods are copied to every peer (head-end replication) and sent at the
//!   next pass.
//!
//! Each stage belongs to the worker running its chain; configuration arrives as whole values
//! from the control thread (`set_config`).

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;

use xvs_stage::batch::Egress;
use xvs_stage::checksum::complete_checksum;
use xvs_stage::classify::{FlowKey, ethertype, ipproto};
use xvs_stage::drop::ReasonSet;
use xvs_stage::frame::{Frame, FramePool};
use xvs_stage::icmp_error::{IcmpError, answer_in_place};
use xvs_stage::offload::Offload;
use xvs_stage::segment::{SegmentEnd, segment_into_pool};
use xvs_stage::stage::{Batch, FrameMeta, Stage, StageContext, Verdict};
use xvs_stage::wire::{BridgeId, Mac, PortId};

use crate::decap::{LocalVtep, decap};
use crate::drop::VxlanDrop;
use crate::encap::{PeerConfig, PeerTemplate};
use crate::flow_hash::source_port;
use crate::header::{OUTER_LEN, Vni};
use crate::mss::clamp_mss_to_mtu;
use crate::peers::{Destination, Peers};
use crate::remote_fdb::{RemoteEntry, RemoteFdb, RemoteFdbConfig};

/// The port id an overlay network's remote stations are learnt on: frames decapsulated enter
/// on it, and L2's output to it is encapsulated. Not a real port (no backend, no member of
/// the bridge's flood domain: floods reach the peers through [`OverlayStage`]).
pub const TUNNEL_PORT: PortId = PortId::MAX - 1;

/// Encapsulated copies of floods and segments of super-frames waiting for the next pass, per
/// network: a burst of 32 TAP super-frames of 45 segments each fits (a full queue is a counted
/// drop of the copy).
pub const REPLICA_QUEUE: usize = 2048;

/// Ethernet header length (inner frames are untagged).
const ETH_LEN: usize = 14;

/// An overlay network, as decapsulation finds it by VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayNet {
    /// The network's bridge.
    pub bridge: BridgeId,
    /// The worker running it.
    pub worker: u16,
    /// The overlay MTU (SYNs coming in are clamped to fit it).
    pub mtu: u16,
    /// The network's gateway MAC (every host has its own: a frame from it never crosses).
    pub gateway_mac: Mac,
    /// The VTEPs it accepts frames from: its peers and its static entries' VTEPs.
    pub remotes: Box<[Ipv4Addr]>,
}

/// What the decap stage needs: the local VTEP, the uplink port it listens on, the networks.
#[derive(Debug, Clone)]
pub struct DecapConfig {
    /// Local address and UDP port.
    pub vtep: LocalVtep,
    /// The uplink's port (VXLAN arrives there).
    pub uplink_port: PortId,
    /// Overlay networks by VNI.
    pub networks: Arc<HashMap<Vni, OverlayNet>>,
}

/// Decapsulation in the uplink's chain; passes everything but VXLAN to the local VTEP.
#[derive(Debug, Default)]
pub struct DecapStage {
    config: Option<DecapConfig>,
}

impl DecapStage {
    /// A stage with no VTEP (passes everything).
    pub fn new() -> DecapStage {
        DecapStage::default()
    }

    /// Sets (or, with `None`, removes) the VTEP.
    pub fn set_config(&mut self, config: Option<DecapConfig>) {
        self.config = config;
    }

    /// Whether `key` is UDP to the VTEP, received on the uplink port.
    #[inline]
    fn is_vxlan(c: &DecapConfig, key: &FlowKey, patched: bool) -> bool {
        !patched
            && key.in_port == c.uplink_port
            && key.dl_type == ethertype::IPV4
            && key.nw_proto == ipproto::UDP
            && key.tp_dst == c.vtep.port
            && key.nw_dst[12..] == c.vtep.ip.octets()
    }
}

impl Stage for DecapStage {
    fn name(&self) -> &'static str {
        "vxlan_decap"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(VxlanDrop::set())
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        let Some(c) = &self.config else {
            return;
        };
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next()
                || !Self::is_vxlan(c, &batch.keys[i], batch.meta[i].patched_from.is_some())
            {
                continue;
            }
            let v = match decap(ctx.pool.data(&batch.frames[i]), &c.vtep) {
                Err(e) => Verdict::Drop(e.into()),
                Ok(d) => match c.networks.get(&d.vni) {
                    None => Verdict::Drop(VxlanDrop::UnknownVni.into()),
                    Some(n) if !n.remotes.contains(&d.remote_ip) => {
                        Verdict::Drop(VxlanDrop::UnknownPeer.into())
                    }
                    Some(n)
                        if ctx
                            .pool
                            .data(&batch.frames[i])
                            .get(d.outer_len + 6..d.outer_len + 12)
                            == Some(&n.gateway_mac.0[..]) =>
                    {
                        Verdict::Drop(VxlanDrop::GatewayFrame.into())
                    }
                    Some(n) => {
                        let f = &mut batch.frames[i];
                        ctx.pool.pull_header(f, d.outer_len);
                        f.set_len(d.inner_len);
                        let inner = ctx.pool.data_mut(f);
                        if inner.get(12..14) == Some(&ethertype::IPV4.to_be_bytes()) {
                            clamp_mss_to_mtu(inner, ETH_LEN, n.mtu, false);
                        }
                        let m = &mut batch.meta[i];
                        m.tunnel_peer = Some(d.remote_ip);
                        ctx.record("vxlan_decap", || {
                            format!(
                                "vni {} from {}: decapsulated into bridge {}",
                                d.vni.get(),
                                d.remote_ip,
                                n.bridge
                            )
                        });
                        if n.worker == ctx.worker {
                            m.enter_port = Some(TUNNEL_PORT);
                            Verdict::Patch(n.bridge)
                        } else {
                            // The network runs on another worker: its chain runs there.
                            m.bridge = n.bridge;
                            batch.keys[i].in_port = TUNNEL_PORT;
                            Verdict::Handoff(n.worker)
                        }
                    }
                },
            };
            if let Verdict::Drop(r) = v {
                ctx.record("vxlan_decap", || format!("drop: {}", r.describe()));
            }
            batch.verdicts[i] = v;
        }
    }
}

/// An overlay network's tunnel: its VNI, the local VTEP, where its frames go and come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// The network's VNI.
    pub vni: Vni,
    /// The network's bridge (frames are patched over from it).
    pub bridge: BridgeId,
    /// The uplink's bridge (encapsulated frames go there).
    pub uplink_bridge: BridgeId,
    /// The uplink's MAC (outer source).
    pub local_mac: Mac,
    /// The local VTEP address (outer source).
    pub local_ip: Ipv4Addr,
    /// The VTEPs' UDP port.
    pub port: u16,
    /// The overlay MTU: larger inner frames get fragmentation-needed, SYNs are clamped.
    pub mtu: u16,
    /// The network's gateway (answered locally on every host: never sent through the tunnel).
    pub gateway_ip: Ipv4Addr,
    /// The gateway's MAC (source of the ICMP errors this stage sends).
    pub gateway_mac: Mac,
}

/// An overlay network's configuration: its tunnel, peers and static entries (the peers and
/// entries go into the stage's tables; the stage keeps only the tunnel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// The tunnel.
    pub tunnel: Tunnel,
    /// Peers for head-end replication.
    pub peers: Vec<Ipv4Addr>,
    /// Static remote entries: inner MAC → VTEP, and the station's address if known (ARP
    /// for it is then answered on this host, as the kernel's `proxy` VXLAN does).
    pub statics: Vec<StaticRemote>,
}

/// A static remote entry (`vtep fdb add NET MAC REMOTE_IP [--ip IP]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRemote {
    /// The remote station's MAC.
    pub mac: Mac,
    /// The VTEP it lives behind.
    pub remote: Ipv4Addr,
    /// Its IPv4 address, when known.
    pub ip: Option<Ipv4Addr>,
}

/// Per-peer counters of one network, for `vtep show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Frames encapsulated to the peer.
    pub tx: u64,
    /// Frames decapsulated from the peer.
    pub rx: u64,
}

/// Learning and encapsulation at the end of an overlay network's chain.
#[derive(Debug)]
pub struct OverlayStage {
    tunnel: Option<Tunnel>,
    fdb: RemoteFdb,
    peers: Peers,
    /// Outer header templates by remote VTEP (peers, and VTEPs learnt or static).
    templates: HashMap<Ipv4Addr, PeerTemplate>,
    counters: HashMap<Ipv4Addr, PeerCounters>,
    replicas: VecDeque<Frame>,
    /// The remotes of the frame at hand (reused: no allocation per frame).
    scratch: Vec<Ipv4Addr>,
    /// Addresses of static entries given with `--ip`: ARP for them is answered here.
    proxy: HashMap<Ipv4Addr, Mac>,
}

impl Default for OverlayStage {
    fn default() -> Self {
        OverlayStage::new()
    }
}

impl OverlayStage {
    /// A stage with no tunnel (passes everything) and an empty remote FDB.
    pub fn new() -> OverlayStage {
        OverlayStage {
            tunnel: None,
            fdb: RemoteFdb::new(RemoteFdbConfig::default()),
            peers: Peers::new(crate::peers::DEFAULT_PEER_LIMIT),
            templates: HashMap::new(),
            counters: HashMap::new(),
            replicas: VecDeque::with_capacity(REPLICA_QUEUE),
            scratch: Vec::with_capacity(crate::peers::DEFAULT_PEER_LIMIT),
            proxy: HashMap::new(),
        }
    }

    /// Sets (or removes) the tunnel; the learnt entries of a VNI that stays are kept, except
    /// those behind a peer no longer listed (`vtep peer del` cuts it off at once).
    pub fn set_config(&mut self, config: Option<OverlayConfig>) {
        let new_vni = config.as_ref().map(|c| c.tunnel.vni);
        if let Some(v) = self.tunnel.map(|t| t.vni) {
            if new_vni == Some(v) {
                let kept = config.as_ref().map_or(&[][..], |c| &c.peers[..]);
                let gone: Vec<Ipv4Addr> = self
                    .peers
                    .list(v)
                    .iter()
                    .filter(|p| !kept.contains(p))
                    .copied()
                    .collect();
                for p in gone {
                    self.fdb.forget_remote(v, p);
                    self.counters.remove(&p);
                }
            } else {
                self.fdb.flush_vni(v);
                self.counters.clear();
            }
            self.peers.remove_vni(v);
            let statics: Vec<Mac> = self
                .fdb
                .entries(0)
                .filter(|e| e.vni == v && e.is_static)
                .map(|e| e.mac)
                .collect();
            for m in statics {
                self.fdb.remove_static(v, m);
            }
        }
        self.templates.clear();
        self.proxy.clear();
        self.tunnel = config.as_ref().map(|c| c.tunnel);
        if let Some(c) = config {
            // The control plane keeps peers and static entries within the tables' limits, so
            // none is refused here.
            for p in c.peers {
                let _ = self.peers.add(c.tunnel.vni, p);
            }
            for e in c.statics {
                let _ = self.fdb.add_static(c.tunnel.vni, e.mac, e.remote, e.ip);
                if let Some(ip) = e.ip {
                    self.proxy.insert(ip, e.mac);
                }
            }
        }
    }

    /// This stage's configuration as set (the tunnel, its peers and static entries).
    fn current(&self) -> Option<OverlayConfig> {
        self.tunnel.map(|tunnel| OverlayConfig {
            tunnel,
            peers: self.peers.list(tunnel.vni).to_vec(),
            statics: self
                .fdb
                .entries(0)
                .filter(|e| e.vni == tunnel.vni && e.is_static)
                .map(|e| StaticRemote {
                    mac: e.mac,
                    remote: e.remote_ip,
                    ip: e.inner_ip,
                })
                .collect(),
        })
    }

    /// The remote FDB's entries (for `vtep fdb ls`), and per-peer counters.
    pub fn entries(&self, now_ms: u64) -> Vec<RemoteEntry> {
        self.fdb.entries(now_ms).collect()
    }

    /// Per-peer counters.
    pub fn peer_counters(&self) -> Vec<(Ipv4Addr, PeerCounters)> {
        let mut v: Vec<_> = self.counters.iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_unstable_by_key(|(ip, _)| *ip);
        v
    }

    /// Encapsulates `frame` to `remote` in place (its checksum completed first, if partial)
    /// with `remote`'s template, made on first use, and counted in `remote`'s tx when `count`
    /// (not for a trace); false when it cannot be (no headroom: a counted drop by the caller).
    fn encap(
        &mut self,
        c: &Tunnel,
        pool: &FramePool,
        frame: &mut Frame,
        remote: Ipv4Addr,
        count: bool,
    ) -> bool {
        let off = frame.offload();
        if off.needs_csum() {
            if complete_checksum(pool.data_mut(frame), &off).is_err() {
                return false;
            }
            frame.set_offload(Offload::NONE);
        }
        let sport = source_port(pool.data(frame));
        let inner_len = frame.len();
        let t = self.templates.entry(remote).or_insert_with(|| {
            PeerTemplate::new(PeerConfig {
                port: c.port,
                ..PeerConfig::new(c.local_mac, Mac([0; 6]), c.local_ip, remote, c.vni)
            })
        });
        let Some(outer) = pool
            .push_header(frame, OUTER_LEN)
            .and_then(|d| d.first_chunk_mut::<OUTER_LEN>())
        else {
            return false;
        };
        if t.write(outer, inner_len, sport).is_err() {
            return false;
        }
        if count {
            self.counters.entry(remote).or_default().tx += 1;
        }
        true
    }

    /// The metadata of an encapsulated frame leaving through the uplink.
    fn outbound(c: &Tunnel) -> FrameMeta {
        FrameMeta {
            bridge: c.bridge,
            tunnel: true,
            egress: Egress::Uplink,
            ..FrameMeta::default()
        }
    }

    /// Queues an encapsulated copy of `frame` to each of `remotes` (for the next pass).
    fn replicate(
        &mut self,
        ctx: &mut StageContext<'_>,
        c: &Tunnel,
        frame: &Frame,
        remotes: &[Ipv4Addr],
    ) {
        for &r in remotes {
            if self.replicas.len() >= REPLICA_QUEUE {
                ctx.count(VxlanDrop::ReplicaQueueFull, 1);
                continue;
            }
            let Some(mut copy) = ctx.pool.clone_frame(frame) else {
                ctx.count(VxlanDrop::NoBuffer, 1);
                continue;
            };
            // Counted as made when released (a copy never sent was never made).
            if self.encap(c, ctx.pool, &mut copy, r, true) {
                self.replicas.push_back(copy);
            } else {
                ctx.pool.free(copy);
                ctx.count(VxlanDrop::NoBuffer, 1);
            }
        }
    }

    /// Segments a TCP super-frame (its own MSS fits the overlay: the endpoint's MTU is the
    /// overlay's), each segment encapsulated to `remote` and queued for the next pass.
    fn segment_to(
        &mut self,
        ctx: &mut StageContext<'_>,
        c: &Tunnel,
        frame: &Frame,
        remote: Ipv4Addr,
    ) -> Result<(), VxlanDrop> {
        let room = REPLICA_QUEUE.saturating_sub(self.replicas.len());
        let mut no_buffer = 0;
        let (_, end) = segment_into_pool(
            ctx.pool,
            frame,
            &frame.offload(),
            room,
            &mut |pool, mut out| {
                if self.encap(c, pool, &mut out, remote, true) {
                    self.replicas.push_back(out);
                } else {
                    pool.free(out);
                    no_buffer += 1;
                }
            },
        );
        ctx.count(VxlanDrop::NoBuffer, no_buffer);
        match end {
            SegmentEnd::Done => Ok(()),
            SegmentEnd::Stopped { .. } if self.replicas.len() >= REPLICA_QUEUE => {
                Err(VxlanDrop::ReplicaQueueFull)
            }
            SegmentEnd::Stopped { .. } => Err(VxlanDrop::NoBuffer),
            SegmentEnd::Failed(_) => Err(VxlanDrop::MtuExceeded),
        }
    }

    /// Whether a flood must stay on this host: ARP for the gateway, which every host answers,
    /// and anything the gateway itself floods.
    fn stays_local(c: &Tunnel, key: &FlowKey) -> bool {
        key.dl_src == c.gateway_mac
            || (key.dl_type == ethertype::ARP && key.nw_dst[12..] == c.gateway_ip.octets())
    }

    /// Answers frame `i` in place if it is an ARP request for the address of a static entry
    /// (`vtep fdb add ... --ip`), as the kernel's VXLAN `proxy` option does: the reply goes
    /// back out of the port the request came in on. False if it is not one.
    fn answer_arp(&self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize) -> bool {
        const OP: usize = ETH_LEN + 6;
        const SHA: usize = ETH_LEN + 8;
        const SPA: usize = SHA + 6;
        const THA: usize = SPA + 4;
        const TPA: usize = THA + 6;
        let key = batch.keys[i];
        if self.proxy.is_empty() || key.dl_type != ethertype::ARP {
            return false;
        }
        let f = ctx.pool.data(&batch.frames[i]);
        let (Some(op), Some(tpa)) = (
            f.get(OP..OP + 2),
            f.get(TPA..TPA + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok()),
        ) else {
            return false;
        };
        let target = Ipv4Addr::from(tpa);
        let Some(&mac) = self.proxy.get(&target) else {
            return false;
        };
        if op != [0, 1] {
            return false;
        }
        ctx.record("vxlan", || {
            format!("ARP for {target} answered here: {mac} (static entry)")
        });
        if !ctx.dry_run() {
            let d = ctx.pool.data_mut(&mut batch.frames[i]);
            let mut sender = [0u8; 10];
            sender.copy_from_slice(&d[SHA..SHA + 10]);
            d[OP + 1] = 2;
            d[SHA..SHA + 6].copy_from_slice(&mac.0);
            d[SPA..SPA + 4].copy_from_slice(&tpa);
            d[THA..THA + 10].copy_from_slice(&sender);
            d[0..6].copy_from_slice(&sender[..6]);
            d[6..12].copy_from_slice(&mac.0);
        }
        batch.verdicts[i] = Verdict::Output(key.in_port);
        true
    }

    /// Frame `i`, bound for the tunnel (to `dst`, or flooded): encapsulated to one VTEP and
    /// patched over to the uplink, or copied to every peer.
    fn send_to_tunnel(
        &mut self,
        ctx: &mut StageContext<'_>,
        c: &Tunnel,
        batch: &mut Batch,
        i: usize,
        flood: bool,
    ) {
        let key = batch.keys[i];
        let now = ctx.now_ms;
        let dest = if flood {
            match self.peers.list(c.vni) {
                [] => Err(VxlanDrop::NoPeer),
                _ => Ok(None),
            }
        } else {
            match self.peers.destination(&self.fdb, c.vni, key.dl_dst, now) {
                Ok(Destination::Unicast(ip)) => Ok(Some(ip)),
                Ok(Destination::Flood(_)) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let frame = &batch.frames[i];
        let max = usize::from(c.mtu) + ETH_LEN;
        if frame.len() > max && !frame.offload().is_gso() {
            // Too big for the tunnel: fragmentation-needed to the sender (IPv4 with DF), else
            // a counted drop; a flood's local copies still go.
            if flood {
                ctx.count(VxlanDrop::MtuExceeded, 1);
                return;
            }
            let df = key.dl_type == ethertype::IPV4
                && ctx
                    .pool
                    .data(frame)
                    .get(ETH_LEN + 6)
                    .is_some_and(|b| b & 0x40 != 0);
            let answered = df
                && !ctx.dry_run()
                && answer_in_place(
                    ctx.pool,
                    &mut batch.frames[i],
                    &key,
                    IcmpError::FragmentationNeeded { mtu: c.mtu },
                    c.gateway_mac,
                    c.gateway_ip,
                    0,
                )
                .is_ok();
            ctx.record("vxlan", || {
                format!(
                    "larger than the overlay MTU {}: fragmentation needed",
                    c.mtu
                )
            });
            if answered {
                ctx.count(VxlanDrop::MtuExceeded, 1);
                ctx.made_frame();
                batch.verdicts[i] = Verdict::Output(key.in_port);
            } else {
                batch.verdicts[i] = Verdict::Drop(VxlanDrop::MtuExceeded.into());
            }
            return;
        }
        let one = match dest {
            Err(e) => {
                if !flood {
                    batch.verdicts[i] = Verdict::Drop(e.into());
                }
                ctx.record("vxlan", || format!("vni {}: {e}", c.vni.get()));
                return;
            }
            Ok(one) => one,
        };
        let mut remotes = std::mem::take(&mut self.scratch);
        remotes.clear();
        match one {
            Some(ip) => remotes.push(ip),
            None => remotes.extend_from_slice(self.peers.list(c.vni)),
        }
        ctx.record("vxlan", || {
            let to: Vec<String> = remotes.iter().map(|r| r.to_string()).collect();
            format!("vni {}: encapsulated to {}", c.vni.get(), to.join(", "))
        });
        if ctx.dry_run() {
            // The traced frame is encapsulated too (uncounted), so the uplink's chain traces
            // the outer packet as it would go.
            if let (false, Some(&first)) = (flood, remotes.first()) {
                if self.encap(c, ctx.pool, &mut batch.frames[i], first, false) {
                    batch.meta[i] = Self::outbound(c);
                }
                batch.verdicts[i] = Verdict::Patch(c.uplink_bridge);
            }
        } else {
            self.send(ctx, c, batch, i, flood, &remotes);
        }
        self.scratch = remotes;
    }

    /// Encapsulates frame `i` to `remotes`: copies for a flood (queued for the next pass), the
    /// frame itself to the first remote otherwise (patched over to the uplink), copies to the
    /// rest; a super-frame is cut to the overlay's size first.
    fn send(
        &mut self,
        ctx: &mut StageContext<'_>,
        c: &Tunnel,
        batch: &mut Batch,
        i: usize,
        flood: bool,
        remotes: &[Ipv4Addr],
    ) {
        if batch.keys[i].dl_type == ethertype::IPV4 {
            let partial = batch.frames[i].offload().needs_csum();
            let data = ctx.pool.data_mut(&mut batch.frames[i]);
            clamp_mss_to_mtu(data, ETH_LEN, c.mtu, partial);
        }
        if batch.frames[i].offload().is_gso() {
            // A TAP's super-frame: cut to the overlay's size, each piece encapsulated.
            for r in remotes {
                if let Err(e) = self.segment_to(ctx, c, &batch.frames[i], *r) {
                    ctx.count(e, 1);
                }
            }
            if !flood {
                batch.verdicts[i] = Verdict::Drop(VxlanDrop::Segmented.into());
            }
            return;
        }
        if flood {
            self.replicate(ctx, c, &batch.frames[i], remotes);
            return;
        }
        let Some((&first, rest)) = remotes.split_first() else {
            return;
        };
        if !rest.is_empty() {
            self.replicate(ctx, c, &batch.frames[i], rest);
        }
        if self.encap(c, ctx.pool, &mut batch.frames[i], first, true) {
            batch.meta[i] = Self::outbound(c);
            batch.verdicts[i] = Verdict::Patch(c.uplink_bridge);
        } else {
            batch.verdicts[i] = Verdict::Drop(VxlanDrop::NoBuffer.into());
        }
    }
}

impl Stage for OverlayStage {
    fn name(&self) -> &'static str {
        "vxlan"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(VxlanDrop::set())
    }

    fn sees_decided(&self) -> bool {
        true
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        let Some(c) = self.tunnel else {
            return;
        };
        for i in 0..batch.len() {
            if let Some(peer) = batch.meta[i].tunnel_peer {
                // Decapsulated: learn where its source lives; its verdict (local ports) stands.
                let mac = batch.keys[i].dl_src;
                if !ctx.dry_run() {
                    self.counters.entry(peer).or_default().rx += 1;
                    match self.fdb.learn(c.vni, mac, peer, ctx.now_ms) {
                        Ok(_) => {}
                        Err(VxlanDrop::FdbFull) => ctx.count(VxlanDrop::FdbFull, 1),
                        Err(e) => batch.verdicts[i] = Verdict::Drop(e.into()),
                    }
                }
                ctx.record("vxlan", || format!("learns {mac} at VTEP {peer}"));
                continue;
            }
            let verdict = batch.verdicts[i];
            match verdict {
                Verdict::Output(TUNNEL_PORT) if batch.keys[i].dl_src == c.gateway_mac => {
                    batch.verdicts[i] = Verdict::Drop(VxlanDrop::GatewayFrame.into());
                }
                Verdict::Output(TUNNEL_PORT) => self.send_to_tunnel(ctx, &c, batch, i, false),
                Verdict::Flood
                    if !self.answer_arp(ctx, batch, i)
                        && !Self::stays_local(&c, &batch.keys[i]) =>
                {
                    self.send_to_tunnel(ctx, &c, batch, i, true);
                }
                _ => {}
            }
        }
    }

    fn has_release(&self) -> bool {
        !self.replicas.is_empty()
    }

    fn release(&mut self, ctx: &mut StageContext<'_>, out: &mut Batch) {
        let Some(c) = &self.tunnel else {
            return;
        };
        while !out.frames.is_full() {
            let Some(f) = self.replicas.pop_front() else {
                break;
            };
            let j = out.len();
            if let Err(f) = out.push(f, Self::outbound(c)) {
                self.replicas.push_front(f);
                break;
            }
            out.verdicts[j] = Verdict::Patch(c.uplink_bridge);
            // A copy (or segment) is made when it goes: the stage's accounting is then
            // received + made = sent + dropped, whatever waits in the queue.
            ctx.made_frame();
        }
    }

    fn discard(&mut self, pool: &mut FramePool, drops: &xvs_stage::drop::DropCounters) -> u64 {
        // Copies never sent were never made: an event, not a frame drop.
        drops.add(VxlanDrop::Discarded, self.replicas.len() as u64);
        for f in self.replicas.drain(..) {
            pool.free(f);
        }
        0
    }

    fn tick(&mut self, now_ms: u64) {
        self.fdb.expire(now_ms, 64);
    }

    fn frames_held(&self) -> usize {
        self.replicas.len()
    }

    fn adopt(&mut self, previous: &mut dyn Stage) {
        let previous: &mut dyn std::any::Any = previous;
        if let Some(old) = previous.downcast_mut::<OverlayStage>() {
            // This stage's tunnel, as set on it, goes onto the old stage's tables: the learnt
            // entries stay (same VNI), the old statics and peers are replaced.
            let mine = self.current();
            std::mem::swap(&mut self.fdb, &mut old.fdb);
            std::mem::swap(&mut self.peers, &mut old.peers);
            std::mem::swap(&mut self.counters, &mut old.counters);
            std::mem::swap(&mut self.replicas, &mut old.replicas);
            std::mem::swap(&mut self.proxy, &mut old.proxy);
            self.tunnel = old.tunnel;
            self.set_config(mine);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use xvs_stage::classify::classify;
    use xvs_stage::domain::Domain;
    use xvs_stage::drop::DropCounters;

    const HERE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const PEER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const PEER_C: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const NETWORK: BridgeId = 7;
    const UPLINK: BridgeId = 1;
    const UPLINK_PORT: PortId = 3;
    const LOCAL: Mac = Mac([2, 0, 0, 0, 0, 0x11]);
    const REMOTE: Mac = Mac([2, 0, 0, 0, 0, 0x22]);

    fn tunnel() -> Tunnel {
        Tunnel {
            vni: Vni::new(4096).unwrap(),
            bridge: NETWORK,
            uplink_bridge: UPLINK,
            local_mac: Mac([2, 0, 0, 0, 0, 1]),
            local_ip: HERE,
            port: crate::VXLAN_PORT,
            mtu: 1450,
            gateway_ip: Ipv4Addr::new(10, 0, 0, 1),
            gateway_mac: Mac([2, 0x42, 10, 0, 0, 1]),
        }
    }

    fn overlay(statics: Vec<(Mac, Ipv4Addr)>) -> OverlayStage {
        let mut s = OverlayStage::new();
        s.set_config(Some(config(statics)));
        s
    }

    fn config(statics: Vec<(Mac, Ipv4Addr)>) -> OverlayConfig {
        OverlayConfig {
            tunnel: tunnel(),
            peers: vec![PEER_B, PEER_C],
            statics: statics
                .into_iter()
                .map(|(mac, remote)| StaticRemote {
                    mac,
                    remote,
                    ip: None,
                })
                .collect(),
        }
    }

    fn run(stage: &mut dyn Stage, pool: &mut FramePool, b: &mut Batch) {
        let (domain, drops) = (Domain::default(), DropCounters::default());
        let mut ctx = StageContext::new(pool, &domain, &drops, 0);
        stage.process(&mut ctx, b);
    }

    /// A UDP frame from `src` to `dst` (MACs), 10.0.0.2 -> 10.0.0.3.
    fn inner(src: Mac, dst: Mac) -> Vec<u8> {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(src.0, dst.0)
            .ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64)
            .udp(4000, 53)
            .write(&mut f, b"hello")
            .unwrap();
        f
    }

    /// One frame in a batch on `bridge`, classified as received on `in_port`, with `verdict`.
    fn batch_of(
        pool: &mut FramePool,
        bytes: &[u8],
        bridge: BridgeId,
        in_port: PortId,
        verdict: Verdict,
    ) -> Batch {
        let mut b = Batch::default();
        b.frames.push(pool.alloc_copy(bytes).unwrap());
        b.begin(bridge, in_port, 0);
        b.keys[0] = classify(bytes, in_port, 0).unwrap();
        b.verdicts[0] = verdict;
        b
    }

    #[test]
    fn a_known_destination_is_encapsulated_to_its_vtep_and_decapsulated_back() {
        let mut pool = FramePool::new_heap(64).unwrap();
        let (domain, drops) = (Domain::default(), DropCounters::default());
        let mut stage = overlay(vec![(REMOTE, PEER_B)]);
        let bytes = inner(LOCAL, REMOTE);
        let mut b = batch_of(&mut pool, &bytes, NETWORK, 1, Verdict::Output(TUNNEL_PORT));
        {
            let mut ctx = StageContext::new(&mut pool, &domain, &drops, 0);
            stage.process(&mut ctx, &mut b);
        }
        assert_eq!(b.verdicts[0], Verdict::Patch(UPLINK));
        assert!(b.meta[0].tunnel && b.meta[0].egress == Egress::Uplink);
        assert!(!stage.has_release(), "a unicast makes no copies");
        let outer = pool.data(&b.frames[0]).to_vec();
        assert_eq!(outer.len(), OUTER_LEN + bytes.len());
        assert_eq!(&outer[OUTER_LEN..], &bytes[..], "inner frame untouched");

        // The frame as the peer's uplink receives it (addressed by the router meanwhile).
        let mut decap_stage = DecapStage::new();
        let net = OverlayNet {
            bridge: NETWORK,
            worker: 0,
            mtu: 1450,
            gateway_mac: tunnel().gateway_mac,
            remotes: vec![HERE].into(),
        };
        decap_stage.set_config(Some(DecapConfig {
            vtep: LocalVtep::new(PEER_B),
            uplink_port: UPLINK_PORT,
            networks: Arc::new(HashMap::from([(tunnel().vni, net)])),
        }));
        let mut b = batch_of(&mut pool, &outer, UPLINK, UPLINK_PORT, Verdict::Next);
        {
            let mut ctx = StageContext::new(&mut pool, &domain, &drops, 0);
            decap_stage.process(&mut ctx, &mut b);
        }
        assert_eq!(b.verdicts[0], Verdict::Patch(NETWORK));
        assert_eq!(b.meta[0].enter_port, Some(TUNNEL_PORT));
        assert_eq!(b.meta[0].tunnel_peer, Some(HERE));
        assert_eq!(pool.data(&b.frames[0]), &bytes[..]);

        // An unknown VNI is a counted drop with its reason.
        let mut other = outer.clone();
        other[OUTER_LEN - 4] ^= 1;
        let mut b = batch_of(&mut pool, &other, UPLINK, UPLINK_PORT, Verdict::Next);
        run(&mut decap_stage, &mut pool, &mut b);
        assert_eq!(b.verdicts[0], Verdict::Drop(VxlanDrop::UnknownVni.into()));

        // So is a VTEP that is neither a peer nor behind a static entry.
        let mut stranger = outer.clone();
        stranger[26..30].copy_from_slice(&[198, 18, 0, 9]);
        let sum = etherparse::Ipv4HeaderSlice::from_slice(&stranger[14..34])
            .unwrap()
            .to_header()
            .calc_header_checksum();
        stranger[24..26].copy_from_slice(&sum.to_be_bytes());
        let mut b = batch_of(&mut pool, &stranger, UPLINK, UPLINK_PORT, Verdict::Next);
        run(&mut decap_stage, &mut pool, &mut b);
        assert_eq!(b.verdicts[0], Verdict::Drop(VxlanDrop::UnknownPeer.into()));

        // And a frame from the network's gateway MAC (each host has its own).
        let mut from_gw = outer.clone();
        from_gw[OUTER_LEN + 6..OUTER_LEN + 12].copy_from_slice(&tunnel().gateway_mac.0);
        let mut b = batch_of(&mut pool, &from_gw, UPLINK, UPLINK_PORT, Verdict::Next);
        run(&mut decap_stage, &mut pool, &mut b);
        assert_eq!(b.verdicts[0], Verdict::Drop(VxlanDrop::GatewayFrame.into()));
    }

    #[test]
    fn the_gateway_stays_on_its_host() {
        let mut pool = FramePool::new_heap(16).unwrap();
        let mut stage = overlay(Vec::new());
        let gw = tunnel().gateway_mac;
        let bytes = inner(gw, Mac([0xff; 6]));
        let mut b = batch_of(&mut pool, &bytes, NETWORK, 1, Verdict::Flood);
        run(&mut stage, &mut pool, &mut b);
        assert_eq!(b.verdicts[0], Verdict::Flood);
        assert!(
            !stage.has_release(),
            "a gateway's flood is not copied to peers"
        );
        let bytes = inner(gw, REMOTE);
        let mut b = batch_of(&mut pool, &bytes, NETWORK, 1, Verdict::Output(TUNNEL_PORT));
        run(&mut stage, &mut pool, &mut b);
        assert_eq!(b.verdicts[0], Verdict::Drop(VxlanDrop::GatewayFrame.into()));
    }

    #[test]
    fn arp_for_a_static_entry_with_an_address_is_answered_here() {
        let mut pool = FramePool::new_heap(16).unwrap();
        let mut c = config(Vec::new());
        c.statics.push(StaticRemote {
            mac: REMOTE,
            remote: PEER_B,
            ip: Some(Ipv4Addr::new(10, 0, 0, 3)),
        });
        let mut stage = OverlayStage::new();
        stage.set_config(Some(c));
        let mut req = Vec::new();
        etherparse::PacketBuilder::ethernet2(LOCAL.0, [0xff; 6])
            .arp(
                etherparse::ArpPacket::new(
                    etherparse::ArpHardwareId::ETHERNET,
                    etherparse::EtherType::IPV4,
                    etherparse::ArpOperation::REQUEST,
                    &LOCAL.0,
                    &[10, 0, 0, 2],
                    &[0; 6],
                    &[10, 0, 0, 3],
                )
                .unwrap(),
            )
            .write(&mut req)
            .unwrap();
        let mut b = batch_of(&mut pool, &req, NETWORK, 1, Verdict::Flood);
        run(&mut stage, &mut pool, &mut b);
        assert_eq!(
            b.verdicts[0],
            Verdict::Output(1),
            "answered out of its port"
        );
        assert!(!stage.has_release(), "not flooded to the peers");
        let d = pool.data(&b.frames[0]);
        assert_eq!(&d[0..6], &LOCAL.0[..], "to the asker");
        assert_eq!(&d[6..12], &REMOTE.0[..]);
        assert_eq!(&d[20..22], &[0, 2], "a reply");
        assert_eq!(&d[22..28], &REMOTE.0[..]);
        assert_eq!(&d[28..32], &[10, 0, 0, 3]);
        assert_eq!(&d[32..38], &LOCAL.0[..]);
        assert_eq!(&d[38..42], &[10, 0, 0, 2]);
    }

    #[test]
    fn deleting_a_peer_forgets_what_was_learnt_behind_it() {
        let mut pool = FramePool::new_heap(16).unwrap();
        let mut stage = overlay(Vec::new());
        let reply = inner(REMOTE, LOCAL);
        let mut b = batch_of(&mut pool, &reply, NETWORK, TUNNEL_PORT, Verdict::Output(1));
        b.meta[0].tunnel_peer = Some(PEER_C);
        run(&mut stage, &mut pool, &mut b);
        assert_eq!(stage.entries(0).len(), 1);
        let mut c = config(Vec::new());
        c.peers.retain(|p| *p != PEER_C);
        stage.set_config(Some(c));
        assert!(stage.entries(0).is_empty(), "{:?}", stage.entries(0));
    }

    #[test]
    fn a_flood_is_copied_to_every_peer_at_the_next_pass_and_learnt_sources_unicast() {
        let mut pool = FramePool::new_heap(64).unwrap();
        let (domain, drops) = (Domain::default(), DropCounters::default());
        let mut stage = overlay(Vec::new());
        let bytes = inner(LOCAL, Mac([0xff; 6]));
        let mut b = batch_of(&mut pool, &bytes, NETWORK, 1, Verdict::Flood);
        let free = pool.available();
        {
            let mut ctx = StageContext::new(&mut pool, &domain, &drops, 0);
            stage.process(&mut ctx, &mut b);
            assert_eq!(ctx.generated, 0, "copies count as made when they go");
        }
        assert_eq!(b.verdicts[0], Verdict::Flood, "the local flood goes on");
        assert_eq!(pool.available(), free - 2);
        let mut out = Batch::default();
        {
            let mut ctx = StageContext::new(&mut pool, &domain, &drops, 0);
            stage.release(&mut ctx, &mut out);
            assert_eq!(ctx.generated, 2, "two copies made");
        }
        assert_eq!(out.len(), 2);
        let mut dsts: Vec<Ipv4Addr> = (0..2)
            .map(|i| {
                assert_eq!(out.verdicts[i], Verdict::Patch(UPLINK));
                let d = pool.data(&out.frames[i]);
                Ipv4Addr::new(d[30], d[31], d[32], d[33])
            })
            .collect();
        dsts.sort();
        assert_eq!(dsts, vec![PEER_B, PEER_C]);
        assert!(!stage.has_release());

        // A frame decapsulated from PEER_C teaches where REMOTE is; a reply then goes there only.
        let reply = inner(REMOTE, LOCAL);
        let mut b = batch_of(&mut pool, &reply, NETWORK, TUNNEL_PORT, Verdict::Output(1));
        b.meta[0].tunnel_peer = Some(PEER_C);
        {
            let mut ctx = StageContext::new(&mut pool, &domain, &drops, 0);
            stage.process(&mut ctx, &mut b);
        }
        assert_eq!(
            b.verdicts[0],
            Verdict::Output(1),
            "a decapsulated frame's verdict stands"
        );
        let mut b = batch_of(
            &mut pool,
            &bytes[..],
            NETWORK,
            1,
            Verdict::Output(TUNNEL_PORT),
        );
        let to_remote = inner(LOCAL, REMOTE);
        pool.data_mut(&mut b.frames[0]).copy_from_slice(&to_remote);
        b.keys[0] = classify(&to_remote, 1, 0).unwrap();
        {
            let mut ctx = StageContext::new(&mut pool, &domain, &drops, 0);
            stage.process(&mut ctx, &mut b);
        }
        let d = pool.data(&b.frames[0]);
        assert_eq!(Ipv4Addr::new(d[30], d[31], d[32], d[33]), PEER_C);
        assert!(!stage.has_release());

        // A new stage adopting this one keeps what it learnt.
        let mut next = overlay(Vec::new());
        next.adopt(&mut stage);
        assert!(
            next.entries(0)
                .iter()
                .any(|e| e.mac == REMOTE && e.remote_ip == PEER_C)
        );
    }
}
