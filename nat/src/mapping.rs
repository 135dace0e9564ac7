//! NAT mappings, as RFC 4787 and RFC 5382 ask of a NAT: endpoint-independent (one inside
//! address and port keeps one outside port whatever the destination), the inside port kept
//! when it is free and in this worker's range, and a mapping outliving its last connection by
//! a linger time. A mapping lives in a slot indexed by (protocol, outside port), so whether a
//! port is free is one load, and a new port is found by a bounded number of random probes
//! (never a scan of the range: a crowded range is a counted drop, not a stalled worker).
//!
//! Owned by one worker's [`Conntrack`](crate::conntrack::Conntrack); not `Sync`.

use hashbrown::HashTable;
use xvs_stage::wire::ipproto;

use crate::drop::NatDrop;
use crate::ports::PortRange;
use xvs_stage::hash::{SplitMix, hash2};

/// Consecutive slots examined from each random probe position.
pub const PROBE_WINDOW: u32 = 8;

/// Protocols with their own port space: TCP, UDP, ICMP (echo identifiers).
const PROTOS: u32 = 3;

/// The port space of `proto`.
#[inline]
fn space(proto: u8) -> Option<u32> {
    match proto {
        ipproto::TCP => Some(0),
        ipproto::UDP => Some(1),
        ipproto::ICMP => Some(2),
        _ => None,
    }
}

const SPACE_PROTO: [u8; PROTOS as usize] = [ipproto::TCP, ipproto::UDP, ipproto::ICMP];

/// One mapping: the inside endpoint an outside port stands for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mapping {
    /// In use.
    pub live: bool,
    /// Inside address (host order).
    pub inside_addr: u32,
    /// Inside port (ICMP: identifier).
    pub inside_port: u16,
    /// The inside endpoint's zone.
    pub zone: u16,
    /// Connections using the mapping.
    pub sessions: u32,
    /// With no connection left: when the mapping may be reclaimed (ms).
    pub expires_ms: u64,
}

impl Mapping {
    /// In use and not expired.
    #[inline]
    fn usable(&self, now_ms: u64) -> bool {
        self.live && (self.sessions > 0 || self.expires_ms > now_ms)
    }
}

/// A mapping as listings show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingView {
    /// Protocol.
    pub proto: u8,
    /// Outside port.
    pub outside_port: u16,
    /// The mapping.
    pub mapping: Mapping,
}

/// This worker's mappings over its port range.
#[derive(Debug)]
pub struct Mappings {
    range: PortRange,
    slots: Vec<Mapping>,
    by_inside: HashTable<u32>,
    seed: u64,
    live: u32,
    cursor: u32,
}

/// Where a new connection's source goes: a mapping slot and its outside port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The mapping's id.
    pub id: u32,
    /// The outside port.
    pub port: u16,
}

impl Mappings {
    /// Mappings over `range`, hashing with `seed`; every slot allocated now (12 bytes of
    /// index and 24 of slot per port and protocol), never on the fast path.
    pub fn new(range: PortRange, seed: u64) -> Mappings {
        let n = (range.len() * PROTOS) as usize;
        Mappings {
            range,
            slots: vec![Mapping::default(); n],
            by_inside: HashTable::with_capacity(n),
            seed,
            live: 0,
            cursor: 0,
        }
    }

    /// The worker's port range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Mappings in use (expired ones not yet reclaimed included).
    pub fn len(&self) -> u32 {
        self.live
    }

    /// True when no mapping is in use.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    #[inline]
    fn id(&self, proto: u8, port: u16) -> Option<u32> {
        let s = space(proto)?;
        self.range
            .contains(port)
            .then(|| s * self.range.len() + u32::from(port - self.range.first))
    }

    /// (protocol, outside port) of a slot.
    #[inline]
    fn port_of(&self, id: u32) -> (u8, u16) {
        let len = self.range.len();
        (
            SPACE_PROTO[(id / len) as usize % PROTOS as usize],
            (u32::from(self.range.first) + id % len) as u16,
        )
    }

