//! The L2 bridge stage: MAC learning and forwarding within VLAN domains.
//!
//! Learns each frame's source MAC on its ingress port (bounded by the [`Fdb`] limits; refused
//! learning is counted, the frame still forwarded), then forwards: broadcast, multicast and
//! unknown unicast flood to every other port of the same VLAN; known unicast goes to its port;
//! a destination learned on the ingress port is dropped. Owned by one worker thread.

use std::sync::Arc;

use crate::classify::{FlowKey, PortId};
use crate::counters::{DropCounters, DropReason};
use crate::fdb::{Fdb, FdbConfig, Learn};
use crate::stage::{Batch, Stage, StageContext, Verdict};

/// A port's membership in a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Datapath port id.
    pub port: PortId,
    /// Access VLAN (0 = untagged domain).
    pub vlan: u16,
}

/// One bridge: its MAC table and its member ports.
#[derive(Debug)]
pub struct Bridge {
    name: String,
    fdb: Fdb,
    members: Vec<Member>,
    drops: Arc<DropCounters>,
    last_expire_ms: u64,
    /// Whether member ports may talk to each other (Docker's `icc`).
    icc: bool,
    /// The port of xvsd's own stack (the gateway), exempt from the icc rule.
    local_port: Option<PortId>,
}

/// How often aged entries are swept from the table.
const EXPIRE_INTERVAL_MS: u64 = 1000;

impl Bridge {
    /// A bridge with no ports.
    pub fn new(name: impl Into<String>, config: FdbConfig, drops: Arc<DropCounters>) -> Bridge {
        Bridge {
            name: name.into(),
            fdb: Fdb::new(config),
            members: Vec::new(),
            drops,
            last_expire_ms: 0,
            icc: true,
            local_port: None,
        }
    }

    /// Sets inter-container communication and which port is the local stack's.
    pub fn set_policy(&mut self, icc: bool, local_port: Option<PortId>) {
        self.icc = icc;
        self.local_port = local_port;
    }

    /// True when `key` may be flooded to (or sent to) `port` under the icc rule.
    #[inline]
    fn icc_allows(&self, in_port: PortId, out_port: PortId) -> bool {
        self.icc || self.local_port == Some(in_port) || self.local_port == Some(out_port)
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The MAC table, writable (flush, limits).
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Member ports.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Adds (or re-VLANs) a member port.
    pub fn add_member(&mut self, port: PortId, vlan: u16) {
        self.remove_member(port);
        self.members.push(Member { port, vlan });
    }

    /// Removes a member port and forgets the MACs learned on it.
    pub fn remove_member(&mut self, port: PortId) {
        self.members.retain(|m| m.port != port);
        self.fdb.flush_port(port);
    }

    /// The member ports a flood from `key` goes to.
    #[inline]
    pub fn flood_targets<'a>(&'a self, key: &'a FlowKey) -> impl Iterator<Item = PortId> + 'a {
        self.members
            .iter()
            .filter(move |m| {
                m.vlan == key.vlan && m.port != key.in_port && self.icc_allows(key.in_port, m.port)
            })
            .map(|m| m.port)
    }

    /// Sweeps aged entries at most once a second.
    #[inline]
    pub fn maybe_expire(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_expire_ms) >= EXPIRE_INTERVAL_MS {
            self.last_expire_ms = now_ms;
            self.fdb.expire(now_ms);
        }
    }

    /// The forwarding decision for `key` (no learning).
    #[inline]
    pub fn decide(&self, key: &FlowKey, now_ms: u64) -> Verdict {
        if key.dl_dst.is_multicast() {
            return Verdict::Flood;
        }
        match self.fdb.lookup(key.vlan, key.dl_dst, now_ms) {
            Some(p) if p == key.in_port => Verdict::Drop(DropReason::DestOnIngressPort),
            Some(p) if !self.icc_allows(key.in_port, p) => Verdict::Drop(DropReason::IccDisabled),
            Some(p) => Verdict::Output(p),
            None => Verdict::Flood,
        }
    }

    fn explain(&self, key: &FlowKey, verdict: Verdict, now_ms: u64) -> String {
        let learn = match self.fdb.lookup(key.vlan, key.dl_src, now_ms) {
            _ if key.dl_src.is_multicast() => "source is multicast: not learned".to_string(),
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
            Verdict::Next | Verdict::Punt => "no decision".to_string(),
        };
        format!("vlan {}: {learn}; {fwd}", key.vlan)
    }
}

