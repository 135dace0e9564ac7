//! The remote FDB: which remote VTEP an inner MAC of an overlay network is behind, learnt from
//! decapsulated frames (aged like the switch's local entries, 300 s by default) or set
//! statically (`vtep fdb add`: never aged, never moved by learning). Fixed capacity: a slab of
//! entries and a hash index reserved when the table is made, with limits per table, per VNI
//! and per remote VTEP (as a port's in the switch); refused learning is `fdb_full`. Expiry is
//! lazy (an aged entry is not found) plus a bounded sweep per call. Time is an argument (ms).
//!
//! Owned by the worker that decapsulates for the networks it holds (the control plane's static
//! entries reach it as commands); not `Sync`.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use serde::{Deserialize, Serialize};
use xvs_stage::wire::Mac;

use crate::drop::VxlanDrop;
use crate::header::Vni;

/// Distinct VNIs and (VNI, remote VTEP) pairs the share counters hold without growing.
const TRACKED_SHARES: usize = 4096;

/// Limits and timers of the remote FDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFdbConfig {
    /// Seconds a learnt entry lives without being seen (default 300, as the switch's FDB and
    /// Linux's `vxlan` device age theirs).
    pub ageing_secs: u32,
    /// Entries in all, static ones included (default 65536, the switch FDB's capacity).
    pub capacity: u32,
    /// Entries per VNI, static ones included (default 16384).
    pub vni_limit: u32,
    /// Learnt MACs per remote VTEP in one VNI (default 1024, a switch port's limit: the
    /// remote VTEP is the inner frames' ingress).
    pub remote_limit: u32,
}

impl Default for RemoteFdbConfig {
    fn default() -> Self {
        RemoteFdbConfig {
            ageing_secs: 300,
            capacity: 65536,
            vni_limit: 16384,
            remote_limit: 1024,
        }
    }
}

/// What learning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// A new entry.
    Learned,
    /// Known behind this VTEP; its age was reset.
    Refreshed,
    /// The MAC moved here from another VTEP.
    Moved {
        /// The VTEP it was behind.
        from: Ipv4Addr,
    },
    /// A static entry says this VTEP already; nothing changes.
    Static,
    /// Not a station address (group or all-zero MAC): never learnt.
    Ignored,
}

/// Why a static entry was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StaticError {
    /// The MAC is a group address or zero.
    #[error("{0} is not a unicast MAC address")]
    NotUnicast(Mac),
    /// The table holds its capacity.
    #[error("remote FDB full ({0} entries)")]
    Full(u32),
    /// The VNI holds its share.
    #[error("remote FDB full for VNI {vni} ({limit} entries)")]
    VniFull {
        /// The network.
        vni: Vni,
        /// Its share.
        limit: u32,
    },
}

/// One entry, as `vtep show` and `fdb ls` list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    /// The network.
    pub vni: Vni,
    /// The inner MAC.
    pub mac: Mac,
    /// The remote VTEP it is behind.
    pub remote_ip: Ipv4Addr,
    /// Its inner IPv4 address, when a static entry gives it (`fdb add --ip`).
    pub inner_ip: Option<Ipv4Addr>,
    /// Set by `vtep fdb add` (never ages) rather than learnt.
    pub is_static: bool,
    /// Seconds since last seen (0 for static entries).
    pub age_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Learnt,
    Static,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    vni: Vni,
    mac: Mac,
    remote: Ipv4Addr,
    inner_ip: Option<Ipv4Addr>,
    last_seen_ms: u64,
    kind: Kind,
}

impl Slot {
    const FREE: Slot = Slot {
        vni: Vni::MAX,
        mac: Mac([0; 6]),
        remote: Ipv4Addr::UNSPECIFIED,
        inner_ip: None,
        last_seen_ms: 0,
        kind: Kind::Free,
    };
}

/// The remote FDB of every overlay network of one worker.
#[derive(Debug)]
pub struct RemoteFdb {
    config: RemoteFdbConfig,
    /// Entries; grows up to `capacity` within its reservation, freed slots are reused.
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slot numbers by (VNI, MAC); reserved for twice the capacity, so removals' tombstones
    /// are always cleared by rehashing in place, never by growing.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Entries per VNI.
    per_vni: HashMap<Vni, u32>,
    /// Learnt entries per (VNI, remote VTEP).
    per_remote: HashMap<(Vni, Ipv4Addr), u32>,
    live: u32,
    cursor: usize,
}

