//! One worker's scheduler for one service ([`Balancer`]): the service's current snapshot plus
//! the small mutable state the schedulers keep (the round-robin cursor, the smooth weighted
//! round robin's current weights), and the accounting hooks conntrack calls when a connection
//! opens and closes on a backend.
//!
//! Owned by one worker and touched by it alone; the control plane hands it a new snapshot
//! through the worker, which calls [`Balancer::swap`] between two batches. Picking allocates
//! nothing and takes no lock: rr and Maglev are O(1), wrr and lc O(live backends).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use xvs_stage::classify::FlowKey;

use crate::backend::BackendRef;
use crate::drop::LbDrop;
use crate::maglev;
use crate::spec::SchedulerKind;
use crate::table::{Disposition, ServiceTable, TableBackend};

/// The backend chosen for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The handle conntrack keeps for the connection's life (and gives back to
    /// [`Balancer::opened`] and [`Balancer::closed`]).
    pub backend: BackendRef,
    /// Where to DNAT the connection to.
    pub addr: SocketAddr,
    /// Why this backend (for `trace`).
    pub why: Why,
}

/// Why a scheduler chose a backend, as `trace` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// rr: the backend's turn.
    RoundRobin {
        /// Its position among the live backends.
        position: u16,
        /// How many are live.
        live: u16,
    },
    /// wrr: the highest current weight.
    Weighted {
        /// The backend's weight.
        weight: u32,
        /// The live backends' total weight.
        total: u64,
    },
    /// lc: the fewest active connections per unit of weight.
    LeastConnections {
        /// The backend's active connections.
        active: u64,
        /// Its weight.
        weight: u32,
    },
    /// maglev: the lookup table's entry for the flow's hash.
    Maglev {
        /// The entry.
        entry: u32,
        /// The table's size.
        size: u32,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::RoundRobin { position, live } => {
                write!(f, "rr: turn {} of {live} live backends", position + 1)
            }
            Why::Weighted { weight, total } => {
                write!(
                    f,
                    "wrr: highest current weight (weight {weight} of {total})"
                )
            }
            Why::LeastConnections { active, weight } => {
                write!(
                    f,
                    "lc: fewest connections per weight ({active} active, weight {weight})"
                )
            }
            Why::Maglev { entry, size } => {
                write!(f, "maglev: flow hash selects entry {entry} of {size}")
            }
        }
    }
}

/// No backend can take a new connection: none is active and up. The stage counts it
/// ([`LbDrop::NoBackend`]) and refuses the connection (a TCP RST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no live backend: {backends} configured, none active and healthy")]
pub struct NoBackend {
    /// How many backends the service has (in any state).
    pub backends: u16,
}

impl From<NoBackend> for xvs_stage::drop::DropReason {
    fn from(_: NoBackend) -> Self {
        LbDrop::NoBackend.into()
    }
}

/// One worker's scheduler for one service (see the module header).
#[derive(Debug)]
pub struct Balancer {
    table: Arc<ServiceTable>,
    worker: u16,
    /// rr's next position; lc's first backend to look at (ties go round).
    cursor: usize,
    /// wrr's current weights, by position among the live backends.
    current: Vec<i64>,
}

impl Balancer {
    /// The scheduler of worker `worker` for the service `table` is a snapshot of.
    pub fn new(table: Arc<ServiceTable>, worker: u16) -> Balancer {
        let mut b = Balancer {
            current: Vec::new(),
            table: Arc::clone(&table),
            worker,
            cursor: 0,
        };
        b.swap(table);
        b
    }

    /// Takes a new snapshot of the service and returns the old one (for the caller to drop
    /// off the hot path). Established connections are unaffected; wrr starts its cycle again.
    /// Allocates only when the service has more live backends than ever before.
    pub fn swap(&mut self, table: Arc<ServiceTable>) -> Arc<ServiceTable> {
        self.current.clear();
        self.current.resize(table.live.len(), 0);
        std::mem::replace(&mut self.table, table)
    }

    /// The snapshot in use.
    #[inline]
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// The worker this scheduler belongs to.
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// Idle timeout of the service's connections, in ms (for conntrack).
    #[inline]
    pub fn idle_timeout_ms(&self) -> u64 {
        self.table.idle_timeout_ms
    }

    fn slot(&self, slot: u16) -> Option<&TableBackend> {
        self.table.backends.get(usize::from(slot))?.as_ref()
    }

