//! The session table: a slab of sessions (fixed capacity, allocated when the table is made)
//! and one hash index holding each session twice, under its original and its reply tuple, so
//! a packet finds its connection from either direction with one probe. Expiry is lazy (a
//! lookup that finds an expired session treats it as gone) plus a bounded sweep per tick
//! (a cursor over the slab), never a scan of the table on the fast path.
//!
//! Owned by one worker's [`Conntrack`](crate::conntrack::Conntrack); not `Sync`.

use hashbrown::HashTable;

use crate::state::ConnState;
use crate::tuple::{Dir, Tuple};

/// No zone: the side is outside.
pub(crate) const NO_ZONE: u16 = u16::MAX;
/// No mapping: the connection's source is not translated.
pub(crate) const NO_MAPPING: u32 = u32::MAX;
/// The index entry names the reply direction.
const REPLY_BIT: u32 = 1 << 31;

/// One connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Session {
    /// The first packet's tuple, as it arrived.
    pub orig: Tuple,
    /// The tuple a reply arrives with (after NAT of the original direction).
    pub reply: Tuple,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When it expires unless refreshed (ms).
    pub expires_ms: u64,
    /// The source mapping it holds, or [`NO_MAPPING`].
    pub mapping: u32,
    /// Zone of the originator when inside, else [`NO_ZONE`].
    pub orig_zone: u16,
    /// Zone of the responder when inside (DNAT, hairpin), else [`NO_ZONE`].
    pub reply_zone: u16,
    /// Its state.
    pub state: ConnState,
    /// TCP: who sent the first FIN.
    pub fin_by: Dir,
    /// In use (a free slot is not).
    pub live: bool,
}

impl Session {
    pub const FREE: Session = Session {
        orig: Tuple {
            src: 0,
            dst: 0,
            sport: 0,
            dport: 0,
            proto: 0,
        },
        reply: Tuple {
            src: 0,
            dst: 0,
            sport: 0,
            dport: 0,
            proto: 0,
        },
        created_ms: 0,
        expires_ms: 0,
        mapping: NO_MAPPING,
        orig_zone: NO_ZONE,
        reply_zone: NO_ZONE,
        state: ConnState::Close,
        fin_by: Dir::Original,
        live: false,
    };

    /// The inside endpoint that the per-endpoint limit counts the session against.
    #[inline]
    pub fn endpoint(&self) -> (u16, u32) {
        if self.orig_zone != NO_ZONE {
            (self.orig_zone, self.orig.src)
        } else {
            (self.reply_zone, self.reply.src)
        }
    }

    /// The tuple of `dir`.
    #[inline]
    pub fn tuple(&self, dir: Dir) -> &Tuple {
        match dir {
            Dir::Original => &self.orig,
            Dir::Reply => &self.reply,
        }
    }
}

/// An index entry: a tuple and the session (and direction) it belongs to.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tuple: Tuple,
    slot: u32,
}

/// Sessions and their index.
#[derive(Debug)]
pub(crate) struct Table {
    sessions: Vec<Session>,
    free: Vec<u32>,
    index: HashTable<Entry>,
    seed: u64,
    capacity: u32,
    live: u32,
    cursor: u32,
}

impl Table {
    /// A table for `capacity` sessions; the index and the slab are reserved now (pages are
    /// touched as sessions arrive), so the fast path never grows them.
    pub fn new(capacity: u32, seed: u64) -> Table {
        let cap = capacity as usize;
        Table {
            sessions: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            index: HashTable::with_capacity(cap * 2),
            seed,
            capacity,
            live: 0,
            cursor: 0,
        }
    }

    /// Sessions in the table (expired ones not yet swept included).
    #[inline]
    pub fn len(&self) -> u32 {
        self.live
    }