/// Whether `mac` is a station's address (what learning and static entries take).
#[inline]
fn station(mac: Mac) -> bool {
    !mac.is_multicast() && mac != Mac([0; 6])
}

/// Counts one more (`up`) or one fewer of `k`, removing the counter at zero.
#[inline]
fn count<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K, up: bool) {
    if up {
        *m.entry(k).or_insert(0) += 1;
    } else if let Some(c) = m.get_mut(&k) {
        *c = c.saturating_sub(1);
        if *c == 0 {
            m.remove(&k);
        }
    }
}

impl RemoteFdb {
    /// An empty table; its memory is reserved now (the slab's pages are touched as entries
    /// arrive).
    pub fn new(config: RemoteFdbConfig) -> RemoteFdb {
        let cap = config.capacity as usize;
        let shares = cap.min(TRACKED_SHARES);
        RemoteFdb {
            config,
            slots: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            index: HashTable::with_capacity(2 * cap),
            hasher: DefaultHashBuilder::default(),
            per_vni: HashMap::with_capacity(2 * shares),
            per_remote: HashMap::with_capacity(2 * shares),
            live: 0,
            cursor: 0,
        }
    }

    /// Limits and timers.
    pub fn config(&self) -> RemoteFdbConfig {
        self.config
    }

    /// Entries (static and learnt, aged ones not yet swept included).
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Entries of `vni`.
    pub fn len_of(&self, vni: Vni) -> u32 {
        self.per_vni.get(&vni).copied().unwrap_or(0)
    }

    /// MACs of `vni` learnt behind `remote`.
    pub fn learnt_from(&self, vni: Vni, remote: Ipv4Addr) -> u32 {
        self.per_remote.get(&(vni, remote)).copied().unwrap_or(0)
    }

    #[inline]
    fn ageing_ms(&self) -> u64 {
        u64::from(self.config.ageing_secs) * 1000
    }

    #[inline]
    fn hash(&self, vni: Vni, mac: Mac) -> u64 {
        self.hasher
            .hash_one((u128::from(vni.get()) << 48) | u128::from(mac.to_u64()))
    }