    #[inline]
    fn inside_hash(seed: u64, proto: u8, addr: u32, port: u16) -> u64 {
        hash2(
            seed,
            (u64::from(addr) << 16) | u64::from(port),
            u64::from(proto),
        )
    }

    /// The mapping of an outside port, if in use.
    #[inline]
    pub fn at_port(&self, proto: u8, port: u16, now_ms: u64) -> Option<&Mapping> {
        let m = self.slots.get(self.id(proto, port)? as usize)?;
        m.usable(now_ms).then_some(m)
    }

    /// The mapping of an inside endpoint (in use or lingering, not yet reclaimed).
    fn find_inside(&self, proto: u8, addr: u32, port: u16) -> Option<u32> {
        let h = Self::inside_hash(self.seed, proto, addr, port);
        let slots = &self.slots;
        let range_len = self.range.len();
        self.by_inside
            .find(h, |&id| {
                let m = &slots[id as usize];
                m.inside_addr == addr
                    && m.inside_port == port
                    && SPACE_PROTO[(id / range_len) as usize % PROTOS as usize] == proto
            })
            .copied()
    }

    /// The outside port for a new connection from `addr:port`: its existing mapping (even one
    /// lingering past its last connection), else `port` itself when free and in range, else
    /// up to `probes` random positions and the [`PROBE_WINDOW`] slots after each (at most
    /// `probes * PROBE_WINDOW` slots examined). `reserved` says which ports are not this
    /// table's to give (published ports). With `commit` the connection is attached to the
    /// mapping ([`Mappings::detach`] when it ends); without (a dry run) nothing is taken.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn allocate(
        &mut self,
        proto: u8,
        addr: u32,
        port: u16,
        zone: u16,
        now_ms: u64,
        probes: u32,
        rng: &mut SplitMix,
        reserved: impl Fn(u16) -> bool,
        commit: bool,
    ) -> Result<Allocation, NatDrop> {
        if let Some(id) = self.find_inside(proto, addr, port) {
            if commit {
                self.slots[id as usize].sessions += 1;
            }
            return Ok(Allocation {
                id,
                port: self.port_of(id).1,
            });
        }
        let free = |s: &Self, p: u16| -> Option<u32> {
            let id = s.id(proto, p)?;
            (!s.slots[id as usize].usable(now_ms) && !reserved(p)).then_some(id)
        };
        let mut found = free(self, port).map(|id| (id, port));
        let len = self.range.len();
        let mut tries = 0;
        'probe: while found.is_none() && tries < probes && len > 0 {
            // A random start, then the next few slots (the same cache lines): at 97% full, 32
            // starts of 8 find a port but for 1 allocation in 2500.
            let start = rng.below(len);
            for k in 0..PROBE_WINDOW.min(len) {
                let p = (u32::from(self.range.first) + (start + k) % len) as u16;
                if let Some(id) = free(self, p) {
                    found = Some((id, p));
                    break 'probe;
                }
            }
            tries += 1;
        }
        let (id, port_out) = found.ok_or(NatDrop::PortsExhausted)?;
        if commit {
            self.reclaim(id);
            self.slots[id as usize] = Mapping {
                live: true,
                inside_addr: addr,
                inside_port: port,
                zone,
                sessions: 1,
                expires_ms: now_ms,
            };
            let h = Self::inside_hash(self.seed, proto, addr, port);
            let (seed, slots, range_len) = (self.seed, &self.slots, len);
            self.by_inside.insert_unique(h, id, |&i| {
                let m = &slots[i as usize];
                let proto = SPACE_PROTO[(i / range_len) as usize % PROTOS as usize];
                Self::inside_hash(seed, proto, m.inside_addr, m.inside_port)
            });
            self.live += 1;
        }
        Ok(Allocation { id, port: port_out })
    }

    /// Frees slot `id` if in use (an expired mapping whose port is given to someone else).
    fn reclaim(&mut self, id: u32) {
        let Some(m) = self.slots.get(id as usize).copied() else {
            return;
        };
        if !m.live {
            return;
        }
        let proto = self.port_of(id).0;
        let h = Self::inside_hash(self.seed, proto, m.inside_addr, m.inside_port);
        if let Ok(e) = self.by_inside.find_entry(h, |&i| i == id) {
            e.remove();
        }
        self.slots[id as usize] = Mapping::default();
        self.live -= 1;
    }

    /// A connection using mapping `id` ended at `now_ms`; with none left the mapping lingers
    /// `linger_ms`.
    #[inline]
    pub(crate) fn detach(&mut self, id: u32, now_ms: u64, linger_ms: u64) {
        if let Some(m) = self.slots.get_mut(id as usize) {
            m.sessions = m.sessions.saturating_sub(1);
            if m.sessions == 0 {
                m.expires_ms = now_ms + linger_ms;
            }
        }
    }

    /// Reclaims expired mappings among the next `budget` slots (bounded work per tick).
    pub fn sweep(&mut self, now_ms: u64, budget: u32) -> u32 {
        let n = self.slots.len() as u32;
        let mut reclaimed = 0;
        for _ in 0..budget.min(n) {
            let id = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            let m = self.slots[id as usize];
            if m.live && !m.usable(now_ms) {
                self.reclaim(id);
                reclaimed += 1;
            }
        }
        reclaimed
    }

    /// Every mapping in use at `now_ms`.
    pub fn iter(&self, now_ms: u64) -> impl Iterator<Item = MappingView> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(move |(_, m)| m.usable(now_ms))
            .map(|(id, m)| {
                let (proto, outside_port) = self.port_of(id as u32);
                MappingView {
                    proto,
                    outside_port,
                    mapping: *m,
                }
            })
    }

    /// Forgets every mapping.
    pub fn flush(&mut self) {
        self.slots.fill(Mapping::default());
        self.by_inside.clear();
        self.live = 0;
    }

    /// Bytes held (slots and index).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Mapping>()
            + self.by_inside.capacity() * (size_of::<u32>() + 1) * 8 / 7
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = ipproto::TCP;

    fn alloc(
        m: &mut Mappings,
        rng: &mut SplitMix,
        addr: u32,
        port: u16,
        now: u64,
    ) -> Result<Allocation, NatDrop> {
        m.allocate(TCP, addr, port, 1, now, 16, rng, |_| false, true)
    }

    #[test]
    fn the_inside_port_is_kept_when_free_and_one_endpoint_keeps_one_port() {
        let mut m = Mappings::new(PortRange::new(40000, 40999), 1);
        let mut rng = SplitMix::new(2);
        let a =
            alloc(&mut m, &mut rng, 0x0a00_0002, 40001, 0).unwrap_or(Allocation { id: 0, port: 0 });
        assert_eq!(a.port, 40001, "kept");
        assert_eq!(
            alloc(&mut m, &mut rng, 0x0a00_0002, 40001, 5),
            Ok(a),
            "same endpoint, same port"
        );
        let b = alloc(&mut m, &mut rng, 0x0a00_0003, 40001, 5).unwrap_or(a);
        assert_ne!(
            b.port, 40001,
            "another endpoint with the same port gets another"
        );
        assert!(m.range().contains(b.port));
        let c = alloc(&mut m, &mut rng, 0x0a00_0003, 80, 5).unwrap_or(a);
        assert!(
            m.range().contains(c.port),
            "a port outside the range is not kept"
        );
        assert_eq!(
            m.at_port(TCP, 40001, 5).map(|x| x.inside_addr),
            Some(0x0a00_0002)
        );
        assert!(
            m.at_port(ipproto::UDP, 40001, 5).is_none(),
            "protocols have their own ports"
        );
    }

    #[test]
    fn mappings_linger_after_their_last_connection_then_are_reclaimed() {
        let mut m = Mappings::new(PortRange::new(1000, 1009), 1);
        let mut rng = SplitMix::new(3);
        let a = alloc(&mut m, &mut rng, 7, 1005, 0).unwrap_or(Allocation { id: 0, port: 0 });
        m.detach(a.id, 1000, 120_000);
        assert!(m.at_port(TCP, 1005, 120_999).is_some(), "lingers");
        assert_eq!(
            alloc(&mut m, &mut rng, 7, 1005, 100_000).map(|x| x.port),
            Ok(1005)
        );
        m.detach(a.id, 1000, 120_000);
        assert!(m.at_port(TCP, 1005, 121_000).is_none(), "expired");
        assert_eq!(m.sweep(121_000, 100), 1);
        assert!(m.is_empty());
        // An expired mapping's port goes to the next endpoint that wants it.
        let b = alloc(&mut m, &mut rng, 8, 1005, 200_000).unwrap_or(a);
        assert_eq!(b.port, 1005);
    }

    /// Gives inside hosts 100.. their own port 2000.. (each kept), `n` of them.
    fn fill(m: &mut Mappings, n: u32, rng: &mut SplitMix) {
        for i in 0..n {
            let a = m.allocate(
                TCP,
                100 + i,
                2000 + i as u16,
                1,
                0,
                16,
                rng,
                |_| false,
                true,
            );
            assert!(a.is_ok(), "port {} of {n}", 2000 + i);
        }
    }

    #[test]
    fn a_crowded_range_is_probed_a_bounded_number_of_times() {
        let mut m = Mappings::new(PortRange::new(2000, 2063), 9);
        let mut rng = SplitMix::new(4);
        fill(&mut m, 64, &mut rng);
        let probes = std::cell::Cell::new(0u32);
        let r = m.allocate(
            TCP,
            999,
            5,
            1,
            0,
            16,
            &mut rng,
            |_| {
                probes.set(probes.get() + 1);
                false
            },
            true,
        );
        assert_eq!(r, Err(NatDrop::PortsExhausted));
        assert_eq!(
            probes.get(),
            0,
            "every probe hit a used slot before asking about reservations"
        );
        // Nearly full: 1 free port of 64; a bounded number of probes, success or a counted drop.
        let mut m = Mappings::new(PortRange::new(2000, 2063), 9);
        fill(&mut m, 63, &mut rng);
        let asked = std::cell::Cell::new(0u32);
        let r = m.allocate(
            TCP,
            999,
            5,
            1,
            0,
            16,
            &mut rng,
            |_| {
                asked.set(asked.get() + 1);
                false
            },
            true,
        );
        assert!(asked.get() <= 1);
        assert!(r.is_ok() || r == Err(NatDrop::PortsExhausted));
    }

    #[test]
    fn reserved_ports_are_never_given_and_dry_runs_take_nothing() {
        let mut m = Mappings::new(PortRange::new(3000, 3001), 1);
        let mut rng = SplitMix::new(5);
        let r = m.allocate(TCP, 1, 3000, 1, 0, 8, &mut rng, |p| p == 3000, false);
        assert_eq!(r.map(|a| a.port), Ok(3001));
        assert!(m.is_empty(), "dry run");
        assert_eq!(
            m.allocate(TCP, 1, 3000, 1, 0, 8, &mut rng, |_| true, true),
            Err(NatDrop::PortsExhausted)
        );
        m.allocate(TCP, 1, 3000, 1, 0, 8, &mut rng, |_| false, true)
            .unwrap_or(Allocation { id: 0, port: 0 });
        assert_eq!(m.iter(0).count(), 1);
        m.flush();
        assert_eq!(m.iter(0).count(), 0);
    }
}