    fn pick_of(&self, slot: u16, why: Why) -> Option<Pick> {
        let b = self.slot(slot)?;
        Some(Pick {
            backend: BackendRef {
                slot,
                serial: b.serial,
            },
            addr: b.addr,
            why,
        })
    }

    fn no_backend(&self) -> NoBackend {
        NoBackend {
            backends: self.table.backends.iter().flatten().count() as u16,
        }
    }

    /// The choice and its position among the live backends (0 for Maglev), changing nothing.
    fn choose(&self, flow_hash: u64) -> Option<(usize, Pick)> {
        let live = &self.table.live;
        if live.is_empty() {
            return None;
        }
        match self.table.scheduler {
            SchedulerKind::Rr => {
                let i = self.cursor % live.len();
                let why = Why::RoundRobin {
                    position: i as u16,
                    live: live.len() as u16,
                };
                Some((i, self.pick_of(live[i], why)?))
            }
            SchedulerKind::Wrr => {
                // nginx's choice: the highest current weight once every weight is added.
                let w = &self.table.live_weights;
                let (mut best, mut best_current, mut total) = (0, i64::MIN, 0u64);
                for (i, (&w, &c)) in w.iter().zip(self.current.iter()).enumerate() {
                    total += u64::from(w);
                    let c = c + i64::from(w);
                    if c > best_current {
                        (best, best_current) = (i, c);
                    }
                }
                let why = Why::Weighted {
                    weight: w[best],
                    total,
                };
                Some((best, self.pick_of(live[best], why)?))
            }
            SchedulerKind::Lc => {
                let (w, counters) = (&self.table.live_weights, &self.table.live_counters);
                let n = live.len();
                let start = self.cursor % n;
                let (mut best, mut best_active, mut best_weight) = (start, u64::MAX, 1u32);
                for k in 0..n {
                    let i = if start + k < n {
                        start + k
                    } else {
                        start + k - n
                    };
                    let a = counters[i].active();
                    // a / w < best_a / best_w, without division.
                    if u128::from(a) * u128::from(best_weight)
                        < u128::from(best_active) * u128::from(w[i])
                    {
                        (best, best_active, best_weight) = (i, a, w[i]);
                    }
                }
                let why = Why::LeastConnections {
                    active: best_active,
                    weight: best_weight,
                };
                Some((best, self.pick_of(live[best], why)?))
            }
            SchedulerKind::Maglev => {
                let t = &self.table.maglev;
                if t.is_empty() {
                    return None;
                }
                let e = maglev::entry(flow_hash, t.len());
                let why = Why::Maglev {
                    entry: e as u32,
                    size: t.len() as u32,
                };
                Some((0, self.pick_of(t[e], why)?))
            }
        }
    }

    /// Chooses a backend for a new connection whose 5-tuple hashes to `flow_hash` (see
    /// [`ServiceTable::flow_hash`]; only Maglev reads it) and moves the scheduler on. Call
    /// [`Balancer::opened`] once conntrack has the connection (lc counts it from then on).
    #[inline]
    pub fn pick(&mut self, flow_hash: u64) -> Result<Pick, NoBackend> {
        let Some((chosen, p)) = self.choose(flow_hash) else {
            return Err(self.no_backend());
        };
        match self.table.scheduler {
            SchedulerKind::Rr | SchedulerKind::Lc => self.cursor = self.cursor.wrapping_add(1),
            SchedulerKind::Wrr => {
                let mut total = 0i64;
                for (c, &w) in self.current.iter_mut().zip(self.table.live_weights.iter()) {
                    *c += i64::from(w);
                    total += i64::from(w);
                }
                if let Some(c) = self.current.get_mut(chosen) {
                    *c -= total;
                }
            }
            SchedulerKind::Maglev => {}
        }
        Ok(p)
    }

    /// [`Balancer::pick`] for a classified frame (hashes its 5-tuple).
    #[inline]
    pub fn pick_flow(&mut self, key: &FlowKey) -> Result<Pick, NoBackend> {
        let h = self.table.flow_hash(key);
        self.pick(h)
    }

    /// What [`Balancer::pick`] would choose now, changing nothing (for `trace`, a dry run).
    pub fn preview(&self, flow_hash: u64) -> Result<Pick, NoBackend> {
        self.choose(flow_hash)
            .map(|(_, p)| p)
            .ok_or_else(|| self.no_backend())
    }

