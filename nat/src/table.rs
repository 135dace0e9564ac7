//! The session table: a slab of sessions (fixed capacity, allocated when the table is made)
//! and one hash index holding each session twice, under its original and its reply tuple, so
//! a packet finds its connection from either direction with one probe. Expiry is lazy (a
//! lookup that finds an expired session treats it as gone) plus a bounded sweep per tick
//! (a cursor over the slab), never a scan of the table on the fast path.
//!
//! Owned by one worker's [`Conntrack`](crate::conntrack::Conntrack); not `Sync`.

use crate::state::ConnState;
use crate::tuple::{Dir, Tuple};

/// No zone: the side is outside.
pub(crate) const NO_ZONE: u16 = u16::MAX;
/// No mapping: the connection's source is not translated.
pub(crate) const NO_MAPPING: u32 = u32::MAX;
/// The index entry names the reply direction.
const REPLY_BIT: u32 = 1 << 31;
/// Lookups [`Table::warm`] overlaps at a time.
const WARM_BURST: usize = 32;

/// A slot's session and direction.
#[inline]
fn split(slot: u32) -> (u32, Dir) {
    let dir = if slot & REPLY_BIT != 0 {
        Dir::Reply
    } else {
        Dir::Original
    };
    (slot & !REPLY_BIT, dir)
}

/// One connection: one cache line (aligned, so a lookup's read of it is one miss, not two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(align(64))]
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

/// Index entries per bucket; the bucket's eighth word counts entries that probed past it.
const WAYS: usize = 7;
/// Words per bucket: one 64-byte cache line.
const WORDS: usize = 8;

/// The index: buckets of one cache line, each `WAYS` entries of `tag << 32 | slot + 1` (`slot`
/// with [`REPLY_BIT`] for the reply tuple; `0` is empty) and an overflow count. Entries name a
/// session, not a tuple: a tag match is confirmed against the session's tuple, so a packet
/// costs one miss in the index and one in the slab. Linear probing over buckets; a lookup
/// stops at the first bucket that nothing probed past (no tombstones: a removal decrements
/// the counts on its path).
#[derive(Debug)]
struct Index {
    /// Zeroed, and resident from the start; `base` words in, the first bucket starts on a
    /// cache line.
    words: Vec<u64>,
    base: usize,
    mask: usize,
}

impl Index {
    fn new(entries: usize) -> Index {
        // At most 3/4 of the ways used, in a power of two of buckets.
        let buckets = (entries * 4 / 3 / WAYS + 1).next_power_of_two().max(2);
        // Every page touched now: a new connection lands in a random bucket, and lazily
        // mapped pages would page-fault on the worker (a 4 KiB zeroing in the datapath) and
        // make the process grow for as long as new buckets are hit (RSS still rising after
        // 10 minutes of churn, bench/reliability/soak.sh). black_box: the allocator's zeroed
        // pages must really be written to, not proven zero and skipped.
        let mut words = std::hint::black_box(vec![0u64; buckets * WORDS + WORDS]);
        for w in words.iter_mut().step_by(4096 / size_of::<u64>()) {
            *w = 0;
        }
        std::hint::black_box(&mut words);
        let base = (words.as_ptr() as usize).wrapping_neg() % 64 / size_of::<u64>();
        Index {
            words,
            base,
            mask: buckets - 1,
        }
    }

    /// The home bucket and tag of hash `h` (tags are odd: never an empty entry's).
    #[inline]
    fn place(&self, h: u64) -> (usize, u64) {
        ((h as usize) & self.mask, (h >> 32) | 1)
    }

    #[inline]
    fn bucket(&self, b: usize) -> &[u64] {
        let at = self.base + b * WORDS;
        &self.words[at..at + WORDS]
    }

    /// The first word of `h`'s home bucket (reading it brings the line in).
    #[inline]
    fn touch(&self, h: u64) -> u64 {
        self.words[self.base + self.place(h).0 * WORDS]
    }