    #[inline]
    fn find(&self, vni: Vni, mac: Mac) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hash(vni, mac), |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|s| s.vni == vni && s.mac == mac)
            })
            .copied()
    }

    #[inline]
    fn live_slot(&self, s: &Slot, now_ms: u64) -> bool {
        match s.kind {
            Kind::Static => true,
            Kind::Learnt => now_ms.saturating_sub(s.last_seen_ms) <= self.ageing_ms(),
            Kind::Free => false,
        }
    }

    /// The remote VTEP behind `mac` in `vni`, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, vni: Vni, mac: Mac, now_ms: u64) -> Option<Ipv4Addr> {
        let s = self.slots.get(self.find(vni, mac)? as usize)?;
        self.live_slot(s, now_ms).then_some(s.remote)
    }

    /// Learns that `mac` in `vni` is behind `remote` (a decapsulated frame's inner source and
    /// outer source), as of `now_ms`: a new entry, a refresh, or a move from another VTEP.
    /// A static entry is never changed: the same VTEP is [`Learn::Static`], another is
    /// [`VxlanDrop::StaticConflict`] (Linux drops such a frame rather than move the entry). A
    /// full table, VNI share or remote share is [`VxlanDrop::FdbFull`] (a counted event: the
    /// frame is still delivered); a MAC moving to a VTEP at its share loses its entry, so its
    /// frames flood rather than go to the old VTEP.
    #[inline]
    pub fn learn(
        &mut self,
        vni: Vni,
        mac: Mac,
        remote: Ipv4Addr,
        now_ms: u64,
    ) -> Result<Learn, VxlanDrop> {
        if !station(mac) {
            return Ok(Learn::Ignored);
        }
        let Some(i) = self.find(vni, mac) else {
            return self.insert_learnt(vni, mac, remote, now_ms);
        };
        let Some(s) = self.slots.get_mut(i as usize) else {
            return Err(VxlanDrop::FdbFull);
        };
        match s.kind {
            Kind::Static if s.remote == remote => Ok(Learn::Static),
            Kind::Static => Err(VxlanDrop::StaticConflict),
            _ if s.remote == remote => {
                s.last_seen_ms = now_ms;
                Ok(Learn::Refreshed)
            }
            _ => self.relearn(i, remote, now_ms),
        }
    }

    #[cold]
    fn relearn(&mut self, i: u32, remote: Ipv4Addr, now_ms: u64) -> Result<Learn, VxlanDrop> {
        let Some(&Slot {
            vni, remote: from, ..
        }) = self.slots.get(i as usize)
        else {
            return Err(VxlanDrop::FdbFull);
        };
        count(&mut self.per_remote, (vni, from), false);
        if self.learnt_from(vni, remote) >= self.config.remote_limit {
            self.remove_slot(i, false);
            return Err(VxlanDrop::FdbFull);
        }
        count(&mut self.per_remote, (vni, remote), true);
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.remote = remote;
            s.last_seen_ms = now_ms;
        }
        Ok(Learn::Moved { from })
    }

    #[inline]
    fn insert_learnt(
        &mut self,
        vni: Vni,
        mac: Mac,
        remote: Ipv4Addr,
        now_ms: u64,
    ) -> Result<Learn, VxlanDrop> {
        if self.live >= self.config.capacity
            || self.len_of(vni) >= self.config.vni_limit
            || self.learnt_from(vni, remote) >= self.config.remote_limit
        {
            return Err(VxlanDrop::FdbFull);
        }
        count(&mut self.per_remote, (vni, remote), true);
        self.insert(Slot {
            vni,
            mac,
            remote,
            inner_ip: None,
            last_seen_ms: now_ms,
            kind: Kind::Learnt,
        });
        Ok(Learn::Learned)
    }

    /// Puts `slot` (a key not in the table; room checked) in a free slot and the index.
    fn insert(&mut self, slot: Slot) {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::FREE);
                (self.slots.len() - 1) as u32
            }
        };
        if let Some(s) = self.slots.get_mut(i as usize) {
            *s = slot;
        }
        count(&mut self.per_vni, slot.vni, true);
        self.live += 1;
        let h = self.hash(slot.vni, slot.mac);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(h, i, |&j| {
            slots.get(j as usize).map_or(0, |s| {
                hasher.hash_one((u128::from(s.vni.get()) << 48) | u128::from(s.mac.to_u64()))
            })
        });
    }

    /// Removes slot `i` from the index and the counters and frees it (`learnt_counted`: its
    /// remote share is still counted and must be released).
    fn remove_slot(&mut self, i: u32, learnt_counted: bool) {
        let Some(s) = self.slots.get(i as usize).copied() else {
            return;
        };
        if s.kind == Kind::Free {
            return;
        }
        let h = self.hash(s.vni, s.mac);
        if let Ok(e) = self.index.find_entry(h, |&j| j == i) {
            e.remove();
        }
        if s.kind == Kind::Learnt && learnt_counted {
            count(&mut self.per_remote, (s.vni, s.remote), false);
        }
        count(&mut self.per_vni, s.vni, false);
        self.live -= 1;
        if let Some(slot) = self.slots.get_mut(i as usize) {
            *slot = Slot::FREE;
        }
        self.free.push(i);
    }

    /// Adds or replaces the static entry for `mac` in `vni`: behind `remote`, with inner
    /// address `inner_ip` if given. A learnt entry for the MAC becomes static.
    pub fn add_static(
        &mut self,
        vni: Vni,
        mac: Mac,
        remote: Ipv4Addr,
        inner_ip: Option<Ipv4Addr>,
    ) -> Result<(), StaticError> {
        if !station(mac) {
            return Err(StaticError::NotUnicast(mac));
        }
        if let Some(i) = self.find(vni, mac) {
            let Some(s) = self.slots.get_mut(i as usize) else {
                return Err(StaticError::Full(self.config.capacity));
            };
            let was_learnt = s.kind == Kind::Learnt;
            let old_remote = s.remote;
            *s = Slot {
                remote,
                inner_ip,
                last_seen_ms: 0,
                kind: Kind::Static,
                ..*s
            };
            if was_learnt {
                count(&mut self.per_remote, (vni, old_remote), false);
            }
            return Ok(());
        }
        if self.live >= self.config.capacity {
            return Err(StaticError::Full(self.config.capacity));
        }
        if self.len_of(vni) >= self.config.vni_limit {
            return Err(StaticError::VniFull {
                vni,
                limit: self.config.vni_limit,
            });
        }
        self.insert(Slot {
            vni,
            mac,
            remote,
            inner_ip,
            last_seen_ms: 0,
            kind: Kind::Static,
        });
        Ok(())
    }

    /// Removes the static entry for `mac` in `vni`; false if there is none (a learnt entry
    /// is left alone).
    pub fn remove_static(&mut self, vni: Vni, mac: Mac) -> bool {
        match self.find(vni, mac) {
            Some(i)
                if self
                    .slots
                    .get(i as usize)
                    .is_some_and(|s| s.kind == Kind::Static) =>
            {
                self.remove_slot(i, true);
                true
            }
            _ => false,
        }
    }

    /// Removes learnt entries aged out by `now_ms`, examining at most `budget` slots from
    /// where the last call stopped (the whole table is covered every `capacity / budget`
    /// calls); returns how many were removed.
    pub fn expire(&mut self, now_ms: u64, budget: usize) -> usize {
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        let ageing = self.ageing_ms();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            let i = self.cursor % n;
            self.cursor = (i + 1) % n;
            let aged = self.slots.get(i).is_some_and(|s| {
                s.kind == Kind::Learnt && now_ms.saturating_sub(s.last_seen_ms) > ageing
            });
            if aged {
                self.remove_slot(i as u32, true);
                removed += 1;
            }
        }
        removed
    }

    /// Removes every entry of `vni` (its network is gone); returns how many.
    pub fn flush_vni(&mut self, vni: Vni) -> usize {
        self.remove_where(|s| s.vni == vni)
    }

    /// Removes the entries of `vni` learnt behind `remote` (the peer was deleted); static
    /// entries stay. Returns how many.
    pub fn forget_remote(&mut self, vni: Vni, remote: Ipv4Addr) -> usize {
        self.remove_where(|s| s.kind == Kind::Learnt && s.vni == vni && s.remote == remote)
    }

    fn remove_where(&mut self, pick: impl Fn(&Slot) -> bool) -> usize {
        let picked: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| {
                self.slots
                    .get(i as usize)
                    .is_some_and(|s| s.kind != Kind::Free && pick(s))
            })
            .collect();
        for &i in &picked {
            self.remove_slot(i, true);
        }
        picked.len()
    }

    /// Every live entry (aged ones left out), in slot order.
    pub fn entries(&self, now_ms: u64) -> impl Iterator<Item = RemoteEntry> + '_ {
        self.slots
            .iter()
            .filter(move |s| self.live_slot(s, now_ms))
            .map(move |s| RemoteEntry {
                vni: s.vni,
                mac: s.mac,
                remote_ip: s.remote,
                inner_ip: s.inner_ip,
                is_static: s.kind == Kind::Static,
                age_secs: match s.kind {
                    Kind::Static => 0,
                    _ => now_ms.saturating_sub(s.last_seen_ms) / 1000,
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap_or_default()
    }

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([0x02, 0x42, b[0], b[1], b[2], b[3]])
    }

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

    fn small(capacity: u32, vni_limit: u32, remote_limit: u32) -> RemoteFdb {
        RemoteFdb::new(RemoteFdbConfig {
            ageing_secs: 10,
            capacity,
            vni_limit,
            remote_limit,
        })
    }

    #[test]
    fn learn_lookup_refresh_move_and_age() {
        let mut f = RemoteFdb::new(RemoteFdbConfig::default());
        assert_eq!(f.config().ageing_secs, 300, "as the switch's FDB");
        let (v, m) = (vni(4096), mac(1));
        assert_eq!(f.learn(v, m, A, 0), Ok(Learn::Learned));
        assert_eq!(f.lookup(v, m, 1), Some(A));
        assert_eq!(f.lookup(vni(4097), m, 1), None, "VNIs are separate");
        assert_eq!(f.learn(v, m, A, 200_000), Ok(Learn::Refreshed));
        assert_eq!(f.lookup(v, m, 500_000), Some(A), "refreshed at 200 s");
        assert_eq!(f.learn(v, m, B, 500_000), Ok(Learn::Moved { from: A }));
        assert_eq!((f.learnt_from(v, A), f.learnt_from(v, B)), (0, 1));
        assert_eq!(f.lookup(v, m, 800_001), None, "aged out after 300 s");
        assert_eq!(f.len(), 1, "until swept");
        assert_eq!(f.expire(800_001, 10), 1);
        assert!(f.is_empty());
        assert_eq!((f.len_of(v), f.learnt_from(v, B)), (0, 0));
        assert_eq!(f.learn(v, Mac::BROADCAST, A, 0), Ok(Learn::Ignored));
        assert_eq!(f.learn(v, Mac([0; 6]), A, 0), Ok(Learn::Ignored));
        assert!(f.is_empty());
    }

    #[test]
    fn limits_per_table_vni_and_remote() {
        let mut f = small(6, 4, 2);
        let v = vni(1);
        assert_eq!(f.learn(v, mac(1), A, 0), Ok(Learn::Learned));
        assert_eq!(f.learn(v, mac(2), A, 0), Ok(Learn::Learned));
        assert_eq!(
            f.learn(v, mac(3), A, 0),
            Err(VxlanDrop::FdbFull),
            "A's share"
        );
        assert_eq!(f.learn(v, mac(3), B, 0), Ok(Learn::Learned));
        assert_eq!(f.learn(v, mac(4), B, 0), Ok(Learn::Learned));
        assert_eq!(
            f.learn(v, mac(5), Ipv4Addr::new(198, 18, 0, 9), 0),
            Err(VxlanDrop::FdbFull),
            "VNI share"
        );
        assert_eq!(
            f.add_static(v, mac(5), A, None),
            Err(StaticError::VniFull { vni: v, limit: 4 })
        );
        assert_eq!(f.learn(vni(2), mac(1), A, 0), Ok(Learn::Learned));
        assert_eq!(f.learn(vni(2), mac(2), A, 0), Ok(Learn::Learned));
        assert_eq!(
            f.learn(vni(3), mac(1), A, 0),
            Err(VxlanDrop::FdbFull),
            "table capacity"
        );
        assert_eq!(
            f.add_static(vni(3), mac(1), A, None),
            Err(StaticError::Full(6))
        );
        // Moving to a VTEP at its share: the stale entry goes.
        assert_eq!(f.learn(v, mac(1), B, 0), Err(VxlanDrop::FdbFull));
        assert_eq!(f.lookup(v, mac(1), 0), None);
        assert_eq!(
            (f.learnt_from(v, A), f.learnt_from(v, B), f.len()),
            (1, 2, 5)
        );
    }

    #[test]
    fn static_entries_never_age_nor_move() {
        let mut f = small(8, 8, 8);
        let v = vni(7);
        let inner = Some(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(f.learn(v, mac(1), B, 0), Ok(Learn::Learned));
        assert_eq!(
            f.add_static(v, mac(1), A, inner),
            Ok(()),
            "learnt becomes static"
        );
        assert_eq!(f.learnt_from(v, B), 0);
        assert_eq!(f.learn(v, mac(1), A, 5), Ok(Learn::Static));
        assert_eq!(f.learn(v, mac(1), B, 5), Err(VxlanDrop::StaticConflict));
        assert_eq!(f.expire(10_000_000, 100), 0);
        assert_eq!(f.lookup(v, mac(1), 10_000_000), Some(A));
        let e: Vec<_> = f.entries(10_000_000).collect();
        assert_eq!(
            e,
            [RemoteEntry {
                vni: v,
                mac: mac(1),
                remote_ip: A,
                inner_ip: inner,
                is_static: true,
                age_secs: 0
            }]
        );
        assert_eq!(
            f.add_static(v, Mac::BROADCAST, A, None),
            Err(StaticError::NotUnicast(Mac::BROADCAST))
        );
        assert!(!f.remove_static(v, mac(2)));
        assert_eq!(f.learn(v, mac(2), B, 0), Ok(Learn::Learned));
        assert!(!f.remove_static(v, mac(2)), "learnt entries are not static");
        assert!(f.remove_static(v, mac(1)));
        assert_eq!(f.lookup(v, mac(1), 0), None);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn flushes_and_listing() {
        let mut f = small(16, 16, 16);
        for i in 0..4 {
            assert!(
                f.learn(vni(1), mac(i), if i % 2 == 0 { A } else { B }, 1000)
                    .is_ok()
            );
            assert!(f.learn(vni(2), mac(i), A, 1000).is_ok());
        }
        assert_eq!(f.add_static(vni(1), mac(9), A, None), Ok(()));
        assert_eq!(f.forget_remote(vni(1), A), 2, "learnt behind A in VNI 1");
        assert_eq!(f.lookup(vni(1), mac(9), 0), Some(A), "static stays");
        assert_eq!(f.flush_vni(vni(2)), 4);
        let mut e: Vec<_> = f
            .entries(4500)
            .map(|e| (e.mac, e.remote_ip, e.is_static, e.age_secs))
            .collect();
        e.sort();
        assert_eq!(
            e,
            [
                (mac(1), B, false, 3),
                (mac(3), B, false, 3),
                (mac(9), A, true, 0)
            ]
        );
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn expiry_is_bounded_per_call() {
        let mut f = small(1000, 1000, 1000);
        for i in 0..1000 {
            assert!(f.learn(vni(1), mac(i), A, 0).is_ok());
        }
        assert_eq!(f.expire(20_000, 100), 100);
        assert_eq!(f.len(), 900);
        let mut calls = 1;
        while !f.is_empty() {
            assert!(f.expire(20_000, 100) <= 100);
            calls += 1;
        }
        assert_eq!(calls, 10);
        assert_eq!(f.expire(20_000, 100), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Learn { v: u32, m: u32, r: u8, dt: u64 },
        Static { v: u32, m: u32, r: u8 },
        Unstatic { v: u32, m: u32 },
        Expire { dt: u64, budget: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u32..3, 0u32..40, 0u8..4, 0u64..3000).prop_map(|(v, m, r, dt)| Op::Learn { v, m, r, dt }),
            1 => (0u32..3, 0u32..40, 0u8..4).prop_map(|(v, m, r)| Op::Static { v, m, r }),
            1 => (0u32..3, 0u32..40).prop_map(|(v, m)| Op::Unstatic { v, m }),
            2 => (0u64..8000, 0usize..20).prop_map(|(dt, budget)| Op::Expire { dt, budget }),
        ]
    }

    proptest! {
        #[test]
        fn limits_hold_and_statics_survive(ops in proptest::collection::vec(op(), 1..300)) {
            let cfg = RemoteFdbConfig { ageing_secs: 5, capacity: 30, vni_limit: 14, remote_limit: 6 };
            let mut f = RemoteFdb::new(cfg);
            let mut statics: std::collections::HashMap<(u32, u32), Ipv4Addr> = Default::default();
            let mut now = 0u64;
            let remote = |r: u8| Ipv4Addr::new(198, 18, 1, r);
            for op in ops {
                match op {
                    Op::Learn { v, m, r, dt } => {
                        now += dt;
                        let res = f.learn(vni(v), mac(m), remote(r), now);
                        if let Some(&at) = statics.get(&(v, m)) {
                            let want = if at == remote(r) { Ok(Learn::Static) } else { Err(VxlanDrop::StaticConflict) };
                            prop_assert_eq!(res, want);
                        } else if res.is_ok() {
                            prop_assert_eq!(f.lookup(vni(v), mac(m), now), Some(remote(r)));
                        }
                    }
                    Op::Static { v, m, r } => {
                        if f.add_static(vni(v), mac(m), remote(r), None).is_ok() {
                            statics.insert((v, m), remote(r));
                        }
                    }
                    Op::Unstatic { v, m } => {
                        prop_assert_eq!(f.remove_static(vni(v), mac(m)), statics.remove(&(v, m)).is_some());
                    }
                    Op::Expire { dt, budget } => {
                        now += dt;
                        f.expire(now, budget);
                    }
                }
                prop_assert!(f.len() <= cfg.capacity as usize);
                prop_assert!(f.slots.len() <= cfg.capacity as usize);
                prop_assert_eq!(f.index.len(), f.len());
                for v in 0..3 {
                    prop_assert!(f.len_of(vni(v)) <= cfg.vni_limit);
                    for r in 0..4 {
                        prop_assert!(f.learnt_from(vni(v), remote(r)) <= cfg.remote_limit);
                    }
                }
                for (&(v, m), &at) in &statics {
                    prop_assert_eq!(f.lookup(vni(v), mac(m), now), Some(at), "static survives");
                }
                // The counters agree with the entries.
                let mut per_remote: std::collections::HashMap<(Vni, Ipv4Addr), u32> = Default::default();
                for s in f.slots.iter().filter(|s| s.kind == Kind::Learnt) {
                    *per_remote.entry((s.vni, s.remote)).or_default() += 1;
                }
                for (k, n) in &per_remote {
                    prop_assert_eq!(f.learnt_from(k.0, k.1), *n);
                }
                prop_assert_eq!(per_remote.len(), f.per_remote.len());
            }
        }
    }
}