impl Stage for Bridge {
    fn name(&self) -> &'static str {
        "l2"
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        let now = ctx.now_ms;
        let mut table_full = 0;
        let mut port_limit = 0;
        for i in 0..batch.len() {
            if batch.verdicts[i] != Verdict::Next {
                continue;
            }
            let key = &batch.keys[i];
            if key.dl_src.is_multicast() {
                batch.verdicts[i] = Verdict::Drop(DropReason::MulticastSource);
                if let Some(t) = ctx.trace.as_deref_mut() {
                    t.record("l2", "drop: source MAC is multicast or broadcast");
                }
                continue;
            }
            if let Some(t) = ctx.trace.as_deref_mut() {
                let v = self.decide(key, now);
                t.record("l2", self.explain(key, v, now));
                batch.verdicts[i] = v;
                continue;
            }
            match self.fdb.learn(key.vlan, key.dl_src, key.in_port, now) {
                Learn::TableFull => table_full += 1,
                Learn::PortLimit => port_limit += 1,
                _ => {}
            }
            batch.verdicts[i] = self.decide(key, now);
        }
        if table_full > 0 {
            self.drops.add(DropReason::LearnTableFull, table_full);
        }
        if port_limit > 0 {
            self.drops.add(DropReason::LearnPortLimit, port_limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Mac;

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

    fn run(br: &mut Bridge, keys: &[FlowKey], now_ms: u64) -> Vec<Verdict> {
        let pool = crate::frame::FramePool::new_heap(1).unwrap();
        let mut batch = Batch::default();
        for (i, k) in keys.iter().enumerate() {
            batch.keys[i] = *k;
        }
        // Verdicts are read by index; the stage only looks at `len()` frames, so give it
        // placeholder frames that are never freed into another pool.
        let mut scratch = crate::frame::FramePool::new_heap(keys.len() as u32).unwrap();
        for _ in keys {
            batch.frames.push(scratch.alloc().unwrap());
        }
        batch.reset_verdicts();
        let mut ctx = StageContext {
            pool: &pool,
            now_ms,
            trace: None,
        };
        br.process(&mut ctx, &mut batch);
        let v = batch.verdicts[..keys.len()].to_vec();
        batch.free_all(&mut scratch);
        v
    }

    fn bridge() -> Bridge {
        let mut br = Bridge::new("br0", FdbConfig::default(), Arc::default());
        for p in 1..=3 {
            br.add_member(p, 0);
        }
        br.add_member(4, 10);
        br
    }

    #[test]
    fn unknown_floods_then_learned_unicast() {
        let mut br = bridge();
        assert_eq!(
            run(&mut br, &[key(1, 0, 1, host(2))], 0),
            vec![Verdict::Flood]
        );
        assert_eq!(
            run(&mut br, &[key(2, 0, 2, host(1))], 0),
            vec![Verdict::Output(1)]
        );
        assert_eq!(
            run(&mut br, &[key(1, 0, 1, host(2))], 0),
            vec![Verdict::Output(2)]
        );
    }

    #[test]
    fn flood_scope_is_the_vlan_minus_ingress() {
        let br = bridge();
        let k = key(1, 0, 1, Mac::BROADCAST);
        assert_eq!(br.flood_targets(&k).collect::<Vec<_>>(), vec![2, 3]);
        let k = key(4, 10, 9, Mac::BROADCAST);
        assert_eq!(br.flood_targets(&k).count(), 0);
    }

    #[test]
    fn multicast_source_and_hairpin_are_dropped() {
        let mut br = bridge();
        let mut k = key(1, 0, 1, host(2));
        k.dl_src = Mac([1, 0, 0x5e, 0, 0, 1]);
        assert_eq!(
            run(&mut br, &[k], 0),
            vec![Verdict::Drop(DropReason::MulticastSource)]
        );
        run(&mut br, &[key(1, 0, 5, host(9))], 0);
        assert_eq!(
            run(&mut br, &[key(1, 0, 1, host(5))], 0),
            vec![Verdict::Drop(DropReason::DestOnIngressPort)]
        );
    }

    #[test]
    fn vlans_do_not_leak() {
        let mut br = bridge();
        run(&mut br, &[key(4, 10, 7, Mac::BROADCAST)], 0);
        // host 7 lives in vlan 10; untagged port 1 asking for it floods in vlan 0 only.
        assert_eq!(
            run(&mut br, &[key(1, 0, 1, host(7))], 0),
            vec![Verdict::Flood]
        );
        assert_eq!(br.fdb().lookup(0, host(7), 0), None);
    }

    #[test]
    fn ageing_and_moves_in_a_burst() {
        let mut br = bridge();
        let v = run(
            &mut br,
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
        br.maybe_expire(301_000 + 1);
        assert!(br.fdb().is_empty());
        assert_eq!(
            run(&mut br, &[key(2, 0, 2, host(1))], 302_000),
            vec![Verdict::Flood]
        );
    }

    #[test]
    fn icc_off_allows_only_the_local_port() {
        let mut br = bridge();
        br.set_policy(false, Some(3));
        run(
            &mut br,
            &[key(2, 0, 2, Mac::BROADCAST), key(3, 0, 3, Mac::BROADCAST)],
            0,
        );
        assert_eq!(
            run(&mut br, &[key(1, 0, 1, host(2))], 0),
            vec![Verdict::Drop(DropReason::IccDisabled)]
        );
        assert_eq!(
            run(&mut br, &[key(1, 0, 1, host(3))], 0),
            vec![Verdict::Output(3)]
        );
        assert_eq!(
            run(&mut br, &[key(3, 0, 3, host(1))], 0),
            vec![Verdict::Output(1)]
        );
        let k = key(1, 0, 1, Mac::BROADCAST);
        assert_eq!(br.flood_targets(&k).collect::<Vec<_>>(), vec![3]);
        let k = key(3, 0, 3, Mac::BROADCAST);
        assert_eq!(br.flood_targets(&k).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn learning_overflow_is_counted_not_dropped() {
        let drops = Arc::new(DropCounters::default());
        let mut br = Bridge::new(
            "b",
            FdbConfig {
                ageing_secs: 300,
                capacity: 100,
                port_limit: 2,
            },
            drops.clone(),
        );
        br.add_member(1, 0);
        br.add_member(2, 0);
        let keys: Vec<FlowKey> = (10..20).map(|s| key(1, 0, s, Mac::BROADCAST)).collect();
        let v = run(&mut br, &keys, 0);
        assert!(v.iter().all(|v| *v == Verdict::Flood));
        assert_eq!(drops.get(DropReason::LearnPortLimit), 8);
        assert_eq!(br.fdb().learned_on(1), 2);
    }
}
