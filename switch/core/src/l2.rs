//! The L2 stage: MAC learning and forwarding within VLAN domains.
//!
//! Learns each frame's source MAC on its ingress port (bounded by the [`Fdb`] limits; refused
//! learning is counted, the frame still forwarded), then forwards: broadcast, multicast and
//! unknown unicast flood to every other port of the same VLAN; known unicast goes to its port;
//! a destination learned on the ingress port is dropped; the icc rule is the domain's. A trace
//! learns nothing. Owned by the worker thread that runs its bridge.

use crate::classify::{FlowKey, Mac, PortId};
use crate::domain::Domain;
use crate::drop::ReasonSet;
use crate::fdb::{Fdb, FdbConfig, Learn};
use crate::fdb_sync::{FdbEvent, FdbMesh, FdbSync, REFRESH_MS};
use crate::stage::{Batch, Stage, StageContext, Verdict};

xvs_stage::drop_reasons! {
    /// Why the L2 stage drops a frame (or declines to learn from one).
    pub enum L2Drop in "l2" {
        MulticastSource => "multicast_source_mac", "source MAC is multicast or broadcast";
        DestOnIngressPort => "dst_on_ingress_port", "destination MAC was learned on the ingress port";
        IccDisabled => "icc_disabled", "container-to-container traffic on a network with icc=false";
        LearnTableFull => "learn_table_full", "MAC not learned: bridge MAC table full (frame still forwarded)", event;
        LearnPortLimit => "learn_port_limit", "MAC not learned: port's learned-MAC limit reached (frame still forwarded)", event;
        SyncLost => "fdb_sync_lost", "MAC learned but not shared with another worker of the network: its update ring was full (that worker floods to it until the next update)", event;
    }
}

/// How often aged entries are swept from the table.
const EXPIRE_INTERVAL_MS: u64 = 1000;

/// The L2 stage of one bridge: its MAC table, and on a network the gateway's MAC (frames to
/// it are marked routed and left to the route stage).
#[derive(Debug)]
pub struct L2Stage {
    fdb: Fdb,
    last_expire_ms: u64,
    router: Option<Mac>,
    /// The other workers' replicas of a spread bridge's table ([`crate::fdb_sync`]).
    sync: Option<FdbSync>,
}

impl L2Stage {
    /// An L2 stage with an empty table.
    pub fn new(config: FdbConfig) -> L2Stage {
        L2Drop::set().register();
        L2Stage {
            fdb: Fdb::new(config),
            last_expire_ms: 0,
            router: None,
            sync: None,
        }
    }

    /// The same stage as worker `worker`'s replica of a table shared through `mesh`.
    pub fn with_sync(mut self, mesh: std::sync::Arc<FdbMesh>, worker: u16) -> L2Stage {
        self.sync = Some(FdbSync::new(mesh, worker));
        self
    }

    /// Applies what the other workers learned (at most one inbox's worth).
    #[inline]
    fn apply_remote(&mut self) {
        let Some(sync) = &self.sync else {
            return;
        };
        for _ in 0..crate::fdb_sync::INBOX_CAPACITY {
            let Some(ev) = sync.next() else {
                break;
            };
            self.fdb.learn_remote(ev.vlan, ev.mac, ev.port, ev.seen_ms);
        }
    }

