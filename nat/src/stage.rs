//! The conntrack stage of the uplink's chain: wraps one worker's [`Conntrack`]. Frames patched
//! over from a network (routed toward the uplink, or hairpinned to the uplink's address) are
//! tracked from the inside of their network's zone; frames received on the uplink port for
//! xvs's address are tracked from outside, on the worker that owns their connection: a
//! published port's on the worker of its endpoint's network, a masquerade port's on the
//! worker whose port range holds it (found from the header alone, [`PortPartition::owner`]),
//! so the frame is handed over there first if it arrived elsewhere. Each tracked frame is
//! translated in place and leaves with its egress ([`Egress`]) for the router stage.
//!
//! ICMP echo requests for xvs's address, ARP and the host stack's own frames are not tracked:
//! they go on to the uplink's L2 stage and the host stack.
//!
//! One instance per worker, owning its table (no lock); the control plane reads and changes it
//! with `Datapath::with_stage_each`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::HashMap;
use xvs_stage::batch::Egress as FrameEgress;
use xvs_stage::classify::FlowKey;
use xvs_stage::drop::ReasonSet;
use xvs_stage::stage::{Batch, Stage, StageContext, Verdict};
use xvs_stage::wire::{PortId, ethertype, ipproto};

use crate::conntrack::{Conntrack, Egress, Outcome, Side};
use crate::drop::NatDrop;
use crate::icmp::{self, icmp_type};
use crate::ports::PortPartition;

/// What the stage knows besides its table.
#[derive(Debug, Clone)]
pub struct NatConfig {
    /// The uplink's port: frames received on it are from outside.
    pub uplink_port: PortId,
    /// xvs's address on the uplink.
    pub uplink_ip: Ipv4Addr,
    /// How masquerade ports are split between workers.
    pub partition: PortPartition,
    /// The worker of each network (zone): published ports are tracked there, unless
    /// `endpoint_workers` names the endpoint's own.
    pub zone_workers: Arc<HashMap<u16, u16>>,
    /// The worker polling each endpoint's port, by zone and address, on networks whose ports
    /// are spread over the workers: a published port's connections are tracked there (the
    /// endpoint's replies enter on that worker).
    pub endpoint_workers: Arc<HashMap<(u16, Ipv4Addr), u16>>,
}

/// The conntrack stage of one worker.
#[derive(Debug)]
pub struct NatStage {
    ct: Conntrack,
    config: NatConfig,
    /// When expiry last ran: once per millisecond at most (a worker passes far more often).
    ticked_ms: u64,
}

impl NatStage {
    /// A stage over `ct` (this worker's table).
    pub fn new(ct: Conntrack, config: NatConfig) -> NatStage {
        NatDrop::set().register();
        NatStage {
            ct,
            config,
            ticked_ms: 0,
        }
    }