    /// A connection to `backend` opened (conntrack made its entry). False if the handle is
    /// not of this snapshot's backends (nothing counted).
    #[inline]
    pub fn opened(&self, backend: BackendRef) -> bool {
        self.table
            .backend(backend)
            .map(|b| b.counters.opened(self.worker))
            .is_some()
    }

    /// A connection to `backend` closed or expired. False if its backend is gone (nothing
    /// counted: its counters went with it).
    #[inline]
    pub fn closed(&self, backend: BackendRef) -> bool {
        self.table
            .backend(backend)
            .map(|b| b.counters.closed(self.worker))
            .is_some()
    }

    /// What to do with an established connection to `backend`: keep it, or reset it.
    #[inline]
    pub fn disposition(&self, backend: BackendRef) -> Disposition {
        self.table.disposition(backend)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backend::Health;
    use crate::hash::socket_flow_hash;
    use crate::service::{Service, ServiceSpec};
    use crate::spec::BackendAddr;
    use std::collections::HashMap;

    /// splitmix64: a seeded workload, the same on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            crate::hash::mix64(self.0)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn addr(i: u32) -> BackendAddr {
        format!("10.0.{}.{}", i / 250, i % 250 + 2).parse().unwrap()
    }

    fn service(kind: SchedulerKind, weights: &[u32]) -> Service {
        let mut spec = ServiceSpec::new(
            "10.0.9.100".parse().unwrap(),
            "tcp/80:8080".parse().unwrap(),
        );
        spec.scheduler = kind;
        let mut s = Service::new(spec, 2).unwrap();
        for (i, &w) in weights.iter().enumerate() {
            s.add_backend(addr(i as u32), w).unwrap();
        }
        s
    }

    fn client_hash(rng: &mut Rng) -> u64 {
        let src = SocketAddr::new(
            std::net::IpAddr::from((rng.next() as u32).to_be_bytes()),
            rng.next() as u16,
        );
        socket_flow_hash(
            crate::hash::DEFAULT_SEED,
            6,
            src,
            "10.0.9.100:80".parse().unwrap(),
        )
    }

    fn split(b: &mut Balancer, picks: usize, rng: &mut Rng) -> HashMap<SocketAddr, u64> {
        let mut n = HashMap::new();
        for _ in 0..picks {
            *n.entry(b.pick(client_hash(rng)).unwrap().addr).or_default() += 1;
        }
        n
    }

    #[test]
    fn rr_is_exact() {
        let s = service(SchedulerKind::Rr, &[1; 10]);
        let mut b = Balancer::new(s.snapshot(), 0);
        let n = split(&mut b, 10_000, &mut Rng(1));
        assert_eq!(n.len(), 10);
        assert!(n.values().all(|&c| c == 1000), "{n:?}");
    }