    /// The same stage on a network whose gateway has `mac`: IPv4 frames sent to it are
    /// marked routed and left undecided for the route stage that follows.
    pub fn with_router(mut self, mac: Mac) -> L2Stage {
        self.router = Some(mac);
        self
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The MAC table, writable (flush, limits).
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Whether `key` is an IPv4 frame to the network's gateway (left to the route stage).
    #[inline(always)]
    fn routes(&self, key: &FlowKey) -> bool {
        matches!(self.router, Some(r) if r == key.dl_dst)
            && key.dl_type == crate::classify::ethertype::IPV4
    }

    /// The forwarding decision for `key` (no learning). Inlined into the stage's loop: as a
    /// call it cost a dozen instructions a frame in register saves (callgrind).
    #[inline(always)]
    pub fn decide(&self, domain: &Domain, key: &FlowKey, now_ms: u64) -> Verdict {
        if key.dl_dst.is_multicast() {
            return Verdict::Flood;
        }
        match self.fdb.lookup(key.vlan, key.dl_dst, now_ms) {
            Some(p) if p == key.in_port => Verdict::Drop(L2Drop::DestOnIngressPort.into()),
            Some(p) if !domain.icc_allows(key.in_port, p) => {
                Verdict::Drop(L2Drop::IccDisabled.into())
            }
            Some(p) => Verdict::Output(p),
            None => Verdict::Flood,
        }
    }

    fn explain(&self, key: &FlowKey, verdict: Verdict, now_ms: u64) -> String {
        let learn = match self.fdb.lookup(key.vlan, key.dl_src, now_ms) {
            Some(p) if p == key.in_port => format!("source {} known on this port", key.dl_src),
            Some(p) => format!("source {} moves from port {p}", key.dl_src),
            None => format!("learns {} on port {}", key.dl_src, key.in_port),
        };
        let fwd = match verdict {
            Verdict::Output(p) => format!("destination {} learned on port {p}", key.dl_dst),
            Verdict::Flood if key.dl_dst.is_multicast() => {
                format!("destination {} is broadcast/multicast: flood", key.dl_dst)
            }
            Verdict::Flood => format!("destination {} unknown: flood", key.dl_dst),
            Verdict::Drop(r) => format!("drop: {}", r.describe()),
            Verdict::Next
            | Verdict::Local
            | Verdict::Handoff(_)
            | Verdict::Patch(_)
            | Verdict::Held => "no decision".to_string(),
        };
        format!("vlan {}: {learn}; {fwd}", key.vlan)
    }
}

impl Stage for L2Stage {
    fn name(&self) -> &'static str {
        "l2"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(L2Drop::set())
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        let now = ctx.now_ms;
        let dry_run = ctx.dry_run();
        let (mut table_full, mut port_limit, mut sync_lost) = (0, 0, 0);
        if !dry_run {
            self.apply_remote();
        }
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() {
                continue;
            }
            let key = &batch.keys[i];
            if key.dl_src.is_multicast() {
                batch.verdicts[i] = Verdict::Drop(L2Drop::MulticastSource.into());
                ctx.record("l2", || "drop: source MAC is multicast or broadcast".into());
                continue;
            }
            if dry_run {
                let v = self.decide(ctx.domain, key, now);
                if self.routes(key) {
                    batch.meta[i].routed = true;
                    ctx.record("l2", || {
                        format!("destination {} is the gateway: routed", key.dl_dst)
                    });
                    continue;
                }
                ctx.record("l2", || self.explain(key, v, now));
                batch.verdicts[i] = v;
                continue;
            }
            match self.fdb.learn(key.vlan, key.dl_src, key.in_port, now) {
                Learn::TableFull => table_full += 1,
                Learn::PortLimit => port_limit += 1,
                Learn::Refreshed { idle_ms } if idle_ms < REFRESH_MS => {}
                _ => {
                    if let Some(sync) = &self.sync {
                        sync_lost += sync.publish(FdbEvent {
                            vlan: key.vlan,
                            mac: key.dl_src,
                            port: key.in_port,
                            seen_ms: now,
                        });
                    }
                }
            }
            if self.routes(key) {
                batch.meta[i].routed = true;
                continue;
            }
            batch.verdicts[i] = self.decide(ctx.domain, key, now);
        }
        ctx.count(L2Drop::LearnTableFull, table_full);
        ctx.count(L2Drop::LearnPortLimit, port_limit);
        ctx.count(L2Drop::SyncLost, sync_lost);
    }

    fn tick(&mut self, now_ms: u64) {
        self.apply_remote();
        if now_ms.saturating_sub(self.last_expire_ms) >= EXPIRE_INTERVAL_MS {
            self.last_expire_ms = now_ms;
            self.fdb.expire(now_ms);
        }
    }

    fn port_removed(&mut self, port: PortId) {
        // What the other workers learned on it before it went, then the port's entries.
        self.apply_remote();
        self.fdb.flush_port(port);
    }

    fn adopt(&mut self, previous: &mut dyn Stage) {
        let previous: &mut dyn std::any::Any = previous;
        if let Some(old) = previous.downcast_mut::<L2Stage>() {
            // The table and its ageing move over; configuration (limits, router) is the new one's.
            let config = self.fdb.config();
            std::mem::swap(&mut self.fdb, &mut old.fdb);
            self.fdb.set_config(config);
            self.last_expire_ms = old.last_expire_ms;
            if self.sync.is_none() {
                self.sync = old.sync.take();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Mac;
    use crate::drop::DropCounters;
    use crate::frame::FramePool;
    use crate::stage::FrameMeta;

    fn key(in_port: PortId, vlan: u16, src: u8, dst: Mac) -> FlowKey {
        FlowKey {
            in_port,
            vlan,
            dl_src: Mac([2, 0, 0, 0, 0, src]),
            dl_dst: dst,
            ..FlowKey::default()
        }
    }

    fn host(n: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, n])
    }

    struct Bridge {
        l2: L2Stage,
        domain: Domain,
        counters: DropCounters,
    }

    impl Bridge {
        fn new(config: FdbConfig) -> Bridge {
            let mut domain = Domain::default();
            for p in 1..=3 {
                domain.add_member(p, 0);
            }
            domain.add_member(4, 10);
            Bridge {
                l2: L2Stage::new(config),
                domain,
                counters: DropCounters::default(),
            }
        }

        fn run(&mut self, keys: &[FlowKey], now_ms: u64) -> Vec<Verdict> {
            let mut pool = FramePool::new_heap(keys.len().max(1) as u32).unwrap();
            let mut scratch = FramePool::new_heap(keys.len().max(1) as u32).unwrap();
            let mut batch = Batch::default();
            for (i, k) in keys.iter().enumerate() {
                batch
                    .push(scratch.alloc().unwrap(), FrameMeta::default())
                    .unwrap();
                batch.keys[i] = *k;
            }
            let mut ctx = StageContext::new(&mut pool, &self.domain, &self.counters, now_ms);
            self.l2.process(&mut ctx, &mut batch);
            let v = batch.verdicts[..keys.len()].to_vec();
            batch.free_all(&mut scratch);
            v
        }
    }

    fn bridge() -> Bridge {
        Bridge::new(FdbConfig::default())
    }

    #[test]
    fn unknown_floods_then_learned_unicast() {
        let mut br = bridge();
        assert_eq!(br.run(&[key(1, 0, 1, host(2))], 0), vec![Verdict::Flood]);
        assert_eq!(
            br.run(&[key(2, 0, 2, host(1))], 0),
            vec![Verdict::Output(1)]
        );
        assert_eq!(
            br.run(&[key(1, 0, 1, host(2))], 0),
            vec![Verdict::Output(2)]
        );
    }

    #[test]
    fn multicast_source_and_hairpin_are_dropped() {
        let mut br = bridge();
        let mut k = key(1, 0, 1, host(2));
        k.dl_src = Mac([1, 0, 0x5e, 0, 0, 1]);
        assert_eq!(
            br.run(&[k], 0),
            vec![Verdict::Drop(L2Drop::MulticastSource.into())]
        );
        br.run(&[key(1, 0, 5, host(9))], 0);
        assert_eq!(
            br.run(&[key(1, 0, 1, host(5))], 0),
            vec![Verdict::Drop(L2Drop::DestOnIngressPort.into())]
        );
    }

    #[test]
    fn vlans_do_not_leak() {
        let mut br = bridge();
        br.run(&[key(4, 10, 7, Mac::BROADCAST)], 0);
        // host 7 lives in vlan 10; untagged port 1 asking for it floods in vlan 0 only.
        assert_eq!(br.run(&[key(1, 0, 1, host(7))], 0), vec![Verdict::Flood]);
        assert_eq!(br.l2.fdb().lookup(0, host(7), 0), None);
    }

    #[test]
    fn ageing_and_moves_in_a_burst() {
        let mut br = bridge();
        let v = br.run(
            &[
                key(1, 0, 1, Mac::BROADCAST),
                key(2, 0, 2, host(1)),
                key(3, 0, 1, host(2)),
                key(2, 0, 2, host(1)),
            ],
            0,
        );
        // host 1 moved from port 1 to port 3 inside the burst.
        assert_eq!(
            v,
            vec![
                Verdict::Flood,
                Verdict::Output(1),
                Verdict::Output(2),
                Verdict::Output(3)
            ]
        );
        br.l2.tick(301_000 + 1);
        assert!(br.l2.fdb().is_empty());
        assert_eq!(
            br.run(&[key(2, 0, 2, host(1))], 302_000),
            vec![Verdict::Flood]
        );
    }

    #[test]
    fn icc_off_allows_only_the_local_port() {
        let mut br = bridge();
        br.domain.set_policy(false, Some(3));
        br.run(
            &[key(2, 0, 2, Mac::BROADCAST), key(3, 0, 3, Mac::BROADCAST)],
            0,
        );
        assert_eq!(
            br.run(&[key(1, 0, 1, host(2))], 0),
            vec![Verdict::Drop(L2Drop::IccDisabled.into())]
        );
        assert_eq!(
            br.run(&[key(1, 0, 1, host(3))], 0),
            vec![Verdict::Output(3)]
        );
        assert_eq!(
            br.run(&[key(3, 0, 3, host(1))], 0),
            vec![Verdict::Output(1)]
        );
    }

    #[test]
    fn learning_overflow_is_counted_not_dropped() {
        let mut br = Bridge::new(FdbConfig {
            ageing_secs: 300,
            capacity: 100,
            port_limit: 2,
        });
        let keys: Vec<FlowKey> = (10..20).map(|s| key(1, 0, s, Mac::BROADCAST)).collect();
        let v = br.run(&keys, 0);
        assert!(v.iter().all(|v| *v == Verdict::Flood));
        assert_eq!(br.counters.get(L2Drop::LearnPortLimit), 8);
        assert_eq!(br.l2.fdb().learned_on(1), 2);
    }

    #[test]
    fn a_trace_learns_nothing_and_a_new_stage_adopts_the_table() {
        let mut br = bridge();
        br.run(&[key(1, 0, 1, Mac::BROADCAST)], 0);
        let mut log = crate::trace::TraceLog::default();
        let mut pool = FramePool::new_heap(1).unwrap();
        let mut scratch = FramePool::new_heap(1).unwrap();
        let mut batch = Batch::default();
        batch
            .push(scratch.alloc().unwrap(), FrameMeta::default())
            .unwrap();
        batch.keys[0] = key(2, 0, 9, host(1));
        let mut ctx = StageContext::new(&mut pool, &br.domain, &br.counters, 0).traced(&mut log);
        br.l2.process(&mut ctx, &mut batch);
        batch.free_all(&mut scratch);
        assert_eq!(batch.verdicts[0], Verdict::Output(1));
        assert_eq!(br.l2.fdb().len(), 1, "the traced source was not learned");
        assert!(log.steps[0].decision.contains("learns 02:00:00:00:00:09"));

        let mut next = L2Stage::new(FdbConfig {
            port_limit: 7,
            ..FdbConfig::default()
        });
        next.adopt(&mut br.l2);
        assert_eq!(next.fdb().lookup(0, host(1), 0), Some(1));
        assert_eq!(
            next.fdb().config().port_limit,
            7,
            "the new configuration holds"
        );
    }
}