    /// The first slot whose entry has `h`'s tag and satisfies `hit`.
    #[inline]
    fn find(&self, h: u64, mut hit: impl FnMut(u32) -> bool) -> Option<u32> {
        let (mut b, tag) = self.place(h);
        loop {
            let bucket = self.bucket(b);
            for &e in &bucket[..WAYS] {
                if e >> 32 == tag && hit((e as u32).wrapping_sub(1)) {
                    return Some((e as u32).wrapping_sub(1));
                }
            }
            if bucket[WAYS] == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Adds `slot` under `h` (there is room: the table's capacity bounds the entries).
    fn insert(&mut self, h: u64, slot: u32) {
        let (mut b, tag) = self.place(h);
        let e = tag << 32 | u64::from(slot + 1);
        loop {
            let at = self.base + b * WORDS;
            if let Some(w) = self.words[at..at + WAYS].iter_mut().find(|w| **w == 0) {
                *w = e;
                return;
            }
            self.words[at + WAYS] += 1;
            b = (b + 1) & self.mask;
        }
    }

    /// Removes `slot`'s entry under `h`, if there is one.
    fn remove(&mut self, h: u64, slot: u32) {
        let (home, tag) = self.place(h);
        let e = tag << 32 | u64::from(slot + 1);
        let mut b = home;
        loop {
            let at = self.base + b * WORDS;
            if let Some(i) = self.words[at..at + WAYS].iter().position(|w| *w == e) {
                self.words[at + i] = 0;
                // Those we probed past no longer hold this entry beyond them.
                let mut p = home;
                while p != b {
                    self.words[self.base + p * WORDS + WAYS] -= 1;
                    p = (p + 1) & self.mask;
                }
                return;
            }
            if self.words[at + WAYS] == 0 {
                return;
            }
            b = (b + 1) & self.mask;
        }
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    fn bytes(&self) -> usize {
        self.words.capacity() * size_of::<u64>()
    }
}

/// Sessions and their index.
#[derive(Debug)]
pub(crate) struct Table {
    sessions: Vec<Session>,
    free: Vec<u32>,
    index: Index,
    seed: u64,
    capacity: u32,
    live: u32,
    /// Bumped by every insertion and removal: a lookup made at one generation holds while
    /// the generation does.
    generation: u64,
    cursor: u32,
}

impl Table {
    /// A table for `capacity` sessions; the index and the slab are reserved now, so the fast
    /// path never grows them. The index is resident at once (its buckets are hit at
    /// random); the slab's pages are touched as the number of live sessions reaches new highs.
    pub fn new(capacity: u32, seed: u64) -> Table {
        assert!(
            capacity < REPLY_BIT - 1,
            "slot ids leave the reply bit free"
        );
        let cap = capacity as usize;
        Table {
            sessions: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            index: Index::new(cap * 2),
            seed,
            capacity,
            live: 0,
            generation: 0,
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
        self.lookup_hashed(t, t.hash(self.seed))
    }

    /// [`lookup`](Self::lookup) of `t` whose hash is `h`.
    #[inline]
    fn lookup_hashed(&self, t: &Tuple, h: u64) -> Option<(u32, Dir)> {
        let slot = self.index.find(h, |slot| {
            let (id, dir) = split(slot);
            self.sessions
                .get(id as usize)
                .is_some_and(|s| s.tuple(dir) == t)
        })?;
        Some(split(slot))
    }

    /// The generation: what [`lookup`](Self::lookup) answers cannot change while it holds.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// [`lookup`](Self::lookup) of each of `tuples` into `found`, in passes whose loads do
    /// not depend on each other (every index bucket, then every slot a tag names, then
    /// every session), so a burst's cache misses overlap instead of coming one after
    /// another. The answers are `lookup`'s, valid while the [`generation`](Self::generation)
    /// holds.
    pub fn lookup_burst(&self, tuples: &[Tuple], found: &mut [Option<(u32, Dir)>]) {
        let mut hashes = [0u64; WARM_BURST];
        let mut slots = [None; WARM_BURST];
        let mut acc = 0;
        for (chunk, found) in tuples.chunks(WARM_BURST).zip(found.chunks_mut(WARM_BURST)) {
            for (h, t) in hashes.iter_mut().zip(chunk) {
                *h = t.hash(self.seed);
                acc ^= self.index.touch(*h);
            }
            for (slot, h) in slots.iter_mut().zip(&hashes) {
                *slot = self.index.find(*h, |_| true);
            }
            for (((f, t), h), slot) in found.iter_mut().zip(chunk).zip(&hashes).zip(&slots) {
                *f = slot.and_then(|slot| {
                    let (id, dir) = split(slot);
                    match self.sessions.get(id as usize) {
                        // The first tag match is the tuple's: what a lookup finds first.
                        Some(s) if s.tuple(dir) == t => Some((id, dir)),
                        // Another tuple with the tag: the lookup goes on past it.
                        _ => self.lookup_hashed(t, *h),
                    }
                });
            }
        }
        std::hint::black_box(acc);
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
        self.index.insert(s.orig.hash(self.seed), id);
        self.index.insert(s.reply.hash(self.seed), id | REPLY_BIT);
        self.live += 1;
        self.generation += 1;
        Some(id)
    }

    /// Removes session `id`, returning it.
    pub fn remove(&mut self, id: u32) -> Session {
        let s = self.sessions[id as usize];
        if !s.live {
            return s;
        }
        self.index.remove(s.orig.hash(self.seed), id);
        self.index.remove(s.reply.hash(self.seed), id | REPLY_BIT);
        self.sessions[id as usize] = Session::FREE;
        self.free.push(id);
        self.live -= 1;
        self.generation += 1;
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
        self.generation += 1;
        self.cursor = 0;
    }

    /// Bytes reserved: the slab, the free list, and the index.
    pub fn memory_bytes(&self) -> usize {
        self.sessions.capacity() * size_of::<Session>()
            + self.free.capacity() * size_of::<u32>()
            + self.index.bytes()
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
    fn the_index_keeps_overflow_chains_through_removals() {
        // 4 buckets of 7: every entry homes in bucket 0, so most probe past it.
        let mut ix = Index::new(20);
        assert_eq!(ix.mask, 3);
        assert_eq!(ix.bucket(0).as_ptr() as usize % 64, 0, "cache-line aligned");
        assert_eq!(size_of::<Session>(), 64, "a session is one cache line");
        let h = |k: u32| u64::from(k) << 32;
        for k in 0..20 {
            ix.insert(h(k), k);
        }
        let has = |ix: &Index, k: u32| ix.find(h(k), |s| s == k) == Some(k);
        assert!((0..20).all(|k| has(&ix, k)));
        for k in (0..20).step_by(2) {
            ix.remove(h(k), k);
        }
        assert!((0..20).all(|k| has(&ix, k) == (k % 2 == 1)));
        for k in (1..20).step_by(2) {
            ix.remove(h(k), k);
        }
        assert!(
            (0..4).all(|b| ix.bucket(b).iter().all(|w| *w == 0)),
            "counts back to 0"
        );
        // Removing what is not there changes nothing.
        ix.insert(h(3), 3);
        ix.remove(h(4), 4);
        assert!(has(&ix, 3));
    }

    #[test]
    fn churn_agrees_with_a_map() {
        let mut t = Table::new(64, 9);
        let mut model = std::collections::HashMap::new();
        let mut rng = xvs_stage::hash::SplitMix::new(5);
        for _ in 0..5000 {
            let n = rng.below(200);
            let s = session(n, 10);
            if let Some(&id) = model.get(&n) {
                assert_eq!(t.lookup(&s.orig), Some((id, Dir::Original)));
                assert_eq!(t.lookup(&s.reply), Some((id, Dir::Reply)));
                t.remove(id);
                model.remove(&n);
            } else if let Some(id) = t.insert(s) {
                model.insert(n, id);
            } else {
                assert_eq!(model.len(), 64);
            }
            assert_eq!(t.len() as usize, model.len());
        }
        for n in 0..200 {
            let s = session(n, 10);
            assert_eq!(t.lookup(&s.orig).map(|(id, _)| id), model.get(&n).copied());
        }
        let tuples: Vec<Tuple> = (0..200)
            .map(|n| session(n, 10))
            .flat_map(|s| [s.orig, s.reply, s.orig.inverse()])
            .collect();
        let mut found = vec![None; tuples.len()];
        t.lookup_burst(&tuples, &mut found);
        let want: Vec<_> = tuples.iter().map(|x| t.lookup(x)).collect();
        assert_eq!(found, want);
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
