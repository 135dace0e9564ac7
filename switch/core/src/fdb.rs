//! The forwarding database (MAC table) of one bridge: learning, lookup, ageing, limits.
//!
//! Bounded: at most `capacity` entries per bridge and `port_limit` learned MACs per port, so a
//! port sending random source MACs can neither grow memory nor evict other ports' entries;
//! refused learning is reported to the caller, which counts it. Time is an argument (ms).
//! Owned by the worker that runs the bridge; not shared between threads.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::classify::{Mac, PortId};

/// Limits and timers of a bridge's MAC table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbConfig {
    /// Seconds an entry lives without being seen (default 300).
    pub ageing_secs: u32,
    /// Entries per bridge (default 65536).
    pub capacity: u32,
    /// Learned MACs per port (default 1024).
    pub port_limit: u32,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            ageing_secs: 300,
            capacity: 65536,
            port_limit: 1024,
        }
    }
}

/// The result of learning a source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port; its age was reset.
    Refreshed {
        /// How long it had not been seen (ms).
        idle_ms: u64,
    },
    /// New entry.
    Learned,
    /// The station moved here from another port.
    Moved {
        /// The port it was on.
        from: PortId,
    },
    /// Not learned: the table is full.
    TableFull,
    /// Not learned: the port reached its learned-MAC limit (a stale entry of a moved station
    /// is removed, so its frames flood rather than go to the old port).
    PortLimit,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortId,
    last_seen_ms: u64,
}

/// One learned MAC, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbRecord {
    /// VLAN domain.
    pub vlan: u16,
    /// MAC.
    pub mac: Mac,
    /// Port.
    pub port: PortId,
    /// Seconds since last seen.
    pub age_secs: u64,
}

/// A bridge's MAC table.
#[derive(Debug, Default)]
pub struct Fdb {
    table: HashMap<u64, Entry>,
    per_port: HashMap<PortId, u32>,
    config: FdbConfig,
}

#[inline]
fn key(vlan: u16, mac: Mac) -> u64 {
    (u64::from(vlan) << 48) | mac.to_u64()
}

impl Fdb {
    /// An empty table.
    pub fn new(config: FdbConfig) -> Fdb {
        Fdb {
            table: HashMap::new(),
            per_port: HashMap::new(),
            config,
        }
    }

    /// Current limits.
    pub fn config(&self) -> FdbConfig {
        self.config
    }

    /// Changes limits; existing entries stay (learning stops until the table is below them).
    pub fn set_config(&mut self, config: FdbConfig) {
        self.config = config;
    }

    #[inline]
    fn ageing_ms(&self) -> u64 {
        u64::from(self.config.ageing_secs) * 1000
    }

    /// Learns that `mac` in `vlan` is behind `port`, as of `now_ms`.
    #[inline]
    pub fn learn(&mut self, vlan: u16, mac: Mac, port: PortId, now_ms: u64) -> Learn {
        let k = key(vlan, mac);
        if let Some(e) = self.table.get_mut(&k) {
            if e.port == port {
                let idle_ms = now_ms.saturating_sub(e.last_seen_ms);
                e.last_seen_ms = now_ms;
                return Learn::Refreshed { idle_ms };
            }
            return self.relearn(k, port, now_ms);
        }
        if self.table.len() >= self.config.capacity as usize {
            return Learn::TableFull;
        }
        let count = self.per_port.entry(port).or_insert(0);
        if *count >= self.config.port_limit {
            return Learn::PortLimit;
        }
        *count += 1;
        self.table.insert(
            k,
            Entry {
                port,
                last_seen_ms: now_ms,
            },
        );
        Learn::Learned
    }

    /// Learns what another worker saw ([`fdb_sync`](crate::fdb_sync)): `mac` behind `port`
    /// as of `seen_ms`. An entry this replica saw later is kept: the newest sighting wins, so
    /// replicas agree once updates stop crossing. Limits apply as to local learning.
    pub fn learn_remote(&mut self, vlan: u16, mac: Mac, port: PortId, seen_ms: u64) -> Learn {
        if let Some(e) = self.table.get_mut(&key(vlan, mac)) {
            if e.last_seen_ms > seen_ms {
                return Learn::Refreshed { idle_ms: 0 };
            }
            if e.port == port {
                e.last_seen_ms = seen_ms;
                return Learn::Refreshed { idle_ms: 0 };
            }
        }
        self.learn(vlan, mac, port, seen_ms)
    }