    /// Whether no more session fits.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.live >= self.capacity
    }

    /// The session and direction `t` belongs to.
    #[inline]
    pub fn lookup(&self, t: &Tuple) -> Option<(u32, Dir)> {
        let e = self.index.find(t.hash(self.seed), |e| e.tuple == *t)?;
        let dir = if e.slot & REPLY_BIT != 0 {
            Dir::Reply
        } else {
            Dir::Original
        };
        Some((e.slot & !REPLY_BIT, dir))
    }

    /// Session `id`.
    #[inline]
    pub fn get(&self, id: u32) -> &Session {
        &self.sessions[id as usize]
    }

    /// Session `id`, to update its state and timer.
    #[inline]
    pub fn get_mut(&mut self, id: u32) -> &mut Session {
        &mut self.sessions[id as usize]
    }

    /// Adds `s` (its two tuples not yet indexed: the caller checked); `None` when full.
    pub fn insert(&mut self, s: Session) -> Option<u32> {
        if self.is_full() {
            return None;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.sessions[id as usize] = s;
                id
            }
            None => {
                self.sessions.push(s);
                (self.sessions.len() - 1) as u32
            }
        };
        let seed = self.seed;
        let rehash = move |e: &Entry| e.tuple.hash(seed);
        self.index.insert_unique(
            s.orig.hash(seed),
            Entry {
                tuple: s.orig,
                slot: id,
            },
            rehash,
        );
        self.index.insert_unique(
            s.reply.hash(seed),
            Entry {
                tuple: s.reply,
                slot: id | REPLY_BIT,
            },
            rehash,
        );
        self.live += 1;
        Some(id)
    }

    /// Removes session `id`, returning it.
    pub fn remove(&mut self, id: u32) -> Session {
        let s = self.sessions[id as usize];
        if !s.live {
            return s;
        }
        for (t, slot) in [(s.orig, id), (s.reply, id | REPLY_BIT)] {
            if let Ok(e) = self.index.find_entry(t.hash(self.seed), |e| e.slot == slot) {
                e.remove();
            }
        }
        self.sessions[id as usize] = Session::FREE;
        self.free.push(id);
        self.live -= 1;
        s
    }

    /// Removes expired sessions among the next `budget` slots, giving each to `gone`.
    pub fn sweep(&mut self, now_ms: u64, budget: u32, mut gone: impl FnMut(Session)) -> u32 {
        let n = self.sessions.len() as u32;
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            self.cursor = if self.cursor + 1 >= n {
                0
            } else {
                self.cursor + 1
            };
            let s = &self.sessions[self.cursor as usize];
            if s.live && s.expires_ms <= now_ms {
                gone(self.remove(self.cursor));
                removed += 1;
            }
        }
        removed
    }

    /// Every session in use (expired or not).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Session)> {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, s)| (i as u32, s))
    }

    /// Forgets every session (capacity kept).
    pub fn clear(&mut self) {
        self.sessions.clear();
        self.free.clear();
        self.index.clear();
        self.live = 0;
        self.cursor = 0;
    }

    /// Bytes reserved: the slab, the free list, and the index (buckets of 20 bytes and a
    /// control byte, at hashbrown's 7/8 load, in powers of two).
    pub fn memory_bytes(&self) -> usize {
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two();
        self.sessions.capacity() * size_of::<Session>()
            + self.free.capacity() * size_of::<u32>()
            + buckets * (size_of::<Entry>() + 1)
    }

    /// Bytes per session at full capacity.
    pub fn bytes_per_session(&self) -> usize {
        self.memory_bytes() / (self.capacity.max(1) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u32, expires_ms: u64) -> Session {
        let orig = Tuple {
            src: n,
            dst: 7,
            sport: 1,
            dport: 2,
            proto: 6,
        };
        Session {
            orig,
            reply: Tuple {
                src: 7,
                dst: 1000 + n,
                ..orig.inverse()
            },
            expires_ms,
            live: true,
            orig_zone: 1,
            ..Session::FREE
        }
    }

    #[test]
    fn both_directions_find_the_session_and_removal_forgets_both() {
        let mut t = Table::new(4, 1);
        let s = session(1, 10);
        let id = t.insert(s).unwrap_or(u32::MAX);
        assert_eq!(t.lookup(&s.orig), Some((id, Dir::Original)));
        assert_eq!(t.lookup(&s.reply), Some((id, Dir::Reply)));
        assert_eq!(t.lookup(&s.orig.inverse()), None);
        assert_eq!(t.get(id).endpoint(), (1, 1));
        assert_eq!(t.remove(id), s);
        assert_eq!(
            (t.lookup(&s.orig), t.lookup(&s.reply), t.len()),
            (None, None, 0)
        );
    }

    #[test]
    fn capacity_is_fixed_and_slots_are_reused() {
        let mut t = Table::new(2, 1);
        let a = t.insert(session(1, 10));
        assert!(t.insert(session(2, 10)).is_some());
        assert_eq!(t.insert(session(3, 10)), None, "full");
        t.remove(a.unwrap_or(0));
        assert_eq!(t.insert(session(3, 10)), a, "the freed slot");
        assert!(t.memory_bytes() > 0);
    }

    #[test]
    fn the_sweep_does_bounded_work_and_removes_only_expired_sessions() {
        let mut t = Table::new(100, 1);
        for i in 0..100 {
            t.insert(session(i, if i % 2 == 0 { 5 } else { 50 }));
        }
        let mut gone = 0;
        assert_eq!(t.sweep(10, 10, |_| gone += 1), 5);
        assert_eq!(gone, 5);
        let mut total = 5;
        for _ in 0..20 {
            total += t.sweep(10, 10, |_| {});
        }
        assert_eq!(total, 50);
        assert_eq!(t.len(), 50);
        assert!(t.iter().all(|(_, s)| s.expires_ms == 50));
    }
}