    #[test]
    fn wrr_is_proportional_and_smooth() {
        // Weights 1..=10: over 55 000 picks each backend gets exactly 1000 per unit of weight.
        let weights: Vec<u32> = (1..=10).collect();
        let s = service(SchedulerKind::Wrr, &weights);
        let mut b = Balancer::new(s.snapshot(), 0);
        let n = split(&mut b, 55_000, &mut Rng(2));
        for (i, w) in weights.iter().enumerate() {
            assert_eq!(n[&addr(i as u32).resolve(8080)], u64::from(*w) * 1000);
        }
        // Smooth: 5/1/1 interleaves as nginx's a a b a c a a, never five in a row.
        let s = service(SchedulerKind::Wrr, &[5, 1, 1]);
        let mut b = Balancer::new(s.snapshot(), 0);
        let seq: Vec<u16> = (0..7).map(|_| b.pick(0).unwrap().backend.slot).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn wrr_with_seeded_weights_is_within_one_percent() {
        let mut rng = Rng(3);
        let weights: Vec<u32> = (0..20).map(|_| 1 + rng.below(100) as u32).collect();
        let total: u32 = weights.iter().sum();
        let s = service(SchedulerKind::Wrr, &weights);
        let mut b = Balancer::new(s.snapshot(), 0);
        let picks = 100_003; // not a whole number of cycles
        let n = split(&mut b, picks, &mut rng);
        let mut worst = 0.0f64;
        for (i, &w) in weights.iter().enumerate() {
            let want = picks as f64 * f64::from(w) / f64::from(total);
            let got = n[&addr(i as u32).resolve(8080)] as f64;
            worst = worst.max((got - want).abs() / want);
        }
        eprintln!(
            "wrr, 20 backends, seeded weights 1-100: worst error {:.4}%",
            worst * 100.0
        );
        assert!(worst <= 0.01, "worst relative error {worst}");
    }

    #[test]
    fn lc_fills_the_backends_with_fewer_long_lived_connections() {
        let s = service(SchedulerKind::Lc, &[1, 1, 1]);
        let mut b = Balancer::new(s.snapshot(), 0);
        let first = b.table().backends().next().unwrap().0;
        for _ in 0..30 {
            assert!(b.opened(first));
        }
        // 60 new long-lived connections all go to the two others, then they share evenly.
        for _ in 0..60 {
            let p = b.pick(0).unwrap();
            assert_ne!(p.backend, first);
            b.opened(p.backend);
        }
        for _ in 0..30 {
            let p = b.pick(0).unwrap();
            b.opened(p.backend);
        }
        let active: Vec<u64> = s.backends().map(|i| i.active).collect();
        assert_eq!(active, [40, 40, 40]);
    }

    #[test]
    fn weighted_lc_keeps_active_counts_in_proportion_under_churn() {
        let s = service(SchedulerKind::Lc, &[1, 2, 3]);
        let mut b = Balancer::new(s.snapshot(), 0);
        let mut rng = Rng(4);
        let mut open: Vec<BackendRef> = Vec::new();
        for _ in 0..20_000 {
            // Mostly opens until ~600 are open, then as many closes as opens.
            if open.len() > 600 || (!open.is_empty() && rng.below(3) == 0) {
                let i = rng.below(open.len() as u64) as usize;
                assert!(b.closed(open.swap_remove(i)));
            } else {
                let p = b.pick(0).unwrap();
                b.opened(p.backend);
                open.push(p.backend);
            }
        }
        let active: Vec<u64> = s.backends().map(|i| i.active).collect();
        let sum: u64 = active.iter().sum();
        for (a, w) in active.iter().zip([1u64, 2, 3]) {
            let want = sum as f64 * w as f64 / 6.0;
            assert!((*a as f64 - want).abs() <= want * 0.05 + 2.0, "{active:?}");
        }
    }

    #[test]
    fn maglev_keeps_a_flow_on_its_backend_and_spreads_flows() {
        let s = service(SchedulerKind::Maglev, &[1; 100]);
        let mut b = Balancer::new(s.snapshot(), 0);
        let mut rng = Rng(5);
        let hashes: Vec<u64> = (0..200_000).map(|_| client_hash(&mut rng)).collect();
        let before: Vec<SocketAddr> = hashes.iter().map(|&h| b.pick(h).unwrap().addr).collect();
        assert_eq!(
            b.pick(hashes[7]).unwrap().addr,
            before[7],
            "same flow, same backend"
        );
        let mut n: HashMap<SocketAddr, u64> = HashMap::new();
        for a in &before {
            *n.entry(*a).or_default() += 1;
        }
        let max = *n.values().max().unwrap() as f64;
        // 2000 flows a backend on average; sampling noise adds a few percent to the table's.
        assert!(max / 2000.0 < 1.12, "max {max}");

        // Removing one backend moves its own flows and few others.
        let mut s2 = s.clone();
        let gone = addr(42);
        s2.remove_backend(gone, false, 0).unwrap();
        b.swap(s2.snapshot());
        let moved_others = hashes
            .iter()
            .zip(&before)
            .filter(|(h, a)| **a != gone.resolve(8080) && b.pick(**h).unwrap().addr != **a)
            .count();
        let frac = moved_others as f64 / hashes.len() as f64;
        eprintln!(
            "maglev: removing 1 of 100 backends moved {:.2}% of other backends' flows",
            frac * 100.0
        );
        assert!(frac < 0.02, "{frac}");
    }

    #[test]
    fn drained_removed_and_down_backends_are_never_picked() {
        for kind in SchedulerKind::ALL {
            let mut s = service(kind, &[1, 2, 3, 4]);
            let mut b = Balancer::new(s.snapshot(), 0);
            // Give each backend a connection so removals do not purge at once.
            let refs: Vec<BackendRef> = b.table().backends().map(|(r, _)| r).collect();
            for r in &refs {
                b.opened(*r);
            }
            assert!(matches!(
                s.remove_backend(addr(0), true, 0),
                Ok(crate::service::Removal::Draining { .. })
            ));
            assert!(matches!(
                s.remove_backend(addr(1), false, 0),
                Ok(crate::service::Removal::Reset { .. })
            ));
            assert!(s.set_health(addr(2), Health::Down).unwrap());
            b.swap(s.snapshot());
            let mut rng = Rng(6);
            for _ in 0..2000 {
                let p = b.pick(client_hash(&mut rng)).unwrap();
                assert_eq!(p.addr, addr(3).resolve(8080), "{kind}");
            }
            assert_eq!(
                b.disposition(refs[0]),
                Disposition::Keep,
                "drained keeps its connections"
            );
            assert_eq!(b.disposition(refs[1]), Disposition::Reset, "removed: reset");
            assert_eq!(
                b.disposition(refs[2]),
                Disposition::Keep,
                "down keeps its connections"
            );
            assert_eq!(b.table().reset_list(), &refs[1..2]);
            // Back up: picked again.
            s.set_health(addr(2), Health::Up).unwrap();
            b.swap(s.snapshot());
            let mut picked = std::collections::HashSet::new();
            for _ in 0..2000 {
                let p = b.pick(client_hash(&mut rng)).unwrap();
                b.opened(p.backend);
                picked.insert(p.addr);
            }
            assert_eq!(picked.len(), 2, "{kind}: {picked:?}");
        }
    }

    #[test]
    fn no_live_backend_is_a_typed_result() {
        for kind in SchedulerKind::ALL {
            let mut s = service(kind, &[]);
            let mut b = Balancer::new(s.snapshot(), 0);
            assert_eq!(b.pick(1), Err(NoBackend { backends: 0 }));
            s.add_backend(addr(0), 1).unwrap();
            s.set_health(addr(0), Health::Down).unwrap();
            b.swap(s.snapshot());
            let e = b.pick(1).unwrap_err();
            assert_eq!(e, NoBackend { backends: 1 });
            assert_eq!(
                e.to_string(),
                "no live backend: 1 configured, none active and healthy"
            );
            let r: xvs_stage::drop::DropReason = e.into();
            assert_eq!(r, LbDrop::NoBackend.reason());
        }
    }

    #[test]
    fn preview_changes_nothing() {
        for kind in SchedulerKind::ALL {
            let s = service(kind, &[3, 1, 2]);
            let mut b = Balancer::new(s.snapshot(), 0);
            for h in 0..50u64 {
                let h = h.wrapping_mul(0x1234_5678_9abc_def1);
                let p = b.preview(h).unwrap();
                assert_eq!(b.preview(h).unwrap(), p);
                assert_eq!(b.pick(h).unwrap(), p, "{kind}");
                b.opened(p.backend);
            }
        }
    }

    #[test]
    fn why_reads_as_a_trace_line() {
        let s = service(SchedulerKind::Maglev, &[1, 1]);
        let b = Balancer::new(s.snapshot(), 0);
        let p = b.preview(0).unwrap();
        assert_eq!(
            p.why.to_string(),
            "maglev: flow hash selects entry 0 of 65537"
        );
        let s = service(SchedulerKind::Rr, &[1, 1]);
        let b = Balancer::new(s.snapshot(), 0);
        assert_eq!(
            b.preview(0).unwrap().why.to_string(),
            "rr: turn 1 of 2 live backends"
        );
    }

    #[test]
    fn counts_survive_a_swap_and_stale_handles_count_nothing() {
        let mut s = service(SchedulerKind::Rr, &[1, 1]);
        let mut b = Balancer::new(s.snapshot(), 1);
        let p = b.pick(0).unwrap();
        assert!(b.opened(p.backend));
        s.add_backend(addr(5), 1).unwrap();
        b.swap(s.snapshot());
        assert_eq!(s.backends().map(|i| i.active).sum::<u64>(), 1);
        assert!(b.closed(p.backend));
        // Removed with no connection: purged at once; its slot's next backend is another.
        let gone = s
            .remove_backend(BackendAddr::from(p.addr), false, 0)
            .unwrap();
        assert_eq!(gone, crate::service::Removal::Purged { backend: p.backend });
        s.add_backend(addr(9), 1).unwrap();
        b.swap(s.snapshot());
        assert!(!b.opened(p.backend) && !b.closed(p.backend));
        assert_eq!(b.disposition(p.backend), Disposition::Reset);
        assert_eq!(
            s.backends().map(|i| i.total).sum::<u64>(),
            0,
            "the new backend counts nothing of the old's"
        );
    }
}
