//! The uplink's neighbours: IPv4 address → MAC, learned from the ARP that reaches xvs on the
//! uplink (replies to its requests, requests for its address), read by every worker's router
//! stage to address frames to their next hop.
//!
//! One writer, many readers, no lock on the fast path: the table is an immutable map swapped
//! atomically when an entry is learned or refreshed (rare: an ARP frame), with a generation
//! number each reader checks once per batch, reloading its own `Arc` of the map only when it
//! moved. Bounded: at most [`MAX_NEIGHBOURS`] entries (a learn beyond is refused and counted by
//! the caller). Entries age: usable for [`REACHABLE_MS`] after they were learned, refreshed by
//! a new request once older than [`REFRESH_MS`] while in use.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use hashbrown::HashMap;

use crate::wire::Mac;

/// Most neighbours the uplink keeps (its gateway and the hosts of its own subnet it talks to).
pub const MAX_NEIGHBOURS: usize = 1024;
/// How long an entry is used after it was learned.
pub const REACHABLE_MS: u64 = 300_000;
/// Age from which an entry in use is refreshed with a new request.
pub const REFRESH_MS: u64 = 60_000;

/// One neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC.
    pub mac: Mac,
    /// When it was last learned (ms).
    pub learned_ms: u64,
}

/// The map readers hold.
pub type NeighbourMap = HashMap<Ipv4Addr, Neighbour>;

/// The shared table.
#[derive(Debug, Default)]
pub struct Neighbours {
    map: ArcSwap<NeighbourMap>,
    generation: AtomicU64,
}

/// What a learn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new neighbour, or a new MAC for one.
    Changed,
    /// The same MAC again, its age renewed.
    Refreshed,
    /// Known and learned moments ago: nothing to do.
    Unchanged,
    /// The table is full.
    Full,
}

impl Neighbours {
    /// An empty table, shared.
    pub fn new() -> Arc<Neighbours> {
        Arc::new(Neighbours::default())
    }

    /// Bumped at every change; a reader compares it with the one its map came with.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The map now, and its generation.
    pub fn snapshot(&self) -> (u64, Arc<NeighbourMap>) {
        let g = self.generation();
        (g, self.map.load_full())
    }

    /// Records that `ip` is at `mac` (the writer: the worker polling the uplink port, or the
    /// control thread). An entry learned less than a second ago with the same MAC is left
    /// alone, so a chatty neighbour does not copy the map at each ARP frame.
    pub fn learn(&self, ip: Ipv4Addr, mac: Mac, now_ms: u64) -> Learned {
        let map = self.map.load();
        let outcome = match map.get(&ip) {
            Some(n) if n.mac == mac && now_ms.saturating_sub(n.learned_ms) < 1000 => {
                return Learned::Unchanged;
            }
            Some(n) if n.mac == mac => Learned::Refreshed,
            Some(_) => Learned::Changed,
            None if map.len() >= MAX_NEIGHBOURS => return Learned::Full,
            None => Learned::Changed,
        };
        let mut next: NeighbourMap = (**map).clone();
        next.insert(
            ip,
            Neighbour {
                mac,
                learned_ms: now_ms,
            },
        );
        self.map.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::Release);
        outcome
    }

    /// Forgets every entry (the uplink changed).
    pub fn clear(&self) {
        self.map.store(Arc::new(NeighbourMap::new()));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Every entry, for `uplink show`.
    pub fn entries(&self) -> Vec<(Ipv4Addr, Neighbour)> {
        let mut v: Vec<_> = self.map.load().iter().map(|(i, n)| (*i, *n)).collect();
        v.sort_by_key(|(i, _)| *i);
        v
    }
}

/// A reader's view: its own `Arc` of the map, reloaded when the table's generation moved.
#[derive(Debug)]
pub struct NeighbourView {
    table: Arc<Neighbours>,
    generation: u64,
    map: Arc<NeighbourMap>,
}

impl NeighbourView {
    /// A view of `table`.
    pub fn new(table: Arc<Neighbours>) -> NeighbourView {
        let (generation, map) = table.snapshot();
        NeighbourView {
            table,
            generation,
            map,
        }
    }

    /// The table behind the view.
    pub fn table(&self) -> &Arc<Neighbours> {
        &self.table
    }

    /// Catches up with the table (once per batch: one atomic load when nothing changed).
    /// Returns whether the map changed.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        if self.table.generation() == self.generation {
            return false;
        }
        (self.generation, self.map) = self.table.snapshot();
        true
    }

    /// `ip`'s MAC if it is usable at `now_ms`, and whether it is due for a refresh.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr, now_ms: u64) -> Option<(Mac, bool)> {
        let n = self.map.get(&ip)?;
        let age = now_ms.saturating_sub(n.learned_ms);
        (age < REACHABLE_MS).then_some((n.mac, age >= REFRESH_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    #[test]
    fn readers_see_a_learn_at_their_next_refresh_and_entries_age() {
        let t = Neighbours::new();
        let mut v = NeighbourView::new(t.clone());
        assert_eq!(v.lookup(A, 0), None);
        assert_eq!(t.learn(A, Mac([2, 0, 0, 0, 0, 1]), 10), Learned::Changed);
        assert_eq!(v.lookup(A, 10), None, "not before the view refreshes");
        assert!(v.refresh());
        assert!(!v.refresh(), "nothing moved since");
        assert_eq!(v.lookup(A, 20), Some((Mac([2, 0, 0, 0, 0, 1]), false)));
        assert_eq!(v.lookup(A, 10 + REFRESH_MS).map(|x| x.1), Some(true));
        assert_eq!(v.lookup(A, 10 + REACHABLE_MS), None, "aged out");
        assert_eq!(t.learn(A, Mac([2, 0, 0, 0, 0, 1]), 500), Learned::Unchanged);
        assert_eq!(
            t.learn(A, Mac([2, 0, 0, 0, 0, 1]), 5000),
            Learned::Refreshed
        );
        assert_eq!(t.learn(A, Mac([2, 0, 0, 0, 0, 2]), 5001), Learned::Changed);
        assert!(v.refresh());
        assert_eq!(v.lookup(A, 5002), Some((Mac([2, 0, 0, 0, 0, 2]), false)));
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Neighbours::new();
        for i in 0..MAX_NEIGHBOURS as u32 {
            assert_eq!(
                t.learn(Ipv4Addr::from(i), Mac([2, 0, 0, 0, 0, 1]), 0),
                Learned::Changed
            );
        }
        assert_eq!(
            t.learn(Ipv4Addr::new(203, 0, 113, 1), Mac([2, 0, 0, 0, 0, 1]), 0),
            Learned::Full
        );
        assert_eq!(t.entries().len(), MAX_NEIGHBOURS);
        t.clear();
        assert!(t.entries().is_empty());
    }
}