    #[cold]
    fn relearn(&mut self, k: u64, port: PortId, now_ms: u64) -> Learn {
        let Some(old) = self.table.get(&k).map(|e| e.port) else {
            return Learn::TableFull;
        };
        self.release(old);
        let count = self.per_port.entry(port).or_insert(0);
        if *count >= self.config.port_limit {
            self.table.remove(&k);
            return Learn::PortLimit;
        }
        *count += 1;
        self.table.insert(
            k,
            Entry {
                port,
                last_seen_ms: now_ms,
            },
        );
        Learn::Moved { from: old }
    }

    fn release(&mut self, port: PortId) {
        if let Some(c) = self.per_port.get_mut(&port) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_port.remove(&port);
            }
        }
    }

    /// The port behind `mac` in `vlan`, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: Mac, now_ms: u64) -> Option<PortId> {
        let e = self.table.get(&key(vlan, mac))?;
        (now_ms.saturating_sub(e.last_seen_ms) <= self.ageing_ms()).then_some(e.port)
    }

    /// Removes aged-out entries; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let ageing = self.ageing_ms();
        let before = self.table.len();
        let per_port = &mut self.per_port;
        self.table.retain(|_, e| {
            let keep = now_ms.saturating_sub(e.last_seen_ms) <= ageing;
            if !keep && let Some(c) = per_port.get_mut(&e.port) {
                *c = c.saturating_sub(1);
            }
            keep
        });
        self.per_port.retain(|_, c| *c > 0);
        before - self.table.len()
    }

    /// Removes every entry.
    pub fn flush(&mut self) {
        self.table.clear();
        self.per_port.clear();
    }

    /// Removes every entry on `port` (port deleted).
    pub fn flush_port(&mut self, port: PortId) {
        self.table.retain(|_, e| e.port != port);
        self.per_port.remove(&port);
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// MACs learned on `port`.
    pub fn learned_on(&self, port: PortId) -> u32 {
        self.per_port.get(&port).copied().unwrap_or(0)
    }

    /// Every live entry, sorted by port, VLAN, MAC.
    pub fn records(&self, now_ms: u64) -> Vec<FdbRecord> {
        let ageing = self.ageing_ms();
        let mut v: Vec<FdbRecord> = self
            .table
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.last_seen_ms) <= ageing)
            .map(|(k, e)| FdbRecord {
                vlan: (k >> 48) as u16,
                mac: Mac::from_u64(*k),
                port: e.port,
                age_secs: now_ms.saturating_sub(e.last_seen_ms) / 1000,
            })
            .collect();
        v.sort_by_key(|r| (r.port, r.vlan, r.mac));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn remote_learning_keeps_the_newest_sighting() {
        let mut f = Fdb::new(FdbConfig::default());
        assert_eq!(f.learn(0, mac(1), 1, 5_000), Learn::Learned);
        // Another worker saw it on port 2, but earlier: this replica's sighting stands.
        f.learn_remote(0, mac(1), 2, 4_000);
        assert_eq!(f.lookup(0, mac(1), 5_000), Some(1));
        // Later: it moved.
        assert_eq!(
            f.learn_remote(0, mac(1), 2, 6_000),
            Learn::Moved { from: 1 }
        );
        assert_eq!(f.lookup(0, mac(1), 6_000), Some(2));
        assert_eq!((f.learned_on(1), f.learned_on(2)), (0, 1));
        // A refresh from the other worker keeps it alive here.
        f.learn_remote(0, mac(1), 2, 200_000);
        assert_eq!(f.lookup(0, mac(1), 400_000), Some(2));
        // A new station from afar.
        assert_eq!(f.learn_remote(0, mac(9), 3, 7_000), Learn::Learned);
    }

    #[test]
    fn learn_lookup_refresh_and_age() {
        let mut f = Fdb::new(FdbConfig {
            ageing_secs: 10,
            ..FdbConfig::default()
        });
        assert_eq!(f.learn(0, mac(1), 1, 0), Learn::Learned);
        assert_eq!(f.lookup(0, mac(1), 5_000), Some(1));
        assert_eq!(
            f.learn(0, mac(1), 1, 8_000),
            Learn::Refreshed { idle_ms: 8_000 }
        );
        assert_eq!(f.lookup(0, mac(1), 17_000), Some(1));
        assert_eq!(f.lookup(0, mac(1), 18_001), None);
        assert_eq!(f.expire(18_001), 1);
        assert!(f.is_empty());
        assert_eq!(f.learned_on(1), 0);
    }

    #[test]
    fn vlans_are_separate_domains() {
        let mut f = Fdb::new(FdbConfig::default());
        f.learn(10, mac(1), 1, 0);
        assert_eq!(f.lookup(20, mac(1), 0), None);
        f.learn(20, mac(1), 2, 0);
        assert_eq!(f.lookup(10, mac(1), 0), Some(1));
        assert_eq!(f.lookup(20, mac(1), 0), Some(2));
    }

    #[test]
    fn station_move_relearns() {
        let mut f = Fdb::new(FdbConfig::default());
        f.learn(0, mac(1), 1, 0);
        assert_eq!(f.learn(0, mac(1), 2, 1), Learn::Moved { from: 1 });
        assert_eq!(f.lookup(0, mac(1), 1), Some(2));
        assert_eq!((f.learned_on(1), f.learned_on(2)), (0, 1));
    }

    #[test]
    fn limits_refuse_learning_without_evicting() {
        let mut f = Fdb::new(FdbConfig {
            ageing_secs: 300,
            capacity: 8,
            port_limit: 3,
        });
        for i in 0..3 {
            assert_eq!(f.learn(0, mac(i), 1, 0), Learn::Learned);
        }
        assert_eq!(f.learn(0, mac(99), 1, 0), Learn::PortLimit);
        for i in 10..15 {
            assert_eq!(f.learn(0, mac(i), 2 + i, 0), Learn::Learned);
        }
        assert_eq!(f.learn(0, mac(50), 40, 0), Learn::TableFull);
        assert_eq!(f.len(), 8);
        assert_eq!(f.lookup(0, mac(0), 0), Some(1));
        // A station moving onto a full port is forgotten, not left on its old port.
        f.learn(0, mac(10), 12, 0);
        assert_eq!(f.learn(0, mac(10), 1, 0), Learn::PortLimit);
        assert_eq!(f.lookup(0, mac(10), 0), None);
    }

    #[test]
    fn flush_port_and_records() {
        let mut f = Fdb::new(FdbConfig::default());
        f.learn(0, mac(2), 2, 0);
        f.learn(0, mac(1), 1, 0);
        f.learn(5, mac(3), 1, 0);
        let r = f.records(3_000);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].port, r[0].vlan, r[0].age_secs), (1, 0, 3));
        f.flush_port(1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.learned_on(1), 0);
    }

    proptest! {
        /// Whatever the sequence of learnings, the table respects both limits and the
        /// per-port counts agree with the table.
        #[test]
        fn limits_hold(ops in proptest::collection::vec((0u32..64, 0u32..6, 0u64..50), 0..400)) {
            let cfg = FdbConfig { ageing_secs: 10, capacity: 40, port_limit: 9 };
            let mut f = Fdb::new(cfg);
            let mut now = 0;
            for (m, p, dt) in ops {
                now += dt * 100;
                f.learn(0, mac(m), p, now);
                if now % 7 == 0 { f.expire(now); }
                prop_assert!(f.len() <= cfg.capacity as usize);
                for port in 0..6 {
                    let n = f.table.values().filter(|e| e.port == port).count() as u32;
                    prop_assert_eq!(n, f.learned_on(port));
                    prop_assert!(n <= cfg.port_limit);
                }
            }
        }
    }
}