    /// The table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// The table, writable (flush, timeouts, published ports).
    pub fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.ct
    }

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// Replaces the configuration (between two passes).
    pub fn set_config(&mut self, config: NatConfig) {
        self.config = config;
    }

    /// The worker tracking a published port's connections: its endpoint's, else its network's.
    #[inline]
    fn published_owner(&self, rule: &crate::published::DnatRule) -> Option<u16> {
        self.config
            .endpoint_workers
            .get(&(rule.zone, rule.inside_ip))
            .or_else(|| self.config.zone_workers.get(&rule.zone))
            .copied()
    }

    /// The worker owning the connection of a frame from outside for xvs's address, from its
    /// header alone; `None` when it is nobody's (the frame is tracked here and refused).
    fn owner(&self, frame: &[u8], key: &FlowKey, dst: Ipv4Addr) -> Option<u16> {
        let by_port = |proto: u8, addr: Ipv4Addr, port: u16| match self
            .ct
            .published()
            .lookup(proto, addr, port, true)
        {
            Some(rule) => self.published_owner(rule),
            None => self.config.partition.owner(port),
        };
        let l4 = usize::from(key.l4_offset);
        match key.nw_proto {
            ipproto::TCP | ipproto::UDP => by_port(key.nw_proto, dst, key.tp_dst),
            ipproto::ICMP if l4 != 0 => match key.tp_src as u8 {
                icmp_type::ECHO_REPLY => {
                    let id = frame.get(l4 + 4..l4 + 6)?;
                    self.config
                        .partition
                        .owner(u16::from_be_bytes([id[0], id[1]]))
                }
                ty if icmp::is_error(ty) => {
                    let q = icmp::quoted(frame, l4).ok()?.tuple;
                    match q.proto {
                        ipproto::ICMP => self.config.partition.owner(q.sport),
                        p => by_port(p, Ipv4Addr::from(q.src), q.sport),
                    }
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Where frame `i` comes from, or the verdict it gets without being tracked here.
    #[inline]
    fn side(&self, ctx: &StageContext<'_>, batch: &Batch, i: usize) -> Result<Side, Verdict> {
        let key = &batch.keys[i];
        let meta = &batch.meta[i];
        if let Some(bridge) = meta.patched_from {
            let zone =
                u16::try_from(bridge).map_err(|_| Verdict::Drop(NatDrop::Malformed.into()))?;
            // A hairpin to a published port is tracked on its endpoint's worker.
            if key.dl_type == ethertype::IPV4
                && dst_v4(key) == Some(self.config.uplink_ip)
                && matches!(key.nw_proto, ipproto::TCP | ipproto::UDP)
                && let Some(rule) = self.ct.published().lookup(
                    key.nw_proto,
                    self.config.uplink_ip,
                    key.tp_dst,
                    true,
                )
                && let Some(w) = self.published_owner(rule)
                && w != ctx.worker
                && !meta.handed_off
            {
                return Err(Verdict::Handoff(w));
            }
            return Ok(Side::Inside { zone });
        }
        if key.in_port != self.config.uplink_port
            || key.dl_type != ethertype::IPV4
            || dst_v4(key) != Some(self.config.uplink_ip)
        {
            return Err(Verdict::Next);
        }
        if key.nw_proto == ipproto::ICMP && key.tp_src as u8 == icmp_type::ECHO_REQUEST {
            // Ping of xvs's address: the host stack answers.
            return Err(Verdict::Next);
        }
        let frame = ctx.pool.data(&batch.frames[i]);
        match self.owner(frame, key, self.config.uplink_ip) {
            Some(w) if w != ctx.worker && !meta.handed_off => Err(Verdict::Handoff(w)),
            _ => Ok(Side::Outside),
        }
    }
}

/// Brings a classified frame's key up to date with its translated headers (addresses, and
/// TCP/UDP ports), so the stages after conntrack see the frame as it now is.
#[inline]
fn rekey(frame: &[u8], key: &mut FlowKey) {
    let (l3, l4) = (usize::from(key.l3_offset), usize::from(key.l4_offset));
    if let Some(a) = frame.get(l3 + 12..l3 + 20) {
        key.nw_src[12..].copy_from_slice(&a[..4]);
        key.nw_dst[12..].copy_from_slice(&a[4..]);
    }
    if matches!(key.nw_proto, ipproto::TCP | ipproto::UDP)
        && let Some(p) = frame.get(l4..l4 + 4)
    {
        key.tp_src = u16::from_be_bytes([p[0], p[1]]);
        key.tp_dst = u16::from_be_bytes([p[2], p[3]]);
    }
}

/// The IPv4 destination of a classified frame.
#[inline]
fn dst_v4(key: &FlowKey) -> Option<Ipv4Addr> {
    let a = &key.nw_dst;
    Some(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
}

impl Stage for NatStage {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(NatDrop::set())
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        self.ct.warm(&batch.keys[..batch.len()]);
        let dry_run = ctx.dry_run();
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() || batch.meta[i].tunnel {
                // Decided, or an overlay's VXLAN packet from xvs's own VTEP: not translated.
                continue;
            }
            let side = match self.side(ctx, batch, i) {
                Ok(s) => s,
                Err(Verdict::Next) => continue,
                Err(v) => {
                    ctx.record("conntrack", || match v {
                        Verdict::Handoff(w) => format!("owned by worker {w}: handed over"),
                        _ => format!("{v:?}"),
                    });
                    batch.verdicts[i] = v;
                    continue;
                }
            };
            let key = batch.keys[i];
            let offload = batch.frames[i].offload();
            let frame = ctx.pool.data_mut(&mut batch.frames[i]);
            match self
                .ct
                .process(frame, &key, &offload, side, ctx.now_ms, dry_run)
            {
                Ok(Outcome::Tracked(d)) => {
                    rekey(frame, &mut batch.keys[i]);
                    batch.meta[i].egress = match d.egress {
                        Egress::Outside => FrameEgress::Uplink,
                        Egress::Inside(z) => FrameEgress::Zone(z),
                    };
                    batch.meta[i].flow = d.session;
                    ctx.record("conntrack", || d.to_string());
                }
                Ok(Outcome::Untracked) => {
                    ctx.record("conntrack", || "not tracked (not IPv4)".to_string());
                }
                Err(e) => {
                    ctx.record("conntrack", || format!("drop: {e}"));
                    batch.verdicts[i] = Verdict::Drop(e.into());
                }
            }
        }
    }

    fn tick(&mut self, now_ms: u64) {
        if now_ms != self.ticked_ms {
            self.ticked_ms = now_ms;
            self.ct.tick(now_ms);
        }
    }

    fn adopt(&mut self, previous: &mut dyn Stage) {
        let previous: &mut dyn std::any::Any = previous;
        if let Some(old) = previous.downcast_mut::<NatStage>() {
            // The connections stay; the new stage's table replaces nothing but config.
            std::mem::swap(&mut self.ct, &mut old.ct);
        }
    }
}
